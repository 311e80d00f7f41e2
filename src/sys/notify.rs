//! Telling init we are ready: `--ready-fd N` (s6 and mdevd: write a newline
//! to descriptor N, then close it), `$NOTIFY_SOCKET` (systemd's protocol,
//! spoken without libsystemd: `READY=1`, `RELOADING=1` + `MONOTONIC_USEC`,
//! `STOPPING=1` datagrams) and `--pidfile` (for sysvinit-style scripts:
//! written when ready, removed on exit).
//!
//! Every notification is best effort after start-up: a supervisor that went
//! away must not stop the daemon. Failures are logged once each.

use std::fs;
use std::io::{self, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;

use log::{debug, warn};
use nix::fcntl::{fcntl, FcntlArg, FdFlag};

/// What to tell, and where.
#[derive(Default)]
pub struct Readiness {
    ready_fd: Option<OwnedFd>,
    notify: Option<(UnixDatagram, SocketAddr, String)>,
    pidfile: Option<PathBuf>,
    pid_tmp: Option<PathBuf>,
    pid_written: bool,
}

fn tmp_name(p: &std::path::Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(p.file_name().unwrap_or_default());
    name.push(".hotplugd-tmp");
    p.with_file_name(name)
}

/// Takes `--ready-fd` descriptor `fd`: checks it is open and marks it
/// close-on-exec. Called first thing in `main`, before anything else is
/// opened, so a descriptor number the supervisor forgot to open can never be
/// taken by one of ours (the signalfd would get 3) and written to by mistake.
pub fn claim_ready_fd(fd: RawFd) -> Result<OwnedFd, String> {
    let flags = fcntl(fd_ref(fd), FcntlArg::F_GETFD).map_err(|e| {
        format!(
            "--ready-fd {fd}: descriptor {fd} is not open ({}); the supervisor must \
             open it for us (s6: notification-fd; or `hotplugd run --ready-fd 3 3>FILE`)",
            e.desc()
        )
    })?;
    let mut flags = FdFlag::from_bits_truncate(flags);
    flags.insert(FdFlag::FD_CLOEXEC);
    let _ = fcntl(fd_ref(fd), FcntlArg::F_SETFD(flags));
    // SAFETY: the descriptor is open (F_GETFD succeeded), nothing in this
    // process has opened anything yet, and it was handed to us for this
    // purpose on the command line: nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Readiness {
    /// Takes descriptor `ready_fd` (checked open, then marked close-on-exec
    /// so that handlers never inherit it), reads and removes `$NOTIFY_SOCKET`
    /// from our environment, and remembers the pidfile path.
    pub fn new(ready_fd: Option<OwnedFd>, pidfile: Option<PathBuf>) -> Result<Readiness, String> {
        let notify = match std::env::var_os("NOTIFY_SOCKET") {
            None => None,
            Some(v) => {
                let s = v.to_string_lossy().into_owned();
                let addr = if let Some(name) = s.strip_prefix('@') {
                    SocketAddr::from_abstract_name(name.as_bytes())
                } else if s.starts_with('/') {
                    SocketAddr::from_pathname(&s)
                } else {
                    return Err(format!(
                        "NOTIFY_SOCKET={s}: expected an absolute path or @abstract name"
                    ));
                }
                .map_err(|e| format!("NOTIFY_SOCKET={s}: {e}"))?;
                let sock = UnixDatagram::unbound()
                    .map_err(|e| format!("NOTIFY_SOCKET={s}: cannot create a socket: {e}"))?;
                // Handlers must not see it (they get a clean environment
                // anyway); children of ours must not notify for us.
                std::env::remove_var("NOTIFY_SOCKET");
                Some((sock, addr, s))
            }
        };
        Ok(Readiness {
            ready_fd,
            notify,
            pidfile,
            pid_tmp: None,
            pid_written: false,
        })
    }

    fn send(&self, msg: &str) {
        if let Some((sock, addr, name)) = &self.notify {
            match sock.send_to_addr(msg.as_bytes(), addr) {
                Ok(_) => debug!("NOTIFY_SOCKET {name}: sent {}", msg.replace('\n', " ")),
                Err(e) => warn!("NOTIFY_SOCKET {name}: could not send {msg:?}: {e}"),
            }
        }
    }

    /// Before the loop: check that the pidfile can be written, by writing
    /// it under a temporary name next to it (renamed when ready). An error
    /// names the option.
    pub fn prepare(&mut self) -> io::Result<()> {
        if let Some(p) = &self.pidfile {
            let tmp = tmp_name(p);
            let mut f = fs::File::create(&tmp)
                .map_err(|e| io::Error::new(e.kind(), format!("--pidfile {}: {e}", p.display())))?;
            writeln!(f, "{}", std::process::id())?;
            self.pid_tmp = Some(tmp);
        }
        Ok(())
    }

    /// Socket bound, rules loaded, coldplug done: put the pidfile in place
    /// (an atomic rename), then tell the supervisors.
    pub fn ready(&mut self) {
        if let (Some(p), Some(tmp)) = (&self.pidfile, self.pid_tmp.take()) {
            match fs::rename(&tmp, p) {
                Ok(()) => self.pid_written = true,
                Err(e) => warn!("--pidfile {}: {e}", p.display()),
            }
        }
        if let Some(fd) = self.ready_fd.take() {
            let mut f = fs::File::from(fd);
            match f.write_all(b"\n") {
                Ok(()) => debug!("readiness written to --ready-fd"),
                Err(e) => warn!("--ready-fd: could not write the readiness newline: {e}"),
            }
            // closed here, as the protocol wants
        }
        self.send(&format!("READY=1\nMAINPID={}", std::process::id()));
    }

    /// SIGHUP received: the reload starts.
    pub fn reloading(&self) {
        let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
            .unwrap_or(0);
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
    }

    /// The reload finished (whether the new rules loaded or the old stayed).
    pub fn reloaded(&self) {
        self.send("READY=1");
    }

    /// Shutting down.
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }
}

impl Drop for Readiness {
    fn drop(&mut self) {
        if let Some(tmp) = &self.pid_tmp {
            let _ = fs::remove_file(tmp);
        }
        if let (true, Some(p)) = (self.pid_written, &self.pidfile) {
            if let Err(e) = fs::remove_file(p) {
                warn!("--pidfile {}: could not remove it: {e}", p.display());
            }
        }
    }
}

fn fd_ref(fd: RawFd) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: used only for fcntl F_GETFD/F_SETFD, which fail cleanly with
    // EBADF on a descriptor that is not open.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}
