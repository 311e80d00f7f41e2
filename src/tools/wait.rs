//! `hotplugd wait PATH...`: returns once every `/dev` node or link (or
//! `/sys` device) exists (with `--removed`: is gone) and the daemon has
//! handled the events up to that moment.
//!
//! A device node appears (devtmpfs) a moment *before* the kernel sends the
//! device's `add` event, so after the paths are there the tool reads
//! `/sys/kernel/uevent_seqnum` and settles until the daemon has handled
//! that SEQNUM; since that counter also counts other network namespaces,
//! it settles at most [`EXTRA_SETTLES`] more times and then accepts.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::app::AppError;
use crate::cli::WaitOpts;

/// Further settles while the daemon's SEQNUM is behind the kernel's.
pub const EXTRA_SETTLES: usize = 10;

/// How often the paths are looked at.
const POLL: Duration = Duration::from_millis(20);

fn there(p: &str) -> bool {
    // a dangling /dev link is not there yet
    std::fs::metadata(Path::new(p)).is_ok()
}

/// `hotplugd wait`.
pub fn run(o: &WaitOpts) -> Result<(), AppError> {
    let control = super::control_path(&o.control);
    // fail fast when no daemon runs, before waiting for anything
    drop(super::connect(&control)?);
    let start = Instant::now();
    let deadline = o.timeout.map(|t| start + t);
    loop {
        let missing: Vec<&String> = o.paths.iter().filter(|p| there(p) == o.removed).collect();
        if missing.is_empty() {
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let secs = o.timeout.unwrap_or_default().as_secs_f64();
            let what = if o.removed {
                "still there"
            } else {
                "not there"
            };
            return Err(AppError::Timeout(format!(
                "timed out after {secs} s: {what}: {}",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        std::thread::sleep(POLL);
    }
    let kernel = crate::sys::walk::uevent_seqnum(Path::new("/sys"));
    for _ in 0..=EXTRA_SETTLES {
        let left = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(u64::from(u32::MAX)),
        };
        let seq = super::settle(&control, left, None)?;
        if kernel.is_none() || seq.is_some_and(|s| Some(s) >= kernel) {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
    log::debug!("wait: the daemon's SEQNUM stays below the kernel's {kernel:?} (events of other network namespaces)");
    Ok(())
}
