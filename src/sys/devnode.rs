//! The I/O of /dev's duties ([`crate::devnode`] decides): looking at a
//! node or link, changing a node's owner, group and mode, making and
//! removing links, and the record of the links hotplugd made.
//!
//! Every path is resolved from a descriptor of the /dev directory, one
//! component at a time with `O_NOFOLLOW`: a symlink someone put in the
//! middle of a path is never followed out of /dev. A node's permissions
//! are changed through an `O_PATH | O_NOFOLLOW` descriptor checked with
//! `fstat` first (the same inode the decision was made on; never a
//! symlink): `fchownat(fd, "", AT_EMPTY_PATH)` and `chmod` of
//! `/proc/self/fd/N` (`fchmod` refuses `O_PATH` descriptors; without /proc
//! the path is chmod-ed after a second `lstat` found the same inode).
//!
//! # The record of made links
//! `/dev/.hotplugd/links/` holds one symlink per link hotplugd made, named
//! by the link's path in udev's encoding (`serial\x2fftdi-0`) and with the
//! same target. It lives on /dev itself, so it is as old as /dev's links
//! (a reboot's fresh devtmpfs starts both empty). At start
//! ([`DevDir::sweep`]), a link whose record says hotplugd made it, that
//! still has the recorded target, and whose target no longer exists (its
//! device vanished while the daemon was down) is removed; records of links
//! that are gone or were changed by someone else are dropped. A link to a
//! device that is still there is kept: coldplug or the device's next event
//! makes it again.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag};
use nix::sys::stat::{fchmodat, fstat, fstatat, mkdirat, FchmodatFlags, FileStat, Mode};
use nix::unistd::{fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use nix::NixPath;

use crate::devnode::{decode_name, encode_name, Kind, Seen, MAX_TARGET};
use crate::limits::MAX_LINK_LEN;

/// Where the record of made links is, under /dev.
pub const RECORD_DIR: &str = ".hotplugd/links";

/// An open /dev (or `--dev-root`).
#[derive(Debug)]
pub struct DevDir {
    dir: OwnedFd,
    root: PathBuf,
}

fn kind_of(st: &FileStat) -> Kind {
    match st.st_mode & nix::libc::S_IFMT {
        nix::libc::S_IFCHR => Kind::Char,
        nix::libc::S_IFBLK => Kind::Block,
        nix::libc::S_IFLNK => Kind::Symlink,
        nix::libc::S_IFDIR => Kind::Dir,
        nix::libc::S_IFREG => Kind::Regular,
        _ => Kind::Other,
    }
}

fn seen_of(st: &FileStat) -> Seen {
    Seen {
        kind: kind_of(st),
        rdev: (
            nix::sys::stat::major(st.st_rdev) as u32,
            nix::sys::stat::minor(st.st_rdev) as u32,
        ),
        perm: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
    }
}

/// Splits `a/b/c` into (`a/b`, `c`).
fn split(rel: &str) -> (&str, &str) {
    rel.rsplit_once('/').unwrap_or(("", rel))
}

const DIR_FLAGS: OFlag = OFlag::O_PATH
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

impl DevDir {
    /// Opens the directory (`/dev`, or a test's `--dev-root`).
    pub fn open(root: &Path) -> io::Result<DevDir> {
        let dir = openat(
            nix::fcntl::AT_FDCWD,
            root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(io::Error::from)?;
        Ok(DevDir {
            dir,
            root: root.to_path_buf(),
        })
    }

    /// The directory as given.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory `dirs` (components separated by `/`, possibly empty),
    /// each component opened with `O_NOFOLLOW`; missing ones made (0755)
    /// if `create`.
    fn walk(&self, dirs: &str, create: bool) -> Result<OwnedFd, Errno> {
        let mut cur = openat(self.dir.as_fd(), ".", DIR_FLAGS, Mode::empty())?;
        for c in dirs.split('/').filter(|c| !c.is_empty()) {
            cur = match openat(cur.as_fd(), c, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if create => {
                    match mkdirat(cur.as_fd(), c, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(e),
                    }
                    openat(cur.as_fd(), c, DIR_FLAGS, Mode::empty())?
                }
                Err(e) => return Err(e),
            };
        }
        Ok(cur)
    }

    /// `lstat` of a path under the directory (nothing there, or a parent
    /// missing: [`Seen::MISSING`]).
    pub fn lstat(&self, rel: &str) -> Result<Seen, Errno> {
        let (dirs, base) = split(rel);
        let parent = match self.walk(dirs, false) {
            Ok(p) => p,
            Err(Errno::ENOENT) => return Ok(Seen::MISSING),
            Err(e) => return Err(e),
        };
        match fstatat(parent.as_fd(), base, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(seen_of(&st)),
            Err(Errno::ENOENT) => Ok(Seen::MISSING),
            Err(e) => Err(e),
        }
    }

    /// Sets the owner, group and mode of the node at `rel`, which must
    /// still be the char or block node `expect` describes (same type and
    /// device number); `EEXIST` if it is not.
    pub fn set_perms(
        &self,
        rel: &str,
        expect: &Seen,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
    ) -> Result<(), Errno> {
        let (dirs, base) = split(rel);
        let parent = self.walk(dirs, false)?;
        let fd = openat(
            parent.as_fd(),
            base,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let st = fstat(fd.as_fd())?;
        let now = seen_of(&st);
        if now.kind != expect.kind || now.rdev != expect.rdev {
            return Err(Errno::EEXIST);
        }
        if uid.is_some() || gid.is_some() {
            fchownat(
                fd.as_fd(),
                "",
                uid.map(Uid::from_raw),
                gid.map(Gid::from_raw),
                AtFlags::AT_EMPTY_PATH,
            )?;
        }
        if let Some(m) = mode {
            let m = Mode::from_bits_truncate(m & 0o7777);
            let mut proc_path = heapless::String::<32>::new();
            let _ = core::fmt::write(
                &mut proc_path,
                format_args!("/proc/self/fd/{}", fd.as_raw_fd()),
            );
            match fchmodat(
                nix::fcntl::AT_FDCWD,
                proc_path.as_str(),
                m,
                FchmodatFlags::FollowSymlink,
            ) {
                Ok(()) => {}
                Err(Errno::ENOENT) => {
                    // no /proc: the path, if it is still the same inode
                    let again = fstatat(parent.as_fd(), base, AtFlags::AT_SYMLINK_NOFOLLOW)?;
                    if again.st_ino != st.st_ino || again.st_dev != st.st_dev {
                        return Err(Errno::EEXIST);
                    }
                    fchmodat(parent.as_fd(), base, m, FchmodatFlags::FollowSymlink)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// What is at `rel`, and its target (into `buf`) if it is a symlink.
    pub fn read_link<'b>(
        &self,
        rel: &str,
        buf: &'b mut [u8; MAX_TARGET],
    ) -> Result<(Kind, Option<&'b [u8]>), Errno> {
        let (dirs, base) = split(rel);
        let parent = match self.walk(dirs, false) {
            Ok(p) => p,
            Err(Errno::ENOENT) => return Ok((Kind::Missing, None)),
            Err(e) => return Err(e),
        };
        readlink_in(parent.as_fd(), base, buf)
    }

    /// Makes `rel` a symlink to `target`, atomically (a temporary name in
    /// the same directory, then `rename` over the path), making missing
    /// directories (0755). The caller checked the path holds no file or
    /// directory.
    pub fn make_link(&self, rel: &str, target: &str) -> Result<(), Errno> {
        let (dirs, base) = split(rel);
        let parent = self.walk(dirs, true)?;
        replace_symlink(parent.as_fd(), base, target)?;
        self.record(rel, target);
        Ok(())
    }

    /// Removes the symlink at `rel` (never anything else: `EEXIST` if the
    /// path holds something other than a symlink), and the directories
    /// above it that it leaves empty; and its record.
    pub fn remove_link(&self, rel: &str) -> Result<(), Errno> {
        let (dirs, base) = split(rel);
        let parent = self.walk(dirs, false)?;
        let st = fstatat(parent.as_fd(), base, AtFlags::AT_SYMLINK_NOFOLLOW)?;
        if kind_of(&st) != Kind::Symlink {
            return Err(Errno::EEXIST);
        }
        unlinkat(parent.as_fd(), base, UnlinkatFlags::NoRemoveDir)?;
        drop(parent);
        self.unrecord(rel);
        self.remove_empty_parents(rel);
        Ok(())
    }

    /// Removes the directories above `rel` that are empty (as udev does
    /// after removing a link), deepest first, stopping at the first that
    /// is not.
    fn remove_empty_parents(&self, rel: &str) {
        let mut cur = split(rel).0;
        while !cur.is_empty() {
            let (dirs, base) = split(cur);
            let Ok(p) = self.walk(dirs, false) else {
                return;
            };
            if unlinkat(p.as_fd(), base, UnlinkatFlags::RemoveDir).is_err() {
                return;
            }
            cur = dirs;
        }
    }

    /// Notes that hotplugd made `rel` with `target` (see the module docs).
    /// A record that cannot be written costs only the clean-up at the next
    /// start: logged at debug.
    fn record(&self, rel: &str, target: &str) {
        let mut name = heapless::String::new();
        if !encode_name(rel, &mut name) {
            return;
        }
        let r = self
            .walk(RECORD_DIR, true)
            .and_then(|d| replace_symlink(d.as_fd(), &name, target));
        if let Err(e) = r {
            log::debug!("{}/{RECORD_DIR}/{name}: {}", self.root.display(), e.desc());
        }
    }

    fn unrecord(&self, rel: &str) {
        let mut name = heapless::String::new();
        if !encode_name(rel, &mut name) {
            return;
        }
        if let Ok(d) = self.walk(RECORD_DIR, false) {
            let _ = unlinkat(d.as_fd(), name.as_str(), UnlinkatFlags::NoRemoveDir);
        }
    }

    /// At start: removes the links hotplugd made whose device vanished
    /// while it was down (see the module docs). Returns (links removed,
    /// records dropped). Allocates (once, at start).
    pub fn sweep(&self) -> (usize, usize) {
        let (mut removed, mut dropped) = (0, 0);
        let Ok(records) = self.walk(RECORD_DIR, false) else {
            return (0, 0);
        };
        let Ok(entries) = std::fs::read_dir(self.root.join(RECORD_DIR)) else {
            return (0, 0);
        };
        let mut rec_buf = [0u8; MAX_TARGET];
        let mut link_buf = [0u8; MAX_TARGET];
        let mut link = heapless::String::<MAX_LINK_LEN>::new();
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let drop_record = |d: &mut usize| {
                let _ = unlinkat(records.as_fd(), name, UnlinkatFlags::NoRemoveDir);
                *d += 1;
            };
            if !decode_name(name, &mut link) || crate::devnode::check_link(&link).is_err() {
                drop_record(&mut dropped);
                continue;
            }
            let Ok((Kind::Symlink, Some(want))) = readlink_in(records.as_fd(), name, &mut rec_buf)
            else {
                drop_record(&mut dropped);
                continue;
            };
            let (dirs, base) = split(&link);
            let Ok(parent) = self.walk(dirs, false) else {
                drop_record(&mut dropped);
                continue;
            };
            match readlink_in(parent.as_fd(), base, &mut link_buf) {
                Ok((Kind::Symlink, Some(t))) if t == want => {
                    // made by us, unchanged: does its target still exist?
                    let gone = matches!(
                        target_exists(parent.as_fd(), t),
                        Err(Errno::ENOENT) | Err(Errno::ENOTDIR)
                    );
                    if gone && self.remove_link(&link).is_ok() {
                        log::info!(
                            "{}/{link}: removed (hotplugd made it; its device is gone)",
                            self.root.display()
                        );
                        removed += 1;
                    }
                }
                _ => drop_record(&mut dropped),
            }
        }
        (removed, dropped)
    }
}

/// `stat` (following links) of `target` relative to `dir`.
fn target_exists(dir: BorrowedFd<'_>, target: &[u8]) -> Result<(), Errno> {
    let t = core::str::from_utf8(target).map_err(|_| Errno::EINVAL)?;
    fstatat(dir, t, AtFlags::empty()).map(drop)
}

/// `lstat` and `readlink` of `base` in `dir`.
fn readlink_in<'b>(
    dir: BorrowedFd<'_>,
    base: &str,
    buf: &'b mut [u8; MAX_TARGET],
) -> Result<(Kind, Option<&'b [u8]>), Errno> {
    let st = match fstatat(dir, base, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok((Kind::Missing, None)),
        Err(e) => return Err(e),
    };
    let kind = kind_of(&st);
    if kind != Kind::Symlink {
        return Ok((kind, None));
    }
    let n = base.with_nix_path(|c| {
        // SAFETY: `c` is a NUL-terminated path valid for the call; `buf`
        // is writable for `buf.len()` bytes; readlinkat writes at most
        // that many and returns the count (or -1).
        unsafe {
            nix::libc::readlinkat(
                dir.as_raw_fd(),
                c.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        }
    })?;
    let n = Errno::result(n)? as usize;
    if n >= buf.len() {
        return Err(Errno::ENAMETOOLONG);
    }
    Ok((Kind::Symlink, Some(&buf[..n])))
}

/// `symlink` to a temporary name next to `base`, then `rename` over it.
fn replace_symlink(dir: BorrowedFd<'_>, base: &str, target: &str) -> Result<(), Errno> {
    let mut tmp = heapless::String::<{ 4 * MAX_LINK_LEN + 32 }>::new();
    let _ = core::fmt::write(
        &mut tmp,
        format_args!(".{base}.hotplugd-tmp-{}", std::process::id()),
    );
    let _ = unlinkat(dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
    symlinkat(target, dir, tmp.as_str())?;
    if let Err(e) = renameat(dir, tmp.as_str(), dir, base) {
        let _ = unlinkat(dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! On a scratch directory: no root needed (no nodes, only links).

    use super::*;

    struct Tmp(PathBuf);
    impl Tmp {
        fn new(tag: &str) -> Tmp {
            let d =
                std::env::temp_dir().join(format!("hotplugd-sysdev-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d).unwrap();
            Tmp(d)
        }
    }
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn links_are_made_recorded_and_removed_with_their_empty_directories() {
        let t = Tmp::new("links");
        let d = DevDir::open(&t.0).unwrap();
        d.make_link("serial/by-id/x", "../../ttyUSB0").unwrap();
        let p = t.0.join("serial/by-id/x");
        assert_eq!(std::fs::read_link(&p).unwrap(), Path::new("../../ttyUSB0"));
        let rec = t.0.join(RECORD_DIR).join("serial\\x2fby-id\\x2fx");
        assert_eq!(
            std::fs::read_link(&rec).unwrap(),
            Path::new("../../ttyUSB0")
        );
        let mut buf = [0u8; MAX_TARGET];
        let (k, target) = d.read_link("serial/by-id/x", &mut buf).unwrap();
        assert_eq!((k, target), (Kind::Symlink, Some(&b"../../ttyUSB0"[..])));
        // replaced atomically, no temporary left behind
        d.make_link("serial/by-id/x", "../../ttyUSB1").unwrap();
        assert_eq!(std::fs::read_link(&p).unwrap(), Path::new("../../ttyUSB1"));
        assert_eq!(
            std::fs::read_dir(t.0.join("serial/by-id")).unwrap().count(),
            1
        );
        d.remove_link("serial/by-id/x").unwrap();
        assert!(!t.0.join("serial").exists(), "emptied directories go too");
        assert!(rec.symlink_metadata().is_err(), "and the record");
    }

    #[test]
    fn a_file_is_never_removed_and_a_symlinked_directory_never_followed() {
        let t = Tmp::new("safe");
        let outside = Tmp::new("outside");
        let d = DevDir::open(&t.0).unwrap();
        std::fs::write(t.0.join("file"), "x").unwrap();
        assert_eq!(d.remove_link("file"), Err(Errno::EEXIST));
        assert!(t.0.join("file").is_file());
        // dev/evil -> a directory elsewhere: nothing is made through it
        std::os::unix::fs::symlink(&outside.0, t.0.join("evil")).unwrap();
        assert!(d.make_link("evil/x", "../null").is_err());
        assert_eq!(std::fs::read_dir(&outside.0).unwrap().count(), 0);
        let mut buf = [0u8; MAX_TARGET];
        assert!(d.read_link("evil/x", &mut buf).is_err());
        assert_eq!(d.lstat("missing/x").unwrap(), Seen::MISSING);
    }
}
