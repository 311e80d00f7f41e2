//! `hotplugd run` on real kernel events: tap devices and marked `lo`
//! events, handlers that are shell scripts recording what they saw.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

fn daemon(rules: &str, extra: &[&str]) -> Proc {
    let mut c = hotplugd();
    c.args(["run", "--rules", rules]).args(extra);
    let p = Proc::spawn(c);
    p.wait_listening();
    p
}

/// Waits until `f` holds for the file's lines.
fn wait_lines(path: &Path, timeout: Duration, f: impl Fn(&[String]) -> bool) -> Vec<String> {
    let end = Instant::now() + timeout;
    loop {
        let lines: Vec<String> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect();
        if f(&lines) || Instant::now() > end {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn tap_add_and_remove_run_handlers_with_the_event_environment() {
    if !need_root("tap_add_and_remove") || !need_tool("tap", "ip") {
        return;
    }
    let s = Scratch::new("tapenv");
    let rec = s.script(
        "rec.sh",
        &format!(
            "env | sort > \"{}/env.$ACTION\"\necho \"$ACTION $# $1\" >> \"{}/log\"",
            s.0.display(),
            s.0.display()
        ),
    );
    let name = Tap::name("e");
    let rules = s.rules(&format!(
        "SUBSYSTEM==\"net\", KERNEL==\"{name}\", ACTION==\"add|remove\", RUN+=\"{rec} $kernel\"\n"
    ));
    let p = daemon(&rules, &[]);
    Tap::add(&name).del();
    let log = wait_lines(&s.path("log"), Duration::from_secs(10), |l| l.len() >= 2);
    assert_eq!(log, [format!("add 1 {name}"), format!("remove 1 {name}")]);
    let env = |action: &str| -> HashMap<String, String> {
        read(s.path(&format!("env.{action}")))
            .lines()
            .filter_map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect()
    };
    let (add, rm) = (env("add"), env("remove"));
    let devpath = format!("/devices/virtual/net/{name}");
    assert_eq!(add["ACTION"], "add");
    assert_eq!(add["DEVPATH"], devpath);
    assert_eq!(add["INTERFACE"], name);
    assert_eq!(add["SUBSYSTEM"], "net");
    assert_eq!(rm["ACTION"], "remove");
    assert_eq!(rm["DEVPATH"], devpath);
    let (sa, sr): (u64, u64) = (
        add["SEQNUM"].parse().unwrap(),
        rm["SEQNUM"].parse().unwrap(),
    );
    assert!(sr > sa);
    assert_eq!(add["HOTPLUGD_RULE"], format!("{rules}:1"));
    assert_eq!(
        add["PATH"],
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );
    // nothing of the daemon's (or the test's) own environment leaks in
    assert!(
        !add.contains_key("HOME") && !add.contains_key("CARGO"),
        "{add:?}"
    );
    assert!(add.contains_key("PWD"), "sh sets PWD");
    assert_eq!(add["PWD"], "/");
    let (st, err) = p.stop();
    assert!(st.success(), "{err}");
    assert_eq!(stat(&err, "handlers_started"), 2);
    assert_eq!(stat(&err, "handlers_failed"), 0);
}

#[test]
fn slow_add_delays_the_same_devices_remove_but_not_other_devices() {
    if !need_root("slow_add_delays") || !need_tool("tap", "ip") {
        return;
    }
    let s = Scratch::new("order");
    let (a, b) = (Tap::name("a"), Tap::name("b"));
    let slow = s.script(
        "slow.sh",
        &format!(
            "echo \"start $ACTION $INTERFACE $(date +%s%N)\" >> \"{log}\"\n\
             if [ \"$ACTION\" = add ] && [ \"$INTERFACE\" = {a} ]; then sleep 2; fi\n\
             echo \"end $ACTION $INTERFACE $(date +%s%N)\" >> \"{log}\"",
            log = s.path("log").display()
        ),
    );
    let rules = s.rules(&format!(
        "SUBSYSTEM==\"net\", KERNEL==\"{a}|{b}\", RUN+=\"{slow}\"\n"
    ));
    let p = daemon(&rules, &[]);
    let ta = Tap::add(&a);
    let tb = Tap::add(&b);
    ta.del();
    tb.del();
    let lines = wait_lines(&s.path("log"), Duration::from_secs(15), |l| l.len() >= 8);
    assert_eq!(lines.len(), 8, "{lines:#?}\n{}", p.stderr());
    let t = |what: &str, action: &str, dev: &str| -> u128 {
        lines
            .iter()
            .find_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (f[0] == what && f[1] == action && f[2] == dev).then(|| f[3].parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no {what} {action} {dev} in {lines:#?}"))
    };
    // the remove of A waits for A's slow add...
    assert!(
        t("start", "remove", &a) >= t("end", "add", &a),
        "{lines:#?}"
    );
    // ...while B's add and remove run meanwhile
    assert!(t("start", "add", &b) < t("end", "add", &a), "{lines:#?}");
    assert!(t("end", "remove", &b) < t("end", "add", &a), "{lines:#?}");
    drop(p);
}

#[test]
fn max_children_is_never_exceeded() {
    if !need_root("max_children") || !need_tool("tap", "ip") {
        return;
    }
    let s = Scratch::new("maxkids");
    let tag = Tap::name("c");
    let h = s.script(
        "h.sh",
        &format!(
            "echo \"+ $(date +%s%N)\" >> \"{log}\"\nsleep 0.4\necho \"- $(date +%s%N)\" >> \"{log}\"",
            log = s.path("log").display()
        ),
    );
    let rules = s.rules(&format!(
        "ACTION==\"add\", SUBSYSTEM==\"net\", KERNEL==\"{tag}*\", RUN+=\"{h}\"\n"
    ));
    let p = daemon(&rules, &["--max-children", "2"]);
    let taps: Vec<Tap> = (0..6).map(|i| Tap::add(&format!("{tag}{i}"))).collect();
    let lines = wait_lines(&s.path("log"), Duration::from_secs(20), |l| l.len() >= 12);
    assert_eq!(lines.len(), 12, "{lines:#?}");
    let mut ev: Vec<(u128, i32)> = lines
        .iter()
        .map(|l| {
            let (sign, t) = l.split_once(' ').unwrap();
            (t.parse().unwrap(), if sign == "+" { 1 } else { -1 })
        })
        .collect();
    ev.sort();
    let (mut now, mut max) = (0, 0);
    for (_, d) in ev {
        now += d;
        max = max.max(now);
    }
    assert_eq!(max, 2, "the limit is reached, never passed");
    drop(taps);
    drop(p);
}

fn alive(pid: i32) -> bool {
    // a zombie counts as gone: look at its state
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

#[test]
fn a_hanging_handler_and_its_grandchild_are_killed_at_the_timeout() {
    if !need_root("hanging_handler") {
        return;
    }
    let s = Scratch::new("hang");
    let id = uuid();
    let h = s.script(
        "hang.sh",
        &format!(
            "sleep 300 &\necho $! > \"{gc}\"\necho $$ > \"{me}\"\nsleep 300",
            gc = s.path("grandchild.pid").display(),
            me = s.path("handler.pid").display()
        ),
    );
    let rules = s.rules(&format!("ENV{{SYNTH_UUID}}==\"{id}\", RUN+=\"{h}\"\n"));
    let p = daemon(&rules, &["--handler-timeout", "1"]);
    synth(&lo_uevent(), "change", &id, &[]);
    let pid = |f: &str| -> i32 {
        wait_lines(&s.path(f), Duration::from_secs(10), |l| !l.is_empty())
            .first()
            .unwrap_or_else(|| panic!("{f} not written; stderr:\n{}", p.stderr()))
            .parse()
            .unwrap()
    };
    let (handler, grandchild) = (pid("handler.pid"), pid("grandchild.pid"));
    let t0 = Instant::now();
    while (alive(handler) || alive(grandchild)) && t0.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(handler), "handler {handler} survived its timeout");
    assert!(
        !alive(grandchild),
        "grandchild {grandchild} survived its handler's timeout"
    );
    assert!(p.wait_stderr(
        "still running after 1000 ms: SIGTERM to its process group",
        Duration::from_secs(5)
    ));
    let (st, err) = p.stop();
    assert!(st.success(), "{err}");
    assert_eq!(stat(&err, "handlers_timed_out"), 1, "{err}");
    assert_eq!(
        stat(&err, "handlers_failed"),
        0,
        "a timeout is counted once, as a timeout"
    );
}

#[test]
fn hostile_values_arrive_verbatim_as_one_argument_and_nothing_runs() {
    if !need_root("hostile_values") {
        return;
    }
    let s = Scratch::new("hostile");
    let pwned = format!("/tmp/hotplugd-pwned-{}", std::process::id());
    let _ = std::fs::remove_file(&pwned);
    let id = uuid();
    let rec = s.script(
        "args.sh",
        &format!(
            "printf '%s\\n' \"$#\" \"$@\" > \"{}\"",
            s.path("args").display()
        ),
    );
    let rules = s.rules(&format!(
        "ENV{{SYNTH_UUID}}==\"{id}\", RUN+=\"{rec} $env{{SYNTH_ARG_X}} $kernel\"\n\
         ACTION==\"add\", SUBSYSTEM==\"net\", KERNEL==\"*hp{}*\", RUN+=\"{rec} $env{{INTERFACE}} $kernel\"\n",
        std::process::id() % 100_000
    ));
    let p = daemon(&rules, &[]);
    // A real kernel event whose values are shell syntax: an interface name
    // may hold anything but '/', ':' and white space (15 bytes at most).
    // Run by a shell from "/", it would create the file /hpNNNNN.
    let marker = format!("hp{}", std::process::id() % 100_000);
    let name = format!("\";$(>{marker})");
    let tap = Tap::add(&name);
    let got = wait_lines(&s.path("args"), Duration::from_secs(10), |l| l.len() >= 3);
    assert_eq!(
        got,
        ["2".to_string(), name.clone(), name.clone()],
        "{}",
        p.stderr()
    );
    tap.del();
    assert!(
        !Path::new("/").join(&marker).exists(),
        "an interface name was executed"
    );
    drop(p);

    // Through replay, which runs handlers exactly as the daemon: spaces too.
    let value = format!("a b  \"c\" 'd' $(touch {pwned}) ; touch {pwned}");
    let mut json =
        String::from("{\"action\":\"change\",\"devpath\":\"/devices/virtual/net/lo\",\"env\":{");
    json.push_str(
        "\"ACTION\":\"change\",\"DEVPATH\":\"/devices/virtual/net/lo\",\"SUBSYSTEM\":\"net\",",
    );
    json.push_str(&format!("\"SYNTH_UUID\":\"{id}\",\"SYNTH_ARG_X\":"));
    json.push_str(&format!("\"{}\"", value.replace('"', "\\\"")));
    json.push_str("}}\n");
    let input = s.path("in.jsonl");
    std::fs::write(&input, json).unwrap();
    let out = hotplugd()
        .args(["replay", "--rules", &rules])
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Vec<String> = read(s.path("args")).lines().map(String::from).collect();
    assert_eq!(got, ["2".to_string(), value, "lo".to_string()]);
    let _ = std::fs::remove_file(&pwned);
    assert!(!Path::new(&pwned).exists(), "a value was executed");
}

#[test]
fn sighup_with_a_broken_file_keeps_the_old_rules_and_a_fixed_file_switches() {
    if !need_root("sighup_reload") {
        return;
    }
    let s = Scratch::new("hup");
    let rec = s.script(
        "rec.sh",
        &format!(
            "echo \"$1 $SYNTH_ARG_N\" >> \"{}\"",
            s.path("log").display()
        ),
    );
    // the kernel takes only letters and digits in synthetic argument values
    let tag = uuid().replace('-', "");
    let rule = |v: &str| format!("ENV{{SYNTH_ARG_T}}==\"{tag}\", RUN+=\"{rec} {v}\"\n");
    let rules = s.rules(&rule("v1"));
    let p = daemon(&rules, &[]);
    let event = |n: &str| {
        synth(
            &lo_uevent(),
            "change",
            &uuid(),
            &[&format!("T={tag}"), &format!("N={n}")],
        )
    };
    let log = s.path("log");
    event("1");
    wait_lines(&log, Duration::from_secs(10), |l| !l.is_empty());

    // half-written: a file that does not parse at all (a line cut short)
    std::fs::write(&rules, "ENV{X}==\"unclosed\n").unwrap();
    p.signal(Signal::SIGHUP);
    assert!(
        p.wait_stderr(
            "the old rules (1 rules from 1 files) stay in force",
            Duration::from_secs(10)
        ),
        "{}",
        p.stderr()
    );
    assert!(
        p.stderr().contains("test.rules:1:9: unclosed quote"),
        "{}",
        p.stderr()
    );
    event("2");
    wait_lines(&log, Duration::from_secs(10), |l| l.len() >= 2);

    // deleted: also an error, old rules stay
    std::fs::remove_file(&rules).unwrap();
    p.signal(Signal::SIGHUP);
    assert!(p.wait_stderr(
        "cannot read: No such file or directory",
        Duration::from_secs(10)
    ));
    event("3");
    wait_lines(&log, Duration::from_secs(10), |l| l.len() >= 3);

    // a file with a bad line loads the rest, as udev would (issue 13)
    std::fs::write(&rules, format!("{}FROB==\"x\"\n", rule("v2"))).unwrap();
    p.signal(Signal::SIGHUP);
    assert!(p.wait_stderr("reloaded after SIGHUP", Duration::from_secs(10)));
    assert!(
        p.stderr()
            .contains("test.rules:2:1: unknown key 'FROB' (line skipped"),
        "{}",
        p.stderr()
    );
    event("4");
    let lines = wait_lines(&log, Duration::from_secs(10), |l| l.len() >= 4);
    assert_eq!(lines, ["v1 1", "v1 2", "v1 3", "v2 4"]);
    let (st, _) = p.stop();
    assert!(st.success());
}

#[test]
fn failed_handlers_are_counted_and_the_next_ones_still_run() {
    if !need_root("failed_handlers") {
        return;
    }
    let s = Scratch::new("fail");
    let id = uuid();
    let exit3 = s.script("exit3.sh", "echo about to fail; exit 3");
    let killed = s.script("killed.sh", "kill -9 $$");
    let noexec = s.path("noexec.sh");
    std::fs::write(&noexec, "#!/bin/sh\necho never\n").unwrap();
    let ok = s.script(
        "ok.sh",
        &format!("echo \"$SEQNUM\" >> \"{}\"", s.path("ok").display()),
    );
    let rules = s.rules(&format!(
        "ENV{{SYNTH_UUID}}==\"{id}\", RUN+=\"/nonexistent/handler\", RUN+=\"{exit3}\", \
         RUN+=\"{killed}\", RUN+=\"{}\", RUN+=\"{ok}\"\n",
        noexec.display()
    ));
    let p = daemon(&rules, &[]);
    synth(&lo_uevent(), "change", &id, &[]);
    synth(&lo_uevent(), "change", &id, &[]);
    let lines = wait_lines(&s.path("ok"), Duration::from_secs(10), |l| l.len() >= 2);
    assert_eq!(lines.len(), 2, "{}", p.stderr());
    let (st, err) = p.stop();
    assert!(st.success());
    assert_eq!(stat(&err, "handlers_started"), 10, "{err}");
    assert_eq!(stat(&err, "handlers_failed"), 8, "{err}");
    assert!(err.contains(":1: cannot start /nonexistent/handler for change /devices/virtual/net/lo: No such file or directory"), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    assert!(err.contains("exited 3 after"), "{err}");
    assert!(err.contains("killed by SIGKILL"), "{err}");
    assert!(
        err.contains("] about to fail"),
        "handler output is logged: {err}"
    );
}
