//! The identity builtins against the real thing: for every device node of
//! every sysfs fixture tree (each device whose `uevent` has `DEVNAME`), and
//! for `usb_id`, `path_id` and `input_id`, `hotplugd test-builtin` must print exactly
//! the properties Debian's udev 252 prints (`udevadm test-builtin`, run
//! unpacked, with the fixture bind-mounted over /sys in a private mount
//! namespace; see ../shared/notes/udev-reference.md), key for key, both
//! ways. Needs root, `unshare`, `apt-get` and `dpkg`; in CI a missing
//! piece is a failure.
//!
//! And the link names: for every node, the `/dev/serial/by-*`,
//! `/dev/disk/by-*` and `/dev/input/by-*` links the shipped
//! `board/generic/rules.d/60-persistent-links.rules` makes (the library's
//! rules engine on an `add` event built from the fixture) must be the
//! links udev 252 makes with its own `60-serial.rules`,
//! `60-persistent-storage.rules`, `60-input-id.rules` and
//! `60-persistent-input.rules` (`udevadm test --action=add`, with an
//! empty tmpfs over /dev and /run, so nothing of the host is read or
//! written).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const TEST: &str = "identity_matches_udev_252";
const LINKS_TEST: &str = "persistent_links_match_udev_252";
/// udev's rule files for the link families (from the same udev package).
const UDEV_RULES: [&str; 4] = [
    "60-serial.rules",
    "60-persistent-storage.rules",
    "60-input-id.rules",
    "60-persistent-input.rules",
];
/// The fixtures are 64-bit kernels' sysfs and the reference is x86_64
/// udev: both read the input capability bitmaps in 64-bit words. A 32-bit
/// build (armv7 under qemu-user) reads them in 32-bit words, as udev
/// built for armv7 would, so there `input_id` and the input links (whose
/// suffix comes from it) are not compared; `src/identity/input_id.rs`'
/// unit tests cover the 32-bit layout.
const WORD64: bool = cfg!(target_pointer_width = "64");

/// The link families hotplugd's rules file makes (below /dev).
const FAMILIES: [&str; 6] = [
    "serial/by-id/",
    "serial/by-path/",
    "disk/by-id/",
    "disk/by-path/",
    "input/by-id/",
    "input/by-path/",
];
const BUILTINS: [&str; 3] = ["usb_id", "path_id", "input_id"];

/// Debian's udev, unpacked under target/ once; the udevadm path and its
/// library directory. The tests of this file run in parallel: one unpacks
/// while the others wait (a lock), and the tree appears whole (unpacked
/// beside it, then renamed), so none can run a udevadm whose library is
/// not there yet.
fn udev() -> Option<(PathBuf, PathBuf)> {
    static ONCE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = ONCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/udev-reference");
    let udevadm = dir.join("x/bin/udevadm");
    let lib = dir.join("x/usr/lib/x86_64-linux-gnu/systemd");
    if udevadm.is_file() {
        return Some((udevadm, lib));
    }
    fs::create_dir_all(&dir).ok()?;
    let download = || {
        Command::new("apt-get")
            .args(["download", "udev", "libsystemd-shared"])
            .current_dir(&dir)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !download() {
        let _ = Command::new("apt-get").arg("update").status();
        if !download() {
            return None;
        }
    }
    let tmp = dir.join("x.unpacking");
    let _ = fs::remove_dir_all(&tmp);
    for e in fs::read_dir(&dir).ok()?.flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "deb") {
            let ok = Command::new("dpkg")
                .arg("-x")
                .arg(&p)
                .arg(&tmp)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return None;
            }
        }
    }
    let _ = fs::remove_dir_all(dir.join("x"));
    fs::rename(&tmp, dir.join("x")).ok()?;
    udevadm.is_file().then_some((udevadm, lib))
}

/// Every devpath under `root/devices` whose uevent names a device node,
/// found by walking the tree (links not followed).
fn nodes(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                walk(root, &p, out);
            } else if t.is_file() && e.file_name() == "uevent" {
                let text = fs::read_to_string(&p).unwrap_or_default();
                if text.lines().any(|l| l.starts_with("DEVNAME=")) {
                    let rel = dir.strip_prefix(root).unwrap();
                    out.push(format!("/{}", rel.display()));
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(root, &root.join("devices"), &mut out);
    out.sort();
    out
}

/// What kind of node a devpath is, for the summary: `usb_device`,
/// `disk`, `partition` (their `DEVTYPE`), else the class directory it
/// sits in (`tty`, `bsg`, `hidraw`, `input`).
fn kind(root: &Path, devpath: &str) -> String {
    let uevent = fs::read_to_string(root.join(&devpath[1..]).join("uevent")).unwrap_or_default();
    if let Some(t) = uevent.lines().find_map(|l| l.strip_prefix("DEVTYPE=")) {
        return t.to_string();
    }
    let mut parts = devpath.rsplit('/').skip(1);
    match parts.next() {
        Some(p) if p.starts_with("input") => "input".into(),
        Some(p) => p.to_string(),
        None => "?".into(),
    }
}

fn parse(out: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// udev's output for every (builtin, node) of one tree, from one
/// namespace: `@@ builtin devpath` headers split it.
fn udev_outputs(
    udevadm: &Path,
    lib: &Path,
    root: &Path,
    nodes: &[String],
) -> BTreeMap<(String, String), BTreeMap<String, String>> {
    let mut script = format!("mount --bind '{}' /sys || exit 99\n", root.display());
    for n in nodes {
        for b in BUILTINS {
            script.push_str(&format!(
                "echo '@@ {b} {n}'; '{}' test-builtin {b} '/sys{n}' 2>/dev/null\n",
                udevadm.display()
            ));
        }
    }
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .env("LD_LIBRARY_PATH", lib)
        .env("SYSTEMD_DEVICE_VERIFY_SYSFS", "0")
        .env("SYSTEMD_LOG_LEVEL", "err")
        .output()
        .expect("run unshare");
    assert_ne!(
        out.status.code(),
        Some(99),
        "bind mount of {} failed",
        root.display()
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut res = BTreeMap::new();
    for chunk in text.split("@@ ").skip(1) {
        let (head, body) = chunk.split_once('\n').unwrap_or((chunk, ""));
        let (b, n) = head.split_once(' ').unwrap();
        res.insert((b.to_string(), n.to_string()), parse(body.as_bytes()));
    }
    res
}

/// The fixture trees under tests/corpus/sysfs.
fn trees() -> Vec<PathBuf> {
    let base = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/sysfs");
    let mut trees: Vec<PathBuf> = fs::read_dir(&base)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("devices").is_dir())
        .collect();
    trees.sort();
    assert!(
        trees.len() >= 2,
        "fixture trees missing under {}",
        base.display()
    );
    trees
}

/// Debian's udev, or the test's verdict when it cannot be had.
fn udev_or_skip(test: &str) -> Option<(PathBuf, PathBuf)> {
    if !common::need_root(test) || !common::need_tool(test, "unshare") {
        return None;
    }
    let u = udev();
    if u.is_none() {
        if common::in_ci() {
            panic!("{test}: cannot get Debian's udev (apt-get download udev libsystemd-shared); CI=true, so this is a failure");
        }
        eprintln!("SKIPPED {test}: cannot get Debian's udev");
    }
    u
}

/// The links of `DEVLINKS` in the families hotplugd makes, relative to
/// /dev, sorted.
fn family_links<'a>(links: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut v: Vec<String> = links
        .map(|l| l.strip_prefix("/dev/").unwrap_or(l))
        .filter(|l| compared_families().any(|f| l.starts_with(f)))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// The families compared on this build (see [`WORD64`]).
fn compared_families() -> impl Iterator<Item = &'static str> {
    FAMILIES
        .into_iter()
        .filter(|f| WORD64 || !f.starts_with("input/"))
}

/// udev's links for every node of one tree: `udevadm test --action=add`
/// with only its persistent-link rules, in one private mount namespace.
/// `nodes` is sorted, so a disk comes before its partitions: `udevadm
/// test` records the disk's properties in /run/udev/data (the tmpfs), and
/// the partition's `IMPORT{parent}="ID_*"` reads them, as on a running
/// system (run alone, a partition gets no by-id link from udev).
fn udev_links(
    udevadm: &Path,
    lib: &Path,
    root: &Path,
    nodes: &[String],
) -> BTreeMap<String, Vec<String>> {
    let rules_dir = udevadm.parent().unwrap().join("../lib/udev/rules.d");
    let mut script = format!(
        "mount --bind '{}' /sys && mount -t tmpfs tmpfs /dev && mount -t tmpfs tmpfs /run \
         && mkdir -p /run/udev/rules.d || exit 99\n\
         for d in /etc/udev/rules.d /lib/udev/rules.d /usr/lib/udev/rules.d /usr/local/lib/udev/rules.d; do\n\
           [ -d $d ] && {{ mount -t tmpfs tmpfs $d || exit 99; }}\n\
         done\n",
        root.display()
    );
    for r in UDEV_RULES {
        script.push_str(&format!(
            "cp '{}/{r}' /run/udev/rules.d/ || exit 98\n",
            rules_dir.display()
        ));
    }
    for n in nodes {
        script.push_str(&format!(
            "echo '@@ {n}'; '{}' test --action=add '/sys{n}' 2>/dev/null | grep '^DEVLINKS='\n",
            udevadm.display()
        ));
    }
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .env("LD_LIBRARY_PATH", lib)
        .env("SYSTEMD_DEVICE_VERIFY_SYSFS", "0")
        .env("SYSTEMD_LOG_LEVEL", "err")
        .output()
        .expect("run unshare");
    assert!(
        !matches!(out.status.code(), Some(98 | 99)),
        "setting up udev's namespace for {} failed: {}",
        root.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut res = BTreeMap::new();
    for chunk in text.split("@@ ").skip(1) {
        let (node, body) = chunk.split_once('\n').unwrap_or((chunk, ""));
        let links = body
            .lines()
            .find_map(|l| l.strip_prefix("DEVLINKS="))
            .unwrap_or("");
        res.insert(node.to_string(), family_links(links.split(' ')));
    }
    res
}

/// The kernel's `add` event for the device at `devpath` of a fixture:
/// ACTION, DEVPATH, SUBSYSTEM (its `subsystem` link), then its `uevent`.
fn add_event(root: &Path, devpath: &str) -> Vec<u8> {
    let dir = root.join(&devpath[1..]);
    let subsystem = fs::read_link(dir.join("subsystem")).unwrap();
    let subsystem = subsystem.file_name().unwrap().to_str().unwrap();
    let mut ev = format!("add@{devpath}\0ACTION=add\0DEVPATH={devpath}\0SUBSYSTEM={subsystem}\0");
    for l in fs::read_to_string(dir.join("uevent")).unwrap().lines() {
        ev.push_str(l);
        ev.push('\0');
    }
    ev.push_str("SEQNUM=1\0");
    ev.into_bytes()
}

#[test]
fn persistent_links_match_udev_252() {
    let Some((udevadm, lib)) = udev_or_skip(LINKS_TEST) else {
        return;
    };
    if !WORD64 {
        eprintln!(
            "{LINKS_TEST}: 32-bit build: input links not compared (64-bit fixtures and reference)"
        );
    }
    use hotplugd::rules::{Matched, Sysfs};
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("board/generic/rules.d/60-persistent-links.rules");
    let rules = hotplugd::rules::parse::load(&[file], &[], false).expect("the rules file loads");
    let (mut compared, mut with_links, mut diffs) = (0, 0, Vec::new());
    let mut families: BTreeMap<&str, usize> = BTreeMap::new();
    for root in &trees() {
        let nodes = nodes(root);
        let want = udev_links(&udevadm, &lib, root, &nodes);
        let sysfs = hotplugd::sys::sysfs::SysfsRoot::new(root);
        let mut m: Box<Matched> = Box::default();
        for n in &nodes {
            let raw = add_event(root, n);
            let ev = hotplugd::uevent::Uevent::parse(&raw).unwrap();
            sysfs.begin_event();
            rules.evaluate(&ev, &sysfs as &dyn Sysfs, &mut m);
            let got = family_links(m.node.links.iter().map(|l| l.as_str()));
            let exp = want
                .get(n)
                .unwrap_or_else(|| panic!("no udev output for {n}"));
            compared += 1;
            if !exp.is_empty() {
                with_links += 1;
            }
            for l in exp {
                let f = FAMILIES.iter().find(|f| l.starts_with(*f)).unwrap();
                *families.entry(f).or_default() += 1;
            }
            if &got != exp {
                diffs.push(format!(
                    "{} {n}:\n  udev:     {exp:?}\n  hotplugd: {got:?}",
                    root.file_name().unwrap().to_string_lossy()
                ));
            }
        }
    }
    eprintln!(
        "{LINKS_TEST}: {compared} device nodes compared, {with_links} with links ({families:?}), {} differ",
        diffs.len()
    );
    for f in compared_families() {
        assert!(
            families.contains_key(f),
            "udev made no {f} link on any fixture: the reference did not run"
        );
    }
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}

#[test]
fn identity_matches_udev_252() {
    let Some((udevadm, lib)) = udev_or_skip(TEST) else {
        return;
    };
    if !WORD64 {
        eprintln!("{TEST}: 32-bit build: input_id not compared (64-bit fixtures and reference)");
    }
    let trees = trees();
    let (mut compared, mut with_props, mut diffs) = (0, 0, Vec::new());
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    let mut total_nodes = 0;
    for root in &trees {
        let nodes = nodes(root);
        assert!(!nodes.is_empty(), "no device nodes in {}", root.display());
        total_nodes += nodes.len();
        for n in &nodes {
            *kinds.entry(kind(root, n)).or_default() += 1;
        }
        let want = udev_outputs(&udevadm, &lib, root, &nodes);
        for n in &nodes {
            for b in BUILTINS {
                if b == "input_id" && !WORD64 {
                    continue;
                }
                let out = common::hotplugd()
                    .args(["test-builtin", b, &format!("/sys{n}"), "--sysfs-root"])
                    .arg(root)
                    .env("RUST_LOG", "off")
                    .output()
                    .unwrap();
                let got = parse(&out.stdout);
                let exp = want
                    .get(&(b.to_string(), n.clone()))
                    .unwrap_or_else(|| panic!("no udev output for {b} {n}"));
                compared += 1;
                if !exp.is_empty() {
                    with_props += 1;
                }
                if &got != exp {
                    diffs.push(format!(
                        "{} {b} {n}:\n  udev:     {exp:?}\n  hotplugd: {got:?}",
                        root.file_name().unwrap().to_string_lossy()
                    ));
                }
            }
        }
        eprintln!("{}: {} device nodes", root.display(), nodes.len());
    }
    eprintln!(
        "{TEST}: {total_nodes} device nodes in {} trees ({kinds:?}), {compared} (builtin, node) pairs compared, {with_props} with properties, {} differ",
        trees.len(),
        diffs.len()
    );
    // every kind of node the issue names is in some fixture
    for k in [
        "tty",
        "disk",
        "partition",
        "bsg",
        "hidraw",
        "input",
        "usb_device",
    ] {
        assert!(kinds.contains_key(k), "no {k} node in any fixture tree");
    }
    assert!(
        with_props > 0,
        "udev printed nothing at all: the reference did not run"
    );
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
}
