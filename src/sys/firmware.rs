//! The I/O of firmware loading ([`crate::firmware`] plans it): a
//! short-lived child, in a process group of its own, that writes `1` to
//! `loading`, copies the first candidate file that opens into `data`
//! through a 16 KiB stack buffer, and writes `0` (or `-1` when no file
//! opens or the copy fails). A big file or a slow sysfs write holds the
//! child, never the loop. Its exit code is 0,
//! [`crate::firmware::EXIT_NOT_FOUND`] for no file, or the errno that
//! stopped it.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in a path"))
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    use nix::libc;
    // SAFETY: `uname` fills the zeroed struct we own; `release` is then a
    // NUL-terminated string inside it.
    unsafe {
        let mut u: libc::utsname = core::mem::zeroed();
        if libc::uname(&mut u) != 0 {
            return String::new();
        }
        std::ffi::CStr::from_ptr(u.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    }
}

/// Starts the loader child; returns its pid (also its process group).
/// Allocates the C paths before forking; the child allocates nothing.
pub fn spawn_load(loading: &Path, data: &Path, candidates: &[PathBuf]) -> io::Result<i32> {
    use nix::libc;
    let loading = cpath(loading)?;
    let data = cpath(data)?;
    let files: Vec<CString> = candidates
        .iter()
        .map(|p| cpath(p))
        .collect::<io::Result<_>>()?;
    let file_ptrs: Vec<*const libc::c_char> = files.iter().map(|c| c.as_ptr()).collect();
    let (lp, dp, fp, nf) = (
        loading.as_ptr(),
        data.as_ptr(),
        file_ptrs.as_ptr(),
        file_ptrs.len(),
    );
    // SAFETY: the worker calls only async-signal-safe functions on memory
    // prepared before the fork (and its own stack).
    crate::sys::spawn::fork_worker(|| unsafe {
        let errno = || *libc::__errno_location();
        let put = |text: &[u8]| -> i32 {
            let fd = libc::open(lp, libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return errno();
            }
            let w = libc::write(fd, text.as_ptr().cast(), text.len());
            let e = if w < 0 { errno() } else { 0 };
            libc::close(fd);
            e
        };
        let e = put(b"1");
        if e != 0 {
            libc::_exit(e);
        }
        let mut src = -1;
        for i in 0..nf {
            src = libc::open(*fp.add(i), libc::O_RDONLY | libc::O_CLOEXEC);
            if src >= 0 {
                break;
            }
        }
        if src < 0 {
            put(b"-1");
            libc::_exit(crate::firmware::EXIT_NOT_FOUND);
        }
        let dst = libc::open(dp, libc::O_WRONLY | libc::O_CLOEXEC);
        if dst < 0 {
            let e = errno();
            put(b"-1");
            libc::_exit(e);
        }
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = libc::read(src, buf.as_mut_ptr().cast(), buf.len());
            if n == 0 {
                break;
            }
            if n < 0 {
                if errno() == libc::EINTR {
                    continue;
                }
                let e = errno();
                put(b"-1");
                libc::_exit(e);
            }
            let mut off = 0usize;
            while off < n as usize {
                let w = libc::write(dst, buf.as_ptr().add(off).cast(), n as usize - off);
                if w < 0 {
                    if errno() == libc::EINTR {
                        continue;
                    }
                    let e = errno();
                    put(b"-1");
                    libc::_exit(e);
                }
                if w == 0 {
                    put(b"-1");
                    libc::_exit(libc::EIO);
                }
                off += w as usize;
            }
        }
        libc::close(dst);
        put(b"0")
    })
}
