//! What a resync costs: the sysfs walk plus filling the device table, on
//! this machine's /sys (every subsystem tracked) and on a generated
//! board-sized tree (500 devices shaped like a USB-heavy ARM board). Prints
//! numbers; asserts nothing.
//!
//!   cargo bench --bench resync
//!
//! Memory: the table's arena and entry array are allocated once at start
//! (TABLE_BYTES + MAX_DEVICES entries, committed by the kernel only as
//! used); the walk allocates its snapshot for the duration of a resync.

use std::path::{Path, PathBuf};
use std::time::Instant;

use hotplugd::devices::{DeviceTable, MAX_DEVICES, TABLE_BYTES};
use hotplugd::sys::walk::{walk, Found};

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

fn measure(name: &str, root: &Path) {
    let mut times = Vec::new();
    let mut t = DeviceTable::new();
    let mut n = 0;
    let mut dirs = 0;
    for _ in 0..21 {
        let start = Instant::now();
        let mut snap = Vec::new();
        let rep = walk(root, &|_| true, &mut snap);
        fill(&mut t, &snap);
        times.push(start.elapsed());
        n = snap.len();
        dirs = rep.dirs;
    }
    times.sort();
    let rec = t.record_bytes();
    println!(
        "{name}: {n} devices ({dirs} directories walked): walk + table min {:?} median {:?} max {:?}; \
         table {} entries, {} bytes of records ({} per device on average) + {} bytes of entries ({} each)",
        times[0],
        times[times.len() / 2],
        times[times.len() - 1],
        t.len(),
        rec,
        rec / n.max(1),
        t.len() * DeviceTable::ENTRY_BYTES,
        DeviceTable::ENTRY_BYTES
    );
}

/// A tree like a board's: 4 root hubs, 60 USB devices with 2 interfaces
/// each, ttys, block devices with partitions, net devices; the rest
/// platform devices, to 500 in all.
fn board_tree(dir: &Path) -> usize {
    let _ = std::fs::remove_dir_all(dir);
    let mut n = 0usize;
    let dev = |n: &mut usize, path: &str, subsystem: &str, uevent: &str| {
        let d = dir.join("devices").join(path);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("uevent"), uevent).unwrap();
        let bus = dir.join("bus").join(subsystem);
        std::fs::create_dir_all(&bus).unwrap();
        let _ = std::os::unix::fs::symlink(&bus, d.join("subsystem"));
        *n += 1;
    };
    let soc = "platform/soc/3f980000.usb";
    for h in 0..4 {
        let hub = format!("{soc}/usb{h}");
        dev(&mut n, &hub, "usb", &format!("MAJOR=189\nMINOR={}\nDEVNAME=bus/usb/00{h}/001\nDEVTYPE=usb_device\nDRIVER=usb\nPRODUCT=1d6b/2/601\nTYPE=9/0/1\nBUSNUM=00{h}\nDEVNUM=001\n", h * 128));
        for p in 0..15 {
            let d = format!("{hub}/{h}-{p}");
            dev(&mut n, &d, "usb", &format!("MAJOR=189\nMINOR={}\nDEVNAME=bus/usb/00{h}/0{p:02}\nDEVTYPE=usb_device\nDRIVER=usb\nPRODUCT=403/6001/600\nTYPE=0/0/0\nBUSNUM=00{h}\nDEVNUM=0{p:02}\n", h * 128 + p));
            for i in 0..2 {
                let intf = format!("{d}/{h}-{p}:1.{i}");
                dev(&mut n, &intf, "usb", "DEVTYPE=usb_interface\nDRIVER=ftdi_sio\nPRODUCT=403/6001/600\nTYPE=0/0/0\nINTERFACE=255/255/255\nMODALIAS=usb:v0403p6001d0600dc00dsc00dp00icFFiscFFipFFin00\n");
                if i == 0 {
                    dev(
                        &mut n,
                        &format!("{intf}/ttyUSB{}/tty/ttyUSB{}", h * 15 + p, h * 15 + p),
                        "tty",
                        &format!(
                            "MAJOR=188\nMINOR={}\nDEVNAME=ttyUSB{}\n",
                            h * 15 + p,
                            h * 15 + p
                        ),
                    );
                }
            }
        }
    }
    let mut i = 0;
    while n < 500 {
        dev(&mut n, &format!("platform/soc/dev{i}.thing"), "platform", &format!("DRIVER=thing\nOF_NAME=thing\nOF_FULLNAME=/soc/thing@{i}\nOF_COMPATIBLE_0=vendor,thing\nOF_COMPATIBLE_N=1\nMODALIAS=of:NthingT(null)Cvendor,thing\n"));
        i += 1;
    }
    n
}

fn main() {
    println!(
        "table capacity: {MAX_DEVICES} devices, {TABLE_BYTES} bytes of records; entry bookkeeping {} bytes",
        DeviceTable::ENTRY_BYTES
    );
    measure("this machine's /sys", Path::new("/sys"));
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/sysfs/aarch64");
    measure("fixture tests/corpus/sysfs/aarch64", &fixture);
    let dir = std::env::temp_dir().join(format!("hotplugd-board-tree-{}", std::process::id()));
    let n = board_tree(&dir);
    measure(&format!("generated board tree ({n} devices)"), &dir);
    let _ = std::fs::remove_dir_all(&dir);
}
