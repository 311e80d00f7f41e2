//! Starting a handler process: no shell, a clean environment, `/` as its
//! working directory, stdin from `/dev/null`, stdout and stderr into one
//! pipe the loop reads, and a process group of its own so a timeout can
//! stop everything it started.
//!
//! The fork/exec is our own (about 60 lines): `std::process::Command`
//! costs some 30 KB of binary on a board for features we do not use (PATH
//! search, an environment map). The child, before `execve`, does only
//! async-signal-safe calls: its own process group, `/dev/null` on stdin, the
//! pipe on stdout and stderr, `chdir("/")`, an empty signal mask (the daemon
//! blocks the signals it reads from its signalfd) and SIGPIPE back to its
//! default (the daemon ignores it; an ignored signal survives exec). An exec
//! failure (ENOENT, EACCES) is sent back over a close-on-exec pipe that the
//! loop reads after it reaps the child (so `spawn` never waits for the
//! child: a slow `execve` from a hung mount cannot hold the loop); an exit
//! with 4 bytes in that pipe was a failure to start. With `--handler-user`, the
//! child drops to that uid and gid, with no supplementary groups, before
//! `execve`; a failure to drop is reported like an exec failure. Every fd hotplugd opens is
//! close-on-exec (and inherited ones are marked so at start-up), so a
//! handler inherits only 0, 1, 2.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// A started handler.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid, which is also its process group id.
    pub pid: i32,
    /// The read end of its stdout+stderr pipe (nonblocking, close-on-exec).
    pub output: OwnedFd,
    /// The read end of its exec-error pipe (nonblocking, close-on-exec):
    /// after the child is reaped, 4 bytes (an errno) if `execve` or the
    /// set-up before it failed, end of file if the program started.
    pub exec_error: OwnedFd,
}

/// The pointer arrays `execve` takes, reused for every handler (reserved
/// at start: no allocation per handler unless a job has more words than
/// it was sized for).
pub struct ExecScratch(Vec<*const nix::libc::c_char>);

impl core::fmt::Debug for ExecScratch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ExecScratch({} pointers reserved)", self.0.capacity())
    }
}

impl ExecScratch {
    /// Room for `words` argv and environment entries together.
    pub fn with_capacity(words: usize) -> ExecScratch {
        ExecScratch(Vec::with_capacity(words + 2))
    }
}

/// Pointers to each NUL-terminated word of `block`; false if the block
/// does not end with a NUL (so a word would run past it).
fn push_words(p: &mut Vec<*const nix::libc::c_char>, block: &[u8]) -> bool {
    if block.last().is_some_and(|&b| b != 0) {
        return false;
    }
    let mut at = 0;
    while at < block.len() {
        p.push(block[at..].as_ptr().cast());
        at += block[at..]
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(block.len())
            + 1;
    }
    true
}

/// Starts the program `argv` (NUL-terminated words, `argv[0]` an absolute
/// path; no PATH search) with exactly the environment `env` (blocks of
/// NUL-terminated `KEY=VALUE` entries), as `creds` (uid, gid; no
/// supplementary groups) if given. The words are passed where they lie:
/// only `scratch`'s pointer array is written before forking, and the child
/// allocates nothing.
pub fn spawn(
    argv: &[u8],
    env: &[&[u8]],
    scratch: &mut ExecScratch,
    creds: Option<(u32, u32)>,
) -> io::Result<Spawned> {
    use nix::libc;
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_string());
    if argv.is_empty() {
        return Err(bad("empty argv"));
    }
    let p = &mut scratch.0;
    p.clear();
    if !push_words(p, argv) {
        return Err(bad("argv not NUL-terminated"));
    }
    p.push(core::ptr::null());
    let envp_at = p.len();
    for block in env {
        if !push_words(p, block) {
            return Err(bad("environment not NUL-terminated"));
        }
    }
    p.push(core::ptr::null());

    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    // our read ends only (the write end stays blocking for the handler);
    // before the fork, so no failure can leave a child we do not track
    set_nonblocking(&r)?;
    set_nonblocking(&err_r)?;
    let (w_fd, err_fd) = (w.as_raw_fd(), err_w.as_raw_fd());
    let (prog, argv_p, envp_p) = (p[0], p.as_ptr(), p[envp_at..].as_ptr());

    // SAFETY: the daemon is single-threaded, and between fork and execve the
    // child calls only async-signal-safe functions on memory prepared
    // before the fork; it never returns from this block.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: child side, as above.
        unsafe {
            let fail = |err_fd: i32| -> ! {
                let e = *libc::__errno_location();
                libc::write(err_fd, (&e as *const i32).cast(), 4);
                libc::_exit(127)
            };
            libc::setpgid(0, 0);
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if null < 0 || libc::dup2(null, 0) < 0 {
                fail(err_fd);
            }
            if libc::dup2(w_fd, 1) < 0 || libc::dup2(w_fd, 2) < 0 {
                fail(err_fd);
            }
            if libc::chdir(c"/".as_ptr()) < 0 {
                fail(err_fd);
            }
            if let Some((uid, gid)) = creds {
                // groups first, then gid, then uid (after which we could not)
                if libc::setgroups(0, core::ptr::null()) < 0
                    || libc::setgid(gid) < 0
                    || libc::setuid(uid) < 0
                {
                    fail(err_fd);
                }
            }
            let mut set: libc::sigset_t = core::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, core::ptr::null_mut());
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::execve(prog, argv_p, envp_p);
            fail(err_fd);
        }
    }
    // Parent: drop our write ends, so the output pipe reports EOF when the
    // handler and its children close it, and the error pipe when exec works.
    drop(w);
    drop(err_w);
    // Also from our side (the child does it first thing), so a signal to
    // the group sent before the child ran cannot miss it. EACCES once it
    // has exec'd, ESRCH once gone: both mean it is done already.
    // SAFETY: setpgid on our own child's pid touches no memory.
    unsafe { libc::setpgid(pid, pid) };
    Ok(Spawned {
        pid,
        output: r,
        exec_error: err_r,
    })
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// The result of one read of a handler's output pipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipeRead {
    /// This many bytes.
    Data(usize),
    /// Nothing now.
    WouldBlock,
    /// End of file (or an error, which ends it the same way; logged).
    End,
}

/// One nonblocking read of a pipe.
pub fn read_pipe(fd: &OwnedFd, buf: &mut [u8]) -> PipeRead {
    loop {
        match nix::unistd::read(fd, buf) {
            Ok(0) => return PipeRead::End,
            Ok(n) => return PipeRead::Data(n),
            Err(nix::errno::Errno::EAGAIN) => return PipeRead::WouldBlock,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                log::warn!("reading a handler's output: {}", e.desc());
                return PipeRead::End;
            }
        }
    }
}

/// What the exec-error pipe of a reaped child says: `Some(errno)` if it
/// never started. Reads without waiting (the child is gone, so the pipe
/// holds its 4 bytes or is at its end).
pub fn exec_error(fd: &OwnedFd) -> Option<i32> {
    let mut errno = [0u8; 4];
    loop {
        match nix::unistd::read(fd, &mut errno) {
            Ok(4) => return Some(i32::from_ne_bytes(errno)),
            Err(nix::errno::Errno::EINTR) => continue,
            _ => return None,
        }
    }
}

/// Writes `value` to the file `path` (a sysfs attribute) in a short-lived
/// child in a process group of its own, so a driver whose `store` blocks
/// holds the child, never the loop. The child exits 0, or with the errno
/// of the failed `open` or `write` (a short write is `EIO`).
pub fn spawn_attr_write(path: &core::ffi::CStr, value: &[u8]) -> io::Result<i32> {
    use nix::libc;
    let (p, v, n) = (path.as_ptr(), value.as_ptr(), value.len());
    // SAFETY: open and write on memory prepared before the fork.
    fork_worker(|| unsafe {
        let fd = libc::open(p, libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW);
        if fd < 0 {
            return *libc::__errno_location();
        }
        let w = libc::write(fd, v.cast(), n);
        if w < 0 {
            return *libc::__errno_location();
        }
        if w as usize == n {
            0
        } else {
            libc::EIO
        }
    })
}

/// Forks a worker that never execs (an `ATTR{}` write, a firmware copy):
/// in a process group of its own, with an empty signal mask and none of
/// the daemon's descriptors (close-on-exec does not apply without an exec:
/// they are closed, so a write stuck in a driver holds no socket, signalfd
/// or pipe), it runs `work` and exits with the code it returns. `work` must
/// call only async-signal-safe functions, on memory prepared before the
/// fork.
pub(crate) fn fork_worker(work: impl FnOnce() -> i32) -> io::Result<i32> {
    use nix::libc;
    // SAFETY: single-threaded daemon; the child runs `work` (which keeps to
    // async-signal-safe calls, as its caller promises) and never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: child side, as above.
        unsafe {
            libc::setpgid(0, 0);
            let mut set: libc::sigset_t = core::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, core::ptr::null_mut());
            libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
        }
        let code = work();
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(code) }
    }
    // SAFETY: as in `spawn`: setpgid on our own child touches no memory.
    unsafe { libc::setpgid(pid, pid) };
    Ok(pid)
}

/// A signal the loop sends to a handler's process group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sig {
    /// SIGTERM
    Term,
    /// SIGKILL
    Kill,
}

/// Sends `sig` to process group `pgid` (`None`: signal 0, only ask).
/// `Ok(false)` if the group no longer has any process (ESRCH).
pub fn signal_group(pgid: i32, sig: Option<Sig>) -> nix::Result<bool> {
    let r = match sig {
        Some(s) => killpg(
            Pid::from_raw(pgid),
            match s {
                Sig::Term => Signal::SIGTERM,
                Sig::Kill => Signal::SIGKILL,
            },
        ),
        // signal 0: only ask whether the group exists
        None => nix::sys::signal::kill(Pid::from_raw(-pgid), None),
    };
    match r {
        Ok(()) => Ok(true),
        Err(nix::errno::Errno::ESRCH) => Ok(false),
        Err(e) => Err(e),
    }
}

/// How a reaped child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// exit(status)
    Code(i32),
    /// killed by a signal (its name, e.g. `SIGKILL`)
    Signal(&'static str),
}

/// Reaps one exited child, if any: `Ok(None)` when none is waiting.
pub fn reap() -> nix::Result<Option<(i32, Exit)>> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => return Ok(Some((pid.as_raw(), Exit::Code(code)))),
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                return Ok(Some((pid.as_raw(), Exit::Signal(sig.as_str()))))
            }
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(_) => continue, // stopped/continued: not an exit
            Err(nix::errno::Errno::ECHILD) => return Ok(None),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}
