//! `replay`: recorded events → wire datagrams → the same parser, rules,
//! ordering and handlers as the daemon.
//!
//! Input, one or both formats mixed:
//! - JSON lines as `hotplugd monitor --json` prints them (`env` an object in
//!   wire order; `\udcXX` escapes become the raw bytes again). The corpus
//!   form, `env` as an array of `[key, value]` pairs, is accepted too.
//! - Text blocks as `udevadm monitor --kernel --property` (or `hotplugd
//!   monitor`) prints them: a `KERNEL[...] ACTION DEVPATH (SUBSYSTEM)` line,
//!   `KEY=VALUE` lines, a blank line. `UDEV [...]` blocks (udevd's own
//!   rebroadcasts) and other lines are skipped. udevadm shows DEVNAME as
//!   `/dev/...`; it is kept as shown (`$devnode` handles both forms).

use std::io;
use std::os::fd::RawFd;

use crate::daemon::{Drained, Sink, Source};
use crate::json::{self, Value};
use crate::limits::RECV_BUFFER;
use crate::stats::Stats;
use crate::uevent::Uevent;

/// A line of replay input that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Reads recorded events into wire datagrams. Events that do not parse as
/// uevents still become datagrams: the replay counts them as malformed,
/// as the daemon would.
pub fn read_events(input: &[u8]) -> Result<Vec<Vec<u8>>, InputError> {
    enum State {
        Between,
        /// inside a KERNEL block: the datagram so far
        Kernel(Vec<u8>),
        /// inside a UDEV block: skipped to the next blank line
        Skip,
    }
    let mut out = Vec::new();
    let mut state = State::Between;
    for (n, line) in input.split(|&b| b == b'\n').enumerate() {
        let line_no = n + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        state = match state {
            State::Kernel(mut wire) => {
                if line.is_empty() {
                    out.push(wire);
                    State::Between
                } else if line.contains(&b'=') {
                    wire.extend_from_slice(line);
                    wire.push(0);
                    State::Kernel(wire)
                } else {
                    return Err(InputError {
                        line: line_no,
                        message: "expected KEY=VALUE or a blank line inside an event block".into(),
                    });
                }
            }
            State::Skip if line.is_empty() => State::Between,
            State::Skip => State::Skip,
            State::Between => {
                let trimmed = line.trim_ascii();
                if trimmed.starts_with(b"{") {
                    let v = json::parse(trimmed).map_err(|e| InputError {
                        line: line_no,
                        message: e.to_string(),
                    })?;
                    out.push(from_json(&v).map_err(|message| InputError {
                        line: line_no,
                        message,
                    })?);
                    State::Between
                } else if let Some(rest) = line.strip_prefix(b"KERNEL[") {
                    State::Kernel(parse_header(rest).ok_or_else(|| InputError {
                        line: line_no,
                        message: "expected `KERNEL[time] ACTION DEVPATH (SUBSYSTEM)`".into(),
                    })?)
                } else if line.starts_with(b"UDEV") {
                    State::Skip
                } else {
                    // udevadm's banner, comments, blank lines
                    State::Between
                }
            }
        };
    }
    if let State::Kernel(wire) = state {
        out.push(wire);
    }
    Ok(out)
}

/// `time] ACTION DEVPATH (SUBSYSTEM)` → `ACTION@DEVPATH\0`.
fn parse_header(rest: &[u8]) -> Option<Vec<u8>> {
    let close = rest.iter().position(|&b| b == b']')?;
    let mut words = rest[close + 1..]
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty());
    let action = words.next()?;
    let devpath = words.next()?;
    let mut wire = action.to_vec();
    wire.push(b'@');
    wire.extend_from_slice(devpath);
    wire.push(0);
    Some(wire)
}

fn from_json(v: &Value) -> Result<Vec<u8>, String> {
    let action = v
        .get("action")
        .and_then(Value::as_bytes)
        .ok_or("no \"action\" string")?;
    let devpath = v
        .get("devpath")
        .and_then(Value::as_bytes)
        .ok_or("no \"devpath\" string")?;
    let mut wire = action.to_vec();
    wire.push(b'@');
    wire.extend_from_slice(devpath);
    wire.push(0);
    let mut put = |k: &[u8], val: Option<&[u8]>| {
        wire.extend_from_slice(k);
        if let Some(val) = val {
            wire.push(b'=');
            wire.extend_from_slice(val);
        }
        wire.push(0);
    };
    match v.get("env") {
        Some(Value::Object(pairs)) => {
            for (k, val) in pairs {
                let val = val.as_bytes().ok_or("env values must be strings")?;
                put(k, Some(val));
            }
        }
        // the corpus form: [[key, value], ...] (value null: a bare field)
        Some(Value::Array(pairs)) => {
            for p in pairs {
                let Value::Array(kv) = p else {
                    return Err("env entries must be [key, value]".into());
                };
                let k = kv
                    .first()
                    .and_then(Value::as_bytes)
                    .ok_or("env key must be a string")?;
                let val = match kv.get(1) {
                    Some(Value::Null) => None,
                    Some(x) => Some(x.as_bytes().ok_or("env values must be strings or null")?),
                    None => return Err("env entries must be [key, value]".into()),
                };
                put(k, val);
            }
        }
        _ => return Err("no \"env\" object".into()),
    }
    Ok(wire)
}

/// Feeds recorded datagrams to the loop as if they came from the socket
/// (sender checks excepted: they are recordings).
pub struct ReplaySource {
    events: Vec<Vec<u8>>,
    next: usize,
}

impl ReplaySource {
    /// A source over these datagrams.
    pub fn new(events: Vec<Vec<u8>>) -> ReplaySource {
        ReplaySource { events, next: 0 }
    }
}

impl Source for ReplaySource {
    fn drain(&mut self, stats: &mut Stats, sink: &mut dyn Sink) -> io::Result<Drained> {
        while self.next < self.events.len() {
            if !sink.has_room() {
                return Ok(Drained::Paused);
            }
            let d = &self.events[self.next];
            self.next += 1;
            stats.received += 1;
            if d.len() > RECV_BUFFER {
                stats.truncated += 1;
                log::warn!(
                    "event {}: {} bytes, larger than a datagram can be; skipped",
                    self.next,
                    d.len()
                );
                continue;
            }
            match Uevent::parse(d) {
                Ok(ev) => {
                    stats.accepted += 1;
                    if sink.deliver(&ev, stats) == crate::daemon::Flow::Stop {
                        return Ok(Drained::Stop);
                    }
                }
                Err(e) => {
                    stats.malformed += 1;
                    log::warn!("event {}: malformed: {e}; skipped", self.next);
                }
            }
        }
        Ok(Drained::Finished)
    }

    fn fd(&self) -> Option<RawFd> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_round_trips_raw_bytes() {
        let line = br#"{"action":"add","devpath":"/d","subsystem":"x","seqnum":1,"env":{"ACTION":"add","DEVPATH":"/d","NAME":"a\udcff","SEQNUM":"1"}}"#;
        let ev = read_events(line).unwrap();
        assert_eq!(
            ev,
            vec![b"add@/d\0ACTION=add\0DEVPATH=/d\0NAME=a\xff\0SEQNUM=1\0".to_vec()]
        );
    }

    #[test]
    fn udevadm_blocks_and_udev_blocks() {
        let text = b"monitor will print the received events for:\n\
KERNEL - the kernel uevent\n\
\n\
KERNEL[8414.073713] add      /devices/pci0000:00/0000:00:0b.0/usb1/1-1 (usb)\n\
ACTION=add\n\
DEVPATH=/devices/pci0000:00/0000:00:0b.0/usb1/1-1\n\
SUBSYSTEM=usb\n\
SEQNUM=2455\n\
\n\
UDEV  [8414.1] add      /devices/pci0000:00/0000:00:0b.0/usb1/1-1 (usb)\n\
ACTION=add\n\
ID_VENDOR=x\n\
\n\
KERNEL[8414.2] remove   /d (usb)\n\
ACTION=remove\n\
DEVPATH=/d\n";
        let ev = read_events(text).unwrap();
        assert_eq!(ev.len(), 2, "{ev:?}");
        let first = Uevent::parse(&ev[0]).unwrap();
        assert_eq!(first.seqnum(), Some(2455));
        assert_eq!(first.subsystem(), Some("usb"));
        assert_eq!(Uevent::parse(&ev[1]).unwrap().action(), "remove");
    }

    #[test]
    fn bad_input_names_the_line() {
        let e = read_events(b"\n{\"action\":1}\n").unwrap_err();
        assert_eq!(e.line, 2);
        let e = read_events(b"KERNEL[1] add /d (x)\nnot a field\n").unwrap_err();
        assert_eq!(e.line, 2);
    }
}
