//! The command line: raw arguments (lexopt) → a validated [`Command`].
//!
//! Every error is one line that names the option and the fix; `main` prints
//! it with a pointer to `--help` and exits with status 2.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use lexopt::prelude::*;

use crate::broadcast::Target;
use crate::limits::{
    DEFAULT_HANDLER_TIMEOUT_SECS, DEFAULT_MAX_CHILDREN, DEFAULT_MAX_QUEUE, DEFAULT_RCVBUF,
    MIN_RCVBUF,
};
use crate::recovery::{Coldplug, Track};
use crate::sys::log::LogTarget;

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cli {
    /// `-v` given this many times (each raises the log level one step).
    pub verbose: u8,
    /// `--log-target` (default stderr).
    pub log_target: LogTarget,
    /// What to do.
    pub command: Command,
}

/// The commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Print help (the text is in the value) and exit 0.
    Help(&'static str),
    /// Print the version and exit 0.
    Version,
    /// `hotplugd monitor`.
    Monitor(MonitorOpts),
    /// `hotplugd run`.
    Run(RunOpts),
    /// `hotplugd check`.
    Check(CheckOpts),
    /// `hotplugd replay`.
    Replay(ReplayOpts),
    /// `hotplugd test-builtin`.
    TestBuiltin(TestBuiltinOpts),
    /// `hotplugd info`.
    Info(InfoOpts),
    /// `hotplugd test`.
    Test(TestOpts),
    /// `hotplugd trigger`.
    Trigger(TriggerOpts),
    /// `hotplugd settle`.
    Settle(SettleOpts),
    /// `hotplugd wait`.
    Wait(WaitOpts),
}

/// Options of `info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoOpts {
    /// The device: a `/sys` path, a devpath, or a `/dev` node or link.
    pub device: String,
    /// `-a`, `--attribute-walk`.
    pub attribute_walk: bool,
    /// `--json`.
    pub json: bool,
    /// `--sysfs-root` (default `/sys`).
    pub sysfs_root: PathBuf,
    /// `--control`; `None`: the default path.
    pub control: Option<PathBuf>,
}

/// Options of `test`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestOpts {
    /// `--rules`; empty: the built-in default rules.
    pub rules: Vec<PathBuf>,
    /// `--insecure-rules`.
    pub insecure_rules: bool,
    /// `--action` (default `add`).
    pub action: String,
    /// The device.
    pub device: String,
    /// `--sysfs-root` (default `/sys`).
    pub sysfs_root: PathBuf,
}

/// `trigger --type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerType {
    /// Every device (the default).
    Devices,
    /// Every bus (`/sys/bus/*/uevent`).
    Subsystems,
}

/// Options of `trigger`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerOpts {
    /// `--action` (default `change`).
    pub action: String,
    /// `--subsystem-match`, any of them.
    pub subsystem_match: Vec<String>,
    /// `--subsystem-nomatch`, none of them.
    pub subsystem_nomatch: Vec<String>,
    /// `--attr-match NAME[=VALUE]`, all of them.
    pub attr_match: Vec<(String, Option<String>)>,
    /// `--attr-nomatch NAME[=VALUE]`, none of them.
    pub attr_nomatch: Vec<(String, Option<String>)>,
    /// `--sysname-match`, any of them.
    pub sysname_match: Vec<String>,
    /// `--property-match KEY=VALUE`, any of them.
    pub property_match: Vec<(String, String)>,
    /// `--type`.
    pub kind: TriggerType,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--verbose`: print each path.
    pub verbose: bool,
    /// `--settle`.
    pub settle: bool,
    /// `--timeout` for `--settle`.
    pub timeout: Duration,
    /// `--control`.
    pub control: Option<PathBuf>,
}

/// Options of `settle`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettleOpts {
    /// `--timeout` (default 120 s).
    pub timeout: Duration,
    /// `--control`.
    pub control: Option<PathBuf>,
    /// `--verbose`: say what was settled.
    pub verbose: bool,
}

/// Options of `wait`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitOpts {
    /// The paths.
    pub paths: Vec<String>,
    /// `--timeout`; `None`: no limit.
    pub timeout: Option<Duration>,
    /// `--removed`.
    pub removed: bool,
    /// `--control`.
    pub control: Option<PathBuf>,
}

/// Where `run` listens for the tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlAt {
    /// [`crate::control::DEFAULT_PATH`]; if it cannot be set up, a warning.
    Default,
    /// `--control PATH`: if it cannot be set up, an error.
    Path(PathBuf),
    /// `--control none`.
    None,
}

/// Options of `test-builtin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestBuiltinOpts {
    /// The builtin: `usb_id`, `path_id` or `input_id`.
    pub name: String,
    /// The device: a `/sys/...` path or a devpath (`/devices/...`).
    pub device: String,
    /// `--sysfs-root` (default `/sys`).
    pub sysfs_root: PathBuf,
}

/// Options shared by `run` and `replay` that govern handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerOpts {
    /// `--rules`, in order; empty: the built-in default rules.
    pub rules: Vec<PathBuf>,
    /// `--handler-timeout`, seconds.
    pub timeout_secs: u64,
    /// `--max-children`.
    pub max_children: usize,
    /// `--max-queue`.
    pub max_queue: usize,
    /// `--sysfs-root`.
    pub sysfs_root: PathBuf,
    /// `--pass-env`, in order.
    pub pass_env: Vec<String>,
    /// `--insecure-rules`.
    pub insecure_rules: bool,
    /// `--handler-user USER[:GROUP]`, as given.
    pub handler_user: Option<String>,
    /// `--max-services`.
    pub max_services: usize,
    /// `--firmware-dir`, in order.
    pub firmware_dirs: Vec<PathBuf>,
}

impl Default for HandlerOpts {
    fn default() -> Self {
        HandlerOpts {
            rules: Vec::new(),
            timeout_secs: DEFAULT_HANDLER_TIMEOUT_SECS,
            max_children: DEFAULT_MAX_CHILDREN,
            max_queue: DEFAULT_MAX_QUEUE,
            sysfs_root: PathBuf::from("/sys"),
            pass_env: Vec::new(),
            insecure_rules: false,
            handler_user: None,
            max_services: crate::services::DEFAULT_MAX_SERVICES,
            firmware_dirs: Vec::new(),
        }
    }
}

/// Options of `run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOpts {
    /// Rules and handler settings.
    pub handlers: HandlerOpts,
    /// Receive buffer to request, bytes.
    pub rcvbuf: usize,
    /// `--ready-fd`: write a newline there when ready, then close it.
    pub ready_fd: Option<i32>,
    /// `--pidfile`: written when ready, removed on exit.
    pub pidfile: Option<PathBuf>,
    /// `--coldplug`.
    pub coldplug: Coldplug,
    /// `--track`; `None`: the subsystems the rules can match.
    pub track: Option<Track>,
    /// `--broadcast`, in order.
    pub broadcast: Vec<Target>,
    /// `--accept-injected`: also accept events the kernel rebroadcasts for a
    /// root process of another pid (containers).
    pub accept_injected: bool,
    /// `--control`.
    pub control: ControlAt,
    /// `--dev-root`: the directory whose nodes and links the rules'
    /// `OWNER`/`GROUP`/`MODE`/`SYMLINK` manage (default `/dev`); `None`:
    /// `--dev-root none`, /dev is not touched.
    pub dev_root: Option<PathBuf>,
}

/// Options of `check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOpts {
    /// `--rules`; empty: the built-in default rules.
    pub rules: Vec<PathBuf>,
    /// `--insecure-rules`.
    pub insecure_rules: bool,
    /// `--strict`: warnings fail the check too.
    pub strict: bool,
}

/// Options of `replay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayOpts {
    /// Rules and handler settings.
    pub handlers: HandlerOpts,
    /// Print what would run instead of running it.
    pub dry_run: bool,
    /// The recording; `None`: standard input.
    pub input: Option<PathBuf>,
}

/// Options of `monitor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorOpts {
    /// One JSON object per line instead of text blocks.
    pub json: bool,
    /// Receive buffer to request, bytes.
    pub rcvbuf: usize,
    /// `--subsystem-match`, `--property-match`: which events are printed.
    pub filter: crate::monitor::Filter,
}

/// A command line that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<lexopt::Error> for UsageError {
    fn from(e: lexopt::Error) -> Self {
        UsageError(e.to_string())
    }
}

/// `hotplugd --help`.
pub const HELP: &str = "\
hotplugd: a uevent/hotplug daemon for embedded Linux

Usage: hotplugd [-v]... COMMAND [OPTIONS]

Commands:
  monitor       print kernel uevents as they arrive (no configuration needed)
  run           the daemon: match events against rules and run their handlers
  check         check rule files; print every error and exit
  replay        run recorded events through the rules, as the daemon would
  test-builtin  print what a builtin (usb_id, path_id, input_id) computes
  info          a device's properties, or its attributes and parents (-a)
  test          trace the rules on a device's event: runs nothing
  trigger       make the kernel resend events (coldplug), optionally --settle
  settle        wait until the running daemon has handled every event
  wait          wait until /dev or /sys paths exist and are handled

Options for every command:
  -v, --verbose    more log output (repeat: -v debug, -vv trace); RUST_LOG
                   (e.g. RUST_LOG=hotplugd=debug) overrides it
  --log-target T   where log records go: stderr (default), kmsg (the kernel
                   log, /dev/kmsg: early boot, before syslogd), syslog
                   (RFC 3164 to /dev/log, facility daemon) or
                   syslog:/path/to/socket
  -h, --help       this help; `hotplugd COMMAND --help` for a command's options
  -V, --version    print the version

Logs: one record per line, `hotplugd: LEVEL: message` on stderr. A record
that would block (stderr is a full pipe) is dropped rather than stalling
the daemon, and counted (log_dropped= in the stats line). The stats line
itself always goes to stderr.

Exit status:
  0  success (also after SIGINT/SIGTERM, or when monitor's output is closed)
  1  configuration error (rules that do not load)
  2  usage error (bad option or value); the message names it
  3  system error (the uevent socket, signals or the event loop failed;
     for info, trigger, settle and wait: no daemon answers)
  4  timeout (settle, trigger --settle, wait)
";

/// `hotplugd monitor --help`.
pub const MONITOR_HELP: &str = "\
hotplugd monitor: print kernel uevents as they arrive

Usage: hotplugd monitor [--json] [--rcvbuf BYTES]
                        [--subsystem-match SUBSYSTEM[/DEVTYPE]]...
                        [--property-match KEY=VALUE]...

Listens on the kernel's uevent socket (NETLINK_KOBJECT_UEVENT, group 1) and
prints every event sent by the kernel. Datagrams from anyone else, cut or
malformed ones are not printed; they are counted.

Options:
  -s, --subsystem-match SUBSYSTEM[/DEVTYPE]
                   print only events of this subsystem (and devtype), compared
                   exactly; repeat to print several (any one may match), as
                   udevadm monitor does
  --property-match KEY=VALUE
                   print only events with property KEY matching VALUE (a glob:
                   *, ?, [...], a|b); repeat for several (any one may match).
                   With both kinds, an event must pass each kind. Filtered
                   events are never formatted, so they cost no output time
  --json           one JSON object per line:
                   {\"action\":..,\"devpath\":..,\"subsystem\":..,\"seqnum\":N,\"env\":{..}}
                   env is in wire order; a byte that is not UTF-8 is written
                   as \\udcXX (replay turns it back into the byte)
  --rcvbuf BYTES   socket receive buffer to request (default 16M; suffixes
                   K, M, G; at least 64K). The kernel doubles it; the log
                   says what was obtained. Asked with SO_RCVBUFFORCE, or
                   SO_RCVBUF (capped at net.core.rmem_max) without
                   CAP_NET_ADMIN.
  -h, --help       this help

Without --json each event is a block like `udevadm monitor --kernel
--property`: `KERNEL[uptime] ACTION DEVPATH (SUBSYSTEM)`, then KEY=VALUE
lines, then a blank line; control characters and bytes that are not UTF-8
are shown as \\xNN. Output is written once per batch of events taken from
the socket, and always before monitor waits for the next event, so
`hotplugd monitor --json | while read -r line; do ...; done` sees each event
as soon as it arrives.

On exit (SIGINT, SIGTERM, or when stdout is closed) one line goes to stderr:
  stats: received=N accepted=N rejected=N truncated=N malformed=N overruns=N seqnum_gaps=N dropped=N
SIGUSR1 logs the same line at any time.
";

const RULES_OPTS: &str =
    "  --rules PATH     a rules file, or a directory of *.rules files; repeatable.
                   As udev: the files of all paths load in one order, by
                   file name; a later path's file of the same name replaces
                   an earlier one (--rules /lib/udev/rules.d --rules
                   /etc/udev/rules.d: /etc wins) and a symlink to /dev/null
                   masks it. Without it: the built-in default rules (log
                   every USB device plugged or unplugged)
  --insecure-rules when running as root, rule files, rule directories and
                   RUN programs (and their directories) must be owned by
                   root and not writable by group or others, or nothing
                   loads (each path is named, with the fix); this accepts
                   them anyway, with a warning each";

const HANDLER_OPTS: &str = "  --handler-timeout SECS
                   SIGTERM to a handler's process group after SECS
                   (default 30), SIGKILL 2 s later; one SIGKILL cannot end
                   (a hung mount or driver) gives its slot back 2 s after
  --max-children N handler processes at once (default 8)
  --max-queue N    events with handlers that may wait (default 256); when
                   full, the socket is not read until one finishes
  --sysfs-root DIR sysfs for ATTR/ATTRS/KERNELS/SUBSYSTEMS/DRIVERS, $attr{}
                   and ATTR{}= writes (default /sys; a fixture tree for tests)
  --pass-env NAME  pass the daemon's variable NAME to handlers; repeatable
                   (handlers otherwise get only the event, ENV{} values,
                   HOTPLUGD_RULE=file:line and PATH)
  --handler-user USER[:GROUP]
                   run RUN handlers as USER (and its primary group, or
                   GROUP), with no supplementary groups. Builtins (in the
                   daemon) and ATTR{}= writes (in a child of it) stay root;
                   RUN{service} programs run as USER too
  --max-services N RUN{service} programs running at once (default 32); one
                   more is refused, logged and counted (services_failed).
                   Services take no --max-children slot and no
                   --handler-timeout; they are restarted with a backoff
                   (1 s doubling to 60 s) and stopped on their device's
                   remove: SIGTERM, SIGKILL 2 s later
  --firmware-dir DIR
                   searched first by RUN{builtin}+=\"firmware\", before
                   /lib/firmware/updates/$(uname -r), /lib/firmware/updates,
                   /lib/firmware/$(uname -r) and /lib/firmware; repeatable";

/// `hotplugd run --help`.
pub fn run_help() -> String {
    format!(
        "\
hotplugd run: the daemon

Usage: hotplugd run [--rules PATH]... [OPTIONS]

Listens for kernel uevents, runs each through the rules in order, and runs
the handlers of matching rules: programs without a shell, with the event as
their environment, in their own process group, stdout and stderr logged.
Events of one device (and of its parents and children) are handled in
arrival order; unrelated devices in parallel. Foreground; logs on stderr.

Options:
{RULES_OPTS}
{HANDLER_OPTS}
  --rcvbuf BYTES   socket receive buffer to request (default 16M, at least 64K)
  --ready-fd N     when ready, write a newline to descriptor N and close it
                   (s6 notification-fd, mdevd's -D); N >= 3, must be open
  --pidfile FILE   write our PID to FILE when ready; removed on exit
  --coldplug MODE  devices present at start: none (default: only learn
                   them, run no handler), synthesize (a synthetic add per
                   device, HOTPLUGD_COLDPLUG=1 in its environment), trigger
                   (the kernel resends each device's add, SYNTH_UUID set)
  --track LIST     subsystems whose devices the table follows, for coldplug
                   and overrun recovery: usb,tty,... or all (default: the
                   SUBSYSTEM== values of rules with handlers; all if some
                   rule with handlers has none)
  --broadcast TO   once handled, send each event on to other programs;
                   repeatable. udev: libudev's format to group 2 (libudev,
                   pyudev, libusb, udevadm monitor --udev); kernel:MASK: the
                   kernel's format to group mask MASK, as mdevd -O
                   (libudev-zero: kernel:4). ENV{{}} values included
  --control PATH   the control socket the tools talk to (settle, trigger
                   --settle, wait, info): default /run/hotplugd/control,
                   none to have none. Root only (mode 0600, SO_PEERCRED
                   checked). A stale file is removed at start; at the
                   default path a failure is only a warning
  --accept-injected
                   also accept uevents the kernel relays from a root
                   process (port 0, uid 0, any pid). Inside an LXD/Incus
                   container the host's manager injects the container's
                   uevents this way, so without it every event is rejected.
                   Off by default: on a board only the kernel itself (pid 0)
                   sends uevents, and any root process could inject one
  --dev-root DIR   where device nodes and links live (default /dev): the
                   rules' OWNER, GROUP and MODE are applied to DIR/$DEVNAME
                   (only if it is the event's device node) and SYMLINK links
                   made under DIR, removed when their device goes; `none`:
                   leave /dev alone (another manager owns it). A directory
                   that cannot be opened: warned about, and left alone
  -v, --verbose    more log output (repeatable)
  -h, --help       this help

After an overrun (events lost: ENOBUFS) the socket is read to its end and
sysfs is walked: devices that appeared get a synthetic add, devices that
went away a synthetic remove (with the keys of their add), through the same
rules, with HOTPLUGD_RESYNC=1 in their environment.

Ready means: socket bound, rules loaded, coldplug done. If $NOTIFY_SOCKET is set
(systemd Type=notify), READY=1 is sent then, RELOADING=1 and READY=1 around
each SIGHUP reload, and STOPPING=1 on SIGINT/SIGTERM.

Rules load as udev 252 loads them: a line udev would skip is skipped and
logged, and the rest runs; a construct hotplugd cannot do as udev would
(PROGRAM, TEST, NAME, ...) stops the start (see `hotplugd check --help`).

Signals: SIGHUP reloads every rule file (if one cannot be read, parses not at
all, or is refused, the old rules stay in force and each error is logged;
skipped lines are logged and the rest loads); SIGUSR1 logs the counters; SIGINT/SIGTERM
stop: queued work is dropped (logged), handlers get SIGTERM, then SIGKILL
2 s later; exit 0 once every handler is reaped (one SIGKILL did not end is
given up on 2 s after that, so a stop takes at most 4 s).

On exit one line goes to stderr:
  stats: received=N ... matched=N handlers_started=N handlers_failed=N
  handlers_timed_out=N handlers_unkillable=N queue_full=N output_lines_cut=N
  output_lines_suppressed=N limits_hit=N attr_write_failed=N job_oversize=N
  resyncs=N resync_retries=N synthetic_adds=N synthetic_removes=N
  table_full=N resync_unchecked=N synthetic_malformed=N broadcast_sent=N
  broadcast_again=N broadcast_nobufs=N broadcast_refused=N broadcast_failed=N
  broadcast_too_large=N dev_perms_applied=N dev_perms_refused=N
  dev_perms_failed=N dev_links_made=N dev_links_removed=N dev_links_refused=N
  dev_link_conflicts=N dev_links_failed=N table_records_cut=N
  remove_props_cut=N longest_turn_us=N log_dropped=N
"
    )
}

/// `hotplugd check --help`.
pub fn check_help() -> String {
    format!(
        "\
hotplugd check: check rule files

Usage: hotplugd check [--rules PATH]... [--strict]

Loads the rules exactly as `run` would and prints every problem as
`file:line:column: message`, the line and a caret, then a one-line summary
(`rules: N rules from M files`) on standard output. Reads rules as udev 252:
- a line udev would skip (unknown key, wrong operator, bad value, unknown
  user or group, ...) is an error and is skipped; the rest loads (`run`
  runs with it, as udev would); `check` exits 1;
- a construct hotplugd cannot do as udev would (PROGRAM, TEST, NAME,
  RUN{{builtin}} it lacks, ...) refuses the whole set: nothing loads, `run`
  does not start, a reload keeps the old rules; exit 1;
- what udev accepts with a note (a coerced operator such as MODE+=, a
  pattern that can never match, an OPTIONS value without meaning here, a
  missing comma, a RUN program missing on this machine, a rule that does
  nothing) is a warning: exit 0, unless --strict.

Options:
{RULES_OPTS}
  --strict         warnings fail the check too (exit 1)
  -h, --help       this help
"
    )
}

/// `hotplugd replay --help`.
pub fn replay_help() -> String {
    format!(
        "\
hotplugd replay: run recorded events through the rules

Usage: hotplugd replay [--rules PATH]... [--dry-run] [OPTIONS] [FILE|-]

Reads events (default: standard input) and handles them exactly as `run`
would: same rules, environment, ordering, limits and timeouts. Input: the
JSON lines `hotplugd monitor --json` prints, and/or the text blocks of
`udevadm monitor --kernel --property` (UDEV blocks are skipped). Ends when
every event has been handled and every handler has finished.

Options:
{RULES_OPTS}
  --dry-run        run nothing: print, per event, each matching rule
                   (file:line) and the argv and environment it would run
{HANDLER_OPTS}
  -v, --verbose    more log output (repeatable)
  -h, --help       this help
"
    )
}

/// `hotplugd test-builtin --help`.
pub const TEST_BUILTIN_HELP: &str = "\
hotplugd test-builtin: print what a builtin computes for a device

Usage: hotplugd test-builtin NAME DEVICE [--sysfs-root DIR]

Runs the builtin NAME on DEVICE and prints its properties, one KEY=VALUE
per line, in the order udev 252's `udevadm test-builtin` prints them:
  usb_id    ID_BUS, ID_VENDOR, ID_VENDOR_ENC, ID_VENDOR_ID, ID_MODEL,
            ID_MODEL_ENC, ID_MODEL_ID, ID_REVISION, ID_SERIAL,
            ID_SERIAL_SHORT, ID_TYPE, ID_INSTANCE, their ID_USB_* copies,
            ID_USB_INTERFACES, ID_USB_INTERFACE_NUM, ID_USB_DRIVER
  path_id   ID_PATH, ID_PATH_TAG (ID_PATH_ATA_COMPAT for ATA disks)
  input_id  ID_INPUT, ID_INPUT_KEY, ID_INPUT_KEYBOARD, ID_INPUT_MOUSE,
            ID_INPUT_TOUCHPAD, ID_INPUT_TOUCHSCREEN, ID_INPUT_JOYSTICK,
            ID_INPUT_TABLET, ID_INPUT_TABLET_PAD, ID_INPUT_ACCELEROMETER,
            ID_INPUT_POINTINGSTICK, ID_INPUT_SWITCH (nothing, and exit
            status 0, for a device that is not an input device)
DEVICE is a sysfs path (/sys/class/tty/ttyUSB0, /sys/devices/...) or a
devpath (/devices/...); links are followed. Nothing is written anywhere.

Options:
  --sysfs-root DIR sysfs to read (default /sys; a fixture tree for tests):
                   /sys/... in DEVICE is read under DIR
  -v, --verbose    more log output (repeatable)
  -h, --help       this help

Exit status: 0 with the properties; 1 when the builtin sets nothing (not a
USB device, no persistent path: the reason is logged); 2 usage error.
";

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Cli, UsageError> {
    let mut p = lexopt::Parser::from_args(args);
    let mut c = Common {
        verbose: 0,
        log_target: LogTarget::Stderr,
    };
    // Options that may come before the command.
    let command = loop {
        match p.next()? {
            Some(Short('h') | Long("help")) => return Ok(c.cli(Command::Help(HELP))),
            Some(Short('V') | Long("version")) => return Ok(c.cli(Command::Version)),
            Some(Value(v)) => break v.string()?,
            Some(Short('v') | Long("verbose")) => c.verbose = c.verbose.saturating_add(1),
            Some(Long("log-target")) => c.log_target(&mut p)?,
            Some(other) => return Err(other.unexpected().into()),
            None => {
                return Err(UsageError(
                    "no command given: try `hotplugd monitor`, or `hotplugd --help`".into(),
                ))
            }
        }
    };
    let command = match command.as_str() {
        "monitor" => parse_monitor(&mut p, &mut c)?,
        "run" => parse_run(&mut p, &mut c)?,
        "check" => parse_check(&mut p, &mut c)?,
        "replay" => parse_replay(&mut p, &mut c)?,
        "test-builtin" => parse_test_builtin(&mut p, &mut c)?,
        "info" => parse_info(&mut p, &mut c)?,
        "test" => parse_test(&mut p, &mut c)?,
        "trigger" => parse_trigger(&mut p, &mut c)?,
        "settle" => parse_settle(&mut p, &mut c)?,
        "wait" => parse_wait(&mut p, &mut c)?,
        other => {
            return Err(UsageError(format!(
                "unknown command '{other}': the commands are monitor, run, check, replay, test-builtin, info, test, trigger, settle and wait (see `hotplugd --help`)"
            )))
        }
    };
    Ok(c.cli(command))
}

/// Options every command takes, before or after its name.
struct Common {
    verbose: u8,
    log_target: LogTarget,
}

impl Common {
    fn cli(self, command: Command) -> Cli {
        Cli {
            verbose: self.verbose,
            log_target: self.log_target,
            command,
        }
    }

    /// `--log-target VALUE`.
    fn log_target(&mut self, p: &mut lexopt::Parser) -> Result<(), UsageError> {
        let v = p.value()?.string()?;
        self.log_target = LogTarget::parse(&v).ok_or_else(|| {
            UsageError(format!(
                "--log-target '{v}': expected stderr, kmsg, syslog or syslog:/path/to/socket"
            ))
        })?;
        Ok(())
    }
}

fn parse_monitor(p: &mut lexopt::Parser, c: &mut Common) -> Result<Command, UsageError> {
    let mut o = MonitorOpts {
        json: false,
        rcvbuf: DEFAULT_RCVBUF,
        filter: crate::monitor::Filter::default(),
    };
    while let Some(arg) = p.next()? {
        match arg {
            Long("json") => o.json = true,
            Short('s') | Long("subsystem-match") => {
                let v = p.value()?.string()?;
                let (sub, devtype) = match v.split_once('/') {
                    Some((s, t)) => (s, Some(t)),
                    None => (v.as_str(), None),
                };
                if sub.is_empty() || devtype.is_some_and(str::is_empty) {
                    return Err(UsageError(format!(
                        "--subsystem-match '{v}': give SUBSYSTEM or SUBSYSTEM/DEVTYPE, e.g. usb/usb_device"
                    )));
                }
                o.filter
                    .subsystems
                    .push((sub.to_owned(), devtype.map(str::to_owned)));
            }
            Long("property-match") => {
                let v = p.value()?.string()?;
                let Some((k, val)) = v.split_once('=').filter(|(k, _)| !k.is_empty()) else {
                    return Err(UsageError(format!(
                        "--property-match '{v}': give KEY=VALUE, e.g. ID_VENDOR_ID=0403"
                    )));
                };
                if let Err(e) = crate::rules::glob::check(val.as_bytes()) {
                    return Err(UsageError(format!(
                        "--property-match '{v}': the value at column {}: {}",
                        k.len() + 2 + e.offset(),
                        e.describe()
                    )));
                }
                o.filter.properties.push((k.to_owned(), val.to_owned()));
            }
            Long("rcvbuf") => o.rcvbuf = rcvbuf(&p.value()?.string()?)?,
            Short('h') | Long("help") => return Ok(Command::Help(MONITOR_HELP)),
            Short('v') | Long("verbose") => c.verbose = c.verbose.saturating_add(1),
            Long("log-target") => c.log_target(p)?,
            other => return Err(other.unexpected().into()),
        }
    }
    Ok(Command::Monitor(o))
}

const HANDLER_LONGS: [&str; 10] = [
    "max-services",
    "firmware-dir",
    "rules",
    "handler-timeout",
    "max-children",
    "max-queue",
    "sysfs-root",
    "pass-env",
    "insecure-rules",
    "handler-user",
];

/// Handles a long option shared by `run` and `replay` (one of
/// [`HANDLER_LONGS`]).
fn handler_opt(name: &str, p: &mut lexopt::Parser, h: &mut HandlerOpts) -> Result<(), UsageError> {
    match name {
        "rules" => h.rules.push(p.value()?.into()),
        "handler-timeout" => {
            h.timeout_secs = number(p, "--handler-timeout", 1, 86_400)? as u64;
        }
        "max-children" => h.max_children = number(p, "--max-children", 1, 1024)?,
        "max-queue" => h.max_queue = number(p, "--max-queue", 1, 65_536)?,
        "max-services" => h.max_services = number(p, "--max-services", 1, 1024)?,
        "firmware-dir" => h.firmware_dirs.push(p.value()?.into()),
        "sysfs-root" => h.sysfs_root = p.value()?.into(),
        "insecure-rules" => h.insecure_rules = true,
        "handler-user" => {
            let v = p.value()?.string()?;
            if v.is_empty() || v.starts_with(':') || v.ends_with(':') {
                return Err(UsageError(format!(
                    "--handler-user '{v}': expected USER or USER:GROUP (names or numbers)"
                )));
            }
            h.handler_user = Some(v);
        }
        "pass-env" => {
            let name = p.value()?.string()?;
            if !crate::rules::subst::valid_env_name(name.as_bytes()) {
                return Err(UsageError(format!(
                    "--pass-env '{name}': expected a variable name (letters, digits, _)"
                )));
            }
            h.pass_env.push(name);
        }
        _ => unreachable!("handler_opt called for --{name}"),
    }
    Ok(())
}

fn number(p: &mut lexopt::Parser, opt: &str, min: usize, max: usize) -> Result<usize, UsageError> {
    let s = p.value()?.string()?;
    match s.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(UsageError(format!(
            "{opt} '{s}': expected a whole number from {min} to {max}"
        ))),
    }
}

fn parse_run(p: &mut lexopt::Parser, c: &mut Common) -> Result<Command, UsageError> {
    let mut o = RunOpts {
        handlers: HandlerOpts::default(),
        rcvbuf: DEFAULT_RCVBUF,
        ready_fd: None,
        pidfile: None,
        coldplug: Coldplug::None,
        track: None,
        broadcast: Vec::new(),
        accept_injected: false,
        control: ControlAt::Default,
        dev_root: Some(PathBuf::from("/dev")),
    };
    while let Some(arg) = p.next()? {
        match arg {
            Long(name) if HANDLER_LONGS.contains(&name) => {
                let name = name.to_string();
                handler_opt(&name, p, &mut o.handlers)?;
            }
            Long("rcvbuf") => o.rcvbuf = rcvbuf(&p.value()?.string()?)?,
            Long("ready-fd") => o.ready_fd = Some(number(p, "--ready-fd", 3, 1 << 20)? as i32),
            Long("pidfile") => o.pidfile = Some(p.value()?.into()),
            Long("accept-injected") => o.accept_injected = true,
            Long("control") => {
                let v = p.value()?;
                o.control = if v == "none" {
                    ControlAt::None
                } else {
                    ControlAt::Path(v.into())
                };
            }
            Long("dev-root") => {
                let v = p.value()?;
                o.dev_root = if v == "none" { None } else { Some(v.into()) };
            }
            Long("coldplug") => {
                let v = p.value()?.string()?;
                o.coldplug = Coldplug::parse(&v).ok_or_else(|| {
                    UsageError(format!(
                        "--coldplug '{v}': expected none, synthesize or trigger"
                    ))
                })?;
            }
            Long("track") => {
                let v = p.value()?.string()?;
                o.track = Some(if v == "all" {
                    Track::All
                } else {
                    let list: Vec<String> = v.split(',').map(str::to_string).collect();
                    if list.iter().any(|s| {
                        s.is_empty()
                            || !s
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b))
                    }) {
                        return Err(UsageError(format!(
                            "--track '{v}': expected `all` or subsystem names separated by commas (e.g. usb,tty,block,net)"
                        )));
                    }
                    Track::Only(list)
                });
            }
            Long("broadcast") => {
                let v = p.value()?.string()?;
                let t =
                    Target::parse(&v).map_err(|e| UsageError(format!("--broadcast '{v}': {e}")))?;
                if o.broadcast.len() == crate::limits::MAX_BROADCAST_TARGETS {
                    return Err(UsageError(format!(
                        "--broadcast: at most {} targets",
                        crate::limits::MAX_BROADCAST_TARGETS
                    )));
                }
                o.broadcast.push(t);
            }
            Short('h') | Long("help") => return Ok(Command::Help(leak(run_help()))),
            Short('v') | Long("verbose") => c.verbose = c.verbose.saturating_add(1),
            Long("log-target") => c.log_target(p)?,
            other => return Err(other.unexpected().into()),
        }
    }
    Ok(Command::Run(o))
}

fn parse_check(p: &mut lexopt::Parser, c: &mut Common) -> Result<Command, UsageError> {
    let mut o = CheckOpts {
        rules: Vec::new(),
        insecure_rules: false,
        strict: false,
    };
    while let Some(arg) = p.next()? {
        match arg {
            Long("rules") => o.rules.push(p.value()?.into()),
            Long("insecure-rules") => o.insecure_rules = true,
            Long("strict") => o.strict = true,
            Short('h') | Long("help") => return Ok(Command::Help(leak(check_help()))),
            Short('v') | Long("verbose") => c.verbose = c.verbose.saturating_add(1),
            Long("log-target") => c.log_target(p)?,
            other => return Err(other.unexpected().into()),
        }
    }
    Ok(Command::Check(o))
}

fn parse_test_builtin(p: &mut lexopt::Parser, c: &mut Common) -> Result<Command, UsageError> {
    let mut sysfs_root = PathBuf::from("/sys");
    let mut pos: Vec<String> = Vec::new();
    while let Some(arg) = p.next()? {
        match arg {
            Value(v) => pos.push(v.string()?),
            Long("sysfs-root") => sysfs_root = p.value()?.into(),
            Short('h') | Long("help") => return Ok(Command::Help(TEST_BUILTIN_HELP)),
            Short('v') | Long("verbose") => c.verbose = c.verbose.saturating_add(1),
            Long("log-target") => c.log_target(p)?,
            other => return Err(other.unexpected().into()),
        }
    }
    let [name, device] = <[String; 2]>::try_from(pos).map_err(|_| {
        UsageError("test-builtin needs NAME and DEVICE: hotplugd test-builtin usb_id /sys/class/tty/ttyUSB0".into())
    })?;
    if !crate::identity::BUILTINS.contains(&name.as_str()) {
        return Err(UsageError(format!(
            "test-builtin '{name}': the builtins are {}",
            crate::identity::BUILTINS.join(", ")
        )));
    }
    Ok(Command::TestBuiltin(TestBuiltinOpts {
        name,
        device,
        sysfs_root,
    }))
}

fn parse_replay(p: &mut lexopt::Parser, c: &mut Common) -> Result<Command, UsageError> {
    let mut o = ReplayOpts {
        handlers: HandlerOpts::default(),
        dry_run: false,
        input: None,
    };
    let mut input_given = false;
    while let Some(arg) = p.next()? {
        match arg {
            Long(name) if HANDLER_LONGS.contains(&name) => {
                let name = name.to_string();
                handler_opt(&name, p, &mut o.handlers)?;
            }
            Long("dry-run") => o.dry_run = true,
            Short('h') | Long("help") => return Ok(Command::Help(leak(replay_help()))),
            Value(v) if !input_given => {
                input_given = true;
                o.input = (v != "-").then(|| v.into());
            }
            Short('v') | Long("verbose") => c.verbose = c.verbose.saturating_add(1),
            Long("log-target") => c.log_target(p)?,
            other => return Err(other.unexpected().into()),
        }
    }
    Ok(Command::Replay(o))
}

const CONTROL_OPT: &str =
    "  --control PATH   the daemon's control socket (default /run/hotplugd/control)";

/// `hotplugd info --help`.
pub fn info_help() -> String {
    format!(
        "\
hotplugd info: a device's properties, or its attributes and parents

Usage: hotplugd info [-a] [--json] [--sysfs-root DIR] DEVICE

DEVICE is a sysfs path (/sys/class/tty/ttyUSB0), a devpath
(/devices/virtual/mem/full) or a device node or link (/dev/ttyUSB0: its
major:minor is looked up in /sys/dev). Without -a: the properties the
kernel gives the device (its uevent file, as `udevadm info` shows them:
P: devpath, M: name, U: subsystem, N: node, E: KEY=VALUE), then what the
running daemon's device table holds for it (if a daemon runs and tracks
its subsystem).

Options:
  -a, --attribute-walk
                   the device and every parent, each attribute as a match
                   term to paste into a rule (ATTRS{{idVendor}}==\"0403\",
                   KERNELS==..., SUBSYSTEMS==..., DRIVERS==...). Attributes
                   that are unreadable, binary, several lines long or hold
                   a quote are not shown; each is named, with the reason
  --json           one JSON object instead of text
  --sysfs-root DIR sysfs to read (default /sys; a fixture tree for tests).
                   With another root the daemon is not asked
{CONTROL_OPT}
  -h, --help       this help
"
    )
}

/// `hotplugd test --help`.
pub fn test_help() -> String {
    format!(
        "\
hotplugd test: trace the rules on a device's event

Usage: hotplugd test [--rules PATH]... [--action ACTION] DEVICE

Builds the event DEVICE would send (ACTION, DEVPATH, SUBSYSTEM and its
uevent file) and runs the rules on it as the daemon would. Prints every
rule visited with each of its terms: ok or FAIL, and the value it saw
(for parent terms, the device where it held); then the ENV{{}} assignments,
the node's owner, group, mode and links, and the argv and environment of
each handler. Runs nothing, writes nothing, sends nothing.

Options:
{RULES_OPTS}
  --action ACTION  the event's action (default add)
  --sysfs-root DIR sysfs to read (default /sys; a fixture tree for tests)
  -h, --help       this help
"
    )
}

/// `hotplugd trigger --help`.
pub fn trigger_help() -> String {
    format!(
        "\
hotplugd trigger: make the kernel send events for present devices

Usage: hotplugd trigger [OPTIONS]

Writes `ACTION UUID` to the uevent file of each matching device, parents
first: the kernel sends a real event, marked SYNTH_UUID=UUID (one UUID per
run). The boot-time coldplug: `hotplugd trigger --action=add --settle`.

Options:
  -c, --action ACTION
                   add, remove, change (default), move, online, offline,
                   bind or unbind
  -s, --subsystem-match SUBSYSTEM
                   only devices of SUBSYSTEM (a glob); repeatable: any
  -S, --subsystem-nomatch SUBSYSTEM
                   not devices of SUBSYSTEM; repeatable
  -a, --attr-match NAME[=VALUE]
                   only devices whose attribute NAME exists [and matches
                   the glob VALUE]; repeatable: all must hold
  -A, --attr-nomatch NAME[=VALUE]
                   not devices whose attribute NAME exists [and matches];
                   repeatable
  -y, --sysname-match NAME
                   only devices whose kernel name matches; repeatable: any
  -p, --property-match KEY=VALUE
                   only devices with the uevent property; repeatable: any
  -t, --type TYPE  devices (default) or subsystems (/sys/bus/*/uevent)
  -n, --dry-run    write nothing (with --verbose: list what would be)
  -v, --verbose    print the path of each device written to
  -w, --settle     then wait until the running daemon has handled every
                   event, handlers included; at --timeout fail (exit 4)
                   naming the devices whose jobs are still pending
  --timeout SECS   for --settle (default 120)
{CONTROL_OPT}
  -h, --help       this help
"
    )
}

/// `hotplugd settle --help`.
pub fn settle_help() -> String {
    format!(
        "\
hotplugd settle: wait until the running daemon has handled every event

Usage: hotplugd settle [--timeout SECS]

Returns (exit 0) once the daemon has read every event the kernel had sent
it when the request arrived, and no handler job waits or runs and no
coldplug or resync pass is pending. That covers every event up to the
kernel's current /sys/kernel/uevent_seqnum that is for this network
namespace: events of other namespaces (containers) take sequence numbers
too but never reach the daemon, so waiting for the raw number could hang.
At the timeout: exit 4, naming the SEQNUM handled so far and the jobs
still queued or running. No daemon: exit 3 at once. A daemon that stops
while we wait is taken for a restart: the new one is asked, until the
timeout.

Options:
  -t, --timeout SECS
                   give up after SECS (default 120)
  -v, --verbose    say what was settled
{CONTROL_OPT}
  -h, --help       this help
"
    )
}

/// `hotplugd wait --help`.
pub fn wait_help() -> String {
    format!(
        "\
hotplugd wait: wait until devices exist (or are gone) and are handled

Usage: hotplugd wait [--timeout SECS] [--removed] PATH...

Returns once every PATH (a /dev node or link, or a /sys device directory)
exists (with --removed: does not exist), and the running daemon has then
handled the events up to that moment (as `settle`). Useful where drivers
probe asynchronously, so a finished trigger does not mean the device is
there yet. At the timeout: exit 4, naming the paths not ready.

Options:
  -t, --timeout SECS
                   give up after SECS (default: no limit)
  --removed        wait for the paths to be gone
{CONTROL_OPT}
  -h, --help       this help
"
    )
}

fn secs(p: &mut lexopt::Parser, opt: &str) -> Result<Duration, UsageError> {
    let s = p.value()?.string()?;
    match s.parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 && n <= 86_400.0 => Ok(Duration::from_secs_f64(n)),
        _ => Err(UsageError(format!(
            "{opt} '{s}': expected seconds, more than 0 and at most 86400 (e.g. 30 or 0.5)"
        ))),
    }
}

fn parse_info(p: &mut lexopt::Parser, c: &mut Common) -> Result<Command, UsageError> {
    let mut o = InfoOpts {
        device: String::new(),
        attribute_walk: false,
        json: false,
        sysfs_root: PathBuf::from("/sys"),
        control: None,
    };
    let mut pos = Vec::new();
    while let Some(arg) = p.next()? {
        match arg {
            Value(v) => pos.push(v.string()?),
            Short('a') | Long("attribute-walk") => o.attribute_walk = true,
            Long("json") => o.json = true,
            Long("sysfs-root") => o.sysfs_root = p.value()?.into(),
            Long("control") => o.control = Some(p.value()?.into()),
            Short('h') | Long("help") => return Ok(Command::Help(leak(info_help()))),
            Short('v') | Long("verbose") => c.verbose = c.verbose.saturating_add(1),
            Long("log-target") => c.log_target(p)?,
            other => return Err(other.unexpected().into()),
        }
    }
    let [device] = <[String; 1]>::try_from(pos).map_err(|_| {
        UsageError(
            "info needs one DEVICE: hotplugd info /sys/class/net/lo (or a devpath, or /dev/...)"
                .into(),
        )
    })?;
    o.device = device;
    Ok(Command::Info(o))
}

fn parse_test(p: &mut lexopt::Parser, c: &mut Common) -> Result<Command, UsageError> {
    let mut o = TestOpts {
        rules: Vec::new(),
        insecure_rules: false,
        action: "add".into(),
        device: String::new(),
        sysfs_root: PathBuf::from("/sys"),
    };
    let mut pos = Vec::new();
    while let Some(arg) = p.next()? {
        match arg {
            Value(v) => pos.push(v.string()?),
            Long("rules") => o.rules.push(p.value()?.into()),
            Long("insecure-rules") => o.insecure_rules = true,
            Short('a') | Long("action") => o.action = action(p)?,
            Long("sysfs-root") => o.sysfs_root = p.value()?.into(),
            Short('h') | Long("help") => return Ok(Command::Help(leak(test_help()))),
            Short('v') | Long("verbose") => c.verbose = c.verbose.saturating_add(1),
            Long("log-target") => c.log_target(p)?,
            other => return Err(other.unexpected().into()),
        }
    }
    let [device] = <[String; 1]>::try_from(pos).map_err(|_| {
        UsageError("test needs one DEVICE: hotplugd test --rules my.rules /sys/class/net/lo".into())
    })?;
    o.device = device;
    Ok(Command::Test(o))
}

fn action(p: &mut lexopt::Parser) -> Result<String, UsageError> {
    let v = p.value()?.string()?;
    if !crate::rules::ACTIONS.contains(&v.as_str()) {
        return Err(UsageError(format!(
            "--action '{v}': expected one of {}",
            crate::rules::ACTIONS.join(", ")
        )));
    }
    Ok(v)
}

fn name_value(
    v: String,
    opt: &str,
    need_value: bool,
) -> Result<(String, Option<String>), UsageError> {
    let (k, val) = match v.split_once('=') {
        Some((k, val)) => (k.to_string(), Some(val.to_string())),
        None => (v.clone(), None),
    };
    if k.is_empty() || k.contains('/') || (need_value && val.is_none()) {
        let form = if need_value {
            "KEY=VALUE"
        } else {
            "NAME[=VALUE]"
        };
        return Err(UsageError(format!("{opt} '{v}': expected {form}")));
    }
    Ok((k, val))
}

fn parse_trigger(p: &mut lexopt::Parser, c: &mut Common) -> Result<Command, UsageError> {
    let mut o = TriggerOpts {
        action: "change".into(),
        subsystem_match: Vec::new(),
        subsystem_nomatch: Vec::new(),
        attr_match: Vec::new(),
        attr_nomatch: Vec::new(),
        sysname_match: Vec::new(),
        property_match: Vec::new(),
        kind: TriggerType::Devices,
        dry_run: false,
        verbose: false,
        settle: false,
        timeout: Duration::from_secs(120),
        control: None,
    };
    while let Some(arg) = p.next()? {
        match arg {
            Short('c') | Long("action") => o.action = action(p)?,
            Short('s') | Long("subsystem-match") => o.subsystem_match.push(p.value()?.string()?),
            Short('S') | Long("subsystem-nomatch") => {
                o.subsystem_nomatch.push(p.value()?.string()?)
            }
            Short('a') | Long("attr-match") => {
                o.attr_match
                    .push(name_value(p.value()?.string()?, "--attr-match", false)?)
            }
            Short('A') | Long("attr-nomatch") => {
                o.attr_nomatch
                    .push(name_value(p.value()?.string()?, "--attr-nomatch", false)?)
            }
            Short('y') | Long("sysname-match") => o.sysname_match.push(p.value()?.string()?),
            Short('p') | Long("property-match") => {
                let (k, v) = name_value(p.value()?.string()?, "--property-match", true)?;
                o.property_match.push((k, v.unwrap_or_default()));
            }
            Short('t') | Long("type") => {
                let v = p.value()?.string()?;
                o.kind = match v.as_str() {
                    "devices" => TriggerType::Devices,
                    "subsystems" => TriggerType::Subsystems,
                    _ => {
                        return Err(UsageError(format!(
                            "--type '{v}': expected devices or subsystems"
                        )))
                    }
                };
            }
            Short('n') | Long("dry-run") => o.dry_run = true,
            Short('v') | Long("verbose") => o.verbose = true,
            Short('w') | Long("settle") => o.settle = true,
            Long("timeout") => o.timeout = secs(p, "--timeout")?,
            Long("control") => o.control = Some(p.value()?.into()),
            Short('h') | Long("help") => return Ok(Command::Help(leak(trigger_help()))),
            Long("log-target") => c.log_target(p)?,
            other => return Err(other.unexpected().into()),
        }
    }
    Ok(Command::Trigger(o))
}

fn parse_settle(p: &mut lexopt::Parser, c: &mut Common) -> Result<Command, UsageError> {
    let mut o = SettleOpts {
        timeout: Duration::from_secs(120),
        control: None,
        verbose: false,
    };
    while let Some(arg) = p.next()? {
        match arg {
            Short('t') | Long("timeout") => o.timeout = secs(p, "--timeout")?,
            Long("control") => o.control = Some(p.value()?.into()),
            Short('v') | Long("verbose") => o.verbose = true,
            Short('h') | Long("help") => return Ok(Command::Help(leak(settle_help()))),
            Long("log-target") => c.log_target(p)?,
            other => return Err(other.unexpected().into()),
        }
    }
    Ok(Command::Settle(o))
}

fn parse_wait(p: &mut lexopt::Parser, c: &mut Common) -> Result<Command, UsageError> {
    let mut o = WaitOpts {
        paths: Vec::new(),
        timeout: None,
        removed: false,
        control: None,
    };
    while let Some(arg) = p.next()? {
        match arg {
            Value(v) => {
                let v = v.string()?;
                if !v.starts_with("/dev/") && !v.starts_with("/sys/") {
                    return Err(UsageError(format!(
                        "wait '{v}': expected a /dev or /sys path"
                    )));
                }
                o.paths.push(v);
            }
            Short('t') | Long("timeout") => o.timeout = Some(secs(p, "--timeout")?),
            Long("removed") => o.removed = true,
            Long("control") => o.control = Some(p.value()?.into()),
            Short('h') | Long("help") => return Ok(Command::Help(leak(wait_help()))),
            Short('v') | Long("verbose") => c.verbose = c.verbose.saturating_add(1),
            Long("log-target") => c.log_target(p)?,
            other => return Err(other.unexpected().into()),
        }
    }
    if o.paths.is_empty() {
        return Err(UsageError(
            "wait needs at least one PATH: hotplugd wait --timeout 10 /dev/ttyUSB0".into(),
        ));
    }
    Ok(Command::Wait(o))
}

/// Help texts built with `format!` live for the rest of the (short) run.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Parses a byte size: digits with an optional K, M or G suffix (powers of
/// 1024).
pub fn size(s: &str) -> Option<usize> {
    let (digits, mult) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1usize << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1 << 20),
        b'g' | b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<usize>().ok()?.checked_mul(mult)
}

fn rcvbuf(s: &str) -> Result<usize, UsageError> {
    let n = size(s).ok_or_else(|| {
        UsageError(format!(
            "--rcvbuf '{s}': expected a number of bytes, e.g. 16M or 4194304"
        ))
    })?;
    if n < MIN_RCVBUF {
        return Err(UsageError(format!(
            "--rcvbuf {n} is too small (minimum {MIN_RCVBUF}): the kernel raises tiny buffers \
             only to its 2304-byte floor, which holds two events, and a USB device sends ten \
             or more at once; the rest would be lost (ENOBUFS). This is the 1024-byte trap \
             of many hand-written listeners. Leave the default (16M) unless you know better."
        )));
    }
    if n > i32::MAX as usize / 2 {
        return Err(UsageError(format!(
            "--rcvbuf {n} is too large (the kernel takes at most {} bytes)",
            i32::MAX / 2
        )));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Cli, UsageError> {
        parse(s.split_whitespace().map(OsString::from))
    }

    #[test]
    fn monitor_defaults_and_options() {
        let c = args("monitor").unwrap();
        assert_eq!(
            c.command,
            Command::Monitor(MonitorOpts {
                json: false,
                rcvbuf: DEFAULT_RCVBUF,
                filter: Default::default(),
            })
        );
        let c = args("-v monitor --json --rcvbuf 1M -v").unwrap();
        assert_eq!(c.verbose, 2);
        assert_eq!(
            c.command,
            Command::Monitor(MonitorOpts {
                json: true,
                rcvbuf: 1 << 20,
                filter: Default::default(),
            })
        );
        assert_eq!(
            args("monitor --rcvbuf=65536").unwrap().command,
            Command::Monitor(MonitorOpts {
                json: false,
                rcvbuf: 65536,
                filter: Default::default(),
            })
        );
    }

    #[test]
    fn monitor_filters_repeat_and_are_checked() {
        let c = args("monitor -s net --subsystem-match=usb/usb_device --property-match ID_VENDOR_ID=04[0-9]3 --property-match=K=")
            .unwrap();
        let Command::Monitor(o) = c.command else {
            panic!("{c:?}")
        };
        assert_eq!(
            o.filter.subsystems,
            [
                ("net".to_owned(), None),
                ("usb".to_owned(), Some("usb_device".to_owned()))
            ]
        );
        assert_eq!(
            o.filter.properties,
            [
                ("ID_VENDOR_ID".to_owned(), "04[0-9]3".to_owned()),
                ("K".to_owned(), String::new())
            ]
        );
        for bad in [
            "monitor --subsystem-match=",
            "monitor --subsystem-match=usb/",
            "monitor --property-match=novalue",
            "monitor --property-match==v",
            "monitor --property-match=K=[z-a]",
        ] {
            let e = args(bad).unwrap_err().0;
            assert!(
                e.contains("--subsystem-match") || e.contains("--property-match"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn test_builtin_takes_a_name_and_a_device() {
        let c = args("test-builtin path_id /sys/class/tty/ttyUSB0 --sysfs-root /tmp/f").unwrap();
        assert_eq!(
            c.command,
            Command::TestBuiltin(TestBuiltinOpts {
                name: "path_id".into(),
                device: "/sys/class/tty/ttyUSB0".into(),
                sysfs_root: PathBuf::from("/tmp/f"),
            })
        );
        assert!(args("test-builtin usb_id").is_err());
        assert!(args("test-builtin input_id /sys/x").is_ok());
        assert!(args("test-builtin hwdb /sys/x")
            .unwrap_err()
            .0
            .contains("usb_id, path_id, input_id"));
    }

    #[test]
    fn the_1024_trap_is_refused_with_the_reason() {
        let e = args("monitor --rcvbuf 1024").unwrap_err().0;
        assert!(e.contains("too small") && e.contains("2304"), "{e}");
        assert!(args("monitor --rcvbuf 64K").is_ok());
        assert!(args("monitor --rcvbuf 65535").is_err());
        assert!(args("monitor --rcvbuf 3X")
            .unwrap_err()
            .0
            .contains("expected a number"));
        assert!(args("monitor --rcvbuf 99999999999G").is_err());
    }

    #[test]
    fn bad_usage_is_one_line() {
        for bad in [
            "",
            "frobnicate",
            "monitor --nope",
            "monitor extra",
            "--nope",
        ] {
            let e = args(bad).unwrap_err().0;
            assert!(!e.contains('\n'), "{bad}: {e}");
        }
        assert!(matches!(
            args("--help").unwrap().command,
            Command::Help(HELP)
        ));
        assert!(matches!(
            args("monitor --help").unwrap().command,
            Command::Help(MONITOR_HELP)
        ));
    }

    #[test]
    fn sizes() {
        assert_eq!(size("16M"), Some(16 << 20));
        assert_eq!(size("64k"), Some(65536));
        assert_eq!(size("1"), Some(1));
        assert_eq!(size(""), None);
        assert_eq!(size("M"), None);
        assert_eq!(size("-1"), None);
    }
}
