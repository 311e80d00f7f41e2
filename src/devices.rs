//! The device table: the devices hotplugd believes present, for the
//! subsystems it tracks, each with the properties its last event ended
//! with: the kernel's keys, then (once the rules ran: see
//! `runner`) the `ENV{}` values and imported properties, `DEVLINKS`,
//! `TAGS`, `CURRENT_TAGS` and the link priority. A synthetic `remove` after
//! an overrun carries them, and a kernel `remove` gets them merged in
//! (`devnode::merge_remove`), so rules and handlers of a remove see
//! what the add knew, and the links the add made can be removed.
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
//!
//! Lookups by devpath go through an index allocated with the table: open
//! addressing with linear probing over [`INDEX_SLOTS`] slots (at most half
//! full), so a lookup costs O(1) expected whatever the number of devices.
//! A scan of every entry cost ~0.1 ms per lookup at 2,000 devices, paid by
//! every event and twice per device in a resync (`cargo bench --bench
//! table_lookup` prints both).

use crate::uevent::Uevent;

/// Devices the table can hold. 4,096 since the records carry what each
/// device's last event ended with and the generic board rules track every
/// subsystem (179 devices in the aarch64 guest): a storm that loses the
/// removes of many devices keeps them until the resync diff, and a full
/// table makes that resync add-only. The arena is committed by the kernel
/// only as it fills.
pub const MAX_DEVICES: usize = 4096;
/// Bytes of records the table can hold (about 128 per device on average;
/// a USB device's record is ~150-300 bytes, a net device's ~80).
pub const TABLE_BYTES: usize = 512 * 1024;
/// Largest record stored whole; a longer one keeps only DEVPATH, SUBSYSTEM,
/// DEVTYPE, DEVNAME and INTERFACE.
pub const MAX_RECORD: usize = 2048;
/// Slots of the devpath index: a power of two at least twice
/// [`MAX_DEVICES`], so probes stay short (load factor <= 1/2): 16 KiB.
pub const INDEX_SLOTS: usize = index_slots(MAX_DEVICES);

const fn index_slots(devices: usize) -> usize {
    (2 * devices).next_power_of_two()
}

/// An empty index slot; a used one holds an entry's position.
const EMPTY: u16 = u16::MAX;

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
    /// devpath hash -> position in `entries` (see the module docs).
    index: Box<[u16]>,
    /// `index.len() - 1`.
    mask: usize,
    max_devices: usize,
    scratch: Box<[u8]>,
    overflowed: bool,
    /// Records cut to the essentials (see [`MAX_RECORD`]).
    cut: u64,
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
fn transient(key: &[u8]) -> bool {
    matches!(key, b"ACTION" | b"DEVPATH" | b"SEQNUM" | b"DEVPATH_OLD")
        || key.starts_with(b"SYNTH_")
        || key.starts_with(b"HOTPLUGD_")
}

impl DeviceTable {
    /// An empty table; allocates its fixed arena (lazily committed by the
    /// kernel: untouched pages cost no memory).
    pub fn new() -> DeviceTable {
        DeviceTable::with_capacity(MAX_DEVICES, TABLE_BYTES)
    }

    /// A table of another size than the daemon's ([`MAX_DEVICES`],
    /// [`TABLE_BYTES`]), for benchmarks and tests. `devices` must be below
    /// 65,535 (the index holds `u16` positions).
    pub fn with_capacity(devices: usize, bytes: usize) -> DeviceTable {
        assert!(devices < EMPTY as usize, "index positions are u16");
        let slots = index_slots(devices);
        DeviceTable {
            arena: vec![0u8; bytes].into_boxed_slice(),
            top: 0,
            entries: Vec::with_capacity(devices),
            index: vec![EMPTY; slots].into_boxed_slice(),
            mask: slots - 1,
            max_devices: devices,
            scratch: vec![0u8; MAX_RECORD].into_boxed_slice(),
            overflowed: false,
            cut: 0,
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

    /// Records cut so far because they did not fit [`MAX_RECORD`] (each
    /// kept only its essentials; see [`DeviceTable::insert`]).
    pub fn records_cut(&self) -> u64 {
        self.cut
    }

    /// Forgets everything (before a fresh baseline).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.index.fill(EMPTY);
        self.top = 0;
        self.overflowed = false;
    }

    /// The home slot of a hash.
    fn home(&self, h: u32) -> usize {
        h as usize & self.mask
    }

    /// The slot holding `devpath`'s entry, or the empty slot that ends its
    /// probe sequence.
    fn probe(&self, devpath: &[u8], h: u32) -> (usize, Option<usize>) {
        let mut s = self.home(h);
        loop {
            let i = self.index[s];
            if i == EMPTY {
                return (s, None);
            }
            let e = &self.entries[i as usize];
            if e.hash == h
                && e.path_len as usize == devpath.len()
                && &self.arena[e.off as usize..e.off as usize + devpath.len()] == devpath
            {
                return (s, Some(i as usize));
            }
            s = (s + 1) & self.mask;
        }
    }

    fn find(&self, devpath: &[u8]) -> Option<usize> {
        self.probe(devpath, hash(devpath)).1
    }

    /// The slot that points at entry `i`.
    fn slot_of(&self, i: usize) -> usize {
        let mut s = self.home(self.entries[i].hash);
        while self.index[s] as usize != i {
            s = (s + 1) & self.mask;
        }
        s
    }

    /// Empties slot `s` by backward shift (no tombstones): later slots of
    /// the same probe run move up so that every lookup still finds them.
    fn unslot(&mut self, mut s: usize) {
        let mask = self.mask;
        let mut k = s;
        loop {
            k = (k + 1) & mask;
            let i = self.index[k];
            if i == EMPTY {
                break;
            }
            let home = self.home(self.entries[i as usize].hash);
            // The entry at k may move to s only if its home is not in the
            // cyclic range (s, k].
            if (k.wrapping_sub(home) & mask) >= (k.wrapping_sub(s) & mask) {
                self.index[s] = i;
                s = k;
            }
        }
        self.index[s] = EMPTY;
    }

    /// Forgets entry `i`: its slot, and the move of the last entry into
    /// its place.
    fn remove_at(&mut self, i: usize) {
        let s = self.slot_of(i);
        self.unslot(s);
        let last = self.entries.len() - 1;
        if i != last {
            let s = self.slot_of(last);
            self.index[s] = i as u16;
        }
        self.entries.swap_remove(i);
    }

    /// Builds the index again from the entries (after a compaction moved
    /// them).
    fn reindex(&mut self) {
        self.index.fill(EMPTY);
        for i in 0..self.entries.len() {
            let mut s = self.home(self.entries[i].hash);
            while self.index[s] != EMPTY {
                s = (s + 1) & self.mask;
            }
            self.index[s] = i as u16;
        }
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
                self.remove_at(i);
                true
            }
            None => false,
        }
    }

    /// Records `devpath` with `fields` (`KEY=VALUE` each), replacing any
    /// record it had. False (and [`DeviceTable::overflowed`]) if there is no
    /// room. A record longer than [`MAX_RECORD`] keeps only SUBSYSTEM,
    /// DEVTYPE, DEVNAME, INTERFACE, MAJOR, MINOR, DEVLINKS, TAGS and the
    /// link priority (what a remove needs to clean /dev up), counted in
    /// [`DeviceTable::records_cut`].
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
            if transient(key) {
                continue;
            }
            if !full(&mut self.scratch, &mut n, &[key, b"=", value]) {
                cut = true; // later, shorter fields may still fit
            }
        }
        if cut {
            self.cut += 1;
            // Too long: keep only what handlers of a remove need most, and
            // what it needs to clean /dev up.
            let rec: &[u8] = &self.scratch[path_end..n];
            let mut keep = [0u8; MAX_RECORD];
            let mut k = 0;
            for f in rec.split(|&b| b == 0) {
                let wanted = [
                    &b"SUBSYSTEM="[..],
                    b"DEVTYPE=",
                    b"DEVNAME=",
                    b"INTERFACE=",
                    b"MAJOR=",
                    b"MINOR=",
                    b"DEVLINKS=",
                    b"TAGS=",
                    b".LINK_PRIORITY=",
                ]
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
        let h = hash(devpath.as_bytes());
        if let (_, Some(i)) = self.probe(devpath.as_bytes(), h) {
            let e = &self.entries[i];
            if self.arena[e.off as usize..(e.off + e.len) as usize] == self.scratch[..n] {
                return true; // unchanged (most `change` events): nothing to move
            }
            self.remove_at(i);
        }
        if self.entries.len() == self.max_devices {
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
        let (slot, _) = self.probe(devpath.as_bytes(), h);
        self.index[slot] = self.entries.len() as u16;
        self.entries.push(Entry {
            hash: h,
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
        self.reindex();
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
    fn an_unchanged_record_is_not_stored_again() {
        let mut t = DeviceTable::new();
        assert!(t.insert("/devices/a", fields("SUBSYSTEM=net INTERFACE=a SEQNUM=5")));
        assert!(t.insert("/devices/b", fields("SUBSYSTEM=usb")));
        let top = t.top;
        // A `change` with the same properties (only transient keys differ).
        assert!(t.insert("/devices/a", fields("SUBSYSTEM=net INTERFACE=a SEQNUM=6")));
        assert_eq!(t.top, top, "nothing appended to the arena");
        assert_eq!(t.len(), 2);
        // A changed value is stored, and read back.
        assert!(t.insert("/devices/a", fields("SUBSYSTEM=net INTERFACE=a2")));
        assert!(t.top > top);
        let a: Vec<&[u8]> = t.fields("/devices/a").unwrap().collect();
        assert_eq!(a, [&b"SUBSYSTEM=net"[..], b"INTERFACE=a2"]);
        assert!(t.contains("/devices/b"));
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
        assert_eq!(t.records_cut(), 1, "counted");
    }

    impl DeviceTable {
        /// Slots a lookup of `devpath` examines.
        fn probes(&self, devpath: &str) -> usize {
            let h = hash(devpath.as_bytes());
            let (end, _) = self.probe(devpath.as_bytes(), h);
            (end.wrapping_sub(self.home(h)) & self.mask) + 1
        }
    }

    #[test]
    fn lookups_in_a_full_table_examine_few_slots() {
        let mut t = DeviceTable::new();
        let paths: Vec<String> = (0..MAX_DEVICES)
            .map(|i| format!("/devices/virtual/net/hp{i}"))
            .collect();
        for p in &paths {
            assert!(t.insert(p, fields("SUBSYSTEM=net")));
        }
        // a scan would look at ~MAX_DEVICES / 2 entries per hit and all of
        // them per miss
        let misses = (0..MAX_DEVICES).map(|i| format!("/devices/virtual/net/x{i}"));
        let total: usize = misses.map(|p| t.probes(&p)).sum();
        assert!(
            total / MAX_DEVICES <= 4,
            "{} probes per miss",
            total / MAX_DEVICES
        );
        for p in &paths {
            assert!(t.contains(p), "{p}");
        }
    }

    /// The index agrees with a plain set through adds, removes, replaced
    /// records, compactions and clears.
    #[test]
    fn the_index_follows_churn_exactly() {
        let mut t = DeviceTable::new();
        let mut model = std::collections::BTreeSet::new();
        let mut x: u32 = 12345;
        let long = "X=".to_string() + &"v".repeat(600);
        for round in 0..40_000 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let p = format!("/devices/d{}", x % 3000);
            if x % 7 < 4 {
                if t.insert(&p, [long.as_bytes()].into_iter()) {
                    model.insert(p);
                } else {
                    model.remove(&p);
                }
            } else {
                assert_eq!(t.remove(&p), model.remove(&p), "{round} {p}");
            }
            if round % 10_000 == 9_999 {
                t.clear();
                model.clear();
            }
            if round % 997 == 0 {
                let mut got: Vec<&str> = t.devpaths().collect();
                got.sort_unstable();
                let want: Vec<&str> = model.iter().map(String::as_str).collect();
                assert_eq!(got, want, "{round}");
                assert!(model.iter().all(|p| t.contains(p)));
            }
        }
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
