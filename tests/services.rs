//! `RUN{service}` on the real kernel: tap devices in a private network
//! namespace (with its own sysfs), the daemon inside it. Each service
//! carries its device's INTERFACE in its environment, and so does every
//! process it starts, so `/proc/*/environ` tells which processes belong to
//! which service: after a stop there must be none (no orphan), and no
//! zombie child of the daemon.
//!
//! Durations are only generous bounds; the backoff is read from the
//! daemon's log and counters, not from the wall clock.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

/// `ip ARGS` inside the namespace.
fn ip_in(ns: &Netns, args: &[&str]) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    ns.run_inside(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        ip(&a)
    });
}

/// Pids of processes whose environment has `INTERFACE=name`.
fn service_pids(name: &str) -> Vec<i32> {
    let needle = format!("INTERFACE={name}\0");
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(env) = std::fs::read(e.path().join("environ")) {
            if env.windows(needle.len()).any(|w| w == needle.as_bytes()) && !is_zombie(pid) {
                v.push(pid);
            }
        }
    }
    v
}

fn stat_fields(pid: i32) -> Option<(char, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let mut w = rest.split(' ');
    let state = w.next()?.chars().next()?;
    let ppid = w.next()?.parse().ok()?;
    Some((state, ppid))
}

fn is_zombie(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|(s, _)| s == 'Z')
}

/// Zombie children of `parent`.
fn zombies_of(parent: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|&p| stat_fields(p) == Some(('Z', parent)))
        .collect()
}

fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

struct Setup {
    ns: Netns,
    _scratch: Scratch, // removed with the setup
    rules: String,
}

/// A service that logs its start and sleeps in a child (so its group has
/// two processes); with `stubborn`, both ignore SIGTERM (an ignored signal
/// stays ignored across exec).
fn setup(tag: &str, stubborn: bool) -> Setup {
    let ns = Netns::new();
    let s = Scratch::new(tag);
    let trap = if stubborn { "trap '' TERM" } else { "" };
    let svc = s.script(
        "svc.sh",
        &format!("{trap}\necho \"service up for $INTERFACE\"\nsleep 1000 &\nwait"),
    );
    let rules = s.rules(&format!(
        "SUBSYSTEM==\"net\", KERNEL==\"hpt*\", ACTION==\"add\", RUN{{service}}+=\"{svc}\"\n"
    ));
    Setup {
        ns,
        _scratch: s,
        rules,
    }
}

fn start(st: &Setup, extra: &[&str]) -> Proc {
    let mut c = st.ns.hotplugd();
    c.args([
        "run",
        "--insecure-rules",
        "--rules",
        &st.rules,
        "--handler-timeout",
        "1",
    ])
    .args(extra);
    let p = Proc::spawn(c);
    assert!(
        p.wait_stderr(
            "devices present in tracked subsystems",
            Duration::from_secs(20)
        ),
        "no baseline: {}",
        p.stderr()
    );
    p
}

fn started_lines(p: &Proc, name: &str) -> usize {
    p.stderr()
        .lines()
        .filter(|l| l.contains(&format!("service up for {name}")))
        .count()
}

#[test]
fn a_service_outlives_the_handler_timeout_restarts_with_backoff_and_stops_on_remove() {
    if !need_root("service_lifecycle") || !need_tool("service_lifecycle", "ip") {
        return;
    }
    let st = setup("svc-life", true);
    let p = start(&st, &[]);
    let name = Tap::name("s");
    ip_in(&st.ns, &["tuntap", "add", "dev", &name, "mode", "tap"]);
    assert!(
        wait_for(Duration::from_secs(20), || started_lines(&p, &name) == 1),
        "{}",
        p.stderr()
    );
    let first = service_pids(&name);
    assert!(!first.is_empty());
    // --handler-timeout is 1 s; the timeout plus its grace pass
    std::thread::sleep(Duration::from_secs(4));
    for pid in &first {
        assert!(
            Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(*pid),
            "service process {pid} did not outlive the handler timeout:\n{}",
            p.stderr()
        );
    }

    // SIGKILL the service program (not its sleep): restarted after 1 s,
    // then after 2 s
    for (n, delay) in [(2, "1000 ms"), (3, "2000 ms")] {
        let leader = service_leader(&p, &name);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(leader), Signal::SIGKILL).unwrap();
        assert!(
            wait_for(Duration::from_secs(20), || started_lines(&p, &name) == n),
            "restart {n}: {}",
            p.stderr()
        );
        assert!(
            p.stderr().contains("killed by SIGKILL after")
                && p.stderr()
                    .contains(&format!("restarting in {delay} (restart {})", n - 1)),
            "{}",
            p.stderr()
        );
    }
    // the first program's sleep was SIGKILLed with what it left in its group
    assert!(
        wait_for(Duration::from_secs(5), || first
            .iter()
            .all(|pid| !service_pids(&name).contains(pid))),
        "{}",
        p.stderr()
    );

    // remove: SIGTERM (ignored), SIGKILL after the 2 s grace
    ip_in(&st.ns, &["link", "del", &name]);
    assert!(
        wait_for(Duration::from_secs(10), || service_pids(&name).is_empty()),
        "left after removal: {:?}\n{}",
        service_pids(&name),
        p.stderr()
    );
    assert!(
        p.wait_stderr("its device was removed", Duration::from_secs(5)),
        "{}",
        p.stderr()
    );
    assert!(
        p.wait_stderr("SIGKILL to its process group", Duration::from_secs(5)),
        "{}",
        p.stderr()
    );
    // not restarted
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(started_lines(&p, &name), 3, "{}", p.stderr());
    assert!(
        zombies_of(p.pid()).is_empty(),
        "zombies: {:?}",
        zombies_of(p.pid())
    );
    let (status, err) = p.stop();
    assert!(status.success(), "{err}");
    assert_eq!(stat(&err, "handlers_timed_out"), 0, "{err}");
    assert_eq!(stat(&err, "services_started"), 3, "{err}");
    assert_eq!(stat(&err, "services_restarted"), 2, "{err}");
}

/// The pid of the service's program: the process of the group whose
/// parent is the daemon.
fn service_leader(p: &Proc, name: &str) -> i32 {
    let mut found = None;
    wait_for(Duration::from_secs(10), || {
        found = service_pids(name)
            .into_iter()
            .find(|&pid| stat_fields(pid).is_some_and(|(_, pp)| pp == p.pid()));
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no service program for {name}:\n{}", p.stderr()))
}

#[test]
fn a_removal_found_by_an_overrun_resync_stops_the_service() {
    if !need_root("service_resync") || !need_tool("service_resync", "ip") {
        return;
    }
    let st = setup("svc-resync", false);
    let p = start(&st, &["--rcvbuf", "64K"]);
    let (a, b) = (Tap::name("r"), Tap::name("r"));
    ip_in(&st.ns, &["tuntap", "add", "dev", &a, "mode", "tap"]);
    ip_in(&st.ns, &["tuntap", "add", "dev", &b, "mode", "tap"]);
    assert!(
        wait_for(Duration::from_secs(20), || started_lines(&p, &a) == 1
            && started_lines(&p, &b) == 1),
        "{}",
        p.stderr()
    );
    // the remove of `a` is lost in an overrun
    p.signal(Signal::SIGSTOP);
    let lo = st.ns.lo_uevent();
    let flood = |n: usize| {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).open(&lo).unwrap();
        for _ in 0..n {
            f.write_all(b"change").unwrap();
        }
    };
    flood(3000);
    ip_in(&st.ns, &["link", "del", &a]);
    flood(500);
    p.signal(Signal::SIGCONT);
    assert!(
        wait_for(Duration::from_secs(30), || service_pids(&a).is_empty()),
        "left: {:?}\n{}",
        service_pids(&a),
        p.stderr()
    );
    assert!(
        !service_pids(&b).is_empty(),
        "b's service must keep running"
    );
    assert!(zombies_of(p.pid()).is_empty());
    let (status, err) = p.stop();
    assert!(status.success(), "{err}");
    assert!(stat(&err, "overruns") >= 1, "{err}");
    assert_eq!(stat(&err, "synthetic_removes"), 1, "{err}");
    assert_eq!(stat(&err, "services_restarted"), 0, "{err}");
    // the daemon's exit stopped b's
    assert!(
        wait_for(Duration::from_secs(5), || service_pids(&b).is_empty()),
        "{:?}",
        service_pids(&b)
    );
}

#[test]
fn sighup_stops_services_whose_rule_is_gone_and_starts_new_ones_and_exit_stops_all() {
    if !need_root("service_hup_exit") || !need_tool("service_hup_exit", "ip") {
        return;
    }
    let st = setup("svc-hup", true);
    let p = start(&st, &[]);
    let name = Tap::name("h");
    ip_in(&st.ns, &["tuntap", "add", "dev", &name, "mode", "tap"]);
    assert!(
        wait_for(Duration::from_secs(20), || started_lines(&p, &name) == 1),
        "{}",
        p.stderr()
    );
    // the rule goes: the service stops
    let rules_text = std::fs::read_to_string(&st.rules).unwrap();
    std::fs::write(
        &st.rules,
        "SUBSYSTEM==\"net\", KERNEL==\"none\", RUN+=\"/bin/true\"\n",
    )
    .unwrap();
    p.signal(Signal::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(10), || service_pids(&name).is_empty()),
        "{}",
        p.stderr()
    );
    assert!(
        p.wait_stderr("its rule is gone after SIGHUP", Duration::from_secs(5)),
        "{}",
        p.stderr()
    );
    // the rule comes back: started for the device already present
    std::fs::write(&st.rules, rules_text).unwrap();
    p.signal(Signal::SIGHUP);
    assert!(
        wait_for(Duration::from_secs(10), || started_lines(&p, &name) == 2),
        "{}",
        p.stderr()
    );
    // SIGUSR1 lists it
    p.signal(Signal::SIGUSR1);
    assert!(
        p.wait_stderr(
            &format!("for /devices/virtual/net/{name}: running"),
            Duration::from_secs(10)
        ),
        "{}",
        p.stderr()
    );
    assert!(zombies_of(p.pid()).is_empty(), "{:?}", zombies_of(p.pid()));
    // daemon exit: SIGTERM is ignored by this service, SIGKILL ends it
    let t = Instant::now();
    let (status, err) = p.stop();
    assert!(status.success(), "{err}");
    assert!(t.elapsed() < Duration::from_secs(15), "{err}");
    assert!(
        service_pids(&name).is_empty(),
        "{:?}\n{err}",
        service_pids(&name)
    );
    assert!(err.contains("hotplugd is stopping"), "{err}");
    assert_eq!(stat(&err, "services_started"), 2, "{err}");
    ip_in(&st.ns, &["link", "del", &name]);
}

/// `replay` ends once its events are handled: a service would outlive it,
/// so it is logged and not started.
#[test]
fn replay_does_not_start_services() {
    let s = Scratch::new("svc-replay");
    let marker = s.path("started");
    let svc = s.script(
        "svc.sh",
        &format!("touch '{}'; sleep 1000", marker.display()),
    );
    let rules = s.rules(&format!(
        "SUBSYSTEM==\"net\", ACTION==\"add\", RUN{{service}}+=\"{svc}\"\n"
    ));
    let input = s.path("in.jsonl");
    std::fs::write(
        &input,
        "{\"action\":\"add\",\"devpath\":\"/devices/virtual/net/x0\",\"env\":{\"ACTION\":\"add\",\
         \"DEVPATH\":\"/devices/virtual/net/x0\",\"SUBSYSTEM\":\"net\",\"INTERFACE\":\"x0\"}}\n",
    )
    .unwrap();
    let out = hotplugd()
        .args(["replay", "--insecure-rules", "--rules", &rules])
        .arg(&input)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("not started (replay)"), "{err}");
    assert_eq!(stat(&err, "services_started"), 0, "{err}");
    assert!(!marker.exists());
}
