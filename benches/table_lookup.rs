//! Device table lookups by devpath: the index (open addressing) against a
//! scan of every entry's hash (how `DeviceTable::find` worked before the
//! index),
//! for 100, 1,000 and 10,000 devices (the daemon's table holds
//! `MAX_DEVICES` = 2,048; the larger tables are built with
//! `DeviceTable::with_capacity` to show the growth). Half the lookups hit,
//! half miss, as in a resync (every walked device is looked up; most are
//! known). Prints ns per lookup and the ratio to N = 100; asserts nothing.
//!
//!   cargo bench --bench table_lookup

use std::hint::black_box;
use std::time::Instant;

use hotplugd::devices::DeviceTable;

/// Real-looking devpaths: USB interfaces and tty children under a few hubs.
fn devpath(i: usize) -> String {
    format!(
        "/devices/platform/soc/3f980000.usb/usb{}/{}-{}/{}-{}:1.{}/ttyUSB{i}",
        i % 4,
        i % 4,
        i / 4 % 16,
        i % 4,
        i / 4 % 16,
        i
    )
}

/// FNV-1a, 32 bits, as the table hashes devpaths.
fn fnv(b: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &x in b {
        h ^= u32::from(x);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// The old lookup: every entry's hash compared, the bytes only on a match.
fn scan(entries: &[(u32, String)], p: &str) -> bool {
    let h = fnv(p.as_bytes());
    entries.iter().any(|(eh, d)| *eh == h && d == p)
}

fn ns_per(rounds: usize, probes: &[String], f: impl Fn(&str) -> bool) -> f64 {
    let mut hits = 0usize;
    let t = Instant::now();
    for _ in 0..rounds {
        for p in probes {
            hits += usize::from(f(black_box(p)));
        }
    }
    black_box(hits);
    t.elapsed().as_nanos() as f64 / (rounds * probes.len()) as f64
}

fn main() {
    let mut base: Option<(f64, f64)> = None;
    println!("devices  index ns/lookup (x N=100)   scan ns/lookup (x N=100)");
    for n in [100usize, 1_000, 10_000] {
        let mut t = DeviceTable::with_capacity(n, n * 256);
        let fields = [&b"SUBSYSTEM=tty"[..], b"DEVNAME=ttyUSB0", b"MAJOR=188"];
        for i in 0..n {
            assert!(t.insert(&devpath(i), fields.iter().copied()), "{i}");
        }
        // 1,000 lookups: half known devices, half unknown
        let probes: Vec<String> = (0..1_000)
            .map(|k| {
                if k % 2 == 0 {
                    devpath(k * 7919 % n)
                } else {
                    devpath(n + k)
                }
            })
            .collect();
        let idx = ns_per(2_000, &probes, |p| t.contains(p));
        let rounds = (200_000 / n).max(2);
        let old: Vec<(u32, String)> = t
            .devpaths()
            .map(|d| (fnv(d.as_bytes()), d.to_string()))
            .collect();
        let lin = ns_per(rounds, &probes, |p| scan(&old, p));
        let (bi, bl) = *base.get_or_insert((idx, lin));
        println!(
            "{n:>7}  {idx:>10.1} ({:>5.2}x)          {lin:>12.1} ({:>7.1}x)",
            idx / bi,
            lin / bl
        );
    }
}
