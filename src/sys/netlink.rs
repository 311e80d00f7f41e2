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

use nix::libc;

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

/// Datagrams one `recvmmsg` call can return: the slots of a [`Batch`].
///
/// Each slot is a [`crate::limits::RECV_BUFFER`]-byte buffer (8 KiB), so a
/// batch reserves 128 KiB of address space; a typical uevent (< 1 KiB)
/// touches only the first page of its slot, so the resident cost is about
/// 64 KiB. 16 already makes the per-call cost (syscall entry, msghdr copy-in)
/// a sixteenth per event when events queue up; more would add memory, not
/// speed (measured in `docs/benchmarks.md`).
pub const RECV_BATCH: usize = 16;

/// Room for one `SCM_CREDENTIALS` control message (`CMSG_SPACE(sizeof(struct
/// ucred))` = 32 bytes on every Linux ABI), in `u64`s for the alignment
/// `cmsghdr` needs.
const CMSG_WORDS: usize = 4;

/// The result of one [`UeventSocket::recv_batch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchRecv {
    /// This many datagrams (1..=[`RECV_BATCH`]) are in the batch; read each
    /// with [`Batch::get`].
    Received(usize),
    /// ENOBUFS: the kernel dropped at least one event for this socket.
    Overrun,
    /// Nothing more to read now.
    WouldBlock,
}

/// Buffers for [`RECV_BATCH`] datagrams, their senders' addresses and
/// credentials, and the `mmsghdr` array `recvmmsg(2)` fills: allocated once,
/// reused by every receive. The headers point into the other boxes, which
/// never move (only the `Batch` value does).
pub struct Batch {
    data: Box<[u8]>,
    hdrs: Box<[libc::mmsghdr]>,
    iovs: Box<[libc::iovec]>,
    addrs: Box<[libc::sockaddr_nl]>,
    cmsgs: Box<[[u64; CMSG_WORDS]]>,
    len: usize,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("len", &self.len).finish()
    }
}

impl Default for Batch {
    fn default() -> Self {
        Batch::new()
    }
}

impl Batch {
    /// Allocates the slots (once, at start).
    pub fn new() -> Batch {
        let slot = crate::limits::RECV_BUFFER;
        let data = vec![0u8; RECV_BATCH * slot].into_boxed_slice();
        // SAFETY: all-zero is a valid value of these plain C structs.
        let zero_addr: libc::sockaddr_nl = unsafe { core::mem::zeroed() };
        let addrs = vec![zero_addr; RECV_BATCH].into_boxed_slice();
        let cmsgs = vec![[0u64; CMSG_WORDS]; RECV_BATCH].into_boxed_slice();
        let iovs: Box<[libc::iovec]> = (0..RECV_BATCH)
            .map(|_| libc::iovec {
                iov_base: core::ptr::null_mut(),
                iov_len: 0,
            })
            .collect();
        // SAFETY: as above; `rearm` sets the pointers before every receive.
        let hdrs: Box<[libc::mmsghdr]> = (0..RECV_BATCH)
            .map(|_| unsafe { core::mem::zeroed() })
            .collect();
        Batch {
            data,
            hdrs,
            iovs,
            addrs,
            cmsgs,
            len: 0,
        }
    }

    /// Datagrams received by the last [`UeventSocket::recv_batch`].
    pub fn len(&self) -> usize {
        self.len
    }

    /// Forgets the datagrams received (they were all handled).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// True when the last receive returned nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Datagram `i` of the last receive: a [`Recv::Datagram`] or
    /// [`Recv::Truncated`], with its bytes (a cut copy when truncated,
    /// which must not be parsed). `i` must be below [`Batch::len`].
    pub fn get(&self, i: usize) -> (Recv, &[u8]) {
        let slot = crate::limits::RECV_BUFFER;
        let h = &self.hdrs[i];
        let len = h.msg_len as usize;
        let port = if h.msg_hdr.msg_namelen as usize >= core::mem::size_of::<libc::sockaddr_nl>()
            && self.addrs[i].nl_family as i32 == libc::AF_NETLINK
        {
            self.addrs[i].nl_pid
        } else {
            u32::MAX
        };
        let sender = Sender {
            port,
            creds: self.creds(i),
        };
        let bytes = &self.data[i * slot..i * slot + len.min(slot)];
        if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 || len > slot {
            (Recv::Truncated { len, sender }, bytes)
        } else {
            (Recv::Datagram { len, sender }, bytes)
        }
    }

    /// The SCM_CREDENTIALS of datagram `i`, if the kernel attached them
    /// and the control buffer was not cut (MSG_CTRUNC: then none are
    /// trustworthy).
    fn creds(&self, i: usize) -> Option<(i32, u32)> {
        let h = &self.hdrs[i].msg_hdr;
        if h.msg_flags & libc::MSG_CTRUNC != 0 {
            return None;
        }
        let mut found = None;
        // SAFETY: msg_control/msg_controllen describe our own cmsg buffer,
        // which the kernel filled; CMSG_FIRSTHDR/NXTHDR stay inside it, and
        // the data of an SCM_CREDENTIALS message is a `struct ucred`
        // (read unaligned to be safe).
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET
                    && (*c).cmsg_type == libc::SCM_CREDENTIALS
                    && (*c).cmsg_len as usize
                        >= libc::CMSG_LEN(core::mem::size_of::<libc::ucred>() as u32) as usize
                {
                    let uc: libc::ucred = core::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    found = Some((uc.pid, uc.uid));
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
        found
    }

    /// Points every header at its slot, address and control buffer, and
    /// resets the lengths the kernel overwrites, before each receive (the
    /// boxes do not move, but setting 16 pointers costs nothing and keeps
    /// the headers right by construction).
    fn rearm(&mut self) {
        let slot = crate::limits::RECV_BUFFER;
        let data = self.data.as_mut_ptr();
        for (i, h) in self.hdrs.iter_mut().enumerate() {
            self.iovs[i] = libc::iovec {
                // SAFETY: i * slot is inside `data` (RECV_BATCH slots).
                iov_base: unsafe { data.add(i * slot) }.cast(),
                iov_len: slot,
            };
            h.msg_len = 0;
            h.msg_hdr.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_nl).cast();
            h.msg_hdr.msg_namelen = core::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut self.iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = self.cmsgs[i].as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = (CMSG_WORDS * 8) as _;
            h.msg_hdr.msg_flags = 0;
        }
    }
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

    /// Receives up to [`RECV_BATCH`] datagrams with one `recvmmsg(2)`,
    /// each with its sender's address and credentials (see [`Batch::get`]).
    /// Retries on EINTR. Never allocates.
    ///
    /// Kernel facts: a nonblocking `recvmmsg` returns what was queued, up
    /// to the batch, and stops at the first empty read (EAGAIN, not
    /// reported when something was received). An error after some
    /// datagrams (ENOBUFS here) is kept by the kernel and returned by the
    /// next call (`net/socket.c`, `do_recvmmsg`), so an overrun is never
    /// lost: the caller reads on until [`BatchRecv::WouldBlock`].
    pub fn recv_batch(&mut self, batch: &mut Batch) -> io::Result<BatchRecv> {
        batch.len = 0;
        loop {
            batch.rearm();
            // SAFETY: `hdrs` holds RECV_BATCH headers whose pointers lead to
            // buffers owned by `batch` and alive for the call; the kernel
            // writes only within the lengths given.
            let r = unsafe {
                libc::recvmmsg(
                    self.fd.as_raw_fd(),
                    batch.hdrs.as_mut_ptr(),
                    RECV_BATCH as _,
                    (libc::MSG_TRUNC | libc::MSG_DONTWAIT) as _,
                    core::ptr::null_mut(),
                )
            };
            if r >= 0 {
                batch.len = r as usize;
                return Ok(if r == 0 {
                    BatchRecv::WouldBlock
                } else {
                    BatchRecv::Received(r as usize)
                });
            }
            match Errno::last() {
                Errno::EINTR => continue,
                Errno::EAGAIN => return Ok(BatchRecv::WouldBlock),
                Errno::ENOBUFS => return Ok(BatchRecv::Overrun),
                e => return Err(e.into()),
            }
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
