//! The command line: raw arguments (lexopt) → a validated [`Command`].
//!
//! Every error is one line that names the option and the fix; `main` prints
//! it with a pointer to `--help` and exits with status 2.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

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
}

/// Options of `test-builtin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestBuiltinOpts {
    /// The builtin: `usb_id` or `path_id`.
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
}

/// Options of `check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOpts {
    /// `--rules`; empty: the built-in default rules.
    pub rules: Vec<PathBuf>,
    /// `--insecure-rules`.
    pub insecure_rules: bool,
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
  monitor    print kernel uevents as they arrive (no configuration needed)
  run        the daemon: match events against rules and run their handlers
  check      check rule files; print every error and exit
  replay     run recorded events through the rules, as the daemon would
  test-builtin  print what a builtin (usb_id, path_id) computes for a device

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
  3  system error (the uevent socket, signals or the event loop failed)
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
    "  --rules PATH     a rules file, or a directory whose *.rules files load in
                   lexical order; repeatable. Without it: the built-in
                   default rules (log every USB device plugged or unplugged)
  --insecure-rules when running as root, rule files, rule directories and
                   RUN programs (and their directories) must be owned by
                   root and not writable by group or others, or nothing
                   loads (each path is named, with the fix); this accepts
                   them anyway, with a warning each";

const HANDLER_OPTS: &str =
    "  --handler-timeout SECS  SIGTERM to a handler's process group after SECS
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
                   daemon) and ATTR{}= writes (in a child of it) stay root";

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
  --accept-injected  also accept uevents the kernel relays from a root
                   process (port 0, uid 0, any pid). Inside an LXD/Incus
                   container the host's manager injects the container's
                   uevents this way, so without it every event is rejected.
                   Off by default: on a board only the kernel itself (pid 0)
                   sends uevents, and any root process could inject one
  -v, --verbose    more log output (repeatable)
  -h, --help       this help

After an overrun (events lost: ENOBUFS) the socket is read to its end and
sysfs is walked: devices that appeared get a synthetic add, devices that
went away a synthetic remove (with the keys of their add), through the same
rules, with HOTPLUGD_RESYNC=1 in their environment.

Ready means: socket bound, rules loaded, coldplug done. If $NOTIFY_SOCKET is set
(systemd Type=notify), READY=1 is sent then, RELOADING=1 and READY=1 around
each SIGHUP reload, and STOPPING=1 on SIGINT/SIGTERM.

Signals: SIGHUP reloads every rule file (on any error the old rules stay in
force and each error is logged); SIGUSR1 logs the counters; SIGINT/SIGTERM
stop: queued work is dropped (logged), handlers get SIGTERM, then SIGKILL
2 s later; exit 0 once every handler is reaped (one SIGKILL did not end is
given up on 2 s after that, so a stop takes at most 4 s).

On exit one line goes to stderr:
  stats: received=N ... matched=N handlers_started=N handlers_failed=N
  handlers_timed_out=N handlers_unkillable=N queue_full=N output_lines_cut=N
  output_lines_suppressed=N limits_hit=N attr_write_failed=N resyncs=N
  resync_retries=N synthetic_adds=N synthetic_removes=N table_full=N
  resync_unchecked=N synthetic_malformed=N broadcast_sent=N broadcast_again=N
  broadcast_nobufs=N broadcast_refused=N broadcast_failed=N
  broadcast_too_large=N longest_turn_us=N log_dropped=N
"
    )
}

/// `hotplugd check --help`.
pub fn check_help() -> String {
    format!(
        "\
hotplugd check: check rule files

Usage: hotplugd check [--rules PATH]...

Loads the rules exactly as `run` would. Exit 0 with a one-line summary
(`rules: N rules from M files`), or exit 1 with every error, each as
`file:line:column: message`, the line and a caret. Warnings (a RUN program
missing on this machine, a rule that does nothing) are printed but do not fail.

Options:
{RULES_OPTS}
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
        other => {
            return Err(UsageError(format!(
                "unknown command '{other}': the commands are monitor, run, check, replay and test-builtin (see `hotplugd --help`)"
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

const HANDLER_LONGS: [&str; 8] = [
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
    };
    while let Some(arg) = p.next()? {
        match arg {
            Long("rules") => o.rules.push(p.value()?.into()),
            Long("insecure-rules") => o.insecure_rules = true,
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
        assert!(args("test-builtin input_id /sys/x")
            .unwrap_err()
            .0
            .contains("usb_id"));
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
