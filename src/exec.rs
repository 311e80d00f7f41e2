//! Handlers: the job queue, its ordering, the child table, output and
//! timeouts, as a state machine with **no I/O and no clock**.
//!
//! The loop ([`crate::daemon`]) owns every process and pipe. It lends this
//! engine a [`ProcIo`] to start processes and signal process groups, and
//! feeds back what happened: [`Exec::exited`] after it reaps a child,
//! [`Exec::output`] with bytes it read from a handler's pipe (at most a
//! budget per wake-up), [`Exec::output_closed`], and [`Exec::tick`] with the
//! current time. So the engine can be driven by a test with a virtual clock
//! and fake processes (see the tests below), and nothing here can block.
//!
//! - A **job** is the work one event collected from the rules: `ATTR{}`
//!   writes, builtin calls and external programs, run in rule order, one at a
//!   time. An `ATTR{}` write runs in a short-lived child like a handler, so a
//!   driver whose `store` blocks holds a handler slot, not the loop.
//! - **Ordering.** A job starts only when no earlier job, waiting or
//!   running, is for the same device, one of its parents or one of its
//!   children (compared by DEVPATH, and DEVPATH_OLD for `move`). So a
//!   `remove` never starts before the same device's `add` has finished, and
//!   a parent's handlers run before its children's. Unrelated devices run in
//!   parallel, at most `max_children` processes at once.
//! - **Bounded.** At most `max_queue` jobs wait; when full, the loop stops
//!   reading the socket ([`Exec::has_room`]) and the kernel's queue holds the
//!   rest. The queue and the child table are allocated at start.
//! - **Timeouts.** Each handler gets its own process group. At `timeout`
//!   the group gets SIGTERM, after `grace` SIGKILL. A handler that a SIGKILL
//!   cannot end (uninterruptible sleep: a hung FUSE or NFS mount, a wedged
//!   driver) gives its slot back after one more `grace`, counted as
//!   `handlers_unkillable`; its job goes on, and it is reaped whenever it
//!   finally exits. So a stop of the daemon takes at most `2 × grace` after
//!   the signal.
//! - **Output** is logged line by line, at most [`LOG_LINES_PER_SEC`]
//!   lines a second per handler; the rest is counted
//!   (`output_lines_suppressed`) and summarised, so a flooding handler
//!   cannot grow the log without bound.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::limits::HANDLER_LINE;
use crate::stats::{Ms, Stats};
use crate::uevent::Uevent;

/// Lines of one handler's output logged per second; the rest are counted
/// and summarised once a second.
pub const LOG_LINES_PER_SEC: u32 = 20;

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
    /// builtin sees; it parses: see [`crate::limits::MAX_FIELDS`]).
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
    /// Time between SIGTERM and SIGKILL, and between SIGKILL and giving
    /// the slot of a process that did not die back.
    pub grace: Duration,
    /// Added to every handler's environment: PATH and `--pass-env` variables.
    pub extra_env: Vec<(Vec<u8>, Vec<u8>)>,
    /// `--handler-user`: (uid, gid) that RUN handlers run as.
    pub handler_creds: Option<(u32, u32)>,
}

/// A signal the engine asks the loop to send to a process group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kill {
    /// Signal 0: only ask whether the group still has a process.
    Probe,
    /// SIGTERM.
    Term,
    /// SIGKILL.
    Kill,
}

/// How a reaped child ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Exit {
    /// `exit(status)`.
    Code(i32),
    /// Killed by a signal (its name).
    Signal(&'static str),
    /// `execve` failed (or the privilege drop before it); the reason.
    NotStarted(String),
}

/// The I/O the engine asks of the loop. Every call returns at once.
pub trait ProcIo {
    /// Starts `argv` (no shell, no PATH search) with exactly `env`, in a
    /// process group of its own, its output into a pipe the loop watches
    /// and reports with [`Exec::output`] under the returned pid.
    fn spawn(
        &mut self,
        argv: &[Vec<u8>],
        env: &[(&[u8], &[u8])],
        creds: Option<(u32, u32)>,
    ) -> Result<i32, String>;
    /// Writes `value` to the attribute `name` of `devpath` in a short-lived
    /// child (process group of its own); its exit code is 0 or the errno.
    fn write_attr(&mut self, devpath: &str, name: &str, value: &[u8]) -> Result<i32, String>;
    /// Sends `sig` to process group `pgid`; false if the group is empty.
    fn signal_group(&mut self, pgid: i32, sig: Kill) -> bool;
    /// Stops watching the output pipe of `pid` and closes it.
    fn close_output(&mut self, pid: i32);
}

/// What a child is.
#[derive(Clone, Debug)]
enum Kind {
    Handler { program: String },
    Attr { name: String, value: String },
}

/// A running handler (or what it left in its group after it exited).
struct Proc {
    pid: i32,
    kind: Kind,
    /// The job this process belongs to; it goes on when the process exits
    /// (or is given up on).
    job: Option<Job>,
    rule: String,
    label: String,
    line: heapless::Vec<u8, HANDLER_LINE>,
    cutting: bool,
    pipe_open: bool,
    /// Output rate limit: start of the current one-second window, lines
    /// logged in it, and what was not logged since the last summary.
    window: Instant,
    window_lines: u32,
    quiet_lines: u64,
    quiet_bytes: u64,
    started: Instant,
    deadline: Instant,
    term_sent: bool,
    kill_at: Option<Instant>,
    give_up_at: Option<Instant>,
    reaped: bool,
    timed_out: bool,
    /// SIGKILL did not end it within the grace: its slot was given back.
    abandoned: bool,
}

impl Proc {
    /// Still holds a handler slot.
    fn holds_slot(&self) -> bool {
        !self.reaped && !self.abandoned
    }
}

/// The engine.
pub struct Exec {
    cfg: ExecConfig,
    builtins: Builtins,
    pending: VecDeque<Job>,
    procs: Vec<Proc>,
    stopping: bool,
    full_logged: bool,
    full_warned_at: Option<Instant>,
    full_quiet: u64,
    /// BROADCAST HOOK (issue 16, `--broadcast`): `Some` once
    /// [`Exec::keep_finished`] was called; jobs whose steps are all done
    /// wait here for [`Exec::take_finished`].
    finished: Option<VecDeque<Job>>,
}

impl Exec {
    /// An idle engine; the queue and child table are allocated here.
    pub fn new(cfg: ExecConfig, builtins: Builtins) -> Exec {
        Exec {
            pending: VecDeque::with_capacity(cfg.max_queue + 1),
            procs: Vec::with_capacity(cfg.max_children * 2),
            cfg,
            builtins,
            stopping: false,
            full_logged: false,
            full_warned_at: None,
            full_quiet: 0,
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

    /// Jobs waiting for a slot.
    pub fn queued(&self) -> usize {
        self.pending.len()
    }

    /// Call when [`Exec::has_room`] was false and the loop paused reading:
    /// counts it once per pause; warns at most once every 10 s (saying how
    /// many pauses were not logged).
    pub fn note_full(&mut self, now: Instant, stats: &mut Stats) {
        if !self.full_logged {
            self.full_logged = true;
            stats.queue_full += 1;
            if self
                .full_warned_at
                .is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(10))
            {
                self.full_quiet += 1;
                return;
            }
            self.full_warned_at = Some(now);
            warn!(
                "handler queue full ({} jobs waiting, {} running): pausing the socket until one finishes \
                 (queue_full={}; {} pauses not logged since the last line)",
                self.pending.len(),
                self.running(),
                stats.queue_full,
                core::mem::take(&mut self.full_quiet)
            );
        }
    }

    /// Handler processes holding a slot now.
    pub fn running(&self) -> usize {
        self.procs.iter().filter(|p| p.holds_slot()).count()
    }

    /// CONTROL HOOK (issue 15): the labels of jobs with a handler
    /// holding a slot, and of jobs waiting, for `hotplugd settle`.
    pub fn job_labels(&self, running: &mut Vec<String>, queued: &mut Vec<String>) {
        for p in self.procs.iter().filter(|p| p.holds_slot()) {
            if !running.contains(&p.label) {
                running.push(p.label.clone());
            }
        }
        queued.extend(self.pending.iter().map(|j| j.label.clone()));
    }

    /// True if nothing waits or runs.
    pub fn idle(&self) -> bool {
        self.pending.is_empty() && self.procs.iter().all(|p| p.abandoned)
    }

    /// Queues a job and starts what may start.
    pub fn push(&mut self, job: Job, now: Instant, io: &mut dyn ProcIo, stats: &mut Stats) {
        self.pending.push_back(job);
        self.pump(now, io, stats);
    }

    /// Starts waiting jobs that may start, in arrival order.
    fn pump(&mut self, now: Instant, io: &mut dyn ProcIo, stats: &mut Stats) {
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
            let Some(job) = self.pending.remove(k) else {
                break;
            };
            self.run_steps(job, now, io, stats);
        }
        if self.has_room() {
            self.full_logged = false;
        }
    }

    /// Runs a job's steps until one starts a process (the job then waits in
    /// the child table) or none are left.
    fn run_steps(&mut self, mut job: Job, now: Instant, io: &mut dyn ProcIo, stats: &mut Stats) {
        while let Some(step) = job.steps.pop_front() {
            let (started, rule, kind) = match step {
                Step::WriteAttr { name, value, rule } => {
                    let shown = printable(&value);
                    match io.write_attr(&job.devpath, &name, &value) {
                        Ok(pid) => (pid, rule, Kind::Attr { name, value: shown }),
                        Err(e) => {
                            stats.attr_write_failed += 1;
                            warn!(
                                "{rule}: ATTR{{{name}}}=\"{shown}\" for {}: cannot start the write: {e}",
                                job.label
                            );
                            continue;
                        }
                    }
                }
                Step::Builtin {
                    id,
                    name,
                    args,
                    rule,
                } => {
                    stats.handlers_started += 1;
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
                        stats.handlers_failed += 1;
                        warn!("{rule}: builtin {name} failed for {}: {e}", job.label);
                    }
                    continue;
                }
                Step::Exec { argv, rule } => {
                    stats.handlers_started += 1;
                    let program = printable(&argv[0]);
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
                    match io.spawn(&argv, &env, self.cfg.handler_creds) {
                        Ok(pid) => {
                            info!("{rule}: started {program} [{pid}] for {}", job.label);
                            (pid, rule, Kind::Handler { program })
                        }
                        Err(e) => {
                            stats.handlers_failed += 1;
                            warn!("{rule}: cannot start {program} for {}: {e}", job.label);
                            continue;
                        }
                    }
                }
            };
            let pipe_open = matches!(kind, Kind::Handler { .. });
            // The kernel may give a new child the pid of a reaped one whose
            // entry lingers (its pipe held by an escaped process): that
            // entry is stale (the loop has retired its pipe), and events for
            // this pid are the new child's.
            self.procs.retain(|p| p.pid != started);
            self.procs.push(Proc {
                pid: started,
                kind,
                rule,
                label: job.label.clone(),
                job: Some(job),
                line: heapless::Vec::new(),
                cutting: false,
                pipe_open,
                window: now,
                window_lines: 0,
                quiet_lines: 0,
                quiet_bytes: 0,
                started: now,
                deadline: now + self.cfg.timeout,
                term_sent: false,
                kill_at: None,
                give_up_at: None,
                reaped: false,
                timed_out: false,
                abandoned: false,
            });
            return; // the job goes on when this process exits
        }
        debug!("done: {}", job.label);
        // BROADCAST HOOK (issue 16): the job is fully handled
        if let Some(f) = self.finished.as_mut() {
            f.push_back(job);
        }
    }

    fn find(&self, pid: i32) -> Option<usize> {
        self.procs.iter().position(|p| p.pid == pid)
    }

    /// Bytes the loop read from the output pipe of `pid`.
    pub fn output(&mut self, pid: i32, data: &[u8], now: Instant, stats: &mut Stats) {
        if let Some(i) = self.find(pid) {
            feed(&mut self.procs[i], data, now, stats);
        }
    }

    /// The output pipe of `pid` reached its end (the handler and everything
    /// it started closed it); the loop has closed it.
    pub fn output_closed(&mut self, pid: i32, io: &mut dyn ProcIo) {
        if let Some(i) = self.find(pid) {
            let p = &mut self.procs[i];
            flush_line(p);
            p.pipe_open = false;
        }
        self.forget_finished(io);
    }

    /// The loop reaped `pid`: log how it ended, go on with its job, start
    /// more. The loop reads what is left in its pipe first.
    pub fn exited(
        &mut self,
        pid: i32,
        exit: Exit,
        now: Instant,
        io: &mut dyn ProcIo,
        stats: &mut Stats,
    ) {
        let Some(i) = self.find(pid) else {
            debug!("reaped unknown child {pid}");
            return;
        };
        let p = &mut self.procs[i];
        p.reaped = true;
        flush_line(p);
        summarise_quiet(p);
        let ms = now.saturating_duration_since(p.started).as_millis();
        let (rule, label) = (&p.rule, &p.label);
        let late = if p.abandoned {
            " (it had been given up on)"
        } else {
            ""
        };
        match (&p.kind, &exit) {
            (Kind::Attr { name, value }, Exit::Code(0)) => {
                debug!("{rule}: wrote ATTR{{{name}}}=\"{value}\" for {label}")
            }
            (Kind::Attr { name, value }, e) => {
                stats.attr_write_failed += 1;
                let why = match e {
                    Exit::Code(c) => errno_text(*c),
                    Exit::Signal(s) => format!("killed by {s} after {ms} ms"),
                    Exit::NotStarted(s) => s.clone(),
                };
                warn!("{rule}: ATTR{{{name}}}=\"{value}\" for {label}: {why}");
            }
            (Kind::Handler { .. }, Exit::Code(0)) => {
                info!("{rule}: handler [{pid}] for {label} exited 0 after {ms} ms{late}")
            }
            (Kind::Handler { .. }, Exit::Code(c)) => {
                stats.handlers_failed += 1;
                warn!("{rule}: handler [{pid}] for {label} exited {c} after {ms} ms{late}");
            }
            (Kind::Handler { .. }, Exit::Signal(s)) => {
                if !p.timed_out {
                    stats.handlers_failed += 1;
                }
                warn!(
                    "{rule}: handler [{pid}] for {label} killed by {s} after {ms} ms{}{late}",
                    if p.timed_out { " (timeout)" } else { "" }
                );
            }
            (Kind::Handler { program }, Exit::NotStarted(e)) => {
                stats.handlers_failed += 1;
                warn!("{rule}: cannot start {program} for {label}: {e}");
            }
        }
        if let Some(job) = p.job.take() {
            self.run_steps(job, now, io, stats);
        }
        self.forget_finished(io);
        self.pump(now, io, stats);
    }

    /// Drops entries whose leader was reaped (or given up on), whose job
    /// went on, whose pipe is closed and whose group is empty. A group
    /// with processes left stays until its deadline kills them.
    fn forget_finished(&mut self, io: &mut dyn ProcIo) {
        self.procs.retain(|p| {
            if !p.reaped || p.job.is_some() || p.pipe_open {
                return true;
            }
            p.kill_at.is_none() && io.signal_group(p.pid, Kill::Probe)
        });
    }

    /// The next time [`Exec::tick`] has work.
    pub fn deadline(&self) -> Option<Instant> {
        self.procs
            .iter()
            .filter_map(|p| {
                if p.abandoned {
                    None
                } else if let Some(g) = p.give_up_at {
                    (!p.reaped || p.pipe_open).then_some(g)
                } else if let Some(k) = p.kill_at {
                    Some(k)
                } else {
                    Some(p.deadline)
                }
            })
            .chain(
                self.procs
                    .iter()
                    .filter(|p| p.quiet_lines > 0)
                    .map(|p| p.window + Duration::from_secs(1)),
            )
            .min()
    }

    /// Timeouts: SIGTERM at the deadline, SIGKILL after the grace period,
    /// the slot given back after another; summaries of unlogged output.
    pub fn tick(&mut self, now: Instant, io: &mut dyn ProcIo, stats: &mut Stats) {
        let grace = self.cfg.grace;
        let mut resume = Vec::new();
        for p in &mut self.procs {
            if p.quiet_lines > 0 && now >= p.window + Duration::from_secs(1) {
                summarise_quiet(p);
            }
            if p.abandoned {
                continue;
            }
            if !p.term_sent && now >= p.deadline {
                p.term_sent = true;
                p.kill_at = Some(now + grace);
                let alive = io.signal_group(p.pid, Kill::Term);
                if !p.reaped {
                    p.timed_out = true;
                    stats.handlers_timed_out += 1;
                    let what = match &p.kind {
                        Kind::Handler { .. } => "handler".to_string(),
                        Kind::Attr { name, .. } => format!("ATTR{{{name}}} write"),
                    };
                    warn!(
                        "{}: {what} [{}] for {} still running after {}: SIGTERM to its process group (handlers_timed_out={})",
                        p.rule, p.pid, p.label, Ms(self.cfg.timeout), stats.handlers_timed_out
                    );
                } else if alive {
                    warn!(
                        "{}: processes left behind by handler [{}] still running at its timeout: SIGTERM to its process group",
                        p.rule, p.pid
                    );
                } else {
                    // only a pipe held open from outside the group is left
                    if p.pipe_open {
                        io.close_output(p.pid);
                        p.pipe_open = false;
                    }
                }
            } else if p.give_up_at.is_none() && p.kill_at.is_some_and(|k| now >= k) {
                p.give_up_at = Some(now + grace);
                if io.signal_group(p.pid, Kill::Kill) {
                    warn!("{}: SIGKILL to process group {}", p.rule, p.pid);
                }
                if p.reaped && p.pipe_open {
                    // what is left was killed; stop watching it
                    io.close_output(p.pid);
                    p.pipe_open = false;
                }
            } else if p.reaped && p.pipe_open && p.give_up_at.is_some_and(|g| now >= g) {
                // leader died of the SIGKILL; a process outside the group holds the pipe
                io.close_output(p.pid);
                p.pipe_open = false;
            } else if !p.reaped && p.give_up_at.is_some_and(|g| now >= g) {
                p.abandoned = true;
                stats.handlers_unkillable += 1;
                warn!(
                    "{}: handler [{}] for {} did not die {} after SIGKILL (uninterruptible sleep: a hung \
                     mount or driver?); giving its slot back and going on with its job \
                     (handlers_unkillable={}); it is reaped if it ever exits",
                    p.rule, p.pid, p.label, Ms(grace), stats.handlers_unkillable
                );
                if p.pipe_open {
                    io.close_output(p.pid);
                    p.pipe_open = false;
                }
                if let Some(job) = p.job.take() {
                    resume.push(job);
                }
            }
        }
        for job in resume {
            self.run_steps(job, now, io, stats);
        }
        self.procs
            .retain(|p| !(p.reaped && p.job.is_none() && !p.pipe_open && p.give_up_at.is_some()));
        self.forget_finished(io);
        self.pump(now, io, stats);
    }

    /// SIGTERM/SIGINT: drop waiting jobs (logged), SIGTERM every handler
    /// group now; SIGKILL and giving up follow from [`Exec::tick`].
    pub fn stop(&mut self, now: Instant, io: &mut dyn ProcIo, stats: &mut Stats) {
        self.stopping = true;
        if !self.pending.is_empty() {
            warn!("stopping: {} queued jobs will not run", self.pending.len());
            self.pending.clear();
        }
        for p in &mut self.procs {
            if !p.term_sent {
                p.deadline = now;
            }
            // no further steps of a job once stopping
            if let Some(j) = p.job.as_mut() {
                j.steps.clear();
            }
        }
        self.tick(now, io, stats);
    }

    /// True once every handler has been reaped or given up on.
    pub fn stopped(&self) -> bool {
        self.procs.iter().all(|p| p.reaped || p.abandoned)
    }
}

/// `exit(errno)` of an attribute-writing child, as text.
fn errno_text(code: i32) -> String {
    let text = std::io::Error::from_raw_os_error(code).to_string();
    let text = text.split(" (os error").next().unwrap_or_default();
    format!("{text} (errno {code})")
}

/// Splits output into lines and logs each, within the rate limit; a line
/// longer than [`HANDLER_LINE`] is logged cut, marked and counted.
fn feed(p: &mut Proc, mut data: &[u8], now: Instant, stats: &mut Stats) {
    if now >= p.window + Duration::from_secs(1) {
        summarise_quiet(p);
        p.window = now;
        p.window_lines = 0;
    }
    while !data.is_empty() {
        let nl = data.iter().position(|&b| b == b'\n');
        let chunk = &data[..nl.unwrap_or(data.len())];
        if p.window_lines >= LOG_LINES_PER_SEC {
            // over the rate: count, don't keep
            p.quiet_bytes += (chunk.len() + usize::from(nl.is_some())) as u64;
            if nl.is_some() {
                p.quiet_lines += 1;
                stats.output_lines_suppressed += 1;
                p.line.clear();
                p.cutting = false;
            }
        } else if !p.cutting {
            let room = p.line.capacity() - p.line.len();
            let take = chunk.len().min(room);
            let _ = p.line.extend_from_slice(&chunk[..take]);
            if take < chunk.len() {
                stats.output_lines_cut += 1;
                info!(
                    "[{}] {} [line cut at {HANDLER_LINE} bytes]",
                    p.pid,
                    printable(&p.line)
                );
                p.window_lines += 1;
                p.line.clear();
                p.cutting = true;
            }
        }
        match nl {
            Some(i) => {
                if !p.cutting && p.window_lines < LOG_LINES_PER_SEC {
                    flush_line(p);
                }
                p.cutting = false;
                data = &data[i + 1..];
            }
            None => break,
        }
    }
}

fn flush_line(p: &mut Proc) {
    if !p.line.is_empty() {
        info!("[{}] {}", p.pid, printable(&p.line));
        p.window_lines += 1;
        p.line.clear();
    }
}

fn summarise_quiet(p: &mut Proc) {
    if p.quiet_lines > 0 {
        warn!(
            "[{}] {} more lines ({} bytes) of output not logged (over {LOG_LINES_PER_SEC} lines/s; \
             output_lines_suppressed counts them)",
            p.pid, p.quiet_lines, p.quiet_bytes
        );
        p.quiet_lines = 0;
        p.quiet_bytes = 0;
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

/// The environment list for `--pass-env` names, given the daemon's own
/// environment (`(name, value)` pairs), plus the fixed PATH.
pub fn base_env(
    pass: &[String],
    lookup: impl Fn(&str) -> Option<Vec<u8>>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut v = vec![(
        b"PATH".to_vec(),
        b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_vec(),
    )];
    for name in pass {
        if let Some(val) = lookup(name) {
            v.retain(|(k, _)| k != name.as_bytes());
            v.push((name.as_bytes().to_vec(), val));
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

    fn run_job(devpath: &str, prog: &str) -> Job {
        let mut j = job(devpath, None);
        j.steps.push_back(Step::Exec {
            argv: vec![prog.as_bytes().to_vec()],
            rule: "t.rules:1".into(),
        });
        j
    }

    /// Fake processes: records what the engine asked for.
    #[derive(Default)]
    struct Fake {
        next: i32,
        spawned: Vec<(i32, String)>,
        signals: Vec<(i32, Kill)>,
        closed: Vec<i32>,
        /// Groups that still have a process.
        alive: Vec<i32>,
        /// A program whose start fails (EAGAIN, as a refused fork).
        fails: Option<&'static str>,
        /// Every child gets this pid (the kernel reusing a free pid).
        same_pid: Option<i32>,
    }

    impl ProcIo for Fake {
        fn spawn(
            &mut self,
            argv: &[Vec<u8>],
            _env: &[(&[u8], &[u8])],
            _creds: Option<(u32, u32)>,
        ) -> Result<i32, String> {
            if self.fails.is_some_and(|f| argv[0] == f.as_bytes()) {
                return Err("Resource temporarily unavailable".into());
            }
            self.next += 1;
            let pid = self.same_pid.unwrap_or(100 + self.next);
            self.spawned
                .push((pid, String::from_utf8_lossy(&argv[0]).into_owned()));
            self.alive.push(pid);
            Ok(pid)
        }
        fn write_attr(&mut self, _d: &str, name: &str, _v: &[u8]) -> Result<i32, String> {
            self.next += 1;
            let pid = 100 + self.next;
            self.spawned.push((pid, format!("attr:{name}")));
            self.alive.push(pid);
            Ok(pid)
        }
        fn signal_group(&mut self, pgid: i32, sig: Kill) -> bool {
            if sig != Kill::Probe {
                self.signals.push((pgid, sig));
            }
            self.alive.contains(&pgid)
        }
        fn close_output(&mut self, pid: i32) {
            self.closed.push(pid);
        }
    }

    fn cfg(max_children: usize) -> ExecConfig {
        ExecConfig {
            max_children,
            max_queue: 16,
            timeout: Duration::from_secs(10),
            grace: Duration::from_secs(2),
            extra_env: Vec::new(),
            handler_creds: None,
        }
    }

    /// An engine with `max_children` slots, fake processes and counters.
    fn engine(max_children: usize) -> (Exec, Fake, Stats) {
        (
            Exec::new(cfg(max_children), Builtins::default()),
            Fake::default(),
            Stats::default(),
        )
    }

    /// The process exits and its pipe closes (what the loop reports).
    fn finish(e: &mut Exec, io: &mut Fake, pid: i32, now: Instant, st: &mut Stats) {
        io.alive.retain(|&p| p != pid);
        e.output_closed(pid, io);
        e.exited(pid, Exit::Code(0), now, io, st);
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
    fn a_parent_runs_before_its_child_and_unrelated_devices_in_parallel() {
        let t0 = Instant::now();
        let (mut e, mut io, mut st) = engine(4);
        e.push(
            run_job("/devices/usb1/1-1", "/bin/parent"),
            t0,
            &mut io,
            &mut st,
        );
        e.push(
            run_job("/devices/usb1/1-1/1-1:1.0", "/bin/child"),
            t0,
            &mut io,
            &mut st,
        );
        e.push(
            run_job("/devices/usb2/2-1", "/bin/other"),
            t0,
            &mut io,
            &mut st,
        );
        let names: Vec<&str> = io.spawned.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["/bin/parent", "/bin/other"]);
        let parent = io.spawned[0].0;
        finish(&mut e, &mut io, parent, t0, &mut st);
        assert_eq!(io.spawned[2].1, "/bin/child");
        assert_eq!(st.handlers_started, 3);
    }

    #[test]
    fn max_children_holds_jobs_back_until_a_slot_frees() {
        let t0 = Instant::now();
        let (mut e, mut io, mut st) = engine(1);
        e.push(run_job("/devices/a", "/bin/a"), t0, &mut io, &mut st);
        e.push(run_job("/devices/b", "/bin/b"), t0, &mut io, &mut st);
        assert_eq!((io.spawned.len(), e.queued(), e.running()), (1, 1, 1));
        let first = io.spawned[0].0;
        finish(&mut e, &mut io, first, t0, &mut st);
        assert_eq!((io.spawned.len(), e.queued()), (2, 0));
    }

    #[test]
    fn timeout_sends_term_then_kill_then_gives_the_slot_of_an_unkillable_back() {
        let t0 = Instant::now();
        let (mut e, mut io, mut st) = engine(1);
        e.push(run_job("/devices/a", "/bin/stuck"), t0, &mut io, &mut st);
        e.push(run_job("/devices/b", "/bin/next"), t0, &mut io, &mut st);
        let pid = io.spawned[0].0;
        assert_eq!(e.deadline(), Some(t0 + Duration::from_secs(10)));
        e.tick(t0 + Duration::from_secs(9), &mut io, &mut st);
        assert!(io.signals.is_empty());
        let t = t0 + Duration::from_secs(10);
        e.tick(t, &mut io, &mut st);
        assert_eq!(io.signals, [(pid, Kill::Term)]);
        assert_eq!(st.handlers_timed_out, 1);
        assert_eq!(e.deadline(), Some(t + Duration::from_secs(2)));
        e.tick(t + Duration::from_secs(2), &mut io, &mut st);
        assert_eq!(io.signals[1], (pid, Kill::Kill));
        // it does not die (uninterruptible sleep): after one more grace the
        // slot is given back and the next job starts
        assert_eq!(io.spawned.len(), 1);
        e.tick(t + Duration::from_secs(4), &mut io, &mut st);
        assert_eq!(st.handlers_unkillable, 1);
        assert_eq!(io.spawned.len(), 2, "the next job got the slot");
        assert_eq!(e.running(), 1);
        // and when it finally dies it is reaped without fuss
        io.alive.retain(|&p| p != pid);
        e.exited(
            pid,
            Exit::Signal("SIGKILL"),
            t + Duration::from_secs(60),
            &mut io,
            &mut st,
        );
        assert_eq!(e.procs.len(), 1);
    }

    #[test]
    fn stop_is_bounded_even_with_an_unkillable_handler() {
        let t0 = Instant::now();
        let (mut e, mut io, mut st) = engine(2);
        e.push(run_job("/devices/a", "/bin/stuck"), t0, &mut io, &mut st);
        e.push(run_job("/devices/a", "/bin/queued"), t0, &mut io, &mut st);
        e.stop(t0, &mut io, &mut st);
        assert_eq!(e.queued(), 0);
        assert_eq!(io.signals, [(101, Kill::Term)]);
        assert!(!e.stopped());
        e.tick(t0 + Duration::from_secs(2), &mut io, &mut st);
        e.tick(t0 + Duration::from_secs(4), &mut io, &mut st);
        assert!(e.stopped(), "given up after 2 x grace");
        assert_eq!(io.spawned.len(), 1, "nothing new starts while stopping");
    }

    #[test]
    fn leftovers_in_the_group_are_killed_at_the_deadline() {
        let t0 = Instant::now();
        let (mut e, mut io, mut st) = engine(1);
        e.push(
            run_job("/devices/a", "/bin/daemonizes"),
            t0,
            &mut io,
            &mut st,
        );
        let pid = io.spawned[0].0;
        // the leader exits; a child of it keeps the group and the pipe
        e.exited(pid, Exit::Code(0), t0, &mut io, &mut st);
        assert_eq!(e.running(), 0);
        assert!(!e.idle());
        e.tick(t0 + Duration::from_secs(10), &mut io, &mut st);
        e.tick(t0 + Duration::from_secs(12), &mut io, &mut st);
        assert_eq!(io.signals, [(pid, Kill::Term), (pid, Kill::Kill)]);
        assert_eq!(io.closed, [pid]);
        assert!(e.idle());
    }

    #[test]
    fn a_flood_of_output_is_rate_limited_and_counted() {
        let t0 = Instant::now();
        let (mut e, mut io, mut st) = engine(1);
        e.push(run_job("/devices/a", "/usr/bin/yes"), t0, &mut io, &mut st);
        let pid = io.spawned[0].0;
        let chunk = b"y\n".repeat(8192);
        e.output(pid, &chunk, t0, &mut st);
        assert_eq!(
            st.output_lines_suppressed,
            8192 - u64::from(LOG_LINES_PER_SEC)
        );
        assert_eq!(e.deadline(), Some(t0 + Duration::from_secs(1)));
        e.output(pid, &chunk, t0 + Duration::from_secs(1), &mut st);
        assert_eq!(
            st.output_lines_suppressed,
            2 * (8192 - u64::from(LOG_LINES_PER_SEC))
        );
    }

    #[test]
    fn a_failed_spawn_is_counted_and_the_job_goes_on() {
        let t0 = Instant::now();
        let (mut e, mut io, mut st) = (
            Exec::new(cfg(1), Builtins::default()),
            Fake {
                fails: Some("/bin/fails"),
                ..Fake::default()
            },
            Stats::default(),
        );
        let mut j = run_job("/devices/a", "/bin/fails");
        j.steps.push_back(Step::WriteAttr {
            name: "power/control".into(),
            value: b"auto".to_vec(),
            rule: "t:2".into(),
        });
        e.push(j, t0, &mut io, &mut st);
        assert_eq!(st.handlers_failed, 1);
        assert_eq!(io.spawned, [(101, "attr:power/control".to_string())]);
        // the write's child fails with EACCES
        e.exited(101, Exit::Code(13), t0, &mut io, &mut st);
        assert_eq!(st.attr_write_failed, 1);
    }

    /// A handler that ignores SIGTERM dies of the SIGKILL (reaped between
    /// the SIGKILL and the give-up) while a process outside its group (a
    /// setsid'd grandchild) still holds its output pipe: the pipe is closed
    /// at the give-up, not kept (with the entry, and `idle()` false) for ever.
    #[test]
    fn reaped_after_sigkill_with_its_pipe_held_is_not_kept_for_ever() {
        let t0 = Instant::now();
        let (mut e, mut io, mut st) = engine(1);
        e.push(
            run_job("/devices/a", "/bin/ignores-term"),
            t0,
            &mut io,
            &mut st,
        );
        let pid = io.spawned[0].0;
        let t = t0 + Duration::from_secs(10);
        e.tick(t, &mut io, &mut st); // SIGTERM, ignored
        e.tick(t + Duration::from_secs(2), &mut io, &mut st); // SIGKILL
                                                              // it dies at once; the group is empty; the pipe is still held
        io.alive.retain(|&p| p != pid);
        e.exited(
            pid,
            Exit::Signal("SIGKILL"),
            t + Duration::from_secs(2),
            &mut io,
            &mut st,
        );
        for s in [3u64, 4, 60, 3600] {
            e.tick(t + Duration::from_secs(s), &mut io, &mut st);
        }
        assert!(
            e.idle(),
            "entry kept: deadline={:?} closed={:?}",
            e.deadline(),
            io.closed
        );
    }

    /// A reaped leader whose pipe is held open (group empty) stays in the
    /// table until its deadline; the kernel may give its pid to the next
    /// handler, whose exit must be booked on the new entry so its job goes
    /// on.
    #[test]
    fn a_reused_pid_is_booked_on_the_new_handler() {
        let t0 = Instant::now();
        let (mut e, mut io, mut st) = (
            Exec::new(cfg(4), Builtins::default()),
            Fake {
                same_pid: Some(101),
                ..Fake::default()
            },
            Stats::default(),
        );
        e.push(run_job("/devices/a", "/bin/a"), t0, &mut io, &mut st);
        // a exits; an escaped grandchild holds its pipe; the group is empty
        io.alive.clear();
        e.exited(101, Exit::Code(0), t0, &mut io, &mut st);
        let mut j = run_job("/devices/b", "/bin/b1");
        j.steps.push_back(Step::Exec {
            argv: vec![b"/bin/b2".to_vec()],
            rule: "t:2".into(),
        });
        e.push(j, t0, &mut io, &mut st);
        assert_eq!(io.spawned.len(), 2);
        // b1 exits (its pipe is read to its end later)
        e.exited(
            101,
            Exit::Code(0),
            t0 + Duration::from_millis(10),
            &mut io,
            &mut st,
        );
        assert_eq!(io.spawned.len(), 3, "b2 should start when b1 exits");
    }

    #[test]
    fn printable_escapes() {
        assert_eq!(printable(b"ok \x1b[2J\xff"), "ok \\x1b[2J\\xff");
    }
}
