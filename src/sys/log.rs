//! Where log records go: stderr, `/dev/kmsg` or a syslog socket, one write
//! per record, never blocking the loop.
//!
//! A daemon whose stderr is a pipe nobody reads (a supervisor that died, a
//! serial console at 9600 baud) must not stall on a log line: before each
//! write to stderr the descriptor is polled with a zero timeout, and a record
//! that would block is dropped and counted. The count is written (one line)
//! as soon as stderr takes writes again, and appears in the final stats
//! line as `log_dropped`.
//!
//! Early in boot only `/dev/kmsg` exists: records go there as
//! `<PRIORITY>hotplugd[PID]: level: message`. The kernel rate-limits writes
//! to it (`printk.devkmsg=ratelimit`, the default, allows a burst of 10 lines
//! per 5 s); boot with `printk.devkmsg=on` to see every line.
//!
//! `syslog` sends RFC 3164 datagrams (`<PRI>Mmm dd hh:mm:ss hotplugd[PID]:
//! message`, facility daemon) to `/dev/log` (or the socket named), the
//! format busybox syslogd, rsyslog and journald read; no libc `syslog()`,
//! no new dependency. If the socket is missing or refuses a record, the
//! record is counted as dropped and the socket is looked up again next time
//! (syslogd may start after us).

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// `--log-target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard error (the default).
    Stderr,
    /// The kernel log, `/dev/kmsg`.
    Kmsg,
    /// A syslog datagram socket (default `/dev/log`).
    Syslog(PathBuf),
}

impl LogTarget {
    /// Parses `stderr`, `kmsg`, `syslog` or `syslog:/path/to/socket`.
    pub fn parse(s: &str) -> Option<LogTarget> {
        match s {
            "stderr" => Some(LogTarget::Stderr),
            "kmsg" => Some(LogTarget::Kmsg),
            "syslog" => Some(LogTarget::Syslog(PathBuf::from("/dev/log"))),
            _ => s
                .strip_prefix("syslog:")
                .filter(|p| p.starts_with('/'))
                .map(|p| LogTarget::Syslog(PathBuf::from(p))),
        }
    }
}

thread_local! {
    // Single-threaded daemon: a thread-local Cell is the counter (no atomics).
    static DROPPED: Cell<u64> = const { Cell::new(0) };
}

/// Log records dropped so far (stderr full or closed, kmsg or syslog
/// refusing them).
pub fn dropped() -> u64 {
    DROPPED.with(|d| d.get())
}

fn count_drop() {
    DROPPED.with(|d| d.set(d.get() + 1));
}

/// Syslog severity of a level (RFC 3164 / `<N>` of /dev/kmsg).
pub fn severity(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// Facility `daemon` (3), shifted as RFC 3164 wants it.
pub const FACILITY_DAEMON: u8 = 3 << 3;

/// The `Mmm dd hh:mm:ss` timestamp of RFC 3164, in local time.
pub fn rfc3164_time(out: &mut impl Write) -> io::Result<()> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // SAFETY: time(NULL) only returns the time.
    let now = unsafe { nix::libc::time(core::ptr::null_mut()) };
    // SAFETY: an all-zero `tm` is a valid value to be overwritten.
    let mut tm: nix::libc::tm = unsafe { core::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r is the
    // reentrant variant and writes only into `tm`.
    if unsafe { nix::libc::localtime_r(&now, &mut tm) }.is_null() {
        return write!(out, "Jan  1 00:00:00");
    }
    let month = MONTHS.get(tm.tm_mon as usize).copied().unwrap_or("Jan");
    write!(
        out,
        "{month} {:>2} {:02}:{:02}:{:02}",
        tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec
    )
}

/// The writer behind the logger: each `write` call is one whole record
/// (env_logger formats a record into a buffer and writes it at once).
pub struct Sink {
    target: Out,
}

enum Out {
    Stderr,
    Kmsg(File),
    Syslog {
        path: PathBuf,
        socket: Option<UnixDatagram>,
    },
}

impl Sink {
    /// Opens the target. `/dev/kmsg` must open now (an error names it);
    /// a syslog socket may appear later.
    pub fn open(target: &LogTarget) -> io::Result<Sink> {
        let target = match target {
            LogTarget::Stderr => Out::Stderr,
            LogTarget::Kmsg => Out::Kmsg(OpenOptions::new().write(true).open("/dev/kmsg")?),
            LogTarget::Syslog(path) => Out::Syslog {
                socket: connect(path),
                path: path.clone(),
            },
        };
        Ok(Sink { target })
    }
}

fn connect(path: &std::path::Path) -> Option<UnixDatagram> {
    let s = UnixDatagram::unbound().ok()?;
    s.connect(path).ok()?;
    s.set_nonblocking(true).ok()?;
    Some(s)
}

/// Writes `buf` to stderr if that cannot block; false if it would (or
/// stderr is closed).
fn stderr_write(buf: &[u8]) -> bool {
    let err = io::stderr();
    let mut fds = [PollFd::new(err.as_fd(), PollFlags::POLLOUT)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(1) => {
            let ok = fds[0]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLOUT) && !r.contains(PollFlags::POLLERR));
            ok && err.lock().write_all(buf).is_ok()
        }
        _ => false,
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let sent = match &mut self.target {
            Out::Stderr => {
                let total = dropped();
                let noted = DROPPED_NOTED.with(|n| n.get());
                if total > noted {
                    let note = format!(
                        "hotplugd: warn: {} log records dropped ({total} in all): stderr was not being read\n",
                        total - noted
                    );
                    if stderr_write(note.as_bytes()) {
                        DROPPED_NOTED.with(|n| n.set(total));
                    }
                }
                stderr_write(buf)
            }
            Out::Kmsg(f) => f.write(buf).is_ok(),
            Out::Syslog { path, socket } => {
                let record = buf.strip_suffix(b"\n").unwrap_or(buf);
                let mut ok = socket.as_ref().is_some_and(|s| s.send(record).is_ok());
                if !ok {
                    // syslogd restarted or started after us: look again once
                    *socket = connect(path);
                    ok = socket.as_ref().is_some_and(|s| s.send(record).is_ok());
                }
                ok
            }
        };
        if !sent {
            count_drop();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

thread_local! {
    static DROPPED_NOTED: Cell<u64> = const { Cell::new(0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(LogTarget::parse("stderr"), Some(LogTarget::Stderr));
        assert_eq!(LogTarget::parse("kmsg"), Some(LogTarget::Kmsg));
        assert_eq!(
            LogTarget::parse("syslog"),
            Some(LogTarget::Syslog("/dev/log".into()))
        );
        assert_eq!(
            LogTarget::parse("syslog:/run/log"),
            Some(LogTarget::Syslog("/run/log".into()))
        );
        assert_eq!(LogTarget::parse("syslog:relative"), None);
        assert_eq!(LogTarget::parse("file"), None);
    }

    #[test]
    fn timestamp_has_the_rfc3164_shape() {
        let mut v = Vec::new();
        rfc3164_time(&mut v).unwrap();
        let s = String::from_utf8(v).unwrap();
        assert_eq!(s.len(), 15, "{s:?}");
        assert_eq!(&s[3..4], " ");
        assert_eq!(&s[9..10], ":");
    }
}
