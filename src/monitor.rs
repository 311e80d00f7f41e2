//! What `hotplugd monitor` prints: a `udevadm monitor --kernel --property`
//! style text block, or one JSON object per line. Pure formatting into a
//! fixed buffer; the loop writes the buffer out.
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

/// Large enough for any event, so formatting one can never be cut: a
/// datagram is at most `RECV_BUFFER` (8192) bytes, and no byte expands to
/// more than 6 (`\udcXX`, `\u001f`) in JSON or 4 (`\xNN`) in text, plus the
/// per-field quoting, key duplication and header (< 16 KiB for 64 fields).
pub const OUT_BUFFER: usize = 64 * 1024;

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

    fn put(&mut self, b: &[u8]) -> fmt::Result {
        let end = self.len + b.len();
        if end > self.buf.len() {
            self.overflowed = true;
            return Err(fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(b);
        self.len = end;
        Ok(())
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
        Some(n) => write!(out, ",\"seqnum\":{n}")?,
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

/// Writes `bytes` as a JSON string (quotes included), with `\udcXX` for
/// every byte that is not part of valid UTF-8.
pub fn json_string(out: &mut OutBuf, bytes: &[u8]) -> fmt::Result {
    out.put(b"\"")?;
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid();
        let mut start = 0;
        for (i, c) in valid.char_indices() {
            let esc: Option<&[u8]> = match c {
                '"' => Some(b"\\\""),
                '\\' => Some(b"\\\\"),
                '\n' => Some(b"\\n"),
                '\r' => Some(b"\\r"),
                '\t' => Some(b"\\t"),
                '\u{8}' => Some(b"\\b"),
                '\u{c}' => Some(b"\\f"),
                c if (c as u32) < 0x20 => Some(b""),
                _ => None,
            };
            if let Some(esc) = esc {
                out.put(&valid.as_bytes()[start..i])?;
                if esc.is_empty() {
                    write!(out, "\\u{:04x}", c as u32)?;
                } else {
                    out.put(esc)?;
                }
                start = i + c.len_utf8();
            }
        }
        out.put(&valid.as_bytes()[start..])?;
        for b in chunk.invalid() {
            write!(out, "\\udc{b:02x}")?;
        }
    }
    out.put(b"\"")
}

/// Writes `bytes` for a terminal: `\xNN` for control characters, DEL and
/// bytes that are not valid UTF-8.
pub fn text_bytes(out: &mut OutBuf, bytes: &[u8]) -> fmt::Result {
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid();
        let mut start = 0;
        for (i, c) in valid.char_indices() {
            if c.is_control() {
                out.put(&valid.as_bytes()[start..i])?;
                let mut tmp = [0u8; 4];
                for b in c.encode_utf8(&mut tmp).bytes() {
                    write!(out, "\\x{b:02x}")?;
                }
                start = i + c.len_utf8();
            }
        }
        out.put(&valid.as_bytes()[start..])?;
        for b in chunk.invalid() {
            write!(out, "\\x{b:02x}")?;
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
}
