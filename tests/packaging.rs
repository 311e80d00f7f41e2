//! packaging/: the Buildroot, Yocto and OpenWrt packages stay in step with
//! the crate. Every package pins the version and revision of packaging/PIN,
//! which is a commit of this repository with that version and today's
//! Cargo.lock; the Yocto crates list is what packaging/yocto/gen-crates.py
//! makes of Cargo.lock; the init scripts parse, pass shellcheck and start
//! hotplugd only with options the binary accepts (the Buildroot one with the
//! same options as board/generic's busybox script); the Buildroot package
//! restores the size profile that Buildroot's cargo defaults undo.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const MK: &str = "packaging/buildroot/package/hotplugd/hotplugd.mk";
const HASH: &str = "packaging/buildroot/package/hotplugd/hotplugd.hash";
const BR_INIT: &str = "packaging/buildroot/package/hotplugd/S10hotplugd";
const OWRT_MAKEFILE: &str = "packaging/openwrt/hotplugd/Makefile";
const OWRT_INIT: &str = "packaging/openwrt/hotplugd/files/hotplugd.init";
const YOCTO_DIR: &str = "packaging/yocto/meta-hotplugd/recipes-core/hotplugd";
const BOARD_INIT: &str = "board/generic/init/busybox/S10hotplugd";

fn text(rel: &str) -> String {
    std::fs::read_to_string(repo(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// The value of the first line `NAME<sep>VALUE` (quotes stripped).
fn value(rel: &str, name: &str, sep: &str) -> String {
    let t = text(rel);
    let prefix = format!("{name}{sep}");
    t.lines()
        .find_map(|l| l.trim().strip_prefix(&prefix))
        .map(|v| v.trim().trim_matches('"').to_string())
        .unwrap_or_else(|| panic!("{rel}: no `{name}{sep}` line"))
}

/// (VERSION, REVISION) of packaging/PIN.
fn pin() -> (String, String) {
    (
        value("packaging/PIN", "VERSION", "="),
        value("packaging/PIN", "REVISION", "="),
    )
}

/// `version = "..."` of a Cargo.toml's [package] section.
fn cargo_version(toml: &str) -> String {
    toml.lines()
        .find_map(|l| l.strip_prefix("version = "))
        .map(|v| v.trim_matches('"').to_string())
        .expect("Cargo.toml has a version line")
}

fn git(args: &[&str]) -> (bool, String) {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo(""))
        .args(args)
        .output()
        .expect("run git");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn every_package_pins_the_version_and_revision_of_packaging_pin() {
    let (version, rev) = pin();
    assert_eq!(
        version,
        cargo_version(&text("Cargo.toml")),
        "packaging/PIN VERSION is not Cargo.toml's version: move the pin to a commit of this version"
    );
    assert!(
        rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()),
        "REVISION must be a full commit id: {rev}"
    );
    // Buildroot: git method, the revision as version, the crate version as CPE version
    assert_eq!(value(MK, "HOTPLUGD_VERSION", " = "), rev, "{MK}");
    assert_eq!(value(MK, "HOTPLUGD_CPE_ID_VERSION", " = "), version, "{MK}");
    assert!(
        text(HASH).contains(&format!("  hotplugd-{rev}-git4-cargo6.tar.gz")),
        "{HASH} has no hash for the pinned revision's tarball"
    );
    // Yocto: PV from the file name, SRCREV
    let bb = format!("{YOCTO_DIR}/hotplugd_{version}.bb");
    assert!(
        repo(&bb).is_file(),
        "no {bb}: rename the recipe to the crate version"
    );
    assert_eq!(value(&bb, "SRCREV", " = "), rev, "{bb}");
    // OpenWrt
    assert_eq!(value(OWRT_MAKEFILE, "PKG_VERSION", ":="), version);
    assert_eq!(value(OWRT_MAKEFILE, "PKG_SOURCE_VERSION", ":="), rev);
}

#[test]
fn pinned_revision_is_a_commit_with_this_version_and_this_cargo_lock() {
    if !need_tool("pinned_revision", "git") {
        return;
    }
    let (version, rev) = pin();
    let (is_repo, _) = git(&["rev-parse", "--git-dir"]);
    if !is_repo {
        assert!(
            !in_ci(),
            "pinned_revision: not a git checkout; CI=true, so this is a failure"
        );
        eprintln!("SKIPPED pinned_revision: not a git checkout");
        return;
    }
    let (ok, _) = git(&["cat-file", "-e", &format!("{rev}^{{commit}}")]);
    assert!(
        ok,
        "packaging/PIN REVISION {rev} is not a commit of this repository (a shallow clone?)"
    );
    let (ok, toml) = git(&["show", &format!("{rev}:Cargo.toml")]);
    assert!(ok);
    assert_eq!(
        cargo_version(&toml),
        version,
        "Cargo.toml at {rev} has another version"
    );
    let (ok, lock) = git(&["show", &format!("{rev}:Cargo.lock")]);
    assert!(ok);
    assert!(
        lock == text("Cargo.lock"),
        "Cargo.lock changed since the pinned revision {rev}: move packaging/PIN to a newer \
         commit and regenerate the Yocto crates list (packaging/README.md)"
    );
}

#[test]
fn yocto_crates_list_is_generated_from_cargo_lock() {
    if !need_tool("yocto_crates_list", "python3") {
        return;
    }
    let out = Command::new("python3")
        .arg(repo("packaging/yocto/gen-crates.py"))
        .arg(repo("Cargo.lock"))
        .output()
        .expect("run gen-crates.py");
    assert!(
        out.status.success(),
        "gen-crates.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let now = String::from_utf8(out.stdout).unwrap();
    let committed = text(&format!("{YOCTO_DIR}/hotplugd-crates.inc"));
    assert!(
        now == committed,
        "hotplugd-crates.inc is not what gen-crates.py makes of Cargo.lock; regenerate it:\n\
         packaging/yocto/gen-crates.py Cargo.lock > {YOCTO_DIR}/hotplugd-crates.inc"
    );
    // every crates.io package of Cargo.lock, with its checksum, is in the list
    let lock = text("Cargo.lock");
    let n = lock.matches("source = \"registry+").count();
    assert_eq!(committed.matches("crate://crates.io/").count(), n);
    assert_eq!(committed.matches(".sha256sum] = \"").count(), n);
}

#[test]
fn init_scripts_pass_sh_n_and_shellcheck() {
    let scripts = [repo(BR_INIT), repo(OWRT_INIT)];
    for s in &scripts {
        let out = Command::new("sh").arg("-n").arg(s).output().unwrap();
        assert!(
            out.status.success(),
            "sh -n {}: {}",
            s.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if !need_tool("init_scripts_shellcheck", "shellcheck") {
        return;
    }
    let out = Command::new("shellcheck")
        .args(["-s", "sh", "-S", "style"])
        .args(&scripts)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "shellcheck:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The `[profile.release]` value of `key` in Cargo.toml.
fn release_profile(key: &str) -> String {
    let t = text("Cargo.toml");
    let section = t
        .split("\n[")
        .find(|s| s.starts_with("profile.release]"))
        .expect("Cargo.toml has [profile.release]");
    section
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key} = ")))
        .map(|v| v.trim().trim_matches('"').to_string())
        .unwrap_or_else(|| panic!("[profile.release] has no {key}"))
}

#[test]
fn buildroot_package_restores_the_size_profile() {
    let mk = text(MK);
    let env: String = mk
        .split("HOTPLUGD_CARGO_ENV =")
        .nth(1)
        .expect("hotplugd.mk sets HOTPLUGD_CARGO_ENV")
        .split("\n\n")
        .next()
        .unwrap()
        .to_string();
    // what Buildroot's pkg-cargo.mk overrides, and the crate's own value
    for (var, key) in [
        ("CARGO_PROFILE_RELEASE_OPT_LEVEL", "opt-level"),
        ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "codegen-units"),
        ("CARGO_PROFILE_RELEASE_LTO", "lto"),
    ] {
        let want = format!("{var}=\"{}\"", release_profile(key));
        assert!(
            env.contains(&want),
            "HOTPLUGD_CARGO_ENV must set {want} (Buildroot overrides the crate's profile)"
        );
    }
    assert!(mk.contains("$(eval $(cargo-package))"));
    let config = text("packaging/buildroot/package/hotplugd/Config.in");
    assert!(config.contains("depends on BR2_PACKAGE_HOST_RUSTC_TARGET_ARCH_SUPPORTS"));
    assert!(config.contains("select BR2_PACKAGE_HOST_RUSTC"));
    assert!(
        !config.contains("BR2_PACKAGE_HAS_UDEV") && !mk.contains("PROVIDES"),
        "hotplugd is no udev provider"
    );
}

/// The words of the hotplugd command in an init script: the line holding
/// `start`, joined with its continuation lines, from the word after `start`
/// to the end, with shell variables replaced by sample values and
/// redirections and `&` dropped. An unknown variable fails the test, so a
/// new one is noticed here.
fn command_words(rel: &str, start: &str) -> Vec<String> {
    let t = text(rel).replace("\\\n", " ");
    let line = t
        .lines()
        .find(|l| l.contains(start))
        .unwrap_or_else(|| panic!("{rel}: no line with {start}"));
    let rest = &line[line.find(start).unwrap() + start.len()..];
    let mut words = Vec::new();
    for w in rest.split_whitespace() {
        let w = w.trim_matches('"');
        if w == "&" || w.contains('<') || w.contains('>') {
            continue;
        }
        let w = match w {
            "$LOG_TARGET" => "kmsg",
            "$RULES" => "/etc/hotplugd/rules.d",
            "$PIDFILE" => "/run/hotplugd.pid",
            "$HOTPLUGD_ARGS" => continue, // the user's own options
            // `${CONTROL:+--control "$CONTROL"}`: present when CONTROL is set
            "${CONTROL:+--control" => "--control",
            w if w.starts_with("$CONTROL\"}") => "/run/hotplugd/control",
            w if w.contains('$') => panic!("{rel}: unknown variable in {w}"),
            w => w,
        };
        words.push(w.to_string());
    }
    assert!(words.iter().any(|w| w == "run"), "{rel}: {words:?}");
    words
}

/// The binary accepts `words` (options are parsed before `--help` acts).
fn accepted(rel: &str, words: &[String]) {
    let out = hotplugd()
        .args(words)
        .arg("--help")
        .output()
        .expect("run hotplugd");
    assert!(
        out.status.success(),
        "{rel}: hotplugd {} --help: {}",
        words.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn init_scripts_use_only_options_the_binary_accepts() {
    let board = command_words(BOARD_INIT, "\"$DAEMON\"");
    let buildroot = command_words(BR_INIT, "\"/usr/sbin/$DAEMON\"");
    assert_eq!(
        buildroot, board,
        "the Buildroot S10hotplugd must start hotplugd as {BOARD_INIT} does"
    );
    let openwrt = command_words(OWRT_INIT, "command \"$PROG\"");
    assert!(
        !openwrt.iter().any(|w| w == "--broadcast"),
        "beside procd, hotplugd must not broadcast"
    );
    for (rel, words) in [(BR_INIT, &buildroot), (OWRT_INIT, &openwrt)] {
        accepted(rel, words);
    }
    // the unit the Yocto recipe and the Buildroot package install
    let unit = "board/generic/init/systemd/hotplugd.service";
    accepted(unit, &command_words(unit, "ExecStart=/usr/sbin/hotplugd"));
    assert!(Path::new(&repo(unit)).is_file());
}
