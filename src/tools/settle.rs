//! `hotplugd settle`: returns once the running daemon has read every
//! event the kernel had sent it when the request arrived, and no handler
//! job waits or runs (see [`crate::control`] for why this covers the
//! kernel's `uevent_seqnum` without waiting on other network namespaces).

use std::io::Write;

use crate::app::AppError;
use crate::cli::SettleOpts;

/// `hotplugd settle`.
pub fn run(o: &SettleOpts) -> Result<(), AppError> {
    let path = super::control_path(&o.control);
    let seq = super::settle(&path, o.timeout, None)?;
    if o.verbose {
        let _ = writeln!(
            std::io::stdout(),
            "settled: events up to SEQNUM {} handled, no job queued or running",
            seq.map_or("none".into(), |s| s.to_string())
        );
    }
    Ok(())
}
