//! The one event loop: a `mio::Poll` that owns the uevent socket, the
//! signalfd, every handler process and its output pipe ([`Children`]), and
//! whatever the running command adds (stdout for `monitor`). Nothing in it
//! blocks, and no source can starve another.
//!
//! One turn of the loop (one wake-up) reads the clock once and serves, in
//! order, with a budget each:
//!
//! 1. the signalfd, read to its end (signals coalesce: at most one of each
//!    kind is pending); SIGCHLD reaps every exited child and tells the mode
//!    how each ended ([`Mode::exited`]);
//! 2. every handler pipe with data: at most [`PIPE_BUDGET`] bytes each
//!    ([`Mode::output`]), end of file ([`Mode::output_closed`]);
//! 3. the control socket ([`crate::control`], `run` only): new clients
//!    and at most [`control::REQUESTS_PER_TURN`] requests per client;
//! 4. the uevent socket: at most [`BATCH`] datagrams;
//! 5. the mode's timers ([`Mode::tick`]), with the same `now`; then the
//!    `settle` requests that may now be answered.
//!
//! Readiness is edge-triggered (mio), so a source left with data when its
//! budget ran out is remembered and the next poll does not wait. A flooding
//! handler therefore gets 16 KiB per turn, the socket 256 events, and
//! timeouts and SIGTERM are seen on every turn.
//!
//! What a command does with events is a [`Mode`]; the loop does the rest:
//! receive → check the sender → parse → count → hand to the mode.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};

use crate::control::{self, Request, Settles};
use crate::exec::{Exit, Kill, ProcIo, Words};
use crate::limits::RECV_BUFFER;
use crate::stats::{Ms, Scope, Stats};
use crate::sys::control::{ConnRecv, ConnSend, ControlConn, ControlListener};
use crate::sys::netlink::{Batch, BatchRecv, Recv, Sender, UeventSocket, RECV_BATCH};
use crate::sys::signals::{Sig, Signals};
use crate::sys::spawn::{self, PipeRead};
use crate::sys::sysfs::SysfsRoot;
use crate::uevent::Uevent;

/// Datagrams handled per drain before the loop looks at its other sources.
pub const BATCH: usize = 256;

/// Bytes read from one handler's output pipe per turn of the loop.
pub const PIPE_BUDGET: usize = 16 * 1024;

/// Tokens of handler pipes start here (below: the loop's and the mode's).
const FIRST_CHILD_TOKEN: usize = 1 << 20;

/// The socket's token.
pub const SOCKET: Token = Token(0);
/// The signalfd's token.
pub const SIGNALS: Token = Token(1);
/// The control socket's token; its clients follow.
pub const CONTROL: Token = Token(2);
/// The first token a [`Mode`] may use for its own sources.
pub const FIRST_MODE_TOKEN: usize = 16;

/// Whether the loop goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Keep going.
    Continue,
    /// Stop the loop (the mode has finished, or its output went away).
    Stop,
}

/// What the loop lends a mode while calling it.
pub struct Cx<'a> {
    /// The counters.
    pub stats: &'a mut Stats,
    /// To register and deregister the mode's own sources.
    pub registry: &'a Registry,
    /// The signalfd, for output that must wait without missing a signal.
    pub signals: BorrowedFd<'a>,
    /// Starts, signals and watches handler processes for the engine.
    pub procs: &'a mut Children,
    /// The time of this turn of the loop (read once per wake-up).
    pub now: Instant,
}

/// One process the loop started for the handler engine.
#[derive(Debug)]
struct Child {
    pid: i32,
    token: Token,
    /// Its stdout+stderr pipe, until end of file or the engine gives up.
    output: Option<OwnedFd>,
    /// Its exec-error pipe, read once it is reaped.
    exec_error: Option<OwnedFd>,
    /// Data may be waiting in `output` (edge-triggered: set by a readiness
    /// event, cleared by `WouldBlock`).
    readable: bool,
    reaped: bool,
}

/// The handler processes and pipes the loop owns; the engine's
/// [`ProcIo`]. Every call returns at once: starting a process does not wait
/// for its `execve` (a failure is read after it is reaped), and an
/// attribute write happens in a child of its own.
#[derive(Debug)]
pub struct Children {
    registry: Registry,
    sysfs: SysfsRoot,
    list: Vec<Child>,
    next_token: usize,
    /// Pids to serve this turn (kept to avoid allocating per turn).
    scratch: Vec<i32>,
    /// Pids whose output could not be watched (registration failed): the
    /// loop reports them closed at its next turn.
    unwatched: Vec<i32>,
    /// The `execve` pointer arrays, reused for every handler.
    exec_scratch: spawn::ExecScratch,
}

impl Children {
    fn new(registry: Registry) -> Children {
        Children {
            registry,
            sysfs: SysfsRoot::new(std::path::Path::new("/sys")),
            list: Vec::with_capacity(64),
            next_token: FIRST_CHILD_TOKEN,
            scratch: Vec::with_capacity(64),
            unwatched: Vec::new(),
            exec_scratch: spawn::ExecScratch::with_capacity(
                crate::limits::MAX_ARGS + crate::limits::MAX_FIELDS + 64,
            ),
        }
    }

    /// Reserves room for `n` processes at once (`--max-children`; each
    /// may leave a group behind, so twice that).
    pub fn reserve(&mut self, n: usize) {
        self.list.reserve(n * 2);
        self.scratch.reserve(n * 2);
    }

    /// Where `ATTR{}=` writes go (`--sysfs-root`).
    pub fn set_sysfs_root(&mut self, root: &std::path::Path) {
        self.sysfs = SysfsRoot::new(root);
    }

    fn by_pid(&mut self, pid: i32) -> Option<&mut Child> {
        self.list.iter_mut().find(|c| c.pid == pid)
    }

    fn mark_readable(&mut self, token: Token) -> bool {
        match self.list.iter_mut().find(|c| c.token == token) {
            Some(c) => {
                c.readable = true;
                true
            }
            None => token.0 >= FIRST_CHILD_TOKEN,
        }
    }

    fn any_readable(&self) -> bool {
        self.list.iter().any(|c| c.readable && c.output.is_some())
    }

    fn close_output_of(&mut self, pid: i32) {
        let fd = self.by_pid(pid).and_then(|c| c.output.take());
        if let Some(fd) = fd {
            let _ = self.registry.deregister(&mut SourceFd(&fd.as_raw_fd()));
        }
        self.forget(pid);
    }

    fn forget(&mut self, pid: i32) {
        self.list
            .retain(|c| !(c.pid == pid && c.reaped && c.output.is_none()));
    }

    fn add(&mut self, pid: i32, output: Option<OwnedFd>, exec_error: Option<OwnedFd>) {
        // A stale entry of a reaped child whose pid the kernel reused (its
        // pipe still held by an escaped process): retire it.
        if let Some(i) = self.list.iter().position(|c| c.pid == pid) {
            let old = self.list.swap_remove(i);
            if let Some(fd) = old.output {
                let _ = self.registry.deregister(&mut SourceFd(&fd.as_raw_fd()));
            }
        }
        let token = Token(self.next_token);
        self.next_token = self.next_token.wrapping_add(1).max(FIRST_CHILD_TOKEN);
        let output = output.and_then(|fd| {
            match self
                .registry
                .register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)
            {
                Ok(()) => Some(fd),
                Err(e) => {
                    warn!("handler [{pid}]: cannot watch its output ({e}); it is not logged");
                    self.unwatched.push(pid);
                    None
                }
            }
        });
        self.list.push(Child {
            pid,
            token,
            readable: output.is_some(),
            output,
            exec_error,
            reaped: false,
        });
    }
}

impl ProcIo for Children {
    fn spawn(
        &mut self,
        argv: Words<'_>,
        env: &[Words<'_>],
        creds: Option<(u32, u32)>,
    ) -> Result<i32, String> {
        let mut blocks: [&[u8]; 4] = [&[]; 4];
        if env.len() > blocks.len() {
            return Err("internal: more than 4 environment blocks".into());
        }
        for (b, w) in blocks.iter_mut().zip(env) {
            *b = w.block();
        }
        let blocks = &blocks[..env.len()];
        let sp = spawn::spawn(argv.block(), blocks, &mut self.exec_scratch, creds)
            .map_err(|e| e.to_string())?;
        self.add(sp.pid, Some(sp.output), Some(sp.exec_error));
        Ok(sp.pid)
    }

    fn write_attr(&mut self, devpath: &str, name: &str, value: &[u8]) -> Result<i32, String> {
        let pid = self
            .sysfs
            .spawn_write_attr(devpath, name, value)
            .map_err(|e| e.to_string())?;
        self.add(pid, None, None);
        Ok(pid)
    }

    fn signal_group(&mut self, pgid: i32, sig: Kill) -> bool {
        let sig = match sig {
            Kill::Probe => None,
            Kill::Term => Some(spawn::Sig::Term),
            Kill::Kill => Some(spawn::Sig::Kill),
        };
        match spawn::signal_group(pgid, sig) {
            Ok(alive) => alive,
            Err(e) => {
                warn!("signal to process group {pgid}: {e}");
                false
            }
        }
    }

    fn close_output(&mut self, pid: i32) {
        self.close_output_of(pid);
    }
}

impl crate::boot::BootIo for Children {
    fn procs(&mut self) -> &mut dyn ProcIo {
        self
    }

    fn load_firmware(&mut self, plan: &crate::firmware::Plan) -> Result<i32, String> {
        let pid = crate::sys::firmware::spawn_load(&plan.loading, &plan.data, &plan.candidates)
            .map_err(|e| e.to_string())?;
        self.add(pid, None, None);
        Ok(pid)
    }
}

/// What a command does with the events the loop receives.
pub trait Mode {
    /// Which counters the stats line shows.
    fn scope(&self) -> Scope;
    /// Called once before the loop starts, with the socket already bound.
    fn start(&mut self, _cx: &mut Cx<'_>) -> io::Result<()> {
        Ok(())
    }
    /// One accepted kernel event.
    fn event(&mut self, ev: &Uevent<'_>, cx: &mut Cx<'_>) -> Flow;
    /// False when the mode cannot take another event now: the loop stops
    /// reading the socket (the kernel's queue holds the rest) until it is true.
    fn has_room(&self) -> bool {
        true
    }
    /// The kernel dropped events for us (ENOBUFS). Called once the socket
    /// has been read to its end, so a recovery sees a quiet queue.
    fn overrun(&mut self, _cx: &mut Cx<'_>) {}
    /// The socket has been read to its end (after [`Mode::overrun`], if
    /// there was one).
    fn drained(&mut self, _cx: &mut Cx<'_>) {}
    /// True (once) if the loop should read the socket again and call
    /// [`Mode::drained`] even though it has not become readable.
    fn wants_drain(&mut self) -> bool {
        false
    }
    /// One of the mode's own sources is ready.
    fn ready(&mut self, _token: Token, _cx: &mut Cx<'_>) -> Flow {
        Flow::Continue
    }
    /// Bytes read from the output pipe of child `pid` (at most
    /// [`PIPE_BUDGET`] per turn).
    fn output(&mut self, _pid: i32, _data: &[u8], _cx: &mut Cx<'_>) {}
    /// The output pipe of child `pid` reached its end; the loop closed it.
    fn output_closed(&mut self, _pid: i32, _cx: &mut Cx<'_>) {}
    /// Child `pid` was reaped (what was in its pipe has been passed on).
    fn exited(&mut self, _pid: i32, _exit: Exit, _cx: &mut Cx<'_>) {}
    /// SIGUSR1, after the loop logged the counters: log what else the
    /// mode has to show (the runner lists its services).
    fn report(&self, _now: Instant) {}
    /// SIGHUP or SIGUSR2 (the loop handles SIGINT, SIGTERM, SIGUSR1 and
    /// SIGCHLD itself).
    fn signal(&mut self, _sig: Sig, _cx: &mut Cx<'_>) {}
    /// The earliest time [`Mode::tick`] must be called, if any.
    fn deadline(&self) -> Option<Instant> {
        None
    }
    /// Called after every wake-up with the current time.
    fn tick(&mut self, _now: Instant, _cx: &mut Cx<'_>) {}
    /// SIGINT or SIGTERM: begin a clean stop. The loop keeps calling
    /// [`Mode::tick`] and [`Mode::ready`] (not the socket) until this or a
    /// later [`Mode::stopped`] returns true.
    fn stop(&mut self, _cx: &mut Cx<'_>) {}
    /// True once the mode has nothing left running.
    fn stopped(&self) -> bool {
        true
    }
    /// True when no work waits or runs (a replay ends when its source is
    /// finished and the mode is idle).
    fn idle(&self) -> bool {
        true
    }
    /// CONTROL HOOK (issue 15): true when a `settle` may be answered: no
    /// job queued or running, no coldplug or resync pass pending.
    fn settled(&self) -> bool {
        self.idle()
    }
    /// CONTROL HOOK (issue 15): the jobs and recovery state for `status`.
    fn status(&self, _s: &mut control::Status) {}
    /// CONTROL HOOK (issue 15): the device table's record of `devpath`
    /// (`KEY=VALUE` lines into `out`); false if it has none.
    fn device(&self, _devpath: &str, _out: &mut String) -> bool {
        false
    }
}

/// Why the loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// SIGINT or SIGTERM.
    Signal(Sig),
    /// The mode asked to stop (e.g. `monitor`'s stdout was closed).
    Mode,
    /// The source ran out of events and the mode finished its work.
    Finished,
}

/// Counts and rate-limits one kind of warning: at most one line a second,
/// each saying how many were not logged.
#[derive(Debug, Default)]
struct Limiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl Limiter {
    /// Returns Some(number suppressed since the last line) if a line may be
    /// logged now.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(t) if now.duration_since(t) < Duration::from_secs(1) => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(core::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Receive → check → parse → count. Separate from the loop so that tests
/// and embedders can drive it and count its allocations (there are none).
pub struct Listener {
    socket: UeventSocket,
    /// The datagrams of the last `recvmmsg`; `next` is the first one not
    /// yet handled (a paused drain resumes there).
    batch: Batch,
    next: usize,
    /// The last `recvmmsg` returned fewer datagrams than it could take: the
    /// queue was empty then (see [`Listener::drain`]).
    short: bool,
    last_seqnum: Option<u64>,
    overrun_pending: bool,
    accept_injected: bool,
    log_rejected: Limiter,
    log_malformed: Limiter,
    log_truncated: Limiter,
}

/// How a drain ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drained {
    /// The socket is empty.
    Empty,
    /// [`BATCH`] datagrams were handled; more may be waiting.
    Batch,
    /// The mode has no room; more may be waiting.
    Paused,
    /// The mode asked to stop.
    Stop,
    /// The source has no more events, ever (a replay file's end).
    Finished,
}

/// Where events come from: the kernel's socket ([`Listener`]) or a
/// recorded file (`replay`).
pub trait Source {
    /// Hands events to `sink` (see [`Listener::drain`]).
    fn drain(&mut self, stats: &mut Stats, sink: &mut dyn Sink) -> io::Result<Drained>;
    /// The fd to poll for more events, if any.
    fn fd(&self) -> Option<RawFd>;
    /// True once after an overrun.
    fn take_overrun(&mut self) -> bool {
        false
    }
    /// The kernel's drop count for the socket, if there is one.
    fn kernel_drops(&self) -> Option<u64> {
        None
    }
    /// SEQNUM of the last event handed on, if any had one.
    fn last_seqnum(&self) -> Option<u64> {
        None
    }
}

impl Source for Listener {
    fn drain(&mut self, stats: &mut Stats, sink: &mut dyn Sink) -> io::Result<Drained> {
        Listener::drain(self, stats, sink)
    }
    fn fd(&self) -> Option<RawFd> {
        Some(self.socket.as_raw_fd())
    }
    fn take_overrun(&mut self) -> bool {
        Listener::take_overrun(self)
    }
    fn kernel_drops(&self) -> Option<u64> {
        self.socket.kernel_drops()
    }
    fn last_seqnum(&self) -> Option<u64> {
        self.last_seqnum
    }
}

/// Where [`Listener::drain`] puts the events it accepts.
pub trait Sink {
    /// False when no event can be taken now (asked before each receive).
    fn has_room(&self) -> bool {
        true
    }
    /// One accepted kernel event.
    fn deliver(&mut self, ev: &Uevent<'_>, stats: &mut Stats) -> Flow;
}

/// A [`Mode`] seen as the listener's [`Sink`].
struct ModeSink<'a, M> {
    mode: &'a mut M,
    registry: &'a Registry,
    signals: BorrowedFd<'a>,
    procs: &'a mut Children,
    now: Instant,
}

impl<M: Mode> Sink for ModeSink<'_, M> {
    fn has_room(&self) -> bool {
        self.mode.has_room()
    }
    fn deliver(&mut self, ev: &Uevent<'_>, stats: &mut Stats) -> Flow {
        let mut cx = Cx {
            stats,
            registry: self.registry,
            signals: self.signals,
            procs: self.procs,
            now: self.now,
        };
        self.mode.event(ev, &mut cx)
    }
}

impl Listener {
    /// Wraps an open socket; allocates the receive buffer.
    pub fn new(socket: UeventSocket) -> Listener {
        Listener {
            socket,
            batch: Batch::new(),
            next: 0,
            short: false,
            last_seqnum: None,
            overrun_pending: false,
            accept_injected: false,
            log_rejected: Limiter::default(),
            log_malformed: Limiter::default(),
            log_truncated: Limiter::default(),
        }
    }

    /// `--accept-injected`: also accept datagrams from port 0 and uid 0
    /// with any pid (see [`Sender::is_injected_by_root`]).
    pub fn accept_injected(&mut self, yes: bool) {
        self.accept_injected = yes;
    }

    /// The socket.
    pub fn socket(&self) -> &UeventSocket {
        &self.socket
    }

    /// The socket, mutably (for a resync's discard of queued events).
    pub fn socket_mut(&mut self) -> &mut UeventSocket {
        &mut self.socket
    }

    /// True if an overrun was seen and not yet taken by [`Listener::take_overrun`].
    pub fn take_overrun(&mut self) -> bool {
        core::mem::take(&mut self.overrun_pending)
    }

    /// Handles up to [`BATCH`] datagrams, handing each kernel event to
    /// `sink`, whose [`Sink::has_room`] is asked before each delivery.
    /// Datagrams come [`crate::sys::netlink::RECV_BATCH`] at a time from one
    /// `recvmmsg`; those not handled when the sink has no room stay in the
    /// batch for the next drain. Never allocates.
    ///
    /// A batch that came back short ends the drain as [`Drained::Empty`]
    /// without another `recvmmsg` to hear EAGAIN: the kernel fills a
    /// nonblocking `recvmmsg` until its queue is empty or an error, so a
    /// short batch means the queue was empty at that moment (an error met
    /// after some datagrams is kept for the next call). Whatever arrives
    /// later, a datagram or an overrun, wakes the socket's wait queue and
    /// so puts it back on epoll's ready list (edge-triggered epoll reports
    /// every wake-up that comes after the previous `epoll_wait` harvest;
    /// `fs/eventpoll.c`, `ep_poll_callback`). When events trickle in one at
    /// a time, this saves one system call per event. This holds only
    /// within one drain: a drain that pauses forgets the short batch (see
    /// there), because the polls during the pause take the wake-ups.
    pub fn drain(&mut self, stats: &mut Stats, sink: &mut dyn Sink) -> io::Result<Drained> {
        let mut handled = 0;
        loop {
            if self.next >= self.batch.len() {
                if core::mem::take(&mut self.short) {
                    self.next = 0;
                    self.batch.clear();
                    return Ok(Drained::Empty);
                }
                if handled >= BATCH {
                    return Ok(Drained::Batch);
                }
                self.next = 0;
                match self.socket.recv_batch(&mut self.batch)? {
                    BatchRecv::WouldBlock => return Ok(Drained::Empty),
                    BatchRecv::Received(n) => self.short = n < RECV_BATCH,
                    BatchRecv::Overrun => {
                        stats.overruns += 1;
                        self.overrun_pending = true;
                        if let Some(d) = self.socket.kernel_drops() {
                            stats.dropped = d;
                        }
                        warn!(
                            "overrun: the kernel dropped events for this socket (receive queue full, ENOBUFS); \
                             overruns={} dropped={} so far; raise --rcvbuf or net.core.rmem_max if this repeats",
                            stats.overruns, stats.dropped
                        );
                        continue;
                    }
                }
            }
            if !sink.has_room() {
                // A short batch says the queue was empty when it was read,
                // not when the pause ends: the wake-ups of what arrived
                // meanwhile are taken by the loop's polls during the
                // pause, so the drain that resumes must read the socket
                // again. Ending it on the old short batch left a full
                // queue unread for good: the kernel, congested, drops
                // everything after it without another ENOBUFS or wake-up.
                self.short = false;
                return Ok(Drained::Paused);
            }
            let i = self.next;
            self.next += 1;
            handled += 1;
            let (recv, bytes) = self.batch.get(i);
            match recv {
                Recv::Overrun | Recv::WouldBlock => {}
                Recv::Truncated { len, sender } => {
                    stats.received += 1;
                    stats.truncated += 1;
                    if let Some(n) = self.log_truncated.allow(Instant::now()) {
                        warn!(
                            "dropped a {len}-byte datagram larger than the {RECV_BUFFER}-byte buffer \
                             (from port {}, truncated={} so far, {n} not logged)",
                            sender.port, stats.truncated
                        );
                    }
                }
                Recv::Datagram { len, sender } => {
                    stats.received += 1;
                    let trusted = sender.is_kernel()
                        || (self.accept_injected && sender.is_injected_by_root());
                    if !trusted {
                        stats.rejected += 1;
                        if let Some(n) = self.log_rejected.allow(Instant::now()) {
                            warn!(
                                "rejected a datagram not sent by the kernel ({}; rejected={} so far, {n} not logged)",
                                SenderDisplay(sender),
                                stats.rejected
                            );
                        }
                        continue;
                    }
                    // The event is handled where it was parsed (no copy of
                    // its field array per event).
                    let last_seqnum = &mut self.last_seqnum;
                    let parsed = Uevent::parse_with(bytes, |ev| {
                        stats.accepted += 1;
                        if let Some(seq) = ev.seqnum() {
                            if let Some(last) = *last_seqnum {
                                if seq > last.saturating_add(1) {
                                    stats.seqnum_gaps += 1;
                                    debug!(
                                        "seqnum gap {last} -> {seq} (a hint only: other network \
                                         namespaces take sequence numbers too)"
                                    );
                                }
                            }
                            *last_seqnum = Some(seq);
                        }
                        sink.deliver(ev, stats)
                    });
                    match parsed {
                        Err(e) => {
                            stats.malformed += 1;
                            if let Some(n) = self.log_malformed.allow(Instant::now()) {
                                warn!(
                                    "dropped a malformed {len}-byte kernel datagram: {e} \
                                     (malformed={} so far, {n} not logged)",
                                    stats.malformed
                                );
                            }
                        }
                        Ok(Flow::Stop) => return Ok(Drained::Stop),
                        Ok(_) => {}
                    }
                }
            }
        }
    }
}

struct SenderDisplay(Sender);

impl core::fmt::Display for SenderDisplay {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "port {}", self.0.port)?;
        match self.0.creds {
            Some((pid, uid)) => write!(f, ", pid {pid}, uid {uid}"),
            None => write!(f, ", no credentials"),
        }
    }
}

/// A [`Cx`] from the daemon's fields, borrowing them one by one so that
/// `self.mode` stays free to be called.
macro_rules! cx {
    ($d:ident, $now:expr) => {
        Cx {
            stats: &mut $d.stats,
            registry: $d.poll.registry(),
            signals: $d.signals.as_fd(),
            procs: &mut $d.children,
            now: $now,
        }
    };
}

/// The loop and what it owns.
pub struct Daemon<M: Mode, S: Source = Listener> {
    poll: Poll,
    source: S,
    signals: Signals,
    children: Children,
    pipe_buf: Box<[u8]>,
    stats: Stats,
    mode: M,
    control: Option<Control>,
}

/// The control socket and its clients (`run --control`).
struct Control {
    listener: ControlListener,
    /// Client `i` has token `CONTROL + 1 + i`.
    conns: Vec<Option<ControlConn>>,
    /// Data may be waiting (edge-triggered, as for handler pipes).
    readable: Vec<bool>,
    listener_pending: bool,
    settles: Settles,
    buf: Box<[u8]>,
    answer: Vec<usize>,
    /// Clients dropped because they did not read their reply.
    dropped: u64,
    /// Connections refused: too many clients, or not root.
    refused: u64,
    /// When each client connected or last sent a request.
    last_heard: Vec<Instant>,
}

impl<M: Mode> Daemon<M, Listener> {
    /// A loop on the kernel's socket, which must already be bound (so
    /// nothing that happens from here on is missed).
    pub fn new(socket: UeventSocket, signals: Signals, mode: M) -> io::Result<Daemon<M>> {
        Daemon::with_source(Listener::new(socket), signals, mode)
    }
}

impl<M: Mode, S: Source> Daemon<M, S> {
    /// A loop on any event source.
    pub fn with_source(source: S, signals: Signals, mode: M) -> io::Result<Daemon<M, S>> {
        let poll = Poll::new()?;
        if let Some(fd) = source.fd() {
            poll.registry()
                .register(&mut SourceFd(&fd), SOCKET, Interest::READABLE)?;
        }
        poll.registry().register(
            &mut SourceFd(&signals.as_raw_fd()),
            SIGNALS,
            Interest::READABLE,
        )?;
        let children = Children::new(poll.registry().try_clone()?);
        Ok(Daemon {
            poll,
            source,
            signals,
            children,
            pipe_buf: vec![0u8; PIPE_BUDGET].into_boxed_slice(),
            stats: Stats::default(),
            mode,
            control: None,
        })
    }

    /// The counters so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The mode.
    pub fn mode(&self) -> &M {
        &self.mode
    }

    /// The mode, mutably.
    pub fn mode_mut(&mut self) -> &mut M {
        &mut self.mode
    }

    /// The event source, mutably.
    pub fn source_mut(&mut self) -> &mut S {
        &mut self.source
    }

    /// The handler processes (to set where `ATTR{}=` writes go and how
    /// many to reserve room for).
    pub fn children_mut(&mut self) -> &mut Children {
        &mut self.children
    }

    /// Serves `listener` (the control socket) from the next turn on.
    pub fn set_control(&mut self, listener: ControlListener) -> io::Result<()> {
        self.poll.registry().register(
            &mut SourceFd(&listener.as_raw_fd()),
            CONTROL,
            Interest::READABLE,
        )?;
        info!("control socket {}", listener.path().display());
        let conns = (0..control::MAX_CLIENTS).map(|_| None).collect();
        self.control = Some(Control {
            listener,
            conns,
            readable: vec![false; control::MAX_CLIENTS],
            listener_pending: true,
            settles: Settles::default(),
            buf: vec![0u8; control::MAX_REQUEST].into_boxed_slice(),
            answer: Vec::with_capacity(control::MAX_CLIENTS),
            dropped: 0,
            refused: 0,
            last_heard: vec![Instant::now(); control::MAX_CLIENTS],
        });
        Ok(())
    }

    /// Refreshes `dropped` from the kernel (for a final stats line).
    pub fn refresh_dropped(&mut self) {
        if let Some(d) = self.source.kernel_drops() {
            self.stats.dropped = d;
        }
    }

    /// Runs until SIGINT/SIGTERM (after the mode's clean stop) or until the
    /// mode asks to stop.
    pub fn run(&mut self) -> io::Result<Ending> {
        let mut events = Events::with_capacity(64);
        {
            let mut cx = cx!(self, Instant::now());
            self.mode.start(&mut cx)?;
        }
        // The socket may already hold events (it was bound before start).
        let mut socket_pending = true;
        let mut finished = false;
        let mut stopping: Option<Sig> = None;
        loop {
            let busy = (socket_pending && stopping.is_none() && self.mode.has_room())
                || self.children.any_readable()
                || self.control.as_ref().is_some_and(Control::pending);
            let timeout = if busy {
                Some(Duration::ZERO)
            } else {
                self.mode
                    .deadline()
                    .map(|d| d.saturating_duration_since(Instant::now()))
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            let mut signals_ready = false;
            for event in events.iter() {
                match event.token() {
                    SOCKET => socket_pending = true,
                    SIGNALS => signals_ready = true,
                    token if self.control_readable(token) => {}
                    token if self.children.mark_readable(token) => {}
                    token => {
                        let mut cx = cx!(self, now);
                        if self.mode.ready(token, &mut cx) == Flow::Stop {
                            return Ok(Ending::Mode);
                        }
                    }
                }
            }
            // 1. signals (a stop is seen on every turn)
            if signals_ready {
                if let Some(sig) = self.read_signals(now)? {
                    if stopping.is_none() {
                        info!("{sig}: stopping");
                        stopping = Some(sig);
                        let mut cx = cx!(self, now);
                        self.mode.stop(&mut cx);
                    }
                }
            }
            // 2. handler pipes, PIPE_BUDGET bytes each
            self.serve_pipes(now);
            // 3. the control socket
            if self.serve_control() {
                socket_pending = true;
            }
            // 4. the socket, BATCH datagrams
            if socket_pending && stopping.is_none() {
                let mut sink = ModeSink {
                    mode: &mut self.mode,
                    registry: self.poll.registry(),
                    signals: self.signals.as_fd(),
                    procs: &mut self.children,
                    now,
                };
                let drained = self.source.drain(&mut self.stats, &mut sink)?;
                match drained {
                    Drained::Empty => socket_pending = false,
                    Drained::Finished => {
                        socket_pending = false;
                        finished = true;
                    }
                    Drained::Batch | Drained::Paused => {}
                    Drained::Stop => return Ok(Ending::Mode),
                }
                if drained == Drained::Empty {
                    let mut cx = cx!(self, now);
                    if self.source.take_overrun() {
                        self.mode.overrun(&mut cx);
                    }
                    self.mode.drained(&mut cx);
                    if let Some(c) = self.control.as_mut() {
                        c.settles.drained();
                    }
                }
            }
            if self.mode.wants_drain() {
                socket_pending = true;
            }
            // 5. timers, then the settles that may be answered
            let mut cx = cx!(self, now);
            self.mode.tick(now, &mut cx);
            // a stop drops queued work and kills handlers: that is not
            // "handled"; the waiting tools get end-of-file when we exit
            if stopping.is_none() {
                self.answer_settles();
            }
            let turn = now.elapsed();
            let us = u64::try_from(turn.as_micros()).unwrap_or(u64::MAX);
            if us > self.stats.longest_turn_us {
                self.stats.longest_turn_us = us;
            }
            if let Some(sig) = stopping {
                if self.mode.stopped() {
                    return Ok(Ending::Signal(sig));
                }
            }
            if finished && self.mode.idle() {
                return Ok(Ending::Finished);
            }
        }
    }

    /// Reads up to [`PIPE_BUDGET`] bytes from each handler pipe that has
    /// data, and hands them to the mode; a pipe at its end is closed.
    fn serve_pipes(&mut self, now: Instant) {
        while let Some(pid) = self.children.unwatched.pop() {
            let mut cx = cx!(self, now);
            self.mode.output_closed(pid, &mut cx);
        }
        let mut pids = core::mem::take(&mut self.children.scratch);
        pids.clear();
        pids.extend(
            self.children
                .list
                .iter()
                .filter(|c| c.readable && c.output.is_some())
                .map(|c| c.pid),
        );
        for &pid in &pids {
            self.read_pipe(pid, now);
        }
        self.children.scratch = pids;
    }

    /// Reads one budget from the pipe of `pid`.
    fn read_pipe(&mut self, pid: i32, now: Instant) {
        let mut used = 0;
        while used < PIPE_BUDGET {
            let Some(c) = self.children.by_pid(pid) else {
                return;
            };
            let Some(fd) = c.output.as_ref() else {
                return;
            };
            match spawn::read_pipe(fd, &mut self.pipe_buf[..PIPE_BUDGET - used]) {
                PipeRead::Data(n) => {
                    used += n;
                    let mut cx = cx!(self, now);
                    self.mode.output(pid, &self.pipe_buf[..n], &mut cx);
                }
                PipeRead::WouldBlock => {
                    c.readable = false;
                    return;
                }
                PipeRead::End => {
                    self.children.close_output_of(pid);
                    let mut cx = cx!(self, now);
                    self.mode.output_closed(pid, &mut cx);
                    return;
                }
            }
        }
    }

    /// SIGCHLD: reaps every exited child; passes on what is left in its
    /// pipe (one budget) and how it ended.
    fn reap(&mut self, now: Instant) {
        loop {
            let (pid, how) = match spawn::reap() {
                Ok(Some(x)) => x,
                Ok(None) => return,
                Err(e) => {
                    warn!("waitpid: {}", e.desc());
                    return;
                }
            };
            let mut exit = match how {
                spawn::Exit::Code(c) => Exit::Code(c),
                spawn::Exit::Signal(s) => Exit::Signal(s),
            };
            if let Some(c) = self.children.by_pid(pid) {
                c.reaped = true;
                if let Some(errno) = c.exec_error.take().and_then(|fd| spawn::exec_error(&fd)) {
                    exit = Exit::NotStarted(io::Error::from_raw_os_error(errno).to_string());
                }
                if c.output.is_some() {
                    self.read_pipe(pid, now);
                }
                self.children.forget(pid);
            }
            let mut cx = cx!(self, now);
            self.mode.exited(pid, exit, &mut cx);
        }
    }

    /// Reads every pending signal; returns SIGINT/SIGTERM if one came.
    fn read_signals(&mut self, now: Instant) -> io::Result<Option<Sig>> {
        let mut stop = None;
        while let Some(sig) = self.signals.pending()? {
            match sig {
                Sig::Int | Sig::Term => stop = Some(sig),
                Sig::Usr1 => {
                    self.refresh_dropped();
                    self.stats.log_dropped = crate::sys::log::dropped();
                    info!("{}", self.stats.line(self.mode.scope()));
                    self.mode.report(now);
                }
                Sig::Chld => self.reap(now),
                other => {
                    let mut cx = cx!(self, now);
                    self.mode.signal(other, &mut cx);
                }
            }
        }
        Ok(stop)
    }
}

impl Control {
    /// A source of the control socket has work left from an earlier turn.
    fn pending(&self) -> bool {
        self.listener_pending
            || self
                .conns
                .iter()
                .zip(&self.readable)
                .any(|(c, &r)| c.is_some() && r)
    }

    fn close(&mut self, i: usize, registry: &Registry) {
        if let Some(c) = self.conns[i].take() {
            let _ = registry.deregister(&mut SourceFd(&c.as_raw_fd()));
        }
        self.readable[i] = false;
        self.settles.forget(i);
    }

    /// Every slot is taken: drops the client heard from longest ago, if it
    /// has been silent for [`control::IDLE_DROP`] and waits for no
    /// `settle`; its slot.
    fn drop_idle(&mut self, now: Instant, registry: &Registry) -> Option<usize> {
        let i = (0..control::MAX_CLIENTS)
            .filter(|&i| self.conns[i].is_some() && !self.settles.waiting_for(i))
            .filter(|&i| now.saturating_duration_since(self.last_heard[i]) >= control::IDLE_DROP)
            .min_by_key(|&i| self.last_heard[i])?;
        let conn = self.conns[i].as_ref()?;
        let _ = conn.send(b"error dropped: idle while every client slot was taken\n");
        self.dropped += 1;
        warn!(
            "control: dropped idle client pid {} (no request for {}) to make room (control_dropped={})",
            conn.pid,
            Ms(now.saturating_duration_since(self.last_heard[i])),
            self.dropped
        );
        self.close(i, registry);
        Some(i)
    }

    /// Sends `reply` to client `i`; one that does not read is dropped.
    fn reply(&mut self, i: usize, reply: &[u8], registry: &Registry) {
        let Some(c) = self.conns[i].as_ref() else {
            return;
        };
        if c.send(reply) == ConnSend::Failed {
            self.dropped += 1;
            warn!(
                "control: client pid {} does not read its replies; dropped (control_dropped={})",
                c.pid, self.dropped
            );
            self.close(i, registry);
        }
    }
}

impl<M: Mode, S: Source> Daemon<M, S> {
    /// Marks a control source readable; false if `token` is not one.
    fn control_readable(&mut self, token: Token) -> bool {
        let Some(c) = self.control.as_mut() else {
            return false;
        };
        if token == CONTROL {
            c.listener_pending = true;
            return true;
        }
        match token.0.checked_sub(CONTROL.0 + 1) {
            Some(i) if i < control::MAX_CLIENTS => {
                c.readable[i] = true;
                true
            }
            _ => false,
        }
    }

    /// Accepts clients and reads their requests, each within its budget.
    /// True if a `settle` came (the uevent socket must be read).
    fn serve_control(&mut self) -> bool {
        let Some(c) = self.control.as_mut() else {
            return false;
        };
        let registry = self.poll.registry();
        if c.listener_pending {
            c.listener_pending = false;
            for n in 0..=control::MAX_CLIENTS {
                if n == control::MAX_CLIENTS {
                    c.listener_pending = true; // budget spent: next turn
                    break;
                }
                let conn = match c.listener.accept() {
                    Ok(Some(conn)) => conn,
                    Ok(None) => break,
                    Err(e) => {
                        warn!("control: accept: {e}");
                        break;
                    }
                };
                if !conn.allowed() {
                    // said before closing, so the tool does not take it
                    // for a daemon restart and wait
                    let _ = conn.send(b"error refused: the control socket is for root only\n");
                    c.refused += 1;
                    warn!(
                        "control: refused pid {} uid {} (root only; control_refused={})",
                        conn.pid, conn.uid, c.refused
                    );
                    continue;
                }
                let now = Instant::now();
                let free = c.conns.iter().position(Option::is_none);
                let Some(i) = free.or_else(|| c.drop_idle(now, registry)) else {
                    c.refused += 1;
                    warn!(
                        "control: refused pid {}: {} clients already (control_refused={})",
                        conn.pid,
                        control::MAX_CLIENTS,
                        c.refused
                    );
                    continue;
                };
                let token = Token(CONTROL.0 + 1 + i);
                if let Err(e) =
                    registry.register(&mut SourceFd(&conn.as_raw_fd()), token, Interest::READABLE)
                {
                    warn!("control: cannot watch a client: {e}");
                    continue;
                }
                c.conns[i] = Some(conn);
                c.readable[i] = true;
                c.last_heard[i] = now;
            }
        }
        let mut settle = false;
        for i in 0..control::MAX_CLIENTS {
            if !c.readable[i] {
                continue;
            }
            for n in 0..=control::REQUESTS_PER_TURN {
                if n == control::REQUESTS_PER_TURN {
                    break; // still readable: next turn
                }
                let Some(conn) = c.conns[i].as_ref() else {
                    break;
                };
                let len = match conn.recv(&mut c.buf) {
                    ConnRecv::Msg(len) => len,
                    ConnRecv::WouldBlock => {
                        c.readable[i] = false;
                        break;
                    }
                    ConnRecv::Closed => {
                        c.close(i, registry);
                        break;
                    }
                };
                c.last_heard[i] = Instant::now();
                let reply = match Request::parse(&c.buf[..len]) {
                    Err(e) => format!("error {e}\n"),
                    Ok(Request::Settle) => {
                        c.settles.request(i);
                        settle = true;
                        continue;
                    }
                    Ok(Request::Status) => {
                        let mut st = control::Status {
                            seqnum: self.source.last_seqnum(),
                            ..control::Status::default()
                        };
                        self.mode.status(&mut st);
                        st.stats = format!(
                            "{} control_dropped={} control_refused={}",
                            self.stats.line(self.mode.scope()),
                            c.dropped,
                            c.refused
                        );
                        st.reply()
                    }
                    Ok(Request::Device(devpath)) => {
                        let mut out = String::from("ok\n");
                        if self.mode.device(devpath, &mut out) {
                            out
                        } else {
                            "unknown\n".into()
                        }
                    }
                };
                c.reply(i, reply.as_bytes(), registry);
            }
        }
        settle
    }

    /// Answers the `settle` requests whose drain is done, once the mode
    /// has settled.
    fn answer_settles(&mut self) {
        let Some(c) = self.control.as_mut() else {
            return;
        };
        if c.settles.is_empty() {
            return;
        }
        let mut answer = core::mem::take(&mut c.answer);
        c.settles.take_answerable(self.mode.settled(), &mut answer);
        if !answer.is_empty() {
            let reply = match self.source.last_seqnum() {
                Some(n) => format!("ok\nseqnum={n}\n"),
                None => "ok\n".to_string(),
            };
            for &i in &answer {
                c.reply(i, reply.as_bytes(), self.poll.registry());
            }
        }
        c.answer = answer;
    }
}
