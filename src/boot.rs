//! The boot duties of a device manager, beside the handler engine:
//! device-bound services ([`crate::services`]), module autoloading
//! ([`crate::kmod`]) and firmware loading ([`crate::firmware`]). Pure: the
//! loop lends a [`BootIo`] and feeds back exits and output, as for
//! [`crate::exec`].
//!
//! The runner hands each event's matched work here before building the
//! handler job ([`Boot::event`]); the job then leaves out what is done
//! here (see [`is_ours`]). The loop routes every reaped pid and pipe read
//! here first ([`Boot::exited`], [`Boot::output`]); what is not ours goes to
//! the handler engine.
//!
//! When the work runs:
//! - `kmod load`: names are queued at once; `modprobe` runs in batches.
//! - `firmware`: the loader child starts at once, bypassing the engine's
//!   per-device ordering (the parent's job may wait for this very load).
//! - `RUN{service}`: started once the device's `add` job has finished
//!   ([`Boot::job_finished`]: its ordinary handlers ran, in the engine's
//!   order); stopped on the device's `remove` as soon as it arrives.

use std::path::PathBuf;
use std::time::Instant;

use log::{info, warn};

use crate::exec::{Exit, Job, ProcIo};
use crate::firmware::{self, Outcome, Plan};
use crate::kmod::Kmod;
use crate::rules::{Action, Matched, RuleSet, Sysfs};
use crate::services::{ServiceConfig, Services, Want};
use crate::stats::{Ms, Stats};
use crate::uevent::Uevent;

/// The builtin names handled here rather than by [`crate::exec::Builtins`].
pub const BUILTINS: [&str; 2] = ["kmod", "firmware"];

/// What the loop does for this module, beyond [`ProcIo`].
pub trait BootIo {
    /// The process I/O (spawn, signal, close a pipe).
    fn procs(&mut self) -> &mut dyn ProcIo;
    /// Starts a firmware loader child ([`crate::sys::firmware`]); its pid.
    fn load_firmware(&mut self, plan: &Plan) -> Result<i32, String>;
}

/// True if the work item is done here, not by the handler engine: a
/// `RUN{service}`, `RUN{builtin}+="kmod ..."` or `"firmware"`.
pub fn is_ours(a: &Action) -> bool {
    match a {
        Action::Run(c) => c.service,
        Action::Builtin { name, .. } => BUILTINS.contains(&&**name),
        _ => false,
    }
}

/// Settings.
#[derive(Clone, Debug)]
pub struct BootConfig {
    /// The services' settings.
    pub services: ServiceConfig,
    /// `modprobe`'s path, if there is one.
    pub modprobe: Option<Vec<u8>>,
    /// The firmware search directories, in order
    /// ([`firmware::search_dirs`]).
    pub firmware_dirs: Vec<PathBuf>,
    /// `--sysfs-root`.
    pub sysfs: PathBuf,
}

struct Loader {
    pid: i32,
    name: String,
    devpath: String,
    since: Instant,
}

/// Services, module loading and firmware loading.
pub struct Boot {
    services: Services,
    kmod: Kmod,
    firmware_dirs: Vec<PathBuf>,
    sysfs: PathBuf,
    loaders: Vec<Loader>,
    /// Services an `add` asked for, waiting for the add's job to finish.
    waiting: Vec<Want>,
}

impl Boot {
    /// Idle.
    pub fn new(cfg: BootConfig) -> Boot {
        Boot {
            services: Services::new(cfg.services),
            kmod: Kmod::new(cfg.modprobe),
            firmware_dirs: cfg.firmware_dirs,
            sysfs: cfg.sysfs,
            loaders: Vec::new(),
            waiting: Vec::new(),
        }
    }

    /// The services.
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// The module loader.
    pub fn kmod(&self) -> &Kmod {
        &self.kmod
    }

    /// Firmware loaders running.
    pub fn loaders(&self) -> usize {
        self.loaders.len()
    }

    /// The event's work that is ours. Call after [`RuleSet::evaluate`],
    /// before the job is built.
    #[allow(clippy::too_many_arguments)]
    pub fn event(
        &mut self,
        rules: &RuleSet,
        ev: &Uevent<'_>,
        m: &Matched,
        sysfs: &dyn Sysfs,
        now: Instant,
        io: &mut dyn BootIo,
        stats: &mut Stats,
    ) {
        if ev.action() == "remove" {
            self.waiting.retain(|w| w.devpath != ev.devpath());
            self.services.device_removed(ev.devpath(), now, io.procs());
        }
        let mut hit = 0;
        for w in &m.work {
            let a = &rules.actions[w.action];
            if !is_ours(a) {
                continue;
            }
            let rule = rules.location(w.rule).to_string();
            let args = rules.argv(w, ev, m, sysfs, &mut hit).unwrap_or_default();
            match a {
                Action::Run(_) if ev.action() == "add" => {
                    self.waiting.push(Want {
                        devpath: ev.devpath().to_string(),
                        rule,
                        argv: args,
                        env: rules.env(ev, m),
                    });
                }
                Action::Run(_) => {} // a service starts with its device's add only
                Action::Builtin { name, .. } if &**name == "kmod" => {
                    if let Err(e) = self.kmod.request(&args, ev.get("MODALIAS"), now, stats) {
                        stats.kmod_failed += 1;
                        warn!("{rule}: {e} (kmod_failed={})", stats.kmod_failed);
                    }
                }
                Action::Builtin { .. } => self.firmware(ev, &rule, now, io, stats),
                _ => {}
            }
        }
        if hit > 0 {
            stats.limits_hit += hit as u64;
        }
        self.kmod.tick(now, io.procs(), stats);
    }

    fn firmware(
        &mut self,
        ev: &Uevent<'_>,
        rule: &str,
        now: Instant,
        io: &mut dyn BootIo,
        stats: &mut Stats,
    ) {
        if ev.action() != "add" {
            return;
        }
        let plan = match firmware::plan(
            &self.sysfs,
            ev.devpath(),
            ev.get_str("FIRMWARE"),
            &self.firmware_dirs,
        ) {
            Ok(p) => p,
            Err(e) => {
                stats.firmware_failed += 1;
                warn!(
                    "{rule}: firmware for {}: {e} (firmware_failed={})",
                    ev.devpath(),
                    stats.firmware_failed
                );
                return;
            }
        };
        match io.load_firmware(&plan) {
            Ok(pid) => {
                info!(
                    "{rule}: loading firmware {} for {} [{pid}]",
                    plan.name,
                    ev.devpath()
                );
                self.loaders.push(Loader {
                    pid,
                    name: plan.name,
                    devpath: ev.devpath().to_string(),
                    since: now,
                });
            }
            Err(e) => {
                stats.firmware_failed += 1;
                warn!(
                    "{rule}: firmware {} for {}: cannot start the loader: {e} (firmware_failed={})",
                    plan.name,
                    ev.devpath(),
                    stats.firmware_failed
                );
            }
        }
    }

    /// A handler job finished (all its steps done): the services its
    /// device's `add` asked for start now.
    pub fn job_finished(
        &mut self,
        job: &Job,
        now: Instant,
        io: &mut dyn BootIo,
        stats: &mut Stats,
    ) {
        if self.waiting.is_empty() || !Uevent::parse(&job.raw).is_ok_and(|e| e.action() == "add") {
            return;
        }
        let mut i = 0;
        while i < self.waiting.len() {
            if self.waiting[i].devpath == job.devpath {
                let w = self.waiting.remove(i);
                self.services.start(w, now, io.procs(), stats);
            } else {
                i += 1;
            }
        }
    }

    /// SIGHUP: `devices` are the present devices as `add` datagrams; the
    /// services the new rules give them are wanted, the rest stopped.
    pub fn reconcile(
        &mut self,
        rules: &RuleSet,
        devices: &[Vec<u8>],
        sysfs: &dyn Sysfs,
        m: &mut Matched,
        now: Instant,
        io: &mut dyn BootIo,
        stats: &mut Stats,
    ) {
        let mut wanted = Vec::new();
        let mut hit = 0;
        for d in devices {
            let Ok(ev) = Uevent::parse(d) else { continue };
            rules.evaluate(&ev, sysfs, m);
            for w in &m.work {
                if let Action::Run(c) = &rules.actions[w.action] {
                    if c.service {
                        wanted.push(Want {
                            devpath: ev.devpath().to_string(),
                            rule: rules.location(w.rule).to_string(),
                            argv: rules.argv(w, &ev, m, sysfs, &mut hit).unwrap_or_default(),
                            env: rules.env(&ev, m),
                        });
                    }
                }
            }
        }
        // services waiting for their add job are wanted as they are
        self.waiting.retain(|w| {
            wanted
                .iter()
                .any(|x| x.devpath == w.devpath && x.argv == w.argv)
        });
        wanted.retain(|x| {
            !self
                .waiting
                .iter()
                .any(|w| x.devpath == w.devpath && x.argv == w.argv)
        });
        info!(
            "SIGHUP: {} services wanted by the rules for {} present devices",
            wanted.len(),
            devices.len()
        );
        self.services.reconcile(wanted, now, io.procs(), stats);
    }

    /// The loop reaped `pid`; false if it is not ours.
    pub fn exited(
        &mut self,
        pid: i32,
        exit: Exit,
        now: Instant,
        io: &mut dyn BootIo,
        stats: &mut Stats,
    ) -> bool {
        if let Some(i) = self.loaders.iter().position(|l| l.pid == pid) {
            let l = self.loaders.swap_remove(i);
            let took = Ms(now.saturating_duration_since(l.since));
            match exit {
                Exit::Code(c) => match Outcome::from_exit(c) {
                    Outcome::Loaded => {
                        stats.firmware_loaded += 1;
                        info!("firmware {} loaded for {} in {took}", l.name, l.devpath);
                    }
                    Outcome::NotFound => {
                        stats.firmware_not_found += 1;
                        warn!(
                            "firmware {} for {}: not found in {}; the driver was told (firmware_not_found={})",
                            l.name,
                            l.devpath,
                            self.firmware_dirs
                                .iter()
                                .map(|d| d.display().to_string())
                                .collect::<Vec<_>>()
                                .join(", "),
                            stats.firmware_not_found
                        );
                    }
                    Outcome::Failed(e) => {
                        stats.firmware_failed += 1;
                        warn!(
                            "firmware {} for {}: {} (firmware_failed={})",
                            l.name,
                            l.devpath,
                            std::io::Error::from_raw_os_error(e),
                            stats.firmware_failed
                        );
                    }
                },
                other => {
                    stats.firmware_failed += 1;
                    warn!(
                        "firmware {} for {}: loader ended: {other:?} (firmware_failed={})",
                        l.name, l.devpath, stats.firmware_failed
                    );
                }
            }
            return true;
        }
        if self.kmod.exited(pid, exit.clone(), now, stats) {
            self.kmod.tick(now, io.procs(), stats);
            return true;
        }
        self.services.exited(pid, exit, now, io.procs(), stats)
    }

    /// Output of `pid`; false if it is not ours.
    pub fn output(&mut self, pid: i32, data: &[u8], now: Instant, stats: &mut Stats) -> bool {
        self.kmod.output(pid, data, now, stats) || self.services.output(pid, data, now, stats)
    }

    /// The pipe of `pid` ended; false if it is not ours.
    pub fn output_closed(&mut self, pid: i32, io: &mut dyn BootIo) -> bool {
        self.kmod.output_closed(pid) || self.services.output_closed(pid, io.procs())
    }

    /// The next time [`Boot::tick`] has work.
    pub fn deadline(&self) -> Option<Instant> {
        match (self.services.deadline(), self.kmod.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Timers: restarts, stops, batches.
    pub fn tick(&mut self, now: Instant, io: &mut dyn BootIo, stats: &mut Stats) {
        self.services.tick(now, io.procs(), stats);
        self.kmod.tick(now, io.procs(), stats);
    }

    /// Daemon exit: stop the services (`modprobe` and loaders finish on
    /// their own).
    pub fn stop(&mut self, now: Instant, io: &mut dyn BootIo) {
        self.waiting.clear();
        self.services.stop(now, io.procs());
    }

    /// True once every service has ended.
    pub fn stopped(&self) -> bool {
        self.services.stopped()
    }

    /// True when nothing waits or runs.
    pub fn idle(&self) -> bool {
        self.kmod.idle() && self.loaders.is_empty() && self.waiting.is_empty()
    }

    /// SIGUSR1: one line per service (what runs for which device).
    pub fn log_services(&self, now: Instant) {
        let list = self.services.list(now);
        info!("services: {} known", list.len());
        for s in list {
            info!(
                "service {} for {}: {}{} ({}, restarts={})",
                s.program,
                s.devpath,
                s.state,
                s.pid.map(|p| format!(" [{p}]")).unwrap_or_default(),
                s.rule,
                s.restarts
            );
        }
    }
}

/// `add@DEVPATH` datagrams for the devices of a table (for
/// [`Boot::reconcile`]).
pub fn add_datagrams<'a>(devices: impl Iterator<Item = (&'a str, Vec<&'a [u8]>)>) -> Vec<Vec<u8>> {
    devices
        .map(|(devpath, fields)| {
            let mut d = Vec::with_capacity(256);
            for part in [
                &b"add@"[..],
                devpath.as_bytes(),
                b"\0ACTION=add\0DEVPATH=",
                devpath.as_bytes(),
                b"\0",
            ] {
                d.extend_from_slice(part);
            }
            for f in fields {
                d.extend_from_slice(f);
                d.push(0);
            }
            d
        })
        .collect()
}
