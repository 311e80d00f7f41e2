//! The uevent parser on arbitrary datagrams: never panics, and an event it
//! accepts encodes back to a datagram that parses to the same event.
#![no_main]
use hotplugd::uevent::{encode, Uevent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(ev) = Uevent::parse(data) else { return };
    assert!(!ev.action().is_empty() && !ev.devpath().is_empty());
    assert!(ev.fields().len() <= hotplugd::limits::MAX_FIELDS);
    let mut out: heapless::Vec<u8, 16384> = heapless::Vec::new();
    assert!(encode(
        &mut out,
        ev.action(),
        ev.devpath(),
        ev.fields().iter().map(|f| (f.key, f.value))
    ));
    let again = Uevent::parse(&out).expect("an encoded event parses");
    assert_eq!(again.action(), ev.action());
    assert_eq!(again.devpath(), ev.devpath());
    assert_eq!(again.subsystem(), ev.subsystem());
    assert_eq!(again.seqnum(), ev.seqnum());
    for f in ev.fields() {
        assert_eq!(again.get(f.key), ev.get(f.key), "{}", f.key);
    }
});
