//! `hotplugd monitor` against the real kernel: real uevents, a real tap
//! device, a forged multicast, a provoked overrun, closed pipes and signals.
//! Events are told apart by the SYNTH_UUID the kernel attaches to writes to
//! a `uevent` file, so the host's own events (misc/kvm every ~10 s) never
//! make a test flake.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use hotplugd::json::{self, Value};
use nix::sys::signal::Signal;

const T: Duration = Duration::from_secs(10);

fn monitor(args: &[&str]) -> Proc {
    let mut c = hotplugd();
    c.arg("monitor").args(args);
    let p = Proc::spawn(c);
    p.wait_listening();
    p
}

fn env<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get("env")?.get(k)?.as_str()
}

#[test]
fn json_line_for_a_real_marked_event() {
    if !need_root("json_line_for_a_real_marked_event") {
        return;
    }
    let p = monitor(&["--json"]);
    let id = uuid();
    synth(&lo_uevent(), "change", &id, &["MARK=x"]);
    let line = p
        .next_line(T, |l| l.contains(&id))
        .unwrap_or_else(|| panic!("event not printed; stderr:\n{}", p.stderr()));
    let v = json::parse(line.as_bytes()).unwrap();
    assert_eq!(v.get("action").unwrap().as_str(), Some("change"));
    assert_eq!(
        v.get("devpath").unwrap().as_str(),
        Some("/devices/virtual/net/lo")
    );
    assert_eq!(v.get("subsystem").unwrap().as_str(), Some("net"));
    assert_eq!(env(&v, "SYNTH_UUID"), Some(id.as_str()));
    assert_eq!(env(&v, "SYNTH_ARG_MARK"), Some("x"));
    assert_eq!(env(&v, "INTERFACE"), Some("lo"));
    let seq = v.get("seqnum").unwrap().as_u64().expect("numeric seqnum");
    assert_eq!(env(&v, "SEQNUM"), Some(seq.to_string().as_str()));
    // env is in wire order: the kernel sends ACTION, DEVPATH, SUBSYSTEM first
    let Some(Value::Object(pairs)) = v.get("env") else {
        panic!()
    };
    let keys: Vec<&[u8]> = pairs.iter().take(3).map(|(k, _)| k.as_slice()).collect();
    assert_eq!(keys, [&b"ACTION"[..], b"DEVPATH", b"SUBSYSTEM"]);
    assert_eq!(pairs.last().unwrap().0, b"SEQNUM");

    let (st, err) = p.stop();
    assert!(st.success(), "exit {st:?}\n{err}");
    assert!(stat(&err, "accepted") >= 1);
    let s = stats(&err);
    let get = |k: &str| s.iter().find(|(n, _)| n == k).unwrap().1;
    assert_eq!(
        get("received"),
        get("accepted") + get("rejected") + get("truncated") + get("malformed")
    );
}

#[test]
fn text_block_layout() {
    if !need_root("text_block_layout") {
        return;
    }
    let p = monitor(&[]);
    let id = uuid();
    synth(&lo_uevent(), "change", &id, &["A=1"]);
    let lines = p.lines_for(Duration::from_secs(3));
    let at = lines
        .iter()
        .position(|l| l == &format!("SYNTH_UUID={id}"))
        .unwrap_or_else(|| panic!("no block for {id} in {lines:#?}"));
    let start = lines[..at]
        .iter()
        .rposition(|l| l.is_empty())
        .map_or(0, |i| i + 1);
    let header = &lines[start];
    assert!(header.starts_with("KERNEL["), "{header}");
    assert!(
        header.ends_with("] change   /devices/virtual/net/lo (net)"),
        "{header}"
    );
    let end = start + lines[start..].iter().position(|l| l.is_empty()).unwrap();
    let body: Vec<&str> = lines[start + 1..end].iter().map(String::as_str).collect();
    assert_eq!(
        &body[..3],
        [
            "ACTION=change",
            "DEVPATH=/devices/virtual/net/lo",
            "SUBSYSTEM=net"
        ]
    );
    assert!(body.contains(&"SYNTH_ARG_A=1"));
    assert!(body.last().unwrap().starts_with("SEQNUM="));
}

#[test]
fn tap_device_arrives_as_add_then_remove() {
    if !need_root("tap_device_arrives_as_add_then_remove") || !need_tool("tap", "ip") {
        return;
    }
    let p = monitor(&["--json"]);
    let name = Tap::name("m");
    let devpath = format!("/devices/virtual/net/{name}");
    let tap = Tap::add(&name);
    tap.del();
    let want = format!("\"devpath\":\"{devpath}\"");
    let add = p.next_line(T, |l| l.contains(&want)).expect("add event");
    let v = json::parse(add.as_bytes()).unwrap();
    assert_eq!(v.get("action").unwrap().as_str(), Some("add"));
    assert_eq!(env(&v, "INTERFACE"), Some(name.as_str()));
    let rm = p.next_line(T, |l| l.contains(&want)).expect("remove event");
    let v2 = json::parse(rm.as_bytes()).unwrap();
    assert_eq!(v2.get("action").unwrap().as_str(), Some("remove"));
    assert!(v2.get("seqnum").unwrap().as_u64() > v.get("seqnum").unwrap().as_u64());
}

/// The bytes a forger multicasts: a perfectly well-formed "kernel" event.
const FORGED: &[u8] = b"add@/devices/forged\0ACTION=add\0DEVPATH=/devices/forged\0\
    SUBSYSTEM=usb\0DEVTYPE=usb_device\0PRODUCT=403/6001/600\0SEQNUM=1\0";

#[test]
fn forged_multicast_is_rejected_and_counted() {
    if !need_root("forged_multicast_is_rejected_and_counted") {
        return;
    }
    let ns = Netns::new();
    let mut c = ns.hotplugd();
    c.args(["monitor", "--json"]);
    let p = Proc::spawn(c);
    p.wait_listening();
    multicast(&ns, FORGED.to_vec());
    // The next real event is still handled, and the forgery never printed.
    let id = uuid();
    synth(&ns.lo_uevent(), "change", &id, &[]);
    let lines = p.lines_for(Duration::from_secs(3));
    assert!(
        lines.iter().any(|l| l.contains(&id)),
        "real event missing: {lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("forged")),
        "forgery printed: {lines:?}"
    );
    let (st, err) = p.stop();
    assert!(st.success());
    assert_eq!(stat(&err, "rejected"), 1, "{err}");
    assert!(
        err.contains("rejected a datagram not sent by the kernel (port "),
        "{err}"
    );
}

#[test]
fn rcvbuf_1024_is_refused_with_the_explanation() {
    let out = hotplugd()
        .args(["monitor", "--rcvbuf", "1024"])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--rcvbuf 1024 is too small"), "{err}");
    assert!(err.contains("2304-byte floor"), "{err}");
    assert!(err.contains("1024-byte trap"), "{err}");
}

#[test]
fn overrun_is_counted_and_the_socket_keeps_working() {
    if !need_root("overrun_is_counted_and_the_socket_keeps_working") {
        return;
    }
    // In a private namespace: the burst reaches no other listener.
    let ns = Netns::new();
    let mut c = ns.hotplugd();
    c.args(["monitor", "--json", "--rcvbuf", "64K"]);
    let p = Proc::spawn(c);
    p.wait_listening();
    // 64K requested: 128 KiB of queue, ~160 lo events. Stop it, send 2000.
    p.signal(Signal::SIGSTOP);
    let lo = ns.lo_uevent();
    let burst = uuid();
    for _ in 0..2000 {
        synth(&lo, "change", &burst, &[]);
    }
    p.signal(Signal::SIGCONT);
    // It drains what was queued...
    let mut lines = p.lines_for(Duration::from_secs(2));
    let ours = |lines: &[String]| lines.iter().filter(|l| l.contains(&burst)).count() as u64;
    assert!(ours(&lines) > 0, "nothing of the burst arrived");
    assert!(
        ours(&lines) < 2000,
        "all 2000 arrived: no overrun was provoked"
    );
    // ...and a fresh event afterwards is received: the socket never wedges.
    let id = uuid();
    synth(&lo, "change", &id, &["MARK=after"]);
    let after = p.next_line(T, |l| l.contains(&id));
    assert!(
        after.is_some(),
        "event after the overrun was not received; stderr:\n{}",
        p.stderr()
    );
    lines.extend(p.lines_for(Duration::from_millis(200)));
    let (st, err) = p.stop();
    assert!(st.success());
    assert!(stat(&err, "overruns") >= 1, "{err}");
    assert!(err.contains("overrun: the kernel dropped events"), "{err}");
    // The kernel's own count of what it dropped for this socket accounts for
    // every event of the burst not received. (The host's misc/kvm change
    // event also reaches -n namespaces; if one was dropped in the same
    // window, the sum is one more.)
    let dropped = stat(&err, "dropped");
    let sum = ours(&lines) + dropped;
    assert!(dropped >= 1, "{err}");
    assert!(
        (2000..=2001).contains(&sum),
        "received {} + dropped {dropped} != 2000\n{err}",
        ours(&lines)
    );
}

#[test]
fn closed_stdout_ends_quietly_with_status_0() {
    if !need_root("closed_stdout_ends_quietly_with_status_0") || !need_tool("pipe", "bash") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("hotplugd-pipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let err = dir.join("err");
    let mut argv = runner();
    argv.push(bin().to_string_lossy().into_owned());
    // `| head -n 1`: after one line the reader is gone. No further event is
    // needed for hotplugd to notice (EPOLLERR on its stdout).
    let script = r#"
        "$@" monitor --json 2>"$ERR" | head -n 1 >/dev/null
        echo "status=${PIPESTATUS[0]}" >>"$ERR"
    "#;
    let mut child = Command::new("bash")
        .args(["-c", script, "bash"])
        .args(&argv)
        .env("ERR", &err)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + T;
    while !std::fs::read_to_string(&err)
        .unwrap_or_default()
        .contains("listening")
    {
        assert!(std::time::Instant::now() < deadline, "did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    synth(&lo_uevent(), "change", &uuid(), &[]);
    let st = child.wait().unwrap();
    assert!(st.success());
    let text = common::read(&err);
    assert!(text.contains("status=0"), "{text}");
    assert!(text.contains("stats: received="), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigusr1_logs_the_counters_and_keeps_running() {
    if !need_root("sigusr1_logs_the_counters_and_keeps_running") {
        return;
    }
    let p = monitor(&["--json"]);
    p.signal(Signal::SIGUSR1);
    assert!(
        p.wait_stderr("hotplugd: info: stats: received=", T),
        "{}",
        p.stderr()
    );
    let id = uuid();
    synth(&lo_uevent(), "change", &id, &[]);
    assert!(p.next_line(T, |l| l.contains(&id)).is_some());
    let (st, _) = p.stop();
    assert!(st.success());
}

#[test]
fn sigint_exits_0_with_stats() {
    if !need_root("sigint_exits_0_with_stats") {
        return;
    }
    let mut p = monitor(&[]);
    p.signal(Signal::SIGINT);
    let st = p.wait(T);
    assert_eq!(st.code(), Some(0));
    let err = p.take_stderr();
    assert!(err.contains("SIGINT: stopping"), "{err}");
    assert!(
        err.lines().last().unwrap().starts_with("stats: received="),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_2_with_one_line_and_help_is_complete() {
    for args in [&["--bogus"][..], &["monitor", "--bogus"], &["nope"], &[]] {
        let out = hotplugd().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("hotplugd: "), "{err}");
        assert!(err.contains("--help"), "{err}");
    }
    let out = hotplugd().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["monitor", "--verbose", "Exit status", "RUST_LOG"] {
        assert!(help.contains(word), "--help lacks {word}");
    }
    let out = hotplugd().args(["monitor", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "--json",
        "--rcvbuf",
        "stats: received=",
        "SIGUSR1",
        "\\udcXX",
    ] {
        assert!(help.contains(word), "monitor --help lacks {word}");
    }
}

#[test]
fn subsystem_and_property_matches_choose_what_is_printed() {
    if !need_root("subsystem_and_property_matches_choose_what_is_printed") {
        return;
    }
    // udev's semantics: several --subsystem-match are OR'd, several
    // --property-match are OR'd, and an event must pass both kinds.
    let p = monitor(&[
        "--json",
        "--subsystem-match=mem",
        "-s",
        "no-such-subsystem/no-such-devtype",
        "--property-match=SYNTH_ARG_K=yes*",
        "--property-match=SYNTH_ARG_K=also",
    ]);
    let id = uuid();
    let full = std::path::Path::new("/sys/devices/virtual/mem/full/uevent");
    synth(&lo_uevent(), "change", &id, &["K=yesnet"]);
    synth(full, "change", &id, &["K=no"]);
    synth(full, "change", &id, &["K=yes1"]);
    synth(full, "change", &id, &["K=also"]);
    synth(full, "change", &id, &["K=yeslast"]);
    let mut seen = Vec::new();
    while let Some(line) = p.next_line(T, |l| l.contains(&id)) {
        let v = json::parse(line.as_bytes()).unwrap();
        let k = env(&v, "SYNTH_ARG_K").unwrap().to_owned();
        let last = k == "yeslast";
        seen.push(k);
        if last {
            break;
        }
    }
    assert_eq!(seen, ["yes1", "also", "yeslast"], "stderr:\n{}", p.stderr());
    let (st, err) = p.stop();
    assert!(st.success(), "exit {st:?}\n{err}");
}
