//! Substitution templates: `$kernel`, `$number`, `$devpath`, `$devnode`,
//! `$env{KEY}`, `$attr{file}`, `$$`, and udev's `%k`, `%n`, `%p`, `%N`,
//! `%E{KEY}`, `%s{file}`, `%%`.
//!
//! Parsed once when rules load ([`parse`]); every mistake is an error with
//! its offset. Expansion (in the parent module) writes into fixed buffers.
//! A template is always one argument: `RUN` strings are split into words
//! *before* substitution, so a substituted value can never become two
//! arguments or reach a shell.

/// One piece of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Literal bytes.
    Lit(Box<[u8]>),
    /// `$kernel`, `%k`: the last component of DEVPATH.
    Kernel,
    /// `$number`, `%n`: the trailing digits of the kernel name (empty if none).
    Number,
    /// `$devpath`, `%p`: DEVPATH.
    Devpath,
    /// `$devnode`, `%N`: `/dev/` + DEVNAME (empty without DEVNAME).
    Devnode,
    /// `$env{KEY}`, `%E{KEY}`: the event's (or an earlier rule's) value.
    Env(Box<str>),
    /// `$attr{file}`, `%s{file}`: a sysfs attribute, trailing whitespace cut.
    Attr(Box<str>),
}

/// A parsed template: pieces in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Template(pub Vec<Piece>);

impl Template {
    /// The template's text if it has no substitutions.
    pub fn literal(&self) -> Option<&[u8]> {
        match self.0.as_slice() {
            [] => Some(b""),
            [Piece::Lit(l)] => Some(l),
            _ => None,
        }
    }
}

/// A mistake in a template: byte offset and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubstError {
    /// Offset of the offending `$` or `%` in the value.
    pub offset: usize,
    /// What is wrong and how to fix it.
    pub message: String,
}

const SUPPORTED: &str =
    "$kernel $number $devpath $devnode $env{KEY} $attr{file} $$ (or %k %n %p %N %E{KEY} %s{file} %%)";

/// Parses a value into a template.
pub fn parse(v: &[u8]) -> Result<Template, SubstError> {
    let mut pieces = Vec::new();
    let mut lit = Vec::new();
    let mut i = 0;
    let err = |offset, message: String| Err(SubstError { offset, message });
    while i < v.len() {
        let c = v[i];
        if c != b'$' && c != b'%' {
            lit.push(c);
            i += 1;
            continue;
        }
        let start = i;
        let next = v.get(i + 1).copied();
        if next == Some(c) {
            lit.push(c);
            i += 2;
            continue;
        }
        let (piece, len) = if c == b'$' {
            let name_len = v[i + 1..]
                .iter()
                .take_while(|b| b.is_ascii_alphabetic())
                .count();
            if name_len == 0 {
                return err(
                    start,
                    "a lone '$': write $$ for a literal '$' (e.g. a shell's $1 is $$1)".into(),
                );
            }
            let name = &v[i + 1..i + 1 + name_len];
            let after = i + 1 + name_len;
            match name {
                b"kernel" => (Piece::Kernel, 1 + name_len),
                b"number" => (Piece::Number, 1 + name_len),
                b"devpath" => (Piece::Devpath, 1 + name_len),
                b"devnode" => (Piece::Devnode, 1 + name_len),
                b"env" | b"attr" => {
                    let (arg, arg_len) = braced(v, after).ok_or_else(|| SubstError {
                        offset: start,
                        message: format!(
                            "${} needs a name in braces, e.g. ${}{{{}}}",
                            String::from_utf8_lossy(name),
                            String::from_utf8_lossy(name),
                            if name == b"env" { "ID_SERIAL" } else { "idVendor" }
                        ),
                    })?;
                    let p = if name == b"env" {
                        Piece::Env(check_env_name(arg, start)?)
                    } else {
                        Piece::Attr(check_attr_name(arg, start)?)
                    };
                    (p, 1 + name_len + arg_len)
                }
                _ => {
                    return err(
                        start,
                        format!(
                            "unknown substitution ${} (supported: {SUPPORTED}; write $$ for a literal '$')",
                            String::from_utf8_lossy(name)
                        ),
                    )
                }
            }
        } else {
            match next {
                Some(b'k') => (Piece::Kernel, 2),
                Some(b'n') => (Piece::Number, 2),
                Some(b'p') => (Piece::Devpath, 2),
                Some(b'N') => (Piece::Devnode, 2),
                Some(b'E') | Some(b's') => {
                    let (arg, arg_len) = braced(v, i + 2).ok_or_else(|| SubstError {
                        offset: start,
                        message: format!("%{} needs a name in braces", next.unwrap_or(b'?') as char),
                    })?;
                    let p = if next == Some(b'E') {
                        Piece::Env(check_env_name(arg, start)?)
                    } else {
                        Piece::Attr(check_attr_name(arg, start)?)
                    };
                    (p, 2 + arg_len)
                }
                _ => {
                    return err(
                        start,
                        format!(
                            "unknown substitution %{} (supported: {SUPPORTED}; write %% for a literal '%')",
                            next.map_or(String::new(), |b| (b as char).to_string())
                        ),
                    )
                }
            }
        };
        if !lit.is_empty() {
            pieces.push(Piece::Lit(core::mem::take(&mut lit).into_boxed_slice()));
        }
        pieces.push(piece);
        i += len;
    }
    if !lit.is_empty() {
        pieces.push(Piece::Lit(lit.into_boxed_slice()));
    }
    Ok(Template(pieces))
}

/// `{name}` at `at`: the name and the length consumed (braces included).
fn braced(v: &[u8], at: usize) -> Option<(&[u8], usize)> {
    if v.get(at) != Some(&b'{') {
        return None;
    }
    let close = v[at + 1..].iter().position(|&b| b == b'}')?;
    Some((&v[at + 1..at + 1 + close], close + 2))
}

/// udev's character filter for `SYMLINK` values (`udev_replace_chars`
/// with `"/ "`, or `"/"` for `string_escape=replace`): keeps ASCII letters
/// and digits, `#+-.:=@_/`, `\x` escapes and valid multi-byte UTF-8;
/// with `keep_space`, a space (other whitespace becomes a space); every
/// other byte becomes `_`. Returns how many were replaced.
pub fn replace_chars(v: &mut [u8], keep_space: bool) -> usize {
    let mut i = 0;
    let mut replaced = 0;
    while i < v.len() {
        let c = v[i];
        if c.is_ascii_alphanumeric() || b"#+-.:=@_/".contains(&c) || (keep_space && c == b' ') {
            i += 1;
            continue;
        }
        if c == b'\\' && v.get(i + 1) == Some(&b'x') {
            i += 2;
            continue;
        }
        let len = match c {
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => 1,
        };
        if len > 1 && v.len() >= i + len && core::str::from_utf8(&v[i..i + len]).is_ok() {
            i += len;
            continue;
        }
        v[i] = if keep_space && c.is_ascii_whitespace() {
            b' '
        } else {
            b'_'
        };
        replaced += 1;
        i += 1;
    }
    replaced
}

/// Environment variable names: `[A-Za-z_][A-Za-z0-9_]*`, optionally after
/// one leading `.`: udev's private properties (`ENV{.NAME}`), which rules
/// can set and read but handlers never see (see [`is_private`]).
pub fn valid_env_name(n: &[u8]) -> bool {
    let n = n.strip_prefix(b".").unwrap_or(n);
    !n.is_empty()
        && !n[0].is_ascii_digit()
        && n.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A private property (`ENV{.NAME}`): kept out of handlers' environment.
pub fn is_private(name: &str) -> bool {
    name.starts_with('.')
}

/// sysfs attribute names: relative paths without `..`, e.g. `idVendor`,
/// `device/idVendor`, `queue/rotational`.
pub fn valid_attr_name(n: &[u8]) -> bool {
    !n.is_empty()
        && n[0] != b'/'
        && n.iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/' | b':'))
        && !n
            .split(|&b| b == b'/')
            .any(|c| c.is_empty() || c == b".." || c == b".")
}

fn check_env_name(n: &[u8], at: usize) -> Result<Box<str>, SubstError> {
    if valid_env_name(n) {
        Ok(String::from_utf8_lossy(n).into())
    } else {
        Err(SubstError {
            offset: at,
            message: format!(
                "'{}' is not a variable name (letters, digits, _)",
                String::from_utf8_lossy(n)
            ),
        })
    }
}

fn check_attr_name(n: &[u8], at: usize) -> Result<Box<str>, SubstError> {
    if valid_attr_name(n) {
        Ok(String::from_utf8_lossy(n).into())
    } else {
        Err(SubstError {
            offset: at,
            message: format!(
                "'{}' is not an attribute name (a relative path below the device, no '..')",
                String::from_utf8_lossy(n)
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Piece::*;

    fn lit(s: &str) -> Piece {
        Lit(s.as_bytes().into())
    }

    #[test]
    fn both_syntaxes() {
        assert_eq!(
            parse(b"/dev/$kernel-%n:$env{ID}:%s{idVendor}$$%%")
                .unwrap()
                .0,
            vec![
                lit("/dev/"),
                Kernel,
                lit("-"),
                Number,
                lit(":"),
                Env("ID".into()),
                lit(":"),
                Attr("idVendor".into()),
                lit("$%"),
            ]
        );
        assert_eq!(
            parse(b"%p%N$devpath$devnode").unwrap().0,
            vec![Devpath, Devnode, Devpath, Devnode]
        );
        assert_eq!(parse(b"plain").unwrap().literal(), Some(&b"plain"[..]));
        assert_eq!(parse(b"").unwrap().literal(), Some(&b""[..]));
        assert_eq!(parse(b"$kernel").unwrap().literal(), None);
    }

    #[test]
    fn mistakes_have_offsets_and_fixes() {
        let e = parse(b"echo $(touch pwned)").unwrap_err();
        assert_eq!(e.offset, 5);
        assert!(e.message.contains("write $$"), "{}", e.message);
        let e = parse(b"x $name").unwrap_err();
        assert_eq!(e.offset, 2);
        assert!(
            e.message.starts_with("unknown substitution $name"),
            "{}",
            e.message
        );
        assert_eq!(parse(b"$env").unwrap_err().offset, 0);
        assert_eq!(parse(b"ab%Z").unwrap_err().offset, 2);
        assert_eq!(parse(b"%").unwrap_err().offset, 0);
        assert!(parse(b"$env{1X}").is_err());
        assert!(parse(b"$attr{../x}").is_err());
        assert!(parse(b"$attr{/etc/passwd}").is_err());
        assert!(parse(b"$attr{device/idVendor}").is_ok());
        assert!(parse(b"$env{UNCLOSED").is_err());
    }

    /// udev's `udev_replace_chars` for SYMLINK: allowed bytes, `\x`
    /// escapes and valid UTF-8 stay; whitespace is a space when spaces are
    /// allowed; everything else is `_`.
    #[test]
    fn replace_chars_is_udevs() {
        let mut v = b"a b/c\\x20d\te*f?\xc3\xa9 \xff".to_vec();
        let n = replace_chars(&mut v, true);
        assert_eq!(v, b"a b/c\\x20d e_f_\xc3\xa9 _".to_vec());
        assert_eq!(n, 4);
        let mut v = b"a b\tc".to_vec();
        assert_eq!(replace_chars(&mut v, false), 2);
        assert_eq!(v, b"a_b_c".to_vec());
    }
}
