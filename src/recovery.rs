//! Never lose a device: the device table kept in step with events, the
//! resync after an overrun, and coldplug at start.
//!
//! # The resync (after ENOBUFS)
//! The loop calls [`Recovery::overrun`] once the socket has been read to its
//! end (the kernel drops everything until its queue empties). Then:
//!
//! 1. read `/sys/kernel/uevent_seqnum` (s0), walk `/sys/devices`
//!    ([`crate::sys::walk`]), read it again (s1);
//! 2. go on reading the socket: every event that arrives is handled as
//!    usual, and if it is an add, remove or move its devpath is marked
//!    *touched*: the event is newer than (or as new as) what the walk saw,
//!    so for touched devices the events are the truth;
//! 3. when the socket is empty again ([`Recovery::drained`]): if another
//!    overrun happened meanwhile, walk again (at most
//!    [`MAX_RESYNC_ATTEMPTS`] walks, counted in `resync_retries`); if the
//!    walk raced with events (s0 != s1), re-check each touched device
//!    against sysfs, and while some disagree (an event still on its way)
//!    wait [`RECHECK_DELAY`] and look again, at most [`MAX_RECHECKS`]
//!    times (each counted in `resync_retries`); then accept, with a warning
//!    naming what still disagrees;
//! 4. diff the walk against the table, untouched devices only: present but
//!    unknown → a synthetic `add`; known but gone → a synthetic `remove`
//!    (with the keys of its last add); both through the same rules, with
//!    `HOTPLUGD_RESYNC=1`.
//!
//! The socket is read between every step; nothing here waits for anything
//! but the loop. A table that overflowed cannot say what is gone: the
//! resync is then add-only (logged, counted in `table_full`).
//!
//! # Coldplug (at start)
//! The socket is bound before the walk, so nothing plugged meanwhile is
//! missed; the same touched rule keeps anything from being handled twice.
//! `none` only fills the table (silently); `synthesize` dispatches a
//! synthetic `add` per device (`HOTPLUGD_COLDPLUG=1`); `trigger` writes
//! `add UUID` to each device's `uevent` file, [`TRIGGER_BATCH`] at a time,
//! waiting for their events before the next batch (so coldplug cannot
//! overrun its own socket), and skips a triggered `add` for a device an
//! event already added. Readiness is signalled when coldplug is done.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::devices::DeviceTable;
use crate::stats::Stats;
use crate::sys::walk::{self, Found};
use crate::uevent::Uevent;

/// Walks per resync before accepting one that saw another overrun.
pub const MAX_RESYNC_ATTEMPTS: u32 = 3;
/// Re-checks of devices touched by events during a walk that raced.
pub const MAX_RECHECKS: u32 = 3;
/// Wait before a re-check (an add's directory exists a moment before its
/// event is sent).
pub const RECHECK_DELAY: Duration = Duration::from_millis(50);
/// `uevent` writes of `--coldplug=trigger` in flight at once.
pub const TRIGGER_BATCH: usize = 16;
/// How long a triggered batch may take before the next is written anyway
/// (a device may vanish between the walk and the write).
pub const TRIGGER_WAIT: Duration = Duration::from_secs(2);
/// Devpaths remembered as touched during one resync; beyond it the resync
/// walks again.
pub const MAX_TOUCHED: usize = 65_536;

/// `--coldplug`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Coldplug {
    /// Only learn what is present (no handlers run for it).
    #[default]
    None,
    /// A synthetic `add` per present device.
    Synthesize,
    /// Ask the kernel to send each device's `add` again.
    Trigger,
}

impl Coldplug {
    /// Parses `none`, `synthesize` or `trigger`.
    pub fn parse(s: &str) -> Option<Coldplug> {
        match s {
            "none" => Some(Coldplug::None),
            "synthesize" => Some(Coldplug::Synthesize),
            "trigger" => Some(Coldplug::Trigger),
            _ => None,
        }
    }
}

/// Which subsystems the table follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Track {
    /// Every subsystem.
    All,
    /// Only these.
    Only(Vec<String>),
}

impl Track {
    /// True if events of `subsystem` are followed.
    pub fn tracks(&self, subsystem: &str) -> bool {
        match self {
            Track::All => true,
            Track::Only(v) => v.iter().any(|s| s == subsystem),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Baseline,
    Coldplug,
    Trigger,
    Overrun,
}

struct Pass {
    kind: Kind,
    attempt: u32,
    rechecks: u32,
    snapshot: Vec<Found>,
    raced: bool,
    touched: Vec<String>,
    overrun_again: bool,
    recheck_at: Option<Instant>,
    started: Instant,
    /// No drain of the socket has completed since the walk yet.
    fresh: bool,
}

struct Trigger {
    uuid: String,
    queue: VecDeque<String>,
    written: usize,
    seen: usize,
    batch_at: Option<Instant>,
}

/// See the module documentation.
pub struct Recovery {
    sysfs: PathBuf,
    track: Track,
    coldplug: Coldplug,
    table: DeviceTable,
    pass: Option<Pass>,
    trigger: Option<Trigger>,
    synthetic: VecDeque<Vec<u8>>,
    ready_due: bool,
    warned_full: bool,
    want_drain: bool,
    /// Test hook: `HOTPLUGD_TEST_WALK_DELAY_MS` holds the loop this long
    /// after each walk, so a test can provoke an overrun during a resync.
    test_delay: Option<Duration>,
    /// Devices given a synthetic add, with when: a kernel add for one of
    /// them within [`CONFIRM_WINDOW`] is the same add, seen late.
    unconfirmed: Vec<(String, Instant)>,
}

/// How long after a synthetic add a kernel `add` of the same device (without
/// SYNTH_UUID) is taken as that same add rather than handled again: a
/// device's directory appears a moment before its add event is sent, so a
/// walk can see it first.
pub const CONFIRM_WINDOW: Duration = Duration::from_secs(2);

/// What to do with a live event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Run it through the rules.
    Handle,
    /// A triggered `add` for a device an event already added: skip it.
    Duplicate,
}

impl Recovery {
    /// Allocates the device table.
    pub fn new(sysfs: PathBuf, track: Track, coldplug: Coldplug) -> Recovery {
        Recovery {
            sysfs,
            track,
            coldplug,
            table: DeviceTable::new(),
            pass: None,
            trigger: None,
            synthetic: VecDeque::new(),
            ready_due: false,
            warned_full: false,
            want_drain: false,
            test_delay: std::env::var("HOTPLUGD_TEST_WALK_DELAY_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .map(Duration::from_millis),
            unconfirmed: Vec::new(),
        }
    }

    /// The table.
    pub fn table(&self) -> &DeviceTable {
        &self.table
    }

    /// What is tracked.
    pub fn track(&self) -> &Track {
        &self.track
    }

    /// True while coldplug or a resync is under way (readiness waits).
    pub fn busy(&self) -> bool {
        self.pass.is_some() || self.trigger.is_some() || !self.synthetic.is_empty()
    }

    /// True once, when coldplug has finished (time to signal readiness).
    pub fn take_ready(&mut self) -> bool {
        if self.ready_due && !self.busy() {
            self.ready_due = false;
            return true;
        }
        false
    }

    /// At start: coldplug as configured. The socket is already bound.
    pub fn start(&mut self, stats: &mut Stats) {
        let kind = match self.coldplug {
            Coldplug::None => Kind::Baseline,
            Coldplug::Synthesize => Kind::Coldplug,
            Coldplug::Trigger => Kind::Trigger,
        };
        self.ready_due = true;
        self.begin(kind, 1, stats);
    }

    /// The rules changed what is tracked: learn the new set silently.
    pub fn retrack(&mut self, track: Track, stats: &mut Stats) {
        if track == self.track {
            return;
        }
        info!("tracked subsystems changed: learning the devices present again");
        self.track = track;
        self.table.clear();
        self.warned_full = false;
        self.begin(Kind::Baseline, 1, stats);
    }

    fn begin(&mut self, kind: Kind, attempt: u32, _stats: &mut Stats) {
        let started = Instant::now();
        let s0 = walk::uevent_seqnum(&self.sysfs);
        let mut snapshot = Vec::new();
        let track = self.track.clone();
        let rep = walk::walk(&self.sysfs, &|s| track.tracks(s), &mut snapshot);
        if let Some(d) = self.test_delay {
            std::thread::sleep(d);
        }
        let s1 = walk::uevent_seqnum(&self.sysfs);
        if rep.unreadable > 0 || rep.cut {
            warn!(
                "sysfs walk: {} unreadable entries skipped{}",
                rep.unreadable,
                if rep.cut {
                    " and the walk was cut at its bounds (MAX_WALK_DEPTH, MAX_WALK_DIRS)"
                } else {
                    ""
                }
            );
        }
        debug!(
            "sysfs walk ({kind:?}, attempt {attempt}): {} directories, {} devices, {} tracked, {:?}",
            rep.dirs,
            rep.devices,
            snapshot.len(),
            started.elapsed()
        );
        self.pass = Some(Pass {
            kind,
            attempt,
            rechecks: 0,
            snapshot,
            raced: s0.is_none() || s0 != s1,
            touched: Vec::new(),
            overrun_again: false,
            recheck_at: None,
            started,
            fresh: true,
        });
        self.want_drain = true;
    }

    /// ENOBUFS: the socket has been read to its end.
    pub fn overrun(&mut self, stats: &mut Stats) {
        match &mut self.pass {
            Some(p) => p.overrun_again = true,
            None => {
                stats.resyncs += 1;
                warn!(
                    "resync {}: events were lost; reading sysfs to find what changed",
                    stats.resyncs
                );
                self.begin(Kind::Overrun, 1, stats);
            }
        }
    }

    /// A live kernel event, before the rules see it: mark it touched, keep
    /// the table in step, and spot triggered duplicates.
    pub fn event(&mut self, ev: &Uevent<'_>) -> Verdict {
        // Only events that change whether a device is present make the
        // walk's view of it stale (a `change` or `bind` does not).
        let presence = matches!(ev.action(), "add" | "remove" | "move");
        if let (Some(p), true) = (&mut self.pass, presence) {
            for path in [Some(ev.devpath()), ev.get_str("DEVPATH_OLD")]
                .into_iter()
                .flatten()
            {
                if p.touched.len() >= MAX_TOUCHED {
                    p.overrun_again = true; // too much churn to reason about: walk again
                } else if !p.touched.iter().any(|t| t == path) {
                    p.touched.push(path.to_string());
                }
            }
        }
        let mut verdict = Verdict::Handle;
        if !self.unconfirmed.is_empty() {
            let now = Instant::now();
            self.unconfirmed
                .retain(|(_, at)| now.duration_since(*at) < CONFIRM_WINDOW);
            if ev.action() == "add" && ev.get("SYNTH_UUID").is_none() {
                if let Some(i) = self.unconfirmed.iter().position(|(d, _)| d == ev.devpath()) {
                    self.unconfirmed.swap_remove(i);
                    if self.table.contains(ev.devpath()) {
                        verdict = Verdict::Duplicate;
                    }
                }
            } else if ev.action() == "remove" {
                self.unconfirmed.retain(|(d, _)| d != ev.devpath());
            }
        }
        if let Some(t) = &mut self.trigger {
            if ev.get_str("SYNTH_UUID") == Some(t.uuid.as_str()) {
                t.seen += 1;
                if ev.action() == "add" && self.table.contains(ev.devpath()) {
                    verdict = Verdict::Duplicate;
                }
            }
        }
        if ev.subsystem().is_some_and(|s| self.track.tracks(s)) || ev.action() == "remove" {
            self.apply(ev);
        }
        verdict
    }

    /// A synthetic event being dispatched: keep the table in step.
    pub fn synthetic_event(&mut self, ev: &Uevent<'_>, stats: &mut Stats) {
        match ev.action() {
            "add" => {
                stats.synthetic_adds += 1;
                if self.unconfirmed.len() < MAX_TOUCHED {
                    self.unconfirmed
                        .push((ev.devpath().to_string(), Instant::now()));
                }
            }
            "remove" => stats.synthetic_removes += 1,
            _ => {}
        }
        self.apply(ev);
    }

    fn apply(&mut self, ev: &Uevent<'_>) {
        self.table.apply(ev);
        self.note_full();
    }

    /// Warns once when the table overflows.
    fn note_full(&mut self) {
        if self.table.overflowed() && !self.warned_full {
            self.warned_full = true;
            warn!(
                "device table full ({} devices, MAX_DEVICES={} / TABLE_BYTES={}): it no longer knows \
                 every device; a resync after an overrun will only add, not remove (--track fewer \
                 subsystems to avoid this)",
                self.table.len(),
                crate::devices::MAX_DEVICES,
                crate::devices::TABLE_BYTES
            );
        }
    }

    /// The socket is empty: finish a pass, or walk again.
    pub fn drained(&mut self, stats: &mut Stats) {
        let Some(p) = &mut self.pass else {
            self.trigger_more(stats);
            return;
        };
        if p.recheck_at.is_some() {
            return; // a re-check is scheduled; tick does it
        }
        if p.fresh {
            // This drain may have ended before the walk began: read the
            // socket to its end once more, so every event that raced with
            // the walk is seen (and touched) before the diff.
            p.fresh = false;
            self.want_drain = true;
            return;
        }
        if p.overrun_again {
            if p.attempt < MAX_RESYNC_ATTEMPTS {
                stats.resync_retries += 1;
                let (kind, attempt) = (p.kind, p.attempt + 1);
                warn!("events were lost again during the resync: walking sysfs again (attempt {attempt} of {MAX_RESYNC_ATTEMPTS})");
                self.begin(kind, attempt, stats);
                return;
            }
            warn!(
                "events were lost during each of {MAX_RESYNC_ATTEMPTS} walks; accepting the last \
                 (the next overrun resyncs again)"
            );
        }
        self.recheck(Instant::now(), stats);
    }

    /// Checks the touched devices of a raced walk; finishes the pass if they
    /// agree with sysfs (or the re-checks are used up).
    fn recheck(&mut self, now: Instant, stats: &mut Stats) {
        let Some(p) = &mut self.pass else { return };
        p.recheck_at = None;
        if p.raced {
            let disagree: Vec<&String> = p
                .touched
                .iter()
                .filter(|d| walk::present(&self.sysfs, d) != self.table.contains(d))
                .collect();
            if !disagree.is_empty() {
                if p.rechecks < MAX_RECHECKS {
                    p.rechecks += 1;
                    stats.resync_retries += 1;
                    debug!(
                        "{} devices changed during the walk and do not agree with sysfs yet; re-checking in {:?}",
                        disagree.len(),
                        RECHECK_DELAY
                    );
                    p.recheck_at = Some(now + RECHECK_DELAY);
                    return;
                }
                warn!(
                    "accepting the walk with {} devices whose events and sysfs still disagree (e.g. {}); \
                     their next event will correct them",
                    disagree.len(),
                    disagree[0]
                );
            }
        }
        let p = self.pass.take().expect("pass present");
        self.finish(p, stats);
    }

    fn finish(&mut self, p: Pass, stats: &mut Stats) {
        let touched = |d: &str| p.touched.iter().any(|t| t == d);
        let marker: &[u8] = match p.kind {
            Kind::Coldplug => b"HOTPLUGD_COLDPLUG=1",
            _ => b"HOTPLUGD_RESYNC=1",
        };
        let add_only = self.table.overflowed();
        let mut adds = 0usize;
        let mut removes = 0usize;
        let mut trigger = VecDeque::new();
        for f in &p.snapshot {
            if touched(&f.devpath) || self.table.contains(&f.devpath) {
                continue;
            }
            match p.kind {
                Kind::Baseline => {
                    self.table.insert_pairs(
                        &f.devpath,
                        core::iter::once((&b"SUBSYSTEM"[..], f.subsystem.as_bytes())).chain(
                            f.fields.iter().map(|l| {
                                let eq = l.iter().position(|&b| b == b'=').unwrap_or(l.len());
                                (&l[..eq], l.get(eq + 1..).unwrap_or(b""))
                            }),
                        ),
                    );
                }
                Kind::Trigger => trigger.push_back(f.devpath.clone()),
                Kind::Coldplug | Kind::Overrun => {
                    self.synthetic.push_back(datagram_add(f, marker));
                    adds += 1;
                }
            }
        }
        if p.kind == Kind::Overrun {
            if add_only {
                stats.table_full += 1;
                warn!(
                    "resync is add-only: the device table overflowed, so what is gone is unknown"
                );
            } else {
                let present: std::collections::HashSet<&str> =
                    p.snapshot.iter().map(|f| f.devpath.as_str()).collect();
                let gone: Vec<String> = self
                    .table
                    .devpaths()
                    .filter(|d| !present.contains(d) && !touched(d))
                    .map(String::from)
                    .collect();
                for d in gone {
                    self.synthetic
                        .push_back(datagram_remove(&self.table, &d, marker));
                    removes += 1;
                }
            }
        }
        self.note_full();
        match p.kind {
            Kind::Baseline => info!(
                "{} devices present in tracked subsystems ({:?})",
                self.table.len(),
                p.started.elapsed()
            ),
            Kind::Coldplug => info!(
                "coldplug: {adds} synthetic adds ({} devices, {:?})",
                self.table.len() + adds,
                p.started.elapsed()
            ),
            Kind::Overrun => info!(
                "resync {} done in {:?}: {adds} devices appeared, {removes} disappeared while events were lost",
                stats.resyncs,
                p.started.elapsed()
            ),
            Kind::Trigger => {
                info!(
                    "coldplug: asking the kernel to resend add for {} devices",
                    trigger.len()
                );
                self.trigger = Some(Trigger {
                    uuid: new_uuid(),
                    queue: trigger,
                    written: 0,
                    seen: 0,
                    batch_at: None,
                });
                self.trigger_more(stats);
            }
        }
    }

    /// `--coldplug=trigger`: the next batch once the last one's events have
    /// arrived (or [`TRIGGER_WAIT`] passed).
    fn trigger_more(&mut self, _stats: &mut Stats) {
        let Some(t) = &mut self.trigger else { return };
        let now = Instant::now();
        let batch_done =
            t.seen >= t.written || t.batch_at.is_some_and(|at| now >= at + TRIGGER_WAIT);
        if !batch_done {
            return;
        }
        if t.queue.is_empty() {
            info!(
                "coldplug: {} triggered, {} add events received",
                t.written, t.seen
            );
            self.trigger = None;
            return;
        }
        // count only this batch from here
        t.seen = 0;
        t.written = 0;
        for _ in 0..TRIGGER_BATCH {
            let Some(d) = t.queue.pop_front() else { break };
            match walk::trigger(&self.sysfs, &d, &t.uuid) {
                Ok(()) => t.written += 1,
                Err(e) => debug!("coldplug trigger {d}: {e} (gone?)"),
            }
        }
        t.batch_at = Some(now);
    }

    /// True once after a walk: the loop should read the socket to its end
    /// again (and call [`Recovery::drained`]) even if it is not readable.
    pub fn take_want_drain(&mut self) -> bool {
        core::mem::take(&mut self.want_drain)
    }

    /// The next synthetic event to dispatch.
    pub fn next_synthetic(&mut self) -> Option<Vec<u8>> {
        self.synthetic.pop_front()
    }

    /// True while synthetic events wait to be dispatched.
    pub fn has_synthetic(&self) -> bool {
        !self.synthetic.is_empty()
    }

    /// When [`Recovery::tick`] must run next.
    pub fn deadline(&self) -> Option<Instant> {
        let recheck = self.pass.as_ref().and_then(|p| p.recheck_at);
        let trig = self
            .trigger
            .as_ref()
            .and_then(|t| t.batch_at.map(|at| at + TRIGGER_WAIT));
        match (recheck, trig) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Timers: re-checks, trigger batches.
    pub fn tick(&mut self, now: Instant, stats: &mut Stats) {
        if self
            .pass
            .as_ref()
            .and_then(|p| p.recheck_at)
            .is_some_and(|at| now >= at)
        {
            self.recheck(now, stats);
        }
        if self.trigger.is_some() {
            self.trigger_more(stats);
        }
    }
}

/// `add@DEVPATH` built from a walked device, as the kernel would send it.
fn datagram_add(f: &Found, marker: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(256);
    d.extend_from_slice(b"add@");
    d.extend_from_slice(f.devpath.as_bytes());
    d.push(0);
    for part in [
        &b"ACTION=add"[..],
        &[b"DEVPATH=", f.devpath.as_bytes()].concat(),
        &[b"SUBSYSTEM=", f.subsystem.as_bytes()].concat(),
    ] {
        d.extend_from_slice(part);
        d.push(0);
    }
    for l in &f.fields {
        d.extend_from_slice(l);
        d.push(0);
    }
    d.extend_from_slice(marker);
    d.push(0);
    d
}

/// `remove@DEVPATH` with the keys the table kept from the device's add.
fn datagram_remove(t: &DeviceTable, devpath: &str, marker: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(256);
    d.extend_from_slice(b"remove@");
    d.extend_from_slice(devpath.as_bytes());
    d.push(0);
    d.extend_from_slice(b"ACTION=remove\0DEVPATH=");
    d.extend_from_slice(devpath.as_bytes());
    d.push(0);
    if let Some(fields) = t.fields(devpath) {
        for f in fields {
            d.extend_from_slice(f);
            d.push(0);
        }
    }
    d.extend_from_slice(marker);
    d.push(0);
    d
}

fn new_uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| format!("00000000-0000-4000-8000-{:012x}", std::process::id()))
}
