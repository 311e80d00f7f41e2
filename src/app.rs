//! Runs a parsed command: opens what it needs, reports what it got, runs
//! the loop, and says how it ended. Errors are sorted into the kinds `main`
//! maps to exit codes.

use std::fmt;
use std::io::{self, Write};
use std::os::fd::BorrowedFd;

use log::{info, warn};
use mio::unix::SourceFd;
use mio::{Interest, Token};

use crate::cli::{
    CheckOpts, ControlAt, HandlerOpts, MonitorOpts, ReplayOpts, RunOpts, TestBuiltinOpts,
};
use crate::daemon::{Cx, Daemon, Flow, Mode, FIRST_MODE_TOKEN};
use crate::exec::{self, printable, Builtins, ExecConfig};
use crate::monitor::{self, OutBuf};
use crate::replay::{self, ReplaySource};
use crate::rules::{Diagnostic, Matched};
use crate::runner::{build_job, RulesFrom, Runner};
use crate::stats::Scope;
use crate::sys::control::ControlListener;
use crate::sys::netlink::{RcvbufReport, UeventSocket};
use crate::sys::notify::Readiness;
use crate::sys::signals::Signals;
use crate::sys::sysfs::SysfsRoot;
use crate::sys::{self, WriteStop};
use crate::uevent::Uevent;

/// Why a command failed, sorted by who can fix it.
#[derive(Debug)]
pub enum AppError {
    /// The configuration (rules) or the input (replay) is wrong: exit status 1.
    Config(String),
    /// The system refused something (socket, signals, poll), or no daemon
    /// answers a tool: exit status 3.
    System(String),
    /// A tool's `--timeout` passed (`settle`, `trigger --settle`, `wait`):
    /// exit status 4.
    Timeout(String),
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Config(s) | AppError::System(s) | AppError::Timeout(s) => f.write_str(s),
        }
    }
}

fn system(what: &str) -> impl FnOnce(io::Error) -> AppError + '_ {
    move |e| AppError::System(format!("{what}: {e}"))
}

/// Opens the uevent socket and logs what the receive buffer became.
pub fn open_socket(rcvbuf: usize) -> Result<UeventSocket, AppError> {
    let socket = UeventSocket::open(rcvbuf).map_err(|e| AppError::System(e.to_string()))?;
    log_rcvbuf(&socket.rcvbuf());
    Ok(socket)
}

fn log_rcvbuf(r: &RcvbufReport) {
    let show = |v: Option<usize>| v.map_or("unknown".to_string(), |v| v.to_string());
    let how = if r.forced {
        "SO_RCVBUFFORCE"
    } else {
        "SO_RCVBUF"
    };
    if r.requested == 0 {
        info!(
            "receive buffer: {} bytes (system default, net.core.rmem_default={}, larger than requested)",
            r.obtained,
            show(r.rmem_default)
        );
    } else {
        info!(
            "receive buffer: requested {} with {how}, obtained {} (the kernel doubles requests; \
             net.core.rmem_default={} rmem_max={})",
            r.requested,
            r.obtained,
            show(r.rmem_default),
            show(r.rmem_max)
        );
    }
    if r.capped() {
        warn!(
            "receive buffer capped at {} bytes (no CAP_NET_ADMIN for SO_RCVBUFFORCE, so \
             net.core.rmem_max={} applies): bursts may overrun it; raise it with \
             `sysctl -w net.core.rmem_max={}` or run with CAP_NET_ADMIN",
            r.obtained,
            show(r.rmem_max),
            r.requested
        );
    }
}

/// Writes the final stats line to stderr. A closed stderr is not an error.
fn print_stats(stats: &crate::stats::Stats, scope: Scope) {
    let mut s = *stats;
    s.log_dropped = sys::log::dropped();
    let _ = writeln!(io::stderr(), "{}", s.line(scope));
}

const STDOUT: Token = Token(FIRST_MODE_TOKEN);

/// `monitor`: print each event to stdout. Events are formatted into one
/// buffer and written once per drained batch: when the buffer holds a
/// batch ([`monitor::OUT_BATCH`]), and at the end of every turn of the loop
/// (`tick`), so nothing waits in the buffer while the loop sleeps.
struct MonitorMode {
    json: bool,
    filter: monitor::Filter,
    out: OutBuf,
    /// Bytes of `out` already written; less than its length while stalled.
    written: usize,
    /// Events the filter kept out (not formatted).
    filtered: u64,
    /// A write found stdout closed: the next event or readiness ends the loop.
    closed: bool,
}

impl MonitorMode {
    fn stdout() -> BorrowedFd<'static> {
        sys::stdout()
    }

    /// Writes what is left of `out`; empties it once all is written. Stop
    /// on a closed output.
    fn flush(&mut self, signals: BorrowedFd<'_>) -> Flow {
        let all = self.out.as_bytes();
        let mut rest = &all[self.written..];
        let r = sys::write_all_or_signal(Self::stdout(), signals, &mut rest);
        self.written = all.len() - rest.len();
        if self.written == all.len() {
            self.out.clear();
            self.written = 0;
        }
        match r {
            Ok(()) => Flow::Continue,
            // stalled: the loop handles the signal, then `tick` resumes
            Err(WriteStop::Signal) => Flow::Continue,
            Err(WriteStop::Closed) => Flow::Stop,
            Err(WriteStop::Error(e)) => {
                warn!("stdout: {}; stopping", e.desc());
                Flow::Stop
            }
        }
    }

    fn stalled(&self) -> bool {
        self.written > 0 && self.written < self.out.as_bytes().len()
    }
}

impl Mode for MonitorMode {
    fn scope(&self) -> Scope {
        Scope::Listener
    }

    fn start(&mut self, cx: &mut Cx<'_>) -> io::Result<()> {
        // Only to hear of a closed pipe between events (EPOLLERR); epoll
        // refuses regular files and /dev/null (EPERM), which never close.
        let fd = std::os::fd::AsRawFd::as_raw_fd(&Self::stdout());
        let _ = cx
            .registry
            .register(&mut SourceFd(&fd), STDOUT, Interest::WRITABLE);
        Ok(())
    }

    fn event(&mut self, ev: &Uevent<'_>, cx: &mut Cx<'_>) -> Flow {
        if self.closed {
            return Flow::Stop;
        }
        if !self.filter.passes(ev) {
            self.filtered += 1;
            return Flow::Continue;
        }
        let mark = self.out.len();
        let r = if self.json {
            monitor::json(&mut self.out, ev)
        } else {
            monitor::text(&mut self.out, ev, sys::uptime())
        };
        if r.is_err() {
            // Cannot happen (OUT_BUFFER keeps room for any event); say so if it does.
            warn!("event {} too large to print; skipped", ev.devpath());
            self.out.truncate(mark);
            return Flow::Continue;
        }
        if self.out.batch_full() {
            return self.flush(cx.signals);
        }
        Flow::Continue
    }

    fn has_room(&self) -> bool {
        // A full batch whose write a signal interrupted must go out before
        // the next event: only then is there room for any event.
        !self.stalled() && !self.out.batch_full()
    }

    fn ready(&mut self, token: Token, _cx: &mut Cx<'_>) -> Flow {
        if self.closed || (token == STDOUT && sys::output_closed(Self::stdout())) {
            return Flow::Stop;
        }
        Flow::Continue
    }

    fn tick(&mut self, _now: std::time::Instant, cx: &mut Cx<'_>) {
        // Every turn ends here before the loop may sleep: write the batch.
        if !self.out.is_empty() && self.flush(cx.signals) == Flow::Stop {
            // The reader is gone; the next event or readiness ends the loop.
            self.out.clear();
            self.written = 0;
            self.closed = true;
        }
    }
}

/// `hotplugd monitor`.
pub fn monitor(opts: &MonitorOpts) -> Result<(), AppError> {
    // Signals first: nothing may arrive between bind and being able to stop.
    let signals = Signals::new().map_err(|e| AppError::System(format!("signals: {}", e.desc())))?;
    let socket = open_socket(opts.rcvbuf)?;
    let mode = MonitorMode {
        json: opts.json,
        filter: opts.filter.clone(),
        out: OutBuf::new(),
        written: 0,
        filtered: 0,
        closed: false,
    };
    let mut d = Daemon::new(socket, signals, mode).map_err(system("event loop"))?;
    info!("listening for kernel uevents");
    let ending = d.run().map_err(system("event loop"));
    if !opts.filter.is_empty() {
        info!(
            "{} events did not pass --subsystem-match/--property-match",
            d.mode().filtered
        );
    }
    d.refresh_dropped();
    print_stats(d.stats(), Scope::Listener);
    ending.map(|_| ())
}

fn rules_from(paths: &[std::path::PathBuf], insecure: bool) -> RulesFrom {
    if paths.is_empty() {
        RulesFrom::Default
    } else {
        RulesFrom::Paths {
            paths: paths.to_vec(),
            insecure,
        }
    }
}

/// `--handler-user USER[:GROUP]` → (uid, gid). Names or numbers; without
/// GROUP, the user's primary group.
fn handler_creds(spec: &str) -> Result<(u32, u32), AppError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let bad = |m: String| AppError::Config(format!("--handler-user {spec}: {m}"));
    let pw = match user.parse::<u32>() {
        Ok(n) => sys::user_by_uid(n),
        Err(_) => Some(
            sys::user_by_name(user)
                .map_err(|e| bad(format!("cannot look up user {user}: {e}")))?
                .ok_or_else(|| bad(format!("no such user '{user}' (see /etc/passwd)")))?,
        ),
    };
    let uid = match (&pw, user.parse::<u32>()) {
        (Some(p), _) => p.0,
        (None, Ok(n)) => n,
        (None, Err(_)) => unreachable!("a name resolved above"),
    };
    let gid = match group {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => sys::group_by_name(g)
                .map_err(|e| bad(format!("cannot look up group {g}: {e}")))?
                .ok_or_else(|| bad(format!("no such group '{g}' (see /etc/group)")))?,
        },
        None => pw.map(|p| p.1).ok_or_else(|| {
            bad(format!(
                "uid {uid} has no passwd entry, so no primary group: give one as {uid}:GROUP"
            ))
        })?,
    };
    if uid == 0 {
        return Err(bad(
            "handlers would still run as root; name an unprivileged user".into(),
        ));
    }
    Ok((uid, gid))
}

/// Services, `kmod load` and `firmware` (issue 17).
fn boot_config(h: &HandlerOpts, e: &ExecConfig, run_services: bool) -> crate::boot::BootConfig {
    let modprobe = crate::kmod::MODPROBE_PATHS
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(|p| p.as_bytes().to_vec());
    crate::boot::BootConfig {
        services: crate::services::ServiceConfig {
            max: h.max_services,
            grace: e.grace,
            extra_env: e.extra_env.clone(),
            creds: e.handler_creds,
        },
        modprobe,
        firmware_dirs: crate::firmware::search_dirs(
            &sys::firmware::kernel_release(),
            &h.firmware_dirs,
        ),
        sysfs: h.sysfs_root.clone(),
        run_services,
    }
}

fn exec_config(h: &HandlerOpts) -> Result<ExecConfig, AppError> {
    let handler_creds = match &h.handler_user {
        Some(spec) => {
            let (uid, gid) = handler_creds(spec)?;
            info!("RUN handlers run as uid {uid} gid {gid}, no supplementary groups");
            Some((uid, gid))
        }
        None => None,
    };
    Ok(ExecConfig {
        max_children: h.max_children,
        max_queue: h.max_queue,
        timeout: std::time::Duration::from_secs(h.timeout_secs),
        grace: std::time::Duration::from_secs(crate::limits::HANDLER_KILL_GRACE_SECS),
        extra_env: exec::base_env(&h.pass_env, |name| {
            std::env::var_os(name).map(std::os::unix::ffi::OsStringExt::into_vec)
        }),
        handler_creds,
    })
}

/// Logs every diagnostic; the error says how many.
fn rules_failed(errors: Vec<Diagnostic>) -> AppError {
    for e in &errors {
        log::error!("{e}");
    }
    AppError::Config(format!(
        "rules did not load: {} error{}",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    ))
}

/// The descriptors the process was started with, taken before anything
/// else is opened (see [`Inherited::claim`]).
#[derive(Debug)]
pub struct Inherited {
    ready: Option<std::os::fd::OwnedFd>,
}

impl Inherited {
    /// Takes `--ready-fd` (it must be open: else the error, exit 3) and
    /// marks every other inherited descriptor above 2 close-on-exec (0, 1
    /// and 2 are opened on `/dev/null` if init left them closed). Call it
    /// first, before logging or signals open anything: otherwise an unopened
    /// `--ready-fd 3` is silently the signalfd's number.
    pub fn claim(ready_fd: Option<i32>) -> Result<Inherited, AppError> {
        let ready = ready_fd
            .map(crate::sys::notify::claim_ready_fd)
            .transpose()
            .map_err(AppError::System)?;
        sys::cloexec_inherited();
        Ok(Inherited { ready })
    }
}

/// `hotplugd run`, for embedders: claims the inherited descriptors
/// ([`Inherited::claim`]) and runs. Call it before opening anything.
pub fn run(opts: &RunOpts, builtins: Builtins) -> Result<(), AppError> {
    run_with(opts, builtins, Inherited::claim(opts.ready_fd)?)
}

/// `hotplugd run` with descriptors already claimed.
pub fn run_with(opts: &RunOpts, builtins: Builtins, inherited: Inherited) -> Result<(), AppError> {
    let signals = Signals::new().map_err(|e| AppError::System(format!("signals: {}", e.desc())))?;
    let ecfg = exec_config(&opts.handlers)?;
    let boot = boot_config(&opts.handlers, &ecfg, true);
    let mut runner = Runner::new(
        rules_from(&opts.handlers.rules, opts.handlers.insecure_rules),
        ecfg,
        builtins,
        SysfsRoot::new(&opts.handlers.sysfs_root),
    )
    .map_err(rules_failed)?;
    runner.log_loaded();
    let readiness =
        Readiness::new(inherited.ready, opts.pidfile.clone()).map_err(AppError::System)?;
    runner.set_readiness(readiness);
    if let Some(root) = &opts.dev_root {
        runner.enable_dev(root);
    }
    runner.enable_recovery(opts.track.clone(), opts.coldplug);
    runner.enable_boot(boot);
    if !opts.broadcast.is_empty() {
        let b = crate::sys::broadcast::Broadcaster::new(opts.broadcast.clone())
            .map_err(|e| AppError::System(format!("--broadcast socket: {}", e.desc())))?;
        runner.enable_broadcast(b);
    }
    let socket = open_socket(opts.rcvbuf)?;
    let mut d = Daemon::new(socket, signals, runner).map_err(system("event loop"))?;
    d.children_mut().set_sysfs_root(&opts.handlers.sysfs_root);
    d.children_mut().reserve(opts.handlers.max_children);
    match &opts.control {
        ControlAt::None => info!(
            "no control socket (--control none): settle, trigger --settle and wait cannot be used"
        ),
        ControlAt::Path(p) => {
            let l = ControlListener::bind(p)
                .map_err(|e| AppError::System(format!("--control: {e}")))?;
            d.set_control(l).map_err(system("control socket"))?;
        }
        ControlAt::Default => {
            match ControlListener::bind(std::path::Path::new(crate::control::DEFAULT_PATH)) {
                Ok(l) => d.set_control(l).map_err(system("control socket"))?,
                Err(e) => warn!("no control socket ({e}); settle, trigger --settle and wait cannot reach this daemon; give --control PATH"),
            }
        }
    }
    if opts.accept_injected {
        d.source_mut().accept_injected(true);
        warn!("--accept-injected: uevents relayed from any root process are accepted, not only the kernel's");
    }
    info!("listening for kernel uevents");
    let ending = d.run().map_err(system("event loop"));
    d.refresh_dropped();
    print_stats(d.stats(), Scope::Daemon);
    ending.map(|_| ())
}

/// `hotplugd check`: diagnostics to stderr (skipped lines and warnings
/// in file order), the summary to stdout. Exit 1 if a line was skipped,
/// the rules were refused, or (`--strict`) there were warnings.
pub fn check(opts: &CheckOpts, builtins: &Builtins) -> Result<(), AppError> {
    let plural = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    match rules_from(&opts.rules, opts.insecure_rules).load(&builtins.names()) {
        Ok(mut rs) => {
            let lints = crate::rules::lint::lint(&rs);
            rs.warnings.extend(lints);
            let mut err = io::stderr().lock();
            let mut all: Vec<&Diagnostic> = rs.warnings.iter().chain(&rs.errors).collect();
            all.sort_by_key(|d| (rs.files.iter().position(|f| *f == d.file), d.line, d.col));
            for d in all {
                let _ = writeln!(err, "{d}");
            }
            let mut summary = format!("rules: {} rules from {} files", rs.len(), rs.files.len());
            if !rs.errors.is_empty() {
                summary.push_str(&format!(", {}", plural(rs.errors.len(), "error")));
            }
            if !rs.warnings.is_empty() {
                summary.push_str(&format!(", {}", plural(rs.warnings.len(), "warning")));
            }
            let _ = writeln!(io::stdout(), "{summary}");
            if !rs.errors.is_empty() {
                return Err(AppError::Config(format!(
                    "{} in the rules: those lines are skipped, as udev skips them; `run` loads the rest",
                    plural(rs.errors.len(), "error")
                )));
            }
            if opts.strict && !rs.warnings.is_empty() {
                return Err(AppError::Config(format!(
                    "{} (--strict)",
                    plural(rs.warnings.len(), "warning")
                )));
            }
            Ok(())
        }
        Err(errors) => {
            let mut err = io::stderr().lock();
            for e in &errors {
                let _ = writeln!(err, "{e}");
            }
            Err(AppError::Config(format!(
                "{} in the rules; nothing loaded",
                plural(errors.len(), "error")
            )))
        }
    }
}

/// `hotplugd test-builtin`: runs an identity builtin on one device and
/// prints its properties as `KEY=VALUE` lines (bytes as they are).
pub fn test_builtin(opts: &TestBuiltinOpts) -> Result<(), AppError> {
    use crate::identity::SysfsView;
    let view = SysfsRoot::new(&opts.sysfs_root);
    // "/sys/..." names a path under the root; anything else is a devpath
    let rel = match opts.device.strip_prefix("/sys") {
        Some(r) if r.starts_with('/') => r,
        _ => opts.device.as_str(),
    };
    let devpath = view.canonical(rel).ok_or_else(|| {
        AppError::Config(format!(
            "{}: no such device under {}",
            opts.device,
            opts.sysfs_root.display()
        ))
    })?;
    let props = crate::identity::run_builtin(&opts.name, &view, &devpath, false)
        .map_err(|e| AppError::Config(format!("{} {devpath}: {e}", opts.name)))?;
    let mut out = Vec::new();
    for (k, v) in props.iter() {
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    io::stdout()
        .write_all(&out)
        .map_err(|e| AppError::System(format!("standard output: {e}")))
}

/// `hotplugd replay`.
pub fn replay(opts: &ReplayOpts, builtins: Builtins) -> Result<(), AppError> {
    let input = match &opts.input {
        Some(p) => {
            std::fs::read(p).map_err(|e| AppError::Config(format!("{}: {e}", p.display())))?
        }
        None => {
            let mut v = Vec::new();
            io::Read::read_to_end(&mut io::stdin(), &mut v)
                .map_err(|e| AppError::Config(format!("standard input: {e}")))?;
            v
        }
    };
    let name = opts
        .input
        .as_ref()
        .map_or("standard input".to_string(), |p| p.display().to_string());
    let events =
        replay::read_events(&input).map_err(|e| AppError::Config(format!("{name}: {e}")))?;
    if opts.dry_run {
        return dry_run(opts, &builtins, &events);
    }
    Inherited::claim(None)?;
    let signals = Signals::new().map_err(|e| AppError::System(format!("signals: {}", e.desc())))?;
    let ecfg = exec_config(&opts.handlers)?;
    let boot = boot_config(&opts.handlers, &ecfg, false);
    let mut runner = Runner::new(
        rules_from(&opts.handlers.rules, opts.handlers.insecure_rules),
        ecfg,
        builtins,
        SysfsRoot::new(&opts.handlers.sysfs_root),
    )
    .map_err(rules_failed)?;
    runner.log_loaded();
    runner.enable_boot(boot);
    info!("replaying {} events from {name}", events.len());
    let mut d = Daemon::with_source(ReplaySource::new(events), signals, runner)
        .map_err(system("event loop"))?;
    d.children_mut().set_sysfs_root(&opts.handlers.sysfs_root);
    d.children_mut().reserve(opts.handlers.max_children);
    let ending = d.run().map_err(system("event loop"));
    print_stats(d.stats(), Scope::Daemon);
    ending.map(|_| ())
}

/// JSON-style quoting, so spaces, quotes and odd bytes in an argument show.
fn quoted(b: &[u8]) -> String {
    let mut o = OutBuf::new();
    let _ = monitor::json_string(&mut o, b);
    String::from_utf8_lossy(o.as_bytes()).into_owned()
}

fn dry_run(opts: &ReplayOpts, builtins: &Builtins, events: &[Vec<u8>]) -> Result<(), AppError> {
    let rules = rules_from(&opts.handlers.rules, opts.handlers.insecure_rules)
        .load(&builtins.names())
        .map_err(rules_failed)?;
    let cfg = exec_config(&opts.handlers)?;
    let sysfs = SysfsRoot::new(&opts.handlers.sysfs_root);
    let mut m = Matched::default();
    let mut jobs = crate::job::Jobs::new(1, crate::limits::JOB_SLOT);
    let mut out = io::stdout().lock();
    let mut w = |s: String| {
        let _ = out.write_all(s.as_bytes());
    };
    for (i, d) in events.iter().enumerate() {
        let n = i + 1;
        let ev = match crate::uevent::Uevent::parse(d) {
            Ok(ev) => ev,
            Err(e) => {
                w(format!("event {n}: malformed: {e}\n"));
                continue;
            }
        };
        w(format!(
            "event {n}: {} {} ({}){}\n",
            ev.action(),
            ev.devpath(),
            ev.subsystem().unwrap_or("-"),
            ev.seqnum()
                .map_or(String::new(), |s| format!(" seqnum {s}"))
        ));
        sysfs.begin_event();
        rules.evaluate(&ev, &sysfs, &mut m);
        if m.count == 0 {
            w("  no rule matched\n".into());
            continue;
        }
        for &r in &m.rules {
            w(format!("  matched {}\n", rules.location(r)));
        }
        for (k, v) in rules.env_assignments(&m) {
            w(format!("  ENV{{{k}}}={}\n", quoted(v)));
        }
        let node = &m.node;
        if node.uid.is_some() || node.gid.is_some() || node.mode.is_some() {
            let show = |v: Option<u32>, octal: bool| match v {
                Some(v) if octal => format!("{v:04o}"),
                Some(v) => v.to_string(),
                None => "-".into(),
            };
            w(format!(
                "  node: OWNER={} GROUP={} MODE={}\n",
                show(node.uid, false),
                show(node.gid, false),
                show(node.mode, true)
            ));
        }
        if node.link_priority != 0 {
            w(format!("  link_priority={}\n", node.link_priority));
        }
        work_lines(&rules, &ev, &m, &sysfs, &cfg, &mut jobs, &mut |l| w(l));
    }
    Ok(())
}

/// The work a match would do, as `replay --dry-run` and `test` print it:
/// per step, the rule and the argv (and environment) or builtin or
/// attribute write. Runs nothing.
pub(crate) fn work_lines(
    rules: &crate::rules::RuleSet,
    ev: &Uevent<'_>,
    m: &Matched,
    sysfs: &SysfsRoot,
    cfg: &ExecConfig,
    jobs: &mut crate::job::Jobs,
    w: &mut dyn FnMut(String),
) {
    let (job, _, _) = build_job(
        rules,
        ev,
        m,
        sysfs,
        jobs.start(ev.action(), ev.devpath(), None),
    );
    let v = jobs.view(&job);
    for step in v.steps() {
        match *step {
            exec::Step::Exec { argv, rule } => {
                let loc = v.rule(rule);
                let args: Vec<String> = v.words(argv).iter().map(quoted).collect();
                w(format!("  run {loc}: [{}]\n", args.join(", ")));
                for e in v.env().iter() {
                    w(format!("    {}\n", printable(e)));
                }
                w(format!("    HOTPLUGD_RULE={loc}\n"));
                for (k, v) in &cfg.extra_env {
                    w(format!("    {}={}\n", printable(k), printable(v)));
                }
            }
            exec::Step::Builtin {
                name, args, rule, ..
            } => {
                let args: Vec<String> = v.words(args).iter().map(quoted).collect();
                w(format!(
                    "  builtin {}: {} [{}]\n",
                    v.rule(rule),
                    v.str(name),
                    args.join(", ")
                ));
            }
            exec::Step::WriteAttr { name, value, rule } => {
                w(format!(
                    "  attr {}: {} = {}\n",
                    v.rule(rule),
                    v.str(name),
                    quoted(v.bytes(value))
                ));
            }
        }
    }
    jobs.recycle(job);
}
