//! Issue 12: a handler that SIGKILL cannot end (uninterruptible sleep) must
//! not keep its `--max-children` slot for ever, nor make a stop hang.
//!
//! Faithful reproduction: a hung FUSE mount (`tests/support/fuse_hang.py`,
//! standard-library Python, in a private mount namespace). `cat MNT/file`
//! blocks in the kernel's `request_wait_answer` once the server has taken
//! the READ and never answers: SIGTERM and SIGKILL stay pending, state D,
//! exactly as a reader of a hung NFS hard mount or a wedged driver. See
//! `tests/support/fuse_hang.md` for what was measured and what was rejected.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

/// The FUSE server holding the mount namespace; released on drop, and the
/// stuck reader then dies of its pending SIGKILL.
struct Hang {
    server: Child,
    lines: Receiver<String>,
    victims: Vec<i32>,
    mnt: String,
}

impl Hang {
    fn new(s: &Scratch) -> Hang {
        let mnt = s.path("mnt").display().to_string();
        let mut server = Command::new("unshare")
            .args(["-m", "--", "python3"])
            .arg(repo("tests/support/fuse_hang.py"))
            .arg(&mnt)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn fuse_hang.py");
        let out = server.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let h = Hang {
            server,
            lines,
            victims: Vec::new(),
            mnt,
        };
        let ready = h.lines.recv_timeout(Duration::from_secs(10));
        assert_eq!(ready.as_deref(), Ok("ready"), "fuse_hang.py did not mount");
        h
    }

    /// A command that runs hotplugd in the server's mount namespace.
    fn hotplugd(&self) -> Command {
        let mnt = format!("--mount=/proc/{}/ns/mnt", self.server.id());
        wrapped(&["nsenter", &mnt, "--"])
    }

    /// Waits for the server to take a READ; the reader's pid.
    fn blocked(&mut self, timeout: Duration) -> i32 {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let l = self.lines.recv_timeout(left).expect("no reader blocked");
            if let Some(pid) = l.strip_prefix("blocked pid=") {
                let pid = pid.trim().parse().unwrap();
                self.victims.push(pid);
                return pid;
            }
        }
    }
}

impl Drop for Hang {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.server.id() as i32),
            Signal::SIGTERM,
        );
        let _ = self.server.wait();
        // the readers were orphaned to init: wait for them to go
        let end = Instant::now() + Duration::from_secs(10);
        for v in &self.victims {
            while std::path::Path::new(&format!("/proc/{v}")).exists() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn state(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s.rsplit_once(") ")?.1.chars().next()
}

fn event(devpath: &str, id: &str) -> String {
    format!(
        "{{\"action\":\"change\",\"devpath\":\"{devpath}\",\"env\":{{\"ACTION\":\"change\",\
         \"DEVPATH\":\"{devpath}\",\"SUBSYSTEM\":\"net\",\"SYNTH_UUID\":\"{id}\"}}}}\n"
    )
}

#[test]
fn an_unkillable_handler_gives_its_slot_back_after_the_grace_and_the_next_job_runs() {
    if !need_root("unkillable")
        || !need_tool("unkillable", "python3")
        || !need_tool("unkillable", "nsenter")
    {
        return;
    }
    let s = Scratch::new("unkillable");
    let mut hang = Hang::new(&s);
    let id = uuid();
    let done = s.path("done");
    let rec = s.script("rec.sh", &format!("echo ran >> \"{}\"", done.display()));
    let rules = s.rules(&format!(
        "DEVPATH==\"/devices/virtual/net/stuck\", RUN+=\"/bin/cat {}/file\"\n\
         DEVPATH==\"/devices/virtual/net/next\", RUN+=\"{rec}\"\n",
        hang.mnt
    ));
    let input = s.path("in.jsonl");
    std::fs::write(
        &input,
        event("/devices/virtual/net/stuck", &id) + &event("/devices/virtual/net/next", &id),
    )
    .unwrap();
    let mut c = hang.hotplugd();
    c.args([
        "replay",
        "--rules",
        &rules,
        "--handler-timeout",
        "1",
        "--max-children",
        "1",
    ])
    .arg(&input);
    let t0 = Instant::now();
    let mut p = Proc::spawn(c);
    let victim = hang.blocked(Duration::from_secs(10));
    // timeout 1 s, SIGTERM; SIGKILL 2 s later; given up 2 s after that
    let st = p.wait(Duration::from_secs(20));
    let took = t0.elapsed();
    let err = p.take_stderr();
    assert!(st.success(), "{err}");
    assert_eq!(
        state(victim),
        Some('D'),
        "the handler is still stuck in the kernel after SIGKILL"
    );
    assert_eq!(stat(&err, "handlers_unkillable"), 1, "{err}");
    assert_eq!(stat(&err, "handlers_timed_out"), 1, "{err}");
    assert!(err.contains("did not die"), "{err}");
    assert_eq!(read(&done), "ran\n", "the next job got the slot: {err}");
    eprintln!(
        "unkillable: replay finished in {took:?} with the handler still in D; longest_turn_us={}",
        stat(&err, "longest_turn_us")
    );
}

#[test]
fn sigterm_with_an_unkillable_handler_ends_the_daemon_within_two_graces() {
    if !need_root("unkillable_stop")
        || !need_tool("unkillable_stop", "python3")
        || !need_tool("unkillable_stop", "nsenter")
    {
        return;
    }
    let s = Scratch::new("unkillstop");
    let mut hang = Hang::new(&s);
    let id = uuid();
    let rules = s.rules(&format!(
        "ENV{{SYNTH_UUID}}==\"{id}\", RUN+=\"/bin/cat {}/file\"\n",
        hang.mnt
    ));
    let mut c = hang.hotplugd();
    c.args(["run", "--rules", &rules, "--handler-timeout", "60"]);
    let mut p = Proc::spawn(c);
    p.wait_listening();
    synth(&lo_uevent(), "change", &id, &[]);
    let victim = hang.blocked(Duration::from_secs(10));
    let t = Instant::now();
    p.signal(Signal::SIGTERM);
    let st = p.wait(Duration::from_secs(15));
    let took = t.elapsed();
    let err = p.take_stderr();
    assert!(st.success(), "{err}");
    assert_eq!(state(victim), Some('D'), "still stuck: {err}");
    assert_eq!(stat(&err, "handlers_unkillable"), 1, "{err}");
    // SIGTERM now, SIGKILL after 2 s, given up after 2 s more
    assert!(took < Duration::from_secs(8), "stop took {took:?}: {err}");
    eprintln!(
        "unkillable + SIGTERM: exited in {took:?}; longest_turn_us={}",
        stat(&err, "longest_turn_us")
    );
}
