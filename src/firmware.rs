//! Firmware loading, the kernel's user-helper fallback
//! (`CONFIG_FW_LOADER_USER_HELPER`): `RUN{builtin}+="firmware"` on the
//! `add` of a `SUBSYSTEM=="firmware"` device whose event carries
//! `FIRMWARE=name`. Pure: this plans (which files, in which order) and
//! keeps the requests in flight; [`crate::sys::firmware`] does the copy in
//! a child.
//!
//! The protocol (kernel `Documentation/driver-api/firmware/fallback-mechanisms.rst`,
//! `drivers/base/firmware_loader/fallback.c`): write `1` to the device's
//! `loading`, write the file to its `data`, write `0` to `loading`; or
//! write `-1` to `loading` when there is no such file, so the driver's
//! request fails at once instead of at its timeout (60 s by default).
//!
//! Search order: `--firmware-dir` first (as the kernel's own
//! `firmware_class.path`), then `/lib/firmware/updates/$(uname -r)`,
//! `/lib/firmware/updates`, `/lib/firmware/$(uname -r)`, `/lib/firmware`:
//! the kernel's order for its direct loading.
//!
//! **No per-device ordering.** The firmware device is a child of the device
//! whose driver asked for it, and that device's own `add` handlers may be
//! waiting for the probe, which waits for the firmware (systemd#18259). So
//! the load starts when the event arrives, whatever jobs of related devices
//! wait or run; the event's other work, if any, still goes through the
//! handler engine's ordering.

use std::path::{Path, PathBuf};

/// Why a request cannot be planned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// The event has no `FIRMWARE=`.
    NoName,
    /// `FIRMWARE=` is empty, absolute, or has a `..` component or a NUL.
    BadName,
}

impl core::fmt::Display for PlanError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PlanError::NoName => write!(f, "the event has no FIRMWARE= (not a firmware request)"),
            PlanError::BadName => write!(
                f,
                "FIRMWARE= is empty, absolute, or has a '..' component: refused"
            ),
        }
    }
}

/// What to do for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The file name asked for (relative, e.g. `rtl_nic/rtl8168g-2.fw`).
    pub name: String,
    /// `<sysfs>/<devpath>/loading`.
    pub loading: PathBuf,
    /// `<sysfs>/<devpath>/data`.
    pub data: PathBuf,
    /// The files to try, in order.
    pub candidates: Vec<PathBuf>,
}

/// The directories searched, in order: `extra` (`--firmware-dir`) first,
/// then the kernel's four.
pub fn search_dirs(release: &str, extra: &[PathBuf]) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = extra.to_vec();
    v.push(format!("/lib/firmware/updates/{release}").into());
    v.push("/lib/firmware/updates".into());
    v.push(format!("/lib/firmware/{release}").into());
    v.push("/lib/firmware".into());
    v
}

/// Plans the request of the firmware device `devpath` for `name`.
pub fn plan(
    sysfs: &Path,
    devpath: &str,
    name: Option<&str>,
    dirs: &[PathBuf],
) -> Result<Plan, PlanError> {
    let name = name.ok_or(PlanError::NoName)?;
    if name.is_empty()
        || name.starts_with('/')
        || name.contains('\0')
        || name.split('/').any(|c| c == "..")
    {
        return Err(PlanError::BadName);
    }
    let dev = sysfs.join(devpath.trim_start_matches('/'));
    Ok(Plan {
        name: name.to_string(),
        loading: dev.join("loading"),
        data: dev.join("data"),
        candidates: dirs.iter().map(|d| d.join(name)).collect(),
    })
}

/// How the loader child ended (its exit code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The file was copied and `0` written to `loading`.
    Loaded,
    /// No candidate existed; `-1` was written to `loading`.
    NotFound,
    /// Something else failed (errno); `-1` written if `loading` could be.
    Failed(i32),
}

/// Exit code of a loader child that found no file (above every errno, so
/// an `ENOENT` from `loading` itself stays a failure).
pub const EXIT_NOT_FOUND: i32 = 200;

impl Outcome {
    /// From the loader child's exit code.
    pub fn from_exit(code: i32) -> Outcome {
        match code {
            0 => Outcome::Loaded,
            EXIT_NOT_FOUND => Outcome::NotFound,
            e => Outcome::Failed(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_extra_then_the_kernels_four() {
        let d = search_dirs("6.1.0", &[PathBuf::from("/opt/fw")]);
        let d: Vec<_> = d.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            d,
            [
                "/opt/fw",
                "/lib/firmware/updates/6.1.0",
                "/lib/firmware/updates",
                "/lib/firmware/6.1.0",
                "/lib/firmware"
            ]
        );
    }

    #[test]
    fn plan_names_the_sysfs_files_and_candidates() {
        let dirs = search_dirs("6.1.0", &[]);
        let p = plan(
            Path::new("/sys"),
            "/devices/pci0000:00/0000:00:1c.0/firmware/0000:00:1c.0",
            Some("rtl_nic/rtl8168g-2.fw"),
            &dirs,
        )
        .unwrap();
        assert_eq!(
            p.loading,
            Path::new("/sys/devices/pci0000:00/0000:00:1c.0/firmware/0000:00:1c.0/loading")
        );
        assert_eq!(p.data.file_name().unwrap(), "data");
        assert_eq!(
            p.candidates[3],
            Path::new("/lib/firmware/rtl_nic/rtl8168g-2.fw")
        );
    }

    #[test]
    fn names_that_leave_the_directory_are_refused() {
        let dirs = search_dirs("x", &[]);
        for bad in ["", "/etc/shadow", "../etc/shadow", "a/../../b", "a/.."] {
            assert_eq!(
                plan(Path::new("/sys"), "/d", Some(bad), &dirs),
                Err(PlanError::BadName),
                "{bad}"
            );
        }
        assert_eq!(
            plan(Path::new("/sys"), "/d", None, &dirs),
            Err(PlanError::NoName)
        );
        assert!(plan(Path::new("/sys"), "/d", Some("a..b/c.fw"), &dirs).is_ok());
    }
}
