//! `RUN{builtin}+="firmware"` against a fixture sysfs: firmware devices are
//! directories whose `loading` and `data` are regular files, driven through
//! `hotplugd replay` (the daemon's rules, ordering and children, events from
//! a file). No root needed.
//!
//! The deadlock case (systemd#18259): the parent device's `add` handler
//! waits for the firmware its driver asked for, as a driver's probe does;
//! the firmware device is the parent's child. Per-device ordering holds a
//! child's job until the parent's has finished, so a firmware load that
//! went through it would start only after the parent's handler gave up.

mod common;

use std::path::Path;

use common::*;

const PARENT: &str = "/devices/pci0000:00/0000:00:14.0/usb1/1-1";

fn event(action: &str, devpath: &str, subsystem: &str, extra: &[(&str, &str)]) -> String {
    let mut env =
        format!("\"ACTION\":\"{action}\",\"DEVPATH\":\"{devpath}\",\"SUBSYSTEM\":\"{subsystem}\"");
    for (k, v) in extra {
        env.push_str(&format!(",\"{k}\":\"{v}\""));
    }
    format!("{{\"action\":\"{action}\",\"devpath\":\"{devpath}\",\"env\":{{{env}}}}}\n")
}

/// A firmware device of the fixture: `loading` and `data`, empty.
fn firmware_device(sysfs: &Path, devpath: &str) {
    let d = sysfs.join(devpath.trim_start_matches('/'));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("loading"), "").unwrap();
    std::fs::write(d.join("data"), "").unwrap();
}

#[test]
fn firmware_loads_while_the_parent_handler_waits_for_it_and_a_missing_file_says_minus_one() {
    let s = Scratch::new("firmware");
    let sysfs = s.path("sys");
    let fwdir = s.path("fw");
    std::fs::create_dir_all(fwdir.join("vendor")).unwrap();
    // 100 KiB: more than one 16 KiB copy buffer
    let blob: Vec<u8> = (0..100 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(fwdir.join("vendor/dev.bin"), &blob).unwrap();
    let child = format!("{PARENT}/firmware/1-1");
    let other = format!("{PARENT}/firmware/1-1b");
    firmware_device(&sysfs, &child);
    firmware_device(&sysfs, &other);
    let loading = sysfs.join(child.trim_start_matches('/')).join("loading");
    // the "probe": waits (at most 10 s) for the load to finish
    let wait = s.script(
        "wait-for-probe.sh",
        &format!(
            "for i in $(seq 200); do [ \"$(cat '{}')\" = 0 ] && exit 0; sleep 0.05; done; exit 1",
            loading.display()
        ),
    );
    let rules = s.rules(&format!(
        "SUBSYSTEM==\"usb\", ACTION==\"add\", RUN+=\"{wait}\"\n\
         SUBSYSTEM==\"firmware\", ACTION==\"add\", RUN{{builtin}}+=\"firmware\"\n"
    ));
    let input = s.path("in.jsonl");
    let mut events = event("add", PARENT, "usb", &[("DEVTYPE", "usb_device")]);
    events.push_str(&event(
        "add",
        &child,
        "firmware",
        &[("FIRMWARE", "vendor/dev.bin")],
    ));
    events.push_str(&event(
        "add",
        &other,
        "firmware",
        &[("FIRMWARE", "missing.bin")],
    ));
    std::fs::write(&input, events).unwrap();
    let out = hotplugd()
        .args([
            "replay",
            "--insecure-rules",
            "--rules",
            &rules,
            "--handler-timeout",
            "30",
        ])
        .arg("--sysfs-root")
        .arg(&sysfs)
        .arg("--firmware-dir")
        .arg(&fwdir)
        .arg(&input)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    // the parent's handler saw the load finish (it exits 1 after 10 s otherwise)
    assert_eq!(stat(&err, "handlers_failed"), 0, "{err}");
    assert_eq!(stat(&err, "handlers_timed_out"), 0, "{err}");
    assert_eq!(stat(&err, "firmware_loaded"), 1, "{err}");
    assert_eq!(stat(&err, "firmware_not_found"), 1, "{err}");
    assert_eq!(stat(&err, "firmware_failed"), 0, "{err}");
    let dev = |d: &str, f: &str| sysfs.join(d.trim_start_matches('/')).join(f);
    assert_eq!(std::fs::read(dev(&child, "data")).unwrap(), blob);
    assert_eq!(read(dev(&child, "loading")), "0");
    // not found: "-1", so the driver's request fails now, not at its timeout
    assert_eq!(read(dev(&other, "loading")), "-1");
    assert!(read(dev(&other, "data")).is_empty());
    assert!(err.contains("firmware missing.bin for"), "{err}");
}

#[test]
fn a_firmware_device_without_loading_is_counted_failed() {
    let s = Scratch::new("firmware-noload");
    let sysfs = s.path("sys");
    std::fs::create_dir_all(&sysfs).unwrap();
    let fwdir = s.path("fw");
    std::fs::create_dir_all(&fwdir).unwrap();
    std::fs::write(fwdir.join("a.bin"), "x").unwrap();
    let rules = s.rules("SUBSYSTEM==\"firmware\", RUN{builtin}+=\"firmware\"\n");
    let input = s.path("in.jsonl");
    let dev = format!("{PARENT}/firmware/gone");
    std::fs::write(
        &input,
        event("add", &dev, "firmware", &[("FIRMWARE", "a.bin")]),
    )
    .unwrap();
    let out = hotplugd()
        .args(["replay", "--insecure-rules", "--rules", &rules])
        .arg("--sysfs-root")
        .arg(&sysfs)
        .arg("--firmware-dir")
        .arg(&fwdir)
        .arg(&input)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(stat(&err, "firmware_failed"), 1, "{err}");
    assert_eq!(stat(&err, "firmware_loaded"), 0, "{err}");
}
