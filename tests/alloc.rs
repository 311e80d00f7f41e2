//! Proves that the receive → check → parse → format path allocates nothing:
//! a counting global allocator, a real socket, a burst of real kernel events
//! (in a private network namespace, so no other listener is flooded).
//!
//! The counter is per thread, so the test harness's own threads do not
//! disturb it.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use hotplugd::daemon::{Drained, Flow, Listener, Sink};
use hotplugd::monitor::{self, OutBuf};
use hotplugd::rules::{Matched, RuleSet};
use hotplugd::stats::Stats;
use hotplugd::sys::netlink::UeventSocket;
use hotplugd::sys::sysfs::SysfsRoot;
use hotplugd::uevent::Uevent;

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn allocs() -> u64 {
    ALLOCS.with(|c| c.get())
}

/// The 100 realistic USB rules of the benchmarks, loaded and indexed as the
/// daemon does (`RulesFrom::load`) before counting.
fn usb_rules() -> RuleSet {
    let rs = hotplugd::rules::parse::load(
        &[common::repo("bench/rules/usb-100.rules")],
        &["log"],
        false,
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    rs.index();
    rs
}

/// Formats each event as `monitor --json` would, runs it through the 100
/// rules against the real /sys, and counts the marked ones.
struct Printer {
    out: OutBuf,
    rules: RuleSet,
    sysfs: SysfsRoot,
    matched: Box<Matched>,
    marker: Vec<u8>,
    seen: u64,
}

impl Sink for Printer {
    fn deliver(&mut self, ev: &Uevent<'_>, _stats: &mut Stats) -> Flow {
        self.out.clear();
        monitor::json(&mut self.out, ev).unwrap();
        self.out.clear();
        monitor::text(&mut self.out, ev, (1, 2)).unwrap();
        self.rules.evaluate(ev, &self.sysfs, &mut self.matched);
        if ev.get("SYNTH_UUID") == Some(&self.marker[..]) {
            self.seen += 1;
        }
        Flow::Continue
    }
}

const BURST: u64 = 1000;

#[test]
fn receive_parse_format_and_match_allocate_nothing_across_a_real_burst() {
    if !common::need_root("receive_parse_and_format_allocate_nothing") {
        return;
    }
    let ns = common::Netns::new();
    let lo = ns.lo_uevent();
    let (seen, during, stats) = ns.run_inside(move || {
        let socket = UeventSocket::open(hotplugd::limits::DEFAULT_RCVBUF).unwrap();
        let mut listener = Listener::new(socket);
        let id = common::uuid();
        let mut sink = Printer {
            out: OutBuf::new(),
            rules: usb_rules(),
            sysfs: SysfsRoot::new(std::path::Path::new("/sys")),
            matched: Box::default(),
            marker: id.clone().into_bytes(),
            seen: 0,
        };
        let mut stats = Stats::default();
        for _ in 0..BURST {
            common::synth(&lo, "change", &id, &["K=v"]);
        }
        // Everything is queued in the 32 MiB buffer; now receive it all.
        let before = allocs();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while sink.seen < BURST && std::time::Instant::now() < deadline {
            if listener.drain(&mut stats, &mut sink).unwrap() == Drained::Empty {
                std::thread::yield_now();
            }
        }
        let during = allocs() - before;
        (sink.seen, during, stats)
    });
    assert_eq!(seen, BURST, "{stats:?}");
    assert_eq!(stats.overruns, 0);
    assert_eq!(
        during, 0,
        "allocations on the receive path across {BURST} events"
    );
}

#[test]
fn matching_real_usb_events_with_parent_walks_allocates_nothing() {
    // 76 real USB events of an aarch64 guest, against its real sysfs tree:
    // ATTR reads, ATTRS/SUBSYSTEMS/DRIVERS walks, ENV{} assignments.
    let rules = usb_rules();
    let sysfs = SysfsRoot::new(&common::repo("tests/corpus/sysfs/aarch64"));
    let text = common::read(common::repo("tests/corpus/sysfs/aarch64/uevents.jsonl"));
    let events = hotplugd::replay::read_events(text.as_bytes()).unwrap();
    let mut m: Box<Matched> = Box::default();
    let (mut matched, mut work) = (0, 0);
    let before = allocs();
    for _ in 0..10 {
        for d in &events {
            let ev = Uevent::parse(d).unwrap();
            rules.evaluate(&ev, &sysfs, &mut m);
            matched += usize::from(m.count > 0);
            work += m.work.len();
        }
    }
    let during = allocs() - before;
    // the rules really matched: FTDI ttys, the stick's partition, cdc_ether, hub...
    assert!(matched >= 10 * 6, "only {matched} matches");
    assert!(work >= 10 * 6);
    assert_eq!(
        during,
        0,
        "allocations while matching {} events",
        10 * events.len()
    );
}

#[test]
fn the_counter_does_see_allocations() {
    // Guards the test above against a counter that cannot count.
    let before = allocs();
    let v = std::hint::black_box(vec![1u8; 100]);
    drop(v);
    assert_eq!(allocs() - before, 1);
}
