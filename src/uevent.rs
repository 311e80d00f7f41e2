//! The wire layer: one kernel uevent datagram → a borrowed, checked view.
//!
//! Pure: no I/O, no allocation, no panics. Every datagram that reaches
//! [`Uevent::parse`] comes from an untrusted socket (or a file); the parser
//! either returns a view whose accessors cannot fail, or a small `Copy` error
//! saying what was wrong and at which byte.
//!
//! # The format
//! Kernel: `lib/kobject_uevent.c` (`kobject_uevent_env`, netlink part):
//!
//! ```text
//! ACTION@DEVPATH \0 ACTION=... \0 DEVPATH=... \0 SUBSYSTEM=... \0 ... SEQNUM=N \0
//! ```
//!
//! Every string, the last included, ends in NUL; there is no binary header.
//! The header is split at the *first* `@`: device-tree paths contain `@`
//! further on (`/devices/platform/soc@0/...`). A field's value may contain `=`;
//! the key ends at the first one. A key may repeat in a forged datagram:
//! [`Uevent::get`] returns the last occurrence.
//!
//! What is text: the action, the devpath, every key and the `SUBSYSTEM` value
//! must be UTF-8 (the kernel builds them from C identifiers and kobject
//! names). Other values are kept as bytes: device names read from a
//! Bluetooth or HID device can be anything. Output code decides how to show
//! them.
//!
//! udev's rebroadcasts on group 2 start with `libudev\0` and a binary header;
//! they are not kernel events and are refused by name
//! ([`ParseErrorKind::UdevRebroadcast`]).

use core::fmt;

use crate::limits::MAX_FIELDS;

/// One `KEY=VALUE` field, in wire order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field<'a> {
    /// The key: non-empty UTF-8, never containing `=` or NUL.
    pub key: &'a str,
    /// The value: any bytes but NUL (possibly empty).
    pub value: &'a [u8],
}

impl<'a> Field<'a> {
    /// The value as text, if it is valid UTF-8.
    pub fn value_str(&self) -> Option<&'a str> {
        core::str::from_utf8(self.value).ok()
    }
}

/// A parsed kernel uevent, borrowing the datagram it was parsed from.
///
/// Invariants (checked by [`Uevent::parse`]): the header's action and devpath
/// equal the `ACTION` and `DEVPATH` fields; at most [`MAX_FIELDS`]
/// fields; `SEQNUM`, if present, is a decimal `u64`; `SUBSYSTEM`, if present,
/// is UTF-8.
#[derive(Clone, Debug)]
pub struct Uevent<'a> {
    action: &'a str,
    devpath: &'a str,
    subsystem: Option<&'a str>,
    seqnum: Option<u64>,
    fields: heapless::Vec<Field<'a>, MAX_FIELDS>,
    raw: &'a [u8],
}

/// What was wrong with a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// Zero bytes.
    Empty,
    /// The header is empty, or has an empty action or devpath (`@/x`, `add@`).
    Short,
    /// udev's `libudev\0` rebroadcast format (netlink group 2), not a kernel event.
    UdevRebroadcast,
    /// The first string has no `@` between action and devpath.
    MissingAt,
    /// The last string is not NUL-terminated (the datagram was cut, or forged).
    MissingTrailingNul,
    /// The `ACTION` field is missing or differs from the header's action.
    ActionMismatch,
    /// The `DEVPATH` field is missing or differs from the header's devpath.
    DevpathMismatch,
    /// A field has no `=`.
    NoEquals,
    /// A field starts with `=`.
    EmptyKey,
    /// More than [`MAX_FIELDS`] fields.
    TooManyFields,
    /// The header, a key or the `SUBSYSTEM` value is not UTF-8.
    InvalidUtf8,
    /// `SEQNUM` is not a decimal number that fits in 64 bits.
    BadSeqnum,
}

/// A parse error: what, and the byte offset of the string it was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// What was wrong.
    pub kind: ParseErrorKind,
    /// Offset in the datagram of the start of the offending string.
    pub offset: usize,
}

impl ParseErrorKind {
    /// A short lower-case description, for logs and counters.
    pub fn describe(self) -> &'static str {
        match self {
            ParseErrorKind::Empty => "empty datagram",
            ParseErrorKind::Short => "header has an empty action or devpath",
            ParseErrorKind::UdevRebroadcast => {
                "udev rebroadcast (libudev format, netlink group 2), not a kernel uevent"
            }
            ParseErrorKind::MissingAt => "header has no '@' between action and devpath",
            ParseErrorKind::MissingTrailingNul => "last field is not NUL-terminated",
            ParseErrorKind::ActionMismatch => "ACTION field missing or differs from the header",
            ParseErrorKind::DevpathMismatch => "DEVPATH field missing or differs from the header",
            ParseErrorKind::NoEquals => "field without '='",
            ParseErrorKind::EmptyKey => "field with an empty key",
            ParseErrorKind::TooManyFields => {
                "more than 80 fields (UEVENT_NUM_ENVP 64 + MAX_ENV_ASSIGN 16)"
            }
            ParseErrorKind::InvalidUtf8 => "invalid UTF-8 in the header, a key or SUBSYSTEM",
            ParseErrorKind::BadSeqnum => "SEQNUM is not a 64-bit decimal number",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.kind.describe(), self.offset)
    }
}

impl std::error::Error for ParseError {}

const UDEV_MAGIC: &[u8] = b"libudev\0";

impl<'a> Uevent<'a> {
    /// Parses one datagram. Never panics, never allocates; work is linear in
    /// the datagram's length.
    pub fn parse(data: &'a [u8]) -> Result<Uevent<'a>, ParseError> {
        let mut ev = Uevent::unparsed(data);
        ev.fill()?;
        Ok(ev)
    }

    /// [`Uevent::parse`], then `f` on the event where it was parsed: what
    /// the receive path uses, as returning the event moves (copies) its
    /// ~4 KB field array once more per event.
    pub fn parse_with<R>(
        data: &'a [u8],
        f: impl FnOnce(&Uevent<'a>) -> R,
    ) -> Result<R, ParseError> {
        let mut ev = Uevent::unparsed(data);
        ev.fill()?;
        Ok(f(&ev))
    }

    fn unparsed(data: &'a [u8]) -> Uevent<'a> {
        Uevent {
            action: "",
            devpath: "",
            subsystem: None,
            seqnum: None,
            fields: heapless::Vec::new(),
            raw: data,
        }
    }

    /// Parses `self.raw` into the other fields (all empty before).
    fn fill(&mut self) -> Result<(), ParseError> {
        let data = self.raw;
        let err = |kind, offset| Err(ParseError { kind, offset });
        if data.is_empty() {
            return err(ParseErrorKind::Empty, 0);
        }
        if data.starts_with(UDEV_MAGIC) {
            return err(ParseErrorKind::UdevRebroadcast, 0);
        }
        if data[data.len() - 1] != 0 {
            // Point at the start of the unterminated string.
            let start = data.iter().rposition(|&b| b == 0).map_or(0, |i| i + 1);
            return err(ParseErrorKind::MissingTrailingNul, start);
        }
        // One pass validates the whole datagram as UTF-8 (almost always
        // true: kernel uevents are ASCII). Then every key, the header and
        // SUBSYSTEM are slices of it at ASCII separators, so they need no
        // check of their own; otherwise each is checked alone, and values
        // may be any bytes.
        let text = core::str::from_utf8(data).ok();
        let as_str = |start: usize, s: &'a [u8]| -> Option<&'a str> {
            match text {
                Some(t) => t.get(start..start + s.len()),
                None => core::str::from_utf8(s).ok(),
            }
        };
        // `data` ends in NUL, so splitting on NUL gives the strings and one
        // empty tail, which `strings` leaves out.
        let mut strings = Strings { data, pos: 0 };
        let (_, header) = strings.next().unwrap_or((0, &[]));
        if header.is_empty() {
            return err(ParseErrorKind::Short, 0);
        }
        let at = match header.iter().position(|&b| b == b'@') {
            Some(at) => at,
            None => return err(ParseErrorKind::MissingAt, 0),
        };
        let (action, devpath) = (&header[..at], &header[at + 1..]);
        if action.is_empty() || devpath.is_empty() {
            return err(ParseErrorKind::Short, 0);
        }
        let (Some(action), Some(devpath)) = (as_str(0, action), as_str(at + 1, devpath)) else {
            return err(ParseErrorKind::InvalidUtf8, 0);
        };

        self.action = action;
        self.devpath = devpath;
        let ev = self;
        let (mut saw_action, mut saw_devpath) = (None, None);
        for (offset, s) in strings {
            let Some(eq) = s.iter().position(|&b| b == b'=') else {
                return err(ParseErrorKind::NoEquals, offset);
            };
            if eq == 0 {
                return err(ParseErrorKind::EmptyKey, offset);
            }
            let Some(key) = as_str(offset, &s[..eq]) else {
                return err(ParseErrorKind::InvalidUtf8, offset);
            };
            let value = &s[eq + 1..];
            // The four keys the parser keeps, told apart by length and first
            // byte before any comparison of the whole key.
            match (key.len(), s[0]) {
                (6, b'A') if key == "ACTION" => saw_action = Some((value, offset)),
                (7, b'D') if key == "DEVPATH" => saw_devpath = Some((value, offset)),
                (9, b'S') if key == "SUBSYSTEM" => match as_str(offset + eq + 1, value) {
                    Some(v) => ev.subsystem = Some(v),
                    None => return err(ParseErrorKind::InvalidUtf8, offset),
                },
                (6, b'S') if key == "SEQNUM" => match parse_u64(value) {
                    Some(n) => ev.seqnum = Some(n),
                    None => return err(ParseErrorKind::BadSeqnum, offset),
                },
                _ => {}
            }
            if ev.fields.push(Field { key, value }).is_err() {
                return err(ParseErrorKind::TooManyFields, offset);
            }
        }
        // The last occurrence counts, as for `get`.
        match saw_action {
            Some((v, _)) if v == action.as_bytes() => {}
            Some((_, off)) => return err(ParseErrorKind::ActionMismatch, off),
            None => return err(ParseErrorKind::ActionMismatch, 0),
        }
        match saw_devpath {
            Some((v, _)) if v == devpath.as_bytes() => {}
            Some((_, off)) => return err(ParseErrorKind::DevpathMismatch, off),
            None => return err(ParseErrorKind::DevpathMismatch, 0),
        }
        Ok(())
    }

    /// `add`, `remove`, `change`, `move`, `online`, `offline`, `bind`, `unbind`.
    pub fn action(&self) -> &'a str {
        self.action
    }

    /// The kobject path below `/sys`, e.g. `/devices/virtual/net/lo`.
    pub fn devpath(&self) -> &'a str {
        self.devpath
    }

    /// The `SUBSYSTEM` value, if present.
    pub fn subsystem(&self) -> Option<&'a str> {
        self.subsystem
    }

    /// The `SEQNUM` value, if present (the kernel always sends it).
    pub fn seqnum(&self) -> Option<u64> {
        self.seqnum
    }

    /// The last component of the devpath (udev's `KERNEL`, `$kernel`).
    pub fn kernel_name(&self) -> &'a str {
        match self.devpath.rfind('/') {
            Some(i) => &self.devpath[i + 1..],
            None => self.devpath,
        }
    }

    /// The value of the last field named `key`.
    pub fn get(&self, key: &str) -> Option<&'a [u8]> {
        self.fields
            .iter()
            .rev()
            .find(|f| f.key == key)
            .map(|f| f.value)
    }

    /// [`Uevent::get`], if the value is UTF-8.
    pub fn get_str(&self, key: &str) -> Option<&'a str> {
        self.get(key).and_then(|v| core::str::from_utf8(v).ok())
    }

    /// All fields in wire order, repeated keys included.
    pub fn fields(&self) -> &[Field<'a>] {
        &self.fields
    }

    /// The datagram this view was parsed from.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }
}

/// Iterates over the NUL-terminated strings of a buffer that ends in NUL,
/// yielding each with its offset.
struct Strings<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Strings<'a> {
    type Item = (usize, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.data.get(self.pos..)?;
        // the standard library's word-at-a-time search for the NUL
        let len = core::ffi::CStr::from_bytes_until_nul(rest)
            .ok()?
            .to_bytes()
            .len();
        let start = self.pos;
        self.pos += len + 1;
        Some((start, &rest[..len]))
    }
}

/// Parses a decimal `u64` with no sign, no spaces and at least one digit.
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(n)
}

/// Appends the wire form of an event (`ACTION@DEVPATH\0` then each
/// `KEY=VALUE\0`) to `out`: how replay and resync turn events that did not
/// come from the socket into the one representation everything else uses.
/// `ACTION` and `DEVPATH` fields are written first from the arguments;
/// fields with those keys in `fields` are skipped. Returns `false` (and leaves
/// `out` with a partial event) if it does not fit.
pub fn encode<'f, const N: usize>(
    out: &mut heapless::Vec<u8, N>,
    action: &str,
    devpath: &str,
    fields: impl IntoIterator<Item = (&'f str, &'f [u8])>,
) -> bool {
    let mut put = |parts: &[&[u8]]| parts.iter().all(|p| out.extend_from_slice(p).is_ok());
    let mut ok = put(&[action.as_bytes(), b"@", devpath.as_bytes(), b"\0"])
        && put(&[b"ACTION=", action.as_bytes(), b"\0"])
        && put(&[b"DEVPATH=", devpath.as_bytes(), b"\0"]);
    for (k, v) in fields {
        if !ok {
            break;
        }
        if k == "ACTION" || k == "DEVPATH" {
            continue;
        }
        ok = put(&[k.as_bytes(), b"=", v, b"\0"]);
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use ParseErrorKind::*;

    /// A real datagram, captured on the development VM (kernel 6.18):
    /// `echo change > /sys/class/net/lo/uevent`.
    const LO_CHANGE: &[u8] = b"change@/devices/virtual/net/lo\0\
        ACTION=change\0DEVPATH=/devices/virtual/net/lo\0SUBSYSTEM=net\0\
        INTERFACE=lo\0IFINDEX=1\0SEQNUM=4711\0";

    fn kind(data: &[u8]) -> ParseErrorKind {
        Uevent::parse(data).unwrap_err().kind
    }

    fn offset(data: &[u8]) -> usize {
        Uevent::parse(data).unwrap_err().offset
    }

    #[test]
    fn parses_a_real_event() {
        let ev = Uevent::parse(LO_CHANGE).unwrap();
        assert_eq!(ev.action(), "change");
        assert_eq!(ev.devpath(), "/devices/virtual/net/lo");
        assert_eq!(ev.subsystem(), Some("net"));
        assert_eq!(ev.seqnum(), Some(4711));
        assert_eq!(ev.kernel_name(), "lo");
        assert_eq!(ev.get("INTERFACE"), Some(&b"lo"[..]));
        assert_eq!(ev.get_str("IFINDEX"), Some("1"));
        assert_eq!(ev.get("NOPE"), None);
        let keys: Vec<&str> = ev.fields().iter().map(|f| f.key).collect();
        assert_eq!(
            keys,
            [
                "ACTION",
                "DEVPATH",
                "SUBSYSTEM",
                "INTERFACE",
                "IFINDEX",
                "SEQNUM"
            ]
        );
        assert_eq!(ev.raw(), LO_CHANGE);
    }

    #[test]
    fn header_splits_at_the_first_at_sign() {
        // Device-tree paths contain '@' (real: i.MX8 and Qualcomm SoCs).
        let d = b"add@/devices/platform/soc@0/30800000.bus@30800000/x\0\
            ACTION=add\0DEVPATH=/devices/platform/soc@0/30800000.bus@30800000/x\0\
            SUBSYSTEM=platform\0SEQNUM=1\0";
        let ev = Uevent::parse(d).unwrap();
        assert_eq!(ev.action(), "add");
        assert_eq!(
            ev.devpath(),
            "/devices/platform/soc@0/30800000.bus@30800000/x"
        );
        assert_eq!(ev.kernel_name(), "x");
    }

    #[test]
    fn values_may_contain_equals_and_be_empty() {
        let d = b"add@/d\0ACTION=add\0DEVPATH=/d\0A=b=c\0EMPTY=\0";
        let ev = Uevent::parse(d).unwrap();
        assert_eq!(ev.get("A"), Some(&b"b=c"[..]));
        assert_eq!(ev.get("EMPTY"), Some(&b""[..]));
        assert_eq!(ev.seqnum(), None);
        assert_eq!(ev.subsystem(), None);
    }

    #[test]
    fn repeated_key_last_wins_and_wire_order_is_kept() {
        let d = b"add@/d\0ACTION=add\0DEVPATH=/d\0K=1\0X=y\0K=2\0";
        let ev = Uevent::parse(d).unwrap();
        assert_eq!(ev.get("K"), Some(&b"2"[..]));
        let v: Vec<&[u8]> = ev.fields().iter().map(|f| f.value).collect();
        assert_eq!(v, [&b"add"[..], b"/d", b"1", b"y", b"2"]);
    }

    #[test]
    fn values_may_be_any_bytes_but_text_must_be_utf8() {
        // A Bluetooth HID name with a Latin-1 byte: kept as bytes.
        let d = b"add@/d\0ACTION=add\0DEVPATH=/d\0NAME=\"caf\xe9\"\0";
        let ev = Uevent::parse(d).unwrap();
        assert_eq!(ev.get("NAME"), Some(&b"\"caf\xe9\""[..]));
        assert_eq!(ev.get_str("NAME"), None);
        // ... but not in a key, the header or SUBSYSTEM.
        assert_eq!(
            kind(b"add@/d\0ACTION=add\0DEVPATH=/d\0K\xff=1\0"),
            InvalidUtf8
        );
        assert_eq!(offset(b"add@/d\0ACTION=add\0DEVPATH=/d\0K\xff=1\0"), 29);
        assert_eq!(
            kind(b"add@/d\xff\0ACTION=add\0DEVPATH=/d\xff\0"),
            InvalidUtf8
        );
        assert_eq!(
            kind(b"add@/d\0ACTION=add\0DEVPATH=/d\0SUBSYSTEM=\xff\0"),
            InvalidUtf8
        );
    }

    #[test]
    fn error_empty() {
        assert_eq!(kind(b""), Empty);
    }

    #[test]
    fn error_short_header() {
        assert_eq!(kind(b"@/d\0ACTION=\0DEVPATH=/d\0"), Short);
        assert_eq!(kind(b"add@\0ACTION=add\0DEVPATH=\0"), Short);
        // a lone NUL: an empty header
        assert_eq!(kind(b"\0"), Short);
    }

    #[test]
    fn error_udev_rebroadcast_is_refused_by_name() {
        // "libudev\0" then a binary header: what udevd sends on group 2.
        let mut d = b"libudev\0".to_vec();
        d.extend_from_slice(&[0xfe, 0xed, 0xca, 0xfe, 40, 0, 0, 0]);
        d.extend_from_slice(b"ACTION=add\0");
        assert_eq!(kind(&d), UdevRebroadcast);
    }

    #[test]
    fn error_missing_at() {
        assert_eq!(kind(b"add/devices/x\0ACTION=add\0"), MissingAt);
    }

    #[test]
    fn error_missing_trailing_nul() {
        assert_eq!(kind(b"add@/d\0ACTION=add\0DEVPATH=/d"), MissingTrailingNul);
        assert_eq!(offset(b"add@/d\0ACTION=add\0DEVPATH=/d"), 18);
        assert_eq!(kind(b"add@/d"), MissingTrailingNul);
    }

    #[test]
    fn error_header_disagrees() {
        assert_eq!(kind(b"add@/d\0ACTION=remove\0DEVPATH=/d\0"), ActionMismatch);
        assert_eq!(kind(b"add@/d\0DEVPATH=/d\0"), ActionMismatch);
        assert_eq!(kind(b"add@/d\0ACTION=add\0DEVPATH=/e\0"), DevpathMismatch);
        assert_eq!(kind(b"add@/d\0ACTION=add\0"), DevpathMismatch);
        // a forged second ACTION: the last one counts, as for get()
        assert_eq!(
            kind(b"add@/d\0ACTION=add\0DEVPATH=/d\0ACTION=remove\0"),
            ActionMismatch
        );
    }

    #[test]
    fn error_field_without_equals() {
        // Seen in a 2.6.24 capture transcribed from a forum (a bare "sd").
        assert_eq!(kind(b"add@/d\0ACTION=add\0DEVPATH=/d\0sd\0"), NoEquals);
        assert_eq!(offset(b"add@/d\0ACTION=add\0DEVPATH=/d\0sd\0"), 29);
        // two NULs in a row: an empty field
        assert_eq!(kind(b"add@/d\0\0ACTION=add\0"), NoEquals);
    }

    #[test]
    fn error_empty_key() {
        assert_eq!(kind(b"add@/d\0ACTION=add\0DEVPATH=/d\0=x\0"), EmptyKey);
    }

    #[test]
    fn error_too_many_fields() {
        let mut d = b"add@/d\0ACTION=add\0DEVPATH=/d\0".to_vec();
        for i in 0..(crate::limits::UEVENT_NUM_ENVP - 2) {
            d.extend_from_slice(format!("K{i}=v\0").as_bytes());
        }
        assert!(Uevent::parse(&d).is_ok(), "a full kernel event: 64 fields");
        // plus everything the rules may append: ENV{} assignments, imported
        // properties, DEVLINKS/TAGS/CURRENT_TAGS (a builtin's view of the
        // event must parse)
        for i in 0..(MAX_FIELDS - crate::limits::UEVENT_NUM_ENVP) {
            d.extend_from_slice(format!("E{i}=v\0").as_bytes());
        }
        assert!(Uevent::parse(&d).is_ok(), "exactly MAX_FIELDS is fine");
        d.extend_from_slice(b"ONE=more\0");
        assert_eq!(kind(&d), TooManyFields);
    }

    #[test]
    fn error_bad_seqnum() {
        let base = b"add@/d\0ACTION=add\0DEVPATH=/d\0SEQNUM=".to_vec();
        for bad in [&b""[..], b"-1", b"12a", b" 1", b"18446744073709551616"] {
            let mut d = base.clone();
            d.extend_from_slice(bad);
            d.push(0);
            assert_eq!(kind(&d), BadSeqnum, "{:?}", String::from_utf8_lossy(bad));
        }
        let mut d = base.clone();
        d.extend_from_slice(b"18446744073709551615\0");
        assert_eq!(Uevent::parse(&d).unwrap().seqnum(), Some(u64::MAX));
    }

    #[test]
    fn every_prefix_and_every_single_byte_change_is_handled() {
        // Exhaustive over one real datagram: never panics, and a datagram
        // that parses has consistent accessors.
        for n in 0..=LO_CHANGE.len() {
            let _ = Uevent::parse(&LO_CHANGE[..n]);
        }
        let mut d = LO_CHANGE.to_vec();
        for i in 0..d.len() {
            let orig = d[i];
            for b in [0u8, b'@', b'=', 0xff, b'x'] {
                d[i] = b;
                if let Ok(ev) = Uevent::parse(&d) {
                    assert_eq!(ev.get("ACTION"), Some(ev.action().as_bytes()));
                    assert_eq!(ev.get("DEVPATH"), Some(ev.devpath().as_bytes()));
                }
            }
            d[i] = orig;
        }
    }

    #[test]
    fn encode_round_trips() {
        let mut buf: heapless::Vec<u8, 256> = heapless::Vec::new();
        let fields = [
            ("SUBSYSTEM", &b"net"[..]),
            ("ACTION", b"ignored"),
            ("X", b"1"),
        ];
        assert!(encode(&mut buf, "add", "/devices/x", fields));
        let ev = Uevent::parse(&buf).unwrap();
        assert_eq!(ev.action(), "add");
        assert_eq!(ev.subsystem(), Some("net"));
        assert_eq!(ev.fields().len(), 4);
        let mut small: heapless::Vec<u8, 8> = heapless::Vec::new();
        assert!(!encode(&mut small, "add", "/devices/x", []));
    }
}
