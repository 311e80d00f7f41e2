//! /dev's duties with real kernel events (issue 13; issue 14 item 4): the
//! daemon runs with `--dev-root` on a scratch directory holding nodes made
//! with `mknod` for real devices (`mem/full` is char 1:7), and the kernel
//! sends synthetic `change`, `remove` and `add` events for them (the
//! devices stay). Each test uses its own devices and its own SYNTH_UUID in
//! the rules, so tests running at once do not see each other's events.
//!
//! Needs root (uevent writes, mknod, chown); with CI=true it fails instead
//! of skipping.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(20);

fn uevent(dev: &str) -> std::path::PathBuf {
    Path::new("/sys/devices/virtual/mem")
        .join(dev)
        .join("uevent")
}

fn mknod(path: &Path, major: u32, minor: u32, mode: u32) {
    let st = Command::new("mknod")
        .arg(path)
        .args(["c", &major.to_string(), &minor.to_string()])
        .status()
        .expect("run mknod");
    assert!(st.success(), "mknod {}", path.display());
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn link(path: &Path) -> Option<String> {
    std::fs::read_link(path)
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Starts `hotplugd run` on `dev` with `rules`; returns once it is ready
/// (coldplug, here `none`, done: the table knows the devices).
fn start(s: &Scratch, rules: &str, dev: &Path) -> Proc {
    let pid = s.path("pid");
    let mut c = hotplugd();
    c.args(["-v", "run", "--rules", rules, "--dev-root"])
        .arg(dev)
        .arg("--pidfile")
        .arg(&pid);
    let p = Proc::spawn(c);
    p.wait_listening();
    let got = wait_file(&pid, WAIT, |s| !s.is_empty());
    assert!(!got.is_empty(), "not ready; stderr:\n{}", p.stderr());
    p
}

/// Waits for the handler's record to hold `n` lines; returns them.
fn lines(out: &Path, n: usize, p: &Proc) -> Vec<String> {
    let s = wait_file(out, WAIT, |s| s.lines().count() >= n);
    let v: Vec<String> = s.lines().map(String::from).collect();
    assert!(
        v.len() >= n,
        "expected {n} handler lines, got {v:?}; stderr:\n{}",
        p.stderr()
    );
    v
}

/// OWNER, GROUP, MODE (`:=` beating a later `=`) and SYMLINK on `change`
/// and `add`; links gone after `remove`, their emptied directories too, and
/// after a `change` whose rules no longer claim them; a
/// link path holding a regular file is not clobbered; a remove handler
/// sees an `ENV{}` value only the add set, and the add's DEVLINKS.
#[test]
fn permissions_links_and_what_a_remove_knows() {
    if !need_root("permissions_links_and_what_a_remove_knows") {
        return;
    }
    let s = Scratch::new("devnode-full");
    let dev = s.path("dev");
    std::fs::create_dir(&dev).unwrap();
    let node = dev.join("full");
    mknod(&node, 1, 7, 0o666);
    std::fs::write(dev.join("blocked"), "someone's file\n").unwrap();
    let out = s.path("out");
    let rec = s.script(
        "rec.sh",
        &format!(
            "echo \"$ACTION ${{ADDONLY:-none}} ${{DEVLINKS:-nolinks}} ${{TAGS:-notags}}\" >> {}",
            out.display()
        ),
    );
    let id = uuid();
    let m = format!("SUBSYSTEM==\"mem\", KERNEL==\"full\", ENV{{SYNTH_UUID}}==\"{id}\"");
    let rules = s.rules(&format!(
        "{m}, ACTION!=\"remove\", MODE:=\"0640\", OWNER=\"nobody\", GROUP=\"dialout\"\n\
         {m}, ACTION!=\"remove\", ENV{{SYNTH_ARG_L}}!=\"no\", SYMLINK+=\"test/by-name/%k\"\n\
         {m}, ACTION!=\"remove\", MODE=\"0666\", SYMLINK+=\"blocked\"\n\
         {m}, ACTION==\"add\", ENV{{ADDONLY}}=\"on-add\", TAG+=\"hotplugtest\"\n\
         {m}, RUN+=\"{rec}\"\n"
    ));
    let p = start(&s, &rules, &dev);
    let by_name = dev.join("test/by-name/full");

    synth(&uevent("full"), "change", &id, &[]);
    let l = lines(&out, 1, &p);
    assert_eq!(
        l[0], "change none /dev/test/by-name/full /dev/blocked notags",
        "the handler runs after /dev is done and sees DEVLINKS"
    );
    assert_eq!(mode(&node), 0o640, ":= wins over a later =");
    let md = std::fs::metadata(&node).unwrap();
    assert_eq!((md.uid(), md.gid()), (65534, 20), "nobody:dialout");
    assert!(md.file_type().is_char_device());
    assert_eq!(link(&by_name).as_deref(), Some("../../full"));
    assert_eq!(
        std::fs::read_to_string(dev.join("blocked")).unwrap(),
        "someone's file\n",
        "a regular file at a link's path is never replaced"
    );

    synth(&uevent("full"), "remove", &id, &[]);
    let l = lines(&out, 2, &p);
    assert_eq!(
        l[1],
        "remove none /dev/test/by-name/full /dev/blocked notags"
    );
    assert!(
        by_name.symlink_metadata().is_err(),
        "link gone after remove"
    );
    assert!(!dev.join("test").exists(), "emptied directories removed");
    assert!(dev.join("blocked").is_file(), "still someone's file");
    assert!(node.exists(), "the node is the kernel's business");

    synth(&uevent("full"), "add", &id, &[]);
    let l = lines(&out, 3, &p);
    assert_eq!(
        l[2],
        "add on-add /dev/test/by-name/full /dev/blocked :hotplugtest:"
    );
    assert_eq!(link(&by_name).as_deref(), Some("../../full"));

    synth(&uevent("full"), "remove", &id, &[]);
    let l = lines(&out, 4, &p);
    assert_eq!(
        l[3], "remove on-add /dev/test/by-name/full /dev/blocked :hotplugtest:",
        "the remove handler sees what the add knew: ENV{{}}, DEVLINKS, TAGS"
    );
    assert!(by_name.symlink_metadata().is_err());

    // put the device back in step for whoever comes next
    synth(&uevent("full"), "add", &id, &[]);
    lines(&out, 5, &p);
    assert_eq!(link(&by_name).as_deref(), Some("../../full"));
    // a change whose rules no longer give the link takes it away
    synth(&uevent("full"), "change", &id, &["L=no"]);
    let l = lines(&out, 6, &p);
    assert!(l[5].starts_with("change none /dev/blocked "), "{}", l[5]);
    assert!(
        by_name.symlink_metadata().is_err(),
        "no longer claimed: removed"
    );
    let (st, err) = p.stop();
    assert!(st.success(), "{err}");
    assert!(stat(&err, "dev_perms_applied") >= 1, "{err}");
    assert!(stat(&err, "dev_links_made") >= 2, "{err}");
    assert!(stat(&err, "dev_links_removed") >= 3, "{err}");
    assert!(
        stat(&err, "dev_links_refused") >= 3,
        "blocked, each time: {err}"
    );
    assert!(err.contains("blocked: not made for"), "{err}");
}

/// A node whose device number does not match the event's is not touched,
/// nor is a symlink at the node's path (its target keeps its mode); both
/// refusals are logged and counted.
#[test]
fn a_node_of_another_device_or_a_symlink_is_not_touched() {
    if !need_root("a_node_of_another_device_or_a_symlink_is_not_touched") {
        return;
    }
    let s = Scratch::new("devnode-wrong");
    let dev = s.path("dev");
    std::fs::create_dir(&dev).unwrap();
    // null is 1:3; this node is zero's (1:5)
    mknod(&dev.join("null"), 1, 5, 0o600);
    // urandom is 1:9; its path holds a symlink to a file
    let file = s.path("target-file");
    std::fs::write(&file, "x").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&file, dev.join("urandom")).unwrap();
    let out = s.path("out");
    let rec = s.script(
        "rec.sh",
        &format!("echo \"$ACTION $DEVNAME\" >> {}", out.display()),
    );
    let id = uuid();
    let rules = s.rules(&format!(
        "SUBSYSTEM==\"mem\", KERNEL==\"null|urandom\", ENV{{SYNTH_UUID}}==\"{id}\", MODE=\"0666\", GROUP=\"dialout\", RUN+=\"{rec}\"\n"
    ));
    let p = start(&s, &rules, &dev);
    synth(&uevent("null"), "change", &id, &[]);
    synth(&uevent("urandom"), "change", &id, &[]);
    lines(&out, 2, &p);
    assert_eq!(mode(&dev.join("null")), 0o600, "another device's node");
    assert_eq!(std::fs::metadata(dev.join("null")).unwrap().gid(), 0);
    assert_eq!(mode(&file), 0o600, "a symlink is never followed");
    assert_eq!(std::fs::metadata(&file).unwrap().gid(), 0);
    let (st, err) = p.stop();
    assert!(st.success(), "{err}");
    assert_eq!(stat(&err, "dev_perms_refused"), 2, "{err}");
    assert_eq!(stat(&err, "dev_perms_applied"), 0, "{err}");
    assert!(err.contains("the node of another device (1:5)"), "{err}");
    assert!(
        err.contains("holds a symlink, not the device node"),
        "{err}"
    );
}

/// Two devices claim one link: the higher `link_priority` keeps it
/// whatever the order of events (udev's rule), and when its device goes,
/// the other claimant gets it; the last one's remove removes it.
#[test]
fn a_link_two_devices_claim_follows_link_priority() {
    if !need_root("a_link_two_devices_claim_follows_link_priority") {
        return;
    }
    let s = Scratch::new("devnode-prio");
    let dev = s.path("dev");
    std::fs::create_dir(&dev).unwrap();
    mknod(&dev.join("kmsg"), 1, 11, 0o644);
    mknod(&dev.join("random"), 1, 8, 0o666);
    let out = s.path("out");
    let rec = s.script(
        "rec.sh",
        &format!("echo \"$ACTION $DEVNAME\" >> {}", out.display()),
    );
    let id = uuid();
    let m = format!("SUBSYSTEM==\"mem\", KERNEL==\"kmsg|random\", ENV{{SYNTH_UUID}}==\"{id}\"");
    let rules = s.rules(&format!(
        "{m}, ACTION!=\"remove\", SYMLINK+=\"shared/mem\"\n\
         {m}, KERNEL==\"random\", OPTIONS+=\"link_priority=10\"\n\
         {m}, RUN+=\"{rec}\"\n"
    ));
    let p = start(&s, &rules, &dev);
    let shared = dev.join("shared/mem");
    synth(&uevent("random"), "change", &id, &[]);
    lines(&out, 1, &p);
    assert_eq!(link(&shared).as_deref(), Some("../random"));
    synth(&uevent("kmsg"), "change", &id, &[]);
    lines(&out, 2, &p);
    assert_eq!(
        link(&shared).as_deref(),
        Some("../random"),
        "priority 10 keeps it against 0"
    );
    synth(&uevent("random"), "remove", &id, &[]);
    lines(&out, 3, &p);
    assert_eq!(
        link(&shared).as_deref(),
        Some("../kmsg"),
        "the other claimant gets it"
    );
    synth(&uevent("kmsg"), "remove", &id, &[]);
    lines(&out, 4, &p);
    assert!(shared.symlink_metadata().is_err(), "nobody claims it: gone");
    for d in ["random", "kmsg"] {
        synth(&uevent(d), "add", &id, &[]);
    }
    lines(&out, 6, &p);
    let (st, err) = p.stop();
    assert!(st.success(), "{err}");
    assert!(stat(&err, "dev_link_conflicts") >= 1, "{err}");
    assert!(err.contains("shared/mem: claimed by"), "{err}");
}

/// At start, a link hotplugd made (its record says so) whose device
/// vanished while the daemon was down is removed; a dangling link it did
/// not make, and a made link whose device is still there, stay.
#[test]
fn links_of_devices_gone_while_down_are_removed_at_start() {
    if !need_root("links_of_devices_gone_while_down_are_removed_at_start") {
        return;
    }
    let s = Scratch::new("devnode-sweep");
    let dev = s.path("dev");
    let records = dev.join(".hotplugd/links");
    std::fs::create_dir_all(&records).unwrap();
    std::fs::create_dir_all(dev.join("serial/by-id")).unwrap();
    std::fs::write(dev.join("ttyLIVE"), "").unwrap();
    let mk = |link: &str, target: &str, recorded: bool| {
        std::os::unix::fs::symlink(target, dev.join(link)).unwrap();
        if recorded {
            let name = link.replace('/', "\\x2f");
            std::os::unix::fs::symlink(target, records.join(name)).unwrap();
        }
    };
    mk("serial/by-id/gone", "../../ttyGONE", true);
    mk("serial/by-id/live", "../../ttyLIVE", true);
    mk("stranger", "nowhere", false);
    let rules = s.rules("SUBSYSTEM==\"mem\", KERNEL==\"none\", SYMLINK+=\"x\"\n");
    let p = start(&s, &rules, &dev);
    assert!(
        dev.join("serial/by-id/gone").symlink_metadata().is_err(),
        "made by hotplugd, device gone: removed; stderr:\n{}",
        p.stderr()
    );
    assert!(
        !records.join("serial\\x2fby-id\\x2fgone").exists(),
        "its record too"
    );
    assert_eq!(
        link(&dev.join("serial/by-id/live")).as_deref(),
        Some("../../ttyLIVE")
    );
    assert_eq!(link(&dev.join("stranger")).as_deref(), Some("nowhere"));
    assert!(
        p.stderr().contains("1 stale links removed"),
        "{}",
        p.stderr()
    );
    let (st, err) = p.stop();
    assert!(st.success(), "{err}");
}
