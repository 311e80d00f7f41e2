//! The replay reader (JSON lines and udevadm text) on arbitrary input: never
//! panics, and each event it returns that parses prints as a JSON line
//! (`monitor --json`) that reads back to the same datagram.
#![no_main]
use hotplugd::monitor::{self, OutBuf};
use hotplugd::replay::read_events;
use hotplugd::uevent::Uevent;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(events) = read_events(data) else { return };
    for d in &events {
        let Ok(ev) = Uevent::parse(d) else { continue };
        let mut out = OutBuf::new();
        if monitor::json(&mut out, &ev).is_err() {
            continue; // larger than the output buffer: refused, not cut
        }
        let back = read_events(out.as_bytes()).expect("our own JSON line reads back");
        assert_eq!(back.len(), 1);
        let ev2 = Uevent::parse(&back[0]).expect("and parses");
        assert_eq!(ev2.action(), ev.action());
        assert_eq!(ev2.devpath(), ev.devpath());
        for f in ev.fields() {
            assert_eq!(ev2.get(f.key), ev.get(f.key), "{}", f.key);
        }
    }
});
