//! sysfs access for matching: attribute reads and link names with paths
//! built in stack buffers, so matching never allocates. The root is `/sys`
//! or a fixture tree (`--sysfs-root`).
//!
//! One event's reads can be remembered ([`SysfsRoot::begin_event`]):
//! `ATTRS{idVendor}=="0403"` in 100 rules walks the same parents and
//! opens the same files 100 times; with the cache each (device, name) is
//! read once per event. The cache is fixed memory allocated with the
//! reader ([`ReadCache`]), emptied by `begin_event`, and holds misses too
//! (an ancestor without `idVendor` is asked again by every rule).
//!
//! A USB device's `idVendor` and `idProduct` do not change from its add to
//! its remove, and most directories never have them: those reads are also
//! remembered across events ([`IdCache`]), once the caller reports every
//! add, remove and move ([`SysfsRoot::device_event`]): an entry is forgotten
//! at an add, remove or move of its device or of one above it, and all are
//! when events were lost ([`SysfsRoot::forget_devices`]).

use std::cell::RefCell;
use std::ffi::CStr;
use std::os::fd::AsFd;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

use crate::limits::{
    ID_CACHE_DEVPATH, ID_CACHE_ENTRIES, MAX_PATH, READ_CACHE_BYTES, READ_CACHE_ENTRIES,
    READ_CACHE_MAX_VALUE,
};
use crate::rules::Sysfs;

/// sysfs under a root directory.
pub struct SysfsRoot {
    root: String,
    cache: RefCell<Box<ReadCache>>,
    ids: RefCell<Box<IdCache>>,
}

impl Clone for SysfsRoot {
    /// The same root with an empty, inactive cache.
    fn clone(&self) -> SysfsRoot {
        SysfsRoot::new(Path::new(&self.root))
    }
}

impl core::fmt::Debug for SysfsRoot {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SysfsRoot")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl SysfsRoot {
    /// sysfs at `root` (trailing slashes are dropped).
    pub fn new(root: &Path) -> SysfsRoot {
        let mut root = root.to_string_lossy().into_owned();
        while root.len() > 1 && root.ends_with('/') {
            root.pop();
        }
        SysfsRoot {
            root,
            cache: RefCell::new(Box::default()),
            ids: RefCell::new(Box::default()),
        }
    }

    /// A kernel (or synthetic) event is about to be handled: an `add`,
    /// `remove` or `move` forgets the remembered IDs of its device and of
    /// everything below it (and below `DEVPATH_OLD`). The first call turns
    /// the remembering of IDs across events on: a caller that calls it
    /// must call it for every event, in order.
    pub fn device_event(&self, action: &str, devpath: &str, devpath_old: Option<&str>) {
        let mut ids = self.ids.borrow_mut();
        ids.active = true;
        if matches!(action, "add" | "remove" | "move") {
            ids.forget_under(devpath);
            if let Some(old) = devpath_old {
                ids.forget_under(old);
            }
        }
    }

    /// Events were lost (an overrun): any device may have been replaced
    /// unseen, so every remembered ID is forgotten.
    pub fn forget_devices(&self) {
        self.ids.borrow_mut().clear();
    }

    /// What the ID cache did since the reader was made.
    pub fn id_cache_stats(&self) -> CacheStats {
        self.ids.borrow().stats
    }

    /// Starts a new event: forgets every read remembered so far and
    /// remembers this event's reads until the next call. A caller that
    /// calls it must call it before every event (sysfs changes between
    /// events: a `bind` adds a `driver` link). Without it nothing is
    /// remembered and every read goes to sysfs.
    pub fn begin_event(&self) {
        self.cache.borrow_mut().begin();
    }

    /// What the cache did since the reader was made.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.borrow().stats
    }

    /// The root, as given.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// `root + devpath + "/" + name` as a NUL-terminated path in `buf`.
    /// `None` if it does not fit or contains NUL.
    fn path<'b>(&self, devpath: &str, name: &str, buf: &'b mut [u8; MAX_PATH]) -> Option<&'b CStr> {
        let parts: [&[u8]; 4] = [
            self.root.as_bytes(),
            devpath.as_bytes(),
            b"/",
            name.as_bytes(),
        ];
        let mut n = 0;
        for p in parts {
            if p.contains(&0) || n + p.len() >= buf.len() {
                return None;
            }
            buf[n..n + p.len()].copy_from_slice(p);
            n += p.len();
        }
        buf[n] = 0;
        CStr::from_bytes_with_nul(&buf[..=n]).ok()
    }

    /// Starts a child that writes `value` to attribute `name` of the
    /// device at `devpath` (for `ATTR{file}="value"`), in one `write`, as
    /// sysfs expects (see [`crate::sys::spawn::spawn_attr_write`]). Its pid.
    pub fn spawn_write_attr(
        &self,
        devpath: &str,
        name: &str,
        value: &[u8],
    ) -> std::io::Result<i32> {
        let mut pbuf = [0u8; MAX_PATH];
        let path = self
            .path(devpath, name, &mut pbuf)
            .ok_or(std::io::Error::from_raw_os_error(nix::libc::ENAMETOOLONG))?;
        crate::sys::spawn::spawn_attr_write(path, value)
    }
}

impl Sysfs for SysfsRoot {
    fn attr<'b>(&self, devpath: &str, name: &str, buf: &'b mut [u8]) -> Option<&'b [u8]> {
        let id = IdCache::attr_index(name);
        if let Some(k) = id {
            if let Lookup::Hit(n) = self.ids.borrow_mut().get(devpath, k, buf) {
                return n.map(|n| &buf[..n]);
            }
        }
        let mut cache = self.cache.borrow_mut();
        let h = key_hash(devpath, name);
        match cache.get(Kind::Attr, h, devpath, name, buf) {
            Lookup::Hit(n) => return n.map(|n| &buf[..n]),
            Lookup::Miss => {}
        }
        let n = self.read_attr(devpath, name, buf);
        // a read that filled the buffer may have been cut: not remembered
        if n.is_none_or(|n| n < buf.len()) {
            cache.put(Kind::Attr, h, devpath, name, n.map(|n| &buf[..n]));
            if let Some(k) = id {
                self.ids.borrow_mut().put(devpath, k, n.map(|n| &buf[..n]));
            }
        }
        n.map(|n| &buf[..n])
    }

    fn link<'b>(&self, devpath: &str, name: &str, buf: &'b mut [u8]) -> Option<&'b [u8]> {
        let mut cache = self.cache.borrow_mut();
        let h = key_hash(devpath, name);
        match cache.get(Kind::Link, h, devpath, name, buf) {
            Lookup::Hit(n) => return n.map(|n| &buf[..n]),
            Lookup::Miss => {}
        }
        let base = self.read_link_base(devpath, name, buf);
        cache.put(
            Kind::Link,
            h,
            devpath,
            name,
            base.map(|(at, n)| &buf[at..at + n]),
        );
        let (at, n) = base?;
        buf.copy_within(at..at + n, 0);
        Some(&buf[..n])
    }

    fn builtin(
        &self,
        name: &str,
        devpath: &str,
        id_bus_set: bool,
    ) -> Option<crate::identity::Properties> {
        match crate::identity::run_builtin(name, self, devpath, id_bus_set) {
            Ok(p) => Some(p),
            Err(e) => {
                log::debug!("IMPORT{{builtin}}=\"{name}\" {devpath}: {e}; the rule does not match");
                None
            }
        }
    }
}

impl SysfsRoot {
    /// Reads attribute `name` of `devpath` into `buf`; the length.
    fn read_attr(&self, devpath: &str, name: &str, buf: &mut [u8]) -> Option<usize> {
        let mut pbuf = [0u8; MAX_PATH];
        let path = self.path(devpath, name, &mut pbuf)?;
        // O_NONBLOCK: never hang on a FIFO planted in a fixture tree
        let fd = open(
            path,
            OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::empty(),
        )
        .ok()?;
        let mut n = 0;
        while n < buf.len() {
            match nix::unistd::read(fd.as_fd(), &mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(Errno::EINTR) => continue,
                Err(_) => return None,
            }
        }
        Some(n)
    }

    /// Reads link `name` of `devpath` into `buf`; where its last
    /// component starts and its length.
    fn read_link_base(&self, devpath: &str, name: &str, buf: &mut [u8]) -> Option<(usize, usize)> {
        let mut pbuf = [0u8; MAX_PATH];
        let path = self.path(devpath, name, &mut pbuf)?;
        let n = readlink(path, buf)?;
        let at = buf[..n]
            .iter()
            .rposition(|&b| b == b'/')
            .map_or(0, |i| i + 1);
        Some((at, n - at))
    }
}

/// The attributes [`IdCache`] remembers.
const ID_ATTRS: [&str; 2] = ["idVendor", "idProduct"];

/// Longest ID value remembered (`"0403\n"` is 5 bytes).
const ID_VALUE: usize = 15;

/// One remembered ID read.
#[derive(Clone, Copy)]
struct IdEntry {
    devpath: [u8; ID_CACHE_DEVPATH],
    devpath_len: u8,
    /// Index in [`ID_ATTRS`].
    attr: u8,
    value: [u8; ID_VALUE],
    /// [`ID_ABSENT`]: the device has no such attribute.
    value_len: u8,
}

const ID_ABSENT: u8 = u8::MAX;

impl IdEntry {
    fn devpath(&self) -> &[u8] {
        &self.devpath[..usize::from(self.devpath_len)]
    }
}

/// `idVendor`/`idProduct` reads remembered across events, absent ones too,
/// in [`ID_CACHE_ENTRIES`] fixed entries (the oldest is replaced when all
/// are taken). Pure: [`SysfsRoot`] tells it what was read and which
/// devices came and went. Inactive (remembers nothing) until the first
/// [`SysfsRoot::device_event`].
pub struct IdCache {
    entries: [IdEntry; ID_CACHE_ENTRIES],
    len: usize,
    /// The entry replaced next when all are taken.
    next: usize,
    active: bool,
    stats: CacheStats,
}

impl Default for IdCache {
    fn default() -> IdCache {
        IdCache {
            entries: [IdEntry {
                devpath: [0; ID_CACHE_DEVPATH],
                devpath_len: 0,
                attr: 0,
                value: [0; ID_VALUE],
                value_len: 0,
            }; ID_CACHE_ENTRIES],
            len: 0,
            next: 0,
            active: false,
            stats: CacheStats::default(),
        }
    }
}

impl IdCache {
    fn attr_index(name: &str) -> Option<u8> {
        ID_ATTRS.iter().position(|a| *a == name).map(|k| k as u8)
    }

    fn find(&self, devpath: &str, attr: u8) -> Option<usize> {
        self.entries[..self.len]
            .iter()
            .position(|e| e.attr == attr && e.devpath() == devpath.as_bytes())
    }

    /// A remembered read, copied into `buf`.
    fn get(&mut self, devpath: &str, attr: u8, buf: &mut [u8]) -> Lookup {
        if !self.active {
            return Lookup::Miss;
        }
        let Some(i) = self.find(devpath, attr) else {
            self.stats.misses += 1;
            return Lookup::Miss;
        };
        let e = &self.entries[i];
        if e.value_len == ID_ABSENT {
            self.stats.hits += 1;
            return Lookup::Hit(None);
        }
        let n = usize::from(e.value_len);
        if n > buf.len() {
            return Lookup::Miss;
        }
        buf[..n].copy_from_slice(&e.value[..n]);
        self.stats.hits += 1;
        Lookup::Hit(Some(n))
    }

    /// Remembers a read (`None`: absent); one that does not fit an entry
    /// is not remembered.
    fn put(&mut self, devpath: &str, attr: u8, value: Option<&[u8]>) {
        if !self.active
            || devpath.len() > ID_CACHE_DEVPATH
            || value.is_some_and(|v| v.len() > ID_VALUE)
        {
            if self.active {
                self.stats.full += 1;
            }
            return;
        }
        let i = match self.find(devpath, attr) {
            Some(i) => i,
            None if self.len < ID_CACHE_ENTRIES => {
                self.len += 1;
                self.len - 1
            }
            None => {
                let i = self.next;
                self.next = (self.next + 1) % ID_CACHE_ENTRIES;
                i
            }
        };
        let e = &mut self.entries[i];
        e.devpath[..devpath.len()].copy_from_slice(devpath.as_bytes());
        e.devpath_len = devpath.len() as u8;
        e.attr = attr;
        match value {
            Some(v) => {
                e.value[..v.len()].copy_from_slice(v);
                e.value_len = v.len() as u8;
            }
            None => e.value_len = ID_ABSENT,
        }
    }

    /// Forgets `devpath` and every device below it.
    fn forget_under(&mut self, devpath: &str) {
        let p = devpath.as_bytes();
        let mut i = 0;
        while i < self.len {
            let d = self.entries[i].devpath();
            if d.starts_with(p) && (d.len() == p.len() || d[p.len()] == b'/') {
                self.len -= 1;
                self.entries[i] = self.entries[self.len];
            } else {
                i += 1;
            }
        }
    }

    fn clear(&mut self) {
        self.len = 0;
        self.next = 0;
    }
}

/// Counts of what [`ReadCache`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads answered from memory.
    pub hits: u64,
    /// Reads that went to sysfs while the cache was active.
    pub misses: u64,
    /// Reads not remembered: no entry or byte left for this event, or a
    /// value longer than `limits::READ_CACHE_MAX_VALUE`.
    pub full: u64,
}

/// What a remembered read was.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Attr = 1,
    Link = 2,
}

/// A cache lookup: a remembered answer (`None`: remembered as absent) or
/// nothing remembered.
enum Lookup {
    Hit(Option<usize>),
    Miss,
}

/// One remembered read: its key (`devpath/name`) then its value in
/// `ReadCache::bytes`.
#[derive(Clone, Copy, Default)]
struct Entry {
    hash: u32,
    kind: u8,
    at: u32,
    key_len: u16,
    /// `u16::MAX`: absent.
    value_len: u16,
}

const ABSENT: u16 = u16::MAX;

/// One event's sysfs reads, in fixed memory: [`READ_CACHE_ENTRIES`]
/// entries whose keys and values share [`READ_CACHE_BYTES`] bytes. Pure:
/// it is told what was read; [`SysfsRoot`] does the reading.
pub struct ReadCache {
    entries: [Entry; READ_CACHE_ENTRIES],
    len: usize,
    bytes: [u8; READ_CACHE_BYTES],
    used: usize,
    active: bool,
    stats: CacheStats,
}

impl Default for ReadCache {
    fn default() -> ReadCache {
        ReadCache {
            entries: [Entry::default(); READ_CACHE_ENTRIES],
            len: 0,
            bytes: [0; READ_CACHE_BYTES],
            used: 0,
            active: false,
            stats: CacheStats::default(),
        }
    }
}

/// FNV-1a over `devpath/name`.
fn key_hash(devpath: &str, name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in devpath.as_bytes().iter().chain(b"/").chain(name.as_bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

impl ReadCache {
    /// Forgets everything and starts remembering.
    fn begin(&mut self) {
        self.len = 0;
        self.used = 0;
        self.active = true;
    }

    fn key_is(&self, e: &Entry, devpath: &str, name: &str) -> bool {
        let at = e.at as usize;
        let key = &self.bytes[at..at + usize::from(e.key_len)];
        key.len() == devpath.len() + 1 + name.len()
            && key.starts_with(devpath.as_bytes())
            && key[devpath.len()] == b'/'
            && key.ends_with(name.as_bytes())
    }

    /// The remembered answer for (`kind`, `devpath`, `name`), whose
    /// [`key_hash`] is `h`, its value copied to the start of `buf` (cut to
    /// `buf.len()`).
    fn get(&mut self, kind: Kind, h: u32, devpath: &str, name: &str, buf: &mut [u8]) -> Lookup {
        if !self.active {
            return Lookup::Miss;
        }
        let found = self.entries[..self.len]
            .iter()
            .find(|e| e.hash == h && e.kind == kind as u8 && self.key_is(e, devpath, name));
        let Some(e) = found.copied() else {
            self.stats.misses += 1;
            return Lookup::Miss;
        };
        self.stats.hits += 1;
        if e.value_len == ABSENT {
            return Lookup::Hit(None);
        }
        let at = e.at as usize + usize::from(e.key_len);
        let n = usize::from(e.value_len).min(buf.len());
        buf[..n].copy_from_slice(&self.bytes[at..at + n]);
        Lookup::Hit(Some(n))
    }

    /// Remembers what a read of (`kind`, `devpath`, `name`), whose
    /// [`key_hash`] is `h`, gave.
    fn put(&mut self, kind: Kind, h: u32, devpath: &str, name: &str, value: Option<&[u8]>) {
        if !self.active {
            return;
        }
        let key_len = devpath.len() + 1 + name.len();
        let value_len = value.map_or(0, <[u8]>::len);
        if self.len == READ_CACHE_ENTRIES
            || value_len > READ_CACHE_MAX_VALUE
            || key_len >= usize::from(u16::MAX)
            || self.used + key_len + value_len > READ_CACHE_BYTES
        {
            self.stats.full += 1;
            return;
        }
        let at = self.used;
        let mut w = at;
        for part in [
            devpath.as_bytes(),
            b"/",
            name.as_bytes(),
            value.unwrap_or(b""),
        ] {
            self.bytes[w..w + part.len()].copy_from_slice(part);
            w += part.len();
        }
        self.used = w;
        self.entries[self.len] = Entry {
            hash: h,
            kind: kind as u8,
            at: at as u32,
            key_len: key_len as u16,
            value_len: value.map_or(ABSENT, |v| v.len() as u16),
        };
        self.len += 1;
    }
}

/// readlink(2) into `buf`; the length, or `None`.
fn readlink(path: &CStr, buf: &mut [u8]) -> Option<usize> {
    // SAFETY: `path` is NUL-terminated; `buf` is valid for `buf.len()`
    // bytes of writes; readlink writes at most that many and never a NUL.
    let r = unsafe { nix::libc::readlink(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 || r as usize >= buf.len() {
        return None;
    }
    Some(r as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A tree with one device `/devices/d` (`idVendor`, a `subsystem`
    /// link), removed on drop.
    struct Tree(std::path::PathBuf);
    impl Tree {
        fn new(tag: &str) -> Tree {
            let p =
                std::env::temp_dir().join(format!("hotplugd-sysfs-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(p.join("devices/d")).unwrap();
            fs::create_dir_all(p.join("bus/usb")).unwrap();
            fs::write(p.join("devices/d/idVendor"), "0403\n").unwrap();
            std::os::unix::fs::symlink("../../bus/usb", p.join("devices/d/subsystem")).unwrap();
            Tree(p)
        }
    }
    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn attr(s: &SysfsRoot, dev: &str, name: &str) -> Option<Vec<u8>> {
        let mut buf = [0u8; crate::limits::MAX_ATTR_LEN];
        s.attr(dev, name, &mut buf).map(<[u8]>::to_vec)
    }

    fn link(s: &SysfsRoot, dev: &str, name: &str) -> Option<Vec<u8>> {
        let mut buf = [0u8; 256];
        s.link(dev, name, &mut buf).map(<[u8]>::to_vec)
    }

    #[test]
    fn without_begin_event_every_read_goes_to_sysfs() {
        let t = Tree::new("nocache");
        let s = SysfsRoot::new(&t.0);
        assert_eq!(
            attr(&s, "/devices/d", "idVendor").as_deref(),
            Some(&b"0403\n"[..])
        );
        fs::write(t.0.join("devices/d/idVendor"), "1a86\n").unwrap();
        assert_eq!(
            attr(&s, "/devices/d", "idVendor").as_deref(),
            Some(&b"1a86\n"[..])
        );
        assert_eq!(s.cache_stats(), CacheStats::default());
    }

    #[test]
    fn one_event_reads_once_and_the_next_event_reads_again() {
        let t = Tree::new("cache");
        let s = SysfsRoot::new(&t.0);
        s.begin_event();
        assert_eq!(
            attr(&s, "/devices/d", "idVendor").as_deref(),
            Some(&b"0403\n"[..])
        );
        assert_eq!(
            link(&s, "/devices/d", "subsystem").as_deref(),
            Some(&b"usb"[..])
        );
        assert_eq!(attr(&s, "/devices/d", "serial"), None);
        // sysfs changes within the event: the event keeps what it saw
        fs::write(t.0.join("devices/d/idVendor"), "1a86\n").unwrap();
        fs::write(t.0.join("devices/d/serial"), "A1\n").unwrap();
        fs::remove_file(t.0.join("devices/d/subsystem")).unwrap();
        for _ in 0..3 {
            assert_eq!(
                attr(&s, "/devices/d", "idVendor").as_deref(),
                Some(&b"0403\n"[..])
            );
            assert_eq!(attr(&s, "/devices/d", "serial"), None);
            assert_eq!(
                link(&s, "/devices/d", "subsystem").as_deref(),
                Some(&b"usb"[..])
            );
        }
        // the same name as an attribute and as a link are two reads
        assert_eq!(attr(&s, "/devices/d", "subsystem"), None);
        assert_eq!(
            s.cache_stats(),
            CacheStats {
                hits: 9,
                misses: 4,
                full: 0
            }
        );
        // the next event sees the new state
        s.begin_event();
        assert_eq!(
            attr(&s, "/devices/d", "idVendor").as_deref(),
            Some(&b"1a86\n"[..])
        );
        assert_eq!(
            attr(&s, "/devices/d", "serial").as_deref(),
            Some(&b"A1\n"[..])
        );
        assert_eq!(link(&s, "/devices/d", "subsystem"), None);
    }

    #[test]
    fn a_full_cache_reads_through() {
        let t = Tree::new("full");
        let s = SysfsRoot::new(&t.0);
        s.begin_event();
        for i in 0..READ_CACHE_ENTRIES {
            assert_eq!(attr(&s, "/devices/d", &format!("a{i}")), None);
        }
        assert_eq!(s.cache_stats().full, 0);
        // no entry left: read, answered right, counted, not remembered
        assert_eq!(
            attr(&s, "/devices/d", "idVendor").as_deref(),
            Some(&b"0403\n"[..])
        );
        assert_eq!(
            attr(&s, "/devices/d", "idVendor").as_deref(),
            Some(&b"0403\n"[..])
        );
        assert_eq!(s.cache_stats().full, 2);
        // a buffer-filling read may be cut: not remembered either
        s.begin_event();
        let mut small = [0u8; 4];
        assert_eq!(
            s.attr("/devices/d", "idVendor", &mut small),
            Some(&b"0403"[..])
        );
        let st = s.cache_stats();
        assert_eq!(
            attr(&s, "/devices/d", "idVendor").as_deref(),
            Some(&b"0403\n"[..])
        );
        assert_eq!(s.cache_stats().misses, st.misses + 1);
    }

    #[test]
    fn usb_ids_are_remembered_across_events_until_their_device_comes_or_goes() {
        let t = Tree::new("ids");
        fs::create_dir_all(t.0.join("devices/d/e")).unwrap();
        let s = SysfsRoot::new(&t.0);
        let v = |s: &SysfsRoot, d| attr(s, d, "idVendor");
        // inactive until told of events: every read goes to sysfs
        assert_eq!(v(&s, "/devices/d").as_deref(), Some(&b"0403\n"[..]));
        fs::write(t.0.join("devices/d/idVendor"), "1a86\n").unwrap();
        assert_eq!(v(&s, "/devices/d").as_deref(), Some(&b"1a86\n"[..]));
        s.device_event("add", "/devices/d/e", None);
        s.begin_event();
        assert_eq!(v(&s, "/devices/d").as_deref(), Some(&b"1a86\n"[..]));
        assert_eq!(v(&s, "/devices/d/e"), None);
        // (a file changed behind its back shows what is remembered)
        fs::write(t.0.join("devices/d/idVendor"), "0525\n").unwrap();
        fs::write(t.0.join("devices/d/e/idVendor"), "0627\n").unwrap();
        for action in ["change", "bind", "unbind"] {
            s.device_event(action, "/devices/d", None);
            s.begin_event();
            assert_eq!(
                v(&s, "/devices/d").as_deref(),
                Some(&b"1a86\n"[..]),
                "{action}"
            );
            assert_eq!(v(&s, "/devices/d/e"), None, "{action}");
        }
        let hits = s.id_cache_stats().hits;
        assert!(hits >= 6, "{hits}");
        // an add below d forgets only what is below
        s.device_event("add", "/devices/d/e", None);
        s.begin_event();
        assert_eq!(v(&s, "/devices/d/e").as_deref(), Some(&b"0627\n"[..]));
        assert_eq!(v(&s, "/devices/d").as_deref(), Some(&b"1a86\n"[..]));
        // a remove of d forgets d and what is below it; "/devices/dd" is
        // not below "/devices/d"
        fs::create_dir_all(t.0.join("devices/dd")).unwrap();
        fs::write(t.0.join("devices/dd/idVendor"), "0001\n").unwrap();
        assert_eq!(v(&s, "/devices/dd").as_deref(), Some(&b"0001\n"[..]));
        fs::write(t.0.join("devices/dd/idVendor"), "0002\n").unwrap();
        fs::write(t.0.join("devices/d/e/idVendor"), "0628\n").unwrap();
        s.device_event("remove", "/devices/d", None);
        s.begin_event();
        assert_eq!(v(&s, "/devices/d").as_deref(), Some(&b"0525\n"[..]));
        assert_eq!(v(&s, "/devices/d/e").as_deref(), Some(&b"0628\n"[..]));
        assert_eq!(v(&s, "/devices/dd").as_deref(), Some(&b"0001\n"[..]));
        // a move forgets the old place and the new
        fs::write(t.0.join("devices/d/idVendor"), "0526\n").unwrap();
        fs::write(t.0.join("devices/dd/idVendor"), "0003\n").unwrap();
        s.device_event("move", "/devices/dd", Some("/devices/d"));
        s.begin_event();
        assert_eq!(v(&s, "/devices/d").as_deref(), Some(&b"0526\n"[..]));
        assert_eq!(v(&s, "/devices/dd").as_deref(), Some(&b"0003\n"[..]));
        // lost events: everything is read again
        fs::write(t.0.join("devices/dd/idVendor"), "0004\n").unwrap();
        s.forget_devices();
        s.device_event("change", "/devices/x", None);
        s.begin_event();
        assert_eq!(v(&s, "/devices/dd").as_deref(), Some(&b"0004\n"[..]));
        // other attributes are read per event, as before
        fs::write(t.0.join("devices/d/serial"), "A\n").unwrap();
        assert_eq!(
            attr(&s, "/devices/d", "serial").as_deref(),
            Some(&b"A\n"[..])
        );
        fs::write(t.0.join("devices/d/serial"), "B\n").unwrap();
        s.device_event("change", "/devices/d", None);
        s.begin_event();
        assert_eq!(
            attr(&s, "/devices/d", "serial").as_deref(),
            Some(&b"B\n"[..])
        );
    }

    #[test]
    fn the_id_cache_replaces_its_oldest_entry_when_full_and_skips_what_does_not_fit() {
        let mut c = IdCache {
            active: true,
            ..IdCache::default()
        };
        let mut buf = [0u8; 16];
        for i in 0..ID_CACHE_ENTRIES + 1 {
            c.put(&format!("/devices/{i}"), 0, Some(b"0403\n"));
        }
        assert_eq!(c.len, ID_CACHE_ENTRIES);
        assert!(
            matches!(c.get("/devices/0", 0, &mut buf), Lookup::Miss),
            "oldest replaced"
        );
        assert!(matches!(
            c.get("/devices/1", 0, &mut buf),
            Lookup::Hit(Some(5))
        ));
        assert!(matches!(
            c.get(&format!("/devices/{ID_CACHE_ENTRIES}"), 0, &mut buf),
            Lookup::Hit(Some(5))
        ));
        assert!(
            matches!(c.get("/devices/1", 1, &mut buf), Lookup::Miss),
            "idProduct is another entry"
        );
        let long = format!("/devices/{}", "x".repeat(ID_CACHE_DEVPATH));
        c.put(&long, 0, None);
        assert!(matches!(c.get(&long, 0, &mut buf), Lookup::Miss));
        c.put("/devices/v", 0, Some(&[b'1'; ID_VALUE + 1]));
        assert!(matches!(c.get("/devices/v", 0, &mut buf), Lookup::Miss));
        assert_eq!(c.stats.full, 2);
        c.forget_under("/devices");
        assert_eq!(c.len, 0);
    }
}
