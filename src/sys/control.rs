//! The control socket's I/O: `AF_UNIX`, `SOCK_SEQPACKET` (one request,
//! one reply, message boundaries kept, no framing to get wrong), the
//! daemon's listening end and the tools' client end. The protocol is
//! [`crate::control`].
//!
//! Only root (or the daemon's own uid, when it does not run as root) may
//! talk to it: the file is mode 0600 and every accepted connection's
//! `SO_PEERCRED` is checked. A socket file left by a daemon that crashed is
//! recognised by `connect` failing with `ECONNREFUSED` (no one listens);
//! the daemon removes it at start, the tools say so.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    self, sockopt, AddressFamily, Backlog, MsgFlags, SockFlag, SockType, UnixAddr,
};

fn seqpacket() -> nix::Result<OwnedFd> {
    socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
}

/// Why a client could not reach a daemon.
#[derive(Debug)]
pub enum ConnectError {
    /// No socket file: no daemon runs (or it runs with `--control none` or
    /// another `--control PATH`).
    NotRunning(PathBuf),
    /// The file exists but no one listens: a daemon crashed.
    Stale(PathBuf),
    /// Permission denied (not root).
    Denied(PathBuf),
    /// Anything else.
    Other(PathBuf, Errno),
}

impl core::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConnectError::NotRunning(p) => write!(
                f,
                "no hotplugd is running (no control socket {}; is `hotplugd run` started, with --control {}?)",
                p.display(),
                p.display()
            ),
            ConnectError::Stale(p) => write!(
                f,
                "no hotplugd is running (stale socket {}: left by a daemon that stopped without removing it)",
                p.display()
            ),
            ConnectError::Denied(p) => write!(
                f,
                "{}: permission denied (the control socket is for root only)",
                p.display()
            ),
            ConnectError::Other(p, e) => write!(f, "{}: connect: {}", p.display(), e.desc()),
        }
    }
}

/// A tool's connection to the daemon.
#[derive(Debug)]
pub struct ControlClient {
    fd: OwnedFd,
}

/// Connects without waiting (a Unix socket's connect either succeeds at
/// once, or the backlog is full: EAGAIN, reported as Other).
pub fn connect(path: &Path) -> Result<ControlClient, ConnectError> {
    let p = || path.to_path_buf();
    let addr = UnixAddr::new(path).map_err(|e| ConnectError::Other(p(), e))?;
    let fd = seqpacket().map_err(|e| ConnectError::Other(p(), e))?;
    match socket::connect(fd.as_raw_fd(), &addr) {
        Ok(()) => Ok(ControlClient { fd }),
        Err(Errno::ENOENT | Errno::ENOTDIR) => Err(ConnectError::NotRunning(p())),
        Err(Errno::ECONNREFUSED) => Err(ConnectError::Stale(p())),
        Err(Errno::EACCES | Errno::EPERM) => Err(ConnectError::Denied(p())),
        Err(e) => Err(ConnectError::Other(p(), e)),
    }
}

impl ControlClient {
    /// Sends `req` and waits up to `timeout` (`None`: no limit) for the
    /// reply. `Ok(None)`: the time ran out. A daemon that went away is an
    /// error.
    pub fn request(&self, req: &[u8], timeout: Option<Duration>) -> io::Result<Option<Vec<u8>>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            match socket::send(
                self.fd.as_raw_fd(),
                req,
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(_) => break,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => {
                    if !self.wait(PollFlags::POLLOUT, deadline)? {
                        return Ok(None);
                    }
                }
                // closed: a refusal may wait in our queue; read it below
                Err(Errno::EPIPE | Errno::ECONNRESET) => break,
                Err(e) => return Err(e.into()),
            }
        }
        let mut buf = vec![0u8; crate::control::MAX_REPLY + 1];
        loop {
            match socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) | Err(Errno::ECONNRESET) => return Err(closed()),
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(Some(buf));
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => {
                    if !self.wait(PollFlags::POLLIN, deadline)? {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits for `what` until `deadline`; false when it passed.
    fn wait(&self, what: PollFlags, deadline: Option<Instant>) -> io::Result<bool> {
        loop {
            let ms = match deadline {
                None => PollTimeout::NONE,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(false);
                    }
                    // round up, so a short remainder does not spin
                    let ms = left.as_millis().saturating_add(1).min(i32::MAX as u128);
                    PollTimeout::try_from(ms as i32).unwrap_or(PollTimeout::MAX)
                }
            };
            let mut fds = [PollFd::new(self.fd.as_fd(), what)];
            match poll(&mut fds, ms) {
                Ok(0) => continue,
                Ok(_) => return Ok(true),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the daemon closed the connection (it stopped, or refused us: root only)",
    )
}

/// The daemon's listening socket; the file is removed when it is dropped.
#[derive(Debug)]
pub struct ControlListener {
    fd: OwnedFd,
    path: PathBuf,
}

impl ControlListener {
    /// Binds `path` (mode 0600, its directory made 0755 if missing) and
    /// listens. A stale file (connect refused) is removed first; a file a
    /// live daemon answers on is an error naming it.
    pub fn bind(path: &Path) -> Result<ControlListener, String> {
        let show = path.display();
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                std::fs::create_dir_all(dir)
                    .and_then(|()| {
                        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                    })
                    .map_err(|e| format!("{}: {e}", dir.display()))?;
            }
        }
        if std::fs::symlink_metadata(path).is_ok() {
            match connect(path) {
                Ok(_) => {
                    return Err(format!(
                        "{show}: another hotplugd answers on this control socket"
                    ))
                }
                Err(ConnectError::Stale(_)) => {
                    log::info!(
                        "{show}: removing the stale control socket of a daemon that stopped"
                    );
                    std::fs::remove_file(path).map_err(|e| format!("{show}: {e}"))?;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        let addr = UnixAddr::new(path).map_err(|e| format!("{show}: {}", e.desc()))?;
        let fd = seqpacket().map_err(|e| format!("control socket: {}", e.desc()))?;
        socket::bind(fd.as_raw_fd(), &addr).map_err(|e| format!("{show}: bind: {}", e.desc()))?;
        let l = ControlListener {
            fd,
            path: path.to_path_buf(),
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{show}: chmod 0600: {e}"))?;
        let backlog = Backlog::new(crate::control::MAX_CLIENTS as i32).unwrap_or(Backlog::MAXCONN);
        socket::listen(&l.fd, backlog).map_err(|e| format!("{show}: listen: {}", e.desc()))?;
        Ok(l)
    }

    /// The path it is bound to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts one waiting connection: `Ok(None)` when none waits.
    pub fn accept(&self) -> io::Result<Option<ControlConn>> {
        loop {
            match socket::accept4(
                self.fd.as_raw_fd(),
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            ) {
                Ok(raw) => {
                    // SAFETY: accept4 returned a new descriptor that nothing else owns.
                    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
                    let (pid, uid) = match socket::getsockopt(&fd, sockopt::PeerCredentials) {
                        Ok(c) => (c.pid(), c.uid()),
                        Err(_) => (0, u32::MAX),
                    };
                    return Ok(Some(ControlConn { fd, pid, uid }));
                }
                Err(Errno::EINTR | Errno::ECONNABORTED) => {}
                Err(Errno::EAGAIN) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl AsRawFd for ControlListener {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for ControlListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One accepted connection.
#[derive(Debug)]
pub struct ControlConn {
    fd: OwnedFd,
    /// The peer's pid (`SO_PEERCRED`).
    pub pid: i32,
    /// The peer's uid (`SO_PEERCRED`; `u32::MAX` if unknown).
    pub uid: u32,
}

/// What a receive on a connection gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnRecv {
    /// A request of this many bytes (cut at the buffer's size).
    Msg(usize),
    /// Nothing waits.
    WouldBlock,
    /// The peer closed, or the connection failed.
    Closed,
}

/// What a send gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnSend {
    /// Sent.
    Sent,
    /// The peer does not read (its queue is full) or went away.
    Failed,
}

impl ControlConn {
    /// True if the peer is root, or runs as the daemon's own user.
    pub fn allowed(&self) -> bool {
        self.uid == 0 || self.uid == nix::unistd::geteuid().as_raw()
    }

    /// Reads one request without waiting.
    pub fn recv(&self, buf: &mut [u8]) -> ConnRecv {
        loop {
            match socket::recv(self.fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
                Ok(0) => return ConnRecv::Closed,
                Ok(n) => return ConnRecv::Msg(n),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return ConnRecv::WouldBlock,
                Err(_) => return ConnRecv::Closed,
            }
        }
    }

    /// Sends one reply without waiting (`MSG_DONTWAIT`).
    pub fn send(&self, data: &[u8]) -> ConnSend {
        loop {
            match socket::send(
                self.fd.as_raw_fd(),
                data,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(_) => return ConnSend::Sent,
                Err(Errno::EINTR) => {}
                Err(_) => return ConnSend::Failed,
            }
        }
    }
}

impl AsRawFd for ControlConn {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
