//! Signals as file-descriptor events: the handled signals are blocked and
//! read from a nonblocking signalfd that the mio loop polls, so no code runs
//! in signal context. SIGPIPE is ignored, so a closed pipe is an EPIPE error
//! where it happens rather than the death of the daemon.
//!
//! The mask stays in place for the life of the process: unblocking it while
//! a signal is pending would deliver it with its default action.
//!
//! Children do not inherit any of this: `std::process::Command` empties the
//! signal mask and restores SIGPIPE's default action in the child before exec.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use nix::errno::Errno;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// The blocked signals and the signalfd that delivers them.
#[derive(Debug)]
pub struct Signals {
    fd: SignalFd,
}

/// The signals the daemon handles.
pub const HANDLED: [Signal; 6] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGCHLD,
];

impl Signals {
    /// Blocks [`HANDLED`], ignores SIGPIPE, and opens the signalfd.
    pub fn new() -> Result<Signals, Errno> {
        let mut set = SigSet::empty();
        for s in HANDLED {
            set.add(s);
        }
        set.thread_block()?;
        let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
        // SAFETY: installing SIG_IGN runs no code in signal context and
        // replaces no handler this program relies on.
        unsafe { sigaction(Signal::SIGPIPE, &ignore) }?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Signals { fd })
    }

    /// The next pending signal, or `None` when there is none.
    pub fn pending(&mut self) -> Result<Option<Signal>, Errno> {
        loop {
            match self.fd.read_signal() {
                Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32) {
                    Ok(s) => return Ok(Some(s)),
                    Err(_) => continue,
                },
                Ok(None) => return Ok(None),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsRawFd for Signals {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_fd().as_raw_fd()
    }
}

impl AsFd for Signals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
