//! `--broadcast`: a nonblocking `NETLINK_KOBJECT_UEVENT` socket that sends
//! handled events to netlink multicast groups, and the [`Broadcaster`] that
//! encodes ([`crate::broadcast`]), sends, counts and logs.
//!
//! Never blocks, never waits: every failure is counted per kind in
//! [`Stats`] and logged at most once per [`LOG_EVERY`] per kind.
//!
//! Kernel facts (`net/netlink/af_netlink.c`, `netlink_sendmsg`; measured in
//! `tests/broadcast.rs`):
//! - Sending to a multicast group needs `CAP_NET_ADMIN` in the network
//!   namespace's user namespace: the uevent family only lets non-root
//!   processes *receive* (`NL_CFG_F_NONROOT_RECV`). Otherwise: EPERM.
//! - A datagram with a group mask goes to every listener of those groups
//!   (`netlink_broadcast`); a listener whose receive queue is full loses it
//!   (it sees ENOBUFS on its next read); the sender is not told.
//! - The same datagram is also unicast to port 0, the kernel's own uevent
//!   socket. Since Linux 4.18 that socket has an input handler
//!   (`uevent_net_rcv`) which ignores a datagram that is not a netlink
//!   message, and `sendto` returns the length: no listener, no error. Older
//!   kernels have no handler and `sendto` fails with ECONNREFUSED *after*
//!   the multicast went out (udevd ignores it for this reason): counted as
//!   `broadcast_refused`, not logged as a failure.
//! - EAGAIN and ENOBUFS can come from the allocation of the datagram under
//!   memory pressure (`MSG_DONTWAIT`); both are counted, nothing is retried.

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use log::{debug, warn};
use nix::errno::Errno;
use nix::sys::socket::{
    bind, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

use crate::broadcast::{encode_kernel, encode_udev, EncodeError, Format, Target};
use crate::limits::BROADCAST_BUFFER;
use crate::stats::Stats;

/// At most one log line per failure kind in this time (the counters count
/// every one).
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// The sending socket.
#[derive(Debug)]
pub struct BroadcastSocket {
    fd: OwnedFd,
}

/// How one send went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// EAGAIN: the kernel could not take it without waiting.
    Again,
    /// ENOBUFS: no memory for the datagram.
    NoBufs,
    /// ECONNREFUSED: kernels before 4.18; the multicast went out.
    Refused,
    /// Anything else (EPERM without CAP_NET_ADMIN, EMSGSIZE...).
    Other(Errno),
}

impl BroadcastSocket {
    /// Opens and binds (port chosen by the kernel, no groups: it receives
    /// nothing) a nonblocking, close-on-exec uevent socket.
    pub fn open() -> Result<BroadcastSocket, Errno> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkKObjectUEvent,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
        Ok(BroadcastSocket { fd })
    }

    /// Sends `data` to the multicast groups `groups`. Never blocks; retries
    /// only on EINTR.
    pub fn send(&self, groups: u32, data: &[u8]) -> Result<(), SendError> {
        let to = NetlinkAddr::new(0, groups);
        loop {
            return match sendto(self.fd.as_raw_fd(), data, &to, MsgFlags::MSG_DONTWAIT) {
                Ok(_) => Ok(()),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => Err(SendError::Again),
                Err(Errno::ENOBUFS) => Err(SendError::NoBufs),
                Err(Errno::ECONNREFUSED) => Err(SendError::Refused),
                Err(e) => Err(SendError::Other(e)),
            };
        }
    }
}

/// One failure kind's log limiter.
#[derive(Default)]
struct Limiter {
    last: Option<Instant>,
    quiet: u64,
}

impl Limiter {
    /// `Some(n)`: log now, `n` earlier ones were not logged.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            self.quiet += 1;
            return None;
        }
        self.last = Some(now);
        Some(core::mem::take(&mut self.quiet))
    }
}

/// The `--broadcast` targets, their socket and the one encoding buffer.
pub struct Broadcaster {
    socket: BroadcastSocket,
    targets: Vec<Target>,
    buf: Box<[u8]>,
    env: Box<[u8]>,
    // log limiters: again, nobufs, other, too large
    logs: [Limiter; 4],
}

impl Broadcaster {
    /// Opens the socket and allocates the buffer ([`BROADCAST_BUFFER`]).
    pub fn new(targets: Vec<Target>) -> Result<Broadcaster, Errno> {
        Ok(Broadcaster {
            socket: BroadcastSocket::open()?,
            targets,
            buf: vec![0; BROADCAST_BUFFER].into_boxed_slice(),
            env: vec![0; BROADCAST_BUFFER].into_boxed_slice(),
            logs: Default::default(),
        })
    }

    /// [`Broadcaster::send`] for an event that made no job: `raw` is the
    /// kernel's datagram, `env` the rules' `ENV{}` assignments (written
    /// into a second fixed buffer; never allocates).
    pub fn send_with_env<'e>(
        &mut self,
        raw: &[u8],
        env: impl Iterator<Item = (&'e str, &'e [u8])>,
        label: &dyn core::fmt::Display,
        stats: &mut Stats,
    ) {
        let mut env_buf = core::mem::take(&mut self.env);
        let mut n = 0;
        let mut fits = true;
        for (k, v) in env {
            for part in [k.as_bytes(), b"=", v, b"\0"] {
                match env_buf.get_mut(n..n + part.len()) {
                    Some(dst) => dst.copy_from_slice(part),
                    None => fits = false,
                }
                n += part.len();
            }
        }
        if fits {
            self.send(raw, &env_buf[..n], label, stats);
        } else {
            stats.broadcast_too_large += 1;
            if let Some(q) = self.logs[3].allow(Instant::now()) {
                warn!(
                    "broadcast of {label} not sent: its ENV{{}} values take {n} bytes ({BROADCAST_BUFFER}); broadcast_too_large={}{}",
                    stats.broadcast_too_large,
                    quiet(q)
                );
            }
        }
        self.env = env_buf;
    }

    /// Encodes a handled event once per format and sends it to every target
    /// of that format. `raw`, `extra`: see [`crate::broadcast::Properties`].
    /// `label`: for log lines. Never blocks; allocates only for a log line.
    pub fn send(
        &mut self,
        raw: &[u8],
        extra: &[u8],
        label: &dyn core::fmt::Display,
        stats: &mut Stats,
    ) {
        for format in [Format::Udev, Format::Kernel] {
            if !self.targets.iter().any(|t| t.format == format) {
                continue;
            }
            let encoded = match format {
                Format::Udev => {
                    let (s, us) = super::uptime();
                    let usec = s * 1_000_000 + u64::from(us);
                    encode_udev(&mut self.buf, raw, extra, Some(usec))
                }
                Format::Kernel => encode_kernel(&mut self.buf, raw, extra),
            };
            let n = match encoded {
                Ok(n) => n,
                Err(e) => {
                    stats.broadcast_too_large += 1;
                    if let Some(q) = self.logs[3].allow(Instant::now()) {
                        warn!(
                            "broadcast of {label} not sent: {e} ({BROADCAST_BUFFER}); broadcast_too_large={}{}",
                            stats.broadcast_too_large,
                            quiet(q)
                        );
                    }
                    if let EncodeError::NoHeader = e {
                        return;
                    }
                    continue;
                }
            };
            for t in self.targets.iter().filter(|t| t.format == format) {
                match self.socket.send(t.groups, &self.buf[..n]) {
                    Ok(()) => stats.broadcast_sent += 1,
                    Err(SendError::Refused) => {
                        // the multicast went out (kernels before 4.18)
                        stats.broadcast_sent += 1;
                        stats.broadcast_refused += 1;
                        debug!("broadcast of {label}: ECONNREFUSED from the kernel's port (sent)");
                    }
                    Err(e) => {
                        let (i, count, what) = match e {
                            SendError::Again => {
                                stats.broadcast_again += 1;
                                (0, stats.broadcast_again, "broadcast_again")
                            }
                            SendError::NoBufs => {
                                stats.broadcast_nobufs += 1;
                                (1, stats.broadcast_nobufs, "broadcast_nobufs")
                            }
                            _ => {
                                stats.broadcast_failed += 1;
                                (2, stats.broadcast_failed, "broadcast_failed")
                            }
                        };
                        if let Some(q) = self.logs[i].allow(Instant::now()) {
                            let why = match e {
                                SendError::Other(errno) => errno.desc(),
                                SendError::Again => "EAGAIN",
                                _ => "ENOBUFS",
                            };
                            warn!(
                                "broadcast of {label} to groups {:#x} not sent: {why}; {what}={count}{}",
                                t.groups,
                                quiet(q)
                            );
                        }
                    }
                }
            }
        }
    }
}

fn quiet(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more not logged)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_logs_once_per_period_and_counts_the_rest() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        assert_eq!(l.allow(t0), Some(0));
        assert_eq!(l.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(l.allow(t0 + Duration::from_secs(2)), None);
        assert_eq!(l.allow(t0 + LOG_EVERY), Some(2));
        assert_eq!(l.allow(t0 + LOG_EVERY), None);
    }
}
