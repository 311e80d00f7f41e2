//! The one event loop: a `mio::Poll` that owns the uevent socket, the
//! signalfd, and whatever the running command adds (stdout for `monitor`;
//! handler pipes and timers for `run`). Nothing in it blocks.
//!
//! Duties, as mio documents them: every readable source is read until
//! `WouldBlock` (readiness is edge-triggered), and a wake-up may be spurious.
//! A drain of the socket stops after [`BATCH`] datagrams so signals and
//! handler pipes are served during a flood; the loop then polls again with a
//! zero timeout until the socket is empty.
//!
//! What a command does with events is a [`Mode`]; the loop does the rest:
//! receive → check the sender → parse → count → hand to the mode.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use nix::sys::signal::Signal;

use crate::limits::RECV_BUFFER;
use crate::stats::{Scope, Stats};
use crate::sys::netlink::{Recv, Sender, UeventSocket};
use crate::sys::signals::Signals;
use crate::uevent::Uevent;

/// Datagrams handled per drain before the loop looks at its other sources.
pub const BATCH: usize = 256;

/// The socket's token.
pub const SOCKET: Token = Token(0);
/// The signalfd's token.
pub const SIGNALS: Token = Token(1);
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
    /// A signal other than SIGINT, SIGTERM and SIGUSR1.
    fn signal(&mut self, _sig: Signal, _cx: &mut Cx<'_>) {}
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
}

/// Why the loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// SIGINT or SIGTERM.
    Signal(Signal),
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
    buf: Box<[u8]>,
    last_seqnum: Option<u64>,
    overrun_pending: bool,
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
        };
        self.mode.event(ev, &mut cx)
    }
}

impl Listener {
    /// Wraps an open socket; allocates the receive buffer.
    pub fn new(socket: UeventSocket) -> Listener {
        Listener {
            socket,
            buf: vec![0u8; RECV_BUFFER].into_boxed_slice(),
            last_seqnum: None,
            overrun_pending: false,
            log_rejected: Limiter::default(),
            log_malformed: Limiter::default(),
            log_truncated: Limiter::default(),
        }
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

    /// Receives up to [`BATCH`] datagrams, handing each kernel event to
    /// `sink`, whose [`Sink::has_room`] is asked before each receive.
    /// Never allocates.
    pub fn drain(&mut self, stats: &mut Stats, sink: &mut dyn Sink) -> io::Result<Drained> {
        for _ in 0..BATCH {
            if !sink.has_room() {
                return Ok(Drained::Paused);
            }
            match self.socket.recv(&mut self.buf)? {
                Recv::WouldBlock => return Ok(Drained::Empty),
                Recv::Overrun => {
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
                }
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
                    if !sender.is_kernel() {
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
                    match Uevent::parse(&self.buf[..len]) {
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
                        Ok(ev) => {
                            stats.accepted += 1;
                            if let Some(seq) = ev.seqnum() {
                                if let Some(last) = self.last_seqnum {
                                    if seq > last.saturating_add(1) {
                                        stats.seqnum_gaps += 1;
                                        debug!(
                                            "seqnum gap {last} -> {seq} (a hint only: other network \
                                             namespaces take sequence numbers too)"
                                        );
                                    }
                                }
                                self.last_seqnum = Some(seq);
                            }
                            if sink.deliver(&ev, stats) == Flow::Stop {
                                return Ok(Drained::Stop);
                            }
                        }
                    }
                }
            }
        }
        Ok(Drained::Batch)
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
    ($d:ident) => {
        Cx {
            stats: &mut $d.stats,
            registry: $d.poll.registry(),
            signals: $d.signals.as_fd(),
        }
    };
}

/// The loop and what it owns.
pub struct Daemon<M: Mode, S: Source = Listener> {
    poll: Poll,
    source: S,
    signals: Signals,
    stats: Stats,
    mode: M,
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
        Ok(Daemon {
            poll,
            source,
            signals,
            stats: Stats::default(),
            mode,
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
            let mut cx = cx!(self);
            self.mode.start(&mut cx)?;
        }
        // The socket may already hold events (it was bound before start).
        let mut socket_pending = true;
        let mut finished = false;
        let mut stopping: Option<Signal> = None;
        loop {
            let timeout = if socket_pending && stopping.is_none() && self.mode.has_room() {
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
            for event in events.iter() {
                match event.token() {
                    SOCKET => socket_pending = true,
                    SIGNALS => {
                        if let Some(sig) = self.read_signals()? {
                            if stopping.is_none() {
                                info!("{sig}: stopping");
                                stopping = Some(sig);
                                let mut cx = cx!(self);
                                self.mode.stop(&mut cx);
                            }
                        }
                    }
                    token => {
                        let mut cx = cx!(self);
                        if self.mode.ready(token, &mut cx) == Flow::Stop {
                            return Ok(Ending::Mode);
                        }
                    }
                }
            }
            if socket_pending && stopping.is_none() {
                let mut sink = ModeSink {
                    mode: &mut self.mode,
                    registry: self.poll.registry(),
                    signals: self.signals.as_fd(),
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
                    let mut cx = cx!(self);
                    if self.source.take_overrun() {
                        self.mode.overrun(&mut cx);
                    }
                    self.mode.drained(&mut cx);
                }
            }
            if self.mode.wants_drain() {
                socket_pending = true;
            }
            let now = Instant::now();
            let mut cx = cx!(self);
            self.mode.tick(now, &mut cx);
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

    /// Reads every pending signal; returns SIGINT/SIGTERM if one came.
    fn read_signals(&mut self) -> io::Result<Option<Signal>> {
        let mut stop = None;
        while let Some(sig) = self.signals.pending()? {
            match sig {
                Signal::SIGINT | Signal::SIGTERM => stop = Some(sig),
                Signal::SIGUSR1 => {
                    self.refresh_dropped();
                    self.stats.log_dropped = crate::sys::log::dropped();
                    info!("{}", self.stats.line(self.mode.scope()));
                }
                other => {
                    let mut cx = cx!(self);
                    self.mode.signal(other, &mut cx);
                }
            }
        }
        Ok(stop)
    }
}
