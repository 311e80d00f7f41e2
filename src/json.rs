//! A small, strict JSON reader for the lines `hotplugd monitor --json`
//! writes (and that `replay` reads back). Not on the event path: it
//! allocates, and is used only by `replay` and tests.
//!
//! Strings decode to bytes, not `String`: a `\udcXX` escape (a lone low
//! surrogate, which `monitor --json` writes for each byte that is not valid
//! UTF-8) becomes the byte `XX`, so every event round-trips exactly. Other
//! lone surrogates are errors. Nesting is limited to [`MAX_DEPTH`]; object
//! keys keep their order and duplicates.

use core::fmt;

/// Deepest nesting accepted; deeper input is an error, not a stack overflow.
pub const MAX_DEPTH: usize = 32;

/// A JSON value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number, as written (validated against the JSON grammar).
    Number(String),
    /// A string, decoded to bytes (see the module docs).
    String(Vec<u8>),
    /// An array.
    Array(Vec<Value>),
    /// An object: pairs in input order, duplicates kept.
    Object(Vec<(Vec<u8>, Value)>),
}

impl Value {
    /// The last value under `key`, if this is an object.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Object(pairs) => pairs
                .iter()
                .rev()
                .find(|(k, _)| k == key.as_bytes())
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The bytes of a string value.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// A string value as UTF-8 text.
    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| core::str::from_utf8(b).ok())
    }

    /// A number that is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Number(n) => n.parse().ok(),
            _ => None,
        }
    }
}

/// Where and why JSON input was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsonError {
    /// Byte offset in the input.
    pub offset: usize,
    /// What was expected or wrong.
    pub what: &'static str,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid JSON at byte {}: {}", self.offset, self.what)
    }
}

impl std::error::Error for JsonError {}

/// Parses one JSON document (surrounding whitespace allowed).
pub fn parse(input: &[u8]) -> Result<Value, JsonError> {
    let mut p = Parser { s: input, i: 0 };
    p.ws();
    let v = p.value(0)?;
    p.ws();
    if p.i != input.len() {
        return Err(p.err("trailing characters after the value"));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn err(&self, what: &'static str) -> JsonError {
        JsonError {
            offset: self.i,
            what,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn lit(&mut self, word: &[u8], v: Value) -> Result<Value, JsonError> {
        if self.s[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(self.err("expected a value"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, JsonError> {
        if depth > MAX_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b't') => self.lit(b"true", Value::Bool(true)),
            Some(b'f') => self.lit(b"false", Value::Bool(false)),
            Some(b'n') => self.lit(b"null", Value::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("expected a value")),
            None => Err(self.err("unexpected end of input")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.i += 1;
        let mut pairs = Vec::new();
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(Value::Object(pairs));
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a string key"));
            }
            let k = self.string()?;
            self.ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected ':'"));
            }
            self.i += 1;
            self.ws();
            let v = self.value(depth + 1)?;
            pairs.push((k, v));
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Value::Object(pairs));
                }
                _ => return Err(self.err("expected ',' or '}'")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, JsonError> {
        self.i += 1;
        let mut items = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.ws();
            items.push(self.value(depth + 1)?);
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.err("expected ',' or ']'")),
            }
        }
    }

    fn number(&mut self) -> Result<Value, JsonError> {
        let start = self.i;
        let digits = |p: &mut Self| {
            let s = p.i;
            while matches!(p.peek(), Some(b'0'..=b'9')) {
                p.i += 1;
            }
            p.i > s
        };
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        if self.peek() == Some(b'0') {
            self.i += 1;
        } else if !digits(self) {
            return Err(self.err("expected digits"));
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !digits(self) {
                return Err(self.err("expected digits after '.'"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !digits(self) {
                return Err(self.err("expected exponent digits"));
            }
        }
        // only ASCII was consumed
        let text = core::str::from_utf8(&self.s[start..self.i]).unwrap_or("0");
        Ok(Value::Number(text.to_string()))
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let h = self
            .s
            .get(self.i..self.i + 4)
            .ok_or_else(|| self.err("short \\u escape"))?;
        let mut n = 0u32;
        for &c in h {
            let d = (c as char)
                .to_digit(16)
                .ok_or_else(|| self.err("bad hex digit in \\u escape"))?;
            n = n * 16 + d;
        }
        self.i += 4;
        Ok(n)
    }

    fn string(&mut self) -> Result<Vec<u8>, JsonError> {
        self.i += 1; // opening quote
        let mut out = Vec::new();
        loop {
            let start = self.i;
            // copy a run of plain characters at once
            while let Some(c) = self.peek() {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.i += 1;
            }
            let run = &self.s[start..self.i];
            if core::str::from_utf8(run).is_err() {
                return Err(JsonError {
                    offset: start,
                    what: "invalid UTF-8 in a string",
                });
            }
            out.extend_from_slice(run);
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let e = self.peek().ok_or_else(|| self.err("unfinished escape"))?;
                    self.i += 1;
                    let simple = match e {
                        b'"' => Some(b'"'),
                        b'\\' => Some(b'\\'),
                        b'/' => Some(b'/'),
                        b'b' => Some(8),
                        b'f' => Some(12),
                        b'n' => Some(b'\n'),
                        b'r' => Some(b'\r'),
                        b't' => Some(b'\t'),
                        b'u' => None,
                        _ => return Err(self.err("unknown escape")),
                    };
                    if let Some(b) = simple {
                        out.push(b);
                        continue;
                    }
                    let u = self.hex4()?;
                    let c = match u {
                        // surrogateescape: one raw byte 0x80..=0xff
                        0xdc80..=0xdcff => {
                            out.push((u - 0xdc00) as u8);
                            continue;
                        }
                        0xd800..=0xdbff => {
                            if self.s[self.i..].starts_with(b"\\u") {
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xdc00..=0xdfff).contains(&lo) {
                                    return Err(self.err("bad low surrogate"));
                                }
                                0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00)
                            } else {
                                return Err(self.err("lone high surrogate"));
                            }
                        }
                        0xdc00..=0xdfff => return Err(self.err("lone low surrogate")),
                        u => u,
                    };
                    let c = char::from_u32(c).ok_or_else(|| self.err("bad code point"))?;
                    let mut tmp = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
                }
                Some(_) => return Err(self.err("control character in a string")),
                None => return Err(self.err("unterminated string")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_monitor_line() {
        let v = parse(
            br#"{"action":"add","devpath":"/d","subsystem":null,"seqnum":12,"env":{"ACTION":"add","K":"a\"b\\c\n\u00e9\udcff\ud83d\ude00"}}"#,
        )
        .unwrap();
        assert_eq!(v.get("action").unwrap().as_str(), Some("add"));
        assert_eq!(v.get("subsystem"), Some(&Value::Null));
        assert_eq!(v.get("seqnum").unwrap().as_u64(), Some(12));
        let env = v.get("env").unwrap();
        assert_eq!(
            env.get("K").unwrap().as_bytes().unwrap(),
            b"a\"b\\c\n\xc3\xa9\xff\xf0\x9f\x98\x80"
        );
    }

    #[test]
    fn refuses_bad_input_with_an_offset() {
        for (bad, at) in [
            (&b"{"[..], 1),
            (b"{\"a\":}", 5),
            (b"[1,]", 3),
            (b"\"\\ud800\"", 7),
            (b"\"\\udc00\"", 7),
            (b"\"a\nb\"", 2),
            (b"01", 1),
            (b"nul", 0),
            (b"{} x", 3),
            (b"\"\xff\"", 1),
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.offset, at, "{:?}: {e}", String::from_utf8_lossy(bad));
        }
        let deep = "[".repeat(100);
        assert_eq!(
            parse(deep.as_bytes()).unwrap_err().what,
            "nested too deeply"
        );
    }
}
