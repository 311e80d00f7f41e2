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

use crate::exec::{Exit, ProcIo};
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
    /// False for `replay`: it ends once its events are handled, so a
    /// service would outlive it; each is logged as not started instead.
    pub run_services: bool,
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
    /// Services an `add` asked for, waiting for the add's job to finish:
    /// (the add's DEVPATH, which names its job; the service, whose DEVPATH
    /// follows a `move` meanwhile).
    waiting: Vec<(String, Want)>,
    run_services: bool,
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
            run_services: cfg.run_services,
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
            self.waiting.retain(|(_, w)| w.devpath != ev.devpath());
            self.services.device_removed(ev.devpath(), now, io.procs());
        }
        if let (Some(old), "move") = (ev.get_str("DEVPATH_OLD"), ev.action()) {
            for (_, w) in self.waiting.iter_mut().filter(|(_, w)| w.devpath == old) {
                w.devpath = ev.devpath().to_string();
            }
            self.services.device_moved(old, ev.devpath());
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
                Action::Run(_) if ev.action() == "add" && !self.run_services => {
                    info!(
                        "{rule}: service {} for {} not started (replay)",
                        String::from_utf8_lossy(args.first().map_or(&b""[..], Vec::as_slice)),
                        ev.devpath()
                    );
                }
                Action::Run(_) if ev.action() == "add" => {
                    self.waiting.push((
                        ev.devpath().to_string(),
                        Want {
                            devpath: ev.devpath().to_string(),
                            rule,
                            argv: args,
                            env: rules.env(ev, m),
                        },
                    ));
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

    /// A handler job finished (all its steps done), for the event `raw`
    /// of `devpath`: the services its device's `add` asked for start now.
    pub fn job_finished(
        &mut self,
        devpath: &str,
        raw: &[u8],
        now: Instant,
        io: &mut dyn BootIo,
        stats: &mut Stats,
    ) {
        if self.waiting.is_empty() || !Uevent::parse(raw).is_ok_and(|e| e.action() == "add") {
            return;
        }
        let mut i = 0;
        while i < self.waiting.len() {
            if self.waiting[i].0 == devpath {
                let (_, w) = self.waiting.remove(i);
                self.services.start(w, now, io.procs(), stats);
            } else {
                i += 1;
            }
        }
    }

    /// SIGHUP: `devices` are the present devices as `add` datagrams; the
    /// services the new rules give them are wanted, the rest stopped.
    #[allow(clippy::too_many_arguments)]
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
        self.waiting.retain(|(_, w)| {
            wanted
                .iter()
                .any(|x| x.devpath == w.devpath && x.argv == w.argv)
        });
        wanted.retain(|x| {
            !self
                .waiting
                .iter()
                .any(|(_, w)| x.devpath == w.devpath && x.argv == w.argv)
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

    /// Coldplug or a resync is dispatching synthetic events: module names
    /// wait for a full batch or the end of the pass.
    pub fn set_coldplug(&mut self, busy: bool) {
        self.kmod.set_hold(busy);
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

#[cfg(test)]
mod tests {
    //! Boot duties on fake processes, real compiled rules and a virtual
    //! clock; and the firmware deadlock case against the handler engine's
    //! ordering.

    use super::*;
    use crate::exec::{Builtins, Exec, ExecConfig, Kill};
    use crate::job::Words;
    use crate::kmod::{BATCH_BYTES, BATCH_DELAY, BATCH_NAMES};
    use crate::rules::parse::{compile, Source};
    use crate::rules::NoSysfs;
    use std::time::Duration;

    #[derive(Default)]
    struct Fake {
        next: i32,
        spawned: Vec<(i32, Vec<Vec<u8>>)>,
        loads: Vec<(i32, Plan)>,
        alive: Vec<i32>,
    }

    impl ProcIo for Fake {
        fn spawn(
            &mut self,
            argv: Words<'_>,
            _: &[Words<'_>],
            _: Option<(u32, u32)>,
        ) -> Result<i32, String> {
            self.next += 1;
            let pid = 100 + self.next;
            self.spawned
                .push((pid, argv.iter().map(<[u8]>::to_vec).collect()));
            self.alive.push(pid);
            Ok(pid)
        }
        fn write_attr(&mut self, _: &str, _: &str, _: &[u8]) -> Result<i32, String> {
            Err("not used".into())
        }
        fn signal_group(&mut self, pgid: i32, _: Kill) -> bool {
            self.alive.contains(&pgid)
        }
        fn close_output(&mut self, _: i32) {}
    }

    impl BootIo for Fake {
        fn procs(&mut self) -> &mut dyn ProcIo {
            self
        }
        fn load_firmware(&mut self, plan: &Plan) -> Result<i32, String> {
            self.next += 1;
            let pid = 100 + self.next;
            self.loads.push((pid, plan.clone()));
            self.alive.push(pid);
            Ok(pid)
        }
    }

    const RULES: &str = "\
SUBSYSTEM==\"firmware\", ACTION==\"add\", RUN{builtin}+=\"firmware\"
ENV{MODALIAS}==\"?*\", RUN{builtin}+=\"kmod load\"
SUBSYSTEM==\"net\", ACTION==\"add\", RUN{service}+=\"/bin/svc $env{INTERFACE}\"
SUBSYSTEM==\"usb\", ACTION==\"add\", RUN+=\"/bin/wait-for-probe\"
";

    fn rules() -> RuleSet {
        compile(
            &[Source {
                name: "t.rules".into(),
                text: RULES.into(),
            }],
            &BUILTINS,
        )
        .unwrap()
    }

    fn boot(modprobe: bool) -> Boot {
        Boot::new(BootConfig {
            services: ServiceConfig {
                max: 4,
                grace: Duration::from_secs(2),
                extra_env: Vec::new(),
                creds: None,
            },
            modprobe: modprobe.then(|| b"/sbin/modprobe".to_vec()),
            firmware_dirs: firmware::search_dirs("6.1.0", &[PathBuf::from("/opt/fw")]),
            sysfs: PathBuf::from("/sys"),
            run_services: true,
        })
    }

    fn datagram(action: &str, devpath: &str, fields: &[&str]) -> Vec<u8> {
        let mut d =
            format!("{action}@{devpath}\0ACTION={action}\0DEVPATH={devpath}\0").into_bytes();
        for f in fields {
            d.extend_from_slice(f.as_bytes());
            d.push(0);
        }
        d
    }

    /// Runs one event through the rules into `b`.
    fn feed(b: &mut Boot, rs: &RuleSet, d: &[u8], now: Instant, io: &mut Fake, st: &mut Stats) {
        let ev = Uevent::parse(d).unwrap();
        let mut m = Matched::default();
        rs.evaluate(&ev, &NoSysfs, &mut m);
        b.event(rs, &ev, &m, &NoSysfs, now, io, st);
    }

    #[test]
    fn builtins_and_services_are_left_out_of_handler_jobs() {
        let rs = rules();
        let ours: Vec<bool> = rs.actions.iter().map(is_ours).collect();
        assert_eq!(ours, [true, true, true, false]);
    }

    #[test]
    fn a_coldplug_of_300_aliases_runs_modprobe_twice() {
        let rs = rules();
        let (mut b, mut io, mut st) = (boot(true), Fake::default(), Stats::default());
        let t0 = Instant::now();
        for i in 0..300 {
            let alias = format!("MODALIAS=usb:v0403p{i:04X}d0600dc00dsc00dp00icFFiscFFipFFin00");
            let d = datagram("add", &format!("/devices/usb1/1-{i}"), &[&alias]);
            feed(&mut b, &rs, &d, t0, &mut io, &mut st);
        }
        // the same alias again (a second identical device) is not queued twice
        let d = datagram(
            "add",
            "/devices/usb2/2-1",
            &["MODALIAS=usb:v0403p012Bd0600dc00dsc00dp00icFFiscFFipFFin00"],
        );
        feed(&mut b, &rs, &d, t0, &mut io, &mut st);
        assert_eq!(io.spawned.len(), 1, "one modprobe for the first full batch");
        let (pid, argv) = io.spawned[0].clone();
        assert_eq!(&argv[..4], [&b"/sbin/modprobe"[..], b"-b", b"-q", b"-a"]);
        assert_eq!(argv.len(), 4 + BATCH_NAMES);
        assert_eq!(b.kmod().queued(), 300 - BATCH_NAMES);
        // the rest waits for the running one (one modprobe at a time)...
        b.tick(t0 + BATCH_DELAY * 10, &mut io, &mut st);
        assert_eq!(io.spawned.len(), 1);
        // ...and goes as soon as it exits, having waited the batch delay
        let t1 = t0 + Duration::from_millis(900);
        assert!(b.exited(pid, Exit::Code(0), t1, &mut io, &mut st));
        assert_eq!(io.spawned.len(), 2);
        assert_eq!(io.spawned[1].1.len(), 4 + 300 - BATCH_NAMES);
        assert_eq!((st.kmod_runs, st.kmod_aliases, st.kmod_failed), (2, 300, 0));
        // a single hotplug later: one run after the short delay
        // exit 1 with nothing printed: aliases no module claims (-q)
        let pid2 = io.spawned[1].0;
        b.exited(pid2, Exit::Code(1), t1, &mut io, &mut st);
        assert_eq!(st.kmod_failed, 0);
        let d = datagram("add", "/devices/usb1/1-9", &["MODALIAS=usb:v1234p5678"]);
        feed(&mut b, &rs, &d, t1, &mut io, &mut st);
        assert_eq!(io.spawned.len(), 2);
        b.tick(t1 + BATCH_DELAY, &mut io, &mut st);
        assert_eq!(io.spawned[2].1[4], b"usb:v1234p5678");
        // exit 1 after printing: a real failure
        let pid3 = io.spawned[2].0;
        assert!(b.output(
            pid3,
            b"modprobe: can't load module x: Invalid argument\n",
            t1,
            &mut st
        ));
        b.exited(pid3, Exit::Code(1), t1, &mut io, &mut st);
        assert_eq!(st.kmod_failed, 1);
    }

    #[test]
    fn long_modaliases_load_and_a_batch_stays_under_its_byte_bound() {
        let rs = rules();
        let (mut b, mut io, mut st) = (boot(true), Fake::default(), Stats::default());
        let t0 = Instant::now();
        // an x86 CPU's MODALIAS: its feature list runs past 1 KB (512 bytes
        // refused it in the x86_64 guest)
        let features: String = (0..250).map(|i| format!(",{i:04X}")).collect();
        let cpu = format!("MODALIAS=cpu:type:x86,ven0002fam000Fmod006B:feature:{features}");
        assert!(cpu.len() > 1024);
        let d = datagram("add", "/devices/system/cpu/cpu0", &[&cpu]);
        feed(&mut b, &rs, &d, t0, &mut io, &mut st);
        b.tick(t0 + BATCH_DELAY, &mut io, &mut st);
        assert_eq!(st.kmod_failed, 0);
        assert_eq!(io.spawned.len(), 1);
        assert_eq!(io.spawned[0].1[4], cpu.as_bytes()["MODALIAS=".len()..]);
        let pid = io.spawned[0].0;
        b.exited(pid, Exit::Code(0), t0 + BATCH_DELAY, &mut io, &mut st);
        // 100 names of ~1.9 KB: no modprobe takes more than BATCH_BYTES
        for i in 0..100 {
            let alias = format!("MODALIAS=acpi:{}{i:03}", "X".repeat(1900));
            let d = datagram("add", &format!("/devices/acpi/{i}"), &[&alias]);
            feed(&mut b, &rs, &d, t0, &mut io, &mut st);
        }
        let mut t = t0 + BATCH_DELAY;
        for _ in 0..100 {
            t += BATCH_DELAY;
            b.tick(t, &mut io, &mut st);
            let (pid, _) = io.spawned.last().unwrap().clone();
            b.exited(pid, Exit::Code(0), t, &mut io, &mut st);
        }
        let runs = &io.spawned[1..];
        let names: usize = runs.iter().map(|(_, argv)| argv.len() - 4).sum();
        assert_eq!(names, 100);
        assert!(runs.len() >= 3, "{} runs", runs.len());
        for (_, argv) in runs {
            let bytes: usize = argv[4..].iter().map(|a| a.len() + 1).sum();
            assert!(bytes <= BATCH_BYTES, "{bytes} bytes in one modprobe");
        }
        assert_eq!(st.kmod_failed, 0);
    }

    #[test]
    fn during_coldplug_names_wait_for_the_end_of_the_pass() {
        let rs = rules();
        let (mut b, mut io, mut st) = (boot(true), Fake::default(), Stats::default());
        let t0 = Instant::now();
        b.set_coldplug(true);
        for i in 0..10 {
            let alias = format!("MODALIAS=pci:v0000{i:04X}");
            let d = datagram("add", &format!("/devices/pci0/{i}"), &[&alias]);
            feed(
                &mut b,
                &rs,
                &d,
                t0 + Duration::from_secs(i),
                &mut io,
                &mut st,
            );
            b.tick(t0 + Duration::from_secs(i), &mut io, &mut st);
        }
        assert!(io.spawned.is_empty(), "a slow coldplug is one batch");
        assert_eq!(b.deadline(), None);
        b.set_coldplug(false);
        let t1 = t0 + Duration::from_secs(10);
        assert!(b.deadline().is_some_and(|d| d <= t1));
        b.tick(t1, &mut io, &mut st);
        assert_eq!(io.spawned.len(), 1);
        assert_eq!(io.spawned[0].1.len(), 4 + 10);
    }

    #[test]
    fn without_modprobe_requests_are_counted() {
        let rs = rules();
        let (mut b, mut io, mut st) = (boot(false), Fake::default(), Stats::default());
        let d = datagram("add", "/devices/usb1/1-1", &["MODALIAS=usb:x"]);
        feed(&mut b, &rs, &d, Instant::now(), &mut io, &mut st);
        assert_eq!(st.kmod_failed, 1);
        assert!(io.spawned.is_empty());
    }

    /// systemd#18259: the parent's add handler waits for the driver's
    /// probe, which waits for the firmware; the firmware device is the
    /// parent's child. The engine holds a child's job while the parent's
    /// runs; the firmware load must not wait with it.
    #[test]
    fn firmware_loads_while_the_parent_job_runs() {
        let rs = rules();
        let (mut b, mut io, mut st) = (boot(false), Fake::default(), Stats::default());
        let mut exec = Exec::new(
            ExecConfig {
                max_children: 8,
                max_queue: 16,
                timeout: Duration::from_secs(30),
                grace: Duration::from_secs(2),
                extra_env: Vec::new(),
                handler_creds: None,
            },
            Builtins::default(),
        );
        let t0 = Instant::now();
        let parent = "/devices/pci0/usb1/1-1";
        let child = "/devices/pci0/usb1/1-1/firmware/1-1";
        // a job for `devpath` running `prog`, if any (written as the runner does)
        let push =
            |exec: &mut Exec, devpath: &str, prog: Option<&str>, io: &mut Fake, st: &mut Stats| {
                let mut w = exec.start_job("add", devpath, None);
                w.raw(&datagram("add", devpath, &[]), core::iter::empty());
                if let Some(p) = prog {
                    w.begin_words();
                    w.word(p.as_bytes());
                    w.exec(format_args!("t.rules:4")).unwrap();
                }
                let (job, _) = w.finish();
                exec.push(job, t0, io, st);
            };
        push(
            &mut exec,
            parent,
            Some("/bin/wait-for-probe"),
            &mut io,
            &mut st,
        );
        assert_eq!(exec.running(), 1);
        // the firmware device's add: its job waits behind the parent's...
        let d = datagram("add", child, &["SUBSYSTEM=firmware", "FIRMWARE=dev/fw.bin"]);
        feed(&mut b, &rs, &d, t0, &mut io, &mut st);
        push(&mut exec, child, None, &mut io, &mut st);
        assert_eq!(
            exec.queued(),
            1,
            "the engine orders the child after its parent"
        );
        // ...but the load has started
        assert_eq!(io.loads.len(), 1);
        let (pid, plan) = io.loads[0].clone();
        assert_eq!(plan.loading, PathBuf::from(format!("/sys{child}/loading")));
        assert_eq!(plan.candidates[0], PathBuf::from("/opt/fw/dev/fw.bin"));
        assert_eq!(
            plan.candidates[1],
            PathBuf::from("/lib/firmware/updates/6.1.0/dev/fw.bin")
        );
        // the loader finishes, the probe completes, the parent's handler exits
        assert!(b.exited(pid, Exit::Code(0), t0, &mut io, &mut st));
        assert_eq!(st.firmware_loaded, 1);
        let handler = io.spawned[0].0;
        io.alive.retain(|&p| p != handler);
        exec.output_closed(handler, &mut io);
        exec.exited(handler, Exit::Code(0), t0, &mut io, &mut st);
        assert_eq!(exec.queued(), 0);
        assert!(exec.idle());
    }

    #[test]
    fn firmware_not_found_and_bad_names_are_counted() {
        let rs = rules();
        let (mut b, mut io, mut st) = (boot(false), Fake::default(), Stats::default());
        let t0 = Instant::now();
        let d = datagram(
            "add",
            "/devices/x/firmware/x",
            &["SUBSYSTEM=firmware", "FIRMWARE=none.bin"],
        );
        feed(&mut b, &rs, &d, t0, &mut io, &mut st);
        let pid = io.loads[0].0;
        b.exited(
            pid,
            Exit::Code(firmware::EXIT_NOT_FOUND),
            t0,
            &mut io,
            &mut st,
        );
        assert_eq!(st.firmware_not_found, 1);
        let d = datagram(
            "add",
            "/devices/x/firmware/y",
            &["SUBSYSTEM=firmware", "FIRMWARE=../../etc/shadow"],
        );
        feed(&mut b, &rs, &d, t0, &mut io, &mut st);
        assert_eq!(io.loads.len(), 1);
        assert_eq!(st.firmware_failed, 1);
    }

    #[test]
    fn a_service_starts_when_its_add_job_finishes_and_stops_on_remove() {
        let rs = rules();
        let (mut b, mut io, mut st) = (boot(false), Fake::default(), Stats::default());
        let t0 = Instant::now();
        let dev = "/devices/virtual/net/tap0";
        let d = datagram("add", dev, &["SUBSYSTEM=net", "INTERFACE=tap0"]);
        feed(&mut b, &rs, &d, t0, &mut io, &mut st);
        assert!(
            io.spawned.is_empty(),
            "not before the add's job has finished"
        );
        b.job_finished(dev, &d, t0, &mut io, &mut st);
        assert_eq!(io.spawned.len(), 1);
        assert_eq!(io.spawned[0].1, [b"/bin/svc".to_vec(), b"tap0".to_vec()]);
        // a remove that no rule matches still stops it
        let r = datagram("remove", dev, &["SUBSYSTEM=net", "INTERFACE=tap0"]);
        feed(&mut b, &rs, &r, t0, &mut io, &mut st);
        assert_eq!(b.services().list(t0)[0].state, "stopping");
    }

    #[test]
    fn a_rename_before_the_add_job_finished_is_followed() {
        let rs = rules();
        let (mut b, mut io, mut st) = (boot(false), Fake::default(), Stats::default());
        let t0 = Instant::now();
        let (old, new) = ("/devices/virtual/net/tap0", "/devices/virtual/net/lan0");
        let d = datagram("add", old, &["SUBSYSTEM=net", "INTERFACE=tap0"]);
        feed(&mut b, &rs, &d, t0, &mut io, &mut st);
        let mv = datagram(
            "move",
            new,
            &[
                "SUBSYSTEM=net",
                "INTERFACE=lan0",
                &format!("DEVPATH_OLD={old}"),
            ],
        );
        feed(&mut b, &rs, &mv, t0, &mut io, &mut st);
        b.job_finished(old, &d, t0, &mut io, &mut st);
        assert_eq!(io.spawned.len(), 1);
        assert_eq!(b.services().list(t0)[0].devpath, new);
        let r = datagram("remove", new, &["SUBSYSTEM=net"]);
        feed(&mut b, &rs, &r, t0, &mut io, &mut st);
        assert_eq!(b.services().list(t0)[0].state, "stopping");
    }
}
