//! Every real uevent in the corpus (tests/corpus, see its README and
//! SOURCES.md) goes through the parser and must come out as exactly the
//! pairs that were recorded, in the recorded order.

mod common;

use hotplugd::json::{self, Value};
use hotplugd::uevent::{ParseErrorKind, Uevent};

struct Recorded {
    what: String,
    action: String,
    devpath: String,
    /// (key, value); value None for a bare field without '='.
    env: Vec<(String, Option<Vec<u8>>)>,
    raw: Option<Vec<u8>>,
}

fn load(rel: &str) -> Vec<Recorded> {
    let text = common::read(common::repo(rel));
    let mut out = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let v = json::parse(line.as_bytes()).unwrap_or_else(|e| panic!("{rel}:{}: {e}", i + 1));
        let Some(Value::Array(env)) = v.get("env") else {
            panic!("{rel}:{}: no env", i + 1)
        };
        let env = env
            .iter()
            .map(|kv| match kv {
                Value::Array(p) => (
                    p[0].as_str().unwrap().to_string(),
                    p[1].as_bytes().map(|b| b.to_vec()),
                ),
                _ => panic!("{rel}:{}: env entry is not a pair", i + 1),
            })
            .collect();
        let raw = v
            .get("capture")
            .and_then(|c| c.get("raw_b64"))
            .and_then(|b| b.as_str())
            .map(base64);
        out.push(Recorded {
            what: format!(
                "{rel}:{} ({})",
                i + 1,
                v.get("scenario").and_then(|s| s.as_str()).unwrap_or("-")
            ),
            action: v.get("action").unwrap().as_str().unwrap().to_string(),
            devpath: v.get("devpath").unwrap().as_str().unwrap().to_string(),
            env,
            raw,
        });
    }
    out
}

/// The wire payload, as `to_wire.py encode` builds it.
fn wire(r: &Recorded) -> Vec<u8> {
    let mut d = format!("{}@{}\0", r.action, r.devpath).into_bytes();
    for (k, v) in &r.env {
        d.extend_from_slice(k.as_bytes());
        if let Some(v) = v {
            d.push(b'=');
            d.extend_from_slice(v);
        }
        d.push(0);
    }
    d
}

fn base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("bad base64 {c}"),
    };
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|&c| c != b'=') {
        acc = (acc << 6) | u32::from(val(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn check_exact(r: &Recorded) {
    let d = wire(r);
    if let Some(raw) = &r.raw {
        assert_eq!(
            &d, raw,
            "{}: encoding differs from the captured bytes",
            r.what
        );
    }
    let ev = Uevent::parse(&d).unwrap_or_else(|e| panic!("{}: {e}", r.what));
    assert_eq!(ev.action(), r.action, "{}", r.what);
    assert_eq!(ev.devpath(), r.devpath, "{}", r.what);
    let got: Vec<(String, Option<Vec<u8>>)> = ev
        .fields()
        .iter()
        .map(|f| (f.key.to_string(), Some(f.value.to_vec())))
        .collect();
    assert_eq!(got, r.env, "{}", r.what);
    let seq = r.env.iter().rev().find(|(k, _)| k == "SEQNUM");
    assert_eq!(
        ev.seqnum().map(|n| n.to_string().into_bytes()),
        seq.and_then(|(_, v)| v.clone()),
        "{}",
        r.what
    );
}

#[test]
fn every_corpus_event_parses_to_its_recorded_pairs() {
    let events = load("tests/corpus/events.jsonl");
    assert_eq!(events.len(), 193);
    let mut bare = 0;
    for r in &events {
        if r.env.iter().any(|(_, v)| v.is_none()) {
            // One 2.6.24 capture has a bare field `sd` (no '='), as
            // transcribed from a forum post. The kernel always writes
            // KEY=VALUE; hotplugd refuses it by name and counts it.
            let e = Uevent::parse(&wire(r)).unwrap_err();
            assert_eq!(e.kind, ParseErrorKind::NoEquals, "{}", r.what);
            bare += 1;
            continue;
        }
        check_exact(r);
    }
    assert_eq!(bare, 1, "the corpus documents exactly one bare field");
}

#[test]
fn every_qemu_usb_event_parses_to_its_recorded_pairs() {
    let events = load("tests/corpus/qemu-usb-x86_64.jsonl");
    assert_eq!(events.len(), 103);
    events.iter().for_each(check_exact);
    for arch in ["aarch64", "x86_64"] {
        let events = load(&format!("tests/corpus/sysfs/{arch}/uevents.jsonl"));
        assert_eq!(events.len(), 76, "{arch}");
        events.iter().for_each(check_exact);
    }
}

#[test]
fn raw_datagrams_captured_on_this_machine_kind_parse() {
    // provenance/cap*.jsonl: base64 of the exact bytes recvmsg returned.
    let mut n = 0;
    for f in ["cap1.jsonl", "cap2.jsonl"] {
        let text = common::read(common::repo(&format!("tests/corpus/provenance/{f}")));
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v = json::parse(line.as_bytes()).unwrap();
            let raw = base64(v.get("b64").unwrap().as_str().unwrap());
            assert_eq!(raw.len() as u64, v.get("len").unwrap().as_u64().unwrap());
            let ev = Uevent::parse(&raw).unwrap_or_else(|e| panic!("{f}: {e}"));
            assert!(ev.seqnum().is_some(), "{f}: kernel events carry SEQNUM");
            n += 1;
        }
    }
    assert_eq!(n, 47);
}
