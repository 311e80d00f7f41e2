//! Starting a handler process: no shell, a clean environment, `/` as its
//! working directory, stdin from `/dev/null`, stdout and stderr into one
//! pipe the loop reads, and a process group of its own so a timeout can
//! stop everything it started.
//!
//! `std::process::Command` does the fork/exec (posix_spawn where it can),
//! empties the signal mask and restores SIGPIPE's default action in the
//! child, and reports an exec failure (ENOENT, EACCES) to the parent. Every
//! fd hotplugd opens is close-on-exec, so a handler inherits only 0, 1, 2.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

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
}

/// Starts `argv` with exactly `env`. Allocates (argv and env strings).
pub fn spawn(argv: &[Vec<u8>], env: &[(&[u8], &[u8])]) -> io::Result<Spawned> {
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty argv"))?;
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    let w2 = w.try_clone()?;
    let mut cmd = Command::new(OsStr::from_bytes(prog));
    cmd.args(args.iter().map(|a| OsStr::from_bytes(a)))
        .env_clear()
        .envs(
            env.iter()
                .map(|(k, v)| (OsStr::from_bytes(k), OsStr::from_bytes(v))),
        )
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::from(w))
        .stderr(Stdio::from(w2))
        .process_group(0);
    let child = cmd.spawn()?;
    // `cmd` (and with it our copies of the write ends) is dropped here, so
    // the pipe reports EOF when the handler and its children close it.
    drop(cmd);
    let flags = OFlag::from_bits_truncate(fcntl(r.as_fd(), FcntlArg::F_GETFL)?);
    fcntl(r.as_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(Spawned {
        pid: child.id() as i32,
        output: r,
    })
}

/// Sends `sig` to process group `pgid`. `Ok(false)` if the group no longer
/// has any process (ESRCH).
pub fn signal_group(pgid: i32, sig: Option<Signal>) -> nix::Result<bool> {
    let r = match sig {
        Some(s) => killpg(Pid::from_raw(pgid), s),
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
    /// killed by a signal
    Signal(Signal),
}

/// Reaps one exited child, if any: `Ok(None)` when none is waiting.
pub fn reap() -> nix::Result<Option<(i32, Exit)>> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => return Ok(Some((pid.as_raw(), Exit::Code(code)))),
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                return Ok(Some((pid.as_raw(), Exit::Signal(sig))))
            }
            Ok(WaitStatus::StillAlive) => return Ok(None),
            Ok(_) => continue, // stopped/continued: not an exit
            Err(nix::errno::Errno::ECHILD) => return Ok(None),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}
