//! The daily tools against a real daemon and real devices: `trigger
//! --settle`, `settle`, `wait`, `info`, `test`, `check`'s lints, and what
//! each says when no daemon (or only a stale socket) is there.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::*;

const FULL: &str = "/devices/virtual/mem/full";

fn run_tool(args: &[&str]) -> Output {
    hotplugd().args(args).output().expect("run hotplugd")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A daemon with `rules` and its own control socket in `s`; returns the
/// process and the socket path, once it listens.
fn daemon(s: &Scratch, rules: &str) -> (Proc, String) {
    daemon_in(hotplugd(), s, rules)
}

/// [`daemon`], started by `cmd` (e.g. inside a namespace).
fn daemon_in(mut cmd: std::process::Command, s: &Scratch, rules: &str) -> (Proc, String) {
    let ctl = s.path("control").to_string_lossy().into_owned();
    let r = s.rules(rules);
    cmd.args(["run", "--insecure-rules", "--rules", &r, "--control", &ctl]);
    let p = Proc::spawn(cmd);
    p.wait_listening();
    assert!(
        p.wait_stderr("control socket", Duration::from_secs(10)),
        "{}",
        p.stderr()
    );
    (p, ctl)
}

/// A tool run inside `ns` (its network and mount namespaces: its sysfs
/// shows the namespace's `lo`, whose events reach no other test).
fn tool_in(ns: &Netns, args: &[&str]) -> Output {
    ns.hotplugd().args(args).output().expect("run hotplugd")
}

const LO: &str = "/devices/virtual/net/lo";

#[test]
fn trigger_settle_returns_after_the_slow_handler_finished() {
    if !need_root("trigger_settle_returns_after_the_slow_handler_finished") {
        return;
    }
    let ns = Netns::new();
    let s = Scratch::new("tools-trigger");
    let mark = s.path("done");
    let h = s.script(
        "h.sh",
        &format!("sleep 1; echo \"$ACTION $SYNTH_UUID\" > {}", mark.display()),
    );
    let (d, ctl) = daemon_in(
        ns.hotplugd(),
        &s,
        &format!("SUBSYSTEM==\"net\", KERNEL==\"lo\", ENV{{SYNTH_UUID}}==\"?*\", RUN+=\"{h}\"\n"),
    );
    let t = Instant::now();
    let o = tool_in(
        &ns,
        &[
            "trigger",
            "--settle",
            "--timeout",
            "30",
            "--action=change",
            "--subsystem-match=net",
            "--sysname-match=lo",
            "--verbose",
            "--control",
            &ctl,
        ],
    );
    let took = t.elapsed();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert_eq!(out.trim(), format!("/sys{LO}"), "only lo: {out}");
    // the handler's side effect is there the moment trigger returns
    let got = std::fs::read_to_string(&mark).unwrap_or_default();
    assert!(got.starts_with("change "), "handler not finished: {got:?}");
    assert!(
        took >= Duration::from_secs(1),
        "returned before the handler slept: {took:?}"
    );
    drop(d);
}

#[test]
fn settle_times_out_naming_the_pending_work_when_a_handler_is_slow() {
    if !need_root("settle_times_out_naming_the_pending_work_when_a_handler_is_slow") {
        return;
    }
    let ns = Netns::new();
    let s = Scratch::new("tools-slow");
    let h = s.script("slow.sh", "sleep 5");
    let (d, ctl) = daemon_in(
        ns.hotplugd(),
        &s,
        &format!("SUBSYSTEM==\"net\", KERNEL==\"lo\", ENV{{SYNTH_UUID}}==\"?*\", RUN+=\"{h}\"\n"),
    );
    // trigger --settle gives up at its timeout, naming the device
    let o = tool_in(
        &ns,
        &[
            "trigger",
            "--settle",
            "--timeout",
            "0.5",
            "--sysname-match=lo",
            "--subsystem-match=net",
            "--control",
            &ctl,
        ],
    );
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(
        err.contains(&format!("still pending (1): running: change {LO}")),
        "{err}"
    );
    // and settle too, naming the work and the SEQNUM
    let t = Instant::now();
    let o = tool_in(&ns, &["settle", "--timeout", "0.5", "--control", &ctl]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("timed out after 0.5 s"), "{err}");
    assert!(err.contains(&format!("running: change {LO}")), "{err}");
    assert!(err.contains("SEQNUM"), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "settle overran its timeout"
    );
    // and once the handler is done, settle succeeds
    let o = tool_in(&ns, &["settle", "--timeout", "30", "--control", &ctl]);
    assert!(o.status.success(), "{}", text(&o).1);
    drop(d);
}

#[test]
fn wait_returns_for_a_tap_device_made_a_second_later_then_for_its_removal() {
    if !need_root("wait_returns_for_a_tap_device_made_a_second_later_then_for_its_removal")
        || !need_tool("wait", "ip")
    {
        return;
    }
    let s = Scratch::new("tools-wait");
    let log = s.path("seen");
    let h = s.script(
        "h.sh",
        &format!("echo \"$ACTION $INTERFACE\" >> {}", log.display()),
    );
    let (d, ctl) = daemon(&s, &format!("SUBSYSTEM==\"net\", RUN+=\"{h}\"\n"));
    let name = Tap::name("w");
    let sys = format!("/sys/class/net/{name}");
    let mut w = Proc::spawn({
        let mut c = hotplugd();
        c.args(["wait", "--timeout", "20", "--control", &ctl, &sys]);
        c
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        w.child.try_wait().unwrap().is_none(),
        "wait returned before the device existed"
    );
    let tap = Tap::add(&name);
    let st = w.wait(Duration::from_secs(20));
    assert!(st.success(), "{}", w.stderr());
    // handled: the handler for its add has run
    let seen = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(seen.contains(&format!("add {name}")), "{seen:?}");
    tap.del();
    let o = run_tool(&[
        "wait",
        "--removed",
        "--timeout",
        "20",
        "--control",
        &ctl,
        &sys,
    ]);
    assert!(o.status.success(), "{}", text(&o).1);
    let seen = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(seen.contains(&format!("remove {name}")), "{seen:?}");
    // a path that never comes: exit 4, named
    let o = run_tool(&[
        "wait",
        "--timeout",
        "0.3",
        "--control",
        &ctl,
        "/dev/hotplugd-never",
    ]);
    assert_eq!(o.status.code(), Some(4));
    assert!(text(&o).1.contains("not there: /dev/hotplugd-never"));
    drop(d);
}

#[test]
fn without_a_daemon_each_tool_fails_fast_and_says_so() {
    let s = Scratch::new("tools-nodaemon");
    let missing = s.path("control").to_string_lossy().into_owned();
    // a socket file no one listens on: what a crash leaves
    let stale = s.path("stale").to_string_lossy().into_owned();
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    for (ctl, says) in [
        (&missing, "no hotplugd is running (no control socket"),
        (&stale, "no hotplugd is running (stale socket"),
    ] {
        for args in [
            vec!["settle", "--timeout", "60"],
            vec!["trigger", "--settle", "--subsystem-match=hotplugd-none"],
            vec!["wait", "--timeout", "60", "/dev/null"],
        ] {
            let mut a = args.clone();
            a.extend(["--control", ctl.as_str()]);
            let t = Instant::now();
            let o = run_tool(&a);
            let (_, err) = text(&o);
            assert_eq!(o.status.code(), Some(3), "{a:?}: {err}");
            assert!(
                err.contains(says) && err.contains(ctl.as_str()),
                "{a:?}: {err}"
            );
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "{a:?} did not fail fast"
            );
        }
    }
    // info still prints what the kernel says, and why there is no record
    let o = run_tool(&[
        "info",
        "--control",
        &missing,
        "/sys/devices/virtual/mem/full",
    ]);
    let (out, _) = text(&o);
    assert!(o.status.success());
    assert!(
        out.contains("E: DEVNAME=/dev/full") && out.contains("no hotplugd is running"),
        "{out}"
    );
}

#[test]
fn a_daemon_replaces_a_stale_socket_and_removes_its_own_at_exit() {
    if !need_root("a_daemon_replaces_a_stale_socket_and_removes_its_own_at_exit") {
        return;
    }
    let s = Scratch::new("tools-stale");
    let ctl = s.path("control");
    // a stale socket file: bound by a process that has exited (binding it
    // here would let a child another test forks meanwhile hold it open)
    let ok = std::process::Command::new("python3")
        .args([
            "-c",
            "import socket,sys; socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET).bind(sys.argv[1])",
        ])
        .arg(&ctl)
        .status()
        .unwrap()
        .success();
    assert!(ok && ctl.exists(), "a stale socket file made");
    let (d, ctl_s) = daemon(&s, "SUBSYSTEM==\"hotplugd-none\", RUN+=\"/bin/true\"\n");
    assert_eq!(ctl_s, ctl.to_string_lossy());
    assert!(
        d.stderr().contains("removing the stale control socket"),
        "{}",
        d.stderr()
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&ctl).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // a second daemon on the same path refuses: the first one answers
    let o = run_tool(&[
        "run",
        "--rules",
        &s.path("test.rules").to_string_lossy(),
        "--insecure-rules",
        "--control",
        &ctl_s,
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(
        text(&o).1.contains("another hotplugd answers"),
        "{}",
        text(&o).1
    );
    let o = run_tool(&["settle", "--verbose", "--control", &ctl_s]);
    assert!(o.status.success(), "{}", text(&o).1);
    assert!(text(&o).0.starts_with("settled: events up to SEQNUM"));
    let (st, _) = d.stop();
    assert!(st.success());
    assert!(!ctl.exists(), "the socket file outlived the daemon");
}

#[test]
fn info_resolves_a_dev_node_and_the_daemon_adds_its_record() {
    if !need_root("info_resolves_a_dev_node_and_the_daemon_adds_its_record") {
        return;
    }
    let s = Scratch::new("tools-info");
    let (d, ctl) = daemon(&s, "SUBSYSTEM==\"mem\", RUN+=\"/bin/true\"\n");
    // wait for the coldplug pass that fills the table
    let o = run_tool(&["settle", "--control", &ctl]);
    assert!(o.status.success());
    let o = run_tool(&["info", "--control", &ctl, "/dev/full"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.starts_with(&format!("P: {FULL}\n")), "{out}");
    assert!(out.contains("the daemon's device table:\n"), "{out}");
    assert!(out.contains("  MAJOR=1\n"), "{out}");
    let o = run_tool(&["info", "--json", "--control", &ctl, "/dev/full"]);
    let v = hotplugd::json::parse(o.stdout.trim_ascii()).expect("info --json is JSON");
    assert_eq!(v.get("devpath").and_then(|x| x.as_str()), Some(FULL));
    assert_eq!(v.get("node").and_then(|x| x.as_str()), Some("/dev/full"));
    assert!(v.get("daemon").and_then(|x| x.get("record")).is_some());
    drop(d);
}

fn fixture() -> String {
    repo("tests/corpus/sysfs/x86_64")
        .to_string_lossy()
        .into_owned()
}

const TTY: &str = "/sys/class/tty/ttyUSB1";

#[test]
fn info_attribute_walk_on_the_usb_fixture_prints_paste_ready_terms() {
    let o = run_tool(&["info", "-a", "--sysfs-root", &fixture(), TTY]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    for line in [
        "  looking at device '/devices/pci0000:00/0000:00:02.0/usb1/1-1/1-1.2/1-1.2:1.0/ttyUSB1/tty/ttyUSB1':",
        "    KERNEL==\"ttyUSB1\"",
        "    SUBSYSTEM==\"tty\"",
        "    KERNELS==\"1-1.2:1.0\"",
        "    DRIVERS==\"ftdi_sio\"",
        "    SUBSYSTEMS==\"usb\"",
        "    ATTRS{idVendor}==\"0403\"",
        "    ATTRS{serial}==\"FT9ZK2PB\"",
        "    # not shown: descriptors (binary)",
    ] {
        assert!(out.lines().any(|l| l == line), "missing {line:?} in:\n{out}");
    }
    // parents come after the device, nearest first
    let dev = out.find("looking at device").unwrap();
    let iface = out.find("KERNELS==\"1-1.2:1.0\"").unwrap();
    let usbdev = out.find("KERNELS==\"1-1.2\"").unwrap();
    assert!(dev < iface && iface < usbdev);
    let o = run_tool(&["info", "-a", "--json", "--sysfs-root", &fixture(), TTY]);
    let v = hotplugd::json::parse(o.stdout.trim_ascii()).expect("JSON");
    let Some(hotplugd::json::Value::Array(devs)) = v.get("devices") else {
        panic!("no devices array")
    };
    assert!(devs.iter().any(|d| d
        .get("attributes")
        .and_then(|a| a.get("idVendor"))
        .and_then(|x| x.as_str())
        == Some("0403")));
}

#[test]
fn test_traces_each_term_with_the_value_it_saw_and_runs_nothing() {
    let s = Scratch::new("tools-test");
    let mark = s.path("ran");
    let rules = s.rules(&format!(
        "SUBSYSTEM==\"tty\", ATTRS{{idVendor}}==\"0403\", ATTRS{{serial}}==\"FT9ZK2PB\", ENV{{GPS}}=\"1\", RUN+=\"/bin/touch {}\"\n\
         SUBSYSTEM==\"tty\", ATTRS{{idProduct}}==\"6015\", RUN+=\"/bin/touch {}\"\n",
        mark.display(),
        mark.display()
    ));
    let o = run_tool(&[
        "test",
        "--insecure-rules",
        "--rules",
        &rules,
        "--action",
        "add",
        "--sysfs-root",
        &fixture(),
        TTY,
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains(&format!("{rules}:1 MATCHED")), "{out}");
    assert!(out.contains("  ok   ATTRS{serial}==\"FT9ZK2PB\": saw \"FT9ZK2PB\" at /devices/pci0000:00/0000:00:02.0/usb1/1-1/1-1.2\n"), "{out}");
    assert!(out.contains(&format!("{rules}:2 no match")), "{out}");
    assert!(
        out.contains("  FAIL ATTRS{idProduct}==\"6015\": saw \"6001\" at"),
        "{out}"
    );
    assert!(out.contains("  ENV{GPS}=\"1\""), "{out}");
    assert!(
        out.contains(&format!("[\"/bin/touch\", \"{}\"]", mark.display())),
        "{out}"
    );
    assert!(!mark.exists(), "test ran a handler");
}

#[test]
fn check_warns_of_duplicates_conflicts_and_unused_labels() {
    let s = Scratch::new("tools-lint");
    let rules = s.rules(
        "SUBSYSTEM==\"tty\", RUN+=\"/bin/true\"\n\
         SUBSYSTEM==\"tty\", RUN+=\"/bin/true\"\n\
         KERNEL==\"sda\", KERNEL==\"sdb\", RUN+=\"/bin/true\"\n\
         LABEL=\"nowhere\"\n",
    );
    let o = run_tool(&["check", "--insecure-rules", "--rules", &rules]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "warnings do not fail: {err}");
    assert!(out.contains("3 warnings"), "{out}");
    assert!(
        err.contains(&format!(
            "{rules}:2:1: warning: this rule is a duplicate of the rule at {rules}:1"
        )),
        "{err}"
    );
    assert!(err.contains("can never match"), "{err}");
    assert!(
        err.contains("LABEL=\"nowhere\" is never the target of a GOTO"),
        "{err}"
    );
}

#[test]
fn every_help_is_complete_and_aligned() {
    for cmd in [
        "monitor",
        "run",
        "check",
        "replay",
        "test-builtin",
        "info",
        "test",
        "trigger",
        "settle",
        "wait",
    ] {
        let o = run_tool(&[cmd, "--help"]);
        let (out, _) = text(&o);
        assert!(o.status.success());
        assert!(out.contains(&format!("hotplugd {cmd}")), "{cmd}");
        let mut in_options = false;
        for l in out.lines() {
            if l == "Options:" {
                in_options = true;
                continue;
            }
            if in_options && l.is_empty() {
                break;
            }
            if in_options {
                // an option line starts at column 2; its text, and every
                // continuation, at column 19 (or the option stands alone)
                assert!(l.starts_with("  "), "{cmd}: unindented option line {l:?}");
                if l.starts_with("  -") {
                    let rest = &l[2..];
                    let gap = rest.find("  ");
                    if let Some(g) = gap {
                        let col = 2 + g + rest[g..].len() - rest[g..].trim_start().len();
                        assert!(col == 19 || l.len() < 19, "{cmd}: misaligned {l:?}");
                    }
                } else {
                    assert!(
                        l.starts_with(&" ".repeat(19)),
                        "{cmd}: continuation not at column 19: {l:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn only_root_may_talk_to_the_daemon() {
    if !need_root("only_root_may_talk_to_the_daemon") || !need_tool("only_root", "setpriv") {
        return;
    }
    let s = Scratch::new("tools-peer");
    let (d, ctl) = daemon(&s, "SUBSYSTEM==\"hotplugd-none\", RUN+=\"/bin/true\"\n");
    let exe = reachable_bin(&s.0);
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
    ];
    let as_nobody = || {
        let mut c = wrapped_bin(&nobody, &exe);
        c.args(["settle", "--timeout", "30", "--control", &ctl]);
        c.output().unwrap()
    };
    // the file's mode (0600) stops another user first
    let o = as_nobody();
    assert_eq!(o.status.code(), Some(3));
    assert!(text(&o).1.contains("permission denied"), "{}", text(&o).1);
    // with the file opened up, SO_PEERCRED still does: the daemon says so
    // and closes
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o666)).unwrap();
    let o = as_nobody();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o).1);
    assert!(
        text(&o)
            .1
            .contains("the daemon says: refused: the control socket is for root only"),
        "{}",
        text(&o).1
    );
    assert!(
        d.wait_stderr("control: refused pid", Duration::from_secs(5))
            && d.stderr().contains("uid 65534"),
        "{}",
        d.stderr()
    );
    // root still gets its answer
    let o = run_tool(&["settle", "--control", &ctl]);
    assert!(o.status.success(), "{}", text(&o).1);
}

#[test]
fn a_settle_waits_through_a_daemon_restart() {
    if !need_root("a_settle_waits_through_a_daemon_restart") {
        return;
    }
    let ns = Netns::new();
    let s = Scratch::new("tools-restart");
    let h = s.script("slow.sh", "sleep 3");
    let rules =
        format!("SUBSYSTEM==\"net\", KERNEL==\"lo\", ENV{{SYNTH_UUID}}==\"?*\", RUN+=\"{h}\"\n");
    let (d, ctl) = daemon_in(ns.hotplugd(), &s, &rules);
    let o = tool_in(&ns, &["trigger", "--sysname-match=lo", "--control", &ctl]);
    assert!(o.status.success(), "{}", text(&o).1);
    let mut settle = Proc::spawn({
        let mut c = ns.hotplugd();
        c.args(["settle", "--timeout", "30", "--control", &ctl]);
        c
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        settle.child.try_wait().unwrap().is_none(),
        "settled with a handler running"
    );
    // the supervisor restarts the daemon: the waiting settle asks the new one
    let (st, _) = d.stop();
    assert!(st.success());
    assert!(
        settle.wait_stderr("the daemon went away", Duration::from_secs(10)),
        "{}",
        settle.stderr()
    );
    let (d2, _) = daemon_in(ns.hotplugd(), &s, &rules);
    let st = settle.wait(Duration::from_secs(20));
    assert!(st.success(), "{}", settle.stderr());
    let (st, _) = d2.stop();
    assert!(st.success());
    // and when none comes back, it gives up at its timeout, saying why
    let (d3, _) = daemon_in(ns.hotplugd(), &s, &rules);
    let o = tool_in(&ns, &["trigger", "--sysname-match=lo", "--control", &ctl]);
    assert!(o.status.success(), "{}", text(&o).1);
    let mut settle = Proc::spawn({
        let mut c = ns.hotplugd();
        c.args(["settle", "--timeout", "2", "--control", &ctl]);
        c
    });
    std::thread::sleep(Duration::from_millis(300));
    let (st, _) = d3.stop();
    assert!(st.success());
    assert_eq!(settle.wait(Duration::from_secs(20)).code(), Some(4));
    assert!(
        settle
            .stderr()
            .contains("the daemon stopped while we waited and none answers"),
        "{}",
        settle.stderr()
    );
}

/// Eight root clients that connect and never ask hold every slot: a ninth
/// is refused at first, and once they have been silent for
/// `control::IDLE_DROP` the oldest is dropped to make room for it.
#[test]
fn idle_clients_holding_every_slot_are_dropped_to_make_room() {
    if !need_root("idle_clients_holding_every_slot") || !need_tool("idle_clients", "python3") {
        return;
    }
    let s = Scratch::new("tools-idle");
    let (d, ctl) = daemon(&s, "SUBSYSTEM==\"hotplugd-none\", RUN+=\"/bin/true\"\n");
    let holder = "import socket, sys, time\n\
        socks = []\n\
        for _ in range(8):\n\
        \x20   c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n\
        \x20   c.connect(sys.argv[1])\n\
        \x20   socks.append(c)\n\
        print('held', flush=True)\n\
        time.sleep(60)\n";
    let mut h = std::process::Command::new("python3")
        .args(["-c", holder, &ctl])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(h.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held");
    // the tool is refused while the eight are fresh, then gets a slot
    let o = run_tool(&["settle", "--timeout", "30", "--control", &ctl]);
    let _ = h.kill();
    let _ = h.wait();
    assert!(o.status.success(), "{}\n{}", text(&o).1, d.stderr());
    assert!(d.stderr().contains("8 clients already"), "{}", d.stderr());
    assert!(
        d.stderr().contains("control: dropped idle client pid"),
        "{}",
        d.stderr()
    );
}
