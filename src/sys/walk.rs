//! Reading the set of present devices from sysfs, for coldplug and for the
//! resync after an overrun; and `uevent` file writes for `--coldplug=trigger`.
//!
//! The walk visits `SYSFS/devices` depth-first, never follows a symlink
//! (sysfs has loops: `driver` → `devices` → ...), stops at
//! [`MAX_WALK_DEPTH`] levels and [`MAX_WALK_DIRS`] directories, and counts
//! directories it cannot read instead of failing. A device is a directory
//! with a `uevent` file; its subsystem is the name its `subsystem` link
//! points to. It allocates (paths, the records): it runs at start and after
//! an overrun, never per event.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Deepest directory visited below `devices/` (real trees: ~15).
pub const MAX_WALK_DEPTH: usize = 32;
/// Most directories one walk visits.
pub const MAX_WALK_DIRS: usize = 200_000;

/// A device found by the walk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// `/devices/...`
    pub devpath: String,
    /// The name its `subsystem` link points to.
    pub subsystem: String,
    /// The `KEY=VALUE` lines of its `uevent` file.
    pub fields: Vec<Vec<u8>>,
}

/// What a walk saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkReport {
    /// Directories visited.
    pub dirs: usize,
    /// Devices found (tracked or not).
    pub devices: usize,
    /// Directories or `uevent` files that could not be read (skipped).
    pub unreadable: usize,
    /// True if a bound (depth or count) cut the walk short.
    pub cut: bool,
}

/// Walks `sysfs/devices`; pushes every device whose subsystem `track`
/// accepts into `out`.
pub fn walk(sysfs: &Path, track: &dyn Fn(&str) -> bool, out: &mut Vec<Found>) -> WalkReport {
    let mut r = WalkReport::default();
    let root = sysfs.join("devices");
    let mut stack: Vec<(PathBuf, usize)> = vec![(root, 0)];
    while let Some((dir, depth)) = stack.pop() {
        if r.dirs >= MAX_WALK_DIRS {
            r.cut = true;
            break;
        }
        r.dirs += 1;
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(_) => {
                r.unreadable += 1;
                continue;
            }
        };
        let mut has_uevent = false;
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let name = e.file_name();
            if ft.is_dir() {
                // symlinks are not dirs here: never followed
                if name == "power" {
                    continue; // never a device
                }
                if depth + 1 > MAX_WALK_DEPTH {
                    r.cut = true;
                } else {
                    stack.push((e.path(), depth + 1));
                }
            } else if name == "uevent" && ft.is_file() {
                has_uevent = true;
            }
        }
        if !has_uevent {
            continue;
        }
        let Some(subsystem) = fs::read_link(dir.join("subsystem"))
            .ok()
            .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()))
        else {
            continue;
        };
        r.devices += 1;
        if !track(&subsystem) {
            continue;
        }
        let Some(devpath) = dir
            .strip_prefix(sysfs)
            .ok()
            .and_then(|p| p.to_str())
            .map(|p| format!("/{p}"))
        else {
            continue;
        };
        match fs::read(dir.join("uevent")) {
            Ok(text) => out.push(Found {
                devpath,
                subsystem,
                fields: text
                    .split(|&b| b == b'\n')
                    .filter(|l| l.contains(&b'=') && !l.contains(&0))
                    .map(<[u8]>::to_vec)
                    .collect(),
            }),
            // removed between listing and reading, or unreadable
            Err(_) => r.unreadable += 1,
        }
    }
    r
}

/// `/sys/kernel/uevent_seqnum`: the last SEQNUM the kernel gave out (in
/// every network namespace).
pub fn uevent_seqnum(sysfs: &Path) -> Option<u64> {
    let mut buf = [0u8; 32];
    let n = super::read_into(sysfs.join("kernel/uevent_seqnum"), &mut buf).ok()?;
    crate::uevent::parse_u64(buf[..n].trim_ascii())
}

/// True if the device still has its directory.
pub fn present(sysfs: &Path, devpath: &str) -> bool {
    sysfs
        .join(devpath.trim_start_matches('/'))
        .join("uevent")
        .is_file()
}

/// Asks the kernel to send the device's `add` again, marked with
/// `SYNTH_UUID=uuid`.
pub fn trigger(sysfs: &Path, devpath: &str, uuid: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(sysfs.join(devpath.trim_start_matches('/')).join("uevent"))?;
    f.write_all(format!("add {uuid}").as_bytes())
}
