//! sysfs access for matching: attribute reads and link names with paths
//! built in stack buffers, so matching never allocates. The root is `/sys`
//! or a fixture tree (`--sysfs-root`).

use std::ffi::CStr;
use std::os::fd::AsFd;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

use crate::limits::MAX_PATH;
use crate::rules::Sysfs;

/// sysfs under a root directory.
#[derive(Clone, Debug)]
pub struct SysfsRoot {
    root: String,
}

impl SysfsRoot {
    /// sysfs at `root` (trailing slashes are dropped).
    pub fn new(root: &Path) -> SysfsRoot {
        let mut root = root.to_string_lossy().into_owned();
        while root.len() > 1 && root.ends_with('/') {
            root.pop();
        }
        SysfsRoot { root }
    }

    /// The root, as given.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// `root + devpath + "/" + name` as a NUL-terminated path in `buf`.
    /// `None` if it does not fit or contains NUL.
    fn path<'b>(&self, devpath: &str, name: &str, buf: &'b mut [u8; MAX_PATH]) -> Option<&'b CStr> {
        let parts: [&[u8]; 4] = [
            self.root.as_bytes(),
            devpath.as_bytes(),
            b"/",
            name.as_bytes(),
        ];
        let mut n = 0;
        for p in parts {
            if p.contains(&0) || n + p.len() >= buf.len() {
                return None;
            }
            buf[n..n + p.len()].copy_from_slice(p);
            n += p.len();
        }
        buf[n] = 0;
        CStr::from_bytes_with_nul(&buf[..=n]).ok()
    }

    /// Starts a child that writes `value` to attribute `name` of the
    /// device at `devpath` (for `ATTR{file}="value"`), in one `write`, as
    /// sysfs expects (see [`crate::sys::spawn::spawn_attr_write`]). Its pid.
    pub fn spawn_write_attr(
        &self,
        devpath: &str,
        name: &str,
        value: &[u8],
    ) -> std::io::Result<i32> {
        let mut pbuf = [0u8; MAX_PATH];
        let path = self
            .path(devpath, name, &mut pbuf)
            .ok_or(std::io::Error::from_raw_os_error(nix::libc::ENAMETOOLONG))?;
        crate::sys::spawn::spawn_attr_write(path, value)
    }
}

impl Sysfs for SysfsRoot {
    fn attr<'b>(&self, devpath: &str, name: &str, buf: &'b mut [u8]) -> Option<&'b [u8]> {
        let mut pbuf = [0u8; MAX_PATH];
        let path = self.path(devpath, name, &mut pbuf)?;
        // O_NONBLOCK: never hang on a FIFO planted in a fixture tree
        let fd = open(
            path,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::empty(),
        )
        .ok()?;
        let mut n = 0;
        while n < buf.len() {
            match nix::unistd::read(fd.as_fd(), &mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(Errno::EINTR) => continue,
                Err(_) => return None,
            }
        }
        Some(&buf[..n])
    }

    fn link<'b>(&self, devpath: &str, name: &str, buf: &'b mut [u8]) -> Option<&'b [u8]> {
        let mut pbuf = [0u8; MAX_PATH];
        let path = self.path(devpath, name, &mut pbuf)?;
        let n = readlink(path, buf)?;
        let target = &buf[..n];
        let base = target.rsplit(|&b| b == b'/').next().unwrap_or(target);
        Some(base)
    }
}

/// readlink(2) into `buf`; the length, or `None`.
fn readlink(path: &CStr, buf: &mut [u8]) -> Option<usize> {
    // SAFETY: `path` is NUL-terminated; `buf` is valid for `buf.len()`
    // bytes of writes; readlink writes at most that many and never a NUL.
    let r = unsafe { nix::libc::readlink(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 || r as usize >= buf.len() {
        return None;
    }
    Some(r as usize)
}
