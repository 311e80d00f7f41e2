//! The `run` and `replay` mode: each event goes through the rules; events
//! with work become jobs for the handler engine ([`crate::exec`]). SIGHUP
//! reloads the rules; a reload with any error keeps the old rules.

use std::io;
use std::path::PathBuf;
use std::time::Instant;

use log::{debug, error, info, warn};

use crate::daemon::{Cx, Flow, Mode, BATCH};
use crate::exec::{BuiltinFn, Builtins, Exec, ExecConfig, Exit, Job, Step};
use crate::recovery::{Coldplug, Recovery, Track, Verdict};
use crate::rules::parse::{self, Source, DEFAULT_RULES, DEFAULT_RULES_NAME};
use crate::rules::{Action, Diagnostic, Matched, RuleSet};
use crate::stats::Scope;
use crate::sys::broadcast::Broadcaster;
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
        })
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
        let Some(b) = self.broadcaster.as_mut() else {
            return;
        };
        while let Some(job) = self.exec.take_finished() {
            b.send(&job.raw, b"", &job.label, cx.stats);
        }
    }

    /// BROADCAST HOOK (issue 16): an event the rules gave no work to is
    /// handled now, unless a job it must follow is still waiting or running.
    fn broadcast_unworked(&mut self, ev: &Uevent<'_>, cx: &mut Cx<'_>) {
        let Some(b) = self.broadcaster.as_mut() else {
            return;
        };
        if self.exec.idle() {
            let env = self.rules.env_assignments(&self.matched);
            let label = format_args!("{} {}", ev.action(), ev.devpath());
            b.send_with_env(ev.raw(), env, &label, cx.stats);
        } else {
            let (job, _) = build_job(&self.rules, ev, &self.matched, &self.sysfs);
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
        if self.recovery.as_mut().is_some_and(Recovery::take_ready) {
            self.readiness.ready();
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Logs `rules: N rules from M files` and each warning.
    pub fn log_loaded(&self) {
        for w in &self.rules.warnings {
            warn!("{w}");
        }
        info!(
            "rules: {} rules from {} files",
            self.rules.len(),
            self.rules.files.len()
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

    fn reload_rules(&mut self) {
        match self.from.load(&self.exec.builtin_names()) {
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

/// Builds the job for an event the rules gave work to. Allocates.
pub fn build_job(rules: &RuleSet, ev: &Uevent<'_>, m: &Matched, sysfs: &SysfsRoot) -> (Job, usize) {
    let mut limits_hit = 0;
    let mut raw = ev.raw().to_vec();
    for (k, v) in rules.env_assignments(m) {
        raw.extend_from_slice(k.as_bytes());
        raw.push(b'=');
        raw.extend_from_slice(v);
        raw.push(0);
    }
    let mut steps = std::collections::VecDeque::new();
    for w in &m.work {
        let rule = rules.location(w.rule).to_string();
        match &rules.actions[w.action] {
            Action::Run(_) => {
                if let Some(argv) = rules.argv(w, ev, m, sysfs, &mut limits_hit) {
                    steps.push_back(Step::Exec { argv, rule });
                }
            }
            Action::Builtin { id, name, .. } => {
                let args = rules
                    .argv(w, ev, m, sysfs, &mut limits_hit)
                    .unwrap_or_default();
                steps.push_back(Step::Builtin {
                    id: *id,
                    name: name.to_string(),
                    args,
                    rule,
                });
            }
            Action::WriteAttr { .. } => {
                if let Some((name, value)) = rules.attr_write(w, ev, m, sysfs, &mut limits_hit) {
                    steps.push_back(Step::WriteAttr { name, value, rule });
                }
            }
            Action::SetEnv { .. } => {}
        }
    }
    let job = Job {
        label: format!("{} {}", ev.action(), ev.devpath()),
        devpath: ev.devpath().to_string(),
        devpath_old: ev.get_str("DEVPATH_OLD").map(String::from),
        raw,
        env: rules.env(ev, m),
        steps,
    };
    (job, limits_hit)
}

impl Runner {
    /// One event (live or synthetic) through the rules and into the
    /// handler engine.
    fn handle(&mut self, ev: &Uevent<'_>, cx: &mut Cx<'_>) -> Flow {
        self.rules.evaluate(ev, &self.sysfs, &mut self.matched);
        let m = &self.matched;
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
            let (job, h) = build_job(&self.rules, ev, m, &self.sysfs);
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
                "{} {}: {hit} values cut or entries dropped at fixed limits (MAX_SUBST_LEN for RUN arguments, ENV{{}} and ATTR{{}} values; MAX_ENV_ASSIGN; MAX_RUN_PER_EVENT); limits_hit={}",
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
        self.handle(ev, cx)
    }

    fn has_room(&self) -> bool {
        self.exec.has_room() && !self.recovery.as_ref().is_some_and(Recovery::has_synthetic)
    }

    fn overrun(&mut self, cx: &mut Cx<'_>) {
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
        self.exec.output(pid, data, cx.now, cx.stats);
    }

    fn output_closed(&mut self, pid: i32, cx: &mut Cx<'_>) {
        self.exec.output_closed(pid, cx.procs);
    }

    fn exited(&mut self, pid: i32, exit: Exit, cx: &mut Cx<'_>) {
        self.exec.exited(pid, exit, cx.now, cx.procs, cx.stats);
        self.broadcast_finished(cx);
    }

    fn signal(&mut self, sig: Sig, cx: &mut Cx<'_>) {
        if sig == Sig::Hup {
            self.reload(cx.now, cx.stats);
        }
    }

    fn deadline(&self) -> Option<Instant> {
        let mut d = self.exec.deadline();
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
    }

    fn stopped(&self) -> bool {
        self.exec.stopped()
    }

    fn idle(&self) -> bool {
        self.exec.idle()
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
