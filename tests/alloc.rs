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
use hotplugd::stats::Stats;
use hotplugd::sys::netlink::UeventSocket;
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

/// Formats each event as `monitor --json` would and counts the marked ones.
struct Printer {
    out: OutBuf,
    marker: Vec<u8>,
    seen: u64,
}

impl Sink for Printer {
    fn deliver(&mut self, ev: &Uevent<'_>, _stats: &mut Stats) -> Flow {
        self.out.clear();
        monitor::json(&mut self.out, ev).unwrap();
        self.out.clear();
        monitor::text(&mut self.out, ev, (1, 2)).unwrap();
        if ev.get("SYNTH_UUID") == Some(&self.marker[..]) {
            self.seen += 1;
        }
        Flow::Continue
    }
}

const BURST: u64 = 1000;

#[test]
fn receive_parse_and_format_allocate_nothing_across_a_real_burst() {
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
fn the_counter_does_see_allocations() {
    // Guards the test above against a counter that cannot count.
    let before = allocs();
    let v = std::hint::black_box(vec![1u8; 100]);
    drop(v);
    assert_eq!(allocs() - before, 1);
}
