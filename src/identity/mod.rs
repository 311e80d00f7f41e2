//! Device identity the way udev 252 computes it: the `usb_id` and
//! `path_id` builtins (`IMPORT{builtin}="usb_id"`), which turn sysfs into
//! `ID_VENDOR`, `ID_SERIAL`, `ID_PATH`, ... and so into udev's persistent
//! names (`/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A12345-if00-port0`).
//!
//! Pure: sysfs is reached only through [`SysfsView`] (implemented over a
//! directory by `sys::sysfs_view`, and by fixture trees in tests), so the
//! same code runs on a board's `/sys` and on the captured trees under
//! `tests/corpus/sysfs`, where `tests/identity.rs` compares it, key for
//! key, with Debian's udev 252.
//!
//! What is exact, and where it comes from (systemd v252, read, not
//! copied): `src/udev/udev-builtin-usb_id.c`, `udev-builtin-path_id.c`,
//! `udev-builtin-input_id.c`,
//! `src/shared/udev-util.c`, `src/shared/device-nodes.c`,
//! `src/basic/utf8.c`, `src/libsystemd/sd-device/sd-device.c` (how a
//! parent is found, what an attribute's value is). See [`usb_id`](mod@usb_id) and
//! [`path_id`](mod@path_id) for the properties and the few cases that differ.
//!
//! [`input_id`](mod@input_id) classifies input devices (`ID_INPUT_KEYBOARD`,
//! `ID_INPUT_MOUSE`, ...) from their capability bitmaps, for the `-kbd` /
//! `-mouse` suffixes of `/dev/input/by-id` names.
//!
//! Memory: each call builds its result in a [`Properties`] (a `Vec`
//! allocated per call, at most [`MAX_PROPERTIES`] entries) and walks
//! parents with a `String` per step. These run once per event, for rules
//! that ask, never on the receive path.

pub mod input_id;
pub mod path_id;
pub mod text;
pub mod usb_id;

use core::fmt;

pub use input_id::input_id;
pub use path_id::path_id;
pub use usb_id::usb_id;

use crate::limits::{MAX_ATTR_LEN, MAX_PARENT_DEPTH};

/// What the builtins read from sysfs. Paths are relative to the sysfs
/// root and start with `/` (`/devices/pci0000:00/...`, `/class/ata_port/ata1`).
pub trait SysfsView {
    /// Reads the regular file `name` of the directory `path` into `buf`
    /// (at most `buf.len()` bytes); the count read. `None` if it is
    /// missing, a directory, a symbolic link or unreadable (what sd-device
    /// refuses as an attribute).
    fn read_attr(&self, path: &str, name: &str, buf: &mut [u8]) -> Option<usize>;

    /// The last component of the target of the symbolic link `name` in
    /// `path` (`subsystem` → `usb`, `driver` → `ftdi_sio`), into `buf`;
    /// the length. `None` if there is no such link.
    fn link_name(&self, path: &str, name: &str, buf: &mut [u8]) -> Option<usize>;

    /// What `path` is (not following a final link), or `None` if absent.
    fn kind(&self, path: &str) -> Option<EntryKind>;

    /// `path` with every symbolic link resolved, relative to the root
    /// (`/class/tty/ttyUSB0` → `/devices/.../tty/ttyUSB0`); `None` if it
    /// does not exist or leads outside the root.
    fn canonical(&self, path: &str) -> Option<String>;

    /// Calls `f` with the name and kind of each entry of the directory
    /// `path` (not `.` and `..`), in directory order. Nothing if it
    /// cannot be read.
    fn for_each_entry(&self, path: &str, f: &mut dyn FnMut(&str, EntryKind));
}

/// The kind of a directory entry (`d_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A symbolic link.
    Link,
    /// Anything else (regular file, ...).
    File,
}

/// Most properties one builtin sets (`usb_id`: 25).
pub const MAX_PROPERTIES: usize = 32;

/// The properties a builtin computed, in the order udev prints them
/// (`udevadm test-builtin`). Values are bytes: most are ASCII, `_ENC`
/// values may hold UTF-8, and IDs copied from sysfs are passed as they are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Properties {
    items: Vec<(&'static str, Vec<u8>)>,
}

impl Properties {
    /// No properties.
    pub fn new() -> Properties {
        Properties { items: Vec::new() }
    }

    /// Appends `key=value`. More than [`MAX_PROPERTIES`] cannot happen
    /// with the builtins here; a further one is dropped.
    pub fn push(&mut self, key: &'static str, value: &[u8]) {
        if self.items.len() < MAX_PROPERTIES {
            self.items.push((key, value.to_vec()));
        }
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        self.items
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// The properties in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &[u8])> {
        self.items.iter().map(|(k, v)| (*k, v.as_slice()))
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Why a builtin set nothing (udev's builtin fails the same way, and its
/// `IMPORT{builtin}` is then false).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentityError {
    /// The device is neither a USB device nor below a USB interface.
    NotUsb,
    /// A required attribute is missing (`idVendor`, `bInterfaceClass`, ...).
    MissingAttr(&'static str),
    /// A required attribute does not parse (`bInterfaceClass` not hex).
    BadAttr(&'static str),
    /// No persistent path: no parent path_id knows, or a block device on
    /// an unknown transport.
    NoPath,
    /// A transport path_id needs but cannot resolve (nvme-subsystem
    /// without its controller).
    Unresolved,
    /// The device path is not a device directory.
    NoDevice,
    /// The builtin's name is not one of [`BUILTINS`].
    UnknownBuiltin,
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::NotUsb => f.write_str("not a usb device or interface"),
            IdentityError::MissingAttr(a) => write!(f, "no {a} attribute"),
            IdentityError::BadAttr(a) => write!(f, "cannot parse the {a} attribute"),
            IdentityError::NoPath => f.write_str("no persistent path for this device"),
            IdentityError::Unresolved => f.write_str("cannot resolve the device's transport"),
            IdentityError::NoDevice => f.write_str("no such device in sysfs"),
            IdentityError::UnknownBuiltin => {
                f.write_str("unknown builtin (usb_id, path_id, input_id)")
            }
        }
    }
}

/// The builtins this module provides, by their udev names.
pub const BUILTINS: [&str; 3] = ["usb_id", "path_id", "input_id"];

/// Runs the builtin `name` (`usb_id`, `path_id` or `input_id`) on the
/// device at `devpath`. `id_bus_set`: the event already has `ID_BUS`
/// (udev's usb_id then sets only the `ID_USB_*` copies); the others
/// ignore it.
pub fn run_builtin<V: SysfsView + ?Sized>(
    name: &str,
    view: &V,
    devpath: &str,
    id_bus_set: bool,
) -> Result<Properties, IdentityError> {
    match name {
        "usb_id" => usb_id(view, devpath, id_bus_set),
        "path_id" => path_id(view, devpath),
        "input_id" => input_id(view, devpath),
        _ => Err(IdentityError::UnknownBuiltin),
    }
}

/// One device, as sd-device sees it: its devpath and what is read from it.
pub(crate) struct Dev<'v, V: SysfsView + ?Sized> {
    pub view: &'v V,
    pub devpath: String,
}

impl<V: SysfsView + ?Sized> Clone for Dev<'_, V> {
    fn clone(&self) -> Self {
        Dev {
            view: self.view,
            devpath: self.devpath.clone(),
        }
    }
}

impl<'v, V: SysfsView + ?Sized> Dev<'v, V> {
    /// The device at `devpath`, if it is one: under `/devices` a
    /// directory with a `uevent` file, elsewhere any directory.
    pub fn new(view: &'v V, devpath: &str) -> Option<Dev<'v, V>> {
        let ok = if devpath == "/devices" || devpath.starts_with("/devices/") {
            view.kind(&join(devpath, "uevent")).is_some()
        } else {
            view.kind(devpath) == Some(EntryKind::Dir)
        };
        (ok && devpath.len() > 1).then(|| Dev {
            view,
            devpath: devpath.to_string(),
        })
    }

    /// The last component, with `!` read as `/` (sd-device's sysname).
    pub fn sysname(&self) -> String {
        let base = self.devpath.rsplit('/').next().unwrap_or("");
        base.replace('!', "/")
    }

    /// The trailing digits of the sysname, unless it is all digits.
    pub fn sysnum(&self) -> Option<String> {
        let name = self.sysname();
        let digits = name.bytes().rev().take_while(u8::is_ascii_digit).count();
        (digits > 0 && digits < name.len()).then(|| name[name.len() - digits..].to_string())
    }

    /// The `subsystem` link's name.
    pub fn subsystem(&self) -> Option<String> {
        self.link("subsystem")
    }

    fn link(&self, name: &str) -> Option<String> {
        let mut buf = [0u8; 256];
        let n = self.view.link_name(&self.devpath, name, &mut buf)?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// `DEVTYPE` from the `uevent` file.
    pub fn devtype(&self) -> Option<String> {
        let v = self.attr_raw("uevent")?;
        v.split(|&b| b == b'\n')
            .find_map(|l| l.strip_prefix(b"DEVTYPE="))
            .map(|t| String::from_utf8_lossy(t).into_owned())
    }

    fn attr_raw(&self, name: &str) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; MAX_ATTR_LEN];
        let n = self.view.read_attr(&self.devpath, name, &mut buf)?;
        buf.truncate(n);
        Some(buf)
    }

    /// An attribute's value as `sd_device_get_sysattr_value()` gives it:
    /// `driver`, `subsystem` and `module` are link names; other files
    /// lose trailing newlines and end at a NUL.
    pub fn attr(&self, name: &str) -> Option<Vec<u8>> {
        if matches!(name, "driver" | "subsystem" | "module")
            && self.view.kind(&join(&self.devpath, name)) == Some(EntryKind::Link)
        {
            return self.link(name).map(String::into_bytes);
        }
        let raw = self.attr_raw(name)?;
        Some(text::sysattr_value(&raw).to_vec())
    }

    /// The nearest ancestor directory that is a device
    /// (`sd_device_get_parent`).
    pub fn parent(&self) -> Option<Dev<'v, V>> {
        let mut p = self.devpath.as_str();
        for _ in 0..MAX_PATH_COMPONENTS {
            p = &p[..p.rfind('/')?];
            if p.is_empty() {
                return None;
            }
            if let Some(d) = Dev::new(self.view, p) {
                return Some(d);
            }
        }
        None
    }

    /// The nearest ancestor with this subsystem (and devtype, if given):
    /// `sd_device_get_parent_with_subsystem_devtype`.
    pub fn parent_with(&self, subsystem: &str, devtype: Option<&str>) -> Option<Dev<'v, V>> {
        let mut d = self.parent()?;
        for _ in 0..MAX_PARENT_DEPTH * 4 {
            if d.subsystem().as_deref() == Some(subsystem)
                && (devtype.is_none() || d.devtype().as_deref() == devtype)
            {
                return Some(d);
            }
            d = d.parent()?;
        }
        None
    }

    /// `sd_device_new_from_subsystem_sysname`: `/bus/S/devices/N`, then
    /// `/class/S/N`, then `/firmware/S/N`, resolved.
    pub fn from_subsystem_sysname(
        view: &'v V,
        subsystem: &str,
        sysname: &str,
    ) -> Option<Dev<'v, V>> {
        let name = sysname.replace('/', "!");
        if subsystem.contains('/') || name.is_empty() || name == "." || name == ".." {
            return None;
        }
        for p in [
            format!("/bus/{subsystem}/devices/{name}"),
            format!("/class/{subsystem}/{name}"),
            format!("/firmware/{subsystem}/{name}"),
        ] {
            if let Some(c) = view.canonical(&p) {
                if let Some(d) = Dev::new(view, &c) {
                    return Some(d);
                }
            }
        }
        None
    }
}

/// A bound on parent walks: a devpath has at most this many components
/// (`limits::MAX_PATH` / 2, as each takes a `/` and a byte at least).
const MAX_PATH_COMPONENTS: usize = crate::limits::MAX_PATH / 2;

/// `dir/name`: how the builtins name a file of a device.
pub fn join_path(dir: &str, name: &str) -> String {
    join(dir, name)
}

/// `dir/name`.
pub(crate) fn join(dir: &str, name: &str) -> String {
    let mut s = String::with_capacity(dir.len() + 1 + name.len());
    s.push_str(dir);
    s.push('/');
    s.push_str(name);
    s
}

/// A [`SysfsView`] over an in-memory tree, for unit tests.
#[cfg(test)]
pub(crate) mod fake {
    use super::{EntryKind, SysfsView};
    use std::collections::BTreeMap;

    /// Files (path → bytes) and links (path → canonical target path).
    #[derive(Default)]
    pub struct FakeSysfs {
        pub files: BTreeMap<String, Vec<u8>>,
        pub links: BTreeMap<String, String>,
    }

    impl FakeSysfs {
        pub fn file(&mut self, path: &str, v: &[u8]) -> &mut Self {
            self.files.insert(path.to_string(), v.to_vec());
            self
        }
        pub fn link(&mut self, path: &str, target: &str) -> &mut Self {
            self.links.insert(path.to_string(), target.to_string());
            self
        }
        fn is_dir(&self, path: &str) -> bool {
            let pre = format!("{path}/");
            self.files
                .keys()
                .chain(self.links.keys())
                .any(|k| k.starts_with(&pre))
        }
    }

    impl SysfsView for FakeSysfs {
        fn read_attr(&self, path: &str, name: &str, buf: &mut [u8]) -> Option<usize> {
            let v = self.files.get(&format!("{path}/{name}"))?;
            let n = v.len().min(buf.len());
            buf[..n].copy_from_slice(&v[..n]);
            Some(n)
        }
        fn link_name(&self, path: &str, name: &str, buf: &mut [u8]) -> Option<usize> {
            let t = self.links.get(&format!("{path}/{name}"))?;
            let b = t.rsplit('/').next()?.as_bytes();
            buf[..b.len()].copy_from_slice(b);
            Some(b.len())
        }
        fn kind(&self, path: &str) -> Option<EntryKind> {
            if self.links.contains_key(path) {
                Some(EntryKind::Link)
            } else if self.files.contains_key(path) {
                Some(EntryKind::File)
            } else if self.is_dir(path) {
                Some(EntryKind::Dir)
            } else {
                None
            }
        }
        fn canonical(&self, path: &str) -> Option<String> {
            if let Some(t) = self.links.get(path) {
                return Some(t.clone());
            }
            self.kind(path).map(|_| path.to_string())
        }
        fn for_each_entry(&self, path: &str, f: &mut dyn FnMut(&str, EntryKind)) {
            let pre = format!("{path}/");
            let mut seen = std::collections::BTreeSet::new();
            for k in self.files.keys().chain(self.links.keys()) {
                if let Some(rest) = k.strip_prefix(&pre) {
                    let name = rest.split('/').next().unwrap_or(rest);
                    if seen.insert(name.to_string()) {
                        let kind = self
                            .kind(&format!("{pre}{name}"))
                            .unwrap_or(EntryKind::File);
                        f(name, kind);
                    }
                }
            }
        }
    }
}
