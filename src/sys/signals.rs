//! Signals as file-descriptor events: the handled signals are blocked and
//! read from a nonblocking signalfd that the mio loop polls, so no code runs
//! in signal context. SIGPIPE is ignored, so a closed pipe is an EPIPE error
//! where it happens rather than the death of the daemon.
//!
//! The mask stays in place for the life of the process: unblocking it while
//! a signal is pending would deliver it with its default action.
//!
//! Children do not inherit any of this: [`crate::sys::spawn`] empties the
//! signal mask and restores SIGPIPE's default action in the child before exec.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use nix::errno::Errno;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// A handled signal, as the rest of the daemon sees it (no `nix` types
/// outside `sys/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sig {
    /// SIGINT
    Int,
    /// SIGTERM
    Term,
    /// SIGHUP
    Hup,
    /// SIGUSR1
    Usr1,
    /// SIGUSR2
    Usr2,
    /// SIGCHLD
    Chld,
}

impl Sig {
    fn of(s: Signal) -> Option<Sig> {
        Some(match s {
            Signal::SIGINT => Sig::Int,
            Signal::SIGTERM => Sig::Term,
            Signal::SIGHUP => Sig::Hup,
            Signal::SIGUSR1 => Sig::Usr1,
            Signal::SIGUSR2 => Sig::Usr2,
            Signal::SIGCHLD => Sig::Chld,
            _ => return None,
        })
    }
}

impl core::fmt::Display for Sig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Sig::Int => "SIGINT",
            Sig::Term => "SIGTERM",
            Sig::Hup => "SIGHUP",
            Sig::Usr1 => "SIGUSR1",
            Sig::Usr2 => "SIGUSR2",
            Sig::Chld => "SIGCHLD",
        })
    }
}

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
    pub fn pending(&mut self) -> Result<Option<Sig>, Errno> {
        loop {
            match self.fd.read_signal() {
                Ok(Some(info)) => match Signal::try_from(info.ssi_signo as i32)
                    .ok()
                    .and_then(Sig::of)
                {
                    Some(s) => return Ok(Some(s)),
                    None => continue,
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
