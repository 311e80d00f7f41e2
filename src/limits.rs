//! Every fixed capacity in hotplugd, with where its number comes from and what
//! happens when it is exceeded.
//!
//! Nothing here is tunable at run time except where a command-line option is
//! named; everything else is a compile-time constant so that the memory the
//! daemon can use while processing events is known before it starts.

/// Most `KEY=VALUE` fields one uevent can carry.
///
/// Kernel: `UEVENT_NUM_ENVP` in `include/linux/kobject.h` (64 since 2.6.31, 32
/// before). ACTION, DEVPATH, SUBSYSTEM and SEQNUM count towards it.
/// Exceeded: the datagram is refused as malformed (`TooManyFields`) and counted.
pub const UEVENT_NUM_ENVP: usize = 64;

/// Most fields the parser takes: a full kernel event plus every `ENV{}`
/// assignment the rules can add ([`MAX_ENV_ASSIGN`]), so the event a
/// builtin handler is given (the job's `raw`) always parses: imported
/// properties ([`MAX_IMPORTED`]) and `DEVLINKS`, `TAGS`, `CURRENT_TAGS` too. A datagram
/// with more is refused as malformed (`TooManyFields`) and counted.
pub const MAX_FIELDS: usize = UEVENT_NUM_ENVP + MAX_ENV_ASSIGN + MAX_IMPORTED + 3;

/// Size of the one receive buffer for a datagram.
///
/// Kernel: `UEVENT_BUFFER_SIZE` is 2048 bytes for the environment, plus the
/// `ACTION@DEVPATH` header; vendor kernels have been seen patching it to 2560
/// or 4096 (`../shared/notes/kernel-facts.md`). 8 KiB covers all of them.
/// Exceeded: the kernel sets `MSG_TRUNC`; the datagram is counted as
/// truncated, logged, and never parsed.
pub const RECV_BUFFER: usize = 8192;

/// Receive buffer requested from the kernel when `--rcvbuf` is not given.
///
/// The kernel doubles the request (bookkeeping overhead) and charges memory
/// only while events wait in the queue, so this is a ceiling, not an
/// allocation. Measured on the development VM: a 100,000-event burst at full
/// kernel rate (~110-150k events/s) lost events in 3 of 12 runs with the
/// 208 KiB default and in 2 of 12 with 8 MiB, none with 16 MiB requested
/// (32 MiB effective). A queued `lo` change event costs 832 bytes of this
/// budget, a typical USB event about 1280 bytes: 32 MiB holds ~40,000 events.
pub const DEFAULT_RCVBUF: usize = 16 * 1024 * 1024;

/// Smallest `--rcvbuf` accepted.
///
/// Below this the buffer holds only a handful of events. The infamous 1024:
/// the kernel raises it to its floor of 2304 bytes (`SOCK_MIN_RCVBUF`), which
/// holds two events; a USB device plugging in sends ten or more at once and
/// the rest are dropped (ENOBUFS). Exceeded (too small): refused at start.
pub const MIN_RCVBUF: usize = 64 * 1024;

/// Bytes of one rule file (after reading it whole at load time).
/// Exceeded: a load error naming the file.
pub const MAX_RULES_FILE: usize = 1024 * 1024;

/// Rules in one rule set (all files together). Exceeded: a load error.
pub const MAX_RULES: usize = 4096;

/// Match terms (`KEY==value`, `KEY!=value`) in one rule. Exceeded: a load error.
pub const MAX_MATCHES_PER_RULE: usize = 32;

/// Assignments (`RUN+=`, `ENV{}=`, `ATTR{}=`, ...) in one rule.
/// Exceeded: a load error.
pub const MAX_ACTIONS_PER_RULE: usize = 16;

/// `RUN` entries collected for one event over all matching rules.
/// Exceeded: a load error is impossible (it depends on the event), so the
/// surplus entries are not run, and this is logged at warn and counted
/// (`run_overflow`). 32 is far above what any real rule set adds to one event.
pub const MAX_RUN_PER_EVENT: usize = 32;

/// Arguments of one `RUN` command line (program included). Exceeded: a load error.
pub const MAX_ARGS: usize = 32;

/// Bytes of one quoted value in a rule, before substitution.
/// Exceeded: a load error.
pub const MAX_VALUE_LEN: usize = 1024;

/// Bytes of one value after substitution (an argument, an `ENV{}` value, an
/// attribute written). Exceeded: the value is cut at this many bytes (a
/// byte count: a multi-byte character may be split), logged at warn with
/// the rule and counted (`limits_hit`); never silently.
pub const MAX_SUBST_LEN: usize = 2048;

/// `ENV{KEY}="value"` assignments that one event can collect from all rules.
/// Exceeded: the surplus assignments are dropped, logged and counted.
pub const MAX_ENV_ASSIGN: usize = 16;

/// Properties `IMPORT{builtin}` can set for one event (all builtins
/// together), beside the [`MAX_ENV_ASSIGN`] room of `ENV{}` assignments.
/// `usb_id` sets up to 25 (`identity::MAX_PROPERTIES` is 32), `path_id` 2.
/// Exceeded: the surplus properties are dropped, logged and counted
/// (`limits_hit`).
pub const MAX_IMPORTED: usize = 40;

/// Bytes of one imported property's value. udev's own values are shorter
/// (`ID_SERIAL` and the `_ENC` values are built from 256-byte sysfs
/// strings). Exceeded: cut, logged and counted (`limits_hit`).
pub const MAX_IMPORTED_LEN: usize = 512;

/// `SYMLINK` links one event's device can get from all rules.
/// Exceeded: the surplus links are not made; logged and counted (`limits_hit`).
/// udev has no limit; real rule sets give a device 2-6 (by-id, by-path,
/// by-uuid, by-label, a vendor link).
pub const MAX_LINKS: usize = 16;

/// Bytes of one link path relative to `/dev` after substitution.
/// Exceeded: the link is not made (a cut link would be a wrong name);
/// logged and counted (`limits_hit`). The longest udev names seen
/// (`disk/by-id/usb-...-0:0-part1`, `serial/by-id/...-if00-port0`) are
/// under 160 bytes.
pub const MAX_LINK_LEN: usize = 256;

/// `TAG` names one event's device can carry. Exceeded: dropped, logged
/// and counted (`limits_hit`).
pub const MAX_TAGS: usize = 16;

/// Bytes of one tag name. Longer: a load error (tags are literal words).
pub const MAX_TAG_LEN: usize = 64;

/// Bytes read from one sysfs attribute when matching `ATTR`/`ATTRS` or
/// substituting `$attr{}`. sysfs attributes are at most one page (4096).
pub const MAX_ATTR_LEN: usize = 4096;

/// sysfs reads one event's rules may remember (`ATTR`/`ATTRS` values,
/// `SUBSYSTEMS`/`DRIVERS` link names, absent ones too), in
/// `sys::sysfs::ReadCache`. 100 USB rules on the deepest fixture node read
/// ~60 distinct (device, name) pairs. Exceeded: the read is done uncached
/// (counted as `full`).
pub const READ_CACHE_ENTRIES: usize = 192;

/// Bytes for the remembered keys (`devpath/name`) and values of one event.
/// Exceeded: as [`READ_CACHE_ENTRIES`].
pub const READ_CACHE_BYTES: usize = 24 * 1024;

/// Longest attribute value remembered; a longer one is read each time
/// (`descriptors`, `report_descriptor`: nothing rules compare).
pub const READ_CACHE_MAX_VALUE: usize = 256;

/// `idVendor`/`idProduct` reads (absent ones too) remembered across events,
/// in `sys::sysfs::IdCache`: a USB plug's events share their parents, so
/// one chain of ~12 directories is read once, not once per event. Exceeded:
/// the oldest entry is forgotten (read again when asked).
pub const ID_CACHE_ENTRIES: usize = 64;

/// Longest devpath whose IDs [`ID_CACHE_ENTRIES`] remembers (the deepest
/// real USB devpaths are ~110 bytes). Longer: read each time.
pub const ID_CACHE_DEVPATH: usize = 160;

/// Parent devices walked for `ATTRS`/`KERNELS`/`SUBSYSTEMS`/`DRIVERS`.
/// The deepest real USB paths are ~12 levels; the kernel allows 7 hub tiers.
pub const MAX_PARENT_DEPTH: usize = 32;

/// Longest sysfs path built (root + devpath + attribute). Linux `PATH_MAX`.
pub const MAX_PATH: usize = 4096;

/// Events with work to do that may wait for a handler slot (`--max-queue`
/// default). When the queue is full the daemon stops reading the socket: the
/// kernel's receive buffer is the overflow queue (counted as `queue_full`).
pub const DEFAULT_MAX_QUEUE: usize = 256;

/// Bytes reserved for one job (what one event asks the handler engine to
/// do: its label and DEVPATH, the event in wire form with the `ENV{}`
/// assignments, the handler environment, every argv and `ATTR{}` value),
/// for each of `--max-queue` + `--max-children` + 8 jobs, in one arena
/// allocated at start (`crate::job`). Measured on the 76 real USB events
/// of the aarch64 capture with the 100 USB benchmark rules: 605-803 bytes
/// a job. A kernel event is at most ~2.1 KiB (`UEVENT_BUFFER_SIZE`) and
/// appears twice (wire form, environment), which leaves ~3.8 KiB for
/// `ENV{}` values (also twice) and arguments. Memory is only touched as
/// jobs are written, so the resident cost is what jobs really use.
/// Exceeded (rules with many long values): the job moves to the heap,
/// whole; logged and counted (`job_oversize`), nothing is cut.
pub const JOB_SLOT: usize = 8 * 1024;

/// Handler processes running at once (`--max-children` default).
pub const DEFAULT_MAX_CHILDREN: usize = 8;

/// Seconds a handler may run before its process group gets SIGTERM
/// (`--handler-timeout` default).
pub const DEFAULT_HANDLER_TIMEOUT_SECS: u64 = 30;

/// Seconds between SIGTERM and SIGKILL for a handler that timed out.
pub const HANDLER_KILL_GRACE_SECS: u64 = 2;

/// Bytes of one line of handler output kept for the log. Longer lines are cut
/// there, logged with a marker and counted (`output_lines_cut`).
pub const HANDLER_LINE: usize = 512;

/// Bytes of one `--broadcast` datagram (one buffer, allocated when a
/// broadcast is configured).
///
/// The receivers decide: systemd's libudev (`device_monitor_receive_device`)
/// and libudev-zero both receive into an 8192-byte buffer and drop a
/// truncated datagram, so a longer one would be lost at every client.
/// A kernel event alone is at most ~2.1 KiB (`UEVENT_BUFFER_SIZE` 2048 +
/// header), which leaves ~6 KiB for `ENV{}` values and libudev's 40-byte
/// header. Exceeded: the event is not broadcast in that format; logged
/// (rate-limited) and counted (`broadcast_too_large`).
pub const BROADCAST_BUFFER: usize = 8192;

/// Most `--broadcast` targets. Exceeded: a usage error at start.
pub const MAX_BROADCAST_TARGETS: usize = 8;
