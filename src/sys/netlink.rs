//! The `NETLINK_KOBJECT_UEVENT` socket: open, size, bind, receive, and say who
//! sent each datagram.
//!
//! Kernel facts this relies on (measured here, `../shared/notes/kernel-facts.md`):
//! - The kernel doubles every `SO_RCVBUF`/`SO_RCVBUFFORCE` request; reading
//!   the option back gives the doubled value. `SO_RCVBUF` is silently capped
//!   at `net.core.rmem_max`; `SO_RCVBUFFORCE` is not, but needs
//!   `CAP_NET_ADMIN` (EPERM otherwise, also for root in a user namespace).
//! - When the receive queue is full the kernel drops the broadcast for this
//!   socket and the next `recvmsg` fails with ENOBUFS once; queued messages
//!   follow and the socket keeps working. It keeps dropping until the queue
//!   has been drained completely.
//! - Kernel uevents come from port 0 with SCM_CREDENTIALS uid 0 and pid 0
//!   (`SO_PASSCRED` must be on). A root process can multicast a forged event
//!   (its own port id), and can make the kernel rebroadcast one (port 0,
//!   uid 0, but pid = the sender's pid): all three must be checked.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{
    bind, getsockname, recvmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessageOwned,
    MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

/// The multicast group the kernel sends uevents to (udev's group is 2).
pub const KERNEL_GROUP: u32 = 1;

/// What the receive-buffer negotiation asked for and got.
#[derive(Clone, Copy, Debug)]
pub struct RcvbufReport {
    /// Bytes asked for (before the kernel doubles them); 0 if nothing was set
    /// because the system default was already larger.
    pub requested: usize,
    /// `SO_RCVBUF` read back: the real limit of the queue, in bytes.
    pub obtained: usize,
    /// `/proc/sys/net/core/rmem_default`, if readable.
    pub rmem_default: Option<usize>,
    /// `/proc/sys/net/core/rmem_max`, if readable.
    pub rmem_max: Option<usize>,
    /// Whether `SO_RCVBUFFORCE` was allowed (else `SO_RCVBUF`, capped at rmem_max).
    pub forced: bool,
}

impl RcvbufReport {
    /// True when the kernel gave less than requested (twice the request is
    /// what it grants when nothing caps it).
    pub fn capped(&self) -> bool {
        self.requested > 0 && self.obtained < self.requested.saturating_mul(2)
    }
}

/// Who sent a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sender {
    /// The netlink port id of the sender (0: the kernel).
    pub port: u32,
    /// SCM_CREDENTIALS, if the kernel attached them: (pid, uid).
    pub creds: Option<(i32, u32)>,
}

impl Sender {
    /// Only the kernel: port 0, uid 0 and pid 0. The pid check catches
    /// messages a root process made the kernel rebroadcast (port 0, uid 0,
    /// pid of that process).
    pub fn is_kernel(&self) -> bool {
        self.port == 0 && self.creds == Some((0, 0))
    }

    /// Port 0 and uid 0, any pid: what the kernel relays for a root
    /// process that injected a uevent (LXD/Incus forward the host's events
    /// into a container this way). Accepted only with `--accept-injected`.
    pub fn is_injected_by_root(&self) -> bool {
        self.port == 0 && matches!(self.creds, Some((_, 0)))
    }
}

/// The result of one receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recv {
    /// A whole datagram is in the buffer.
    Datagram {
        /// Its length in bytes.
        len: usize,
        /// Who sent it.
        sender: Sender,
    },
    /// The datagram was larger than the buffer. The buffer holds a cut copy
    /// that must not be parsed.
    Truncated {
        /// Its real size in bytes.
        len: usize,
        /// Who sent it.
        sender: Sender,
    },
    /// ENOBUFS: the kernel dropped at least one event for this socket.
    Overrun,
    /// Nothing more to read now.
    WouldBlock,
}

/// A bound, nonblocking, close-on-exec uevent socket.
#[derive(Debug)]
pub struct UeventSocket {
    fd: OwnedFd,
    port: u32,
    inode: u64,
    rcvbuf: RcvbufReport,
    cmsg: Vec<u8>,
}

/// Why the socket could not be opened.
#[derive(Debug)]
pub struct OpenError {
    /// The step that failed, e.g. "bind to group 1".
    pub step: &'static str,
    /// The system's error.
    pub errno: Errno,
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "uevent socket: {}: {}", self.step, self.errno.desc())?;
        if self.errno == Errno::EPROTONOSUPPORT || self.errno == Errno::EAFNOSUPPORT {
            write!(f, " (kernel without CONFIG_NET / netlink uevent support?)")?;
        }
        Ok(())
    }
}

impl std::error::Error for OpenError {}

fn step(step: &'static str) -> impl FnOnce(Errno) -> OpenError {
    move |errno| OpenError { step, errno }
}

impl UeventSocket {
    /// Opens the socket, sizes its receive buffer against the system's
    /// `rmem_default`/`rmem_max` (see [`RcvbufReport`]), turns on
    /// `SO_PASSCRED` and binds it to the kernel's group. The size is set
    /// before `bind`, so no event can arrive into a smaller queue.
    ///
    /// Allocates once (the control-message buffer); receiving never does.
    pub fn open(rcvbuf: usize) -> Result<UeventSocket, OpenError> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkKObjectUEvent,
        )
        .map_err(step("socket(AF_NETLINK, NETLINK_KOBJECT_UEVENT)"))?;

        let rmem_default = super::read_usize("/proc/sys/net/core/rmem_default");
        let rmem_max = super::read_usize("/proc/sys/net/core/rmem_max");
        let current = setsockopt_read(&fd)?;
        let mut report = RcvbufReport {
            requested: 0,
            obtained: current,
            rmem_default,
            rmem_max,
            forced: false,
        };
        // Never shrink the queue below what the system gives by default.
        if rcvbuf.saturating_mul(2) > current {
            let req = rcvbuf.min(i32::MAX as usize / 2);
            report.requested = req;
            match setsockopt(&fd, sockopt::RcvBufForce, &req) {
                Ok(()) => report.forced = true,
                Err(Errno::EPERM) => {
                    setsockopt(&fd, sockopt::RcvBuf, &req).map_err(step("setsockopt(SO_RCVBUF)"))?
                }
                Err(e) => return Err(step("setsockopt(SO_RCVBUFFORCE)")(e)),
            }
            report.obtained = setsockopt_read(&fd)?;
        }

        setsockopt(&fd, sockopt::PassCred, &true).map_err(step("setsockopt(SO_PASSCRED)"))?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, KERNEL_GROUP))
            .map_err(step("bind to group 1"))?;
        let port = getsockname::<NetlinkAddr>(fd.as_raw_fd())
            .map_err(step("getsockname"))?
            .pid();
        let inode = nix::sys::stat::fstat(fd.as_fd())
            .map_err(step("fstat"))?
            .st_ino as u64;
        Ok(UeventSocket {
            fd,
            port,
            inode,
            rcvbuf: report,
            cmsg: nix::cmsg_space!(nix::sys::socket::UnixCredentials),
        })
    }

    /// What the receive-buffer negotiation got.
    pub fn rcvbuf(&self) -> RcvbufReport {
        self.rcvbuf
    }

    /// The netlink port id the kernel assigned to this socket.
    pub fn port(&self) -> u32 {
        self.port
    }

    /// Receives one datagram into `buf`. Retries on EINTR. Never allocates.
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<Recv> {
        loop {
            let mut iov = [io::IoSliceMut::new(buf)];
            // MSG_TRUNC: the kernel returns the datagram's real length.
            let r = recvmsg::<NetlinkAddr>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut self.cmsg),
                MsgFlags::MSG_TRUNC | MsgFlags::MSG_DONTWAIT,
            );
            let msg = match r {
                Ok(msg) => msg,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Ok(Recv::WouldBlock),
                Err(Errno::ENOBUFS) => return Ok(Recv::Overrun),
                Err(e) => return Err(e.into()),
            };
            let port = msg.address.map_or(u32::MAX, |a| a.pid());
            let mut creds = None;
            // cmsgs() fails only when the control buffer was too small
            // (MSG_CTRUNC): then there are no trustworthy credentials.
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::ScmCredentials(uc) = c {
                        creds = Some((uc.pid(), uc.uid()));
                    }
                }
            }
            let sender = Sender { port, creds };
            let len = msg.bytes;
            let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
            return Ok(if truncated {
                Recv::Truncated { len, sender }
            } else {
                Recv::Datagram { len, sender }
            });
        }
    }

    /// The kernel's count of datagrams it dropped for this socket because
    /// the queue was full: the `Drops` column of `/proc/net/netlink`.
    /// `None` if procfs is not mounted or the row was not found.
    pub fn kernel_drops(&self) -> Option<u64> {
        proc_net_netlink_drops(self.inode)
    }

    /// Reads everything queued and throws it away (used after an overrun,
    /// before a resync: the kernel drops new events until the queue is
    /// empty). Returns (datagrams discarded, overruns seen meanwhile).
    pub fn discard_queued(&mut self, buf: &mut [u8]) -> io::Result<(u64, u64)> {
        let (mut n, mut overruns) = (0, 0);
        loop {
            match self.recv(buf)? {
                Recv::WouldBlock => return Ok((n, overruns)),
                Recv::Overrun => overruns += 1,
                Recv::Datagram { .. } | Recv::Truncated { .. } => n += 1,
            }
        }
    }
}

fn setsockopt_read(fd: &OwnedFd) -> Result<usize, OpenError> {
    nix::sys::socket::getsockopt(fd, sockopt::RcvBuf).map_err(step("getsockopt(SO_RCVBUF)"))
}

impl AsRawFd for UeventSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for UeventSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Finds the row of socket `inode` in `/proc/net/netlink` and returns its
/// Drops column. Columns: `sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode`.
/// Reads with a fixed buffer: no allocation.
fn proc_net_netlink_drops(inode: u64) -> Option<u64> {
    let mut found = None;
    super::for_each_line("/proc/net/netlink", |line| {
        let mut cols = line.split(|&b| b == b' ').filter(|c| !c.is_empty());
        let mut fields: [&[u8]; 10] = [&[]; 10];
        for slot in fields.iter_mut() {
            *slot = cols.next().unwrap_or(&[]);
        }
        if crate::uevent::parse_u64(fields[9]) == Some(inode) {
            found = crate::uevent::parse_u64(fields[8]);
            return false;
        }
        true
    })
    .ok()?;
    found
}
