//! Handled events, encoded for other programs on the board: libudev's
//! netlink format (group 2, what `udevd` sends after it has handled an
//! event) and the kernel's own format re-sent to a group mask (what mdevd's
//! `-O MASK` sends; libudev-zero listens on mask 4).
//!
//! Pure: no I/O, no clock, no allocation. The encoders write into a buffer
//! the caller owns and return the length, or [`EncodeError::TooLarge`]
//! (nothing is sent then; the caller counts and logs it). Sending is
//! [`crate::sys::broadcast`]'s job; when to send is the runner's.
//!
//! # The input
//! The event in wire form with the rules' `ENV{}` assignments appended
//! (`ACTION@DEVPATH\0KEY=VALUE\0...`, see [`crate::job::JobView::raw`]),
//! optionally followed by a second slice of `KEY=VALUE\0` entries. A key
//! that appears more than once (an `ENV{}` assignment overriding a kernel
//! field) is written once, with its last value. Entries without `=` are
//! skipped.
//!
//! # libudev's format
//! Learnt from systemd's `sd-device/device-monitor.c` (`monitor_netlink_header`,
//! `device_monitor_send_device`, `device_monitor_receive_device`, the BPF
//! program of `sd_device_monitor_filter_update`):
//!
//! ```text
//! offset size
//!  0      8  "libudev\0"
//!  8      4  magic 0xfeedcafe, network byte order (a BPF filter loads it)
//! 12      4  header size (40), host byte order
//! 16      4  offset of the properties (40), host byte order
//! 20      4  length of the properties, host byte order
//! 24      4  MurmurHash2(SUBSYSTEM), network byte order
//! 28      4  MurmurHash2(DEVTYPE) or 0, network byte order
//! 32      4  tag bloom filter, high 32 bits, network byte order
//! 36      4  tag bloom filter, low 32 bits, network byte order
//! 40      .  KEY=VALUE\0 ... (no ACTION@DEVPATH header)
//! ```
//!
//! Receivers check the prefix, the magic and that the properties start
//! inside the datagram; they accept only datagrams whose sender has uid 0
//! (SCM_CREDENTIALS). systemd's receivers (252) refuse a device without
//! DEVPATH, SUBSYSTEM, a known ACTION or a non-zero SEQNUM. libudev installs
//! a socket filter comparing the subsystem/devtype hashes and the tag bloom
//! bits, so a wrong hash silently drops the event for a filtering client.
//!
//! The hash is MurmurHash2 (Austin Appleby's, seed 0) over the string
//! without its NUL, reading 4-byte blocks in the host's byte order as
//! systemd does: sender and receiver run on the same machine, so they agree
//! on big-endian boards too. A tag sets four bits of the 64-bit bloom
//! filter: bits `h & 63`, `h >> 6 & 63`, `h >> 12 & 63`, `h >> 18 & 63`.
//! Tags come from the `TAGS` property (`:tag1:tag2:`), if a rule set one.
//!
//! # The kernel's format
//! `ACTION@DEVPATH\0` then the fields, as the kernel sends them
//! (`lib/kobject_uevent.c`), with the rules' `ENV{}` values added.
//! libudev-zero reads it into an 8 KiB buffer and drops truncated datagrams.

use core::fmt;

/// The prefix of a libudev datagram, NUL included.
pub const UDEV_PREFIX: &[u8; 8] = b"libudev\0";

/// The version magic of libudev's header.
pub const UDEV_MAGIC: u32 = 0xfeed_cafe;

/// Size of libudev's header, prefix included.
pub const UDEV_HEADER_LEN: usize = 40;

/// The netlink group udevd sends to and libudev clients listen on.
pub const UDEV_GROUP: u32 = 2;

/// Which format a target gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// libudev's (`libudev\0` + header + properties).
    Udev,
    /// The kernel's (`ACTION@DEVPATH\0` + fields).
    Kernel,
}

/// One `--broadcast` target: a format and the netlink group mask it goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    /// The format.
    pub format: Format,
    /// Netlink multicast group mask (bit 0 = group 1).
    pub groups: u32,
}

/// Why a `--broadcast` value was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetError {
    /// Neither `udev` nor `kernel:MASK`.
    Unknown,
    /// MASK is not a number from 2 to 0xffffffff (decimal or 0x hex).
    BadMask,
    /// MASK includes group 1: that is the kernel's own group, where
    /// device managers would take a rebroadcast for a second kernel event.
    KernelGroup,
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TargetError::Unknown => "expected udev or kernel:MASK",
            TargetError::BadMask => "MASK must be a group mask from 2 to 0xffffffff",
            TargetError::KernelGroup => {
                "MASK must not include group 1 (the kernel's own group: listeners there take it for a kernel event)"
            }
        })
    }
}

impl Target {
    /// Parses `udev` (group 2, libudev's format) or `kernel:MASK` (the
    /// kernel's format to the group mask MASK, decimal or `0x` hex).
    pub fn parse(s: &str) -> Result<Target, TargetError> {
        if s == "udev" {
            return Ok(Target {
                format: Format::Udev,
                groups: UDEV_GROUP,
            });
        }
        let mask = s.strip_prefix("kernel:").ok_or(TargetError::Unknown)?;
        let groups = match mask.strip_prefix("0x") {
            Some(hex) => u32::from_str_radix(hex, 16),
            None => mask.parse::<u32>(),
        }
        .map_err(|_| TargetError::BadMask)?;
        if groups == 0 {
            return Err(TargetError::BadMask);
        }
        if groups & 1 != 0 {
            return Err(TargetError::KernelGroup);
        }
        Ok(Target {
            format: Format::Kernel,
            groups,
        })
    }
}

/// Why an event was not encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The buffer is too small; `needed` bytes would have been.
    TooLarge {
        /// Bytes the datagram would take.
        needed: usize,
    },
    /// The input has no `ACTION@DEVPATH` header.
    NoHeader,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::TooLarge { needed } => {
                write!(
                    f,
                    "the datagram would take {needed} bytes, more than the buffer"
                )
            }
            EncodeError::NoHeader => f.write_str("the event has no ACTION@DEVPATH header"),
        }
    }
}

/// MurmurHash2 with seed 0, blocks read in the host's byte order, as
/// libudev hashes subsystem, devtype and tag names.
pub fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let mut h = data.len() as u32;
    let mut blocks = data.chunks_exact(4);
    for b in &mut blocks {
        let mut k = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        for (i, &b) in tail.iter().enumerate() {
            h ^= u32::from(b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

/// The four bloom-filter bits of one tag.
pub fn tag_bits(tag: &[u8]) -> u64 {
    let h = murmur2(tag);
    [0, 6, 12, 18]
        .iter()
        .fold(0u64, |bits, shift| bits | 1u64 << ((h >> shift) & 63))
}

/// The bloom filter of a `TAGS` value (`:tag1:tag2:`); 0 for none.
pub fn tags_bloom(tags: &[u8]) -> u64 {
    tags.split(|&b| b == b':')
        .filter(|t| !t.is_empty())
        .fold(0, |bits, t| bits | tag_bits(t))
}

/// The NUL-terminated strings of `data` (a last string without NUL is
/// ignored: it cannot come from our own wire forms).
fn strings(data: &[u8]) -> impl Iterator<Item = &[u8]> + Clone {
    let mut rest = data;
    core::iter::from_fn(move || {
        let n = rest.iter().position(|&b| b == 0)?;
        let s = &rest[..n];
        rest = &rest[n + 1..];
        Some(s)
    })
}

fn key_of(entry: &[u8]) -> Option<&[u8]> {
    let eq = entry.iter().position(|&b| b == b'=')?;
    (eq > 0).then_some(&entry[..eq])
}

/// The properties of an event, deduplicated: each `KEY=VALUE` entry whose
/// key does not come again later. Borrowed, allocation-free; O(n²) in the
/// number of fields, which the kernel caps at 64 (plus the `ENV{}` ones).
#[derive(Clone)]
pub struct Properties<'a> {
    header: &'a [u8],
    fields: &'a [u8],
    extra: &'a [u8],
}

impl<'a> Properties<'a> {
    /// Splits `raw` (`ACTION@DEVPATH\0KEY=VALUE\0...`) and appends the
    /// entries of `extra` (`KEY=VALUE\0...`).
    pub fn new(raw: &'a [u8], extra: &'a [u8]) -> Result<Properties<'a>, EncodeError> {
        let n = raw
            .iter()
            .position(|&b| b == 0)
            .ok_or(EncodeError::NoHeader)?;
        let header = &raw[..n];
        if !header.contains(&b'@') {
            return Err(EncodeError::NoHeader);
        }
        Ok(Properties {
            header,
            fields: &raw[n + 1..],
            extra,
        })
    }

    fn all(&self) -> impl Iterator<Item = &'a [u8]> + Clone {
        strings(self.fields).chain(strings(self.extra))
    }

    /// Each entry that counts, in order.
    pub fn entries(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        let all = self.all();
        let mut rest = all.clone();
        all.filter_map(move |e| {
            rest.next();
            let k = key_of(e)?;
            let later = rest.clone().any(|l| key_of(l) == Some(k));
            (!later).then_some(e)
        })
    }

    /// The last value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&'a [u8]> {
        self.all()
            .filter(|e| key_of(e) == Some(key))
            .last()
            .map(|e| &e[key.len() + 1..])
    }
}

/// A writer over the caller's buffer that counts what would not fit.
struct Out<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl Out<'_> {
    fn put(&mut self, parts: &[&[u8]]) {
        for p in parts {
            let end = self.len + p.len();
            if let Some(dst) = self.buf.get_mut(self.len..end) {
                dst.copy_from_slice(p);
            }
            self.len = end;
        }
    }

    fn done(self) -> Result<usize, EncodeError> {
        if self.len > self.buf.len() {
            Err(EncodeError::TooLarge { needed: self.len })
        } else {
            Ok(self.len)
        }
    }
}

/// Encodes in the kernel's format: the header of `raw`, then each property.
/// See [`Properties::new`] for `raw` and `extra`.
pub fn encode_kernel(buf: &mut [u8], raw: &[u8], extra: &[u8]) -> Result<usize, EncodeError> {
    let p = Properties::new(raw, extra)?;
    let mut out = Out { buf, len: 0 };
    out.put(&[p.header, b"\0"]);
    for e in p.entries() {
        out.put(&[e, b"\0"]);
    }
    out.done()
}

/// Encodes in libudev's format. `usec_initialized`: written as
/// `USEC_INITIALIZED` unless the event carries one already.
pub fn encode_udev(
    buf: &mut [u8],
    raw: &[u8],
    extra: &[u8],
    usec_initialized: Option<u64>,
) -> Result<usize, EncodeError> {
    let p = Properties::new(raw, extra)?;
    let hash = |key: &[u8]| p.get(key).map_or(0, murmur2);
    let bloom = p.get(b"TAGS").map_or(0, tags_bloom);
    let mut out = Out { buf, len: 0 };
    // the properties' length is only known at the end: written last
    out.put(&[
        UDEV_PREFIX,
        &UDEV_MAGIC.to_be_bytes(),
        &(UDEV_HEADER_LEN as u32).to_ne_bytes(),
        &(UDEV_HEADER_LEN as u32).to_ne_bytes(),
        &0u32.to_ne_bytes(),
        &hash(b"SUBSYSTEM").to_be_bytes(),
        &hash(b"DEVTYPE").to_be_bytes(),
        &((bloom >> 32) as u32).to_be_bytes(),
        &(bloom as u32).to_be_bytes(),
    ]);
    for e in p.entries() {
        out.put(&[e, b"\0"]);
    }
    if let Some(usec) = usec_initialized.filter(|_| p.get(b"USEC_INITIALIZED").is_none()) {
        let mut digits = [0u8; 20];
        out.put(&[b"USEC_INITIALIZED=", decimal(usec, &mut digits), b"\0"]);
    }
    let props_len = (out.len - UDEV_HEADER_LEN) as u32;
    if let Some(dst) = out.buf.get_mut(20..24) {
        dst.copy_from_slice(&props_len.to_ne_bytes());
    }
    out.done()
}

fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &digits[i..];
        }
    }
}

/// A checked view of a libudev datagram, as a receiver reads it (for tests
/// and for `udev` datagrams met elsewhere).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdevDatagram<'a> {
    /// The subsystem hash, host order.
    pub subsystem_hash: u32,
    /// The devtype hash, host order.
    pub devtype_hash: u32,
    /// The tag bloom filter.
    pub tag_bloom: u64,
    /// The `KEY=VALUE\0` properties.
    pub properties: &'a [u8],
}

/// Reads a libudev datagram; `None` if it is not one (prefix, magic,
/// offsets), as libudev's receiver would refuse it.
pub fn parse_udev(d: &[u8]) -> Option<UdevDatagram<'_>> {
    let word = |at: usize| -> Option<[u8; 4]> { d.get(at..at + 4)?.try_into().ok() };
    if d.get(..8)? != UDEV_PREFIX || u32::from_be_bytes(word(8)?) != UDEV_MAGIC {
        return None;
    }
    let off = u32::from_ne_bytes(word(16)?) as usize;
    let len = u32::from_ne_bytes(word(20)?) as usize;
    let properties = d.get(off..off.checked_add(len)?)?;
    Some(UdevDatagram {
        subsystem_hash: u32::from_be_bytes(word(24)?),
        devtype_hash: u32::from_be_bytes(word(28)?),
        tag_bloom: u64::from(u32::from_be_bytes(word(32)?)) << 32
            | u64::from(u32::from_be_bytes(word(36)?)),
        properties,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uevent::Uevent;

    // A real kernel event (tap device created by `ip tuntap add`), with two
    // ENV{} assignments appended the way `build_job` does.
    const RAW: &[u8] = b"add@/devices/virtual/net/tap0\0\
ACTION=add\0DEVPATH=/devices/virtual/net/tap0\0SUBSYSTEM=net\0\
INTERFACE=tap0\0IFINDEX=7\0SEQNUM=4242\0\
ROLE=uplink\0INTERFACE=wan0\0";

    #[test]
    fn murmur2_vectors() {
        // Computed with an independent Python implementation of MurmurHash2
        // (seed 0, little-endian blocks); checked end to end by libudev's
        // own socket filter in tests/broadcast.rs.
        if cfg!(target_endian = "little") {
            assert_eq!(murmur2(b""), 0);
            assert_eq!(murmur2(b"a"), 0x9268_5f5e);
            assert_eq!(murmur2(b"net"), 0xa74d_3cc8);
            assert_eq!(murmur2(b"usb"), 0x0577_c5e5);
            assert_eq!(murmur2(b"block"), 0xf003_1db7);
            assert_eq!(murmur2(b"usb_device"), 0x27f8_f50c);
            assert_eq!(tag_bits(b"systemd"), 0x0200_0400_1080_0000);
            assert_eq!(
                tags_bloom(b":systemd:seat:"),
                0x0208_0400_10c0_0001,
                "two tags: the union of their bits"
            );
        }
        assert_eq!(tags_bloom(b""), 0);
        assert_eq!(tags_bloom(b"::"), 0);
    }

    #[test]
    fn properties_keep_the_last_value_of_a_key() {
        let p = Properties::new(RAW, b"").unwrap();
        let e: Vec<&[u8]> = p.entries().collect();
        assert_eq!(
            e,
            [
                &b"ACTION=add"[..],
                b"DEVPATH=/devices/virtual/net/tap0",
                b"SUBSYSTEM=net",
                b"IFINDEX=7",
                b"SEQNUM=4242",
                b"ROLE=uplink",
                b"INTERFACE=wan0",
            ]
        );
        assert_eq!(p.get(b"INTERFACE"), Some(&b"wan0"[..]));
        assert_eq!(p.get(b"DEVTYPE"), None);
    }

    #[test]
    fn udev_header_bytes() {
        let mut buf = [0u8; 512];
        let n = encode_udev(&mut buf, RAW, b"DEVTYPE=wlan\0", Some(1_234_567)).unwrap();
        let d = &buf[..n];
        assert_eq!(&d[..8], b"libudev\0");
        assert_eq!(&d[8..12], &[0xfe, 0xed, 0xca, 0xfe], "magic, network order");
        assert_eq!(&d[12..16], &40u32.to_ne_bytes(), "header size");
        assert_eq!(&d[16..20], &40u32.to_ne_bytes(), "properties offset");
        assert_eq!(
            d[20..24],
            ((n - 40) as u32).to_ne_bytes(),
            "properties length"
        );
        assert_eq!(&d[24..28], &murmur2(b"net").to_be_bytes());
        assert_eq!(&d[28..32], &murmur2(b"wlan").to_be_bytes());
        assert_eq!(&d[32..40], &[0; 8], "no TAGS: empty bloom filter");
        assert_eq!(
            &d[40..],
            &b"ACTION=add\0DEVPATH=/devices/virtual/net/tap0\0SUBSYSTEM=net\0\
IFINDEX=7\0SEQNUM=4242\0ROLE=uplink\0INTERFACE=wan0\0DEVTYPE=wlan\0\
USEC_INITIALIZED=1234567\0"[..]
        );
        let v = parse_udev(d).unwrap();
        assert_eq!(v.subsystem_hash, murmur2(b"net"));
        assert_eq!(v.devtype_hash, murmur2(b"wlan"));
        assert_eq!(v.properties, &d[40..]);
    }

    #[test]
    fn udev_tags_fill_the_bloom_filter_and_usec_is_not_doubled() {
        let mut buf = [0u8; 512];
        let n = encode_udev(
            &mut buf,
            RAW,
            b"TAGS=:systemd:seat:\0USEC_INITIALIZED=5\0",
            Some(9),
        )
        .unwrap();
        let v = parse_udev(&buf[..n]).unwrap();
        assert_eq!(v.tag_bloom, tag_bits(b"systemd") | tag_bits(b"seat"));
        assert_eq!(v.devtype_hash, 0, "no DEVTYPE: hash 0");
        let usec = strings(v.properties)
            .filter(|e| e.starts_with(b"USEC_INITIALIZED="))
            .count();
        assert_eq!(usec, 1);
    }

    #[test]
    fn kernel_format_round_trips_through_the_parser() {
        let mut buf = [0u8; 512];
        let n = encode_kernel(&mut buf, RAW, b"HOTPLUG_ROLE=x\0").unwrap();
        let ev = Uevent::parse(&buf[..n]).unwrap();
        assert_eq!(ev.action(), "add");
        assert_eq!(ev.devpath(), "/devices/virtual/net/tap0");
        assert_eq!(ev.subsystem(), Some("net"));
        assert_eq!(ev.seqnum(), Some(4242));
        assert_eq!(ev.get_str("INTERFACE"), Some("wan0"));
        assert_eq!(ev.get_str("ROLE"), Some("uplink"));
        assert_eq!(ev.get_str("HOTPLUG_ROLE"), Some("x"));
        assert_eq!(
            ev.fields().iter().filter(|f| f.key == "INTERFACE").count(),
            1,
            "an overridden key appears once"
        );
        drop(ev);
        // an unchanged kernel event comes out byte for byte
        let plain = b"remove@/devices/virtual/net/tap0\0ACTION=remove\0\
DEVPATH=/devices/virtual/net/tap0\0SUBSYSTEM=net\0SEQNUM=7\0";
        let n = encode_kernel(&mut buf, plain, b"").unwrap();
        assert_eq!(&buf[..n], plain);
    }

    #[test]
    fn too_small_a_buffer_is_an_error_not_a_cut() {
        let mut buf = [0u8; 64];
        let needed = encode_udev(&mut [0u8; 512], RAW, b"", None).unwrap();
        assert_eq!(
            encode_udev(&mut buf, RAW, b"", None),
            Err(EncodeError::TooLarge { needed })
        );
        assert!(matches!(
            encode_kernel(&mut buf[..10], RAW, b""),
            Err(EncodeError::TooLarge { .. })
        ));
        assert_eq!(
            encode_kernel(&mut buf, b"no header", b""),
            Err(EncodeError::NoHeader)
        );
        assert_eq!(
            encode_kernel(&mut buf, b"noat\0A=b\0", b""),
            Err(EncodeError::NoHeader)
        );
    }

    #[test]
    fn parse_udev_refuses_what_libudev_refuses() {
        let mut buf = [0u8; 512];
        let n = encode_udev(&mut buf, RAW, b"", None).unwrap();
        assert!(parse_udev(&buf[..n]).is_some());
        let mut bad = buf;
        bad[8] = 0;
        assert!(parse_udev(&bad[..n]).is_none(), "magic");
        assert!(parse_udev(&buf[..30]).is_none(), "short");
        assert!(parse_udev(&buf[..n - 1]).is_none(), "length beyond the end");
        assert!(parse_udev(RAW).is_none(), "kernel format");
    }

    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("udev"),
            Ok(Target {
                format: Format::Udev,
                groups: 2
            })
        );
        assert_eq!(
            Target::parse("kernel:4"),
            Ok(Target {
                format: Format::Kernel,
                groups: 4
            })
        );
        assert_eq!(Target::parse("kernel:0x6").map(|t| t.groups), Ok(6));
        assert_eq!(Target::parse("kernel:1"), Err(TargetError::KernelGroup));
        assert_eq!(Target::parse("kernel:0"), Err(TargetError::BadMask));
        assert_eq!(Target::parse("kernel:x"), Err(TargetError::BadMask));
        assert_eq!(Target::parse("kernel"), Err(TargetError::Unknown));
        assert_eq!(Target::parse("mqtt"), Err(TargetError::Unknown));
    }
}
