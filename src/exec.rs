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
//!   rest. The queue, the child table and the memory of every job (its
//!   event, environment and argv: [`crate::job`]) are allocated at start;
//!   a storm makes the engine allocate nothing.
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
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::limits::JOB_SLOT;

/// Job slots beyond `max_queue + max_children`: jobs finished but not yet
/// broadcast (`--broadcast` takes them at the end of the same turn).
pub const FINISHED_SLOTS: usize = 8;
use crate::stats::{Ms, Stats};
use crate::uevent::Uevent;

use crate::linelog::LineLog;
pub use crate::linelog::LOG_LINES_PER_SEC;

/// What a builtin handler is given.
pub struct BuiltinCall<'a> {
    /// The event, with the `ENV{}` assignments of matching rules applied.
    pub event: &'a Uevent<'a>,
    /// The words after the builtin's name in the rule, substituted.
    pub args: Words<'a>,
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

use crate::job::Jobs;
pub use crate::job::{Job, JobView, JobWriter, Step, Words};

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
    /// `env` is the concatenation of its blocks (`KEY=VALUE` entries);
    /// nothing is copied on the way.
    fn spawn(
        &mut self,
        argv: Words<'_>,
        env: &[Words<'_>],
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

/// Bytes of the text a child entry keeps for its log lines (program,
/// attribute, rule, label). Longer text is shown cut, marked with `...`:
/// only log text, never anything a handler gets.
const LOG_TEXT: usize = 192;

/// Log text of a child entry (no allocation per handler).
type LogText = heapless::String<LOG_TEXT>;

/// `s` as [`LogText`], cut at a character boundary and marked if longer.
fn log_text(s: &str) -> LogText {
    let mut t = LogText::new();
    if t.push_str(s).is_err() {
        let mut end = LOG_TEXT - 3;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        let _ = t.push_str(&s[..end]);
        let _ = t.push_str("...");
    }
    t
}

/// `b` as [`LogText`], shown as [`printable`] shows it.
fn log_bytes(b: &[u8]) -> LogText {
    let mut t = LogText::new();
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            let ok = if c.is_control() {
                write!(t, "\\x{:02x}", c as u32).is_ok()
            } else {
                t.push(c).is_ok()
            };
            if !ok {
                return log_text_cut(t);
            }
        }
        for byte in chunk.invalid() {
            if write!(t, "\\x{byte:02x}").is_err() {
                return log_text_cut(t);
            }
        }
    }
    t
}

fn log_text_cut(mut t: LogText) -> LogText {
    while t.len() > LOG_TEXT - 3 {
        t.pop();
    }
    let _ = t.push_str("...");
    t
}

/// What a child is.
#[derive(Clone, Debug)]
enum Kind {
    Handler { program: LogText },
    Attr { name: LogText, value: LogText },
}

/// A running handler (or what it left in its group after it exited).
struct Proc {
    pid: i32,
    kind: Kind,
    /// The job this process belongs to; it goes on when the process exits
    /// (or is given up on).
    job: Option<Job>,
    rule: LogText,
    label: LogText,
    /// Its output, logged within the rate.
    out: LineLog,
    pipe_open: bool,
    started: Instant,
    deadline: Instant,
    term_sent: bool,
    kill_at: Option<Instant>,
    give_up_at: Option<Instant>,
    reaped: bool,
    timed_out: bool,
    /// SIGTERM came from the daemon's own stop, not a timeout.
    stopped: bool,
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
    /// The memory of every job, reserved here.
    jobs: Jobs,
    /// `extra_env` as `KEY=VALUE` entries, each NUL-terminated.
    extra_env: Vec<u8>,
    pending: VecDeque<Job>,
    procs: Vec<Proc>,
    stopping: bool,
    full_logged: bool,
    full_warned_at: Option<Instant>,
    full_quiet: u64,
    /// BROADCAST HOOK (issue 16, `--broadcast`): `Some` once
    /// [`Exec::keep_finished`] was called; jobs whose steps are all done
    /// wait here for [`Exec::drain_finished`].
    finished: Option<VecDeque<Job>>,
}

impl Exec {
    /// An idle engine; the queue, the child table and the memory of every
    /// job ([`JOB_SLOT`] bytes for each of `max_queue + max_children`
    /// jobs, plus [`FINISHED_SLOTS`] for jobs finished but not yet
    /// broadcast) are allocated here, once.
    pub fn new(cfg: ExecConfig, builtins: Builtins) -> Exec {
        let mut extra_env = Vec::new();
        for (k, v) in &cfg.extra_env {
            extra_env.extend_from_slice(k);
            extra_env.push(b'=');
            extra_env.extend_from_slice(v);
            extra_env.push(0);
        }
        Exec {
            jobs: Jobs::new(Self::slots(&cfg), JOB_SLOT),
            extra_env,
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
    /// [`Exec::drain_finished`], in the order they finish.
    pub fn keep_finished(&mut self) {
        self.finished
            .get_or_insert_with(|| VecDeque::with_capacity(FINISHED_SLOTS));
    }

    /// BROADCAST HOOK (issue 16): hands each finished job, oldest first, to
    /// `f`, and gives its memory back.
    pub fn drain_finished(&mut self, mut f: impl FnMut(&JobView<'_>)) {
        let Some(fin) = self.finished.as_mut() else {
            return;
        };
        while let Some(job) = fin.pop_front() {
            f(&self.jobs.view(&job));
            self.jobs.recycle(job);
        }
    }

    /// Job slots for a configuration.
    fn slots(cfg: &ExecConfig) -> usize {
        cfg.max_queue + cfg.max_children + FINISHED_SLOTS
    }

    /// Bytes reserved for jobs (for the start-up log and the README).
    pub fn reserved_bytes(&self) -> usize {
        self.jobs.reserved()
    }

    /// Starts writing a new job into reserved memory (see
    /// [`crate::job::Jobs::start`] for when every slot is in use).
    pub fn start_job(
        &mut self,
        action: &str,
        devpath: &str,
        devpath_old: Option<&str>,
    ) -> JobWriter<'_> {
        self.jobs.start(action, devpath, devpath_old)
    }

    /// Read access to a job.
    pub fn view<'a>(&'a self, job: &'a Job) -> JobView<'a> {
        self.jobs.view(job)
    }

    /// Gives back a job that will not be pushed.
    pub fn discard(&mut self, job: Job) {
        self.jobs.recycle(job);
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
        self.pending.len() < self.cfg.max_queue && self.jobs.available() > 0
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
            if !running.iter().any(|l| l == p.label.as_str()) {
                running.push(p.label.to_string());
            }
        }
        queued.extend(
            self.pending
                .iter()
                .map(|j| self.jobs.view(j).label().to_string()),
        );
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
            let cand = self.jobs.view(&self.pending[k]);
            let blocked = self
                .procs
                .iter()
                .filter_map(|p| p.job.as_ref())
                .any(|j| self.jobs.view(j).related(&cand))
                || self
                    .pending
                    .iter()
                    .take(k)
                    .any(|j| self.jobs.view(j).related(&cand));
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
            let v = self.jobs.view(&job);
            let (started, kind, rule) = match step {
                Step::WriteAttr { name, value, rule } => {
                    let (name, value, rule) = (v.str(name), v.bytes(value), v.rule(rule));
                    match io.write_attr(v.devpath(), name, value) {
                        Ok(pid) => (
                            pid,
                            Kind::Attr {
                                name: log_text(name),
                                value: log_bytes(value),
                            },
                            rule,
                        ),
                        Err(e) => {
                            stats.attr_write_failed += 1;
                            warn!(
                                "{rule}: ATTR{{{name}}}=\"{}\" for {}: cannot start the write: {e}",
                                log_bytes(value),
                                v.label()
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
                    let rule = v.rule(rule);
                    let r = match Uevent::parse(v.raw()) {
                        Ok(ev) => self.builtins.call(
                            id,
                            &BuiltinCall {
                                event: &ev,
                                args: v.words(args),
                                rule,
                            },
                        ),
                        Err(e) => Err(format!("internal: job event does not parse: {e}")),
                    };
                    if let Err(e) = r {
                        stats.handlers_failed += 1;
                        warn!(
                            "{rule}: builtin {} failed for {}: {e}",
                            v.str(name),
                            v.label()
                        );
                    }
                    continue;
                }
                Step::Exec { argv, rule } => {
                    stats.handlers_started += 1;
                    let argv = v.words(argv);
                    let program = log_bytes(argv.get(0).unwrap_or_default());
                    let env = [v.env(), v.words(rule), Words::new(&self.extra_env)];
                    let rule = v.rule(rule);
                    match io.spawn(argv, &env, self.cfg.handler_creds) {
                        Ok(pid) => {
                            info!("{rule}: started {program} [{pid}] for {}", v.label());
                            (pid, Kind::Handler { program }, rule)
                        }
                        Err(e) => {
                            stats.handlers_failed += 1;
                            warn!("{rule}: cannot start {program} for {}: {e}", v.label());
                            continue;
                        }
                    }
                }
            };
            let pipe_open = matches!(kind, Kind::Handler { .. });
            let (rule, label) = (log_text(rule), log_text(v.label()));
            // The kernel may give a new child the pid of a reaped one whose
            // entry lingers (its pipe held by an escaped process): that
            // entry is stale (the loop has retired its pipe), and events for
            // this pid are the new child's.
            self.procs.retain(|p| p.pid != started);
            self.procs.push(Proc {
                pid: started,
                kind,
                rule,
                label,
                job: Some(job),
                out: LineLog::new(started, now),
                pipe_open,
                started: now,
                deadline: now + self.cfg.timeout,
                term_sent: false,
                kill_at: None,
                give_up_at: None,
                reaped: false,
                timed_out: false,
                stopped: false,
                abandoned: false,
            });
            return; // the job goes on when this process exits
        }
        debug!("done: {}", self.jobs.view(&job).label());
        // BROADCAST HOOK (issue 16): the job is fully handled
        match self.finished.as_mut() {
            Some(f) => f.push_back(job),
            None => self.jobs.recycle(job),
        }
    }

    fn find(&self, pid: i32) -> Option<usize> {
        self.procs.iter().position(|p| p.pid == pid)
    }

    /// Bytes the loop read from the output pipe of `pid`.
    pub fn output(&mut self, pid: i32, data: &[u8], now: Instant, stats: &mut Stats) {
        if let Some(i) = self.find(pid) {
            self.procs[i].out.feed(data, now, stats);
        }
    }

    /// The output pipe of `pid` reached its end (the handler and everything
    /// it started closed it); the loop has closed it.
    pub fn output_closed(&mut self, pid: i32, io: &mut dyn ProcIo) {
        if let Some(i) = self.find(pid) {
            let p = &mut self.procs[i];
            p.out.flush();
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
        p.out.finish();
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
                if !p.timed_out && !p.stopped {
                    stats.handlers_failed += 1;
                }
                warn!(
                    "{rule}: handler [{pid}] for {label} killed by {s} after {ms} ms{}{late}",
                    if p.timed_out {
                        " (timeout)"
                    } else if p.stopped {
                        " (the daemon is stopping)"
                    } else {
                        ""
                    }
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
            .chain(self.procs.iter().filter_map(|p| p.out.due()))
            .min()
    }

    /// Timeouts: SIGTERM at the deadline, SIGKILL after the grace period,
    /// the slot given back after another; summaries of unlogged output.
    pub fn tick(&mut self, now: Instant, io: &mut dyn ProcIo, stats: &mut Stats) {
        let grace = self.cfg.grace;
        let mut resume = Vec::new();
        for p in &mut self.procs {
            p.out.tick(now);
            if p.abandoned {
                continue;
            }
            if !p.term_sent && now >= p.deadline {
                p.term_sent = true;
                p.kill_at = Some(now + grace);
                let alive = io.signal_group(p.pid, Kill::Term);
                if !p.reaped && self.stopping {
                    // not a timeout: the daemon's stop ends what runs
                    p.stopped = true;
                    info!(
                        "{}: stopping: SIGTERM to handler [{}] for {} (still running) and its process group",
                        p.rule, p.pid, p.label
                    );
                } else if !p.reaped {
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
            for job in self.pending.drain(..) {
                self.jobs.recycle(job);
            }
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

    /// Pushes a job for `devpath` whose steps are `steps`: a program path,
    /// or `attr:NAME=VALUE` for an attribute write.
    fn push(
        e: &mut Exec,
        devpath: &str,
        steps: &[&str],
        now: Instant,
        io: &mut Fake,
        st: &mut Stats,
    ) {
        let mut w = e.start_job("add", devpath, None);
        w.raw(b"ACTION=add\0", core::iter::empty());
        w.env(b"ACTION", b"add");
        for (i, step) in steps.iter().enumerate() {
            match step.strip_prefix("attr:").and_then(|a| a.split_once('=')) {
                Some((name, value)) => w
                    .write_attr(name, value.as_bytes(), format_args!("t.rules:{}", i + 1))
                    .unwrap(),
                None => {
                    w.begin_words();
                    w.word(step.as_bytes());
                    w.exec(format_args!("t.rules:{}", i + 1)).unwrap();
                }
            }
        }
        let (job, oversize) = w.finish();
        assert!(!oversize);
        e.push(job, now, io, st);
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
            argv: Words<'_>,
            env: &[Words<'_>],
            _creds: Option<(u32, u32)>,
        ) -> Result<i32, String> {
            let argv0 = argv.get(0).unwrap_or_default();
            let rule = env
                .iter()
                .flat_map(|b| b.iter())
                .any(|e| e.starts_with(b"HOTPLUGD_RULE=t.rules:"));
            assert!(rule, "HOTPLUGD_RULE in the environment");
            if self.fails.is_some_and(|f| argv0 == f.as_bytes()) {
                return Err("Resource temporarily unavailable".into());
            }
            self.next += 1;
            let pid = self.same_pid.unwrap_or(100 + self.next);
            self.spawned
                .push((pid, String::from_utf8_lossy(argv0).into_owned()));
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
    fn a_parent_runs_before_its_child_and_unrelated_devices_in_parallel() {
        let t0 = Instant::now();
        let (mut e, mut io, mut st) = engine(4);
        push(
            &mut e,
            "/devices/usb1/1-1",
            &["/bin/parent"],
            t0,
            &mut io,
            &mut st,
        );
        push(
            &mut e,
            "/devices/usb1/1-1/1-1:1.0",
            &["/bin/child"],
            t0,
            &mut io,
            &mut st,
        );
        push(
            &mut e,
            "/devices/usb2/2-1",
            &["/bin/other"],
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
        push(&mut e, "/devices/a", &["/bin/a"], t0, &mut io, &mut st);
        push(&mut e, "/devices/b", &["/bin/b"], t0, &mut io, &mut st);
        assert_eq!((io.spawned.len(), e.queued(), e.running()), (1, 1, 1));
        let first = io.spawned[0].0;
        finish(&mut e, &mut io, first, t0, &mut st);
        assert_eq!((io.spawned.len(), e.queued()), (2, 0));
    }

    #[test]
    fn timeout_sends_term_then_kill_then_gives_the_slot_of_an_unkillable_back() {
        let t0 = Instant::now();
        let (mut e, mut io, mut st) = engine(1);
        push(&mut e, "/devices/a", &["/bin/stuck"], t0, &mut io, &mut st);
        push(&mut e, "/devices/b", &["/bin/next"], t0, &mut io, &mut st);
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
        push(&mut e, "/devices/a", &["/bin/stuck"], t0, &mut io, &mut st);
        push(&mut e, "/devices/a", &["/bin/queued"], t0, &mut io, &mut st);
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
    fn handlers_ended_by_the_stop_are_neither_timed_out_nor_failed() {
        let t0 = Instant::now();
        let (mut e, mut io, mut st) = engine(1);
        push(&mut e, "/devices/a", &["/bin/slow"], t0, &mut io, &mut st);
        let pid = io.spawned[0].0;
        e.stop(t0, &mut io, &mut st);
        assert_eq!(io.signals, [(pid, Kill::Term)]);
        io.alive.retain(|&p| p != pid);
        e.exited(pid, Exit::Signal("SIGTERM"), t0, &mut io, &mut st);
        assert!(e.stopped());
        assert_eq!((st.handlers_timed_out, st.handlers_failed), (0, 0));
    }

    #[test]
    fn leftovers_in_the_group_are_killed_at_the_deadline() {
        let t0 = Instant::now();
        let (mut e, mut io, mut st) = engine(1);
        push(
            &mut e,
            "/devices/a",
            &["/bin/daemonizes"],
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
        push(
            &mut e,
            "/devices/a",
            &["/usr/bin/yes"],
            t0,
            &mut io,
            &mut st,
        );
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
        push(
            &mut e,
            "/devices/a",
            &["/bin/fails", "attr:power/control=auto"],
            t0,
            &mut io,
            &mut st,
        );
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
        push(
            &mut e,
            "/devices/a",
            &["/bin/ignores-term"],
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
        push(&mut e, "/devices/a", &["/bin/a"], t0, &mut io, &mut st);
        // a exits; an escaped grandchild holds its pipe; the group is empty
        io.alive.clear();
        e.exited(101, Exit::Code(0), t0, &mut io, &mut st);
        push(
            &mut e,
            "/devices/b",
            &["/bin/b1", "/bin/b2"],
            t0,
            &mut io,
            &mut st,
        );
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
