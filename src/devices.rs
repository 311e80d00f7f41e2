//! The device table: the devices hotplugd believes present, for the
//! subsystems it tracks, each with the keys of its last add (so that a
//! synthetic `remove` after an overrun carries what the kernel would have
//! sent: DEVNAME, INTERFACE, PRODUCT, ...).
//!
//! Fixed capacity, allocated once: an arena of [`TABLE_BYTES`] for the
//! records and room for [`MAX_DEVICES`] entries. Updating it on an event
//! allocates nothing; a full arena is compacted in place. When a record
//! cannot be stored (too many devices, or the arena is full of live records)
//! the table says so ([`DeviceTable::overflowed`]) and stops being exact:
//! recovery then falls back to an add-only resync (see `resync`).
//!
//! A record is `DEVPATH \0 KEY=VALUE \0 ...`: the event's fields without
//! ACTION, DEVPATH, SEQNUM and the SYNTH_*/HOTPLUGD_* markers. Pure: no I/O.

use crate::uevent::Uevent;

/// Devices the table can hold.
pub const MAX_DEVICES: usize = 2048;
/// Bytes of records the table can hold (about 200 per device on average;
/// a USB device's record is ~150-300 bytes, a net device's ~80).
pub const TABLE_BYTES: usize = 256 * 1024;
/// Largest record stored whole; a longer one keeps only DEVPATH, SUBSYSTEM,
/// DEVTYPE, DEVNAME and INTERFACE.
pub const MAX_RECORD: usize = 2048;

#[derive(Clone, Copy, Debug)]
struct Entry {
    hash: u32,
    off: u32,
    len: u32,
    path_len: u32,
}

/// See the module documentation.
pub struct DeviceTable {
    arena: Box<[u8]>,
    top: usize,
    entries: Vec<Entry>,
    scratch: Box<[u8]>,
    overflowed: bool,
}

impl Default for DeviceTable {
    fn default() -> Self {
        DeviceTable::new()
    }
}

/// FNV-1a, 32 bits: enough to skip most byte comparisons.
fn hash(b: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &x in b {
        h ^= u32::from(x);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Keys that describe the event, not the device: not stored.
fn transient(key: &str) -> bool {
    matches!(key, "ACTION" | "DEVPATH" | "SEQNUM" | "DEVPATH_OLD")
        || key.starts_with("SYNTH_")
        || key.starts_with("HOTPLUGD_")
}

impl DeviceTable {
    /// An empty table; allocates its fixed arena (lazily committed by the
    /// kernel: untouched pages cost no memory).
    pub fn new() -> DeviceTable {
        DeviceTable {
            arena: vec![0u8; TABLE_BYTES].into_boxed_slice(),
            top: 0,
            entries: Vec::with_capacity(MAX_DEVICES),
            scratch: vec![0u8; MAX_RECORD].into_boxed_slice(),
            overflowed: false,
        }
    }

    /// Devices present.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no device is recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of records stored (live ones, plus holes not yet compacted).
    pub fn record_bytes(&self) -> usize {
        self.entries.iter().map(|e| e.len as usize).sum()
    }

    /// Bytes of bookkeeping per entry (besides its record).
    pub const ENTRY_BYTES: usize = core::mem::size_of::<Entry>();

    /// True once a device could not be recorded: the table is no longer
    /// the exact set of present devices (until [`DeviceTable::clear`]).
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Forgets everything (before a fresh baseline).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.top = 0;
        self.overflowed = false;
    }

    fn find(&self, devpath: &[u8]) -> Option<usize> {
        let h = hash(devpath);
        self.entries.iter().position(|e| {
            e.hash == h
                && e.path_len as usize == devpath.len()
                && &self.arena[e.off as usize..e.off as usize + devpath.len()] == devpath
        })
    }

    /// True if `devpath` is recorded.
    pub fn contains(&self, devpath: &str) -> bool {
        self.find(devpath.as_bytes()).is_some()
    }

    /// The stored record of `devpath`: its fields as `KEY=VALUE` strings.
    pub fn fields(&self, devpath: &str) -> Option<impl Iterator<Item = &[u8]>> {
        let e = self.entries[self.find(devpath.as_bytes())?];
        let rec = &self.arena[e.off as usize..(e.off + e.len) as usize];
        Some(
            rec[e.path_len as usize + 1..]
                .split(|&b| b == 0)
                .filter(|f| !f.is_empty()),
        )
    }

    /// Every recorded devpath.
    pub fn devpaths(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| {
            core::str::from_utf8(&self.arena[e.off as usize..(e.off + e.path_len) as usize])
                .unwrap_or("")
        })
    }

    /// Forgets `devpath`; true if it was recorded.
    pub fn remove(&mut self, devpath: &str) -> bool {
        match self.find(devpath.as_bytes()) {
            Some(i) => {
                self.entries.swap_remove(i);
                true
            }
            None => false,
        }
    }

    /// Records `devpath` with `fields` (`KEY=VALUE` each), replacing any
    /// record it had. False (and [`DeviceTable::overflowed`]) if there is no
    /// room.
    pub fn insert<'f>(&mut self, devpath: &str, fields: impl Iterator<Item = &'f [u8]>) -> bool {
        self.insert_pairs(
            devpath,
            fields.map(|f| {
                let eq = f.iter().position(|&b| b == b'=').unwrap_or(f.len());
                (&f[..eq], f.get(eq + 1..).unwrap_or(b""))
            }),
        )
    }

    /// [`DeviceTable::insert`] with the fields as (key, value) pairs.
    pub fn insert_pairs<'f>(
        &mut self,
        devpath: &str,
        fields: impl Iterator<Item = (&'f [u8], &'f [u8])>,
    ) -> bool {
        // Build the record in the scratch buffer first.
        let mut n = 0;
        let full = |b: &mut [u8], n: &mut usize, parts: &[&[u8]]| -> bool {
            let len: usize = parts.iter().map(|p| p.len()).sum();
            if *n + len + 1 > b.len() {
                return false;
            }
            for p in parts {
                b[*n..*n + p.len()].copy_from_slice(p);
                *n += p.len();
            }
            b[*n] = 0;
            *n += 1;
            true
        };
        if !full(&mut self.scratch, &mut n, &[devpath.as_bytes()]) {
            self.remove(devpath);
            self.overflowed = true;
            return false;
        }
        let path_end = n;
        let mut cut = false;
        for (key, value) in fields {
            if transient(core::str::from_utf8(key).unwrap_or("")) {
                continue;
            }
            if !full(&mut self.scratch, &mut n, &[key, b"=", value]) {
                cut = true; // later, shorter fields may still fit
            }
        }
        if cut {
            // Too long: keep only what handlers of a remove need most.
            let rec: &[u8] = &self.scratch[path_end..n];
            let mut keep = [0u8; 1024];
            let mut k = 0;
            for f in rec.split(|&b| b == 0) {
                let wanted = [&b"SUBSYSTEM="[..], b"DEVTYPE=", b"DEVNAME=", b"INTERFACE="]
                    .iter()
                    .any(|p| f.starts_with(p));
                if wanted && k + f.len() < keep.len() {
                    keep[k..k + f.len()].copy_from_slice(f);
                    keep[k + f.len()] = 0;
                    k += f.len() + 1;
                }
            }
            self.scratch[path_end..path_end + k].copy_from_slice(&keep[..k]);
            n = path_end + k;
        }
        self.remove(devpath);
        if self.entries.len() == MAX_DEVICES {
            self.overflowed = true;
            return false;
        }
        if self.top + n > self.arena.len() {
            self.compact();
            if self.top + n > self.arena.len() {
                self.overflowed = true;
                return false;
            }
        }
        self.arena[self.top..self.top + n].copy_from_slice(&self.scratch[..n]);
        self.entries.push(Entry {
            hash: hash(devpath.as_bytes()),
            off: self.top as u32,
            len: n as u32,
            path_len: devpath.len() as u32,
        });
        self.top += n;
        true
    }

    /// Moves every live record to the front of the arena, in place.
    fn compact(&mut self) {
        self.entries.sort_unstable_by_key(|e| e.off);
        let mut to = 0usize;
        for e in self.entries.iter_mut() {
            let (from, len) = (e.off as usize, e.len as usize);
            if from != to {
                self.arena.copy_within(from..from + len, to);
                e.off = to as u32;
            }
            to += len;
        }
        self.top = to;
    }

    /// Applies a kernel event: `add` records the device (replacing an older
    /// record), `remove` forgets it, `move` renames it (DEVPATH_OLD to
    /// DEVPATH, keeping its keys). Other actions change nothing. Returns
    /// whether the device was recorded before the event.
    pub fn apply(&mut self, ev: &Uevent<'_>) -> bool {
        let devpath = ev.devpath();
        match ev.action() {
            "add" => {
                let had = self.contains(devpath);
                self.insert_pairs(
                    devpath,
                    ev.fields().iter().map(|f| (f.key.as_bytes(), f.value)),
                );
                had
            }
            "remove" => self.remove(devpath),
            "move" => {
                let Some(old) = ev.get_str("DEVPATH_OLD") else {
                    return self.contains(devpath);
                };
                let had = self.contains(old);
                self.remove(old);
                self.insert_pairs(
                    devpath,
                    ev.fields().iter().map(|f| (f.key.as_bytes(), f.value)),
                );
                had
            }
            _ => self.contains(devpath),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(s: &'static str) -> impl Iterator<Item = &'static [u8]> {
        s.split(' ').map(str::as_bytes)
    }

    #[test]
    fn insert_find_remove_and_records() {
        let mut t = DeviceTable::new();
        assert!(t.insert("/devices/a", fields("SUBSYSTEM=net INTERFACE=a SEQNUM=5")));
        assert!(t.insert("/devices/b", fields("SUBSYSTEM=usb")));
        assert!(t.contains("/devices/a") && t.contains("/devices/b"));
        let a: Vec<&[u8]> = t.fields("/devices/a").unwrap().collect();
        assert_eq!(
            a,
            [&b"SUBSYSTEM=net"[..], b"INTERFACE=a"],
            "SEQNUM not kept"
        );
        assert!(t.insert("/devices/a", fields("SUBSYSTEM=net INTERFACE=a2")));
        assert_eq!(t.len(), 2);
        assert!(t.remove("/devices/a"));
        assert!(!t.remove("/devices/a"));
        assert!(!t.contains("/devices/a"));
        assert_eq!(t.devpaths().collect::<Vec<_>>(), ["/devices/b"]);
    }

    #[test]
    fn churn_is_compacted_and_capacity_overflow_is_reported() {
        let mut t = DeviceTable::new();
        // Many times the arena's size in adds and removes: compaction keeps
        // it going without overflow.
        let long = "X=".to_string() + &"v".repeat(1000);
        for i in 0..2000 {
            let p = format!("/devices/churn{}", i % 10);
            assert!(t.insert(&p, [long.as_bytes()].into_iter()), "{i}");
            if i % 3 == 0 {
                t.remove(&p);
            }
        }
        assert!(!t.overflowed());
        t.clear();
        for i in 0..MAX_DEVICES {
            assert!(t.insert(&format!("/d/{i}"), fields("SUBSYSTEM=x")));
        }
        assert!(!t.insert("/d/one-too-many", fields("SUBSYSTEM=x")));
        assert!(t.overflowed());
        assert_eq!(t.len(), MAX_DEVICES);
    }

    #[test]
    fn long_records_keep_the_essentials() {
        let mut t = DeviceTable::new();
        let big = "BIG=".to_string() + &"x".repeat(MAX_RECORD);
        let f = ["SUBSYSTEM=block".as_bytes(), big.as_bytes(), b"DEVNAME=sda"];
        assert!(t.insert("/devices/s", f.into_iter()));
        let kept: Vec<&[u8]> = t.fields("/devices/s").unwrap().collect();
        assert_eq!(kept, [&b"SUBSYSTEM=block"[..], b"DEVNAME=sda"]);
    }

    #[test]
    fn apply_follows_add_remove_move() {
        let mut t = DeviceTable::new();
        let add = b"add@/devices/x\0ACTION=add\0DEVPATH=/devices/x\0SUBSYSTEM=net\0INTERFACE=x\0SEQNUM=1\0";
        assert!(!t.apply(&Uevent::parse(add).unwrap()));
        let mv = b"move@/devices/y\0ACTION=move\0DEVPATH=/devices/y\0DEVPATH_OLD=/devices/x\0SUBSYSTEM=net\0INTERFACE=y\0SEQNUM=2\0";
        assert!(t.apply(&Uevent::parse(mv).unwrap()));
        assert!(!t.contains("/devices/x") && t.contains("/devices/y"));
        let rm = b"remove@/devices/y\0ACTION=remove\0DEVPATH=/devices/y\0SUBSYSTEM=net\0SEQNUM=3\0";
        assert!(t.apply(&Uevent::parse(rm).unwrap()));
        assert!(t.is_empty());
    }
}
