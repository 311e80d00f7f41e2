//! What `hotplugd monitor` prints: a `udevadm monitor --kernel --property`
//! style text block, or one JSON object per line; and which events it
//! prints ([`Filter`], decided before any formatting). Pure formatting into
//! a fixed buffer that holds many events; the loop writes the buffer out
//! once per drained batch (and whenever less than one worst-case event of
//! room is left).
//!
//! # Speed
//! Formatting copies runs: a string is scanned eight bytes at a time for a
//! byte that needs escaping (a control character, a quote, a backslash, or
//! a byte of 0x80 or more, which may start invalid UTF-8), and the clean run
//! before it is copied at once. Only the bytes found that way take the slow
//! path. Uevent values are almost always plain ASCII, so almost every field
//! is two copies.
//!
//! # Bytes that are not text
//! Values can hold any byte but NUL (see [`crate::uevent`]).
//! - JSON: valid UTF-8 is written as JSON strings are (with `\"`, `\\`, and
//!   `\n`, `\t`, ... or `\u00XX` for control characters); each byte that is
//!   not part of valid UTF-8 is written as `\udcXX`, a lone low surrogate
//!   (Python's "surrogateescape"). No valid text can produce one, so the
//!   original bytes can always be recovered, and `hotplugd replay` does so.
//! - Text: control characters, DEL and invalid UTF-8 are written as `\xNN`,
//!   so a device name cannot drive the terminal. Use `--json` for exact values.

use core::fmt::{self, Write};

use crate::uevent::Uevent;

/// The most one event can take once formatted: a datagram is at most
/// `RECV_BUFFER` (8192) bytes; no byte expands to more than 6 (`\udcXX`,
/// `\u001f`) in JSON or 4 (`\xNN`) in text; ACTION, DEVPATH and SUBSYSTEM
/// are printed twice (header and fields), at most the datagram again; the
/// quoting of a field is never longer than its `=` and NUL expanded; 256
/// covers the fixed text.
pub const EVENT_MAX: usize = 12 * crate::limits::RECV_BUFFER + 256;

/// Bytes of formatted events collected before a write: the output of a
/// drained batch goes out in writes of this size or less.
pub const OUT_BATCH: usize = 64 * 1024;

/// The output buffer: one batch plus room for one worst-case event, so an
/// event is never cut and the buffer is written before it could be.
pub const OUT_BUFFER: usize = OUT_BATCH + EVENT_MAX;

/// A fixed-size output buffer, allocated once.
pub struct OutBuf {
    buf: Box<[u8]>,
    len: usize,
    overflowed: bool,
}

impl Default for OutBuf {
    fn default() -> Self {
        OutBuf::new()
    }
}

impl OutBuf {
    /// Allocates the [`OUT_BUFFER`] bytes (once, at start).
    pub fn new() -> OutBuf {
        OutBuf {
            buf: vec![0u8; OUT_BUFFER].into_boxed_slice(),
            len: 0,
            overflowed: false,
        }
    }

    /// Empties the buffer.
    pub fn clear(&mut self) {
        self.len = 0;
        self.overflowed = false;
    }

    /// The bytes written since the last [`OutBuf::clear`].
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// True if something did not fit (cannot happen for one event; see
    /// [`OUT_BUFFER`]).
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// True when a batch is full: write it out before the next event
    /// (there is always room for one more, see [`OUT_BUFFER`]).
    pub fn batch_full(&self) -> bool {
        self.len >= OUT_BATCH
    }

    /// Forgets everything after the first `len` bytes (an event that did
    /// not fit, or one that must not be printed after all).
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            self.len = len;
        }
        self.overflowed = false;
    }

    #[inline]
    fn put(&mut self, b: &[u8]) -> fmt::Result {
        let end = self.len + b.len();
        match self.buf.get_mut(self.len..end) {
            Some(dst) => {
                dst.copy_from_slice(b);
                self.len = end;
                Ok(())
            }
            None => {
                self.overflowed = true;
                Err(fmt::Error)
            }
        }
    }

    /// Writes `n` in decimal (no `core::fmt` machinery on the hot path).
    fn put_u64(&mut self, mut n: u64) -> fmt::Result {
        let mut tmp = [0u8; 20];
        let mut i = tmp.len();
        loop {
            i -= 1;
            tmp[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.put(&tmp[i..])
    }
}

/// Which events `monitor` prints: udevadm's `--subsystem-match=SUBSYSTEM[/DEVTYPE]`
/// and `--property-match=KEY=VALUE`. Several subsystem matches are OR'd,
/// several property matches are OR'd, and an event must pass both kinds
/// (as `udevadm monitor` and `udevadm trigger` combine them). Subsystem and
/// devtype compare exactly (udev's `streq`); a property's VALUE is a glob
/// (`*`, `?`, `[...]`, `|` alternatives, as in rules). No match given:
/// every event passes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// (SUBSYSTEM, DEVTYPE) pairs.
    pub subsystems: Vec<(String, Option<String>)>,
    /// (KEY, VALUE glob) pairs.
    pub properties: Vec<(String, String)>,
}

impl Filter {
    /// True when no match was given.
    pub fn is_empty(&self) -> bool {
        self.subsystems.is_empty() && self.properties.is_empty()
    }

    /// Whether `ev` is printed. Never allocates.
    pub fn passes(&self, ev: &Uevent<'_>) -> bool {
        if !self.subsystems.is_empty() {
            let sub = ev.subsystem().unwrap_or("");
            let devtype = ev.get("DEVTYPE");
            let hit = self.subsystems.iter().any(|(s, t)| {
                s == sub
                    && match t {
                        None => true,
                        Some(t) => devtype == Some(t.as_bytes()),
                    }
            });
            if !hit {
                return false;
            }
        }
        if !self.properties.is_empty() {
            let hit = self.properties.iter().any(|(k, v)| {
                ev.get(k)
                    .is_some_and(|val| crate::rules::glob::matches(v.as_bytes(), val))
            });
            if !hit {
                return false;
            }
        }
        true
    }
}

impl Write for OutBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.put(s.as_bytes())
    }
}

/// Writes the text block for one event:
///
/// ```text
/// KERNEL[4711.123456] change   /devices/virtual/net/lo (net)
/// ACTION=change
/// DEVPATH=/devices/virtual/net/lo
/// ...
///
/// ```
pub fn text(out: &mut OutBuf, ev: &Uevent<'_>, uptime: (u64, u32)) -> fmt::Result {
    write!(
        out,
        "KERNEL[{}.{:06}] {:<8} ",
        uptime.0,
        uptime.1,
        ev.action()
    )?;
    text_bytes(out, ev.devpath().as_bytes())?;
    out.put(b" (")?;
    text_bytes(out, ev.subsystem().unwrap_or("").as_bytes())?;
    out.put(b")\n")?;
    for f in ev.fields() {
        text_bytes(out, f.key.as_bytes())?;
        out.put(b"=")?;
        text_bytes(out, f.value)?;
        out.put(b"\n")?;
    }
    out.put(b"\n")
}

/// Writes one JSON object and a newline:
/// `{"action":..,"devpath":..,"subsystem":..,"seqnum":N,"env":{KEY:VALUE,...}}`.
/// `subsystem` and `seqnum` are `null` when absent; `env` is in wire order
/// (a repeated key appears twice; readers that keep the last one agree with
/// hotplugd).
pub fn json(out: &mut OutBuf, ev: &Uevent<'_>) -> fmt::Result {
    out.put(b"{\"action\":")?;
    json_string(out, ev.action().as_bytes())?;
    out.put(b",\"devpath\":")?;
    json_string(out, ev.devpath().as_bytes())?;
    out.put(b",\"subsystem\":")?;
    match ev.subsystem() {
        Some(s) => json_string(out, s.as_bytes())?,
        None => out.put(b"null")?,
    }
    match ev.seqnum() {
        Some(n) => {
            out.put(b",\"seqnum\":")?;
            out.put_u64(n)?;
        }
        None => out.put(b",\"seqnum\":null")?,
    }
    out.put(b",\"env\":{")?;
    for (i, f) in ev.fields().iter().enumerate() {
        if i > 0 {
            out.put(b",")?;
        }
        json_string(out, f.key.as_bytes())?;
        out.put(b":")?;
        json_string(out, f.value)?;
    }
    out.put(b"}}\n")
}

/// Eight copies of a byte in a word.
const fn splat(b: u8) -> u64 {
    0x0101_0101_0101_0101u64 * b as u64
}

/// True if some byte of `w` is below 0x20, `"`, `\\` or >= 0x80: the bytes
/// a JSON string cannot hold as they are (or that may be invalid UTF-8).
/// Exact for "some byte" (the classic has-less-than / has-zero tricks:
/// a borrow can only start at a byte that matched).
#[inline]
fn json_special(w: u64) -> bool {
    const LO: u64 = splat(0x01);
    const HI: u64 = splat(0x80);
    let ctl = w.wrapping_sub(splat(0x20)) & !w;
    let q = w ^ splat(b'"');
    let bs = w ^ splat(b'\\');
    let quote = q.wrapping_sub(LO) & !q;
    let backslash = bs.wrapping_sub(LO) & !bs;
    (ctl | quote | backslash | w) & HI != 0
}

/// True if some byte of `w` is a control character (< 0x20 or 0x7f) or
/// >= 0x80 (may be invalid UTF-8 or a C1 control).
#[inline]
fn text_special(w: u64) -> bool {
    const LO: u64 = splat(0x01);
    const HI: u64 = splat(0x80);
    let ctl = w.wrapping_sub(splat(0x20)) & !w;
    let d = w ^ splat(0x7f);
    let del = d.wrapping_sub(LO) & !d;
    (ctl | del | w) & HI != 0
}

/// The length of the leading run of `bytes` in which `special` finds
/// nothing, checked a word at a time; the word that hit is then looked at
/// byte by byte with `is`.
#[inline]
fn clean_run(bytes: &[u8], special: fn(u64) -> bool, is: fn(u8) -> bool) -> usize {
    let mut i = 0;
    while i + 8 <= bytes.len() {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[i..i + 8]);
        if special(u64::from_le_bytes(w)) {
            break;
        }
        i += 8;
    }
    while i < bytes.len() && !is(bytes[i]) {
        i += 1;
    }
    i
}

fn json_byte_special(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\' || b >= 0x80
}

fn text_byte_special(b: u8) -> bool {
    b < 0x20 || b == 0x7f || b >= 0x80
}

/// Writes `bytes` as a JSON string (quotes included), with `\udcXX` for
/// every byte that is not part of valid UTF-8.
pub fn json_string(out: &mut OutBuf, bytes: &[u8]) -> fmt::Result {
    out.put(b"\"")?;
    let mut rest = bytes;
    loop {
        let run = clean_run(rest, json_special, json_byte_special);
        out.put(&rest[..run])?;
        rest = &rest[run..];
        let Some(&b) = rest.first() else { break };
        if b < 0x80 {
            let esc: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0x08 => b"\\b",
                0x0c => b"\\f",
                _ => {
                    out.put(b"\\u00")?;
                    out.put(&hex2(b))?;
                    rest = &rest[1..];
                    continue;
                }
            };
            out.put(esc)?;
            rest = &rest[1..];
        } else {
            // Non-ASCII: copy what is valid UTF-8 up to the next ASCII byte,
            // escape each invalid byte.
            let end = rest.iter().position(|&c| c < 0x80).unwrap_or(rest.len());
            for chunk in rest[..end].utf8_chunks() {
                out.put(chunk.valid().as_bytes())?;
                for &x in chunk.invalid() {
                    out.put(b"\\udc")?;
                    out.put(&hex2(x))?;
                }
            }
            rest = &rest[end..];
        }
    }
    out.put(b"\"")
}

/// Two lower-case hex digits.
fn hex2(b: u8) -> [u8; 2] {
    const D: &[u8; 16] = b"0123456789abcdef";
    [D[usize::from(b >> 4)], D[usize::from(b & 15)]]
}

/// Writes `bytes` for a terminal: `\xNN` for control characters, DEL and
/// bytes that are not valid UTF-8.
pub fn text_bytes(out: &mut OutBuf, bytes: &[u8]) -> fmt::Result {
    let mut rest = bytes;
    loop {
        let run = clean_run(rest, text_special, text_byte_special);
        out.put(&rest[..run])?;
        rest = &rest[run..];
        let Some(&b) = rest.first() else { break };
        if b < 0x80 {
            out.put(b"\\x")?;
            out.put(&hex2(b))?;
            rest = &rest[1..];
        } else {
            let end = rest.iter().position(|&c| c < 0x80).unwrap_or(rest.len());
            for chunk in rest[..end].utf8_chunks() {
                let valid = chunk.valid();
                let mut start = 0;
                for (i, c) in valid.char_indices() {
                    // C1 controls (U+0080..U+009F) are controls too
                    if c.is_control() {
                        out.put(&valid.as_bytes()[start..i])?;
                        let mut tmp = [0u8; 4];
                        for &x in c.encode_utf8(&mut tmp).as_bytes() {
                            out.put(b"\\x")?;
                            out.put(&hex2(x))?;
                        }
                        start = i + c.len_utf8();
                    }
                }
                out.put(&valid.as_bytes()[start..])?;
                for &x in chunk.invalid() {
                    out.put(b"\\x")?;
                    out.put(&hex2(x))?;
                }
            }
            rest = &rest[end..];
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LO: &[u8] = b"change@/devices/virtual/net/lo\0ACTION=change\0\
        DEVPATH=/devices/virtual/net/lo\0SUBSYSTEM=net\0INTERFACE=lo\0SEQNUM=7\0";

    fn render(f: fn(&mut OutBuf, &Uevent<'_>) -> fmt::Result, d: &[u8]) -> String {
        let ev = Uevent::parse(d).unwrap();
        let mut out = OutBuf::new();
        f(&mut out, &ev).unwrap();
        String::from_utf8(out.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn json_line() {
        assert_eq!(
            render(json, LO),
            "{\"action\":\"change\",\"devpath\":\"/devices/virtual/net/lo\",\"subsystem\":\"net\",\
             \"seqnum\":7,\"env\":{\"ACTION\":\"change\",\"DEVPATH\":\"/devices/virtual/net/lo\",\
             \"SUBSYSTEM\":\"net\",\"INTERFACE\":\"lo\",\"SEQNUM\":\"7\"}}\n"
        );
    }

    #[test]
    fn json_escapes_every_kind_of_byte() {
        let d = b"add@/d\0ACTION=add\0DEVPATH=/d\0\
            NAME=\"q\\\t\x01\x7f\xc3\xa9\xff\xe2\x82\0";
        let s = render(json, d);
        assert!(s.contains("\"subsystem\":null,\"seqnum\":null"), "{s}");
        // quote, backslash, tab, U+0001, DEL (legal raw in JSON), é, then
        // 0xff and a cut 3-byte sequence: one \udcXX per invalid byte
        assert!(
            s.contains(r#""NAME":"\"q\\\t\u0001"#.to_owned().as_str()),
            "{s}"
        );
        assert!(s.contains("\u{7f}é\\udcff\\udce2\\udc82\""), "{s}");
    }

    #[test]
    fn text_block() {
        let ev = Uevent::parse(LO).unwrap();
        let mut out = OutBuf::new();
        text(&mut out, &ev, (12, 34)).unwrap();
        assert_eq!(
            String::from_utf8(out.as_bytes().to_vec()).unwrap(),
            "KERNEL[12.000034] change   /devices/virtual/net/lo (net)\n\
             ACTION=change\nDEVPATH=/devices/virtual/net/lo\nSUBSYSTEM=net\n\
             INTERFACE=lo\nSEQNUM=7\n\n"
        );
    }

    #[test]
    fn text_neutralises_terminal_escapes() {
        let d = b"add@/d\0ACTION=add\0DEVPATH=/d\0NAME=\x1b[2J\xff\xc3\xa9\0";
        let ev = Uevent::parse(d).unwrap();
        let mut out = OutBuf::new();
        text(&mut out, &ev, (0, 0)).unwrap();
        let s = String::from_utf8(out.as_bytes().to_vec()).unwrap();
        assert!(s.contains("NAME=\\x1b[2J\\xffé\n"), "{s}");
    }

    #[test]
    fn worst_case_event_fits() {
        // A maximal datagram whose every value byte expands to 6 characters.
        let mut d2 = b"add@/d\0ACTION=add\0DEVPATH=/d\0K=".to_vec();
        d2.extend(std::iter::repeat_n(0x01u8, crate::limits::RECV_BUFFER - 40));
        d2.push(0);
        let ev = Uevent::parse(&d2).unwrap();
        let mut out = OutBuf::new();
        json(&mut out, &ev).unwrap();
        assert!(out.as_bytes().len() > 6 * 8000);
        out.clear();
        text(&mut out, &ev, (0, 0)).unwrap();
        assert!(!out.overflowed());
    }

    /// The straightforward per-character formatting the run-copying one
    /// replaced: both must agree on every input.
    fn reference_json(bytes: &[u8]) -> String {
        let mut s = String::from("\"");
        for chunk in bytes.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '"' => s.push_str("\\\""),
                    '\\' => s.push_str("\\\\"),
                    '\n' => s.push_str("\\n"),
                    '\r' => s.push_str("\\r"),
                    '\t' => s.push_str("\\t"),
                    '\u{8}' => s.push_str("\\b"),
                    '\u{c}' => s.push_str("\\f"),
                    c if (c as u32) < 0x20 => s.push_str(&format!("\\u{:04x}", c as u32)),
                    c => s.push(c),
                }
            }
            for b in chunk.invalid() {
                s.push_str(&format!("\\udc{b:02x}"));
            }
        }
        s.push('"');
        s
    }

    fn reference_text(bytes: &[u8]) -> String {
        let mut s = String::new();
        for chunk in bytes.utf8_chunks() {
            for c in chunk.valid().chars() {
                if c.is_control() {
                    let mut tmp = [0u8; 4];
                    for b in c.encode_utf8(&mut tmp).bytes() {
                        s.push_str(&format!("\\x{b:02x}"));
                    }
                } else {
                    s.push(c);
                }
            }
            for b in chunk.invalid() {
                s.push_str(&format!("\\x{b:02x}"));
            }
        }
        s
    }

    #[test]
    fn run_copying_agrees_with_per_character_formatting() {
        // Random strings from an alphabet rich in the bytes that matter,
        // at every alignment and length around the 8-byte words.
        let alphabet: &[u8] =
            b"aZ09/=_-\"\\\n\t\x01\x1f\x7f\x80\xc2\x9f\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xff";
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut out = OutBuf::new();
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 40) as usize;
            let mut v = Vec::with_capacity(len);
            let mut y = x;
            for _ in 0..len {
                y = y
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                v.push(alphabet[(y >> 33) as usize % alphabet.len()]);
            }
            out.clear();
            json_string(&mut out, &v).unwrap();
            assert_eq!(
                core::str::from_utf8(out.as_bytes()).unwrap(),
                reference_json(&v),
                "{v:?}"
            );
            out.clear();
            text_bytes(&mut out, &v).unwrap();
            assert_eq!(
                core::str::from_utf8(out.as_bytes()).unwrap(),
                reference_text(&v),
                "{v:?}"
            );
        }
    }

    #[test]
    fn a_batch_of_events_fits_and_says_when_full() {
        let ev = Uevent::parse(LO).unwrap();
        let mut out = OutBuf::new();
        let mut n = 0;
        while !out.batch_full() {
            // while the batch is not full, the largest event still fits
            assert!(OUT_BUFFER - out.len() >= EVENT_MAX);
            json(&mut out, &ev).unwrap();
            n += 1;
        }
        assert!(n > 100, "{n}");
        let mark = out.len();
        json(&mut out, &ev).unwrap();
        out.truncate(mark);
        assert_eq!(out.len(), mark);
    }

    #[test]
    fn filter_is_or_within_a_kind_and_and_across() {
        let ev = Uevent::parse(LO).unwrap();
        let usb = Uevent::parse(
            b"add@/d\0ACTION=add\0DEVPATH=/d\0SUBSYSTEM=usb\0DEVTYPE=usb_device\0PRODUCT=403/6001/600\0",
        )
        .unwrap();
        let f = |subs: &[(&str, Option<&str>)], props: &[(&str, &str)]| Filter {
            subsystems: subs
                .iter()
                .map(|(s, t)| (s.to_string(), t.map(str::to_string)))
                .collect(),
            properties: props
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        assert!(f(&[], &[]).passes(&ev));
        let subs = f(&[("usb", Some("usb_device")), ("net", None)], &[]);
        assert!(subs.passes(&ev) && subs.passes(&usb));
        assert!(!f(&[("usb", Some("usb_interface"))], &[]).passes(&usb));
        assert!(!f(&[("us", None)], &[]).passes(&usb), "exact, not a prefix");
        let props = f(&[], &[("PRODUCT", "403/*"), ("INTERFACE", "eth*")]);
        assert!(props.passes(&usb) && !props.passes(&ev));
        let both = f(&[("net", None)], &[("PRODUCT", "403/*")]);
        assert!(
            !both.passes(&usb) && !both.passes(&ev),
            "each kind must pass"
        );
        assert!(f(&[("net", None)], &[("INTERFACE", "lo|eth0")]).passes(&ev));
    }
}
