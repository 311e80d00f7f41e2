//! Faults, each on the real binary: forged and oversized datagrams, handlers
//! that misbehave, a fork that fails, a closed stderr, rule files that go
//! bad during SIGHUP, SIGTERM during a burst, an unreadable sysfs subtree.
//! After every one, the next real event must still be handled.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

/// A rule that appends `$SEQNUM` of marked events to `out`.
fn recorder(s: &Scratch, id: &str, out: &Path) -> String {
    let h = s.script(
        "rec.sh",
        &format!("echo \"$SEQNUM\" >> \"{}\"", out.display()),
    );
    format!("ENV{{SYNTH_UUID}}==\"{id}\", RUN+=\"{h}\"\n")
}

/// Writes a Python program that asks the kernel to rebroadcast `payload`
/// (a unicast to port 0 with a netlink header, type 0x10, NLM_F_REQUEST):
/// from root of a user namespace it arrives with port 0, uid 0 and the
/// sender's pid.
fn rebroadcaster(path: &Path, payload: &str) {
    std::fs::write(
        path,
        format!(
            r#"import socket, struct
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 15)
p = b"{payload}"
s.sendto(struct.pack("=IHHII", 16 + len(p), 0x10, 1, 0, 0) + p, (0, 0))
"#
        ),
    )
    .unwrap();
}

/// Runs `script` with `sh -c` as root of a new user, network and mount
/// namespace (`unshare -Urnm`), `$D` set to `dir`; its stdout.
fn in_own_userns(dir: &Path, script: &str) -> String {
    let out = Command::new("unshare")
        .args(["-Urnm", "sh", "-c", script])
        .env("D", dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_forged_kernel_rebroadcast_in_a_user_namespace_is_rejected() {
    if !need_root("rebroadcast")
        || !need_tool("rebroadcast", "python3")
        || !need_tool("rebroadcast", "unshare")
    {
        return;
    }
    // Inside `unshare -Urnm`, the process is root of its own network
    // namespace and may ask the kernel to rebroadcast a uevent: it arrives
    // with sender port 0 and uid 0, but the sender's pid.
    let s = Scratch::new("rebroadcast");
    rebroadcaster(
        &s.path("forge.py"),
        r"add@/devices/forged\0ACTION=add\0DEVPATH=/devices/forged\0SUBSYSTEM=forged\0",
    );
    let mut hd = runner();
    hd.push(bin().display().to_string());
    let id = uuid();
    let script = format!(
        r#"mount -t sysfs sysfs /sys || exit 9
        {hd} monitor --json > "$D/out" 2> "$D/err" &
        pid=$!
        i=0; while ! grep -q listening "$D/err" && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
        python3 "$D/forge.py" || echo FORGE-FAILED
        echo "change {id}" > /sys/class/net/lo/uevent
        i=0; while ! grep -q "{id}" "$D/out" && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
        kill $pid; wait $pid
        echo "exit $?""#,
        hd = hd.join(" ")
    );
    let text = in_own_userns(&s.0, &script);
    let json = read(s.path("out"));
    let err = read(s.path("err"));
    assert!(
        text.contains("exit 0") && !text.contains("FORGE-FAILED"),
        "{text}\n{err}"
    );
    assert!(
        json.contains(&id),
        "the real event is handled: {json}\n{err}"
    );
    assert!(!json.contains("forged"), "the forgery is not: {json}");
    assert_eq!(stat(&err, "rejected"), 1, "{err}");
    assert!(
        err.contains("rejected a datagram not sent by the kernel (port 0, pid "),
        "{err}"
    );
}

#[test]
fn an_oversized_datagram_is_counted_as_truncated_and_the_next_event_handled() {
    if !need_root("truncated") {
        return;
    }
    let ns = Netns::new();
    let mut c = ns.hotplugd();
    c.args(["monitor", "--json"]);
    let p = Proc::spawn(c);
    p.wait_listening();
    let mut big = b"add@/devices/big\0ACTION=add\0DEVPATH=/devices/big\0".to_vec();
    big.extend(std::iter::repeat_n(b'x', 9000));
    big.push(0);
    multicast(&ns, big);
    let id = uuid();
    synth(&ns.lo_uevent(), "change", &id, &[]);
    assert!(
        p.next_line(Duration::from_secs(10), |l| l.contains(&id))
            .is_some(),
        "{}",
        p.stderr()
    );
    let (st, err) = p.stop();
    assert!(st.success());
    assert_eq!(stat(&err, "truncated"), 1, "{err}");
    assert!(err.contains("larger than the 8192-byte buffer"), "{err}");
}

#[test]
fn handlers_that_flood_or_close_their_output_do_not_stall_anything() {
    if !need_root("handler_output") {
        return;
    }
    let s = Scratch::new("output");
    let id = uuid();
    let done = s.path("done");
    let flood = s.script(
        "flood.sh",
        "head -c 5000000 /dev/zero | tr '\\0' x; echo; seq 1 20000",
    );
    let closer = s.script(
        "closer.sh",
        &format!(
            "exec >&- 2>&-; sleep 0.3; echo closed >> \"{}\"",
            done.display()
        ),
    );
    let out = s.path("seq");
    let rules = s.rules(&format!(
        "ENV{{SYNTH_UUID}}==\"{id}\", ENV{{SYNTH_ARG_K}}==\"flood\", RUN+=\"{flood}\"\n\
         ENV{{SYNTH_UUID}}==\"{id}\", ENV{{SYNTH_ARG_K}}==\"close\", RUN+=\"{closer}\"\n{}",
        recorder(&s, &id, &out)
    ));
    let mut c = hotplugd();
    c.args(["run", "--rules", &rules]);
    let p = Proc::spawn(c);
    p.wait_listening();
    synth(&lo_uevent(), "change", &id, &["K=flood"]);
    synth(&lo_uevent(), "change", &id, &["K=close"]);
    synth(&lo_uevent(), "change", &id, &["K=last"]);
    let got = wait_file(&out, Duration::from_secs(30), |s| s.lines().count() >= 3);
    assert_eq!(
        got.lines().count(),
        3,
        "every event's recorder ran: {}",
        p.stderr()
    );
    assert_eq!(
        wait_file(&done, Duration::from_secs(10), |s| !s.is_empty()),
        "closed\n"
    );
    assert!(
        p.wait_stderr("of output not logged", Duration::from_secs(30)),
        "the lines over the rate are summarised: {}",
        p.stderr()
    );
    let (st, err) = p.stop();
    assert!(st.success(), "{err}");
    assert!(
        stat(&err, "output_lines_cut") >= 1,
        "the 5 MB line was cut: {err}"
    );
    // 20,001 lines: at most LOG_LINES_PER_SEC a second are logged, the
    // rest counted
    let suppressed = stat(&err, "output_lines_suppressed");
    assert!(
        (19_000..=20_001).contains(&suppressed),
        "output_lines_suppressed={suppressed}: {err}"
    );
    assert_eq!(stat(&err, "handlers_failed"), 0, "{err}");
}

#[test]
fn a_failing_fork_is_counted_and_handlers_start_again_once_it_works() {
    if !need_root("fork_fails")
        || !need_tool("fork_fails", "prlimit")
        || !need_tool("fork_fails", "setpriv")
    {
        return;
    }
    // RLIMIT_NPROC binds only without CAP_SYS_RESOURCE/CAP_SYS_ADMIN: run
    // the daemon as nobody, allowed its own tasks plus one process. A
    // handler that sleeps 3 s takes that one; a handler started meanwhile
    // cannot fork; once the sleeper is gone, handlers start again.
    let s = Scratch::new("nproc");
    let outdir = s.path("out");
    std::fs::create_dir(&outdir).unwrap();
    std::fs::set_permissions(&outdir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let out = outdir.join("seq");
    let id = uuid();
    let rules = s.rules(&format!(
        "ENV{{SYNTH_UUID}}==\"{id}\", ENV{{SYNTH_ARG_K}}==\"sleep\", RUN+=\"/bin/sleep 3\"\n\
         ENV{{SYNTH_UUID}}==\"{id}\", ENV{{SYNTH_ARG_K}}==\"rec\", RUN+=\"{}\"\n",
        s.script(
            "rec.sh",
            &format!("echo \"$SEQNUM\" >> \"{}\"", out.display())
        )
    ));
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
    ];
    let exe = reachable_bin(&s.0);
    // how many tasks the daemon has by itself (qemu-user adds threads)
    let mut probe = wrapped_bin(&nobody, &exe);
    probe.args(["run", "--rules", &rules]);
    let p = Proc::spawn(probe);
    p.wait_listening();
    let tasks = std::fs::read_dir(format!("/proc/{}/task", p.pid()))
        .unwrap()
        .count();
    p.stop();
    // Under qemu-user a forked child is an emulator that starts a thread
    // of its own before it execs: it needs two slots, and the second fork
    // then fails in that thread ("qemu_thread_create: Resource temporarily
    // unavailable", logged as the handler's output) rather than in fork.
    let slack = if runner().is_empty() { 1 } else { 2 };
    let limit = format!("--nproc={}", tasks + slack);
    let mut prefix = vec!["prlimit", limit.as_str(), "--"];
    prefix.extend(nobody);
    let mut c = wrapped_bin(&prefix, &exe);
    c.args(["run", "--rules", &rules]);
    let p = Proc::spawn(c);
    p.wait_listening();
    // events of one device are handled in order: the sleeper gets a tap
    // of its own, so that lo's event is started while it sleeps
    let tap = Tap::add(&Tap::name("np"));
    let tap_uevent = std::path::PathBuf::from(format!("/sys/class/net/{}/uevent", tap.0));
    synth(&tap_uevent, "change", &id, &["K=sleep"]);
    assert!(
        p.wait_stderr("started /bin/sleep", Duration::from_secs(10)),
        "{}",
        p.stderr()
    );
    synth(&lo_uevent(), "change", &id, &["K=rec"]);
    assert!(
        p.wait_stderr("Resource temporarily unavailable", Duration::from_secs(10)),
        "fork failed and was logged: {}",
        p.stderr()
    );
    assert!(p.wait_stderr("/bin/sleep", Duration::from_secs(1)));
    assert!(
        p.wait_stderr("exited 0 after", Duration::from_secs(10)),
        "the sleeper ended: {}",
        p.stderr()
    );
    synth(&lo_uevent(), "change", &id, &["K=rec"]);
    let got = wait_file(&out, Duration::from_secs(10), |s| s.lines().count() >= 1);
    assert_eq!(
        got.lines().count(),
        1,
        "the next event's handler ran: {}",
        p.stderr()
    );
    let (st, err) = p.stop();
    assert!(st.success(), "{err}");
    assert_eq!(stat(&err, "handlers_failed"), 1, "{err}");
}

#[test]
fn a_closed_stderr_does_not_stop_the_daemon() {
    if !need_root("closed_stderr") {
        return;
    }
    let s = Scratch::new("closederr");
    let id = uuid();
    let out = s.path("seq");
    let rules = s.rules(&recorder(&s, &id, &out));
    // stderr is a pipe whose reader is gone: every write fails (EPIPE)
    let mut child = hotplugd()
        .args(["-v", "run", "--rules", &rules])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..3 {
        synth(&lo_uevent(), "change", &id, &[]);
    }
    let got = wait_file(&out, Duration::from_secs(10), |s| s.lines().count() >= 3);
    assert_eq!(got.lines().count(), 3, "handlers ran with stderr closed");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < end, "did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(st.success(), "{st:?}");
}

#[test]
fn rules_that_go_bad_during_sighup_keep_the_old_rules() {
    if !need_root("rules_go_bad") || !need_tool("rules_go_bad", "setpriv") {
        return;
    }
    let s = Scratch::new("gobad");
    let id = uuid();
    let out = s.path("seq");
    let good = recorder(&s, &id, &out);
    let rules = s.rules(&good);
    // without CAP_DAC_OVERRIDE/READ_SEARCH, so that mode 000 means unreadable
    let mut c = wrapped(&WITHOUT_DAC_OVERRIDE);
    c.args(["run", "--rules", &rules]);
    let p = Proc::spawn(c);
    p.wait_listening();
    let mut n = 0;
    let mut handled = |why: &str| {
        n += 1;
        synth(&lo_uevent(), "change", &id, &[]);
        let got = wait_file(&out, Duration::from_secs(10), |s| s.lines().count() >= n);
        assert_eq!(got.lines().count(), n, "{why}: {}", p.stderr());
    };
    handled("start");
    for (case, bad) in [
        ("half-written", "half"),
        ("unreadable", "mode"),
        ("a FIFO", "fifo"),
    ] {
        let before = p.stderr().matches("stay in force").count();
        let path = Path::new(&rules);
        match bad {
            "half" => std::fs::write(path, &good[..good.len() / 2]).unwrap(),
            "mode" => {
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o000)).unwrap()
            }
            _ => {
                std::fs::remove_file(path).unwrap();
                nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
            }
        }
        p.signal(Signal::SIGHUP);
        let end = Instant::now() + Duration::from_secs(10);
        while p.stderr().matches("stay in force").count() == before && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            p.stderr().matches("stay in force").count() > before,
            "{case}: the reload failed and said so: {}",
            p.stderr()
        );
        handled(case);
        // put the good file back
        let _ = std::fs::remove_file(path);
        std::fs::write(path, &good).unwrap();
    }
    let err = p.stderr();
    assert!(err.contains("Permission denied"), "{err}");
    assert!(err.contains("not a regular file"), "{err}");
    let (st, _) = p.stop();
    assert!(st.success());
}

#[test]
fn sigterm_during_a_burst_with_handlers_running_exits_cleanly() {
    if !need_root("sigterm_burst") {
        return;
    }
    let ns = Netns::new();
    let s = Scratch::new("termburst");
    let id = uuid();
    let pids = s.path("pids");
    let h = s.script(
        "slow.sh",
        &format!("echo $$ >> \"{}\"; sleep 30", pids.display()),
    );
    let rules = s.rules(&format!("ENV{{SYNTH_UUID}}==\"{id}\", RUN+=\"{h}\"\n"));
    let mut c = ns.hotplugd();
    c.args([
        "run",
        "--rules",
        &rules,
        "--max-children",
        "4",
        "--handler-timeout",
        "60",
    ]);
    let mut p = Proc::spawn(c);
    p.wait_listening();
    for _ in 0..200 {
        synth(&ns.lo_uevent(), "change", &id, &[]);
    }
    wait_file(&pids, Duration::from_secs(10), |s| s.lines().count() >= 4);
    let t = Instant::now();
    p.signal(Signal::SIGTERM);
    // handlers get SIGTERM at once (sleep dies of it), SIGKILL 2 s later
    let st = p.wait(Duration::from_secs(15));
    let took = t.elapsed();
    let err = p.take_stderr();
    assert!(st.success(), "{err}");
    assert!(took < Duration::from_secs(10), "stopped in {took:?}");
    for pid in read(&pids).lines() {
        let pid: i32 = pid.parse().unwrap();
        assert!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err(),
            "handler {pid} still alive"
        );
    }
    assert!(err.contains("stats:"), "{err}");
}

#[test]
fn an_unreadable_sysfs_subtree_is_skipped_and_counted_not_fatal() {
    if !need_root("unreadable_sysfs") || !need_tool("unreadable_sysfs", "setpriv") {
        return;
    }
    // A copy of the real USB fixture as sysfs, with one device subtree
    // made unreadable, walked by coldplug (the resync's walk).
    let s = Scratch::new("unreadsys");
    let root = s.path("sys");
    let st = Command::new("cp")
        .args(["-a"])
        .arg(repo("tests/corpus/sysfs/x86_64"))
        .arg(&root)
        .status()
        .unwrap();
    assert!(st.success());
    let hidden = root.join("devices/pci0000:00/0000:00:02.0/usb2");
    std::fs::set_permissions(&hidden, std::fs::Permissions::from_mode(0o000)).unwrap();
    let rules =
        s.rules("SUBSYSTEM==\"usb\", ENV{DEVTYPE}==\"usb_device\", RUN{builtin}+=\"log\"\n");
    let mut c = wrapped(&WITHOUT_DAC_OVERRIDE);
    c.args([
        "run",
        "--rules",
        &rules,
        "--coldplug",
        "synthesize",
        "--sysfs-root",
    ])
    .arg(&root);
    let p = Proc::spawn(c);
    assert!(
        p.wait_stderr("coldplug: ", Duration::from_secs(20)),
        "{}",
        p.stderr()
    );
    let id = uuid();
    synth(&lo_uevent(), "change", &id, &[]);
    let (st, err) = p.stop();
    std::fs::set_permissions(&hidden, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(st.success(), "{err}");
    assert!(err.contains("unreadable entries skipped"), "{err}");
    // usb1's devices (the FTDI adapters) are still there; usb2's are not
    assert_eq!(err.matches("usb add 0403:6001").count(), 2, "{err}");
    assert!(!err.contains("usb add 46f4:0001"), "{err}");
    assert_eq!(stat(&err, "accepted"), stat(&err, "received"), "{err}");
}

/// Issue 12: inside LXD/Incus-style containers, the host's events arrive
/// as kernel rebroadcasts of an injection (port 0, uid 0, the injector's
/// pid). `run --accept-injected` takes them; without it they are rejected.
#[test]
fn accept_injected_takes_a_root_rebroadcast_and_the_default_rejects_it() {
    if !need_root("accept_injected")
        || !need_tool("accept_injected", "python3")
        || !need_tool("accept_injected", "unshare")
    {
        return;
    }
    let s = Scratch::new("injected");
    rebroadcaster(
        &s.path("inject.py"),
        r"add@/devices/injected\0ACTION=add\0DEVPATH=/devices/injected\0SUBSYSTEM=injected\0",
    );
    let rules = s.rules("SUBSYSTEM==\"injected\", RUN{builtin}+=\"log\"\n");
    let mut hd = runner();
    hd.push(bin().display().to_string());
    for accept in [true, false] {
        let flag = if accept { "--accept-injected" } else { "" };
        let script = format!(
            r#"mount -t sysfs sysfs /sys || exit 9
            {hd} run --insecure-rules --rules "{rules}" {flag} 2> "$D/err" &
            pid=$!
            i=0; while ! grep -q listening "$D/err" && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
            python3 "$D/inject.py" || echo INJECT-FAILED
            i=0; while ! grep -q "injected\|rejected" "$D/err" && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
            kill $pid; wait $pid
            echo "exit $?""#,
            hd = hd.join(" ")
        );
        let text = in_own_userns(&s.0, &script);
        let err = read(s.path("err"));
        assert!(
            text.contains("exit 0") && !text.contains("INJECT-FAILED"),
            "{text}\n{err}"
        );
        if accept {
            assert!(err.contains("add /devices/injected"), "{err}");
            assert_eq!(stat(&err, "rejected"), 0, "{err}");
        } else {
            assert!(!err.contains("add /devices/injected"), "{err}");
            assert_eq!(stat(&err, "rejected"), 1, "{err}");
        }
    }
}
