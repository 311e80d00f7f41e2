//! What `ATTRS{}` matching costs: 100 vendor rules written with
//! `ATTRS{idVendor}=="0403", ATTRS{idProduct}=="6001"` (each event's device
//! and parents read from sysfs until one matches) against the same 100
//! written with `ENV{PRODUCT}=="403/6001/*"` (the event alone), on the 76
//! real USB events of an aarch64 guest and its real sysfs tree
//! (`tests/corpus/sysfs/aarch64`). Five of the vendors are the fixture's
//! devices, so both sets match. Prints CPU ns per event (this thread's,
//! CLOCK_THREAD_CPUTIME_ID, so other work on a shared machine does not
//! count) and the ratio: with no cache, with the per-event read cache
//! (`SysfsRoot::begin_event`), and with that and the USB IDs remembered
//! across events as the daemon does (`SysfsRoot::device_event`; forgotten
//! at the start of every pass over the events, so each pass is the
//! devices' first appearance, parents included). Asserts nothing.
//!
//!   cargo bench --bench attrs_cost

use std::path::Path;

use hotplugd::rules::{Matched, RuleSet};
use hotplugd::sys::sysfs::SysfsRoot;
use hotplugd::uevent::Uevent;

fn cpu_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .expect("CLOCK_THREAD_CPUTIME_ID");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// (vendor, product): the fixture's five devices, then made-up ones.
fn ids() -> Vec<(u16, u16)> {
    let mut v = vec![
        (0x0403, 0x6001),
        (0x0409, 0x55aa),
        (0x46f4, 0x0001),
        (0x0525, 0xa4a2),
        (0x0627, 0x0001),
    ];
    let mut i = 0u16;
    while v.len() < 100 {
        v.push((0x1000 + i * 37, 0x2000 + i));
        i += 1;
    }
    v
}

fn load(dir: &Path, name: &str, text: &str) -> RuleSet {
    let f = dir.join(name);
    std::fs::write(&f, text).unwrap();
    let rs = hotplugd::rules::parse::load(&[f], &["log"], false).expect("rules load");
    rs.index();
    rs
}

/// How much of sysfs is remembered.
#[derive(Clone, Copy, PartialEq)]
enum Cache {
    /// Nothing: every read goes to sysfs.
    None,
    /// Each event's reads, once each (`begin_event`).
    PerEvent,
    /// That, and the USB IDs across the events of a pass (`device_event`),
    /// as the daemon does.
    Daemon,
}

fn per_event(rules: &RuleSet, events: &[Vec<u8>], sysfs: &SysfsRoot, cache: Cache) -> (f64, usize) {
    let mut m: Box<Matched> = Box::default();
    let mut matched = 0;
    for d in events {
        rules.evaluate(&Uevent::parse(d).unwrap(), sysfs, &mut m);
    }
    let mut runs = Vec::new();
    for _ in 0..7 {
        let t = cpu_ns();
        for _ in 0..50 {
            sysfs.forget_devices();
            for d in events {
                let ev = Uevent::parse(std::hint::black_box(d)).unwrap();
                if cache == Cache::Daemon {
                    sysfs.device_event(ev.action(), ev.devpath(), ev.get_str("DEVPATH_OLD"));
                }
                if cache != Cache::None {
                    sysfs.begin_event();
                }
                rules.evaluate(&ev, sysfs, &mut m);
                matched += usize::from(m.count > 0);
            }
        }
        runs.push((cpu_ns() - t) as f64 / (50 * events.len()) as f64);
    }
    runs.sort_by(f64::total_cmp);
    (runs[runs.len() / 2], matched / (7 * 50))
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read(root.join("tests/corpus/sysfs/aarch64/uevents.jsonl")).unwrap();
    let events = hotplugd::replay::read_events(&text).unwrap();
    let dir = std::env::temp_dir().join(format!("hotplugd-attrs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut attrs = String::new();
    let mut env = String::new();
    for (n, (v, p)) in ids().into_iter().enumerate() {
        attrs.push_str(&format!(
            "ATTRS{{idVendor}}==\"{v:04x}\", ATTRS{{idProduct}}==\"{p:04x}\", ENV{{HIT}}=\"{n}\"\n"
        ));
        env.push_str(&format!(
            "ENV{{PRODUCT}}==\"{v:x}/{p:x}/*\", ENV{{HIT}}=\"{n}\"\n"
        ));
    }
    let a = load(&dir, "attrs.rules", &attrs);
    let e = load(&dir, "env.rules", &env);
    let _ = std::fs::remove_dir_all(&dir);
    let fresh = || SysfsRoot::new(&root.join("tests/corpus/sysfs/aarch64"));
    let (ans, am) = per_event(&a, &events, &fresh(), Cache::None);
    let (cns, cm) = per_event(&a, &events, &fresh(), Cache::PerEvent);
    let (dns, dm) = per_event(&a, &events, &fresh(), Cache::Daemon);
    let (ens, em) = per_event(&e, &events, &fresh(), Cache::None);
    println!(
        "100 vendor rules, {} real USB events, CPU ns per event (median of 7)",
        events.len()
    );
    println!("  ATTRS{{idVendor}}/ATTRS{{idProduct}}: {ans:9.0} ns/event ({am} events matched)");
    println!("  the same, read cache per event:   {cns:9.0} ns/event ({cm} events matched)");
    println!("  and USB IDs across events:        {dns:9.0} ns/event ({dm} events matched)");
    println!("  ENV{{PRODUCT}}:                     {ens:9.0} ns/event ({em} events matched)");
    println!("  ratio ATTRS / ENV:                {:9.1}x", ans / ens);
    println!("  ratio ATTRS cached / ENV:         {:9.1}x", cns / ens);
    println!(
        "  ratio ATTRS, IDs across events / ENV: {:5.1}x (what `run` does)",
        dns / ens
    );
}
