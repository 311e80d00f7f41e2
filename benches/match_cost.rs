//! Match cost per event: the 100 realistic USB rules of
//! `bench/rules/usb-100.rules` against (a) a `lo` change event, the kind a
//! burst is made of, and (b) the 76 real USB events of an aarch64 guest with
//! its real sysfs tree (ATTR reads, parent walks), without and with the
//! per-event read cache (`SysfsRoot::begin_event`). Prints ns per event.
//!
//! `cargo bench --bench match_cost`

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use hotplugd::rules::{Matched, RuleSet, Sysfs};
use hotplugd::sys::sysfs::SysfsRoot;
use hotplugd::uevent::Uevent;

fn per_event(
    rules: &RuleSet,
    events: &[Vec<u8>],
    sysfs: &dyn Sysfs,
    begin_event: &dyn Fn(),
    rounds: usize,
) -> (f64, usize) {
    let mut m: Box<Matched> = Box::default();
    let mut matched = 0;
    // warm up (page cache, branch predictors)
    for d in events {
        begin_event();
        rules.evaluate(&Uevent::parse(d).unwrap(), sysfs, &mut m);
    }
    let t = Instant::now();
    for _ in 0..rounds {
        for d in events {
            begin_event();
            let ev = Uevent::parse(black_box(d)).unwrap();
            rules.evaluate(&ev, sysfs, &mut m);
            matched += usize::from(m.count > 0);
        }
    }
    let ns = t.elapsed().as_nanos() as f64 / (rounds * events.len()) as f64;
    (ns, matched / rounds)
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules =
        hotplugd::rules::parse::load(&[root.join("bench/rules/usb-100.rules")], &["log"], false)
            .expect("rules load");
    let lo = b"change@/devices/virtual/net/lo\0ACTION=change\0DEVPATH=/devices/virtual/net/lo\0\
        SUBSYSTEM=net\0SYNTH_UUID=0\0INTERFACE=lo\0IFINDEX=1\0SEQNUM=4711\0"
        .to_vec();
    let sys = SysfsRoot::new(Path::new("/sys"));
    let (ns, _) = per_event(&rules, std::slice::from_ref(&lo), &sys, &|| (), 1_000_000);
    let (parse_only, _) = {
        let t = Instant::now();
        for _ in 0..1_000_000 {
            black_box(Uevent::parse(black_box(&lo)).unwrap());
        }
        (t.elapsed().as_nanos() as f64 / 1e6, 0)
    };
    println!("parse only, lo change event:                 {parse_only:8.0} ns/event");
    println!("parse + 100 rules, lo change event:          {ns:8.0} ns/event");

    let text = std::fs::read(root.join("tests/corpus/sysfs/aarch64/uevents.jsonl")).unwrap();
    let usb = hotplugd::replay::read_events(&text).unwrap();
    let fixture = SysfsRoot::new(&root.join("tests/corpus/sysfs/aarch64"));
    // uncached and cached in turns, so that a busy machine slows both alike
    let (mut plain, mut cached, mut matched) = (0.0, 0.0, (0, 0));
    for _ in 0..5 {
        let (ns, m) = per_event(&rules, &usb, &fixture, &|| (), 400);
        plain += ns / 5.0;
        matched.0 = m;
        let (ns, m) = per_event(&rules, &usb, &fixture, &|| fixture.begin_event(), 400);
        cached += ns / 5.0;
        matched.1 = m;
    }
    assert_eq!(matched.0, matched.1, "the cache changed what matched");
    println!(
        "parse + 100 rules, 76 real USB events:       {plain:8.0} ns/event ({} of {} match; sysfs reads included)",
        matched.0,
        usb.len()
    );
    let st = fixture.cache_stats();
    // 5 cached runs of 400 rounds and a warm-up round, 76 events each
    let events = (5 * 401 * usb.len()) as f64;
    println!(
        "  the same with the per-event read cache:    {cached:8.0} ns/event ({:.1} reads/event, {:.1} from sysfs, {} not cached)",
        (st.hits + st.misses) as f64 / events,
        st.misses as f64 / events,
        st.full
    );
}
