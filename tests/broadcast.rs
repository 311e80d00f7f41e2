//! `run --broadcast`: real clients read hotplugd's rebroadcasts, each in a
//! private network namespace with the daemon (tap devices there make real
//! kernel events that no other listener on the machine sees).
//!
//! - Debian's `udevadm monitor --udev --property` (udev 252, unpacked under
//!   `target/clients`): systemd's own libudev receiver.
//! - pyudev over Debian's `libudev1` (unpacked; `Monitor.from_netlink`,
//!   subsystem filter): libudev's socket filter checks our hashes.
//! - A group-mask listener in Python (`AF_NETLINK`, protocol 15, bound to
//!   mask 4), as libudev-zero listens for mdevd's `-O 4`.
//!
//! The clients are fetched once with `apt-get download` and `pip` (see
//! [`clients`]); in CI (`CI=true`) failing to get them is a failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::*;

const T: Duration = Duration::from_secs(20);

/// Where the unpacked Debian packages and the pyudev venv live.
fn clients_dir() -> PathBuf {
    repo("target/clients")
}

/// Unpacks udev 252, libsystemd-shared and libudev1 and installs pyudev
/// into a venv, once per test binary. `Err` says what failed.
fn fetch_clients() -> Result<PathBuf, String> {
    let d = clients_dir();
    let x = d.join("x");
    let script = r#"
set -e
cd "$1"
if [ ! -x x/bin/udevadm ] || [ ! -e x/usr/lib/x86_64-linux-gnu/libudev.so.1 ]; then
  rm -f ./*.deb
  apt-get download udev libsystemd-shared libudev1 >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 && apt-get download udev libsystemd-shared libudev1 >/dev/null; }
  for p in ./*.deb; do dpkg -x "$p" x; done
fi
if ! venv/bin/python -c 'import pyudev' 2>/dev/null; then
  python3 -m venv venv
  venv/bin/pip install -q pyudev
fi
"#;
    std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
    let st = Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(&d)
        .status()
        .map_err(|e| format!("sh: {e}"))?;
    if !st.success() {
        return Err(format!(
            "fetching udev/libudev1/pyudev into {} failed",
            d.display()
        ));
    }
    Ok(x)
}

/// The unpacked tree, or `None` to skip (outside CI).
fn clients(test: &str) -> Option<PathBuf> {
    static GOT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match GOT.get_or_init(fetch_clients) {
        Ok(p) => Some(p.clone()),
        Err(e) if in_ci() => panic!("{test}: {e}; CI=true, so this is a failure"),
        Err(e) => {
            eprintln!("SKIPPED {test}: {e}");
            None
        }
    }
}

fn libdirs(x: &Path) -> String {
    let l = x.join("usr/lib/x86_64-linux-gnu");
    format!("{}:{}", l.join("systemd").display(), l.display())
}

/// `nsenter` into the namespace's network (and mount, for its sysfs).
fn inside(ns: &Netns, argv: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/proc/{}/ns/net", ns.pid()))
        .arg(format!("--mount=/proc/{}/ns/mnt", ns.pid()))
        .arg("--")
        .args(argv);
    c
}

fn ip_in(ns: &Netns, args: &[&str]) {
    let mut argv = vec!["ip"];
    argv.extend_from_slice(args);
    let st = inside(ns, &argv).status().expect("nsenter ip");
    assert!(st.success(), "ip {args:?} in the namespace failed");
}

/// hotplugd in the namespace with `rules` and `--broadcast` targets.
fn daemon(ns: &Netns, rules: &str, targets: &[&str]) -> Proc {
    let mut c = ns.hotplugd();
    c.args(["run", "--rules", rules, "-v"]);
    for t in targets {
        c.args(["--broadcast", t]);
    }
    let p = Proc::spawn(c);
    p.wait_listening();
    p
}

#[test]
fn udevadm_monitor_prints_the_handled_event_with_the_rules_property() {
    let test = "udevadm_monitor_prints_the_handled_event_with_the_rules_property";
    if !need_root(test) {
        return;
    }
    let Some(x) = clients(test) else { return };
    let ns = Netns::new();
    let s = Scratch::new("bcast-udevadm");
    let rules = s.rules("SUBSYSTEM==\"net\", ENV{HOTPLUG_ROLE}=\"uplink\"\n");
    let hp = daemon(&ns, &rules, &["udev"]);

    let udevadm = x.join("bin/udevadm");
    let mut c = inside(
        &ns,
        &[
            "env",
            &format!("LD_LIBRARY_PATH={}", libdirs(&x)),
            "stdbuf",
            "-oL",
            udevadm.to_str().unwrap(),
            "monitor",
            "--udev",
            "--property",
            "--subsystem-match=net",
        ],
    );
    c.stderr(Stdio::inherit());
    let mon = Proc::spawn(c);
    assert!(
        mon.next_line(T, |l| l.starts_with("UDEV - the event"))
            .is_some(),
        "udevadm monitor did not start"
    );
    let name = Tap::name("u");
    ip_in(&ns, &["tuntap", "add", "dev", &name, "mode", "tap"]);
    ip_in(&ns, &["link", "del", &name]);

    // UDEV  [t] add  /devices/virtual/net/NAME (net), then KEY=VALUE lines
    let mut seen = Vec::new();
    let mut props = Vec::new();
    while let Some(l) = mon.next_line(T, |_| true) {
        if l.is_empty() && seen.len() == 2 {
            break; // the end of the second event's properties
        }
        if l.starts_with("UDEV ") && l.contains(&format!("/net/{name} (net)")) {
            seen.push(l.split_whitespace().nth(2).unwrap_or("").to_string());
        } else if !seen.is_empty() && l.contains('=') {
            props.push((seen.len(), l));
        }
    }
    assert_eq!(seen, ["add", "remove"], "udevadm saw: {seen:?}\n{props:?}");
    for n in 1..=2 {
        let of = |k: &str| props.iter().any(|(i, l)| *i == n && l.starts_with(k));
        assert!(of("HOTPLUG_ROLE=uplink"), "event {n}: {props:?}");
        assert!(of(&format!("INTERFACE={name}")), "event {n}: {props:?}");
        assert!(of("SEQNUM="), "event {n}: {props:?}");
        assert!(of("USEC_INITIALIZED="), "event {n}: {props:?}");
    }
    let (_, err) = hp.stop();
    assert!(stat(&err, "broadcast_sent") >= 2, "{err}");
    assert_eq!(stat(&err, "broadcast_failed"), 0, "{err}");
    drop(mon);
}

/// Starts `PYUDEV` inside `ns` over the fetched libudev1 (`x`), watching
/// for `name`, filtering by `mode` (`subsystem` or `tag`); marks go to
/// `marks`.
fn pyudev_monitor(ns: &Netns, s: &Scratch, x: &Path, marks: &Path, name: &str, mode: &str) -> Proc {
    let script = s.path("mon.py");
    std::fs::write(&script, PYUDEV).unwrap();
    let py = clients_dir().join("venv/bin/python");
    let mut c = inside(
        ns,
        &[
            "env",
            &format!("LD_LIBRARY_PATH={}", libdirs(x)),
            py.to_str().unwrap(),
            script.to_str().unwrap(),
            marks.to_str().unwrap(),
            name,
            mode,
        ],
    );
    c.stderr(Stdio::inherit());
    Proc::spawn(c)
}

const PYUDEV: &str = r#"
import os, sys, pyudev
marks, want, by = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = pyudev.Context()
mon = pyudev.Monitor.from_netlink(ctx, source='udev')
if by == 'tag':
    mon.filter_by_tag('hotplugd')
else:
    mon.filter_by(subsystem='net')
mon.start()
lib = [l.split()[-1] for l in open('/proc/self/maps') if 'libudev.so' in l]
print('lib', lib[0] if lib else '?', flush=True)
print('ready', flush=True)
while True:
    dev = mon.poll(timeout=20)
    if dev is None:
        print('timeout', flush=True)
        break
    name = dev.properties.get('INTERFACE', '-')
    done = os.path.exists(os.path.join(marks, name + '.' + dev.action))
    print('event', dev.action, dev.subsystem, dev.device_path,
          dev.properties.get('HOTPLUG_ROLE', '-'), 'done=%d' % done, flush=True)
    if dev.action == 'remove' and name == want:
        break
"#;

#[test]
fn pyudev_over_libudev1_gets_add_and_remove_after_the_handler_and_nothing_filtered_out() {
    let test =
        "pyudev_over_libudev1_gets_add_and_remove_after_the_handler_and_nothing_filtered_out";
    if !need_root(test) {
        return;
    }
    let Some(x) = clients(test) else { return };
    let ns = Netns::new();
    let s = Scratch::new("bcast-pyudev");
    let marks = s.path("marks");
    std::fs::create_dir_all(&marks).unwrap();
    // the handler takes a while, then leaves a mark: the broadcast must
    // come after it (udevd broadcasts after RUN)
    let handler = s.script(
        "mark",
        &format!(
            "sleep 0.3; touch '{}'/\"$INTERFACE.$ACTION\"",
            marks.display()
        ),
    );
    let rules = s.rules(&format!(
        "SUBSYSTEM==\"net\", ENV{{HOTPLUG_ROLE}}=\"uplink\", RUN+=\"{handler}\"\n"
    ));
    let hp = daemon(&ns, &rules, &["udev"]);
    let name = Tap::name("p");
    let mon = pyudev_monitor(&ns, &s, &x, &marks, &name, "subsystem");
    let lib = mon
        .next_line(T, |l| l.starts_with("lib "))
        .expect("pyudev started");
    assert!(
        lib.contains("target/clients/x/"),
        "pyudev must use the unpacked libudev1: {lib}"
    );
    assert!(mon.next_line(T, |l| l == "ready").is_some());
    ip_in(&ns, &["tuntap", "add", "dev", &name, "mode", "tap"]);
    ip_in(&ns, &["link", "del", &name]);
    let lines = mon.lines_for(T);
    let events: Vec<&String> = lines.iter().filter(|l| l.starts_with("event ")).collect();
    let dp = format!("/devices/virtual/net/{name}");
    assert_eq!(
        events,
        [
            &format!("event add net {dp} uplink done=1"),
            &format!("event remove net {dp} uplink done=1"),
        ],
        "pyudev printed: {lines:?}\n(the tap's `queues` events are filtered out by subsystem)"
    );
    let (_, err) = hp.stop();
    // the queues events were broadcast too: the filter, not the sender, dropped them
    assert!(stat(&err, "broadcast_sent") >= 6, "{err}");
}

const GROUP4: &str = r#"
import socket, sys
s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 15)
s.bind((0, int(sys.argv[1])))
s.settimeout(20)
want = sys.argv[2]
print('ready', flush=True)
while True:
    try:
        d, (pid, groups) = s.recvfrom(16384)
    except socket.timeout:
        print('timeout', flush=True)
        break
    parts = d.split(b'\0')
    f = dict(p.split(b'=', 1) for p in parts[1:] if b'=' in p)
    print('event', parts[0].decode(), 'groups=%d' % groups,
          'sender_is_kernel=%d' % (pid == 0),
          f.get(b'SUBSYSTEM', b'-').decode(), f.get(b'HOTPLUG_ROLE', b'-').decode(),
          'last_nul=%d' % d.endswith(b'\0'), flush=True)
    if parts[0].startswith(b'remove@') and parts[0].endswith(b'/' + want.encode()):
        break
"#;

#[test]
fn group_mask_listener_gets_the_kernel_format_with_env_values() {
    let test = "group_mask_listener_gets_the_kernel_format_with_env_values";
    if !need_root(test) {
        return;
    }
    let ns = Netns::new();
    let s = Scratch::new("bcast-kernel");
    // the add's handler takes a while: the tap's queues (its children, no
    // work of their own) must still be broadcast after the tap's add
    let rules = s.rules(
        "SUBSYSTEM==\"net\", ENV{HOTPLUG_ROLE}=\"uplink\"\n\
         SUBSYSTEM==\"net\", ACTION==\"add\", RUN+=\"/bin/sleep 0.3\"\n",
    );
    let hp = daemon(&ns, &rules, &["kernel:4", "udev"]);
    let script = s.path("g4.py");
    std::fs::write(&script, GROUP4).unwrap();
    let name = Tap::name("k");
    let mut c = inside(&ns, &["python3", script.to_str().unwrap(), "4", &name]);
    c.stderr(Stdio::inherit());
    let mon = Proc::spawn(c);
    assert!(mon.next_line(T, |l| l == "ready").is_some());
    ip_in(&ns, &["tuntap", "add", "dev", &name, "mode", "tap"]);
    ip_in(&ns, &["link", "del", &name]);
    let lines = mon.lines_for(T);
    let dp = format!("/devices/virtual/net/{name}");
    let net: Vec<&String> = lines.iter().filter(|l| l.contains(" net ")).collect();
    assert_eq!(
        net,
        [
            &format!("event add@{dp} groups=4 sender_is_kernel=0 net uplink last_nul=1"),
            &format!("event remove@{dp} groups=4 sender_is_kernel=0 net uplink last_nul=1"),
        ],
        "listener printed: {lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains(" queues - ")),
        "every event is rebroadcast, not only matched ones: {lines:?}"
    );
    let pos = |p: &str| lines.iter().position(|l| l.starts_with(p));
    let tap_add = pos(&format!("event add@{dp} ")).unwrap();
    let queue_add = pos(&format!("event add@{dp}/queues/")).unwrap();
    assert!(
        tap_add < queue_add,
        "a child's event waits for its parent's job: {lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("event libudev")),
        "mask 4 gets only the kernel format: {lines:?}"
    );
    let (_, err) = hp.stop();
    assert_eq!(stat(&err, "broadcast_failed"), 0, "{err}");
}

#[test]
fn no_listener_is_not_an_error() {
    // Kernel fact (Linux >= 4.18): a multicast nobody listens to returns
    // the length; the kernel's own socket ignores the non-netlink message.
    if !need_root("no_listener_is_not_an_error") {
        return;
    }
    let ns = Netns::new();
    let s = Scratch::new("bcast-none");
    let rules = s.rules("SUBSYSTEM==\"net\", ENV{HOTPLUG_ROLE}=\"uplink\"\n");
    let hp = daemon(&ns, &rules, &["udev", "kernel:0x10"]);
    let name = Tap::name("n");
    ip_in(&ns, &["tuntap", "add", "dev", &name, "mode", "tap"]);
    ip_in(&ns, &["link", "del", &name]);
    assert!(hp.wait_stderr(&format!("remove /devices/virtual/net/{name}"), T));
    let (_, err) = hp.stop();
    assert!(stat(&err, "broadcast_sent") >= 4, "{err}");
    let failures = ["again", "nobufs", "failed", "too_large"]
        .iter()
        .map(|k| stat(&err, &format!("broadcast_{k}")))
        .sum::<u64>();
    assert_eq!(failures, 0, "{err}");
}

#[test]
fn broadcast_usage_errors() {
    for (arg, want) in [
        ("kernel:1", "group 1"),
        ("kernel:0", "group mask"),
        ("mqtt", "expected udev or kernel:MASK"),
    ] {
        let out = hotplugd()
            .args(["run", "--broadcast", arg])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{arg}: {err}");
        assert!(err.contains(want), "{arg}: {err}");
    }
}

#[test]
fn pyudev_tag_filter_uses_the_bloom_filter_from_env_tags() {
    let test = "pyudev_tag_filter_uses_the_bloom_filter_from_env_tags";
    if !need_root(test) {
        return;
    }
    let Some(x) = clients(test) else { return };
    let ns = Netns::new();
    let s = Scratch::new("bcast-tag");
    let marks = s.path("marks");
    std::fs::create_dir_all(&marks).unwrap();
    // only net devices get the tag (TAG+=: udev refuses ENV{TAGS}=);
    // libudev's socket filter tests the bloom bits of `hotplugd` in the
    // header, its userspace check the TAGS value
    let rules = s.rules("SUBSYSTEM==\"net\", TAG+=\"hotplugd\", ENV{HOTPLUG_ROLE}=\"uplink\"\n");
    let hp = daemon(&ns, &rules, &["udev"]);
    let name = Tap::name("t");
    let mon = pyudev_monitor(&ns, &s, &x, &marks, &name, "tag");
    assert!(mon.next_line(T, |l| l == "ready").is_some());
    ip_in(&ns, &["tuntap", "add", "dev", &name, "mode", "tap"]);
    ip_in(&ns, &["link", "del", &name]);
    let lines = mon.lines_for(T);
    let events: Vec<&String> = lines.iter().filter(|l| l.starts_with("event ")).collect();
    let dp = format!("/devices/virtual/net/{name}");
    assert_eq!(
        events,
        [
            &format!("event add net {dp} uplink done=0"),
            &format!("event remove net {dp} uplink done=0"),
        ],
        "pyudev printed: {lines:?}"
    );
    drop(hp);
}
