//! Proves that the receive → check → parse → format path allocates nothing:
//! a counting global allocator, a real socket, a burst of real kernel events
//! (in a private network namespace, so no other listener is flooded).
//!
//! The counter is per thread, so the test harness's own threads do not
//! disturb it.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use std::time::{Duration, Instant};

use hotplugd::daemon::{Drained, Flow, Listener, Sink};
use hotplugd::exec::{Builtins, Exec, ExecConfig, Exit, Kill, ProcIo, Words};
use hotplugd::monitor::{self, OutBuf};
use hotplugd::rules::{Matched, RuleSet};
use hotplugd::runner;
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
    // ATTR reads, ATTRS/SUBSYSTEMS/DRIVERS walks (through the read cache),
    // ENV{} assignments.
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
            // the per-event read cache, as the daemon uses it
            sysfs.begin_event();
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

/// Fake processes for the handler engine: each start gets a new pid.
#[derive(Default)]
struct Procs {
    next: i32,
    /// Started and not yet finished, oldest first.
    live: std::collections::VecDeque<i32>,
}

impl Procs {
    /// The oldest process exits and its pipe closes.
    fn finish_one(exec: &mut Exec, io: &mut Procs, now: Instant, stats: &mut Stats) {
        let pid = io.live.pop_front().expect("something runs");
        exec.output_closed(pid, io);
        exec.exited(pid, Exit::Code(0), now, io, stats);
    }
}

impl ProcIo for Procs {
    fn spawn(
        &mut self,
        argv: Words<'_>,
        env: &[Words<'_>],
        _creds: Option<(u32, u32)>,
    ) -> Result<i32, String> {
        assert!(argv.get(0).is_some_and(|p| p.starts_with(b"/")));
        assert!(env
            .iter()
            .any(|b| b.iter().any(|e| e.starts_with(b"HOTPLUGD_RULE="))));
        self.next += 1;
        self.live.push_back(self.next);
        Ok(self.next)
    }
    fn write_attr(&mut self, _d: &str, _n: &str, _v: &[u8]) -> Result<i32, String> {
        self.next += 1;
        self.live.push_back(self.next);
        Ok(self.next)
    }
    fn signal_group(&mut self, _pgid: i32, _sig: Kill) -> bool {
        false
    }
    fn close_output(&mut self, _pid: i32) {}
}

#[test]
fn a_storm_of_jobs_allocates_nothing_their_memory_is_reserved_at_start() {
    // The same 76 real USB events, each through the rules into a job
    // (event, environment, argv: written into the slots reserved at start),
    // queued, "run" and finished, ten times over, with the queue full.
    let rules = usb_rules();
    let sysfs = SysfsRoot::new(&common::repo("tests/corpus/sysfs/aarch64"));
    let text = common::read(common::repo("tests/corpus/sysfs/aarch64/uevents.jsonl"));
    let events = hotplugd::replay::read_events(text.as_bytes()).unwrap();
    let mut builtins = Builtins::default();
    builtins.register("log", Box::new(|_| Ok(())));
    let cfg = ExecConfig {
        max_children: 4,
        max_queue: 32,
        timeout: Duration::from_secs(30),
        grace: Duration::from_secs(2),
        extra_env: vec![(b"PATH".to_vec(), b"/bin".to_vec())],
        handler_creds: None,
    };
    let mut exec = Exec::new(cfg, builtins);
    let mut io = Procs::default();
    io.live.reserve(64);
    let mut stats = Stats::default();
    let mut m: Box<Matched> = Box::default();
    let now = Instant::now();
    let mut sizes = Vec::with_capacity(100_000);
    let mut round = |exec: &mut Exec, io: &mut Procs, stats: &mut Stats| {
        let mut jobs = 0;
        for d in &events {
            let ev = Uevent::parse(d).unwrap();
            rules.evaluate(&ev, &sysfs, &mut m);
            if !m.has_work() {
                continue;
            }
            // a full queue: finish what runs until there is room
            while !exec.has_room() {
                Procs::finish_one(exec, io, now, stats);
            }
            let w = exec.start_job(ev.action(), ev.devpath(), None);
            let (job, hit, oversize) = runner::build_job(&rules, &ev, &m, &sysfs, w);
            assert_eq!((hit, oversize), (0, false));
            sizes.push(exec.view(&job).used());
            exec.push(job, now, io, stats);
            jobs += 1;
        }
        while !exec.idle() {
            Procs::finish_one(exec, io, now, stats);
        }
        jobs
    };
    round(&mut exec, &mut io, &mut stats); // warm-up: nothing lazily grown is left
    let before = allocs();
    let mut jobs = 0;
    for _ in 0..10 {
        jobs += round(&mut exec, &mut io, &mut stats);
    }
    let during = allocs() - before;
    assert!(jobs >= 10 * 6, "only {jobs} jobs");
    assert!(stats.handlers_started as usize >= jobs, "{stats:?}");
    assert_eq!(during, 0, "allocations while running {jobs} jobs");
    sizes.sort_unstable();
    println!(
        "job bytes over {} jobs: min {} median {} max {} (slot {})",
        sizes.len(),
        sizes[0],
        sizes[sizes.len() / 2],
        sizes[sizes.len() - 1],
        hotplugd::limits::JOB_SLOT
    );
}

#[test]
fn a_remove_merged_with_what_its_add_knew_allocates_nothing() {
    // issue 14: the device table keeps each add's properties; a remove gets
    // them merged in, in a buffer reserved at start. Real plug and unplug
    // events of a QEMU guest (FTDI adapter, stick, ...).
    use hotplugd::devices::DeviceTable;
    use hotplugd::devnode::{merge_remove, EventBuf};
    let text = common::read(common::repo("tests/corpus/qemu-usb-x86_64.jsonl"));
    let events = hotplugd::replay::read_events(text.as_bytes()).unwrap();
    let mut table = DeviceTable::new();
    let mut buf = EventBuf::new(hotplugd::runner::EVENT_BUFFER);
    let extra: [(&[u8], &[u8]); 3] = [
        (b"ID_SERIAL", b"FTDI_FT232R_USB_UART_A12345"),
        (
            b"DEVLINKS",
            b"/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A12345-if00-port0",
        ),
        (b"TAGS", b":uaccess:"),
    ];
    let (mut merged, mut removes) = (0, 0);
    let before = allocs();
    for d in &events {
        let ev = Uevent::parse(d).unwrap();
        match ev.action() {
            "add" => {
                let f = ev.fields().iter().map(|f| (f.key.as_bytes(), f.value));
                assert!(table.insert_pairs(ev.devpath(), f.chain(extra)));
            }
            "remove" => {
                removes += 1;
                if let Some(rec) = table.fields(ev.devpath()) {
                    assert_eq!(merge_remove(&ev, rec, &mut buf), Some(0));
                    let m = Uevent::parse(buf.bytes()).unwrap();
                    assert_eq!(m.get_str("ID_SERIAL"), Some("FTDI_FT232R_USB_UART_A12345"));
                    merged += 1;
                }
                table.remove(ev.devpath());
            }
            _ => {}
        }
    }
    let during = allocs() - before;
    assert!(
        merged >= 5 && merged == removes,
        "{merged} of {removes} removes merged"
    );
    assert_eq!(during, 0, "allocations while merging {merged} removes");
}

#[test]
fn the_counter_does_see_allocations() {
    // Guards the test above against a counter that cannot count.
    let before = allocs();
    let v = std::hint::black_box(vec![1u8; 100]);
    drop(v);
    assert_eq!(allocs() - before, 1);
}
