//! Never lose a device: the device table kept in step with events, the
//! resync after an overrun, and coldplug at start.
//!
//! # The resync (after ENOBUFS)
//! The loop calls [`Recovery::overrun`] once the socket has been read to its
//! end (the kernel drops everything until its queue empties). Then:
//!
//! 1. read `/sys/kernel/uevent_seqnum` (s0), walk `/sys/devices`
//!    [`WALK_BUDGET`] directories per wake-up of the loop ([`Recovery::tick`];
//!    [`Recovery::deadline`] is "now" while the walk is under way), read
//!    it again (s1);
//! 2. go on reading the socket, during the walk and after it: every event
//!    that arrives is handled as usual, and if it is an add, remove or move
//!    its devpath is marked *touched*: the event is newer than (or as new
//!    as) what the walk saw, so for touched devices the events are the
//!    truth;
//! 3. when the socket is empty again ([`Recovery::drained`]): if another
//!    overrun happened meanwhile, walk again (at most
//!    [`MAX_RESYNC_ATTEMPTS`] walks, counted in `resync_retries`; after
//!    that the last walk is used and another resync follows once its
//!    synthetic events are dispatched, so no overrun is ever left
//!    unanswered); if the
//!    walk raced with events (s0 != s1), re-check the touched devices the
//!    table or the walk knows against sysfs, and while some disagree (an
//!    event still on its way) wait [`RECHECK_DELAY`] and look again, at
//!    most [`MAX_RECHECKS`] times (each counted in `resync_retries`); then
//!    accept, with a warning naming what still disagrees;
//! 4. diff the walk against the table, untouched devices only: present but
//!    unknown → a synthetic `add`; known but gone → a synthetic `remove`
//!    (with the keys of its last add); both through the same rules, with
//!    `HOTPLUGD_RESYNC=1`. A device the walk could not check (under a
//!    subtree it could not read, or anywhere if the walk was cut: see
//!    [`WalkReport`]) is not known gone: no remove, counted in
//!    `resync_unchecked`, with a warning.
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
//!
//! # What it leaves to others
//! No I/O here: sysfs comes through [`SysfsWalk`] (the daemon's is
//! `sys::walk::SysfsWalker`), synthetic events leave as datagrams
//! ([`Recovery::next_synthetic`]) for the runner to dispatch. A SIGHUP that
//! changes the tracked subsystems ([`Recovery::retrack`]) during a pass
//! waits for the pass to end. The clock is read for the start of a pass
//! and the confirm window of synthetic adds; timers run off the `now`
//! given to [`Recovery::tick`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::devices::DeviceTable;
use crate::stats::{Ms, Stats};
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
/// walks again. The set is allocated once, for this many (1 MiB of slots
/// and 256 KiB listing those in use, committed by the kernel only as it
/// fills: an idle daemon holds none of it).
pub const MAX_TOUCHED: usize = 65_536;
/// Directories the walk reads per wake-up of the loop: a pass never keeps
/// the socket, the signals or the handlers waiting for a whole tree (a
/// directory, with its device's `uevent` read, cost ~30 µs on a 2-core VM:
/// ~8 ms a step; `cargo bench --bench resync`).
pub const WALK_BUDGET: usize = 256;
/// Subtrees a walk names as not read; beyond it the walk reports itself
/// cut (and a resync synthesises no remove at all).
pub const MAX_UNREAD_SUBTREES: usize = 64;

/// A device found by the walk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// `/devices/...`
    pub devpath: String,
    /// The name its `subsystem` link points to.
    pub subsystem: String,
    /// The `KEY=VALUE` lines of its `uevent` file.
    pub fields: Vec<Vec<u8>>,
}

/// What a walk saw, and what it could not see.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalkReport {
    /// Directories visited.
    pub dirs: usize,
    /// Devices found (tracked or not).
    pub devices: usize,
    /// Directories or `uevent` files that could not be read (skipped).
    pub unreadable: usize,
    /// The devpaths of the subtrees not read (at most
    /// [`MAX_UNREAD_SUBTREES`]): unreadable directories, devices whose
    /// `uevent` could not be read, directories below the depth bound.
    /// Whether a device under one of them is present is unknown.
    pub unread: Vec<String>,
    /// True if the walk missed parts of the tree it does not name in
    /// `unread` (it hit its directory bound, or `unread` was full): then
    /// nothing absent from the walk is known to be gone.
    pub cut: bool,
}

impl WalkReport {
    /// Notes a subtree that was not read.
    pub fn not_read(&mut self, devpath: &str) {
        if self.unread.len() < MAX_UNREAD_SUBTREES {
            self.unread.push(devpath.to_string());
        } else {
            self.cut = true;
        }
    }

    /// True if the walk cannot tell whether `devpath` is present: it was
    /// cut, or `devpath` lies in (or is) a subtree it did not read.
    pub fn unchecked(&self, devpath: &str) -> bool {
        self.cut
            || self.unread.iter().any(|u| {
                devpath
                    .strip_prefix(u.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
    }
}

/// Sysfs as recovery needs it, so that recovery does no I/O itself: an
/// incremental walk of `devices/`, the kernel's event counter, one
/// device's presence, and the `uevent` write of `--coldplug=trigger`. The
/// daemon's is `crate::sys::walk::SysfsWalker`; tests use a fake.
pub trait SysfsWalk {
    /// Starts a walk for the devices of the subsystems `track` follows
    /// (forgetting any walk under way).
    fn begin(&mut self, track: &Track);
    /// Reads at most `budget` more directories, pushing each tracked
    /// device found into `out`; the report once the walk is complete.
    fn step(&mut self, budget: usize, out: &mut Vec<Found>) -> Option<WalkReport>;
    /// `kernel/uevent_seqnum`: the last SEQNUM the kernel gave out.
    fn uevent_seqnum(&mut self) -> Option<u64>;
    /// True if the device still has its directory (and `uevent` file).
    fn present(&mut self, devpath: &str) -> bool;
    /// Asks the kernel to send the device's `add` again, marked with
    /// `SYNTH_UUID=uuid`.
    fn trigger(&mut self, devpath: &str, uuid: &str) -> std::io::Result<()>;
    /// A new random UUID (for `SYNTH_UUID`).
    fn uuid(&mut self) -> String;
}

/// The set of [`touch_key`]s, for up to a capacity fixed when made.
struct TouchedSet {
    /// Open addressing over zeroed slots (0 = empty): the kernel commits a
    /// page of it only when a key lands there, so an idle daemon holds none.
    slots: Box<[u64]>,
    /// The slots in use, so that a clear writes only those.
    used: Vec<u32>,
    shift: u32,
    cap: usize,
}

impl TouchedSet {
    fn new(cap: usize) -> TouchedSet {
        let n = (cap * 2).next_power_of_two();
        TouchedSet {
            slots: vec![0u64; n].into_boxed_slice(),
            used: Vec::with_capacity(cap),
            shift: 64 - n.trailing_zeros(),
            cap,
        }
    }

    /// The slot holding `key`, or the empty one where it would go.
    fn slot(&self, key: u64) -> usize {
        let mask = self.slots.len() - 1;
        // Fibonacci hashing: the high bits of the product, well spread.
        let mut i = (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize;
        while self.slots[i] != 0 && self.slots[i] != key {
            i = (i + 1) & mask;
        }
        i
    }

    fn contains(&self, key: u64) -> bool {
        self.slots[self.slot(key)] == key
    }

    /// Adds `key`; false if the set is full (and `key` not in it).
    fn insert(&mut self, key: u64) -> bool {
        let i = self.slot(key);
        if self.slots[i] == key {
            return true;
        }
        if self.used.len() >= self.cap {
            return false;
        }
        self.slots[i] = key;
        self.used.push(i as u32);
        true
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.used.len()
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.cap
    }

    fn clear(&mut self) {
        for &i in &self.used {
            self.slots[i as usize] = 0;
        }
        self.used.clear();
    }
}

/// FNV-1a, 64 bits: the touched set holds these, not the devpaths (a
/// collision among 65,536 devpaths has a chance of about 1 in 10^10; its
/// cost would be one device left to its next event). Never 0 (the touched
/// set's empty slot).
fn touch_key(devpath: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in devpath.as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(1)
}

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

/// Where a pass is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The walk is under way: [`Recovery::tick`] reads [`WALK_BUDGET`]
    /// more directories per wake-up of the loop.
    Walking,
    /// Debug builds only: the test hook holds the walk's end until then.
    Held(Instant),
    /// The walk is done: waiting for the socket to drain, then re-checks.
    Walked,
}

struct Pass {
    kind: Kind,
    attempt: u32,
    phase: Phase,
    rechecks: u32,
    snapshot: Vec<Found>,
    report: WalkReport,
    /// `uevent_seqnum` before the walk.
    s0: Option<u64>,
    raced: bool,
    overrun_again: bool,
    recheck_at: Option<Instant>,
    started: Instant,
    /// No drain of the socket has completed since the walk yet.
    fresh: bool,
    /// A retrack's learn pass: the subsystems tracked before it. Their
    /// devices are in the table already and are not learnt silently (a
    /// device of theirs missing from the table is left to a resync).
    kept: Option<Track>,
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
    sysfs: Box<dyn SysfsWalk>,
    track: Track,
    /// A retrack that came during a pass: applied when the pass ends.
    pending_track: Option<Track>,
    /// Events were lost during a pass that does not diff (a learn pass, a
    /// coldplug), or while synthetic events were still queued: a resync
    /// follows once nothing is under way and the queue is empty.
    resync_due: bool,
    /// When `resync_due` was set (a deadline already past).
    resync_due_at: Option<Instant>,
    /// The time of the loop's turn, given by every entry point: recovery
    /// never reads the clock itself.
    now: Instant,
    coldplug: Coldplug,
    table: DeviceTable,
    pass: Option<Pass>,
    /// The devpaths touched during the pass, as [`touch_key`]s; capacity
    /// for [`MAX_TOUCHED`] reserved once.
    touched: TouchedSet,
    trigger: Option<Trigger>,
    synthetic: VecDeque<Vec<u8>>,
    ready_due: bool,
    warned_full: bool,
    want_drain: bool,
    /// Test hook (debug builds and unit tests only): `HOTPLUGD_TEST_WALK_DELAY_MS` holds
    /// each walk's end this long (the loop goes on serving everything
    /// else), so a test can make events arrive, or be lost, while a pass
    /// is under way.
    #[cfg(any(test, debug_assertions))]
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
    /// Allocates the device table and the touched set; `sysfs` does the
    /// walks.
    pub fn new(
        sysfs: Box<dyn SysfsWalk>,
        track: Track,
        coldplug: Coldplug,
        now: Instant,
    ) -> Recovery {
        Recovery {
            sysfs,
            track,
            pending_track: None,
            resync_due: false,
            resync_due_at: None,
            now,
            coldplug,
            table: DeviceTable::new(),
            pass: None,
            touched: TouchedSet::new(MAX_TOUCHED),
            trigger: None,
            synthetic: VecDeque::new(),
            ready_due: false,
            warned_full: false,
            want_drain: false,
            #[cfg(any(test, debug_assertions))]
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
    pub fn start(&mut self, now: Instant, stats: &mut Stats) {
        self.now = now;
        let kind = match self.coldplug {
            Coldplug::None => Kind::Baseline,
            Coldplug::Synthesize => Kind::Coldplug,
            Coldplug::Trigger => Kind::Trigger,
        };
        self.ready_due = true;
        self.begin(kind, 1, stats);
    }

    /// The rules changed what is tracked: learn the new set silently. During
    /// a pass (coldplug, a resync, a trigger) this waits until the pass is
    /// over: starting afresh would drop the synthetic events it owes.
    pub fn retrack(&mut self, track: Track, now: Instant, stats: &mut Stats) {
        self.now = now;
        if self.pass.is_some() || self.trigger.is_some() {
            if track == self.track {
                self.pending_track = None;
            } else {
                info!("tracked subsystems changed: learning them once the pass under way is over");
                self.pending_track = Some(track);
            }
            return;
        }
        if track == self.track {
            return;
        }
        info!("tracked subsystems changed: learning the devices of the newly tracked ones");
        // Keep what is known of subsystems still tracked (their events kept
        // the table right; a resync diffs them), forget the others, learn
        // the new ones.
        let gone: Vec<String> = self
            .table
            .devpaths()
            .filter(|d| {
                !self
                    .table
                    .fields(d)
                    .and_then(|mut f| f.find_map(|l| l.strip_prefix(b"SUBSYSTEM=")))
                    .and_then(|s| core::str::from_utf8(s).ok())
                    .is_some_and(|s| track.tracks(s))
            })
            .map(String::from)
            .collect();
        for d in &gone {
            self.table.remove(d);
        }
        let old = core::mem::replace(&mut self.track, track);
        self.warned_full = false;
        self.begin(Kind::Baseline, 1, stats);
        if let Some(p) = &mut self.pass {
            p.kept = Some(old);
        }
    }

    /// A pass is over: resync if events were lost during it, then apply a
    /// retrack that waited for it.
    fn passed(&mut self, stats: &mut Stats) {
        if self.pass.is_none() && self.trigger.is_none() {
            if self.resync_due {
                if !self.synthetic.is_empty() {
                    return; // the synthetic events owed first (tick comes back)
                }
                self.resync_due = false;
                self.resync_due_at = None;
                stats.resyncs += 1;
                warn!(
                    "resync {}: events were lost during a pass that does not diff (or with \
                     synthetic events still queued); reading sysfs to find what changed",
                    stats.resyncs
                );
                self.begin(Kind::Overrun, 1, stats);
                return;
            }
            if let Some(t) = self.pending_track.take() {
                self.retrack(t, self.now, stats);
            }
        }
    }

    /// Starts a pass: the walk itself runs in [`Recovery::tick`].
    fn begin(&mut self, kind: Kind, attempt: u32, _stats: &mut Stats) {
        self.sysfs.begin(&self.track);
        self.touched.clear();
        self.pass = Some(Pass {
            kind,
            attempt,
            phase: Phase::Walking,
            rechecks: 0,
            snapshot: Vec::new(),
            report: WalkReport::default(),
            s0: self.sysfs.uevent_seqnum(),
            raced: false,
            overrun_again: false,
            recheck_at: None,
            started: self.now,
            fresh: true,
            kept: None,
        });
    }

    #[cfg(any(test, debug_assertions))]
    fn test_delay(&self) -> Option<Duration> {
        self.test_delay
    }

    #[cfg(not(any(test, debug_assertions)))]
    fn test_delay(&self) -> Option<Duration> {
        None
    }

    /// Drives the walk: one budget of directories, then, once it is
    /// complete (and any test hold is over), the check of the event counter.
    fn walk_on(&mut self, now: Instant) {
        let hold = self.test_delay();
        let Some(p) = &mut self.pass else { return };
        match p.phase {
            Phase::Walking => match self.sysfs.step(WALK_BUDGET, &mut p.snapshot) {
                None => return,
                Some(rep) => {
                    p.report = rep;
                    if let Some(d) = hold {
                        p.phase = Phase::Held(now + d);
                        return;
                    }
                }
            },
            Phase::Held(until) if now >= until => {}
            Phase::Held(_) | Phase::Walked => return,
        }
        p.phase = Phase::Walked;
        let s1 = self.sysfs.uevent_seqnum();
        p.raced = p.s0.is_none() || p.s0 != s1;
        let rep = &p.report;
        if rep.unreadable > 0 || rep.cut || !rep.unread.is_empty() {
            warn!(
                "sysfs walk: {} unreadable entries skipped{}{}",
                rep.unreadable,
                match rep.unread.first() {
                    Some(u) => format!(", {} subtrees not read (e.g. {u})", rep.unread.len()),
                    None => String::new(),
                },
                if rep.cut {
                    " and the walk was cut at its bounds (MAX_WALK_DIRS, MAX_UNREAD_SUBTREES)"
                } else {
                    ""
                }
            );
        }
        debug!(
            "sysfs walk ({:?}, attempt {}): {} directories, {} devices, {} tracked, {}",
            p.kind,
            p.attempt,
            rep.dirs,
            rep.devices,
            p.snapshot.len(),
            Ms(now.saturating_duration_since(p.started))
        );
        self.want_drain = true;
    }

    /// ENOBUFS: the socket has been read to its end.
    pub fn overrun(&mut self, now: Instant, stats: &mut Stats) {
        self.now = now;
        match &mut self.pass {
            Some(p) => p.overrun_again = true,
            // synthetic events still queued: they would be diffed as
            // unknown; resync once they are dispatched
            None if !self.synthetic.is_empty() || self.trigger.is_some() => {
                self.resync_due = true;
                self.resync_due_at.get_or_insert(self.now);
            }
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
    pub fn event(&mut self, ev: &Uevent<'_>, now: Instant) -> Verdict {
        self.now = now;
        // Only events that change whether a device is present make the
        // walk's view of it stale (a `change` or `bind` does not).
        let presence = matches!(ev.action(), "add" | "remove" | "move");
        if let (Some(p), true) = (&mut self.pass, presence) {
            for path in [Some(ev.devpath()), ev.get_str("DEVPATH_OLD")]
                .into_iter()
                .flatten()
            {
                let key = touch_key(path);
                if !self.touched.insert(key) {
                    p.overrun_again = true; // too much churn to reason about: walk again
                }
            }
        }
        let mut verdict = Verdict::Handle;
        if !self.unconfirmed.is_empty() {
            let now = self.now;
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

    /// After the rules ran on a device's event (not a remove): its record
    /// becomes what the event ended with (`fields`: the kernel's keys with
    /// the `ENV{}` values, links, tags and link priority the rules gave).
    /// Only for a device the table holds (a tracked one); false if it could
    /// not be stored (see [`DeviceTable::insert_pairs`]).
    pub fn remember<'f>(
        &mut self,
        devpath: &str,
        fields: impl Iterator<Item = (&'f [u8], &'f [u8])>,
    ) -> bool {
        if !self.table.contains(devpath) {
            return false;
        }
        let stored = self.table.insert_pairs(devpath, fields);
        self.note_full();
        stored
    }

    /// A synthetic event being dispatched: keep the table in step.
    pub fn synthetic_event(&mut self, ev: &Uevent<'_>, now: Instant, stats: &mut Stats) {
        self.now = now;
        match ev.action() {
            "add" => {
                stats.synthetic_adds += 1;
                if self.unconfirmed.len() < MAX_TOUCHED {
                    self.unconfirmed.push((ev.devpath().to_string(), self.now));
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
    pub fn drained(&mut self, now: Instant, stats: &mut Stats) {
        self.now = now;
        let Some(p) = &mut self.pass else {
            self.trigger_more(stats);
            return;
        };
        if p.phase != Phase::Walked {
            return; // the walk is under way; tick drives it
        }
        if p.recheck_at.is_some() {
            return; // a re-check is scheduled; tick does it
        }
        if p.fresh {
            // This drain may have ended before the walk ended: read the
            // socket to its end once more, so every event that raced with
            // the walk is seen (and touched) before the diff.
            p.fresh = false;
            self.want_drain = true;
            return;
        }
        if p.overrun_again && p.kind != Kind::Overrun {
            // A learn pass or a coldplug does not diff against what was
            // known: walking it again would absorb the lost events
            // silently. Finish it, then resync against the table.
            p.overrun_again = false;
            self.resync_due = true;
            self.resync_due_at.get_or_insert(self.now);
        }
        if p.overrun_again {
            if p.attempt < MAX_RESYNC_ATTEMPTS {
                stats.resync_retries += 1;
                let (kind, attempt) = (p.kind, p.attempt + 1);
                warn!("events were lost again during the resync: walking sysfs again (attempt {attempt} of {MAX_RESYNC_ATTEMPTS})");
                self.begin(kind, attempt, stats);
                return;
            }
            // The last walk is used (its synthetic events are dispatched,
            // so a storm still makes progress), but the events lost during
            // it may be ones no walk saw: resync again once they are
            // dispatched. Waiting for "the next overrun" would leave them
            // lost for good if the storm ended with this one.
            warn!(
                "events were lost during each of {MAX_RESYNC_ATTEMPTS} walks; using the last, then \
                 resyncing again for what was lost during it"
            );
            self.resync_due = true;
            self.resync_due_at.get_or_insert(self.now);
        }
        self.recheck(self.now, stats);
    }

    /// Checks the touched devices of a raced walk; finishes the pass if they
    /// agree with sysfs (or the re-checks are used up). The devices checked
    /// are those the diff would otherwise judge: touched, and in the table
    /// or the walk.
    fn recheck(&mut self, now: Instant, stats: &mut Stats) {
        let Some(p) = &mut self.pass else { return };
        p.recheck_at = None;
        if p.raced {
            let mut disagree = 0usize;
            let mut example: Option<String> = None;
            let touched = &self.touched;
            let sysfs = &mut self.sysfs;
            let table = &self.table;
            let known = table.devpaths().map(|d| (d, true));
            let walked = p
                .snapshot
                .iter()
                .map(|f| f.devpath.as_str())
                .filter(|d| !table.contains(d))
                .map(|d| (d, false));
            for (d, in_table) in known.chain(walked) {
                if touched.contains(touch_key(d)) && sysfs.present(d) != in_table {
                    disagree += 1;
                    example.get_or_insert_with(|| d.to_string());
                }
            }
            if disagree > 0 {
                if p.rechecks < MAX_RECHECKS {
                    p.rechecks += 1;
                    stats.resync_retries += 1;
                    debug!(
                        "{disagree} devices changed during the walk and do not agree with sysfs yet; re-checking in {}",
                        Ms(RECHECK_DELAY)
                    );
                    p.recheck_at = Some(now + RECHECK_DELAY);
                    return;
                }
                warn!(
                    "accepting the walk with {disagree} devices whose events and sysfs still disagree (e.g. {}); \
                     their next event will correct them",
                    example.unwrap_or_default()
                );
            }
        }
        let p = self.pass.take().expect("pass present");
        self.finish(p, stats);
        self.passed(stats);
    }

    fn finish(&mut self, p: Pass, stats: &mut Stats) {
        let touched = &self.touched;
        let touched = |d: &str| touched.contains(touch_key(d));
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
                Kind::Baseline if p.kept.as_ref().is_some_and(|k| k.tracks(&f.subsystem)) => {}
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
                let mut present: Vec<&str> =
                    p.snapshot.iter().map(|f| f.devpath.as_str()).collect();
                present.sort_unstable();
                let mut unchecked = 0u64;
                let mut gone: Vec<&str> = Vec::new();
                for d in self.table.devpaths() {
                    if present.binary_search(&d).is_ok() || touched(d) {
                        continue;
                    }
                    if p.report.unchecked(d) {
                        unchecked += 1; // absent from the walk, but not known gone
                    } else {
                        gone.push(d);
                    }
                }
                for d in gone {
                    self.synthetic
                        .push_back(datagram_remove(&self.table, d, marker));
                    removes += 1;
                }
                if unchecked > 0 {
                    stats.resync_unchecked += unchecked;
                    warn!(
                        "resync {}: {unchecked} known devices were not checked, because {}: no \
                         synthetic remove for them (their next event corrects them); \
                         resync_unchecked={}",
                        stats.resyncs,
                        match p.report.unread.first() {
                            _ if p.report.cut => "the sysfs walk was cut short".to_string(),
                            Some(u) => format!(
                                "{} sysfs subtrees could not be read (e.g. {u})",
                                p.report.unread.len()
                            ),
                            None => "the sysfs walk was incomplete".to_string(),
                        },
                        stats.resync_unchecked
                    );
                }
            }
        }
        self.note_full();
        match p.kind {
            Kind::Baseline => info!(
                "{} devices present in tracked subsystems ({})",
                self.table.len(),
                Ms(self.now.saturating_duration_since(p.started))
            ),
            Kind::Coldplug => info!(
                "coldplug: {adds} synthetic adds ({} devices, {})",
                self.table.len() + adds,
                Ms(self.now.saturating_duration_since(p.started))
            ),
            Kind::Overrun => info!(
                "resync {} done in {}: {adds} devices appeared, {removes} disappeared while events were lost",
                stats.resyncs,
                Ms(self.now.saturating_duration_since(p.started))
            ),
            Kind::Trigger => {
                info!(
                    "coldplug: asking the kernel to resend add for {} devices",
                    trigger.len()
                );
                self.trigger = Some(Trigger {
                    uuid: self.sysfs.uuid(),
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
    fn trigger_more(&mut self, stats: &mut Stats) {
        let Some(t) = &mut self.trigger else { return };
        let now = self.now;
        let batch_done =
            t.seen >= t.written || t.batch_at.is_some_and(|at| now >= at + TRIGGER_WAIT);
        if !batch_done {
            return;
        }
        // A batch whose writes all failed (a read-only sysfs, devices gone)
        // has no event to wait for: go straight on to the next.
        while !t.queue.is_empty() {
            // count only this batch from here
            t.seen = 0;
            t.written = 0;
            for _ in 0..TRIGGER_BATCH {
                let Some(d) = t.queue.pop_front() else { break };
                match self.sysfs.trigger(&d, &t.uuid) {
                    Ok(()) => t.written += 1,
                    Err(e) => debug!("coldplug trigger {d}: {e} (gone?)"),
                }
            }
            t.batch_at = Some(now);
            if t.written > 0 {
                return;
            }
        }
        info!(
            "coldplug: {} triggered, {} add events received",
            t.written, t.seen
        );
        self.trigger = None;
        self.passed(stats);
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

    /// When [`Recovery::tick`] must run next: at once (a time already
    /// past) while a walk is under way or a drain is wanted, so the loop
    /// comes straight back after serving its other sources.
    pub fn deadline(&self) -> Option<Instant> {
        let pass = self.pass.as_ref().and_then(|p| match p.phase {
            Phase::Walking => Some(p.started),
            _ if self.want_drain => Some(p.started),
            Phase::Held(until) => Some(until),
            Phase::Walked => p.recheck_at,
        });
        let trig = self
            .trigger
            .as_ref()
            .and_then(|t| t.batch_at.map(|at| at + TRIGGER_WAIT));
        let due = self
            .resync_due_at
            .filter(|_| self.pass.is_none() && self.trigger.is_none() && self.synthetic.is_empty());
        let trig = match (trig, due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        match (pass, trig) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Timers and the walk: a budget of directories, re-checks, trigger
    /// batches.
    pub fn tick(&mut self, now: Instant, stats: &mut Stats) {
        self.now = now;
        self.walk_on(now);
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
        self.passed(stats);
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

#[cfg(test)]
mod tests {
    //! Recovery on a fake sysfs and a virtual clock: no root, no kernel.

    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// What the fake sysfs holds; shared with the test, which changes it
    /// between steps.
    #[derive(Default)]
    struct World {
        devices: Vec<Found>,
        /// Devpaths of subtrees the walk cannot read.
        unreadable: Vec<String>,
        cut: bool,
        seqnum: u64,
        /// Directories read so far (one per device here).
        dirs_read: usize,
        walks: usize,
        trigger_fails: bool,
    }

    struct Fake {
        world: Rc<RefCell<World>>,
        track: Track,
        next: Option<usize>,
    }

    impl SysfsWalk for Fake {
        fn begin(&mut self, track: &Track) {
            self.track = track.clone();
            self.next = Some(0);
            self.world.borrow_mut().walks += 1;
        }
        fn step(&mut self, budget: usize, out: &mut Vec<Found>) -> Option<WalkReport> {
            let mut w = self.world.borrow_mut();
            let i = self.next?;
            let end = (i + budget).min(w.devices.len());
            for f in &w.devices[i..end] {
                if w.unreadable
                    .iter()
                    .any(|u| f.devpath.starts_with(u.as_str()))
                {
                    continue;
                }
                if self.track.tracks(&f.subsystem) {
                    out.push(f.clone());
                }
            }
            w.dirs_read += end - i;
            if end < w.devices.len() {
                self.next = Some(end);
                return None;
            }
            self.next = None;
            let mut r = WalkReport {
                dirs: w.devices.len(),
                devices: w.devices.len(),
                cut: w.cut,
                ..WalkReport::default()
            };
            for u in &w.unreadable {
                r.unreadable += 1;
                r.not_read(u);
            }
            Some(r)
        }
        fn uevent_seqnum(&mut self) -> Option<u64> {
            Some(self.world.borrow().seqnum)
        }
        fn present(&mut self, devpath: &str) -> bool {
            self.world
                .borrow()
                .devices
                .iter()
                .any(|f| f.devpath == devpath)
        }
        fn trigger(&mut self, _: &str, _: &str) -> std::io::Result<()> {
            if self.world.borrow().trigger_fails {
                return Err(std::io::Error::from_raw_os_error(30)); // EROFS
            }
            Ok(())
        }
        fn uuid(&mut self) -> String {
            "00000000-0000-4000-8000-000000000000".into()
        }
    }

    fn dev(path: &str, subsystem: &str) -> Found {
        Found {
            devpath: path.into(),
            subsystem: subsystem.into(),
            fields: vec![format!("DEVNAME={}", path.rsplit('/').next().unwrap()).into_bytes()],
        }
    }

    fn setup(devices: &[(&str, &str)], track: Track) -> (Recovery, Rc<RefCell<World>>) {
        let world = Rc::new(RefCell::new(World {
            devices: devices.iter().map(|(p, s)| dev(p, s)).collect(),
            seqnum: 100,
            ..World::default()
        }));
        let fake = Fake {
            world: world.clone(),
            track: Track::All,
            next: None,
        };
        let mut r = Recovery::new(Box::new(fake), track, Coldplug::None, Instant::now());
        r.test_delay = None; // whatever the environment says
        (r, world)
    }

    /// Runs the loop's part until no pass is under way: ticks, and drains
    /// when asked (the socket is always empty here).
    fn settle(r: &mut Recovery, st: &mut Stats, now: &mut Instant) {
        for _ in 0..10_000 {
            if r.pass.is_none() {
                return;
            }
            let d = r.deadline().expect("a pass always has a deadline");
            *now = (*now).max(d);
            r.tick(*now, st);
            if r.take_want_drain() {
                r.drained(*now, st);
            }
            r.drained(*now, st);
        }
        panic!("the pass never ended");
    }

    fn synthetic(r: &mut Recovery, st: &mut Stats) -> Vec<String> {
        let mut v = Vec::new();
        while let Some(d) = r.next_synthetic() {
            let ev = Uevent::parse(&d).unwrap();
            v.push(format!("{} {}", ev.action(), ev.devpath()));
            r.synthetic_event(&ev, Instant::now(), st);
        }
        v
    }

    fn live(r: &mut Recovery, text: &str) {
        let mut d = Vec::new();
        let (action, path) = text.split_once(' ').unwrap();
        d.extend_from_slice(
            format!("{action}@{path}\0ACTION={action}\0DEVPATH={path}\0SUBSYSTEM=usb\0SEQNUM=1\0")
                .as_bytes(),
        );
        r.event(&Uevent::parse(&d).unwrap(), Instant::now());
    }

    const USB: &[(&str, &str)] = &[
        ("/devices/pci0/usb1", "usb"),
        ("/devices/pci0/usb1/1-1", "usb"),
        ("/devices/pci0/usb2", "usb"),
        ("/devices/pci0/usb2/2-1", "usb"),
        ("/devices/pci0/usb2/2-1/2-1:1.0", "usb"),
    ];

    #[test]
    fn a_resync_does_not_remove_devices_under_a_subtree_it_could_not_read() {
        let (mut r, world) = setup(USB, Track::All);
        let (mut st, mut now) = (Stats::default(), Instant::now());
        r.start(now, &mut st);
        settle(&mut r, &mut st, &mut now);
        assert_eq!(r.table().len(), 5);
        // usb2's directory becomes unreadable; 1-1 is really unplugged
        {
            let mut w = world.borrow_mut();
            w.unreadable.push("/devices/pci0/usb2".into());
            w.devices.retain(|f| f.devpath != "/devices/pci0/usb1/1-1");
        }
        r.overrun(now, &mut st);
        settle(&mut r, &mut st, &mut now);
        assert_eq!(
            synthetic(&mut r, &mut st),
            ["remove /devices/pci0/usb1/1-1"]
        );
        assert_eq!(st.resync_unchecked, 3, "usb2, 2-1 and 2-1:1.0");
        for d in ["/devices/pci0/usb2", "/devices/pci0/usb2/2-1/2-1:1.0"] {
            assert!(r.table().contains(d), "{d} stays known");
        }
    }

    #[test]
    fn a_resync_of_a_cut_walk_removes_nothing() {
        let (mut r, world) = setup(USB, Track::All);
        let (mut st, mut now) = (Stats::default(), Instant::now());
        r.start(now, &mut st);
        settle(&mut r, &mut st, &mut now);
        {
            let mut w = world.borrow_mut();
            w.cut = true;
            w.devices.truncate(2); // the walk saw only these
            w.devices.push(dev("/devices/pci0/usb3", "usb")); // and a new one
        }
        r.overrun(now, &mut st);
        settle(&mut r, &mut st, &mut now);
        assert_eq!(synthetic(&mut r, &mut st), ["add /devices/pci0/usb3"]);
        assert_eq!(st.resync_unchecked, 3);
        assert_eq!(st.synthetic_removes, 0);
    }

    #[test]
    fn unread_subtrees_match_whole_path_components() {
        let mut rep = WalkReport::default();
        rep.not_read("/devices/pci0/usb2");
        assert!(rep.unchecked("/devices/pci0/usb2"));
        assert!(rep.unchecked("/devices/pci0/usb2/2-1"));
        assert!(!rep.unchecked("/devices/pci0/usb20"));
        assert!(!rep.unchecked("/devices/pci0"));
        for i in 0..MAX_UNREAD_SUBTREES {
            rep.not_read(&format!("/devices/x{i}"));
        }
        assert!(rep.cut, "more than it can name: cut");
        assert!(rep.unchecked("/devices/anything"));
    }

    #[test]
    fn the_walk_runs_a_budget_at_a_time_and_asks_to_come_back_at_once() {
        let paths: Vec<String> = (0..WALK_BUDGET * 3 + 10)
            .map(|i| format!("/devices/virtual/net/hp{i}"))
            .collect();
        let devs: Vec<(&str, &str)> = paths.iter().map(|p| (p.as_str(), "net")).collect();
        let (mut r, world) = setup(&devs, Track::All);
        let mut st = Stats::default();
        let now = Instant::now();
        r.start(now, &mut st);
        assert_eq!(world.borrow().dirs_read, 0, "start walks nothing itself");
        let mut ticks = 0;
        while r.pass.as_ref().is_some_and(|p| p.phase == Phase::Walking) {
            let d = r.deadline().unwrap();
            assert!(d <= now, "while walking, tick is due at once");
            r.tick(now, &mut st);
            ticks += 1;
            assert!(world.borrow().dirs_read <= ticks * WALK_BUDGET);
        }
        assert_eq!(ticks, 4);
        assert!(r.take_want_drain(), "the walk's end asks for a drain");
        r.drained(now, &mut st);
        r.drained(now, &mut st);
        assert!(r.pass.is_none());
        assert_eq!(r.table().len(), paths.len());
    }

    #[test]
    fn events_during_the_walk_are_the_truth_for_their_devices() {
        let (mut r, world) = setup(USB, Track::All);
        let (mut st, mut now) = (Stats::default(), Instant::now());
        r.start(now, &mut st);
        settle(&mut r, &mut st, &mut now);
        world.borrow_mut().devices.truncate(3); // 2-1 and 2-1:1.0 gone
        r.overrun(now, &mut st);
        // the remove of 2-1 arrives while the walk is under way
        live(&mut r, "remove /devices/pci0/usb2/2-1");
        settle(&mut r, &mut st, &mut now);
        assert_eq!(
            synthetic(&mut r, &mut st),
            ["remove /devices/pci0/usb2/2-1/2-1:1.0"]
        );
    }

    #[test]
    fn a_retrack_during_a_resync_waits_and_loses_no_synthetic_event() {
        let (mut r, world) = setup(USB, Track::Only(vec!["usb".into()]));
        let (mut st, mut now) = (Stats::default(), Instant::now());
        r.start(now, &mut st);
        settle(&mut r, &mut st, &mut now);
        world
            .borrow_mut()
            .devices
            .retain(|f| f.devpath != "/devices/pci0/usb1/1-1");
        world
            .borrow_mut()
            .devices
            .push(dev("/devices/virtual/net/hp0", "net"));
        r.overrun(now, &mut st);
        r.tick(now, &mut st); // the walk is under way
        let walks = world.borrow().walks;
        // SIGHUP: the rules now match net too
        let both = Track::Only(vec!["usb".into(), "net".into()]);
        r.retrack(both.clone(), now, &mut st);
        assert_eq!(world.borrow().walks, walks, "no new walk mid-pass");
        assert_eq!(r.track(), &Track::Only(vec!["usb".into()]));
        settle(&mut r, &mut st, &mut now);
        // the resync's remove survived, and the retrack ran after it
        assert_eq!(r.track(), &both);
        assert_eq!(world.borrow().walks, walks + 1);
        assert_eq!(
            synthetic(&mut r, &mut st),
            ["remove /devices/pci0/usb1/1-1"]
        );
        settle(&mut r, &mut st, &mut now);
        assert!(
            r.table().contains("/devices/virtual/net/hp0"),
            "learnt silently"
        );
        assert!(synthetic(&mut r, &mut st).is_empty());
    }

    #[test]
    fn an_overrun_during_the_first_learn_pass_is_followed_by_a_resync() {
        let (mut r, world) = setup(USB, Track::Only(vec!["usb".into()]));
        let (mut st, mut now) = (Stats::default(), Instant::now());
        r.start(now, &mut st);
        r.tick(now, &mut st); // the walk is done (5 devices < one budget)
                              // events are lost: 1-1 went, usb3 came, after the walk saw the tree
        {
            let mut w = world.borrow_mut();
            w.devices.retain(|f| f.devpath != "/devices/pci0/usb1/1-1");
            w.devices.push(dev("/devices/pci0/usb3", "usb"));
            w.seqnum += 2;
        }
        r.overrun(now, &mut st);
        settle(&mut r, &mut st, &mut now);
        // learning again would have absorbed both silently; a resync diffs
        assert_eq!(st.resyncs, 1);
        let mut got = synthetic(&mut r, &mut st);
        got.sort();
        assert_eq!(
            got,
            ["add /devices/pci0/usb3", "remove /devices/pci0/usb1/1-1"]
        );
    }

    #[test]
    fn an_overrun_during_the_last_allowed_walk_is_followed_by_another_resync() {
        let (mut r, world) = setup(USB, Track::All);
        let (mut st, mut now) = (Stats::default(), Instant::now());
        r.start(now, &mut st);
        settle(&mut r, &mut st, &mut now);
        r.overrun(now, &mut st);
        for attempt in 1..=MAX_RESYNC_ATTEMPTS {
            r.tick(now, &mut st); // the walk (5 devices: one budget)
            if attempt == MAX_RESYNC_ATTEMPTS {
                // the storm's last events, lost after the last walk saw
                // 1-1: its remove is known to nobody
                let mut w = world.borrow_mut();
                w.devices.retain(|f| f.devpath != "/devices/pci0/usb1/1-1");
                w.seqnum += 1;
            }
            r.overrun(now, &mut st);
            assert!(r.take_want_drain());
            r.drained(now, &mut st); // the drain after the walk
            r.drained(now, &mut st); // decides
        }
        assert_eq!(st.resync_retries, u64::from(MAX_RESYNC_ATTEMPTS - 1));
        // no further overrun comes: the follow-up resync is already due
        settle(&mut r, &mut st, &mut now);
        assert_eq!(st.resyncs, 2);
        assert_eq!(
            synthetic(&mut r, &mut st),
            ["remove /devices/pci0/usb1/1-1"]
        );
    }

    #[test]
    fn a_retrack_keeps_what_it_knows_of_subsystems_still_tracked() {
        let (mut r, world) = setup(USB, Track::Only(vec!["usb".into()]));
        let (mut st, mut now) = (Stats::default(), Instant::now());
        r.start(now, &mut st);
        settle(&mut r, &mut st, &mut now);
        {
            // 1-1's remove is lost; a net device is there to be learnt
            let mut w = world.borrow_mut();
            w.devices.retain(|f| f.devpath != "/devices/pci0/usb1/1-1");
            w.devices.push(dev("/devices/virtual/net/hp0", "net"));
        }
        r.retrack(Track::Only(vec!["usb".into(), "net".into()]), now, &mut st);
        settle(&mut r, &mut st, &mut now);
        assert!(r.table().contains("/devices/virtual/net/hp0"), "net learnt");
        assert!(
            r.table().contains("/devices/pci0/usb1/1-1"),
            "usb kept as it was known, not learnt again from sysfs"
        );
        assert!(synthetic(&mut r, &mut st).is_empty());
        // so the next resync still owes 1-1 its remove
        r.overrun(now, &mut st);
        settle(&mut r, &mut st, &mut now);
        assert_eq!(
            synthetic(&mut r, &mut st),
            ["remove /devices/pci0/usb1/1-1"]
        );
        // a retrack that drops usb forgets its devices
        r.retrack(Track::Only(vec!["net".into()]), now, &mut st);
        settle(&mut r, &mut st, &mut now);
        assert!(!r.table().contains("/devices/pci0/usb1"));
        assert!(r.table().contains("/devices/virtual/net/hp0"));
    }

    #[test]
    fn a_retrack_back_to_the_same_set_during_a_pass_is_dropped() {
        let (mut r, world) = setup(USB, Track::All);
        let (mut st, mut now) = (Stats::default(), Instant::now());
        r.start(now, &mut st);
        r.retrack(Track::Only(vec!["net".into()]), now, &mut st);
        r.retrack(Track::All, now, &mut st);
        settle(&mut r, &mut st, &mut now);
        assert_eq!(world.borrow().walks, 1);
        assert_eq!(r.track(), &Track::All);
    }

    #[test]
    fn the_test_hold_is_a_deadline_not_a_sleep() {
        let (mut r, _world) = setup(USB, Track::All);
        r.test_delay = Some(Duration::from_secs(5));
        let (mut st, now) = (Stats::default(), Instant::now());
        r.start(now, &mut st);
        r.tick(now, &mut st);
        let until = r.deadline().unwrap();
        assert!(until >= now + Duration::from_secs(5));
        assert!(now.elapsed() < Duration::from_secs(1), "did not sleep");
        r.tick(now + Duration::from_secs(1), &mut st);
        assert!(!r.take_want_drain(), "still held");
        r.tick(until, &mut st);
        assert!(r.take_want_drain(), "held no longer");
    }

    #[test]
    fn the_touched_set_holds_what_it_was_given_up_to_its_capacity() {
        let mut t = TouchedSet::new(4);
        let keys = [
            touch_key("/a"),
            touch_key("/b"),
            touch_key("/c"),
            touch_key("/d"),
        ];
        for (n, &k) in keys.iter().enumerate() {
            assert!(!t.contains(k));
            assert!(t.insert(k));
            assert!(t.insert(k), "again: already in");
            assert_eq!(t.len(), n + 1);
        }
        assert!(keys.iter().all(|&k| t.contains(k)));
        assert!(!t.insert(touch_key("/e")), "full");
        assert!(!t.contains(touch_key("/e")));
        t.clear();
        assert_eq!(t.len(), 0);
        assert!(keys.iter().all(|&k| !t.contains(k)));
        assert!(t.slots.iter().all(|&s| s == 0), "every slot written back");
        assert!(t.insert(touch_key("/e")));
    }

    #[test]
    fn a_storm_of_touched_devices_costs_a_set_lookup_each() {
        let (mut r, _world) = setup(USB, Track::All);
        let mut st = Stats::default();
        r.start(Instant::now(), &mut st);
        let cap = r.touched.capacity();
        for i in 0..20_000 {
            live(&mut r, &format!("add /devices/virtual/net/hp{i}"));
            live(&mut r, &format!("remove /devices/virtual/net/hp{i}"));
        }
        assert_eq!(r.touched.len(), 20_000);
        assert_eq!(r.touched.capacity(), cap, "no growth: reserved at start");
        // (the cost per lookup is a benchmark's job, not a test's:
        // `cargo bench --bench table_lookup`)
    }

    /// `--coldplug=trigger` on a sysfs where every `uevent` write fails (a
    /// read-only sysfs in a container): a batch that wrote nothing has no
    /// event to wait for, so coldplug ends at once instead of waiting
    /// TRIGGER_WAIT (2 s) per batch of 16 before readiness.
    #[test]
    fn a_trigger_batch_that_wrote_nothing_does_not_wait() {
        let devs: Vec<(String, &str)> =
            (0..64).map(|i| (format!("/devices/d{i}"), "usb")).collect();
        let refs: Vec<(&str, &str)> = devs.iter().map(|(p, s)| (p.as_str(), *s)).collect();
        let (mut r, world) = setup(&refs, Track::All);
        world.borrow_mut().trigger_fails = true;
        r.coldplug = Coldplug::Trigger;
        let mut st = Stats::default();
        let mut now = Instant::now();
        r.start(now, &mut st);
        settle(&mut r, &mut st, &mut now);
        assert!(r.trigger.is_none(), "coldplug is over");
        assert!(r.take_ready(), "and ready");
        assert_eq!(r.deadline(), None, "nothing left to wait for");
    }
}
