//! The daily tools, like udevadm's: `info`, `test`, `trigger`, `settle`,
//! `wait`. Each is one module; what they share is here: naming a device
//! (a `/sys` path, a devpath or a `/dev` node or link), reading its
//! `uevent` file, and asking the running daemon through its control
//! socket ([`crate::control`], [`crate::sys::control`]).
//!
//! These are short-lived commands, not the event path: they allocate
//! freely. None of them waits without a limit on a daemon that is not
//! there: connecting fails at once when no daemon runs, and says whether
//! the socket file was stale.

pub mod info;
pub mod settle;
pub mod test;
pub mod trigger;
pub mod wait;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::app::AppError;
use crate::control::Reply;
use crate::identity::SysfsView;
use crate::sys::control::{self as ctl, ConnectError, ControlClient};
use crate::sys::sysfs::SysfsRoot;

/// The devpath (`/devices/...`, links resolved) that `device` names:
/// a `/sys/...` path (read under `root`), a devpath, or a `/dev` node or
/// link (its device number, looked up in `/sys/dev/{char,block}`).
pub fn resolve(device: &str, root: &Path) -> Result<String, AppError> {
    let view = SysfsRoot::new(root);
    let missing = |what: String| {
        AppError::Config(format!(
            "{device}: {what} (give a /sys path, a devpath such as /devices/virtual/mem/full, or a /dev node)"
        ))
    };
    let rel: String = if let Some(r) = device.strip_prefix("/sys").filter(|r| r.starts_with('/')) {
        r.to_string()
    } else if device.starts_with("/dev/") {
        let (kind, major, minor) =
            device_number(Path::new(device)).map_err(|e| missing(e.to_string()))?;
        format!("/dev/{kind}/{major}:{minor}")
    } else if device.starts_with('/') {
        device.to_string()
    } else {
        return Err(missing("not a path".into()));
    };
    let devpath = view
        .canonical(&rel)
        .ok_or_else(|| missing(format!("no such device under {}", root.display())))?;
    if view.kind(&format!("{devpath}/uevent")).is_none() {
        return Err(missing(format!(
            "{devpath} is not a device (no uevent file)"
        )));
    }
    Ok(devpath)
}

/// The device's `uevent` file as `KEY=VALUE` pairs, with `DEVPATH`,
/// `SUBSYSTEM` (from the `subsystem` link) and `DRIVER` first, as the
/// kernel's add event carries them.
pub fn properties(view: &SysfsRoot, devpath: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![("DEVPATH".to_string(), devpath.as_bytes().to_vec())];
    let mut buf = [0u8; 256];
    if let Some(n) = view.link_name(devpath, "subsystem", &mut buf) {
        out.push(("SUBSYSTEM".into(), buf[..n].to_vec()));
    }
    let mut file = vec![0u8; 8192];
    if let Some(n) = view.read_attr(devpath, "uevent", &mut file) {
        for line in file[..n].split(|&b| b == b'\n') {
            let Some(eq) = line.iter().position(|&b| b == b'=') else {
                continue;
            };
            let k = String::from_utf8_lossy(&line[..eq]).into_owned();
            if !out.iter().any(|(o, _)| *o == k) {
                out.push((k, line[eq + 1..].to_vec()));
            }
        }
    }
    out
}

/// The event an `ACTION` on this device would carry: the wire form,
/// `ACTION@DEVPATH\0ACTION=..\0DEVPATH=..\0` then the properties.
pub fn event_bytes(action: &str, devpath: &str, props: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut raw = Vec::new();
    for part in [action.as_bytes(), b"@", devpath.as_bytes(), b"\0ACTION="] {
        raw.extend_from_slice(part);
    }
    raw.extend_from_slice(action.as_bytes());
    raw.push(0);
    for (k, v) in props {
        if k == "ACTION" {
            continue;
        }
        raw.extend_from_slice(k.as_bytes());
        raw.push(b'=');
        raw.extend_from_slice(v);
        raw.push(0);
    }
    raw
}

/// Connects to the daemon; the error says why no daemon answers.
pub fn connect(path: &Path) -> Result<ControlClient, AppError> {
    ctl::connect(path).map_err(|e| match e {
        ConnectError::Denied(_) | ConnectError::Other(..) => AppError::System(e.to_string()),
        ConnectError::NotRunning(_) | ConnectError::Stale(_) => AppError::System(e.to_string()),
    })
}

/// Sends `req`; `Ok(None)` if no reply came within `timeout`.
pub fn ask(
    c: &ControlClient,
    path: &Path,
    req: &str,
    timeout: Option<Duration>,
) -> Result<Option<Option<Reply>>, AppError> {
    let bytes = c
        .request(req.as_bytes(), timeout)
        .map_err(|e| AppError::System(format!("{}: {e}", path.display())))?;
    match bytes {
        None => Ok(None),
        Some(b) => Reply::parse(&b)
            .map(Some)
            .map_err(|e| AppError::System(format!("{}: the daemon says: {e}", path.display()))),
    }
}

/// Waits until the daemon has read every event queued for it and has no
/// work left (see [`crate::control`]); at `timeout`, an error naming the
/// work still queued or running (from a `status` request), filtered by
/// `only` when given (the devpaths a trigger wrote to).
///
/// No daemon at the start: an error at once. A daemon that goes away
/// while we wait (a supervisor restarting it) is waited for until the
/// timeout, and the new one is asked again: it has the events the old one
/// had not handled (coldplug, or the kernel's queue for the new socket).
pub fn settle(
    path: &Path,
    timeout: Duration,
    only: Option<&[String]>,
) -> Result<Option<u64>, AppError> {
    let deadline = Instant::now() + timeout;
    let mut c = connect(path)?;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.request(b"settle", Some(left)) {
            Ok(Some(b)) => {
                return match Reply::parse(&b) {
                    Ok(Some(r)) => Ok(r.get("seqnum").and_then(|s| s.parse().ok())),
                    Ok(None) => Err(AppError::System("settle: unexpected reply".into())),
                    Err(e) => Err(AppError::System(format!(
                        "{}: the daemon says: {e}",
                        path.display()
                    ))),
                }
            }
            Ok(None) => return Err(AppError::Timeout(pending(path, timeout, only))),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                log::info!(
                    "{}: the daemon went away; waiting for it to come back",
                    path.display()
                );
                c = loop {
                    if Instant::now() >= deadline {
                        return Err(AppError::Timeout(format!(
                            "timed out after {} s: the daemon stopped while we waited and none answers on {} since",
                            timeout.as_secs_f64(),
                            path.display()
                        )));
                    }
                    match ctl::connect(path) {
                        Ok(c) => break c,
                        Err(ConnectError::Denied(_) | ConnectError::Other(..)) => {
                            return Err(connect(path).err().unwrap_or_else(|| {
                                AppError::System(format!("{}: cannot connect", path.display()))
                            }))
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                };
            }
            Err(e) => return Err(AppError::System(format!("{}: {e}", path.display()))),
        }
    }
}

/// The timeout message: what the daemon still has, asked on a new
/// connection (the first still waits for its settle).
fn pending(path: &Path, timeout: Duration, only: Option<&[String]>) -> String {
    let secs = timeout.as_secs_f64();
    let status = connect(path).and_then(|c| ask(&c, path, "status", Some(Duration::from_secs(2))));
    let Ok(Some(Some(r))) = status else {
        return format!("timed out after {secs} s; the daemon did not answer a status request");
    };
    let wanted = |label: &str| match only {
        None => true,
        Some(devs) => label
            .split_once(' ')
            .is_some_and(|(_, d)| devs.iter().any(|w| w == d)),
    };
    let mut jobs: Vec<String> = Vec::new();
    for key in ["running", "queued"] {
        for l in r.all(key).filter(|l| wanted(l)) {
            jobs.push(format!("{key}: {l}"));
        }
    }
    let seq = r.get("seqnum").unwrap_or("none");
    let kernel = crate::sys::read_usize("/sys/kernel/uevent_seqnum")
        .map_or("unknown".to_string(), |n| n.to_string());
    let mut msg = format!(
        "timed out after {secs} s: the daemon has handled events up to SEQNUM {seq} (the kernel's uevent_seqnum is {kernel}; it counts other network namespaces too)"
    );
    if r.get("recovery") == Some("busy") {
        msg.push_str("; a coldplug or resync pass is under way");
    }
    if jobs.is_empty() {
        msg.push_str("; no job of ours is queued or running (events still arriving?)");
    } else {
        msg.push_str(&format!(
            "; still pending ({}): {}",
            jobs.len(),
            jobs.join(", ")
        ));
    }
    if let Some(n) = r.get("cut") {
        msg.push_str(&format!(" (and {n} more not listed)"));
    }
    msg
}

/// `--control PATH` of the tools.
pub fn control_path(p: &Option<PathBuf>) -> PathBuf {
    p.clone()
        .unwrap_or_else(|| PathBuf::from(crate::control::DEFAULT_PATH))
}

/// The kind (`char` or `block`) and number of a device node (links
/// followed). The split of `st_rdev` is glibc's `major()`/`minor()`.
pub fn device_number(node: &Path) -> std::io::Result<(&'static str, u64, u64)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::metadata(node)?;
    let kind = if m.file_type().is_char_device() {
        "char"
    } else if m.file_type().is_block_device() {
        "block"
    } else {
        return Err(std::io::Error::other("not a device node"));
    };
    let d = m.rdev();
    let major = ((d >> 8) & 0xfff) | ((d >> 32) & !0xfff);
    let minor = (d & 0xff) | ((d >> 12) & !0xff);
    Ok((kind, major, minor))
}
