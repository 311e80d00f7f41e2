//! Device-bound services (`RUN{service}+="/abs/program args"`): long-running
//! programs tied to a device, as a state machine with **no I/O and no
//! clock**, like [`crate::exec`].
//!
//! A handler is the work of one event and is killed at
//! `--handler-timeout`; a service is the work of a device's life: a getty
//! on a USB serial adapter, `gpsd` for a GPS dongle, a camera streamer.
//!
//! - **Start.** When the device's `add` job has finished (its ordinary
//!   handlers ran), the loop hands this table a [`Want`]: the program and
//!   arguments (substituted like `RUN`), the same clean environment as a
//!   handler. It starts in a process group of its own, with its output
//!   logged like a handler's (at most [`crate::exec::LOG_LINES_PER_SEC`]
//!   lines a second, the rest counted). No handler timeout applies, and a
//!   service does not take a `--max-children` slot: at most
//!   [`ServiceConfig::max`] (`--max-services`) run at once; one more is
//!   refused, logged and counted in `services_failed`.
//! - **Restart.** A service that exits or dies is started again after a
//!   backoff: [`BACKOFF_MIN`], doubling up to [`BACKOFF_MAX`]; a run of
//!   [`BACKOFF_RESET`] or more starts the backoff over. Each restart is
//!   counted (`services_restarted`) and logged with the delay. Processes
//!   the program left in its group get SIGKILL before the restart.
//! - **Stop.** On the device's `remove` (a kernel event, or a synthetic
//!   one from an overrun's resync: the same path), at daemon exit, and on
//!   SIGHUP when its rule is gone: SIGTERM to the group, SIGKILL after
//!   [`ServiceConfig::grace`], and the record is dropped after one more
//!   grace if even that did not end it (counted `services_unkillable`). So
//!   a stop takes at most `2 × grace`.
//! - **Identity.** A service is (DEVPATH, rule `file:line`, argv): a second
//!   `add` (or a SIGHUP that still wants it) leaves a running one alone.
//!
//! The loop routes every reaped pid and every pipe read: to this table if
//! [`Services::owns`] says so, else to the handler engine.

use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::exec::{Exit, Kill, ProcIo};
use crate::job::Words;
use crate::linelog::LineLog;
use crate::stats::{Ms, Stats};

/// First restart delay.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest restart delay (the delay doubles from [`BACKOFF_MIN`]).
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run at least this long resets the delay to [`BACKOFF_MIN`].
pub const BACKOFF_RESET: Duration = Duration::from_secs(60);
/// Default `--max-services`.
pub const DEFAULT_MAX_SERVICES: usize = 32;

/// Settings of the service table.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Services running (or waiting to restart) at once: `--max-services`.
    pub max: usize,
    /// SIGTERM → SIGKILL, and SIGKILL → giving up (the handlers' grace).
    pub grace: Duration,
    /// Added to the environment: PATH and `--pass-env` variables.
    pub extra_env: Vec<(Vec<u8>, Vec<u8>)>,
    /// `--handler-user`: (uid, gid) the services run as.
    pub creds: Option<(u32, u32)>,
}

/// A service a device's `add` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    /// The device.
    pub devpath: String,
    /// `file:line` of the rule.
    pub rule: String,
    /// Program and arguments, substituted.
    pub argv: Vec<Vec<u8>>,
    /// The handler environment of the `add` event (without PATH and
    /// HOTPLUGD_RULE).
    pub env: Vec<(String, Vec<u8>)>,
}

impl Want {
    fn same(&self, other: &Want) -> bool {
        self.devpath == other.devpath && self.rule == other.rule && self.argv == other.argv
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// The program runs as `pid` since `since`.
    Running { pid: i32, since: Instant },
    /// Waiting to start again at `at`.
    Backoff { at: Instant },
    /// Being stopped: SIGTERM sent; SIGKILL at `kill_at`, given up at
    /// `give_up_at` (set once SIGKILL is sent). `reaped`: the leader is.
    Stopping {
        pid: i32,
        kill_at: Instant,
        give_up_at: Option<Instant>,
        reaped: bool,
    },
}

/// Output of one child, logged like a handler's (also `modprobe`'s).
pub(crate) struct Output {
    pub(crate) pid: i32,
    open: bool,
    log: LineLog,
}

struct Service {
    want: Want,
    state: State,
    /// The delay before the next restart.
    backoff: Duration,
    restarts: u64,
    /// Output pipes: the running program's, and a former one still held
    /// open by something it started (closed when the record goes).
    outputs: Vec<Output>,
    /// Finished: the record is dropped at the end of this call.
    done: bool,
}

/// A line of [`Services::list`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The device.
    pub devpath: String,
    /// `file:line`.
    pub rule: String,
    /// The program.
    pub program: String,
    /// Its pid while running.
    pub pid: Option<i32>,
    /// `running`, `restarting in N ms` or `stopping`.
    pub state: String,
    /// Restarts so far.
    pub restarts: u64,
}

/// The table. Allocates per service (its argv, environment and output
/// line), never per event.
pub struct Services {
    cfg: ServiceConfig,
    list: Vec<Service>,
    stopping: bool,
}

fn printable(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Services {
    /// An empty table.
    pub fn new(cfg: ServiceConfig) -> Services {
        Services {
            list: Vec::with_capacity(cfg.max),
            cfg,
            stopping: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ServiceConfig {
        &self.cfg
    }

    /// True if `pid` is (or was) one of the services' programs: its exit
    /// and output belong here.
    pub fn owns(&self, pid: i32) -> bool {
        self.list.iter().any(|s| {
            s.outputs.iter().any(|o| o.pid == pid)
                || matches!(s.state, State::Running { pid: p, .. } | State::Stopping { pid: p, reaped: false, .. } if p == pid)
        })
    }

    /// Records not yet dropped (running, waiting to restart, stopping).
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True if no service is known.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// What runs for which device.
    pub fn list(&self, now: Instant) -> Vec<Listed> {
        self.list
            .iter()
            .map(|s| {
                let (pid, state) = match s.state {
                    State::Running { pid, .. } => (Some(pid), "running".to_string()),
                    State::Backoff { at } => (
                        None,
                        format!("restarting in {}", Ms(at.saturating_duration_since(now))),
                    ),
                    State::Stopping { pid, .. } => (Some(pid), "stopping".to_string()),
                };
                Listed {
                    devpath: s.want.devpath.clone(),
                    rule: s.want.rule.clone(),
                    program: printable(&s.want.argv[0]),
                    pid,
                    state,
                    restarts: s.restarts,
                }
            })
            .collect()
    }

    /// Starts `want` unless the same service (device, rule, argv) is
    /// already known and not being stopped.
    pub fn start(&mut self, want: Want, now: Instant, io: &mut dyn ProcIo, stats: &mut Stats) {
        if self.stopping || want.argv.is_empty() {
            return;
        }
        if self
            .list
            .iter()
            .any(|s| s.want.same(&want) && !matches!(s.state, State::Stopping { .. }))
        {
            debug!(
                "{}: service {} for {} already running",
                want.rule,
                printable(&want.argv[0]),
                want.devpath
            );
            return;
        }
        let live = self
            .list
            .iter()
            .filter(|s| !matches!(s.state, State::Stopping { .. }))
            .count();
        if live >= self.cfg.max {
            stats.services_failed += 1;
            warn!(
                "{}: service {} for {} not started: {} services already run (--max-services); services_failed={}",
                want.rule,
                printable(&want.argv[0]),
                want.devpath,
                self.cfg.max,
                stats.services_failed
            );
            return;
        }
        let mut s = Service {
            want,
            state: State::Backoff { at: now },
            backoff: BACKOFF_MIN,
            restarts: 0,
            outputs: Vec::new(),
            done: false,
        };
        launch(&self.cfg, &mut s, now, io, stats);
        self.list.push(s);
    }

    /// The device is gone (a kernel `remove` or a resync's synthetic one):
    /// stop its services.
    pub fn device_removed(&mut self, devpath: &str, now: Instant, io: &mut dyn ProcIo) {
        for s in self.list.iter_mut().filter(|s| s.want.devpath == devpath) {
            begin_stop(s, now, self.cfg.grace, io, "its device was removed");
        }
        self.drop_finished(io);
    }

    /// The device was renamed (a `move`: a network interface renamed, a
    /// device re-parented): its services follow it, so its later `remove`
    /// finds them.
    pub fn device_moved(&mut self, old: &str, new: &str) {
        for s in self.list.iter_mut().filter(|s| s.want.devpath == old) {
            info!(
                "{}: service {} follows its device from {old} to {new}",
                s.want.rule,
                printable(&s.want.argv[0])
            );
            s.want.devpath = new.to_string();
        }
    }

    /// SIGHUP: `wanted` is what the new rules ask of the present devices.
    /// Services no longer wanted are stopped; wanted ones not running are
    /// started.
    pub fn reconcile(
        &mut self,
        wanted: Vec<Want>,
        now: Instant,
        io: &mut dyn ProcIo,
        stats: &mut Stats,
    ) {
        let grace = self.cfg.grace;
        for s in &mut self.list {
            if !wanted.iter().any(|w| w.same(&s.want)) {
                begin_stop(s, now, grace, io, "its rule is gone after SIGHUP");
            }
        }
        for w in wanted {
            self.start(w, now, io, stats);
        }
        self.drop_finished(io);
    }

    /// Daemon exit: stop every service.
    pub fn stop(&mut self, now: Instant, io: &mut dyn ProcIo) {
        self.stopping = true;
        for s in &mut self.list {
            begin_stop(s, now, self.cfg.grace, io, "hotplugd is stopping");
        }
        self.drop_finished(io);
    }

    /// True once every service has ended (or been given up on).
    pub fn stopped(&self) -> bool {
        self.list.is_empty()
    }

    /// The loop reaped `pid`; false if it is not a service's.
    pub fn exited(
        &mut self,
        pid: i32,
        exit: Exit,
        now: Instant,
        io: &mut dyn ProcIo,
        stats: &mut Stats,
    ) -> bool {
        let Some(s) = self.list.iter_mut().find(|s| {
            matches!(s.state, State::Running { pid: p, .. } | State::Stopping { pid: p, reaped: false, .. } if p == pid)
        }) else {
            return false;
        };
        if let Some(o) = s.outputs.iter_mut().find(|o| o.pid == pid) {
            o.finish();
        }
        let how = match &exit {
            Exit::Code(c) => format!("exited {c}"),
            Exit::Signal(sig) => format!("killed by {sig}"),
            Exit::NotStarted(e) => {
                stats.services_failed += 1;
                format!(
                    "did not start ({e}; services_failed={})",
                    stats.services_failed
                )
            }
        };
        let program = printable(&s.want.argv[0]);
        match s.state {
            State::Running { since, .. } => {
                let ran = now.saturating_duration_since(since);
                if io.signal_group(pid, Kill::Probe) && io.signal_group(pid, Kill::Kill) {
                    warn!(
                        "{}: service {program} [{pid}] left processes in its group: SIGKILL to them",
                        s.want.rule
                    );
                }
                if ran >= BACKOFF_RESET {
                    s.backoff = BACKOFF_MIN;
                }
                let at = now + s.backoff;
                warn!(
                    "{}: service {program} [{pid}] for {} {how} after {}; restarting in {} (restart {})",
                    s.want.rule,
                    s.want.devpath,
                    Ms(ran),
                    Ms(s.backoff),
                    s.restarts + 1
                );
                s.state = State::Backoff { at };
                s.backoff = (s.backoff * 2).min(BACKOFF_MAX);
            }
            State::Stopping {
                kill_at,
                give_up_at,
                ..
            } => {
                info!(
                    "{}: service {program} [{pid}] for {} {how} (stopped)",
                    s.want.rule, s.want.devpath
                );
                s.state = State::Stopping {
                    pid,
                    kill_at,
                    give_up_at,
                    reaped: true,
                };
            }
            State::Backoff { .. } => {}
        }
        self.drop_finished(io);
        true
    }

    /// Bytes read from the pipe of `pid`; false if not a service's.
    pub fn output(&mut self, pid: i32, data: &[u8], now: Instant, stats: &mut Stats) -> bool {
        let Some(o) = self.output_of(pid) else {
            return false;
        };
        o.feed(data, now, stats);
        true
    }

    /// The pipe of `pid` reached its end; false if not a service's.
    pub fn output_closed(&mut self, pid: i32, io: &mut dyn ProcIo) -> bool {
        let Some(o) = self.output_of(pid) else {
            return false;
        };
        o.finish();
        o.open = false;
        for s in &mut self.list {
            s.outputs.retain(|o| o.open);
        }
        self.drop_finished(io);
        true
    }

    fn output_of(&mut self, pid: i32) -> Option<&mut Output> {
        self.list
            .iter_mut()
            .flat_map(|s| s.outputs.iter_mut())
            .find(|o| o.pid == pid)
    }

    /// The next time [`Services::tick`] has work.
    pub fn deadline(&self) -> Option<Instant> {
        self.list
            .iter()
            .filter_map(|s| match s.state {
                State::Running { .. } => None,
                State::Backoff { at } => Some(at),
                State::Stopping {
                    kill_at,
                    give_up_at,
                    ..
                } => Some(give_up_at.unwrap_or(kill_at)),
            })
            .chain(
                self.list
                    .iter()
                    .flat_map(|s| s.outputs.iter())
                    .filter_map(|o| o.log.due()),
            )
            .min()
    }

    /// Restarts that are due; SIGKILL and giving up on stops.
    pub fn tick(&mut self, now: Instant, io: &mut dyn ProcIo, stats: &mut Stats) {
        let grace = self.cfg.grace;
        let mut due = Vec::new();
        for (i, s) in self.list.iter_mut().enumerate() {
            for o in &mut s.outputs {
                o.log.tick(now);
            }
            match s.state {
                State::Backoff { at } if now >= at && !self.stopping => due.push(i),
                State::Stopping {
                    pid,
                    kill_at,
                    give_up_at: None,
                    reaped,
                } if now >= kill_at => {
                    if io.signal_group(pid, Kill::Kill) {
                        warn!(
                            "{}: service [{pid}] for {} still running {} after SIGTERM: SIGKILL to its process group",
                            s.want.rule,
                            s.want.devpath,
                            Ms(grace)
                        );
                    }
                    s.state = State::Stopping {
                        pid,
                        kill_at,
                        give_up_at: Some(now + grace),
                        reaped,
                    };
                }
                State::Stopping {
                    pid,
                    give_up_at: Some(g),
                    reaped,
                    ..
                } if now >= g => {
                    if !reaped {
                        stats.services_unkillable += 1;
                        warn!(
                            "{}: service [{pid}] for {} did not die {} after SIGKILL (uninterruptible sleep?); \
                             forgetting it (services_unkillable={}); it is reaped if it ever exits",
                            s.want.rule,
                            s.want.devpath,
                            Ms(grace),
                            stats.services_unkillable
                        );
                    }
                    for o in s.outputs.drain(..) {
                        if o.open {
                            io.close_output(o.pid);
                        }
                    }
                    s.done = true;
                }
                _ => {}
            }
        }
        for i in due {
            let s = &mut self.list[i];
            s.restarts += 1;
            stats.services_restarted += 1;
            launch(&self.cfg, s, now, io, stats);
        }
        self.list.retain(|s| !s.done);
        self.drop_finished(io);
    }

    /// Drops stopped services whose leader was reaped and whose group is
    /// empty (and closes pipes still held by escaped processes).
    fn drop_finished(&mut self, io: &mut dyn ProcIo) {
        let stopping = self.stopping;
        self.list.retain_mut(|s| {
            let gone = match s.state {
                _ if s.done => true,
                State::Stopping {
                    pid, reaped: true, ..
                } => !io.signal_group(pid, Kill::Probe), // else SIGKILL at kill_at
                State::Backoff { .. } => stopping,
                _ => false,
            };
            if gone {
                for o in s.outputs.drain(..) {
                    if o.open {
                        io.close_output(o.pid);
                    }
                }
            }
            !gone
        });
    }
}

/// Starts the program of `s`; on failure, schedules a retry.
fn launch(
    cfg: &ServiceConfig,
    s: &mut Service,
    now: Instant,
    io: &mut dyn ProcIo,
    stats: &mut Stats,
) {
    // the engine's form: NUL-terminated words (allocated per start)
    let argv = words(s.want.argv.iter().map(Vec::as_slice));
    let mut env = Vec::new();
    let pairs = s
        .want
        .env
        .iter()
        .map(|(k, v)| (k.as_bytes(), v.as_slice()))
        .chain(core::iter::once((
            &b"HOTPLUGD_RULE"[..],
            s.want.rule.as_bytes(),
        )))
        .chain(
            cfg.extra_env
                .iter()
                .map(|(k, v)| (k.as_slice(), v.as_slice())),
        );
    for (k, v) in pairs {
        env.extend_from_slice(k);
        env.push(b'=');
        env.extend_from_slice(v);
        env.push(0);
    }
    let program = printable(&s.want.argv[0]);
    match io.spawn(Words::new(&argv), &[Words::new(&env)], cfg.creds) {
        Ok(pid) => {
            stats.services_started += 1;
            info!(
                "{}: started service {program} [{pid}] for {}",
                s.want.rule, s.want.devpath
            );
            s.state = State::Running { pid, since: now };
            s.outputs.push(Output::new(pid, now));
        }
        Err(e) => {
            stats.services_failed += 1;
            warn!(
                "{}: cannot start service {program} for {}: {e}; trying again in {} (services_failed={})",
                s.want.rule,
                s.want.devpath,
                Ms(s.backoff),
                stats.services_failed
            );
            s.state = State::Backoff {
                at: now + s.backoff,
            };
            s.backoff = (s.backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// `words` as one block, each followed by a NUL (see [`Words`]).
pub(crate) fn words<'a>(words: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut v = Vec::new();
    for w in words {
        v.extend_from_slice(w);
        v.push(0);
    }
    v
}

/// SIGTERM to the group of a running service; a waiting one is dropped.
fn begin_stop(s: &mut Service, now: Instant, grace: Duration, io: &mut dyn ProcIo, why: &str) {
    match s.state {
        State::Running { pid, .. } => {
            info!(
                "{}: stopping service {} [{pid}] for {}: {why}: SIGTERM to its process group",
                s.want.rule,
                printable(&s.want.argv[0]),
                s.want.devpath
            );
            io.signal_group(pid, Kill::Term);
            s.state = State::Stopping {
                pid,
                kill_at: now + grace,
                give_up_at: None,
                reaped: false,
            };
        }
        State::Backoff { .. } => {
            info!(
                "{}: service {} for {} will not restart: {why}",
                s.want.rule,
                printable(&s.want.argv[0]),
                s.want.devpath
            );
            s.done = true;
        }
        State::Stopping { .. } => {}
    }
}

impl Output {
    pub(crate) fn new(pid: i32, now: Instant) -> Output {
        Output {
            pid,
            open: true,
            log: LineLog::new(pid, now),
        }
    }

    /// Logs what was read, within the rate limit.
    pub(crate) fn feed(&mut self, data: &[u8], now: Instant, stats: &mut Stats) {
        self.log.feed(data, now, stats);
    }

    /// The pipe ended, or the process was reaped: log the last line.
    pub(crate) fn finish(&mut self) {
        self.log.finish();
    }

    /// Lines seen so far, logged or not.
    pub(crate) fn lines(&self) -> u64 {
        self.log.lines()
    }
}

#[cfg(test)]
mod tests {
    //! The table on fake processes and a virtual clock.

    use super::*;

    #[derive(Default)]
    struct Fake {
        next: i32,
        spawned: Vec<i32>,
        signals: Vec<(i32, Kill)>,
        alive: Vec<i32>,
        /// Processes that ignore SIGTERM.
        stubborn: Vec<i32>,
        /// Processes that survive SIGKILL (uninterruptible sleep).
        unkillable: Vec<i32>,
        closed: Vec<i32>,
    }

    impl ProcIo for Fake {
        fn spawn(
            &mut self,
            _: Words<'_>,
            _: &[Words<'_>],
            _: Option<(u32, u32)>,
        ) -> Result<i32, String> {
            self.next += 1;
            let pid = 100 + self.next;
            self.spawned.push(pid);
            self.alive.push(pid);
            Ok(pid)
        }
        fn write_attr(&mut self, _: &str, _: &str, _: &[u8]) -> Result<i32, String> {
            Err("not used".into())
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

    impl Fake {
        /// What the kernel does with a signal: the loop then reaps.
        fn deliver(&mut self, s: &mut Services, now: Instant, st: &mut Stats) {
            let sigs = core::mem::take(&mut self.signals);
            for (pid, sig) in sigs {
                let dies = match sig {
                    Kill::Term => !self.stubborn.contains(&pid),
                    Kill::Kill => !self.unkillable.contains(&pid),
                    Kill::Probe => false,
                };
                if dies && self.alive.contains(&pid) {
                    self.alive.retain(|&p| p != pid);
                    s.output_closed(pid, self);
                    let name = if sig == Kill::Term {
                        "SIGTERM"
                    } else {
                        "SIGKILL"
                    };
                    assert!(s.exited(pid, Exit::Signal(name), now, self, st));
                }
            }
        }
    }

    fn cfg(max: usize) -> ServiceConfig {
        ServiceConfig {
            max,
            grace: Duration::from_secs(2),
            extra_env: Vec::new(),
            creds: None,
        }
    }

    fn want(dev: &str) -> Want {
        Want {
            devpath: dev.into(),
            rule: "t.rules:1".into(),
            argv: vec![b"/bin/svc".to_vec()],
            env: Vec::new(),
        }
    }

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn restart_backoff_doubles_to_the_cap_and_resets_after_a_long_run() {
        let t0 = Instant::now();
        let (mut s, mut io, mut st) = (Services::new(cfg(4)), Fake::default(), Stats::default());
        s.start(want("/d/a"), t0, &mut io, &mut st);
        let mut now = t0;
        let mut delays = Vec::new();
        for _ in 0..9 {
            let pid = *io.spawned.last().unwrap();
            io.alive.retain(|&p| p != pid);
            s.output_closed(pid, &mut io);
            assert!(s.exited(pid, Exit::Signal("SIGKILL"), now, &mut io, &mut st));
            let at = s.deadline().unwrap();
            delays.push(at.duration_since(now).as_secs());
            // nothing starts before the deadline
            let n = io.spawned.len();
            s.tick(at - Duration::from_millis(1), &mut io, &mut st);
            assert_eq!(io.spawned.len(), n);
            now = at;
            s.tick(now, &mut io, &mut st);
            assert_eq!(io.spawned.len(), n + 1);
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(st.services_restarted, 9);
        assert_eq!(st.services_started, 10);
        // a run of 60 s starts the delay over
        let pid = *io.spawned.last().unwrap();
        now += BACKOFF_RESET;
        io.alive.retain(|&p| p != pid);
        s.exited(pid, Exit::Code(1), now, &mut io, &mut st);
        assert_eq!(s.deadline().unwrap().duration_since(now), BACKOFF_MIN);
    }

    #[test]
    fn remove_sends_sigterm_then_sigkill_after_the_grace_then_forgets() {
        let t0 = Instant::now();
        let (mut s, mut io, mut st) = (Services::new(cfg(4)), Fake::default(), Stats::default());
        s.start(want("/d/a"), t0, &mut io, &mut st);
        s.start(want("/d/b"), t0, &mut io, &mut st);
        let (a, b) = (io.spawned[0], io.spawned[1]);
        io.stubborn.push(a);
        s.device_removed("/d/a", t0, &mut io);
        assert_eq!(io.signals, [(a, Kill::Term)]);
        io.deliver(&mut s, t0, &mut st);
        assert_eq!(s.len(), 2, "a ignores SIGTERM");
        assert_eq!(s.deadline(), Some(secs(t0, 2)));
        s.tick(secs(t0, 2), &mut io, &mut st);
        assert_eq!(io.signals, [(a, Kill::Kill)]);
        io.deliver(&mut s, secs(t0, 2), &mut st);
        assert_eq!(s.len(), 1);
        assert_eq!(s.list(t0)[0].pid, Some(b));
        // not restarted: the only spawns are the first two
        s.tick(secs(t0, 100), &mut io, &mut st);
        assert_eq!(io.spawned, [a, b]);
    }

    #[test]
    fn an_unkillable_service_is_given_up_after_two_graces() {
        let t0 = Instant::now();
        let (mut s, mut io, mut st) = (Services::new(cfg(4)), Fake::default(), Stats::default());
        s.start(want("/d/a"), t0, &mut io, &mut st);
        let a = io.spawned[0];
        io.stubborn.push(a);
        io.unkillable.push(a);
        s.stop(t0, &mut io);
        assert!(!s.stopped());
        s.tick(secs(t0, 2), &mut io, &mut st);
        io.deliver(&mut s, secs(t0, 2), &mut st);
        assert!(!s.stopped());
        s.tick(secs(t0, 4), &mut io, &mut st);
        assert!(s.stopped());
        assert_eq!(st.services_unkillable, 1);
        assert!(io.closed.contains(&a), "its pipe is closed");
        // if it ever exits, it is not ours any more (the loop logs it)
        assert!(!s.owns(a));
    }

    #[test]
    fn a_service_waiting_to_restart_is_dropped_by_a_stop() {
        let t0 = Instant::now();
        let (mut s, mut io, mut st) = (Services::new(cfg(4)), Fake::default(), Stats::default());
        s.start(want("/d/a"), t0, &mut io, &mut st);
        let a = io.spawned[0];
        io.alive.clear();
        s.output_closed(a, &mut io);
        s.exited(a, Exit::Code(3), t0, &mut io, &mut st);
        s.stop(t0, &mut io);
        assert!(s.stopped());
        s.tick(secs(t0, 10), &mut io, &mut st);
        assert_eq!(io.spawned.len(), 1);
    }

    #[test]
    fn max_services_refuses_one_more_and_counts_it() {
        let t0 = Instant::now();
        let (mut s, mut io, mut st) = (Services::new(cfg(2)), Fake::default(), Stats::default());
        for d in ["/d/a", "/d/b", "/d/c"] {
            s.start(want(d), t0, &mut io, &mut st);
        }
        assert_eq!(io.spawned.len(), 2);
        assert_eq!(st.services_failed, 1);
        // the same service again is not a second one
        s.start(want("/d/a"), t0, &mut io, &mut st);
        assert_eq!(io.spawned.len(), 2);
        assert_eq!(st.services_failed, 1);
    }

    #[test]
    fn a_moved_device_keeps_its_service_and_its_remove_stops_it() {
        let t0 = Instant::now();
        let (mut s, mut io, mut st) = (Services::new(cfg(4)), Fake::default(), Stats::default());
        s.start(want("/d/eth0"), t0, &mut io, &mut st);
        s.device_moved("/d/eth0", "/d/lan0");
        s.device_removed("/d/eth0", t0, &mut io);
        assert!(io.signals.is_empty());
        s.device_removed("/d/lan0", t0, &mut io);
        assert_eq!(io.signals, [(io.spawned[0], Kill::Term)]);
    }

    #[test]
    fn reconcile_stops_the_unwanted_and_starts_the_new() {
        let t0 = Instant::now();
        let (mut s, mut io, mut st) = (Services::new(cfg(4)), Fake::default(), Stats::default());
        s.start(want("/d/a"), t0, &mut io, &mut st);
        s.start(want("/d/b"), t0, &mut io, &mut st);
        let (a, b) = (io.spawned[0], io.spawned[1]);
        s.reconcile(vec![want("/d/b"), want("/d/c")], t0, &mut io, &mut st);
        assert_eq!(io.signals, [(a, Kill::Term)]);
        assert_eq!(io.spawned.len(), 3, "c started, b left alone");
        io.deliver(&mut s, t0, &mut st);
        let devs: Vec<_> = s.list(t0).into_iter().map(|l| l.devpath).collect();
        assert_eq!(devs, ["/d/b", "/d/c"]);
        assert!(s.owns(b));
    }

    #[test]
    fn output_is_logged_per_line_and_routed_by_pid() {
        let t0 = Instant::now();
        let (mut s, mut io, mut st) = (Services::new(cfg(4)), Fake::default(), Stats::default());
        s.start(want("/d/a"), t0, &mut io, &mut st);
        let a = io.spawned[0];
        assert!(s.output(a, b"one\ntwo\n", t0, &mut st));
        assert!(!s.output(a + 1, b"x\n", t0, &mut st));
        let many = "x\n".repeat(crate::linelog::LOG_LINES_PER_SEC as usize + 5);
        assert!(s.output(a, many.as_bytes(), t0, &mut st));
        assert_eq!(st.output_lines_suppressed, 7); // 2 lines were logged first
        assert!(s.deadline().is_some(), "a summary is due");
    }
}
