//! Module autoloading: `RUN{builtin}+="kmod load"` (udev's spelling, from
//! its `80-drivers.rules`: `ENV{MODALIAS}=="?*", RUN{builtin}+="kmod load"`).
//! Pure: it collects names and says when to run `modprobe`; the loop runs
//! it as a child through [`crate::exec::ProcIo`] and reports its exit.
//!
//! - `kmod load` takes the event's `MODALIAS`; `kmod load NAME...` takes
//!   the names given (module names or aliases, substituted like `RUN`).
//! - **Batched.** Names wait in a queue (duplicates skipped) and go to one
//!   `modprobe -b -q -a NAME...` when [`BATCH_NAMES`] are waiting or
//!   [`BATCH_DELAY`] after the first one queued, and at most one `modprobe`
//!   runs at a time; during coldplug or a resync ([`Kmod::set_hold`]) only
//!   full batches go until the pass ends: a coldplug of a few hundred
//!   devices costs one or two runs, not one per device. `-b` honours the modprobe.d blacklist (as
//!   udev does), `-q` keeps aliases no module claims quiet, `-a` takes many.
//! - Never on the loop: `modprobe` is a child like a handler (its output is
//!   logged like a handler's, and it is not subject to `--handler-timeout`:
//!   a module's init can be slow and killing `modprobe` does not stop it).
//! - Counted: `kmod_runs`, `kmod_aliases`, `kmod_failed` (a run that could
//!   not start, was killed, or exited non-zero and printed something; a
//!   name dropped because the queue held [`MAX_QUEUED`]). A silent non-zero
//!   exit is only aliases no module claims: with `-q` modprobe says nothing
//!   about them but exits 1, and most MODALIAS values are such (built-in
//!   drivers, devices without a driver).

use std::time::{Duration, Instant};

use log::{info, warn};

use crate::exec::{Exit, ProcIo};
use crate::job::Words;
use crate::services::Output;
use crate::stats::{Ms, Stats};

/// Names handed to one `modprobe` at most (a MODALIAS is ~50-100 bytes:
/// some 25 KB of arguments, far below ARG_MAX).
pub const BATCH_NAMES: usize = 256;
/// How long the first queued name waits for others.
pub const BATCH_DELAY: Duration = Duration::from_millis(50);
/// Names waiting at most; one more is dropped and counted.
pub const MAX_QUEUED: usize = 4096;
/// Longest name kept: the kernel's `UEVENT_BUFFER_SIZE`, so that no
/// MODALIAS is refused (a USB interface's is ~70 bytes; an x86 CPU's, with
/// its feature list, runs past 1 KB: 512 refused it in the x86_64 guest).
pub const MAX_NAME: usize = 2048;
/// Bytes of names handed to one `modprobe` at most (with [`BATCH_NAMES`]):
/// far below the smallest `ARG_MAX` (128 KiB) whatever the names.
pub const BATCH_BYTES: usize = 64 * 1024;

/// Where `modprobe` is looked for, in order.
pub const MODPROBE_PATHS: [&str; 4] = [
    "/sbin/modprobe",
    "/usr/sbin/modprobe",
    "/bin/modprobe",
    "/usr/bin/modprobe",
];

/// How many of the first names of `queue` go in one `modprobe`: at most
/// [`BATCH_NAMES`] and [`BATCH_BYTES`], at least one.
fn batch_len(queue: &[Vec<u8>]) -> usize {
    let mut bytes = 0;
    let n = queue
        .iter()
        .take(BATCH_NAMES)
        .take_while(|q| {
            bytes += q.len() + 1;
            bytes <= BATCH_BYTES
        })
        .count();
    n.max(1).min(queue.len())
}

/// The batcher.
pub struct Kmod {
    modprobe: Option<Vec<u8>>,
    queue: Vec<Vec<u8>>,
    since: Option<Instant>,
    running: Option<(i32, usize, Instant)>,
    out: Option<Output>,
    warned_missing: bool,
    /// Coldplug or a resync is dispatching: wait for a full batch or its end.
    hold: bool,
}

impl Kmod {
    /// `modprobe`: its absolute path, or `None` when there is none (each
    /// request is then counted failed; warned once).
    pub fn new(modprobe: Option<Vec<u8>>) -> Kmod {
        Kmod {
            modprobe,
            queue: Vec::new(),
            since: None,
            running: None,
            out: None,
            warned_missing: false,
            hold: false,
        }
    }

    /// Names waiting.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The pid of the `modprobe` running, if one is.
    pub fn running(&self) -> Option<i32> {
        self.running.map(|r| r.0)
    }

    /// True if `pid` is (or was) this batcher's `modprobe`.
    pub fn owns(&self, pid: i32) -> bool {
        self.running.is_some_and(|r| r.0 == pid) || self.out.as_ref().is_some_and(|o| o.pid == pid)
    }

    /// `kmod ARGS...` for an event whose MODALIAS is `modalias`. Only
    /// `load` is known; anything else is an error for the log.
    pub fn request(
        &mut self,
        args: &[Vec<u8>],
        modalias: Option<&[u8]>,
        now: Instant,
        stats: &mut Stats,
    ) -> Result<(), String> {
        match args.first().map(Vec::as_slice) {
            Some(b"load") => {}
            Some(other) => {
                return Err(format!(
                    "kmod {}: only \"kmod load\" is known",
                    String::from_utf8_lossy(other)
                ))
            }
            None => return Err("kmod: expected \"kmod load\"".into()),
        }
        if self.modprobe.is_none() {
            stats.kmod_failed += 1;
            if !self.warned_missing {
                self.warned_missing = true;
                warn!(
                    "kmod load: no modprobe found (looked for {}); modules are not loaded (kmod_failed counts each request)",
                    MODPROBE_PATHS.join(", ")
                );
            }
            return Ok(());
        }
        if args.len() > 1 {
            for name in &args[1..] {
                self.push(name, now, stats);
            }
        } else if let Some(alias) = modalias {
            self.push(alias, now, stats);
        }
        Ok(())
    }

    fn push(&mut self, name: &[u8], now: Instant, stats: &mut Stats) {
        if name.is_empty() || self.queue.iter().any(|q| q == name) {
            return;
        }
        if self.queue.len() >= MAX_QUEUED || name.len() > MAX_NAME || name.contains(&0) {
            stats.kmod_failed += 1;
            warn!(
                "kmod load: {} not queued ({} waiting, at most {MAX_QUEUED}; names of at most {MAX_NAME} bytes); kmod_failed={}",
                String::from_utf8_lossy(&name[..name.len().min(80)]),
                self.queue.len(),
                stats.kmod_failed
            );
            return;
        }
        self.queue.push(name.to_vec());
        self.since.get_or_insert(now);
    }

    /// While `hold` (coldplug or a resync dispatching its synthetic
    /// events, which on a slow board can take longer than [`BATCH_DELAY`]),
    /// only a full batch goes; the rest waits for the pass to end.
    pub fn set_hold(&mut self, hold: bool) {
        self.hold = hold;
    }

    /// The next time [`Kmod::tick`] has work.
    pub fn deadline(&self) -> Option<Instant> {
        if self.running.is_some() {
            return None;
        }
        let since = self.since?;
        if batch_len(&self.queue) < self.queue.len() || self.queue.len() >= BATCH_NAMES {
            Some(since) // a full batch waits for nothing
        } else if self.hold {
            None
        } else {
            Some(since + BATCH_DELAY)
        }
    }

    /// Starts a `modprobe` if a batch is due and none runs.
    pub fn tick(&mut self, now: Instant, io: &mut dyn ProcIo, stats: &mut Stats) {
        if self.deadline().is_none_or(|d| now < d) {
            return;
        }
        let Some(modprobe) = self.modprobe.clone() else {
            return;
        };
        let n = batch_len(&self.queue);
        let mut argv = Vec::with_capacity(n + 4);
        argv.push(modprobe);
        argv.extend([b"-b".to_vec(), b"-q".to_vec(), b"-a".to_vec()]);
        argv.extend(self.queue.drain(..n));
        self.since = if self.queue.is_empty() {
            None
        } else {
            Some(now)
        };
        stats.kmod_aliases += n as u64;
        let argv = crate::services::words(argv.iter().map(Vec::as_slice));
        let env = Words::new(b"PATH=/sbin:/usr/sbin:/bin:/usr/bin\0");
        match io.spawn(Words::new(&argv), &[env], None) {
            Ok(pid) => {
                stats.kmod_runs += 1;
                info!(
                    "kmod load: modprobe [{pid}] for {n} names ({} still waiting; kmod_runs={})",
                    self.queue.len(),
                    stats.kmod_runs
                );
                self.running = Some((pid, n, now));
                self.out = Some(Output::new(pid, now));
            }
            Err(e) => {
                stats.kmod_failed += 1;
                warn!(
                    "kmod load: cannot start modprobe for {n} names: {e}; kmod_failed={}",
                    stats.kmod_failed
                );
            }
        }
    }

    /// Output of the `modprobe`; false if `pid` is not ours.
    pub fn output(&mut self, pid: i32, data: &[u8], now: Instant, stats: &mut Stats) -> bool {
        match self.out.as_mut() {
            Some(o) if o.pid == pid => {
                o.feed(data, now, stats);
                true
            }
            _ => false,
        }
    }

    /// Its pipe ended; false if `pid` is not ours.
    pub fn output_closed(&mut self, pid: i32) -> bool {
        match self.out.as_mut() {
            Some(o) if o.pid == pid => {
                o.finish();
                self.out = None;
                true
            }
            _ => false,
        }
    }

    /// The `modprobe` was reaped; false if `pid` is not ours.
    pub fn exited(&mut self, pid: i32, exit: Exit, now: Instant, stats: &mut Stats) -> bool {
        let Some((p, n, since)) = self.running else {
            return false;
        };
        if p != pid {
            return false;
        }
        self.running = None;
        if let Some(o) = self.out.as_mut() {
            o.finish();
        }
        let took = Ms(now.saturating_duration_since(since));
        let said = self.out.as_ref().map_or(0, |o| o.lines());
        match exit {
            Exit::Code(0) => info!("kmod load: modprobe [{pid}] for {n} names done after {took}"),
            // `-q`: names no module claims (most MODALIAS values: built-in
            // drivers, devices with no driver) make modprobe exit 1 without
            // a word; a real failure (insmod refused) is printed
            Exit::Code(c) if said == 0 => info!(
                "kmod load: modprobe [{pid}] for {n} names done after {took} (exit {c}, nothing printed: names no module claims)"
            ),
            other => {
                stats.kmod_failed += 1;
                warn!(
                    "kmod load: modprobe [{pid}] for {n} names ended after {took}: {} (kmod_failed={})",
                    match other {
                        Exit::Code(c) => format!("exit {c}"),
                        Exit::Signal(s) => format!("killed by {s}"),
                        Exit::NotStarted(e) => format!("did not start: {e}"),
                    },
                    stats.kmod_failed
                );
            }
        }
        true
    }

    /// True when nothing waits or runs.
    pub fn idle(&self) -> bool {
        self.running.is_none() && self.queue.is_empty()
    }
}
