//! The device table at the daemon's capacity (2,048 devices) and beyond it
//! (10,000, the capacity raised with `DeviceTable::with_capacity`), on
//! generated sysfs trees: the resync's walk, filling the table, lookups by
//! devpath, and a diff of a walk against the table (every walked device
//! looked up and its fields compared, every known device checked for
//! presence: the table operations a resync's diff is made of). Prints CPU
//! time per device (this thread's, CLOCK_THREAD_CPUTIME_ID, so
//! other work on a shared machine does not count) and the ratio of 10,000 to
//! 2,048: about 1 means linear in the number of devices (O(1) per lookup).
//! Asserts nothing.
//!
//!   cargo bench --bench device_scale

use std::path::Path;

use hotplugd::devices::DeviceTable;
use hotplugd::sys::walk::{walk, Found};

/// CPU time of this thread in ns (CLOCK_THREAD_CPUTIME_ID).
fn cpu_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .expect("CLOCK_THREAD_CPUTIME_ID");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// The median CPU time of `f` over `rounds` runs, in ns.
fn median_ns(rounds: usize, mut f: impl FnMut()) -> f64 {
    let mut v: Vec<u64> = (0..rounds)
        .map(|_| {
            let t = cpu_ns();
            f();
            cpu_ns() - t
        })
        .collect();
    v.sort_unstable();
    v[v.len() / 2] as f64
}

/// `n` devices shaped like a USB-heavy board: hubs, devices with two
/// interfaces each, a tty under the first.
fn tree(dir: &Path, n: usize) {
    let _ = std::fs::remove_dir_all(dir);
    let mut made = 0usize;
    let mut dev = |path: &str, subsystem: &str, uevent: &str| {
        let d = dir.join("devices").join(path);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("uevent"), uevent).unwrap();
        let bus = dir.join("bus").join(subsystem);
        std::fs::create_dir_all(&bus).unwrap();
        let _ = std::os::unix::fs::symlink(&bus, d.join("subsystem"));
        made += 1;
        made < n
    };
    'all: for h in 0.. {
        let hub = format!("platform/soc/usb{h}");
        if !dev(&hub, "usb", "DEVTYPE=usb_device\nPRODUCT=1d6b/2/601\n") {
            break;
        }
        for p in 0..127 {
            let d = format!("{hub}/{h}-{p}");
            if !dev(
                &d,
                "usb",
                &format!("DEVTYPE=usb_device\nPRODUCT=403/6001/600\nBUSNUM={h}\nDEVNUM={p}\n"),
            ) {
                break 'all;
            }
            for i in 0..2 {
                let intf = format!("{d}/{h}-{p}:1.{i}");
                if !dev(
                    &intf,
                    "usb",
                    "DEVTYPE=usb_interface\nDRIVER=ftdi_sio\nINTERFACE=255/255/255\n",
                ) {
                    break 'all;
                }
                if i == 0 && !dev(&format!("{intf}/ttyUSB{h}x{p}"), "tty", "MAJOR=188\n") {
                    break 'all;
                }
            }
        }
    }
}

fn fill(t: &mut DeviceTable, snap: &[Found]) {
    t.clear();
    for f in snap {
        t.insert_pairs(
            &f.devpath,
            std::iter::once((&b"SUBSYSTEM"[..], f.subsystem.as_bytes())).chain(
                f.fields.iter().map(|l| {
                    let eq = l.iter().position(|&b| b == b'=').unwrap_or(l.len());
                    (&l[..eq], l.get(eq + 1..).unwrap_or(b""))
                }),
            ),
        );
    }
}

struct Row {
    n: usize,
    walk: f64,
    fill: f64,
    lookup: f64,
    diff: f64,
}

fn measure(n: usize) -> Row {
    let dir = std::env::temp_dir().join(format!("hotplugd-scale-{}-{n}", std::process::id()));
    tree(&dir, n);
    let mut snap = Vec::new();
    let walk_ns = median_ns(5, || {
        snap.clear();
        walk(&dir, &|_| true, &mut snap);
    });
    assert_eq!(snap.len(), n, "the generated tree");
    let mut t = DeviceTable::with_capacity(n, n * 512);
    let fill_ns = median_ns(11, || fill(&mut t, &snap));
    assert_eq!(t.len(), n, "the table holds every device");
    let paths: Vec<&str> = snap.iter().map(|f| f.devpath.as_str()).collect();
    let misses: Vec<String> = paths.iter().map(|p| format!("{p}/gone")).collect();
    let mut hits = 0usize;
    let lookup_ns = median_ns(11, || {
        for (p, m) in paths.iter().zip(&misses) {
            hits += usize::from(t.contains(std::hint::black_box(p)));
            hits += usize::from(t.contains(std::hint::black_box(m)));
        }
    });
    let walked: std::collections::HashSet<&str> = paths.iter().copied().collect();
    let mut changed = 0usize;
    let diff_ns = median_ns(11, || {
        for f in &snap {
            match t.fields(&f.devpath) {
                Some(known) => changed += usize::from(known.count() != f.fields.len() + 1),
                None => changed += 1,
            }
        }
        for d in t.devpaths() {
            changed += usize::from(!walked.contains(d));
        }
    });
    std::hint::black_box((hits, changed));
    let _ = std::fs::remove_dir_all(&dir);
    Row {
        n,
        walk: walk_ns / n as f64,
        fill: fill_ns / n as f64,
        lookup: lookup_ns / (2 * n) as f64,
        diff: diff_ns / n as f64,
    }
}

fn main() {
    println!("CPU ns per device (median of runs); last line: 10,000 over 2,048");
    println!("devices   walk     fill   lookup    diff");
    let rows: Vec<Row> = [2_048, 10_000].into_iter().map(measure).collect();
    for r in &rows {
        println!(
            "{:>7} {:>7.0} {:>8.0} {:>8.1} {:>7.0}",
            r.n, r.walk, r.fill, r.lookup, r.diff
        );
    }
    let (a, b) = (&rows[0], &rows[1]);
    println!(
        "  ratio {:>7.2} {:>8.2} {:>8.2} {:>7.2}",
        b.walk / a.walk,
        b.fill / a.fill,
        b.lookup / a.lookup,
        b.diff / a.diff
    );
}
