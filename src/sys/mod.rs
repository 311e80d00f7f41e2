//! The only place that talks to the operating system below `std`: netlink,
//! signals, process spawning, sysfs reads that must not allocate, and the
//! output paths that must not block the loop. Every `unsafe` block in the
//! crate is here, each with a `// SAFETY:` comment.
//!
//! Pure modules (`uevent`, `usb`, `rules`, `monitor`, `exec`, `recovery`,
//! `devices`, `devnode`, `identity`, `broadcast`) never import this one.

#![allow(unsafe_code)]

pub mod broadcast;
pub mod control;
pub mod devnode;
pub mod firmware;
pub mod log;
pub mod netlink;
pub mod notify;
pub mod signals;
pub mod spawn;
pub mod sysfs;
pub mod sysfs_view;
pub mod walk;

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Reads a small decimal file such as `/proc/sys/net/core/rmem_max`.
pub fn read_usize(path: &str) -> Option<usize> {
    let mut buf = [0u8; 32];
    let n = read_into(path, &mut buf).ok()?;
    let s = core::str::from_utf8(&buf[..n]).ok()?;
    s.trim().parse().ok()
}

/// Reads at most `buf.len()` bytes of a file into `buf`; returns the count.
/// No allocation (std keeps short paths on the stack).
pub fn read_into(path: impl AsRef<std::path::Path>, buf: &mut [u8]) -> io::Result<usize> {
    let mut f = File::open(path)?;
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Calls `f` with each line of a file (without its newline), reading through
/// a fixed 4 KiB buffer; lines longer than that are passed cut. Stops early
/// when `f` returns false.
pub fn for_each_line(path: &str, mut f: impl FnMut(&[u8]) -> bool) -> io::Result<()> {
    let mut file = File::open(path)?;
    let mut buf = [0u8; 4096];
    let mut have = 0;
    loop {
        let n = match file.read(&mut buf[have..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        have += n;
        let mut start = 0;
        while let Some(nl) = buf[start..have].iter().position(|&b| b == b'\n') {
            if !f(&buf[start..start + nl]) {
                return Ok(());
            }
            start += nl + 1;
        }
        if n == 0 || (start == 0 && have == buf.len()) {
            // end of file, or a line longer than the buffer: pass what we have
            if have > start && !f(&buf[start..have]) {
                return Ok(());
            }
            if n == 0 {
                return Ok(());
            }
            have = 0;
            continue;
        }
        buf.copy_within(start..have, 0);
        have -= start;
    }
}

/// Seconds since boot on the monotonic clock (what `udevadm monitor`
/// prints as `KERNEL[...]`), as (seconds, microseconds).
pub fn uptime() -> (u64, u32) {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => (ts.tv_sec() as u64, (ts.tv_nsec() / 1000) as u32),
        Err(_) => (0, 0),
    }
}

/// Why [`write_all_or_signal`] stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum WriteStop {
    /// The reader went away (EPIPE): a closed pipe, `| head`.
    Closed,
    /// The output is not writable and a signal is pending on the signalfd.
    Signal,
    /// Another error.
    Error(Errno),
}

/// Writes all of `*data` to `out`, advancing `*data` past what was written,
/// but waits for the output with `poll` together with `signals`, so that a
/// reader that stops reading can stall the output but never the handling of
/// a signal: when the output is not writable and a signal is pending, it
/// returns [`WriteStop::Signal`] and the caller resumes later with what is
/// left. Writes at most `PIPE_BUF` (4096) bytes after each POLLOUT, so a
/// write to a pipe cannot block. A regular file is always writable.
pub fn write_all_or_signal(
    out: BorrowedFd<'_>,
    signals: BorrowedFd<'_>,
    data: &mut &[u8],
) -> Result<(), WriteStop> {
    while !data.is_empty() {
        let mut fds = [
            PollFd::new(out.as_fd(), PollFlags::POLLOUT),
            PollFd::new(signals, PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(WriteStop::Error(e)),
        }
        let out_ready = fds[0].revents().unwrap_or(PollFlags::empty());
        let signal = fds[1]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN));
        if !out_ready.intersects(PollFlags::POLLOUT | PollFlags::POLLERR | PollFlags::POLLHUP) {
            if signal {
                return Err(WriteStop::Signal);
            }
            continue;
        }
        let chunk = &data[..data.len().min(4096)];
        match nix::unistd::write(out, chunk) {
            Ok(n) => *data = &data[n..],
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => {}
            Err(Errno::EPIPE) => return Err(WriteStop::Closed),
            Err(e) => return Err(WriteStop::Error(e)),
        }
    }
    Ok(())
}

/// True if `fd` is a pipe or socket whose reading end has gone away: used by
/// `monitor` to notice a closed stdout between events (`| head -n 1`).
pub fn output_closed(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::empty())];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(1))
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP))
}

/// File descriptor 1.
pub fn stdout() -> BorrowedFd<'static> {
    // SAFETY: fd 1 is open for the life of the process (the C runtime sets
    // it up, and nothing in hotplugd closes it); at worst it refers to
    // /dev/null or a closed pipe, which writes report as errors.
    unsafe { BorrowedFd::borrow_raw(1) }
}

/// Marks every descriptor above 2 that we inherited close-on-exec, so that
/// nothing a parent left open (a supervisor's pipe, a shell's saved
/// descriptor, a build tool's jobserver) leaks into handlers. Call it
/// before opening anything. Uses `close_range(CLOSE_RANGE_CLOEXEC)` (Linux
/// 5.11); on older kernels, `fcntl` over every descriptor below the
/// `RLIMIT_NOFILE` soft limit (capped at 65,536).
pub fn cloexec_inherited() {
    // First make sure 0, 1 and 2 are open (init may start us with any of
    // them closed): otherwise the next pipe could become "stdout" and a
    // handler would lose its output.
    for fd in 0..3 {
        // SAFETY: fcntl(F_GETFD) and open(2) touch no memory of ours; the
        // descriptor opened is deliberately leaked as the missing 0, 1 or 2.
        unsafe {
            if nix::libc::fcntl(fd, nix::libc::F_GETFD) < 0 {
                nix::libc::open(c"/dev/null".as_ptr(), nix::libc::O_RDWR);
            }
        }
    }
    const CLOSE_RANGE_CLOEXEC: nix::libc::c_uint = 1 << 2;
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on
    // descriptors; it closes nothing and touches no memory.
    let r = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_close_range,
            3 as nix::libc::c_uint,
            nix::libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return;
    }
    let max = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft.min(65_536)) as i32;
    for fd in 3..max {
        // SAFETY: F_GETFD/F_SETFD on a number that may not be open fail
        // cleanly with EBADF and never touch memory.
        unsafe {
            let flags = nix::libc::fcntl(fd, nix::libc::F_GETFD);
            if flags >= 0 && flags & nix::libc::FD_CLOEXEC == 0 {
                nix::libc::fcntl(fd, nix::libc::F_SETFD, flags | nix::libc::FD_CLOEXEC);
            }
        }
    }
}

/// A user's (uid, primary gid) by uid, from the passwd database.
pub fn user_by_uid(uid: u32) -> Option<(u32, u32)> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| (u.uid.as_raw(), u.gid.as_raw()))
}

/// A user's (uid, primary gid) by name; `Ok(None)` if there is none.
pub fn user_by_name(name: &str) -> Result<Option<(u32, u32)>, String> {
    nix::unistd::User::from_name(name)
        .map(|u| u.map(|u| (u.uid.as_raw(), u.gid.as_raw())))
        .map_err(|e| e.desc().to_string())
}

/// A group's gid by name; `Ok(None)` if there is none.
pub fn group_by_name(name: &str) -> Result<Option<u32>, String> {
    nix::unistd::Group::from_name(name)
        .map(|g| g.map(|g| g.gid.as_raw()))
        .map_err(|e| e.desc().to_string())
}

/// True when running with effective uid 0.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
