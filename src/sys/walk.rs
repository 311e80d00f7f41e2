//! Reading the set of present devices from sysfs, for coldplug and for the
//! resync after an overrun; and `uevent` file writes for `--coldplug=trigger`.
//! [`SysfsWalker`] is the daemon's [`SysfsWalk`]: recovery owns the logic
//! and drives this I/O a budget at a time.
//!
//! The walk visits `SYSFS/devices` depth-first, a few directories per
//! [`SysfsWalk::step`] (its state is the stack of directories still to
//! read), never follows a symlink (sysfs has loops: `driver` → `devices` →
//! ...), stops at [`MAX_WALK_DEPTH`] levels and [`MAX_WALK_DIRS`]
//! directories, and names what it could not read instead of failing: a
//! directory it cannot list (EACCES, or removed meanwhile), a device whose
//! `uevent` it cannot read, a directory below the depth bound. A device is a
//! directory with a `uevent` file; its subsystem is the name its
//! `subsystem` link points to. It allocates (paths, the records): it runs
//! at start and after an overrun, never per event.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::recovery::Track;
pub use crate::recovery::{Found, SysfsWalk, WalkReport};

/// Deepest directory visited below `devices/` (real trees: ~15).
pub const MAX_WALK_DEPTH: usize = 32;
/// Most directories one walk visits.
pub const MAX_WALK_DIRS: usize = 200_000;

/// A walk under way: the directories still to read, and what was seen.
#[derive(Default)]
struct State {
    stack: Vec<(PathBuf, usize)>,
    report: WalkReport,
}

impl State {
    fn new(sysfs: &Path) -> State {
        State {
            stack: vec![(sysfs.join("devices"), 0)],
            report: WalkReport::default(),
        }
    }

    /// Reads at most `budget` directories; true once the walk is complete.
    fn step(
        &mut self,
        sysfs: &Path,
        track: &dyn Fn(&str) -> bool,
        budget: usize,
        out: &mut Vec<Found>,
    ) -> bool {
        for _ in 0..budget {
            let Some((dir, depth)) = self.stack.pop() else {
                return true;
            };
            if self.report.dirs >= MAX_WALK_DIRS {
                self.report.cut = true;
                self.stack.clear();
                return true;
            }
            self.report.dirs += 1;
            self.visit(sysfs, &dir, depth, track, out);
        }
        self.stack.is_empty()
    }

    fn visit(
        &mut self,
        sysfs: &Path,
        dir: &Path,
        depth: usize,
        track: &dyn Fn(&str) -> bool,
        out: &mut Vec<Found>,
    ) {
        let r = &mut self.report;
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            // removed since its parent was listed: gone, which is the truth
            Err(e) if vanished(&e) => return,
            Err(_) => {
                r.unreadable += 1;
                r.not_read(&devpath(sysfs, dir));
                return;
            }
        };
        let mut has_uevent = false;
        for e in entries {
            let Ok(e) = e else {
                // a listing cut by an error: the rest of the directory is unseen
                r.unreadable += 1;
                r.not_read(&devpath(sysfs, dir));
                break;
            };
            let Ok(ft) = e.file_type() else { continue };
            let name = e.file_name();
            if ft.is_dir() {
                // symlinks are not dirs here: never followed
                if name == "power" {
                    continue; // never a device
                }
                if depth + 1 > MAX_WALK_DEPTH {
                    r.not_read(&devpath(sysfs, &e.path()));
                } else {
                    self.stack.push((e.path(), depth + 1));
                }
            } else if name == "uevent" && ft.is_file() {
                has_uevent = true;
            }
        }
        if !has_uevent {
            return;
        }
        let Some(subsystem) = fs::read_link(dir.join("subsystem"))
            .ok()
            .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()))
        else {
            return;
        };
        r.devices += 1;
        if !track(&subsystem) {
            return;
        }
        let Some(devpath) = dir
            .strip_prefix(sysfs)
            .ok()
            .and_then(|p| p.to_str())
            .map(|p| format!("/{p}"))
        else {
            return; // not UTF-8: no event could name it either
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
            // removed since it was listed: gone
            Err(e) if vanished(&e) => {}
            // listed but unreadable: not known gone
            Err(_) => {
                r.unreadable += 1;
                r.not_read(&devpath);
            }
        }
    }
}

/// The error of a path that no longer exists (a device removed during the
/// walk): sysfs answers ENOENT, or ENODEV for an attribute of a device
/// being torn down.
fn vanished(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
        || matches!(
            e.raw_os_error(),
            Some(nix::libc::ENOTDIR) | Some(nix::libc::ENODEV)
        )
}

/// `/devices/...` of a directory under the sysfs root.
fn devpath(sysfs: &Path, dir: &Path) -> String {
    match dir.strip_prefix(sysfs) {
        Ok(p) => format!("/{}", p.to_string_lossy()),
        Err(_) => dir.to_string_lossy().into_owned(),
    }
}

/// The daemon's sysfs for recovery (see the module documentation).
pub struct SysfsWalker {
    sysfs: PathBuf,
    track: Track,
    state: Option<State>,
}

impl SysfsWalker {
    /// sysfs at `sysfs` (`/sys`, or `--sysfs-root`).
    pub fn new(sysfs: PathBuf) -> SysfsWalker {
        SysfsWalker {
            sysfs,
            track: Track::All,
            state: None,
        }
    }
}

impl SysfsWalk for SysfsWalker {
    fn begin(&mut self, track: &Track) {
        self.track = track.clone();
        self.state = Some(State::new(&self.sysfs));
    }

    fn step(&mut self, budget: usize, out: &mut Vec<Found>) -> Option<WalkReport> {
        let st = self.state.as_mut()?;
        let track = &self.track;
        if !st.step(&self.sysfs, &|s| track.tracks(s), budget, out) {
            return None;
        }
        self.state.take().map(|s| s.report)
    }

    fn uevent_seqnum(&mut self) -> Option<u64> {
        uevent_seqnum(&self.sysfs)
    }

    fn present(&mut self, devpath: &str) -> bool {
        present(&self.sysfs, devpath)
    }

    fn trigger(&mut self, devpath: &str, uuid: &str) -> io::Result<()> {
        trigger(&self.sysfs, devpath, uuid)
    }

    fn uuid(&mut self) -> String {
        fs::read_to_string("/proc/sys/kernel/random/uuid")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| format!("00000000-0000-4000-8000-{:012x}", std::process::id()))
    }
}

/// Walks `sysfs/devices` whole, at once; pushes every device whose
/// subsystem `track` accepts into `out` (for benchmarks and tools; the
/// daemon walks a budget at a time through [`SysfsWalker`]).
pub fn walk(sysfs: &Path, track: &dyn Fn(&str) -> bool, out: &mut Vec<Found>) -> WalkReport {
    let mut st = State::new(sysfs);
    while !st.step(sysfs, track, usize::MAX, out) {}
    st.report
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/sysfs/x86_64")
    }

    #[test]
    fn a_walk_a_directory_at_a_time_finds_what_a_whole_walk_finds() {
        let mut whole = Vec::new();
        let rep = walk(&fixture(), &|_| true, &mut whole);
        assert!(whole.len() > 20, "{}", whole.len());
        let mut w = SysfsWalker::new(fixture());
        w.begin(&Track::All);
        let mut steps = Vec::new();
        let mut n = 0;
        let rep2 = loop {
            n += 1;
            if let Some(r) = w.step(1, &mut steps) {
                break r;
            }
        };
        assert_eq!(rep2, rep);
        assert_eq!(n, rep.dirs, "one directory per step");
        assert_eq!(steps, whole);
        assert!(rep.unread.is_empty() && !rep.cut);
    }

    #[test]
    fn subtrees_below_the_depth_bound_are_named_not_read() {
        let root = std::env::temp_dir().join(format!("hotplugd-walk-deep-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let mut d = root.join("devices");
        for i in 0..=MAX_WALK_DEPTH {
            d = d.join(format!("d{i}"));
        }
        fs::create_dir_all(&d).unwrap();
        let rep = walk(&root, &|_| true, &mut Vec::new());
        let _ = fs::remove_dir_all(&root);
        assert_eq!(rep.unread.len(), 1, "{rep:?}");
        assert!(
            rep.unread[0].ends_with(&format!("/d{MAX_WALK_DEPTH}")),
            "{rep:?}"
        );
        assert!(rep.unread[0].starts_with("/devices/d0/"), "{rep:?}");
        assert!(!rep.cut);
    }
}
