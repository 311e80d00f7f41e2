//! The string treatments udev 252 applies to what it reads from sysfs
//! before it becomes an `ID_*` property, byte for byte:
//!
//! - [`encode_devnode`]: the `_ENC` values (`QEMU\x20USB\x20SERIAL`):
//!   systemd's `encode_devnode_name()` (`src/shared/device-nodes.c`);
//! - [`replace_whitespace`]: trim, and turn each run of white space into
//!   one `_`, reading at most `len` bytes (`udev_replace_whitespace()`,
//!   `src/shared/udev-util.c`);
//! - [`replace_chars`]: every byte that is not `[0-9A-Za-z#+-.:=@_]`, a
//!   `\x` escape or part of a valid UTF-8 sequence becomes `_`
//!   (`udev_replace_chars(str, NULL)`);
//! - [`utf8_char_len`]: systemd's `utf8_encoded_valid_unichar()`;
//! - [`sysattr_value`]: what `sd_device_get_sysattr_value()` makes of an
//!   attribute's bytes (trailing `\n`/`\r` dropped, then cut at a NUL);
//! - [`parse_c_int`]: the `strtol`-style parsers (`safe_atoi`,
//!   `safe_atou_full`) whose quirks decide `ID_TYPE`.
//!
//! Pure functions over bytes; written from the behaviour of the C code,
//! not translated from it.

/// `" \t\n\r"`: systemd's `WHITESPACE` (what leading trim skips).
const WHITESPACE: &[u8] = b" \t\n\r";

/// C's `isspace()` in the C locale (also `\v` and `\f`).
fn c_isspace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// systemd's `allow_listed_char_for_devnode(c, NULL)`: ASCII letters and
/// digits and `#+-.:=@_`.
pub fn devnode_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"#+-.:=@_".contains(&b)
}

/// Length of the valid UTF-8 sequence at the start of `s` (1 for ASCII),
/// or `None`, the way systemd judges it: the lead byte announces up to 6
/// bytes, every byte of the sequence must have its high bit set, the
/// value must need exactly that many bytes, and must not be a UTF-16
/// surrogate, a non-character (U+FDD0..U+FDEF, U+xFFFE/U+xFFFF) or above
/// U+10FFFF. The end of `s` counts as a NUL.
pub fn utf8_char_len(s: &[u8]) -> Option<usize> {
    let lead = *s.first()?;
    let len = match lead {
        0x00..=0x7f => return Some(1),
        _ if lead & 0xe0 == 0xc0 => 2,
        _ if lead & 0xf0 == 0xe0 => 3,
        _ if lead & 0xf8 == 0xf0 => 4,
        _ if lead & 0xfc == 0xf8 => 5,
        _ if lead & 0xfe == 0xfc => 6,
        _ => return None,
    };
    if s.len() < len || s[..len].iter().any(|&b| b & 0x80 == 0) {
        return None;
    }
    let mut c: u32 = u32::from(lead) & (0x7f >> len);
    for &b in &s[1..len] {
        if b & 0xc0 != 0x80 {
            return None;
        }
        c = (c << 6) | u32::from(b & 0x3f);
    }
    let needed = match c {
        0..=0x7f => 1,
        0x80..=0x7ff => 2,
        0x800..=0xffff => 3,
        0x1_0000..=0x1f_ffff => 4,
        0x20_0000..=0x3ff_ffff => 5,
        _ => 6,
    };
    let valid = c < 0x11_0000
        && c & 0xffff_f800 != 0xd800
        && !(0xfdd0..=0xfdef).contains(&c)
        && c & 0xfffe != 0xfffe;
    (needed == len && valid).then_some(len)
}

/// `encode_devnode_name(str, out, cap)`: valid multi-byte UTF-8 is kept,
/// `\` and every byte outside [`devnode_char`] become `\xNN` (lower-case
/// hex), the rest is kept. `cap` counts the terminating NUL, as in C.
///
/// Returns the encoding and whether it fitted. udev ignores a failure and
/// uses whatever its buffer then holds (undefined when the last piece
/// was a plain byte); we return what was written before the piece that
/// did not fit, which is what udev's buffer holds when that piece was an
/// escape.
pub fn encode_devnode(s: &[u8], cap: usize) -> (Vec<u8>, bool) {
    let mut out = Vec::with_capacity(s.len().min(cap));
    let mut i = 0;
    while i < s.len() {
        let seq = utf8_char_len(&s[i..]).unwrap_or(0);
        if seq > 1 {
            if cap - out.len() < seq {
                return (out, false);
            }
            out.extend_from_slice(&s[i..i + seq]);
            i += seq;
            continue;
        }
        let b = s[i];
        if b == b'\\' || !devnode_char(b) {
            if cap - out.len() < 4 {
                return (out, false);
            }
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
        } else {
            if cap - out.len() < 1 {
                return (out, false);
            }
            out.push(b);
        }
        i += 1;
    }
    let fits = cap > out.len();
    (out, fits)
}

/// `udev_replace_whitespace(str, to, len)`: skips leading `" \t\n\r"`,
/// drops trailing white space, turns each inner run of white space
/// (C `isspace`) into one `_`. Reads at most `len` bytes of `s` (counted
/// from its start, leading white space included) and writes at most `len`.
pub fn replace_whitespace(s: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len.min(s.len()));
    let mut i = s.iter().take_while(|b| WHITESPACE.contains(b)).count();
    let mut pending_space = false;
    while out.len() < len && i < len && i < s.len() && s[i] != 0 {
        let b = s[i];
        i += 1;
        if c_isspace(b) {
            pending_space = true;
            continue;
        }
        if pending_space {
            if out.len() + 1 >= len {
                break;
            }
            out.push(b'_');
            pending_space = false;
        }
        out.push(b);
    }
    out
}

/// `udev_replace_chars(str, NULL)`, in place: keeps [`devnode_char`]
/// bytes, `\x` pairs (the two bytes only) and valid multi-byte UTF-8;
/// every other byte becomes `_`.
pub fn replace_chars(s: &mut [u8]) {
    let mut i = 0;
    while i < s.len() {
        if devnode_char(s[i]) {
            i += 1;
        } else if s[i] == b'\\' && s.get(i + 1) == Some(&b'x') {
            i += 2;
        } else if let Some(n @ 2..) = utf8_char_len(&s[i..]) {
            i += n;
        } else {
            s[i] = b'_';
            i += 1;
        }
    }
}

/// [`replace_whitespace`] then [`replace_chars`]: how udev turns a raw
/// vendor, model, revision or serial into the plain property.
pub fn plain(s: &[u8], len: usize) -> Vec<u8> {
    let mut v = replace_whitespace(s, len);
    replace_chars(&mut v);
    v
}

/// An attribute's value as sd-device returns it: trailing `\n` and `\r`
/// dropped, then cut at the first NUL (udev uses it as a C string).
pub fn sysattr_value(raw: &[u8]) -> &[u8] {
    let mut end = raw.len();
    while end > 0 && matches!(raw[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    let v = &raw[..end];
    match v.iter().position(|&b| b == 0) {
        Some(n) => &v[..n],
        None => v,
    }
}

/// Parses an integer the way systemd's `safe_ato*` helpers do with C's
/// `strtol`/`strtoul`: leading white space, an optional sign, then for
/// `base` 0 the prefixes `0x` (hex), `0b` (binary), `0o` (octal) and a
/// bare leading `0` (octal, so `08` fails); for `base` 16 an optional
/// `0x`. The whole string must be used. `None` on any failure.
pub fn parse_c_int(s: &[u8], base: u32) -> Option<i64> {
    let mut s = &s[s.iter().take_while(|b| WHITESPACE.contains(b)).count()..];
    let mut base = base;
    if base == 0 {
        // systemd's mangle_base(): "0b" and "0o" before strtol sees them
        if let Some(r) = s.strip_prefix(b"0b").or_else(|| s.strip_prefix(b"0B")) {
            s = r;
            base = 2;
        } else if let Some(r) = s.strip_prefix(b"0o").or_else(|| s.strip_prefix(b"0O")) {
            s = r;
            base = 8;
        }
    }
    s = &s[s.iter().take_while(|&&b| c_isspace(b)).count()..];
    let mut neg = false;
    if let Some((&c, r)) = s.split_first() {
        if c == b'+' || c == b'-' {
            neg = c == b'-';
            s = r;
        }
    }
    let hex_prefix =
        s.len() > 2 && s[0] == b'0' && (s[1] | 0x20) == b'x' && (s[2] as char).is_ascii_hexdigit();
    if (base == 0 || base == 16) && hex_prefix {
        s = &s[2..];
        base = 16;
    } else if base == 0 {
        base = if s.first() == Some(&b'0') { 8 } else { 10 };
    }
    if s.is_empty() {
        return None;
    }
    let mut v: i64 = 0;
    for &b in s {
        let d = (b as char).to_digit(base)?;
        v = v.checked_mul(i64::from(base))?.checked_add(i64::from(d))?;
    }
    Some(if neg { -v } else { v })
}

/// `sscanf(s, "%d:%d:%d:%d")` == 4: a SCSI address `host:bus:target:lun`.
/// Text after the fourth number is ignored, as sscanf does.
pub fn scsi_address(s: &[u8]) -> Option<[i32; 4]> {
    let mut out = [0i32; 4];
    let mut rest = s;
    for (k, slot) in out.iter_mut().enumerate() {
        if k > 0 {
            rest = rest.strip_prefix(b":")?;
        }
        rest = &rest[rest.iter().take_while(|&&b| c_isspace(b)).count()..];
        let sign = usize::from(matches!(rest.first(), Some(b'+' | b'-')));
        let digits = rest[sign..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits == 0 {
            return None;
        }
        let text = core::str::from_utf8(&rest[..sign + digits]).ok()?;
        // sscanf's %d on overflow is undefined; glibc saturates. Keep that.
        *slot = text.parse::<i64>().ok().map_or(i32::MAX, |v| {
            v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
        });
        rest = &rest[sign + digits..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_escapes_like_udev() {
        assert_eq!(
            encode_devnode(b"QEMU USB SERIAL", 256).0,
            b"QEMU\\x20USB\\x20SERIAL"
        );
        assert_eq!(encode_devnode(b"a\\b/c!", 256).0, b"a\\x5cb\\x2fc\\x21");
        // valid UTF-8 is kept, a lone continuation byte is escaped
        assert_eq!(encode_devnode("é".as_bytes(), 256).0, "é".as_bytes());
        assert_eq!(encode_devnode(b"\x80", 256).0, b"\\x80");
        // the buffer counts the NUL: 3 plain bytes need 4
        assert_eq!(encode_devnode(b"abc", 4), (b"abc".to_vec(), true));
        assert_eq!(encode_devnode(b"abc", 3), (b"abc".to_vec(), false));
        assert_eq!(encode_devnode(b"ab ", 5), (b"ab".to_vec(), false));
    }

    #[test]
    fn whitespace_runs_become_one_underscore() {
        assert_eq!(
            replace_whitespace(b"  QEMU   HARDDISK  ", 63),
            b"QEMU_HARDDISK"
        );
        assert_eq!(replace_whitespace(b"a\x0bb", 63), b"a_b");
        // the limit counts source bytes, leading blanks included
        assert_eq!(replace_whitespace(b"   abcdef", 5), b"ab");
        assert_eq!(replace_whitespace(b"abcdefgh", 4), b"abcd");
        // a run before the last slot is dropped, not half-written
        assert_eq!(replace_whitespace(b"abc d", 4), b"abc");
        assert_eq!(replace_whitespace(b"ab\0cd", 63), b"ab");
    }

    #[test]
    fn chars_outside_the_set_become_underscore() {
        let mut v = b"A/B!C,D\\xE\\F".to_vec();
        replace_chars(&mut v);
        assert_eq!(v, b"A_B_C_D\\xE_F");
        let mut u = "Größe\u{7f}".as_bytes().to_vec();
        replace_chars(&mut u);
        assert_eq!(u, "Größe_".as_bytes());
    }

    #[test]
    fn utf8_rules_are_systemds() {
        assert_eq!(utf8_char_len("€".as_bytes()), Some(3));
        assert_eq!(utf8_char_len(b"\xc0\x80"), None); // overlong
        assert_eq!(utf8_char_len(b"\xed\xa0\x80"), None); // surrogate
        assert_eq!(utf8_char_len(b"\xef\xbf\xbe"), None); // U+FFFE
        assert_eq!(utf8_char_len(b"\xe2\x82"), None); // cut
    }

    #[test]
    fn c_integers() {
        assert_eq!(parse_c_int(b"06", 0), Some(6));
        assert_eq!(parse_c_int(b"08", 0), None); // octal
        assert_eq!(parse_c_int(b"0x1f", 0), Some(31));
        assert_eq!(parse_c_int(b"ff", 16), Some(255));
        assert_eq!(parse_c_int(b"", 10), None);
        assert_eq!(parse_c_int(b"1 ", 10), None);
        assert_eq!(scsi_address(b"0:0:0:0"), Some([0, 0, 0, 0]));
        assert_eq!(scsi_address(b"2:0:1:3x"), Some([2, 0, 1, 3]));
        assert_eq!(scsi_address(b"host0"), None);
    }

    #[test]
    fn sysattr_values() {
        assert_eq!(sysattr_value(b"FT4RJ7QA\n"), b"FT4RJ7QA");
        assert_eq!(sysattr_value(b"a\n\0b"), b"a\n");
        assert_eq!(sysattr_value(b"a\0b\r\n"), b"a");
    }
}
