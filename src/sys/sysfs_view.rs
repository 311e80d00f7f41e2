//! [`SysfsView`] over a directory: the reads the identity builtins
//! (`usb_id`, `path_id`) need, on `/sys` or on a fixture tree
//! (`--sysfs-root`). Reads are bounded by the caller's buffer (at most
//! `limits::MAX_ATTR_LEN` for attributes); paths longer than
//! `limits::MAX_PATH` are treated as absent. Nothing here blocks on a
//! FIFO planted in a fixture: attributes are opened `O_NONBLOCK` and
//! only regular files are read.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::identity::{EntryKind, SysfsView};
use crate::limits::MAX_PATH;
use crate::sys::sysfs::SysfsRoot;

impl SysfsRoot {
    /// `root + path`, or `None` if too long or holding a NUL.
    fn full(&self, path: &str) -> Option<PathBuf> {
        if self.root().len() + path.len() >= MAX_PATH || path.contains('\0') {
            return None;
        }
        let mut s = String::with_capacity(self.root().len() + path.len());
        s.push_str(self.root());
        s.push_str(path);
        Some(PathBuf::from(s))
    }

    fn full2(&self, path: &str, name: &str) -> Option<PathBuf> {
        self.full(&crate::identity::join_path(path, name))
    }
}

fn kind_of(t: fs::FileType) -> EntryKind {
    if t.is_symlink() {
        EntryKind::Link
    } else if t.is_dir() {
        EntryKind::Dir
    } else {
        EntryKind::File
    }
}

impl SysfsView for SysfsRoot {
    fn read_attr(&self, path: &str, name: &str, buf: &mut [u8]) -> Option<usize> {
        let p = self.full2(path, name)?;
        if !fs::symlink_metadata(&p).ok()?.file_type().is_file() {
            return None;
        }
        let mut f: File = OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOFOLLOW)
            .open(&p)
            .ok()?;
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        Some(n)
    }

    fn link_name(&self, path: &str, name: &str, buf: &mut [u8]) -> Option<usize> {
        let target = fs::read_link(self.full2(path, name)?).ok()?;
        let base = target.file_name()?.as_encoded_bytes();
        if base.len() > buf.len() {
            return None;
        }
        buf[..base.len()].copy_from_slice(base);
        Some(base.len())
    }

    fn kind(&self, path: &str) -> Option<EntryKind> {
        Some(kind_of(
            fs::symlink_metadata(self.full(path)?).ok()?.file_type(),
        ))
    }

    fn canonical(&self, path: &str) -> Option<String> {
        let root = fs::canonicalize(Path::new(self.root())).ok()?;
        let c = fs::canonicalize(self.full(path)?).ok()?;
        let rel = c.strip_prefix(&root).ok()?;
        let s = rel.to_str()?;
        Some(format!("/{s}"))
    }

    fn for_each_entry(&self, path: &str, f: &mut dyn FnMut(&str, EntryKind)) {
        let Some(p) = self.full(path) else { return };
        let Ok(rd) = fs::read_dir(p) else { return };
        for e in rd.flatten() {
            let (Ok(t), Some(name)) = (e.file_type(), e.file_name().to_str().map(str::to_owned))
            else {
                continue;
            };
            f(&name, kind_of(t));
        }
    }
}
