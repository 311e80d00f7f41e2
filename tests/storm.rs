//! Issue 12: a storm of 5,000 tap add/remove operations (2,000 added, 1,000
//! removed, 1,000 more added, 1,000 more removed; the live set, with the
//! devices whose removes were lost until a resync diffs them, stays within
//! the 4,096-device table) inside a private network namespace, with
//! handlers slow enough that the kernel's
//! queue overflows (overruns, resyncs), and a SIGHUP that changes the
//! tracked subsystems in the middle. Afterwards the handlers' view (adds
//! minus removes, real and synthetic) must equal the taps that exist.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

fn batch(ns: &Netns, lines: &str, s: &Scratch, name: &str) {
    let f = s.path(name);
    std::fs::write(&f, lines).unwrap();
    let st = Command::new("nsenter")
        .arg(format!("--net=/proc/{}/ns/net", ns.pid()))
        .args(["--", "ip", "-batch"])
        .arg(&f)
        .status()
        .expect("ip -batch");
    assert!(st.success(), "ip -batch {name}");
}

/// The handlers' view: the names whose last recorded action is `add`.
fn view(log: &str) -> BTreeSet<String> {
    let mut v = BTreeSet::new();
    for l in log.lines() {
        match l.split_once(' ') {
            Some(("add", n)) => {
                v.insert(n.to_string());
            }
            Some(("remove", n)) => {
                v.remove(n);
            }
            _ => {}
        }
    }
    v
}

#[test]
fn a_storm_with_overruns_and_a_sighup_leaves_the_handlers_view_equal_to_sysfs() {
    if !need_root("storm") || !need_tool("storm", "ip") || !need_tool("storm", "nsenter") {
        return;
    }
    let s = Scratch::new("storm");
    let ns = Netns::new();
    let log = s.path("log");
    let rec = s.script(
        "rec.sh",
        &format!("echo \"$ACTION $INTERFACE\" >> \"{}\"", log.display()),
    );
    let net_rule = format!("SUBSYSTEM==\"net\", KERNEL==\"hps*\", RUN+=\"{rec}\"\n");
    let rules = s.rules(&net_rule);
    let mut c = ns.hotplugd();
    c.args([
        "run",
        "--rules",
        &rules,
        "--rcvbuf",
        "64K",
        "--max-queue",
        "64",
        "--max-children",
        "4",
        "--pidfile",
    ]);
    let pidfile = s.path("pid");
    c.arg(&pidfile);
    let p = Proc::spawn(c);
    p.wait_listening();
    // Ready (coldplug done), as a supervisor waits: before that, devices
    // are "present at start" and get no handler (--coldplug none).
    wait_file(&pidfile, Duration::from_secs(20), |s| !s.is_empty());

    let add = |r: std::ops::Range<usize>| -> String {
        r.map(|i| format!("tuntap add dev hps{i} mode tap\n"))
            .collect()
    };
    let del = |v: Vec<usize>| -> String {
        v.into_iter()
            .map(|i| format!("link del hps{i}\n"))
            .collect()
    };
    batch(&ns, &add(0..2000), &s, "add1");
    batch(
        &ns,
        &del((0..2000).filter(|i| i % 2 == 1).collect()),
        &s,
        "del1",
    );
    // Mid-storm: the rules now also cover misc devices (the tracked set
    // changes during whatever pass is running).
    std::fs::write(
        &rules,
        format!("{net_rule}SUBSYSTEM==\"misc\", RUN{{builtin}}+=\"log\"\n"),
    )
    .unwrap();
    p.signal(Signal::SIGHUP);
    batch(&ns, &add(2000..3000), &s, "add2");
    batch(
        &ns,
        &del((0..1000).filter(|i| i % 2 == 0).collect()),
        &s,
        "del2",
    );
    batch(
        &ns,
        &del((2000..3000).filter(|i| i % 2 == 0).collect()),
        &s,
        "del2b",
    );

    // left: the even ones of 1000..2000 and the odd ones of 2000..3000
    let expected: BTreeSet<String> = (1000..2000)
        .filter(|i| i % 2 == 0)
        .chain((2000..3000).filter(|i| i % 2 == 1))
        .map(|i| format!("hps{i}"))
        .collect();
    let t = Instant::now();
    let mut last = BTreeSet::new();
    while t.elapsed() < Duration::from_secs(240) {
        last = view(&std::fs::read_to_string(&log).unwrap_or_default());
        if last == expected && p.stderr().contains("reloaded after SIGHUP") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let settled = t.elapsed();
    let (st, err) = p.stop();
    assert!(st.success(), "{err}");
    // the whole log, for a failure's post-mortem (run with RUST_LOG=debug)
    if let Some(keep) = std::env::var_os("HOTPLUGD_TEST_KEEP_LOG") {
        std::fs::write(keep, &err).unwrap();
    }
    let missing: Vec<_> = expected.difference(&last).take(5).collect();
    let extra: Vec<_> = last.difference(&expected).take(5).collect();
    assert!(
        last == expected,
        "handlers' view != sysfs: {} vs {} taps; missing e.g. {missing:?}, extra e.g. {extra:?} \
         (HOTPLUGD_TEST_KEEP_LOG=FILE keeps the daemon's whole log)\n{}",
        last.len(),
        expected.len(),
        err.lines()
            .filter(|l| l.contains("warn") || l.contains("stats:"))
            .filter(|l| !l.contains("] "))
            .take(80)
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!(
        "storm: settled {settled:?} after the last delete; overruns={} resyncs={} resync_retries={} \
         synthetic_adds={} synthetic_removes={} longest_turn_us={}",
        stat(&err, "overruns"),
        stat(&err, "resyncs"),
        stat(&err, "resync_retries"),
        stat(&err, "synthetic_adds"),
        stat(&err, "synthetic_removes"),
        stat(&err, "longest_turn_us")
    );
}
