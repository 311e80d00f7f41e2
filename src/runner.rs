//! The `run` and `replay` mode: each event goes through the rules; events
//! with work become jobs for the handler engine ([`crate::exec`]). SIGHUP
//! reloads the rules; a reload with any error keeps the old rules.
//!
//! Between the rules and the handlers, /dev's duties (issue 13; `run` only,
//! see [`Runner::enable_dev`]): the rules' `OWNER`/`GROUP`/`MODE` applied to
//! the event's node, `SYMLINK` links made, re-pointed or removed
//! ([`crate::devnode`] decides, [`crate::sys::devnode`] does); the device
//! table then keeps what the event ended with (the rules' properties,
//! links, tags). A kernel `remove` is first given the properties of the
//! device's last event from the table ([`devnode::merge_remove`]), so its
//! rules and handlers see what the add knew and its links can be removed;
//! it is built in a buffer reserved at start: no allocation per event.

use std::io;
use std::path::PathBuf;
use std::time::Instant;

use log::{debug, error, info, warn};

use crate::boot::{Boot, BootConfig};
use crate::daemon::{Cx, Flow, Mode, BATCH};
use crate::devices::DeviceTable;
use crate::devnode::{self, Claimant, EventBuf, LinkPlan, NodeId, Perms, Release, Target};
use crate::exec::{BuiltinFn, Builtins, Exec, ExecConfig, Exit, Job, JobWriter};
use crate::recovery::{Coldplug, Recovery, Track, Verdict};
use crate::rules::parse::{self, Source, DEFAULT_RULES, DEFAULT_RULES_NAME};
use crate::rules::NodeAssign;
use crate::rules::{Action, Diagnostic, Matched, RuleSet};
use crate::stats::Scope;
use crate::stats::Stats;
use crate::sys::broadcast::Broadcaster;
use crate::sys::devnode::DevDir;
use crate::sys::notify::Readiness;
use crate::sys::signals::Sig;
use crate::sys::sysfs::SysfsRoot;
use crate::uevent::Uevent;
use crate::usb::UsbView;

/// Where the rules come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RulesFrom {
    /// `--rules` paths (files, or directories of `*.rules`).
    Paths {
        /// The paths, in order.
        paths: Vec<PathBuf>,
        /// `--insecure-rules`: files or programs others could change are
        /// only warned about (see [`parse::check_trust`]).
        insecure: bool,
    },
    /// The built-in [`DEFAULT_RULES`].
    Default,
}

impl RulesFrom {
    /// Loads and compiles the rules, and builds their index (so that no
    /// event pays for it).
    pub fn load(&self, builtins: &[&str]) -> Result<RuleSet, Vec<Diagnostic>> {
        let rs = self.load_unindexed(builtins)?;
        rs.index();
        Ok(rs)
    }

    fn load_unindexed(&self, builtins: &[&str]) -> Result<RuleSet, Vec<Diagnostic>> {
        match self {
            RulesFrom::Paths { paths, insecure } => {
                let mut rs = parse::load(paths, builtins, crate::sys::is_root())?;
                let trust = parse::check_trust(paths, &rs);
                if trust.is_empty() {
                    return Ok(rs);
                }
                if !insecure {
                    return Err(trust);
                }
                rs.warnings.extend(trust.into_iter().map(|mut d| {
                    d.warning = true;
                    d.message = format!("{} [accepted: --insecure-rules]", d.message);
                    d
                }));
                Ok(rs)
            }
            RulesFrom::Default => parse::compile(
                &[Source {
                    name: DEFAULT_RULES_NAME.into(),
                    text: DEFAULT_RULES.into(),
                }],
                builtins,
            ),
        }
    }
}

/// The `log` builtin: one info line per event, with the USB identity when
/// there is one. Part of the built-in defaults.
pub fn log_builtin() -> BuiltinFn {
    Box::new(|call| {
        let ev = call.event;
        match UsbView::of(ev) {
            Some(u) => info!(
                "usb {} {:04x}:{:04x} (bus {} device {}) {}",
                ev.action(),
                u.vendor,
                u.product,
                u.busnum.map_or("?".into(), |n| n.to_string()),
                u.devnum.map_or("?".into(), |n| n.to_string()),
                ev.devpath()
            ),
            None => info!(
                "{} {} ({})",
                ev.action(),
                ev.devpath(),
                ev.subsystem().unwrap_or("-")
            ),
        }
        Ok(())
    })
}

/// The builtins the `hotplugd` binary registers.
pub fn default_builtins() -> Builtins {
    let mut b = Builtins::default();
    b.register("log", log_builtin());
    // BOOT HOOK (issue 17): names for the rules; the work is done by
    // `crate::boot` (build_job leaves these out of handler jobs)
    for name in crate::boot::BUILTINS {
        b.register(
            name,
            Box::new(move |_| {
                Err(format!(
                    "{name} runs in the loop's boot module, not as a builtin call"
                ))
            }),
        );
    }
    b
}

/// Rules + handler engine.
pub struct Runner {
    rules: RuleSet,
    from: RulesFrom,
    sysfs: SysfsRoot,
    matched: Box<Matched>,
    exec: Exec,
    readiness: Readiness,
    recovery: Option<Recovery>,
    /// `--track`, if given (else the rules decide).
    track_override: Option<Track>,
    /// `--broadcast` targets, if any (issue 16).
    broadcaster: Option<Broadcaster>,
    /// BOOT HOOK (issue 17): services, `kmod load`, `firmware`.
    boot: Option<Boot>,
    /// /dev's duties (issue 13).
    dev: Dev,
}

/// Bytes of the buffer a remove is merged in: a whole datagram
/// ([`crate::limits::RECV_BUFFER`]) and a whole device table record
/// ([`crate::devices::MAX_RECORD`]), with room to spare.
pub const EVENT_BUFFER: usize = 16 * 1024;

/// Bytes kept of a device's previous `DEVLINKS` (every link of
/// [`crate::limits::MAX_LINKS`] at its longest, `/dev/` and a space each).
const PREV_LINKS: usize = crate::limits::MAX_LINKS * (crate::limits::MAX_LINK_LEN + 6);
/// Bytes kept of a device's previous `TAGS`.
const PREV_TAGS: usize = 2 * crate::limits::MAX_TAGS * (crate::limits::MAX_TAG_LEN + 1);

/// /dev's state: the directory (`None`: /dev is not managed), and the
/// buffers reserved for the events built around the rules.
struct Dev {
    dir: Option<DevDir>,
    /// A remove with the properties its device's last event ended with.
    merged: EventBuf,
    /// The device's `DEVLINKS` and `TAGS` before this event (table).
    prev_links: heapless::Vec<u8, PREV_LINKS>,
    prev_tags: heapless::Vec<u8, PREV_TAGS>,
}

impl Dev {
    fn new() -> Dev {
        Dev {
            dir: None,
            merged: EventBuf::new(EVENT_BUFFER),
            prev_links: heapless::Vec::new(),
            prev_tags: heapless::Vec::new(),
        }
    }
}

impl Runner {
    /// Loads the rules; on error, every diagnostic.
    pub fn new(
        from: RulesFrom,
        cfg: ExecConfig,
        builtins: Builtins,
        sysfs: SysfsRoot,
    ) -> Result<Runner, Vec<Diagnostic>> {
        let rules = from.load(&builtins.names())?;
        Ok(Runner {
            rules,
            from,
            sysfs,
            matched: Box::default(),
            exec: Exec::new(cfg, builtins),
            readiness: Readiness::default(),
            recovery: None,
            track_override: None,
            broadcaster: None,
            boot: None,
            dev: Dev::new(),
        })
    }

    /// BOOT HOOK (issue 17): turns on `RUN{service}`, `kmod load` and
    /// `firmware` (see [`crate::boot`]). Services start when their
    /// device's `add` job has finished, so finished jobs are kept for
    /// `broadcast_finished` from now on.
    pub fn enable_boot(&mut self, cfg: BootConfig) {
        self.exec.keep_finished();
        self.boot = Some(Boot::new(cfg));
    }

    /// BOOT HOOK (issue 17): the services, module and firmware loading.
    pub fn boot(&self) -> Option<&Boot> {
        self.boot.as_ref()
    }

    /// Manages device nodes and links under `root` (`run`: `/dev`, or
    /// `--dev-root`): applies `OWNER`/`GROUP`/`MODE`, makes and removes
    /// `SYMLINK` links, and first removes the links hotplugd made whose
    /// device vanished while it was down (see [`crate::sys::devnode`]). A
    /// directory that cannot be opened is warned about and left alone.
    /// Call it before [`Runner::enable_recovery`].
    pub fn enable_dev(&mut self, root: &std::path::Path) {
        match DevDir::open(root) {
            Ok(d) => {
                let (removed, dropped) = d.sweep();
                info!(
                    "managing device nodes and links under {} ({removed} stale links removed, {dropped} stale records dropped)",
                    root.display()
                );
                self.dev.dir = Some(d);
            }
            Err(e) => warn!(
                "{}: {e}; OWNER, GROUP, MODE and SYMLINK are not applied (--dev-root)",
                root.display()
            ),
        }
    }

    /// `--broadcast`: from now on every event is sent to the broadcaster's
    /// targets once fully handled: after its job finished (ATTR writes,
    /// builtins, every handler exited), or right after the rules when it
    /// made no job. An event with no job waits (as an empty job) behind a
    /// running job of the same device, its parents or children, so clients
    /// see each device's events in order.
    pub fn enable_broadcast(&mut self, b: Broadcaster) {
        self.exec.keep_finished();
        self.broadcaster = Some(b);
    }

    /// BROADCAST HOOK (issue 16): sends the jobs the engine has finished.
    fn broadcast_finished(&mut self, cx: &mut Cx<'_>) {
        if self.boot.is_none() && self.broadcaster.is_none() {
            return;
        }
        let (boot, bc) = (&mut self.boot, &mut self.broadcaster);
        self.exec.drain_finished(|job| {
            if let Some(boot) = boot.as_mut() {
                boot.job_finished(job.devpath(), job.raw(), cx.now, cx.procs, cx.stats);
            }
            if let Some(b) = bc.as_mut() {
                b.send(job.raw(), b"", &job.label(), cx.stats);
            }
        });
    }

    /// BROADCAST HOOK (issue 16): an event the rules gave no work to is
    /// handled now, unless a job it must follow is still waiting or running.
    fn broadcast_unworked(&mut self, ev: &Uevent<'_>, cx: &mut Cx<'_>) {
        let Some(b) = self.broadcaster.as_mut() else {
            return;
        };
        if self.exec.idle() {
            let env = self.rules.env_assignments(&self.matched);
            b.send_with_env(
                ev.raw(),
                env,
                &format_args!("{} {}", ev.action(), ev.devpath()),
                cx.stats,
            );
        } else {
            let w = start_job(&mut self.exec, ev);
            let (job, _, oversize) = build_job(&self.rules, ev, &self.matched, &self.sysfs, w);
            note_oversize(oversize, ev, cx);
            self.exec.push(job, cx.now, cx.procs, cx.stats);
        }
    }

    /// Who to tell when the loop starts (pidfile, `--ready-fd`,
    /// `$NOTIFY_SOCKET`), around reloads, and when stopping.
    pub fn set_readiness(&mut self, r: Readiness) {
        self.readiness = r;
    }

    /// Turns on the device table, overrun recovery and coldplug (`run`;
    /// not `replay`). `track`: `--track`, or `None` to follow what the
    /// rules can match. Allocates the table.
    pub fn enable_recovery(&mut self, track: Option<Track>, coldplug: Coldplug) {
        self.track_override = track;
        let track = self.tracked();
        match &track {
            Track::All => info!("tracking devices of every subsystem"),
            Track::Only(v) => info!("tracking devices of subsystems: {}", v.join(", ")),
        }
        let walker = crate::sys::walk::SysfsWalker::new(PathBuf::from(self.sysfs.root()));
        self.recovery = Some(Recovery::new(
            Box::new(walker),
            track,
            coldplug,
            Instant::now(),
        ));
    }

    /// What the table follows: `--track`, or the rules' subsystems.
    fn tracked(&self) -> Track {
        if let Some(t) = &self.track_override {
            return t.clone();
        }
        // rules with OWNER/GROUP/MODE, SYMLINK or TAG count too: links are
        // removed with what the table remembers
        match self.rules.subsystems() {
            Some(v) => Track::Only(v),
            None => Track::All,
        }
    }

    /// The device table, if recovery is on.
    pub fn recovery(&self) -> Option<&Recovery> {
        self.recovery.as_ref()
    }

    /// Dispatches waiting synthetic events while the handler queue has
    /// room; signals readiness once coldplug is done.
    fn pump(&mut self, cx: &mut Cx<'_>) {
        // at most BATCH per turn, like the socket: the loop comes back at
        // once (see `deadline`) after serving its other sources
        for _ in 0..BATCH {
            if !self.exec.has_room() {
                break;
            }
            let Some(d) = self.recovery.as_mut().and_then(Recovery::next_synthetic) else {
                break;
            };
            match Uevent::parse(&d) {
                Ok(ev) => {
                    self.dev.before(ev.devpath(), self.recovery.as_ref());
                    if let Some(r) = self.recovery.as_mut() {
                        r.synthetic_event(&ev, cx.now, cx.stats);
                    }
                    self.handle(&ev, cx);
                }
                Err(e) => {
                    cx.stats.synthetic_malformed += 1;
                    warn!(
                        "a synthetic event did not parse ({e}); dropped (synthetic_malformed={})",
                        cx.stats.synthetic_malformed
                    );
                }
            };
        }
        if let Some(b) = self.boot.as_mut() {
            // BOOT HOOK (issue 17): batch `kmod load` over the whole pass
            b.set_coldplug(self.recovery.as_ref().is_some_and(Recovery::busy));
        }
        if self.recovery.as_mut().is_some_and(Recovery::take_ready) {
            self.readiness.ready();
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Logs `rules: N rules from M files`, each warning and each line
    /// skipped (as udev skips it: the rest loaded).
    pub fn log_loaded(&self) {
        for w in &self.rules.warnings {
            warn!("{w}");
        }
        for e in &self.rules.errors {
            error!("{e}");
        }
        info!(
            "rules: {} rules from {} files{}",
            self.rules.len(),
            self.rules.files.len(),
            if self.rules.errors.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} errors (lines skipped or terms ignored, as udev does)",
                    self.rules.errors.len()
                )
            }
        );
        let c = self.exec.config();
        info!(
            "handler jobs: {} KiB reserved ({} slots of {} KiB: --max-queue {} + --max-children {} + {} finished)",
            self.exec.reserved_bytes() / 1024,
            c.max_queue + c.max_children + crate::exec::FINISHED_SLOTS,
            crate::limits::JOB_SLOT / 1024,
            c.max_queue,
            c.max_children,
            crate::exec::FINISHED_SLOTS
        );
    }

    /// SIGHUP: load the rules again; keep the old ones on any error.
    pub fn reload(&mut self, now: Instant, stats: &mut crate::stats::Stats) {
        self.readiness.reloading();
        self.reload_rules();
        let track = self.tracked();
        if let Some(r) = self.recovery.as_mut() {
            r.retrack(track, now, stats);
        }
        self.readiness.reloaded();
    }

    /// BOOT HOOK (issue 17): after a SIGHUP, the services the rules now
    /// give the present devices (from the device table).
    fn reconcile_services(&mut self, cx: &mut Cx<'_>) {
        let (Some(boot), Some(r)) = (self.boot.as_mut(), self.recovery.as_ref()) else {
            return;
        };
        let t = r.table();
        if t.overflowed() {
            warn!(
                "SIGHUP: the device table overflowed, so the present devices are not all known: \
                 services are left as they are (restart hotplugd to start new ones)"
            );
            return;
        }
        let devices = crate::boot::add_datagrams(
            t.devpaths()
                .map(|d| (d, t.fields(d).map(Iterator::collect).unwrap_or_default())),
        );
        boot.reconcile(
            &self.rules,
            &devices,
            &self.sysfs,
            &mut self.matched,
            cx.now,
            cx.procs,
            cx.stats,
        );
    }

    fn reload_rules(&mut self) {
        match self.from.load(&self.exec.builtin_names()) {
            Ok(rs) if !rs.unparsed_files().is_empty() => {
                for e in &rs.errors {
                    error!("{e}");
                }
                error!(
                    "reload failed ({} does not parse at all: half-written?): the old rules ({} rules from {} files) stay in force",
                    rs.unparsed_files().join(", "),
                    self.rules.len(),
                    self.rules.files.len()
                );
            }
            Ok(rs) => {
                self.rules = rs;
                info!("reloaded after SIGHUP");
                self.log_loaded();
            }
            Err(errors) => {
                for e in &errors {
                    error!("{e}");
                }
                error!(
                    "reload failed ({} errors): the old rules ({} rules from {} files) stay in force",
                    errors.len(),
                    self.rules.len(),
                    self.rules.files.len()
                );
            }
        }
    }
}

/// Writes the job for an event the rules gave work to into `w` (reserved
/// memory: nothing is allocated). Returns the job, the values cut or steps
/// dropped at fixed limits (for the caller to count in `limits_hit`), and
/// whether the job outgrew its slot (`job_oversize`).
pub fn build_job(
    rules: &RuleSet,
    ev: &Uevent<'_>,
    m: &Matched,
    sysfs: &SysfsRoot,
    mut w: JobWriter<'_>,
) -> (Job, usize, bool) {
    let mut limits_hit = 0;
    w.raw(ev.raw(), rules.env_assignments(m));
    rules.env_each(ev, m, &mut |k, v| w.env(k, v));
    for wk in &m.work {
        if crate::boot::is_ours(&rules.actions[wk.action]) {
            continue; // BOOT HOOK (issue 17): done by `Boot::event`
        }
        let loc = rules.location(wk.rule);
        let added = match &rules.actions[wk.action] {
            Action::Run(_) => {
                w.begin_words();
                rules.words_each(wk, ev, m, sysfs, &mut limits_hit, &mut |a| w.word(a));
                w.exec(format_args!("{loc}"))
            }
            Action::Builtin { id, name, .. } => {
                w.begin_words();
                rules.words_each(wk, ev, m, sysfs, &mut limits_hit, &mut |a| w.word(a));
                w.builtin(*id, name, format_args!("{loc}"))
            }
            Action::WriteAttr { .. } => {
                let mut r = Ok(());
                rules.attr_each(wk, ev, m, sysfs, &mut limits_hit, &mut |n, v| {
                    r = w.write_attr(n, v, format_args!("{loc}"));
                });
                r
            }
            // ENV, OWNER/GROUP/MODE, SYMLINK, TAG, OPTIONS: decided by the rules
            _ => Ok(()),
        };
        if let Err(e) = added {
            limits_hit += 1;
            warn!(
                "{loc}: not run for {} {}: {e} (limits_hit counts it)",
                ev.action(),
                ev.devpath()
            );
        }
    }
    let (job, oversize) = w.finish();
    (job, limits_hit, oversize)
}

/// Counts and logs a job that outgrew its reserved slot.
fn note_oversize(oversize: bool, ev: &Uevent<'_>, cx: &mut Cx<'_>) {
    if oversize {
        cx.stats.job_oversize += 1;
        warn!(
            "{} {}: its job did not fit its reserved {} bytes (or every slot was in use) and was \
             put on the heap whole (job_oversize={})",
            ev.action(),
            ev.devpath(),
            crate::limits::JOB_SLOT,
            cx.stats.job_oversize
        );
    }
}

/// Starts the job of an event in the engine's reserved memory.
fn start_job<'e>(exec: &'e mut Exec, ev: &Uevent<'_>) -> JobWriter<'e> {
    exec.start_job(ev.action(), ev.devpath(), ev.get_str("DEVPATH_OLD"))
}

impl Runner {
    /// One event (live or synthetic) through the rules and into the
    /// handler engine.
    fn handle(&mut self, ev: &Uevent<'_>, cx: &mut Cx<'_>) -> Flow {
        // what this event reads of sysfs is read once (ATTRS walks); the
        // USB IDs of devices that stay are not read again
        self.sysfs
            .device_event(ev.action(), ev.devpath(), ev.get_str("DEVPATH_OLD"));
        self.sysfs.begin_event();
        self.rules.evaluate(ev, &self.sysfs, &mut self.matched);
        // /dev before the handlers start
        self.dev.work(
            ev,
            &self.matched,
            &self.rules,
            self.recovery.as_mut(),
            cx.stats,
        );
        let m = &self.matched;
        if let Some(b) = self.boot.as_mut() {
            // BOOT HOOK (issue 17): a remove stops the device's services
            // even when no rule matches it
            b.event(&self.rules, ev, m, &self.sysfs, cx.now, cx.procs, cx.stats);
        }
        if m.count == 0 {
            self.broadcast_unworked(ev, cx);
            self.broadcast_finished(cx);
            return Flow::Continue;
        }
        cx.stats.matched += 1;
        debug!(
            "{} {}: {} rules matched, {} handlers",
            ev.action(),
            ev.devpath(),
            m.count,
            m.work.len()
        );
        let mut hit = m.limits_hit;
        if m.has_work() {
            let w = start_job(&mut self.exec, ev);
            let (job, h, oversize) = build_job(&self.rules, ev, m, &self.sysfs, w);
            note_oversize(oversize, ev, cx);
            hit += h;
            self.exec.push(job, cx.now, cx.procs, cx.stats);
            if !self.exec.has_room() {
                self.exec.note_full(cx.now, cx.stats);
            }
        } else {
            self.broadcast_unworked(ev, cx);
        }
        self.broadcast_finished(cx);
        if hit > 0 {
            cx.stats.limits_hit += hit as u64;
            warn!(
                "{} {}: {hit} values cut or entries dropped at fixed limits (MAX_SUBST_LEN for RUN arguments, ENV{{}}, ATTR{{}} and SYMLINK values; MAX_ENV_ASSIGN; MAX_IMPORTED, MAX_IMPORTED_LEN; MAX_LINKS, MAX_LINK_LEN or a link leaving /dev; MAX_TAGS; MAX_RUN_PER_EVENT); limits_hit={}",
                ev.action(),
                ev.devpath(),
                cx.stats.limits_hit
            );
        }
        Flow::Continue
    }
}

impl Mode for Runner {
    fn scope(&self) -> Scope {
        Scope::Daemon
    }

    fn event(&mut self, ev: &Uevent<'_>, cx: &mut Cx<'_>) -> Flow {
        self.dev.before(ev.devpath(), self.recovery.as_ref());
        // a remove gets what its device's last event knew, before the
        // table forgets it
        let merged = ev.action() == "remove"
            && self
                .recovery
                .as_ref()
                .is_some_and(|r| self.dev.merge(ev, r.table(), cx.stats));
        if let Some(r) = self.recovery.as_mut() {
            if r.event(ev, cx.now) == Verdict::Duplicate {
                debug!(
                    "{} {}: triggered add for a device already added; skipped",
                    ev.action(),
                    ev.devpath()
                );
                return Flow::Continue;
            }
        }
        if merged {
            let buf = core::mem::replace(&mut self.dev.merged, EventBuf::new(0));
            let flow = match Uevent::parse(buf.bytes()) {
                Ok(m) => self.handle(&m, cx),
                Err(_) => self.handle(ev, cx),
            };
            self.dev.merged = buf;
            return flow;
        }
        self.handle(ev, cx)
    }

    fn has_room(&self) -> bool {
        self.exec.has_room() && !self.recovery.as_ref().is_some_and(Recovery::has_synthetic)
    }

    fn overrun(&mut self, cx: &mut Cx<'_>) {
        // a device may have been replaced by another at its devpath unseen
        self.sysfs.forget_devices();
        if let Some(r) = self.recovery.as_mut() {
            r.overrun(cx.now, cx.stats);
        }
    }

    fn drained(&mut self, cx: &mut Cx<'_>) {
        if let Some(r) = self.recovery.as_mut() {
            r.drained(cx.now, cx.stats);
        }
        self.pump(cx);
    }

    fn wants_drain(&mut self) -> bool {
        self.recovery
            .as_mut()
            .is_some_and(Recovery::take_want_drain)
    }

    fn output(&mut self, pid: i32, data: &[u8], cx: &mut Cx<'_>) {
        if let Some(b) = self.boot.as_mut() {
            if b.output(pid, data, cx.now, cx.stats) {
                return;
            }
        }
        self.exec.output(pid, data, cx.now, cx.stats);
    }

    fn output_closed(&mut self, pid: i32, cx: &mut Cx<'_>) {
        if let Some(b) = self.boot.as_mut() {
            if b.output_closed(pid, cx.procs) {
                return;
            }
        }
        self.exec.output_closed(pid, cx.procs);
    }

    fn exited(&mut self, pid: i32, exit: Exit, cx: &mut Cx<'_>) {
        if let Some(b) = self.boot.as_mut() {
            if b.exited(pid, exit.clone(), cx.now, cx.procs, cx.stats) {
                return;
            }
        }
        self.exec.exited(pid, exit, cx.now, cx.procs, cx.stats);
        self.broadcast_finished(cx);
    }

    fn report(&self, now: Instant) {
        if let Some(b) = self.boot.as_ref() {
            b.log_services(now);
        }
    }

    fn signal(&mut self, sig: Sig, cx: &mut Cx<'_>) {
        if sig == Sig::Hup {
            self.reload(cx.now, cx.stats);
            self.reconcile_services(cx);
        }
    }

    fn deadline(&self) -> Option<Instant> {
        let mut d = self.exec.deadline();
        if let Some(b) = self.boot.as_ref().and_then(Boot::deadline) {
            d = Some(d.map_or(b, |a| a.min(b)));
        }
        if let Some(r) = &self.recovery {
            let soon = if r.has_synthetic() && self.exec.has_room() {
                Some(Instant::now())
            } else {
                r.deadline()
            };
            d = match (d, soon) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        d
    }

    fn tick(&mut self, now: Instant, cx: &mut Cx<'_>) {
        if let Some(b) = self.boot.as_mut() {
            b.tick(now, cx.procs, cx.stats);
        }
        self.exec.tick(now, cx.procs, cx.stats);
        self.broadcast_finished(cx);
        if let Some(r) = self.recovery.as_mut() {
            r.tick(now, cx.stats);
        }
        self.pump(cx);
    }

    fn stop(&mut self, cx: &mut Cx<'_>) {
        self.readiness.stopping();
        self.exec.stop(cx.now, cx.procs, cx.stats);
        if let Some(b) = self.boot.as_mut() {
            b.stop(cx.now, cx.procs);
        }
    }

    fn stopped(&self) -> bool {
        self.exec.stopped() && self.boot.as_ref().is_none_or(Boot::stopped)
    }

    fn idle(&self) -> bool {
        self.exec.idle() && self.boot.as_ref().is_none_or(Boot::idle)
    }

    /// CONTROL HOOK (issue 15): idle, and no coldplug or resync pending.
    fn settled(&self) -> bool {
        // BOOT HOOK (issue 17): `kmod load` batches and firmware loads are
        // part of handling the events (as in udev), services are not
        self.exec.idle()
            && !self.recovery.as_ref().is_some_and(Recovery::busy)
            && self.boot.as_ref().is_none_or(Boot::idle)
    }

    /// CONTROL HOOK (issue 15).
    fn status(&self, s: &mut crate::control::Status) {
        self.exec.job_labels(&mut s.running, &mut s.queued);
        s.recovery_busy = self.recovery.as_ref().is_some_and(Recovery::busy);
    }

    /// CONTROL HOOK (issue 15): the device table's record.
    fn device(&self, devpath: &str, out: &mut String) -> bool {
        let Some(fields) = self
            .recovery
            .as_ref()
            .and_then(|r| r.table().fields(devpath))
        else {
            return false;
        };
        for f in fields {
            out.push_str(&String::from_utf8_lossy(f));
            out.push('\n');
        }
        true
    }

    /// The socket is bound and the rules are loaded: coldplug (with
    /// recovery on), then ready.
    fn start(&mut self, cx: &mut Cx<'_>) -> io::Result<()> {
        self.readiness.prepare()?;
        match self.recovery.as_mut() {
            Some(r) => r.start(cx.now, cx.stats), // ready when coldplug is done (pump)
            None => self.readiness.ready(),
        }
        Ok(())
    }
}

/// Other devices of the table that claim `link` (their `DEVLINKS` holds
/// it), with their node and link priority.
fn claimants<'t>(
    table: &'t DeviceTable,
    link: &'t str,
    except: &'t str,
) -> impl Iterator<Item = Claimant<'t>> {
    table
        .devpaths()
        .filter(move |d| *d != except)
        .filter_map(move |d| {
            let (mut node, mut priority, mut claims) = (None, 0, false);
            for f in table.fields(d)? {
                if let Some(v) = f.strip_prefix(b"DEVLINKS=") {
                    claims = devnode::claims(v, link);
                } else if let Some(v) = f.strip_prefix(b"DEVNAME=") {
                    node = core::str::from_utf8(v).ok().map(devnode::devname);
                } else if let Some(v) = f
                    .strip_prefix(devnode::PRIORITY_KEY.as_bytes())
                    .and_then(|r| r.strip_prefix(b"="))
                {
                    priority = core::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                }
            }
            match (claims, node) {
                (true, Some(node)) => Some(Claimant {
                    devpath: d,
                    node,
                    priority,
                }),
                _ => None,
            }
        })
}

impl Dev {
    /// Before the table learns the event: keeps the device's `DEVLINKS`
    /// and `TAGS` of its last event.
    fn before(&mut self, devpath: &str, recovery: Option<&Recovery>) {
        self.prev_links.clear();
        self.prev_tags.clear();
        let Some(fields) = recovery.and_then(|r| r.table().fields(devpath)) else {
            return;
        };
        for f in fields {
            if let Some(v) = f.strip_prefix(b"DEVLINKS=") {
                // sized for the longest DEVLINKS a record can hold
                let _ = self.prev_links.extend_from_slice(v);
            } else if let Some(v) = f.strip_prefix(b"TAGS=") {
                let _ = self.prev_tags.extend_from_slice(v);
            }
        }
    }

    /// Builds in `merged` a kernel `remove` with its device's record merged
    /// in; false if the table does not know the device.
    fn merge(&mut self, ev: &Uevent<'_>, table: &DeviceTable, stats: &mut Stats) -> bool {
        let Some(record) = table.fields(ev.devpath()) else {
            return false;
        };
        match devnode::merge_remove(ev, record, &mut self.merged) {
            Some(0) => true,
            Some(cut) => {
                stats.remove_props_cut += cut as u64;
                warn!(
                    "remove {}: {cut} properties of its add did not fit the event (MAX_FIELDS {}, EVENT_BUFFER {EVENT_BUFFER} bytes); remove_props_cut={}",
                    ev.devpath(),
                    crate::limits::MAX_FIELDS,
                    stats.remove_props_cut
                );
                true
            }
            None => false,
        }
    }

    /// /dev's duties for an event the rules ran on, then (not for a
    /// remove) the device's record in the table: the kernel's keys, what
    /// the rules set or imported, `DEVLINKS`, `TAGS` (every tag since the
    /// add), `CURRENT_TAGS` and the link priority.
    fn work(
        &mut self,
        ev: &Uevent<'_>,
        m: &crate::rules::Matched,
        rules: &RuleSet,
        recovery: Option<&mut Recovery>,
        stats: &mut Stats,
    ) {
        let a = &m.node;
        let remove = ev.action() == "remove";
        let node = NodeId::of(ev);
        if let Some(dir) = &self.dir {
            let table = recovery.as_deref().map(Recovery::table);
            if remove {
                for l in ev
                    .get("DEVLINKS")
                    .map(devnode::devlinks)
                    .into_iter()
                    .flatten()
                {
                    release(dir, table, ev, node.as_ref(), l, stats);
                }
            } else {
                apply_perms(dir, a, node.as_ref(), ev, stats);
                for l in &a.links {
                    claim(dir, table, ev, node.as_ref(), a.link_priority, l, stats);
                }
                for l in devnode::devlinks(&self.prev_links) {
                    if !a.links.iter().any(|x| x.as_str() == l) {
                        release(dir, table, ev, node.as_ref(), l, stats);
                    }
                }
            }
        }
        if remove {
            return;
        }
        if let Some(r) = recovery {
            // TAGS: every tag the device had since its add (udev's TAGS);
            // the rules' own TAGS (this event's) is CURRENT_TAGS
            let mut all = heapless::Vec::<u8, { 2 * PREV_TAGS }>::new();
            let prev = &self.prev_tags[..];
            let new = a
                .tags
                .iter()
                .map(|t| t.as_str())
                .filter(|t| !devnode::tags(prev).any(|p| p == *t));
            for t in devnode::tags(prev).chain(new) {
                if all.is_empty() {
                    let _ = all.push(b':');
                }
                let _ = all.extend_from_slice(t.as_bytes());
                let _ = all.push(b':');
            }
            let env = || {
                rules
                    .env_assignments(m)
                    .filter(|(k, _)| *k != "TAGS")
                    .chain((!all.is_empty()).then_some(("TAGS", &all[..])))
            };
            let mut prio = heapless::String::<12>::new();
            let _ = core::fmt::write(&mut prio, format_args!("{}", a.link_priority));
            let fields = ev
                .fields()
                .iter()
                .filter(|f| !env().any(|(k, _)| k == f.key))
                .map(|f| (f.key.as_bytes(), f.value))
                .chain(env().map(|(k, v)| (k.as_bytes(), v)))
                .chain(
                    (a.link_priority != 0)
                        .then_some((devnode::PRIORITY_KEY.as_bytes(), prio.as_bytes())),
                );
            r.remember(ev.devpath(), fields);
            if r.table().records_cut() != stats.table_records_cut {
                stats.table_records_cut = r.table().records_cut();
                warn!(
                    "{} {}: its record in the device table was cut to the essentials (MAX_RECORD {} bytes): its remove will see fewer properties; table_records_cut={}",
                    ev.action(),
                    ev.devpath(),
                    crate::devices::MAX_RECORD,
                    stats.table_records_cut
                );
            }
        }
    }
}

/// `OWNER`/`GROUP`/`MODE` on the event's node, if it is the event's node.
fn apply_perms(
    dir: &DevDir,
    a: &NodeAssign,
    node: Option<&NodeId<'_>>,
    ev: &Uevent<'_>,
    stats: &mut Stats,
) {
    if a.uid.is_none() && a.gid.is_none() && a.mode.is_none() {
        return;
    }
    let root = dir.root().display();
    let Some(node) = node else {
        // udev too ignores them for devices without a node (USB interfaces)
        debug!(
            "{} {}: OWNER/GROUP/MODE, but the event names no device node",
            ev.action(),
            ev.devpath()
        );
        return;
    };
    let seen = match dir.lstat(node.name) {
        Ok(s) => s,
        Err(e) => {
            stats.dev_perms_failed += 1;
            warn!(
                "{root}/{}: {}; OWNER/GROUP/MODE not applied",
                node.name,
                e.desc()
            );
            return;
        }
    };
    match devnode::perms(a, node, &seen) {
        Perms::Untouched => {}
        Perms::Unchanged => debug!("{root}/{}: owner, group and mode already set", node.name),
        Perms::Apply { mode, uid, gid } => match dir.set_perms(node.name, &seen, mode, uid, gid) {
            Ok(()) => {
                stats.dev_perms_applied += 1;
                debug!(
                    "{root}/{}: uid={} gid={} mode={:o}",
                    node.name,
                    uid.unwrap_or(seen.uid),
                    gid.unwrap_or(seen.gid),
                    mode.unwrap_or(seen.perm)
                );
            }
            Err(nix::errno::Errno::EEXIST) => {
                stats.dev_perms_refused += 1;
                warn!(
                        "{root}/{}: changed while being looked at (no longer the node of {} {}:{}); OWNER/GROUP/MODE not applied; dev_perms_refused={}",
                        node.name,
                        ev.devpath(),
                        node.major,
                        node.minor,
                        stats.dev_perms_refused
                    );
            }
            Err(e) => {
                stats.dev_perms_failed += 1;
                warn!(
                    "{root}/{}: {}; OWNER/GROUP/MODE not applied; dev_perms_failed={}",
                    node.name,
                    e.desc(),
                    stats.dev_perms_failed
                );
            }
        },
        Perms::Refused(why) => {
            stats.dev_perms_refused += 1;
            warn!(
                "{root}/{}: OWNER/GROUP/MODE of {} {} ({} {}:{}) not applied: {why}; dev_perms_refused={}",
                node.name,
                ev.action(),
                ev.devpath(),
                if node.block { "block" } else { "char" },
                node.major,
                node.minor,
                stats.dev_perms_refused
            );
        }
    }
}

/// Makes (or leaves to a higher-priority claimant) one `SYMLINK` link of
/// the event's device.
fn claim(
    dir: &DevDir,
    table: Option<&DeviceTable>,
    ev: &Uevent<'_>,
    node: Option<&NodeId<'_>>,
    priority: i32,
    link: &str,
    stats: &mut Stats,
) {
    let root = dir.root().display();
    let devpath = ev.devpath();
    let refuse = |stats: &mut Stats, why: &dyn core::fmt::Display| {
        stats.dev_links_refused += 1;
        warn!(
            "{root}/{link}: not made for {} {devpath}: {why}; dev_links_refused={}",
            ev.action(),
            stats.dev_links_refused
        );
    };
    let Some(node) = node else {
        return refuse(
            stats,
            &"the event names no device node (DEVNAME, MAJOR, MINOR)",
        );
    };
    if let Err(why) = devnode::check_link(link) {
        return refuse(stats, &why);
    }
    let mut target = Target::new();
    if !devnode::relative_target(link, node.name, &mut target) {
        return refuse(stats, &"its target is too long");
    }
    let mut buf = [0u8; devnode::MAX_TARGET];
    let (kind, current) = match dir.read_link(link, &mut buf) {
        Ok(x) => x,
        Err(e) => {
            stats.dev_links_failed += 1;
            warn!(
                "{root}/{link}: {}; dev_links_failed={}",
                e.desc(),
                stats.dev_links_failed
            );
            return;
        }
    };
    match devnode::link_plan(kind, current, &target) {
        LinkPlan::Keep => return,
        LinkPlan::Refuse(k) => {
            return refuse(
                stats,
                &format_args!("the path holds {k}, which is never replaced"),
            )
        }
        LinkPlan::Make => {}
    }
    if kind == devnode::Kind::Symlink {
        // it points elsewhere: does another device claim it?
        let ours = Claimant {
            devpath,
            node: node.name,
            priority,
        };
        let other = table.and_then(|t| devnode::best(claimants(t, link, devpath)));
        if let Some(o) = other {
            stats.dev_link_conflicts += 1;
            let w = devnode::winner(ours, Some(o));
            warn!(
                "{root}/{link}: claimed by {devpath} (link_priority {priority}) and {} (link_priority {}): {} gets it (udev: the device of the event being handled, unless another has a higher priority); dev_link_conflicts={}",
                o.devpath,
                o.priority,
                w.devpath,
                stats.dev_link_conflicts
            );
            if w.devpath != devpath {
                if !devnode::relative_target(link, o.node, &mut target) {
                    return;
                }
                if current == Some(target.as_bytes()) {
                    return;
                }
            }
        }
    }
    match dir.make_link(link, &target) {
        Ok(()) => {
            stats.dev_links_made += 1;
            debug!("{root}/{link} -> {target}");
        }
        Err(e) => {
            stats.dev_links_failed += 1;
            warn!(
                "{root}/{link}: not made ({}); dev_links_failed={}",
                e.desc(),
                stats.dev_links_failed
            );
        }
    }
}

/// A link the event's device no longer claims: removed if it points to
/// the device's node and nobody else claims it, handed to the best other
/// claimant if someone does, left alone otherwise.
fn release(
    dir: &DevDir,
    table: Option<&DeviceTable>,
    ev: &Uevent<'_>,
    node: Option<&NodeId<'_>>,
    link: &str,
    stats: &mut Stats,
) {
    let root = dir.root().display();
    let devpath = ev.devpath();
    let Some(node) = node else { return };
    let mut ours = Target::new();
    if devnode::check_link(link).is_err() || !devnode::relative_target(link, node.name, &mut ours) {
        return;
    }
    let mut buf = [0u8; devnode::MAX_TARGET];
    let current = match dir.read_link(link, &mut buf) {
        Ok((_, c)) => c,
        Err(e) => {
            stats.dev_links_failed += 1;
            warn!(
                "{root}/{link}: {}; dev_links_failed={}",
                e.desc(),
                stats.dev_links_failed
            );
            return;
        }
    };
    let next = table.and_then(|t| devnode::best(claimants(t, link, devpath)));
    let done = match devnode::release(current, &ours, next.is_some()) {
        Release::Leave => {
            debug!("{root}/{link}: not {devpath}'s; left alone");
            return;
        }
        Release::Remove => dir.remove_link(link).map(|()| {
            stats.dev_links_removed += 1;
            debug!("{root}/{link}: removed ({} {devpath})", ev.action());
        }),
        Release::Hand => {
            let Some(n) = next else { return };
            let mut t = Target::new();
            if !devnode::relative_target(link, n.node, &mut t) {
                return;
            }
            dir.make_link(link, &t).map(|()| {
                stats.dev_links_made += 1;
                info!(
                    "{root}/{link}: {devpath} no longer claims it; now {}'s (link_priority {})",
                    n.devpath, n.priority
                );
            })
        }
    };
    if let Err(e) = done {
        stats.dev_links_failed += 1;
        warn!(
            "{root}/{link}: {}; dev_links_failed={}",
            e.desc(),
            stats.dev_links_failed
        );
    }
}
