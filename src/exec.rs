//! Handlers: the job queue, its ordering, the child table, output pipes and
//! timeouts. Driven by the loop; nothing here blocks.
//!
//! - A **job** is the work one event collected from the rules: `ATTR{}`
//!   writes, builtin calls and external programs, run in rule order, one at a
//!   time. Building a job allocates (argv and environment strings), as
//!   starting a process does anyway.
//! - **Ordering.** A job starts only when no earlier job, waiting or
//!   running, is for the same device, one of its parents or one of its
//!   children (compared by DEVPATH, and DEVPATH_OLD for `move`). So a
//!   `remove` never starts before the same device's `add` has finished, and
//!   a parent's handlers run before its children's. Unrelated devices run in
//!   parallel, at most `max_children` processes at once.
//! - **Bounded.** At most `max_queue` jobs wait; when full, the loop stops
//!   reading the socket ([`Exec::has_room`]) and the kernel's queue holds the
//!   rest.
//! - **Processes.** Each handler gets its own process group. After
//!   `timeout` the group gets SIGTERM, then SIGKILL after a grace period. A
//!   handler's job is done when the handler exits; whatever it left running
//!   in its group is killed when its timeout comes (to keep a service
//!   running, hand it to the init system or `setsid`).

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::unix::SourceFd;
use mio::{Interest, Token};
use nix::sys::signal::Signal;

use crate::daemon::{Cx, FIRST_MODE_TOKEN};
use crate::limits::HANDLER_LINE;
use crate::sys::spawn::{self, Exit};
use crate::sys::sysfs::SysfsRoot;
use crate::uevent::Uevent;

/// What a builtin handler is given.
pub struct BuiltinCall<'a> {
    /// The event, with the `ENV{}` assignments of matching rules applied.
    pub event: &'a Uevent<'a>,
    /// The words after the builtin's name in the rule, substituted.
    pub args: &'a [Vec<u8>],
    /// `file:line` of the rule.
    pub rule: &'a str,
}

/// A Rust handler, registered by name for `RUN{builtin}+="name"`. It runs
/// on the loop's thread: it must return quickly and never block.
pub type BuiltinFn = Box<dyn FnMut(&BuiltinCall<'_>) -> Result<(), String>>;

/// Registered builtins.
#[derive(Default)]
pub struct Builtins {
    names: Vec<String>,
    fns: Vec<BuiltinFn>,
}

impl Builtins {
    /// Registers (or replaces) `name`.
    pub fn register(&mut self, name: &str, f: BuiltinFn) {
        match self.names.iter().position(|n| n == name) {
            Some(i) => self.fns[i] = f,
            None => {
                self.names.push(name.to_string());
                self.fns.push(f);
            }
        }
    }

    /// The names, in registration order (their index is the rule's `id`).
    pub fn names(&self) -> Vec<&str> {
        self.names.iter().map(String::as_str).collect()
    }

    fn call(&mut self, id: usize, call: &BuiltinCall<'_>) -> Result<(), String> {
        match self.fns.get_mut(id) {
            Some(f) => f(call),
            None => Err(format!("no builtin number {id}")),
        }
    }
}

/// One step of a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Run a program.
    Exec {
        /// Program and arguments, substituted.
        argv: Vec<Vec<u8>>,
        /// `file:line` of the rule.
        rule: String,
    },
    /// Call a builtin.
    Builtin {
        /// Index in [`Builtins`].
        id: usize,
        /// Its name (for logs).
        name: String,
        /// Its arguments.
        args: Vec<Vec<u8>>,
        /// `file:line` of the rule.
        rule: String,
    },
    /// Write a sysfs attribute of the event's device.
    WriteAttr {
        /// Attribute, relative to the device.
        name: String,
        /// Bytes to write.
        value: Vec<u8>,
        /// `file:line` of the rule.
        rule: String,
    },
}

/// The work of one event.
#[derive(Clone, Debug)]
pub struct Job {
    /// `ACTION DEVPATH`, for logs.
    pub label: String,
    /// DEVPATH.
    pub devpath: String,
    /// DEVPATH_OLD of a `move`.
    pub devpath_old: Option<String>,
    /// The event in wire form with `ENV{}` assignments appended (what a
    /// builtin sees).
    pub raw: Vec<u8>,
    /// The handler environment, without HOTPLUGD_RULE and PATH.
    pub env: Vec<(String, Vec<u8>)>,
    /// What to do, in order.
    pub steps: VecDeque<Step>,
}

impl Job {
    fn paths(&self) -> impl Iterator<Item = &str> {
        core::iter::once(self.devpath.as_str()).chain(self.devpath_old.as_deref())
    }

    /// True if the two jobs must not run at the same time (same device, or
    /// one is a parent of the other).
    pub fn related(&self, other: &Job) -> bool {
        self.paths().any(|a| {
            other
                .paths()
                .any(|b| a == b || is_ancestor(a, b) || is_ancestor(b, a))
        })
    }
}

fn is_ancestor(a: &str, b: &str) -> bool {
    b.len() > a.len() && b.starts_with(a) && b.as_bytes()[a.len()] == b'/'
}

/// Settings of the handler engine.
#[derive(Clone, Debug)]
pub struct ExecConfig {
    /// Processes running at once.
    pub max_children: usize,
    /// Jobs waiting.
    pub max_queue: usize,
    /// Time a handler may run before SIGTERM to its group.
    pub timeout: Duration,
    /// Time between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Added to every handler's environment: PATH and `--pass-env` variables.
    pub extra_env: Vec<(Vec<u8>, Vec<u8>)>,
    /// Where `ATTR{}=` writes go.
    pub sysfs: SysfsRoot,
    /// `--handler-user`: (uid, gid) that RUN handlers run as.
    pub handler_creds: Option<(u32, u32)>,
}

/// A handler process (or, after it exited, what it left in its group).
struct Proc {
    pid: i32,
    job: Option<Job>,
    rule: String,
    token: Token,
    pipe: Option<OwnedFd>,
    line: heapless::Vec<u8, HANDLER_LINE>,
    cutting: bool,
    started: Instant,
    deadline: Instant,
    kill_at: Option<Instant>,
    killed: bool,
    reaped: bool,
    timed_out: bool,
}

impl Proc {
    /// Still holds a handler slot (the leader has not been reaped).
    fn running(&self) -> bool {
        !self.reaped
    }
}

/// The engine.
pub struct Exec {
    cfg: ExecConfig,
    builtins: Builtins,
    pending: VecDeque<Job>,
    procs: Vec<Proc>,
    next_token: usize,
    stopping: bool,
    full_logged: bool,
    /// BROADCAST HOOK (issue 16, `--broadcast`): `Some` once
    /// [`Exec::keep_finished`] was called; jobs whose steps are all done
    /// wait here for [`Exec::take_finished`].
    finished: Option<VecDeque<Job>>,
}

impl Exec {
    /// An idle engine.
    pub fn new(cfg: ExecConfig, builtins: Builtins) -> Exec {
        Exec {
            cfg,
            builtins,
            pending: VecDeque::new(),
            procs: Vec::new(),
            next_token: FIRST_MODE_TOKEN + 1,
            stopping: false,
            full_logged: false,
            finished: None,
        }
    }

    /// BROADCAST HOOK (issue 16): from now on, keep each finished job (all
    /// its steps done: ATTR writes, builtins, every handler reaped) for
    /// [`Exec::take_finished`], in the order they finish.
    pub fn keep_finished(&mut self) {
        self.finished.get_or_insert_with(VecDeque::new);
    }

    /// BROADCAST HOOK (issue 16): the oldest finished job not taken yet.
    pub fn take_finished(&mut self) -> Option<Job> {
        self.finished.as_mut()?.pop_front()
    }

    /// The builtin names (for the rules loader).
    pub fn builtin_names(&self) -> Vec<&str> {
        self.builtins.names()
    }

    /// The configuration.
    pub fn config(&self) -> &ExecConfig {
        &self.cfg
    }

    /// False when the queue is full: stop taking events.
    pub fn has_room(&self) -> bool {
        self.pending.len() < self.cfg.max_queue
    }

    /// Call when [`Exec::has_room`] was false and the loop paused reading:
    /// counts it once per pause.
    pub fn note_full(&mut self, cx: &mut Cx<'_>) {
        if !self.full_logged {
            self.full_logged = true;
            cx.stats.queue_full += 1;
            warn!(
                "handler queue full ({} jobs waiting, {} running): pausing the socket until one finishes (queue_full={})",
                self.pending.len(),
                self.running(),
                cx.stats.queue_full
            );
        }
    }

    /// Handler processes running now.
    pub fn running(&self) -> usize {
        self.procs.iter().filter(|p| p.running()).count()
    }

    /// True if nothing waits or runs.
    pub fn idle(&self) -> bool {
        self.pending.is_empty() && self.procs.is_empty()
    }

    /// Queues a job and starts what may start.
    pub fn push(&mut self, job: Job, cx: &mut Cx<'_>) {
        self.pending.push_back(job);
        self.pump(cx);
    }

    /// Starts waiting jobs that may start, in arrival order.
    fn pump(&mut self, cx: &mut Cx<'_>) {
        let mut k = 0;
        while k < self.pending.len() {
            if self.stopping || self.running() >= self.cfg.max_children {
                break;
            }
            let blocked = self
                .procs
                .iter()
                .filter_map(|p| p.job.as_ref())
                .any(|j| j.related(&self.pending[k]))
                || self
                    .pending
                    .iter()
                    .take(k)
                    .any(|j| j.related(&self.pending[k]));
            if blocked {
                k += 1;
                continue;
            }
            let job = self.pending.remove(k).expect("k < len");
            self.run_steps(job, cx);
        }
        if self.has_room() {
            self.full_logged = false;
        }
    }

    /// Runs a job's steps until one starts a process (the job then waits in
    /// the child table) or none are left.
    fn run_steps(&mut self, mut job: Job, cx: &mut Cx<'_>) {
        while let Some(step) = job.steps.pop_front() {
            match step {
                Step::WriteAttr { name, value, rule } => {
                    if let Err(e) = self.cfg.sysfs.write_attr(&job.devpath, &name, &value) {
                        cx.stats.attr_write_failed += 1;
                        warn!(
                            "{rule}: ATTR{{{name}}}=\"{}\" for {}: {}",
                            printable(&value),
                            job.label,
                            e.desc()
                        );
                    } else {
                        debug!("{rule}: wrote ATTR{{{name}}} for {}", job.label);
                    }
                }
                Step::Builtin {
                    id,
                    name,
                    args,
                    rule,
                } => {
                    cx.stats.handlers_started += 1;
                    let r = match Uevent::parse(&job.raw) {
                        Ok(ev) => self.builtins.call(
                            id,
                            &BuiltinCall {
                                event: &ev,
                                args: &args,
                                rule: &rule,
                            },
                        ),
                        Err(e) => Err(format!("internal: job event does not parse: {e}")),
                    };
                    if let Err(e) = r {
                        cx.stats.handlers_failed += 1;
                        warn!("{rule}: builtin {name} failed for {}: {e}", job.label);
                    }
                }
                Step::Exec { argv, rule } => {
                    if self.start(&job, argv, rule, cx) {
                        // the job continues when this process exits
                        if let Some(p) = self.procs.last_mut() {
                            p.job = Some(job);
                        }
                        return;
                    }
                }
            }
        }
        debug!("done: {}", job.label);
        // BROADCAST HOOK (issue 16): the job is fully handled
        if let Some(f) = self.finished.as_mut() {
            f.push_back(job);
        }
    }

    /// Starts one handler process; false if it could not start (logged and
    /// counted).
    fn start(&mut self, job: &Job, argv: Vec<Vec<u8>>, rule: String, cx: &mut Cx<'_>) -> bool {
        let hotplugd_rule = rule.as_bytes().to_vec();
        let mut env: Vec<(&[u8], &[u8])> = job
            .env
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_slice()))
            .collect();
        env.push((b"HOTPLUGD_RULE", &hotplugd_rule));
        for (k, v) in &self.cfg.extra_env {
            env.push((k, v));
        }
        let started = Instant::now();
        cx.stats.handlers_started += 1;
        let sp = match spawn::spawn(&argv, &env, self.cfg.handler_creds) {
            Ok(sp) => sp,
            Err(e) => {
                cx.stats.handlers_failed += 1;
                warn!(
                    "{rule}: cannot start {} for {}: {e}",
                    printable(&argv[0]),
                    job.label
                );
                return false;
            }
        };
        let token = Token(self.next_token);
        self.next_token += 1;
        let pipe = match cx.registry.register(
            &mut SourceFd(&sp.output.as_raw_fd()),
            token,
            Interest::READABLE,
        ) {
            Ok(()) => Some(sp.output),
            Err(e) => {
                warn!("handler {}: cannot watch its output: {e}", sp.pid);
                None
            }
        };
        info!(
            "{rule}: started {} [{}] for {}",
            printable(&argv[0]),
            sp.pid,
            job.label
        );
        self.procs.push(Proc {
            pid: sp.pid,
            job: None,
            rule,
            token,
            pipe,
            line: heapless::Vec::new(),
            cutting: false,
            started,
            deadline: started + self.cfg.timeout,
            kill_at: None,
            killed: false,
            reaped: false,
            timed_out: false,
        });
        true
    }

    /// A handler's output pipe is readable.
    pub fn ready(&mut self, token: Token, cx: &mut Cx<'_>) {
        let Some(i) = self.procs.iter().position(|p| p.token == token) else {
            return;
        };
        let p = &mut self.procs[i];
        let mut buf = [0u8; 4096];
        while let Some(fd) = p.pipe.as_ref() {
            match nix::unistd::read(fd.as_fd(), &mut buf) {
                Ok(0) => {
                    flush_line(p, cx);
                    close_pipe(p, cx);
                    break;
                }
                Ok(n) => feed(p, &buf[..n], cx),
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    warn!("handler {}: reading its output: {}", p.pid, e.desc());
                    close_pipe(p, cx);
                    break;
                }
            }
        }
        self.forget_finished();
    }

    /// SIGCHLD: reap every exited child, continue their jobs, start more.
    pub fn sigchld(&mut self, cx: &mut Cx<'_>) {
        loop {
            let (pid, exit) = match spawn::reap() {
                Ok(Some(x)) => x,
                Ok(None) => break,
                Err(e) => {
                    warn!("waitpid: {}", e.desc());
                    break;
                }
            };
            let Some(i) = self.procs.iter().position(|p| p.pid == pid && !p.reaped) else {
                debug!("reaped unknown child {pid}");
                continue;
            };
            self.procs[i].reaped = true;
            // log what it wrote before saying how it ended
            if self.procs[i].pipe.is_some() {
                let t = self.procs[i].token;
                self.ready(t, cx);
            }
            let Some(i) = self.procs.iter().position(|p| p.pid == pid) else {
                continue;
            };
            let p = &mut self.procs[i];
            let ms = p.started.elapsed().as_millis();
            let label = p.job.as_ref().map_or(String::new(), |j| j.label.clone());
            match exit {
                Exit::Code(0) => info!(
                    "{}: handler [{pid}] for {label} exited 0 after {ms} ms",
                    p.rule
                ),
                Exit::Code(c) => {
                    cx.stats.handlers_failed += 1;
                    warn!(
                        "{}: handler [{pid}] for {label} exited {c} after {ms} ms",
                        p.rule
                    );
                }
                Exit::Signal(s) => {
                    if !p.timed_out {
                        cx.stats.handlers_failed += 1;
                    }
                    warn!(
                        "{}: handler [{pid}] for {label} killed by {s} after {ms} ms{}",
                        p.rule,
                        if p.timed_out { " (timeout)" } else { "" }
                    );
                }
            }
            let Some(i) = self.procs.iter().position(|p| p.pid == pid) else {
                continue;
            };
            if let Some(job) = self.procs[i].job.take() {
                self.run_steps(job, cx);
            }
        }
        self.forget_finished();
        self.pump(cx);
    }

    /// Drops entries whose leader was reaped, whose pipe is closed and whose
    /// group is empty.
    fn forget_finished(&mut self) {
        self.procs.retain(|p| {
            if !p.reaped || p.job.is_some() {
                return true;
            }
            if p.pipe.is_some() {
                return true;
            }
            // anything left in its group? (killed at the deadline if so)
            matches!(spawn::signal_group(p.pid, None), Ok(true)) && !p.killed
        });
    }

    /// The next time [`Exec::tick`] has work.
    pub fn deadline(&self) -> Option<Instant> {
        self.procs
            .iter()
            .filter(|p| !p.killed)
            .map(|p| p.kill_at.unwrap_or(p.deadline))
            .min()
    }

    /// Timeouts: SIGTERM at the deadline, SIGKILL after the grace period.
    pub fn tick(&mut self, now: Instant, cx: &mut Cx<'_>) {
        for p in &mut self.procs {
            if p.killed {
                continue;
            }
            match p.kill_at {
                None if now >= p.deadline => {
                    p.kill_at = Some(now + self.cfg.grace);
                    let alive =
                        matches!(spawn::signal_group(p.pid, Some(Signal::SIGTERM)), Ok(true));
                    if !p.reaped {
                        p.timed_out = true;
                        cx.stats.handlers_timed_out += 1;
                        warn!(
                            "{}: handler [{}] still running after {:?}: SIGTERM to its process group (handlers_timed_out={})",
                            p.rule, p.pid, self.cfg.timeout, cx.stats.handlers_timed_out
                        );
                    } else if alive {
                        warn!(
                            "{}: processes left behind by handler [{}] still running at its timeout: SIGTERM to its process group",
                            p.rule, p.pid
                        );
                    }
                }
                Some(k) if now >= k => {
                    p.killed = true;
                    if matches!(spawn::signal_group(p.pid, Some(Signal::SIGKILL)), Ok(true)) {
                        warn!("{}: SIGKILL to process group {}", p.rule, p.pid);
                    }
                    if p.reaped {
                        // what is left was killed; stop watching it
                        if let Some(fd) = p.pipe.take() {
                            let _ = cx.registry.deregister(&mut SourceFd(&fd.as_raw_fd()));
                        }
                    }
                }
                _ => {}
            }
        }
        self.forget_finished();
    }

    /// SIGTERM/SIGINT: drop waiting jobs (logged), SIGTERM every handler
    /// group, SIGKILL after the grace period.
    pub fn stop(&mut self, cx: &mut Cx<'_>) {
        self.stopping = true;
        if !self.pending.is_empty() {
            warn!("stopping: {} queued jobs will not run", self.pending.len());
            self.pending.clear();
        }
        let now = Instant::now();
        for p in &mut self.procs {
            if p.killed {
                continue;
            }
            let _ = spawn::signal_group(p.pid, Some(Signal::SIGTERM));
            p.deadline = now;
            p.kill_at = Some(now + self.cfg.grace);
        }
        self.tick(now, cx);
    }

    /// True once every handler has been reaped.
    pub fn stopped(&self) -> bool {
        self.procs.iter().all(|p| p.reaped)
    }
}

fn close_pipe(p: &mut Proc, cx: &mut Cx<'_>) {
    if let Some(fd) = p.pipe.take() {
        let _ = cx.registry.deregister(&mut SourceFd(&fd.as_raw_fd()));
    }
}

/// Splits output into lines and logs each; a line longer than
/// [`HANDLER_LINE`] is logged cut, marked and counted.
fn feed(p: &mut Proc, mut data: &[u8], cx: &mut Cx<'_>) {
    while !data.is_empty() {
        let nl = data.iter().position(|&b| b == b'\n');
        let chunk = &data[..nl.unwrap_or(data.len())];
        if !p.cutting {
            let room = p.line.capacity() - p.line.len();
            let take = chunk.len().min(room);
            let _ = p.line.extend_from_slice(&chunk[..take]);
            if take < chunk.len() {
                cx.stats.output_lines_cut += 1;
                info!(
                    "[{}] {} [line cut at {HANDLER_LINE} bytes]",
                    p.pid,
                    printable(&p.line)
                );
                p.line.clear();
                p.cutting = true;
            }
        }
        match nl {
            Some(i) => {
                if !p.cutting {
                    flush_line(p, cx);
                }
                p.cutting = false;
                data = &data[i + 1..];
            }
            None => break,
        }
    }
}

fn flush_line(p: &mut Proc, _cx: &mut Cx<'_>) {
    if !p.line.is_empty() {
        info!("[{}] {}", p.pid, printable(&p.line));
        p.line.clear();
    }
}

/// Text safe for a log line: control characters and bytes that are not
/// UTF-8 as `\xNN`.
pub fn printable(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c.is_control() {
                s.push_str(&format!("\\x{:02x}", c as u32));
            } else {
                s.push(c);
            }
        }
        for byte in chunk.invalid() {
            s.push_str(&format!("\\x{byte:02x}"));
        }
    }
    s
}

/// Makes the environment list for `--pass-env` names from the daemon's own
/// environment, plus the fixed PATH.
pub fn base_env(pass: &[String]) -> Vec<(Vec<u8>, Vec<u8>)> {
    use std::os::unix::ffi::OsStrExt;
    let mut v = vec![(
        b"PATH".to_vec(),
        b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_vec(),
    )];
    for name in pass {
        if let Some(val) = std::env::var_os(name) {
            v.retain(|(k, _)| k != name.as_bytes());
            v.push((name.as_bytes().to_vec(), val.as_bytes().to_vec()));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(devpath: &str, old: Option<&str>) -> Job {
        Job {
            label: devpath.into(),
            devpath: devpath.into(),
            devpath_old: old.map(Into::into),
            raw: Vec::new(),
            env: Vec::new(),
            steps: VecDeque::new(),
        }
    }

    #[test]
    fn related_means_same_device_parent_or_child() {
        let dev = job("/devices/pci0/usb1/1-2", None);
        assert!(dev.related(&job("/devices/pci0/usb1/1-2", None)));
        assert!(dev.related(&job("/devices/pci0/usb1/1-2/1-2:1.0/ttyUSB0", None)));
        assert!(dev.related(&job("/devices/pci0/usb1", None)));
        assert!(!dev.related(&job("/devices/pci0/usb1/1-20", None)));
        assert!(!dev.related(&job("/devices/pci0/usb1/1-3", None)));
        // a move is related to its old path too
        assert!(job(
            "/devices/virtual/net/eth1",
            Some("/devices/virtual/net/usb0")
        )
        .related(&job("/devices/virtual/net/usb0", None)));
    }

    #[test]
    fn printable_escapes() {
        assert_eq!(printable(b"ok \x1b[2J\xff"), "ok \\x1b[2J\\xff");
    }
}
