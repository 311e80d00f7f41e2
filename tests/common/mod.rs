//! Helpers shared by the integration tests: running the real binary (under
//! the cross runner when one is set), waiting for its output with time
//! limits, making real kernel uevents, and the root/CI policy.
//!
//! Policy: a test that needs root or netlink skips with a printed reason
//! outside CI, and fails in CI (`CI=true`), where skipping would hide that it
//! did not run.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// True when running in CI: every test must run there.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Returns true if the test can run as root; otherwise skips (prints why)
/// or, in CI, panics.
pub fn need_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if in_ci() {
        panic!("{test}: needs root (netlink uevents, sysfs writes); CI=true, so this is a failure");
    }
    eprintln!(
        "SKIPPED {test}: needs root (run the tests as root, or with CI=true to make this fail)"
    );
    false
}

/// Fails in CI, skips elsewhere, when a required tool is missing.
pub fn need_tool(test: &str, tool: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()));
    if found {
        return true;
    }
    if in_ci() {
        panic!("{test}: needs `{tool}` on PATH; CI=true, so this is a failure");
    }
    eprintln!("SKIPPED {test}: `{tool}` not found");
    false
}

/// The runner prefix for the binary under test (e.g. `qemu-aarch64` when
/// cross-testing), from HOTPLUGD_TEST_RUNNER.
pub fn runner() -> Vec<String> {
    std::env::var("HOTPLUGD_TEST_RUNNER")
        .map(|r| r.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

/// The hotplugd binary cargo built for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hotplugd"))
}

/// A `Command` that runs hotplugd (through the runner, if any).
pub fn hotplugd() -> Command {
    wrapped(&[])
}

/// A `Command` that runs `prefix... [runner...] hotplugd`: e.g.
/// `wrapped(&["unshare", "-n", "--"])` runs it in a new network namespace.
pub fn wrapped(prefix: &[&str]) -> Command {
    wrapped_bin(prefix, &bin())
}

/// A copy of the binary in `dir`, mode 0755, for a test that runs it as
/// another user: the build directory may be private (a clone in a
/// `mktemp -d` directory is 0700; qemu-user then cannot open the binary
/// and exits 1 without a word).
pub fn reachable_bin(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.join("hotplugd");
    std::fs::copy(bin(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    exe
}

/// [`wrapped`] with another copy of the binary (e.g. one an unprivileged
/// user can reach: the build directory may sit in a private directory).
pub fn wrapped_bin(prefix: &[&str], bin: &Path) -> Command {
    let mut argv: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
    argv.extend(runner());
    argv.push(bin.to_string_lossy().into_owned());
    let mut c = Command::new(&argv[0]);
    c.args(&argv[1..]);
    c
}

/// A fresh random UUID from the kernel.
pub fn uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .expect("read /proc/sys/kernel/random/uuid")
        .trim()
        .to_string()
}

/// Writes `ACTION UUID K=V...` to a device's `uevent` file: the kernel
/// sends a real uevent with `SYNTH_UUID=UUID` and `SYNTH_ARG_K=V`.
pub fn synth(uevent_file: &Path, action: &str, uuid: &str, args: &[&str]) {
    let mut s = format!("{action} {uuid}");
    for a in args {
        s.push(' ');
        s.push_str(a);
    }
    std::fs::write(uevent_file, s)
        .unwrap_or_else(|e| panic!("write {}: {e}", uevent_file.display()));
}

/// The host's loopback `uevent` file.
pub fn lo_uevent() -> PathBuf {
    PathBuf::from("/sys/class/net/lo/uevent")
}

/// A running process with its output collected line by line by threads.
pub struct Proc {
    pub child: Child,
    out: Receiver<String>,
    pub err_lines: Arc<Mutex<Vec<String>>>,
    err_done: Option<thread::JoinHandle<()>>,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr piped.
    pub fn spawn(mut cmd: Command) -> Proc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(l).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        let err_lines = Arc::new(Mutex::new(Vec::new()));
        let e2 = err_lines.clone();
        let err_done = thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let l = String::from_utf8_lossy(&buf).trim_end().to_string();
                        e2.lock().unwrap().push(l);
                    }
                }
            }
        });
        Proc {
            child,
            out: rx,
            err_lines,
            err_done: Some(err_done),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits until a stderr line contains `pat`.
    pub fn wait_stderr(&self, pat: &str, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self
                .err_lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains(pat))
            {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Waits for the "listening" log line that follows the bind.
    pub fn wait_listening(&self) {
        assert!(
            self.wait_stderr("listening for kernel uevents", Duration::from_secs(20)),
            "hotplugd did not start; stderr:\n{}",
            self.stderr()
        );
    }

    /// The next stdout line that satisfies `pred`, within `timeout`.
    pub fn next_line(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left) {
                Ok(l) if pred(&l) => return Some(l),
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    return None
                }
            }
        }
    }

    /// Every stdout line that arrives within `timeout` (until a quiet spell).
    pub fn lines_for(&self, timeout: Duration) -> Vec<String> {
        let end = Instant::now() + timeout;
        let mut v = Vec::new();
        while let Ok(l) = self
            .out
            .recv_timeout(end.saturating_duration_since(Instant::now()))
        {
            v.push(l);
        }
        v
    }

    /// Everything on stderr so far.
    pub fn stderr(&self) -> String {
        self.err_lines.lock().unwrap().join("\n")
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig);
    }

    /// Sends SIGTERM and waits (bounded) for exit; returns status and stderr.
    pub fn stop(mut self) -> (ExitStatus, String) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let st = self.wait(Duration::from_secs(20));
        (st, self.take_stderr())
    }

    /// Waits (bounded) for the process to exit; kills it on timeout and fails.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let end = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "process did not exit within {timeout:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for stderr to close and returns all of it.
    pub fn take_stderr(&mut self) -> String {
        if let Some(h) = self.err_done.take() {
            let _ = h.join();
        }
        self.stderr()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Never leave a process behind, whatever the test did.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `stats:` line from stderr, parsed into (name, value) pairs.
pub fn stats(stderr: &str) -> Vec<(String, u64)> {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains("stats: "))
        .unwrap_or_else(|| panic!("no stats line in stderr:\n{stderr}"));
    let rest = &line[line.find("stats: ").unwrap() + 7..];
    rest.split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// One counter from a stats line.
pub fn stat(stderr: &str, name: &str) -> u64 {
    stats(stderr)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no counter {name} in:\n{stderr}"))
}

/// Reads a whole file, for tests.
pub fn read(path: impl AsRef<Path>) -> String {
    let mut s = String::new();
    std::fs::File::open(path.as_ref())
        .and_then(|mut f| f.read_to_string(&mut s))
        .unwrap_or_else(|e| panic!("read {}: {e}", path.as_ref().display()));
    s
}

/// Path of a file in the repository.
pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// A private network namespace with its own sysfs mount, held open by a
/// sleeping process: events written to [`Netns::lo_uevent`] reach only
/// listeners inside it, so a test can flood without overrunning every
/// other listener on the machine.
pub struct Netns {
    holder: Child,
}

impl Netns {
    pub fn new() -> Netns {
        let mut holder = Command::new("unshare")
            .args([
                "-nm",
                "--",
                "sh",
                "-c",
                "mount -t sysfs sysfs /sys && echo ready && exec sleep 600",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn unshare -nm");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "namespace holder failed");
        Netns { holder }
    }

    pub fn pid(&self) -> u32 {
        self.holder.id()
    }

    /// The namespace's loopback `uevent` file, reached through the holder's
    /// root (its mount namespace, where sysfs shows this namespace's lo).
    pub fn lo_uevent(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root/sys/class/net/lo/uevent", self.pid()))
    }

    /// Runs `f` on a new thread that has joined this network namespace (a
    /// thread may switch its network namespace alone) and returns its result.
    pub fn run_inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/proc/{}/ns/net", self.pid());
        thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("thread inside the namespace panicked")
    }

    /// A command that runs `hotplugd` (with the runner) inside this namespace.
    pub fn hotplugd(&self) -> Command {
        let net = format!("--net=/proc/{}/ns/net", self.pid());
        let mnt = format!("--mount=/proc/{}/ns/mnt", self.pid());
        let prefix = ["nsenter", net.as_str(), mnt.as_str(), "--"];
        wrapped(&prefix)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// A tap device that is deleted when dropped, whatever the test did.
pub struct Tap(pub String);

impl Tap {
    /// A unique name (hpt + pid + counter; at most 15 bytes) not yet created.
    pub fn name(tag: &str) -> String {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        format!("hpt{tag}{}x{n}", std::process::id() % 100_000)
    }

    /// `ip tuntap add dev NAME mode tap`.
    pub fn add(name: &str) -> Tap {
        ip(&["tuntap", "add", "dev", name, "mode", "tap"]);
        Tap(name.to_string())
    }

    /// `ip link del NAME` now.
    pub fn del(mut self) {
        ip(&["link", "del", &self.0]);
        self.0.clear();
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = Command::new("ip").args(["link", "del", &self.0]).status();
        }
    }
}

pub fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {args:?} failed");
}

/// A scratch directory removed at the end.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("hotplugd-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    pub fn script(&self, name: &str, body: &str) -> String {
        let p = self.path(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.to_string_lossy().into_owned()
    }
    pub fn rules(&self, text: &str) -> String {
        let p = self.path("test.rules");
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits until `pred` holds for the file's contents (missing = empty), or
/// the timeout passes; returns the last contents read.
pub fn wait_file(path: &Path, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
    let end = Instant::now() + timeout;
    loop {
        let s = std::fs::read_to_string(path).unwrap_or_default();
        if pred(&s) || Instant::now() > end {
            return s;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Multicasts `datagram` to uevent group 1 from userspace, inside `ns`
/// (root may; the kernel marks it with our port id, not 0).
pub fn multicast(ns: &Netns, datagram: Vec<u8>) {
    ns.run_inside(move || {
        use nix::sys::socket::*;
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkKObjectUEvent,
        )
        .unwrap();
        sendto(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &datagram,
            &NetlinkAddr::new(0, 1),
            MsgFlags::empty(),
        )
        .expect("root may multicast to group 1");
    });
}

/// `setpriv` arguments that run the command as root without
/// CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH, so that file modes bind it.
pub const WITHOUT_DAC_OVERRIDE: [&str; 4] = [
    "setpriv",
    "--inh-caps=-dac_override,-dac_read_search",
    "--bounding-set=-dac_override,-dac_read_search",
    "--",
];
