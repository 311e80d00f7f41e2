//! Shell-style globs as udev uses them in match values: `*` (any run of
//! bytes, `/` included), `?` (one byte), `[...]` (one byte from a set;
//! `[!...]` or `[^...]` negates; `a-z` ranges; a `]` first in the set is a
//! member), `\x` (the byte `x` itself), and `|` between alternatives.
//!
//! Checked once when rules load ([`check`], [`Compiled::new`]); matching
//! ([`Compiled::matches`]) is
//! allocation-free and linear-time in practice (one backtrack point for
//! `*`, the classic iterative algorithm), so no pattern can make matching
//! explode.

/// Why a pattern was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GlobError {
    /// `[` without a closing `]`; the offset of the `[`.
    UnclosedBracket(usize),
    /// A range like `z-a` whose start is after its end: nothing can match it.
    EmptyRange(usize),
    /// A `\` at the very end.
    TrailingBackslash(usize),
}

impl GlobError {
    /// Byte offset in the pattern.
    pub fn offset(self) -> usize {
        match self {
            GlobError::UnclosedBracket(o)
            | GlobError::EmptyRange(o)
            | GlobError::TrailingBackslash(o) => o,
        }
    }

    /// A lower-case description with the fix.
    pub fn describe(self) -> &'static str {
        match self {
            GlobError::UnclosedBracket(_) => {
                "'[' without a closing ']' (write \\[ for a literal '[')"
            }
            GlobError::EmptyRange(_) => {
                "range is backwards (like z-a), so the pattern can never match"
            }
            GlobError::TrailingBackslash(_) => "pattern ends with a lone '\\'",
        }
    }
}

/// True if `p` has no glob metacharacters (so it matches exactly itself).
pub fn is_literal(p: &[u8]) -> bool {
    !p.iter()
        .any(|b| matches!(b, b'*' | b'?' | b'[' | b'\\' | b'|'))
}

/// Checks every alternative of a pattern.
pub fn check(p: &[u8]) -> Result<(), GlobError> {
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            b'\\' => {
                if i + 1 >= p.len() {
                    return Err(GlobError::TrailingBackslash(i));
                }
                i += 2;
            }
            b'[' => {
                let end = bracket_end(p, i).ok_or(GlobError::UnclosedBracket(i))?;
                check_set(p, i, end)?;
                i = end + 1;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

/// Index of the `]` that closes the set opened at `open`.
fn bracket_end(p: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    if matches!(p.get(i), Some(b'!' | b'^')) {
        i += 1;
    }
    if p.get(i) == Some(&b']') {
        i += 1; // a leading ']' is a member
    }
    while i < p.len() {
        match p[i] {
            b'\\' => i += 2,
            b']' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn check_set(p: &[u8], open: usize, end: usize) -> Result<(), GlobError> {
    let mut i = open + 1;
    if matches!(p.get(i), Some(b'!' | b'^')) {
        i += 1;
    }
    let mut first = true;
    while i < end {
        let (lo, next) = set_byte(p, i, first);
        first = false;
        if next + 1 < end && p[next] == b'-' {
            let (hi, after) = set_byte(p, next + 1, false);
            if hi < lo {
                return Err(GlobError::EmptyRange(i));
            }
            i = after;
        } else {
            i = next;
        }
    }
    Ok(())
}

/// The byte at `i` in a set (handling `\x`), and the index after it.
fn set_byte(p: &[u8], i: usize, _first: bool) -> (u8, usize) {
    if p[i] == b'\\' && i + 1 < p.len() {
        (p[i + 1], i + 2)
    } else {
        (p[i], i + 1)
    }
}

/// A checked pattern with its alternatives sorted out once, at load time:
/// literals compare as bytes, `literal*` as a prefix, the rest as globs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compiled {
    alts: Box<[Alt]>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Alt {
    Literal(Box<[u8]>),
    Prefix(Box<[u8]>),
    Glob(Box<[u8]>),
}

impl Compiled {
    /// Sorts out the alternatives of a pattern that passed [`check`].
    pub fn new(pattern: &[u8]) -> Compiled {
        let alts = alternatives(pattern)
            .map(|a| {
                if is_literal(a) {
                    Alt::Literal(a.into())
                } else if let Some(head) = a.strip_suffix(b"*").filter(|h| is_literal(h)) {
                    Alt::Prefix(head.into())
                } else {
                    Alt::Glob(a.into())
                }
            })
            .collect();
        Compiled { alts }
    }

    /// True if `text` matches one of the alternatives. Never allocates.
    pub fn matches(&self, text: &[u8]) -> bool {
        self.alts.iter().any(|a| match a {
            Alt::Literal(l) => **l == *text,
            Alt::Prefix(p) => text.starts_with(p),
            Alt::Glob(g) => match_one(g, text),
        })
    }
}

/// True if `text` matches any `|`-separated alternative of `pattern`.
/// `pattern` must have passed [`check`]; an unchecked bad pattern simply
/// does not match (never panics).
pub fn matches(pattern: &[u8], text: &[u8]) -> bool {
    alternatives(pattern).any(|alt| match_one(alt, text))
}

/// The `|`-separated alternatives of a pattern (a `\|` is not a separator;
/// `|` inside `[...]` is a member).
pub fn alternatives(p: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut start = 0;
    let mut done = false;
    core::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut i = start;
        while i < p.len() {
            match p[i] {
                b'\\' => i += 2,
                b'[' => i = bracket_end(p, i).map_or(i + 1, |e| e + 1),
                b'|' => {
                    let alt = &p[start..i];
                    start = i + 1;
                    return Some(alt);
                }
                _ => i += 1,
            }
        }
        done = true;
        Some(&p[start.min(p.len())..])
    })
}

fn match_one(p: &[u8], t: &[u8]) -> bool {
    if is_literal(p) {
        return p == t;
    }
    let (mut pi, mut ti) = (0, 0);
    // where to resume after the last '*': (pattern index after it, text index)
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        let step = if pi < p.len() {
            match p[pi] {
                b'*' => {
                    star = Some((pi + 1, ti));
                    pi += 1;
                    continue;
                }
                b'?' => Some(pi + 1),
                b'[' => match bracket_end(p, pi) {
                    Some(end) if set_contains(p, pi, end, t[ti]) => Some(end + 1),
                    Some(_) => None,
                    None => (p[pi] == t[ti]).then_some(pi + 1),
                },
                b'\\' if pi + 1 < p.len() => (p[pi + 1] == t[ti]).then_some(pi + 2),
                c => (c == t[ti]).then_some(pi + 1),
            }
        } else {
            None
        };
        match step {
            Some(next) => {
                pi = next;
                ti += 1;
            }
            None => match star {
                // let the last '*' swallow one more byte and retry
                Some((sp, st)) => {
                    pi = sp;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

fn set_contains(p: &[u8], open: usize, end: usize, c: u8) -> bool {
    let mut i = open + 1;
    let negate = matches!(p.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut found = false;
    let mut first = true;
    while i < end {
        let (lo, next) = set_byte(p, i, first);
        first = false;
        if next + 1 < end && p[next] == b'-' {
            let (hi, after) = set_byte(p, next + 1, false);
            found |= (lo..=hi).contains(&c);
            i = after;
        } else {
            found |= lo == c;
            i = next;
        }
    }
    found != negate
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        check(p.as_bytes()).unwrap();
        matches(p.as_bytes(), t.as_bytes())
    }

    #[test]
    fn literals_and_stars() {
        assert!(m("add", "add"));
        assert!(!m("add", "addx"));
        assert!(m("", ""));
        assert!(!m("", "x"));
        assert!(m("*", ""));
        assert!(m("*", "anything/at/all"));
        assert!(m("tty*", "ttyUSB0"));
        assert!(m("*USB*", "ttyUSB0"));
        assert!(m(
            "/devices/*/usb1/*",
            "/devices/pci0000:00/0000:00:02.0/usb1/1-2"
        ));
        assert!(!m("tty*", "xtty"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("*a", "aaaa"));
        assert!(m("?*", "x"));
        assert!(!m("?*", ""));
    }

    #[test]
    fn sets_ranges_and_escapes() {
        assert!(m("ttyUSB[0-9]", "ttyUSB7"));
        assert!(!m("ttyUSB[0-9]", "ttyUSBx"));
        assert!(m("sd[!a]", "sdb"));
        assert!(!m("sd[^a]", "sda"));
        assert!(m("[]x]", "]"));
        assert!(m("[a-cx-z]", "y"));
        assert!(m("\\*", "*"));
        assert!(!m("\\*", "x"));
        assert!(m("[\\]]", "]"));
        assert!(m("a\\|b", "a|b"));
    }

    #[test]
    fn alternatives_work_and_respect_sets() {
        assert!(m("add|remove", "remove"));
        assert!(m("add|remove", "add"));
        assert!(!m("add|remove", "change"));
        assert!(m("[|]", "|"));
        assert!(
            m("a||b", ""),
            "an empty alternative matches the empty string"
        );
        let alts: Vec<&[u8]> = alternatives(b"x|[|]|y").collect();
        assert_eq!(alts, [&b"x"[..], b"[|]", b"y"]);
    }

    #[test]
    fn bad_patterns_are_refused_with_an_offset() {
        assert_eq!(check(b"tty[0-9"), Err(GlobError::UnclosedBracket(3)));
        assert_eq!(check(b"x[z-a]"), Err(GlobError::EmptyRange(2)));
        assert_eq!(check(b"ab\\"), Err(GlobError::TrailingBackslash(2)));
        assert_eq!(check(b"[]"), Err(GlobError::UnclosedBracket(0)));
        assert!(check(b"[]]").is_ok());
        // unchecked bad patterns never panic
        for p in ["[", "[z-a]", "\\", "[!", "a[b-"] {
            let _ = matches(p.as_bytes(), b"abc");
        }
    }

    #[test]
    fn compiled_agrees_with_matches() {
        let pats = [
            "add",
            "add|remove",
            "tty*",
            "tty*|sd?",
            "[a-c]*",
            "\\*",
            "",
            "a||b",
            "*",
            "x*y",
        ];
        let texts = [
            "add", "remove", "ttyUSB0", "sda", "b", "*", "", "xy", "x1y", "tty",
        ];
        for p in pats {
            let c = Compiled::new(p.as_bytes());
            for t in texts {
                assert_eq!(
                    c.matches(t.as_bytes()),
                    matches(p.as_bytes(), t.as_bytes()),
                    "{p} {t}"
                );
            }
        }
    }

    #[test]
    fn many_stars_stay_fast() {
        // the backtracking trap for naive recursive matchers
        let p = "*a*a*a*a*a*a*a*a*a*a*a*a*b";
        let t = "a".repeat(2000);
        assert!(!m(p, &t));
    }
}
