//! The counters: nothing is lost or refused without one of these going up.
//!
//! Plain `u64`s owned by the single-threaded loop (no atomics: 32-bit MIPS
//! and ARMv5 have no 64-bit atomics). Printed as one `key=value` line on
//! exit and on SIGUSR1; the same names appear in the README.

use core::fmt;

/// Every counter the daemon keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams returned by `recvmsg` (ENOBUFS results not included).
    /// Always `accepted + rejected + truncated + malformed`.
    pub received: u64,
    /// Kernel events that parsed and were handed on.
    pub accepted: u64,
    /// Datagrams not from the kernel (sender port, uid or pid not 0), dropped.
    pub rejected: u64,
    /// Datagrams larger than the receive buffer (MSG_TRUNC), dropped unparsed.
    pub truncated: u64,
    /// Datagrams from the kernel that failed to parse, dropped.
    pub malformed: u64,
    /// ENOBUFS results: times the kernel dropped events for our socket.
    pub overruns: u64,
    /// Datagrams the kernel dropped for our socket, from `/proc/net/netlink`
    /// (its `Drops` column), read at each overrun and when stats are printed.
    pub dropped: u64,
    /// SEQNUM jumps of more than one. A hint only: events of other network
    /// namespaces take sequence numbers too.
    pub seqnum_gaps: u64,

    /// Events that matched at least one rule.
    pub matched: u64,
    /// Handler processes started (and builtin handlers called).
    pub handlers_started: u64,
    /// Handlers that could not be started, exited non-zero or were killed.
    pub handlers_failed: u64,
    /// Handlers killed because they ran past `--handler-timeout`.
    pub handlers_timed_out: u64,
    /// Times the job queue was full and reading the socket was paused.
    pub queue_full: u64,
    /// Lines of handler output cut at the log line limit.
    pub output_lines_cut: u64,
    /// Substituted values cut at `MAX_SUBST_LEN`, and `ENV{}`/`RUN` entries
    /// beyond their per-event limits.
    pub limits_hit: u64,
    /// `ATTR{file}="value"` writes that failed.
    pub attr_write_failed: u64,
    /// Lines of handler output not logged because the handler wrote more
    /// than `LOG_LINES_PER_SEC` lines a second (summarised in the log).
    pub output_lines_suppressed: u64,
    /// Handlers that a SIGKILL did not end within the grace period
    /// (uninterruptible sleep); their slot was given back.
    pub handlers_unkillable: u64,
    /// Jobs that did not fit their reserved slot (`JOB_SLOT`), or found
    /// every slot in use, and were put on the heap whole.
    pub job_oversize: u64,

    /// Resyncs from sysfs after an overrun.
    pub resyncs: u64,
    /// Extra sysfs walks (another overrun during a resync) and re-checks of
    /// devices that changed during a walk.
    pub resync_retries: u64,
    /// Synthetic `add` events dispatched (coldplug and resyncs).
    pub synthetic_adds: u64,
    /// Synthetic `remove` events dispatched (resyncs).
    pub synthetic_removes: u64,
    /// Resyncs that could only add because the device table had overflowed.
    pub table_full: u64,
    /// Devices a resync could not check because their sysfs subtree was
    /// unreadable or the walk was cut short; no synthetic `remove` is sent
    /// for them.
    pub resync_unchecked: u64,
    /// Synthetic events (coldplug, resync) that failed to parse, dropped.
    pub synthetic_malformed: u64,

    /// `--broadcast` datagrams sent (one per event and target).
    pub broadcast_sent: u64,
    /// `--broadcast` sends refused with EAGAIN (not retried).
    pub broadcast_again: u64,
    /// `--broadcast` sends refused with ENOBUFS (not retried).
    pub broadcast_nobufs: u64,
    /// `--broadcast` sends answered with ECONNREFUSED: kernels before 4.18
    /// say so when their own socket takes no input; the multicast went out
    /// (also counted in `broadcast_sent`).
    pub broadcast_refused: u64,
    /// `--broadcast` sends that failed otherwise (EPERM without
    /// CAP_NET_ADMIN, ...).
    pub broadcast_failed: u64,
    /// Events not broadcast because their datagram would not fit
    /// `BROADCAST_BUFFER`.
    pub broadcast_too_large: u64,

    /// Device nodes whose owner, group or mode the rules changed
    /// (`OWNER`/`GROUP`/`MODE`).
    pub dev_perms_applied: u64,
    /// Nodes the rules gave an owner, group or mode that were left alone:
    /// `/dev/$DEVNAME` was not the event's device node (a symlink, a file,
    /// a node of another type or device number, nothing), or the event had
    /// no DEVNAME/MAJOR/MINOR.
    pub dev_perms_refused: u64,
    /// `chown`/`chmod` of a device node that failed.
    pub dev_perms_failed: u64,
    /// `SYMLINK` links made or re-pointed under /dev.
    pub dev_links_made: u64,
    /// Links removed (their device went away or stopped claiming them).
    pub dev_links_removed: u64,
    /// Links not made: the path held a regular file, a directory or a node,
    /// the name would leave /dev, or the device has no node.
    pub dev_links_refused: u64,
    /// Links two devices claimed (settled by `link_priority`, as udev).
    pub dev_link_conflicts: u64,
    /// Link operations that failed (`symlink`, `rename`, `unlink`, `mkdir`).
    pub dev_links_failed: u64,
    /// Device table records cut to their essentials (longer than
    /// `MAX_RECORD`): a later remove sees fewer of the add's properties.
    pub table_records_cut: u64,
    /// Properties of an add that did not fit the event of its remove
    /// (more than 80 fields, or its 16 KiB buffer).
    pub remove_props_cut: u64,

    /// `RUN{service}` processes started (first starts and restarts).
    pub services_started: u64,
    /// `RUN{service}` restarts after the program exited or died.
    pub services_restarted: u64,
    /// `RUN{service}` programs that could not start (fork failed, or
    /// `execve` failed: reported when reaped), or that `--max-services`
    /// refused.
    pub services_failed: u64,
    /// `RUN{service}` programs that a SIGKILL did not end within the
    /// grace at a stop; their record was dropped.
    pub services_unkillable: u64,
    /// `modprobe` runs started by `RUN{builtin}+="kmod load"`.
    pub kmod_runs: u64,
    /// MODALIAS values handed to `modprobe`.
    pub kmod_aliases: u64,
    /// `modprobe` runs that could not start, were killed, or exited
    /// non-zero after printing an error (a silent exit 1 is only names no
    /// module claims, with `-q`), and names dropped (queue full, too long).
    pub kmod_failed: u64,
    /// Firmware requests answered with the file (`RUN{builtin}+="firmware"`).
    pub firmware_loaded: u64,
    /// Firmware requests for a file found in no search directory (the
    /// kernel was told `-1`).
    pub firmware_not_found: u64,
    /// Firmware requests that failed otherwise (no `loading` file, a short
    /// copy, the loader could not start).
    pub firmware_failed: u64,

    /// The longest turn of the loop so far, in microseconds: from a
    /// wake-up to the next wait (how long the socket could not be read).
    pub longest_turn_us: u64,

    /// Log records dropped because the log target would have blocked or
    /// refused them (filled in from [`crate::sys::log::dropped`] when the
    /// line is printed).
    pub log_dropped: u64,
}

/// A duration in a log line, as `N ms` (`Duration`'s `Debug` costs about
/// 1 KB of binary for a form nobody reads better).
#[derive(Clone, Copy, Debug)]
pub struct Ms(pub core::time::Duration);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ms", self.0.as_millis())
    }
}

/// Which counters a command reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `monitor`: the listener's counters.
    Listener,
    /// `run` and `replay`: the listener's and the handlers'.
    Daemon,
}

impl Stats {
    /// A `Display` of the counters in `scope`, as `stats: key=N key=N ...`.
    pub fn line(&self, scope: Scope) -> StatsLine<'_> {
        StatsLine { stats: self, scope }
    }
}

/// See [`Stats::line`].
pub struct StatsLine<'a> {
    stats: &'a Stats,
    scope: Scope,
}

impl fmt::Display for StatsLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.stats;
        write!(
            f,
            "stats: received={} accepted={} rejected={} truncated={} malformed={} overruns={} seqnum_gaps={} dropped={}",
            s.received, s.accepted, s.rejected, s.truncated, s.malformed, s.overruns, s.seqnum_gaps, s.dropped
        )?;
        if self.scope == Scope::Daemon {
            write!(
                f,
                 " matched={} handlers_started={} handlers_failed={} handlers_timed_out={} handlers_unkillable={} queue_full={} output_lines_cut={} output_lines_suppressed={} limits_hit={} attr_write_failed={} job_oversize={}",
                s.matched,
                s.handlers_started,
                s.handlers_failed,
                s.handlers_timed_out,
                s.handlers_unkillable,
                s.queue_full,
                s.output_lines_cut,
                s.output_lines_suppressed,
                s.limits_hit,
                s.attr_write_failed,
                s.job_oversize
            )?;
            write!(
                f,
                 " resyncs={} resync_retries={} synthetic_adds={} synthetic_removes={} table_full={} resync_unchecked={} synthetic_malformed={}",
                s.resyncs, s.resync_retries, s.synthetic_adds, s.synthetic_removes, s.table_full, s.resync_unchecked, s.synthetic_malformed
            )?;
            write!(
                f,
                " broadcast_sent={} broadcast_again={} broadcast_nobufs={} broadcast_refused={} broadcast_failed={} broadcast_too_large={}",
                s.broadcast_sent, s.broadcast_again, s.broadcast_nobufs, s.broadcast_refused, s.broadcast_failed, s.broadcast_too_large
            )?;
            write!(
                f,
                " dev_perms_applied={} dev_perms_refused={} dev_perms_failed={} dev_links_made={} dev_links_removed={} dev_links_refused={} dev_link_conflicts={} dev_links_failed={} table_records_cut={} remove_props_cut={}",
                s.dev_perms_applied, s.dev_perms_refused, s.dev_perms_failed, s.dev_links_made, s.dev_links_removed, s.dev_links_refused, s.dev_link_conflicts, s.dev_links_failed, s.table_records_cut, s.remove_props_cut
            )?;
            write!(
                f,
                " services_started={} services_restarted={} services_failed={} services_unkillable={} kmod_runs={} kmod_aliases={} kmod_failed={} firmware_loaded={} firmware_not_found={} firmware_failed={}",
                s.services_started, s.services_restarted, s.services_failed, s.services_unkillable, s.kmod_runs, s.kmod_aliases, s.kmod_failed, s.firmware_loaded, s.firmware_not_found, s.firmware_failed
            )?;
        }
        write!(
            f,
            " longest_turn_us={} log_dropped={}",
            s.longest_turn_us, s.log_dropped
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_line_has_the_documented_prefix() {
        let s = Stats {
            received: 5,
            accepted: 2,
            rejected: 1,
            truncated: 1,
            malformed: 1,
            overruns: 3,
            seqnum_gaps: 4,
            ..Stats::default()
        };
        assert_eq!(
            s.line(Scope::Listener).to_string(),
            "stats: received=5 accepted=2 rejected=1 truncated=1 malformed=1 overruns=3 seqnum_gaps=4 dropped=0 longest_turn_us=0 log_dropped=0"
        );
        assert!(s
            .line(Scope::Daemon)
            .to_string()
            .contains(" matched=0 handlers_started=0"));
    }
}
