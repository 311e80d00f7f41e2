//! The rules language: golden error files, the README's examples, and
//! matching over real captures and real sysfs trees (tests/corpus).

mod common;

use std::path::{Path, PathBuf};

use hotplugd::rules::parse::{self, Source};
use hotplugd::rules::{Matched, NoSysfs, RuleSet, Sysfs};
use hotplugd::sys::sysfs::SysfsRoot;
use hotplugd::uevent::Uevent;

fn check(args: &[&str]) -> (Option<i32>, String, String) {
    let mut c = common::hotplugd();
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("check")
        .args(args);
    let out = c.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn golden_pairs(dir: &str) -> Vec<(String, PathBuf)> {
    let dir = common::repo(dir);
    let mut v: Vec<(String, PathBuf)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rules"))
        .map(|p| {
            let rel = p
                .strip_prefix(env!("CARGO_MANIFEST_DIR"))
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (rel, p.with_extension("expected"))
        })
        .collect();
    v.sort();
    v
}

/// Lines udev would skip: each is an error naming file:line:column with a
/// caret, the rest loads (the summary says how many rules), exit 1.
#[test]
fn every_error_file_gives_exactly_its_golden_diagnostics() {
    let pairs = golden_pairs("tests/rules/errors");
    assert!(pairs.len() >= 4);
    let mut all = String::new();
    for (rules, expected) in pairs {
        let (code, stdout, stderr) = check(&["--rules", &rules]);
        assert_eq!(code, Some(1), "{rules}: check must fail\n{stderr}");
        assert!(
            stdout.starts_with("rules: ") && stdout.contains(" errors"),
            "{rules}: the rest loads: {stdout}"
        );
        let want = std::fs::read_to_string(&expected)
            .unwrap_or_else(|_| panic!("{rules} has no {}", expected.display()));
        assert_eq!(
            stderr,
            want,
            "{rules}: diagnostics differ from {}",
            expected.display()
        );
        assert!(
            stderr.ends_with("those lines are skipped, as udev skips them; `run` loads the rest\n"),
            "{stderr}"
        );
        all.push_str(&stderr);
    }
    // Every kind of skipped line the loader knows appears in some golden file.
    for phrase in [
        "expected an operator",
        "expected a value in double quotes",
        "expected a key",
        "has no closing '}'",
        "unknown key",
        "keys are upper case",
        "takes no {...}",
        "needs {...}",
        "is a match key: use == or !=",
        "TAGS is a match key",
        "ENV{} takes ==, !=, = or +=",
        "OPTIONS takes +=",
        "GOTO takes =",
        "LABEL takes =",
        "SYMLINK takes +=, = or :=",
        "MODE takes = or :=",
        "IMPORT takes =",
        "cannot be assigned",
        "unknown user",
        "unknown group",
        "is ignored, as udev ignores it; the rest of the line loads",
        "no udev builtin named",
        "expected builtin, program, file, cmdline, db or parent",
        "is not a number",
        "is not a log level",
        "no builtin named",
        "expected RUN{program}, RUN{builtin} or RUN{service}",
        "has no LABEL=",
        "GOTO only jumps forward",
        "LABEL needs a name",
        "(line skipped, as udev skips it)",
        "(the GOTO is ignored, as udev ignores it; the rule loads)",
    ] {
        assert!(all.contains(phrase), "no golden file shows: {phrase}");
    }
}

/// Constructs hotplugd cannot do as udev would: nothing loads, exit 1.
#[test]
fn every_refused_file_gives_exactly_its_golden_diagnostics() {
    let pairs = golden_pairs("tests/rules/refused");
    assert!(pairs.len() >= 3);
    let mut all = String::new();
    for (rules, expected) in pairs {
        let (code, stdout, stderr) = check(&["--rules", &rules]);
        assert_eq!(code, Some(1), "{rules}: check must fail\n{stderr}");
        assert!(stdout.is_empty(), "{rules}: nothing loads: {stdout}");
        assert_eq!(
            stderr,
            std::fs::read_to_string(&expected).unwrap(),
            "{rules}: diagnostics differ from {}",
            expected.display()
        );
        assert!(stderr.ends_with("nothing loaded\n"), "{stderr}");
        all.push_str(&stderr);
    }
    for phrase in [
        "NAME is not supported",
        "is not a variable name (letters, digits, _); hotplugd does not take this name",
        "is not an attribute name (a relative path below the device, no '..'); hotplugd does not take this name",
        "PROGRAM is not supported",
        "RESULT is not supported",
        "TEST is not supported",
        "RUN takes +=",
        "is a udev builtin that hotplugd does not have",
        "MODE with a substitution is not supported",
        "TAG with a substitution is not supported",
        "SYSCTL is a udev key that hotplugd does not support",
        "CONST is a udev key that hotplugd does not support",
        "without a closing ']'",
        "range is backwards",
        "must be an absolute path",
        "literal absolute path, without substitutions",
        "a lone '$'",
        "unknown substitution $",
        "unknown substitution %",
        "unclosed single quote",
        "not UTF-8",
    ] {
        assert!(all.contains(phrase), "no golden file shows: {phrase}");
    }
}

#[test]
fn warnings_are_printed_and_the_rules_load() {
    let pairs = golden_pairs("tests/rules/warnings");
    assert!(pairs.len() >= 3);
    let mut all = String::new();
    for (rules, expected) in pairs {
        let (code, stdout, stderr) = check(&["--rules", &rules]);
        assert_eq!(code, Some(0), "{rules}\n{stderr}");
        assert!(
            stdout.starts_with("rules: ") && stdout.ends_with(" warnings\n"),
            "{stdout}"
        );
        assert!(!stdout.contains("error"), "{stdout}");
        assert_eq!(stderr, std::fs::read_to_string(expected).unwrap());
        // --strict: the same warnings fail the check
        let (code, _, strict) = check(&["--strict", "--rules", &rules]);
        assert_eq!(code, Some(1), "{rules}: --strict\n{strict}");
        assert!(strict.contains("warnings (--strict)"), "{strict}");
        all.push_str(&stderr);
    }
    for phrase in [
        "MODE += is taken as MODE =",
        "OWNER += is taken as OWNER =",
        "TAG := is taken as TAG =",
        "ENV{A} := is taken as ENV{A} =",
        "ATTR{power/control} += is taken as ATTR{power/control} =",
        "missing ',' between terms",
        "doubled ',' between terms",
        "OPTIONS \"last_rule\" is not in udev 252",
        "has no meaning in hotplugd; ignored",
        "unknown OPTIONS \"nosuch\"; ignored",
        "SECLABEL{} is ignored",
        "IMPORT{program} is not supported: the import fails",
        "IMPORT{builtin}=\"hwdb\" is not built into hotplugd",
        "a second GOTO on this line is ignored",
        "is also on line",
        "matches no action the kernel sends",
        "devpaths start with '/'",
        "lower-case hex digits",
        "decimal without leading zeros",
        "rule has no assignment",
        "is not an octal mode (e.g. \"0660\"): ignored, as udev ignores it",
        "is not a tag name (letters, digits, _ and -): ignored, as udev ignores it",
        "RUN needs a program: this one runs nothing",
        "expected none or replace; ignored (as udev does)",
        "(on this machine)",
    ] {
        assert!(all.contains(phrase), "no golden file shows: {phrase}");
    }
}

#[test]
fn a_missing_rules_path_is_an_error_naming_it() {
    let (code, _, stderr) = check(&["--rules", "tests/rules/no-such-dir"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.starts_with("tests/rules/no-such-dir: cannot read: No such file or directory"),
        "{stderr}"
    );
}

#[test]
fn the_default_rules_load() {
    let (code, stdout, _) = check(&[]);
    assert_eq!(code, Some(0));
    assert_eq!(stdout, "rules: 1 rules from 1 files\n");
}

/// The ```rules blocks of the README.
fn readme_rules() -> Vec<(usize, String)> {
    let readme = common::read(common::repo("README.md"));
    let mut blocks = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    for (n, line) in readme.lines().enumerate() {
        match &mut cur {
            None if line.trim() == "```rules" => cur = Some((n + 2, String::new())),
            Some(_) if line.trim() == "```" => blocks.extend(cur.take()),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
            None => {}
        }
    }
    blocks
}

fn compile(name: &str, text: &str) -> RuleSet {
    parse::compile(
        &[Source {
            name: name.into(),
            text: text.into(),
        }],
        &["log"],
    )
    .unwrap_or_else(|e| {
        panic!(
            "{name}:\n{}",
            e.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

#[test]
fn every_readme_example_loads_and_round_trips() {
    let blocks = readme_rules();
    assert!(
        blocks.len() >= 5,
        "README has {} rules examples",
        blocks.len()
    );
    for (line, text) in blocks {
        let name = format!("README.md:{line}");
        let rs = compile(&name, &text);
        assert!(rs.errors.is_empty(), "{name}:\n{}", show(&rs.errors));
        assert!(!rs.is_empty(), "{name}: no rules");
        let once = rs.render_file(0);
        let twice = compile(&name, &once).render_file(0);
        assert_eq!(once, twice, "{name}: render -> parse -> render changed it");
    }
}

/// Found by the rules_parse fuzzer (fuzz/regressions/rules_parse/): `%p`
/// glued to a letter rendered as `$devpathtd`, an unknown substitution.
#[test]
fn substitutions_glued_to_text_render_back_the_same() {
    let text = "ACTION==\"add\", RUN+=\"/bin/echo %ptd %kx %n_1 %N9 $kernel-x $devpath/y\"\n";
    let rs = compile("t.rules", text);
    let once = rs.render_file(0);
    assert_eq!(compile("t.rules", &once).render_file(0), once);
    assert!(
        once.contains("%ptd %kx %n_1 %N9 $kernel-x $devpath/y"),
        "{once}"
    );
    // and the fuzzer's inputs themselves: the second had 150 `%n` in one
    // value, whose `$number` forms rendered past MAX_VALUE_LEN
    for crash in [
        "crash-25b2009e5b1a317dcfd3fa988ee75718209a86bd",
        "crash-4f0ee0d4e945aa20341315331a8cf1381d09dbdb",
    ] {
        let text = common::read(common::repo(&format!(
            "fuzz/regressions/rules_parse/{crash}"
        )));
        let once = compile("f.rules", &text).render_file(0);
        assert_eq!(compile("f.rules", &once).render_file(0), once, "{crash}");
    }
    let long = format!("ENV{{A}}=\"{}\"\n", "%n".repeat(500));
    let once = compile("t.rules", &long).render_file(0);
    assert!(
        once.contains(&"%n".repeat(500)),
        "short forms when long ones would not fit"
    );
    assert_eq!(compile("t.rules", &once).render_file(0), once);
}

#[test]
fn rendering_keeps_every_kind_of_term() {
    let text = r#"ACTION=="add|remove", SUBSYSTEM!="net", DEVTYPE=="usb_device", DEVPATH=="/devices/*", KERNEL=="tty[A-Z]*", DRIVER=="", ENV{ID}=="?*", USB{idVendor}=="0403", ATTR{x}=="1 ", ATTRS{serial}=="FT*", KERNELS=="1-1*", SUBSYSTEMS=="usb", DRIVERS=="ftdi_sio", ENV{A}="$kernel %n $$5 100%%", ATTR{power/control}="on", RUN+="/bin/sh -c 'echo $env{A} > /tmp/x'", RUN{builtin}+="log one 'two words'", OPTIONS+="last_rule"
SUBSYSTEM!="usb", GOTO="end"
RUN+="/bin/true $devpath $devnode $number $attr{idVendor} %p %N %E{ID} %s{serial}"
LABEL="end"
"#;
    let rs = compile("t.rules", text);
    let once = rs.render_file(0);
    assert_eq!(compile("t.rules", &once).render_file(0), once);
    assert!(
        once.contains("RUN+=\"/bin/sh -c 'echo $env{A} > /tmp/x'\""),
        "{once}"
    );
    assert!(
        once.contains("ENV{A}=\"$kernel $number $$5 100%%\""),
        "{once}"
    );
    assert!(once.contains("GOTO=\"end\""), "{once}");
}

/// Events of a scenario of tests/corpus/events.jsonl, as datagrams.
fn scenario(name: &str) -> Vec<Vec<u8>> {
    let text = common::read(common::repo("tests/corpus/events.jsonl"));
    let lines: String = text
        .lines()
        .filter(|l| l.contains(&format!("\"scenario\": \"{name}\"")))
        .map(|l| format!("{l}\n"))
        .collect();
    hotplugd::replay::read_events(lines.as_bytes()).unwrap()
}

fn fixture(file: &str) -> Vec<Vec<u8>> {
    hotplugd::replay::read_events(common::read(common::repo(file)).as_bytes()).unwrap()
}

/// Devpaths (as `ACTION DEVPATH`) of the events that match the rules.
fn matching(rules: &str, events: &[Vec<u8>], sysfs: &dyn Sysfs) -> Vec<String> {
    let rs = compile("m.rules", rules);
    let mut m = Matched::default();
    let mut out = Vec::new();
    for d in events {
        let ev = Uevent::parse(d).unwrap();
        rs.evaluate(&ev, sysfs, &mut m);
        if m.count > 0 {
            out.push(format!("{} {}", ev.action(), ev.devpath()));
        }
    }
    out
}

const STICK: &str = "/devices/pci0000:00/0000:00:0b.0/usb1/1-1";

#[test]
fn usb_stick_plug_matches_exactly_the_usb_device_add() {
    let ev = scenario("usb-flash-plug-4.19");
    assert_eq!(ev.len(), 16);
    let r = r#"ACTION=="add", SUBSYSTEM=="usb", ENV{DEVTYPE}=="usb_device", RUN+="/bin/true""#;
    assert_eq!(matching(r, &ev, &NoSysfs), [format!("add {STICK}")]);
    // interface class rules match by ENV{INTERFACE} (mass storage, SCSI, bulk-only)
    let r = r#"ACTION=="add", SUBSYSTEM=="usb", ENV{INTERFACE}=="8/6/80", RUN+="/bin/true""#;
    assert_eq!(matching(r, &ev, &NoSysfs), [format!("add {STICK}/1-1:1.0")]);
    // the typed USB view: vendor and interface class, from the event alone
    let r =
        r#"SUBSYSTEM=="usb", USB{idVendor}=="1e3d", USB{bInterfaceClass}=="08", RUN+="/bin/true""#;
    assert_eq!(
        matching(r, &ev, &NoSysfs),
        [
            format!("add {STICK}/1-1:1.0"),
            format!("bind {STICK}/1-1:1.0")
        ]
    );
    // ... and on unplug too, when sysfs is gone
    let r = r#"ACTION=="remove", USB{idVendor}=="1e3d", USB{idProduct}=="2093", ENV{DEVTYPE}=="usb_device", RUN+="/bin/true""#;
    assert_eq!(
        matching(r, &scenario("usb-flash-unplug-4.19"), &NoSysfs),
        [format!("remove {STICK}")]
    );
}

const A64: &str = "/devices/platform/4010000000.pcie/pci0000:00/0000:00:01.0";

fn a64() -> (Vec<Vec<u8>>, SysfsRoot) {
    (
        fixture("tests/corpus/sysfs/aarch64/uevents.jsonl"),
        SysfsRoot::new(&common::repo("tests/corpus/sysfs/aarch64")),
    )
}

#[test]
fn attrs_walk_finds_the_ftdi_parent_of_both_ttys() {
    let (ev, sysfs) = a64();
    let r = r#"ACTION=="add", SUBSYSTEM=="tty", ATTRS{idVendor}=="0403", ATTRS{idProduct}=="6001", RUN+="/bin/true""#;
    assert_eq!(
        matching(r, &ev, &sysfs),
        [
            format!("add {A64}/usb1/1-2/1-2:1.0/ttyUSB0/tty/ttyUSB0"),
            format!("add {A64}/usb1/1-1/1-1.2/1-1.2:1.0/ttyUSB1/tty/ttyUSB1"),
        ]
    );
    // every event at or below an FTDI device
    let r = r#"ATTRS{idVendor}=="0403", RUN+="/bin/true""#;
    let all = matching(r, &ev, &sysfs);
    assert_eq!(all.len(), 16, "{all:#?}");
    assert!(all
        .iter()
        .all(|d| d.contains("/usb1/1-2") || d.contains("/usb1/1-1/1-1.2")));
}

#[test]
fn kernels_subsystems_and_drivers_walk_parents() {
    let (ev, sysfs) = a64();
    // the adapter behind the hub, by its port path
    let r = r#"SUBSYSTEM=="tty", KERNELS=="1-1.2", RUN+="/bin/true""#;
    assert_eq!(
        matching(r, &ev, &sysfs),
        [format!(
            "add {A64}/usb1/1-1/1-1.2/1-1.2:1.0/ttyUSB1/tty/ttyUSB1"
        )]
    );
    let r = r#"SUBSYSTEM=="tty", DRIVERS=="ftdi_sio", RUN+="/bin/true""#;
    assert_eq!(matching(r, &ev, &sysfs).len(), 2);
    // SUBSYSTEMS and DRIVERS must hold on the same parent: the stick's interface
    let r = r#"SUBSYSTEM=="block", ENV{DEVTYPE}=="partition", SUBSYSTEMS=="usb", DRIVERS=="usb-storage", RUN+="/bin/true""#;
    let sda1 = format!("add {A64}/usb2/2-3/2-3:1.0/host0/target0:0:0/0:0:0:0/block/sda/sda1");
    assert_eq!(matching(r, &ev, &sysfs), [sda1]);
    // no single parent has subsystem usb *and* driver sd: no match
    let r = r#"SUBSYSTEM=="block", SUBSYSTEMS=="usb", DRIVERS=="sd", RUN+="/bin/true""#;
    assert!(matching(r, &ev, &sysfs).is_empty());
    // the network adapter
    let r = r#"ACTION=="add", SUBSYSTEM=="net", DRIVERS=="cdc_ether", RUN+="/bin/true""#;
    assert_eq!(
        matching(r, &ev, &sysfs),
        [format!("add {A64}/usb1/1-1/1-1.3/1-1.3:1.0/net/usb0")]
    );
}

#[test]
fn attr_ignores_trailing_whitespace_and_unreadable_never_matches() {
    let (ev, sysfs) = a64();
    // serial is "FT4RJ7QA\n" in sysfs
    let r = r#"SUBSYSTEM=="usb", ENV{DEVTYPE}=="usb_device", ACTION=="add", ATTR{serial}=="FT4RJ7QA", RUN+="/bin/true""#;
    assert_eq!(matching(r, &ev, &sysfs), [format!("add {A64}/usb1/1-2")]);
    // a pattern ending in whitespace compares the raw value
    let r = r#"SUBSYSTEM=="usb", ACTION=="add", ATTR{serial}=="FT4RJ7QA ", RUN+="/bin/true""#;
    assert!(matching(r, &ev, &sysfs).is_empty());
    let r = r#"SUBSYSTEM=="usb", ACTION=="add", ATTR{idVendor}=="0403", RUN+="/bin/true""#;
    assert_eq!(matching(r, &ev, &sysfs).len(), 2);
    // an attribute that does not exist fails == and != alike
    let r = r#"ACTION=="add", ATTR{no_such_attribute}!="x", RUN+="/bin/true""#;
    assert!(matching(r, &ev, &sysfs).is_empty());
}

#[test]
fn goto_label_and_last_rule_control_the_flow() {
    let (ev, sysfs) = a64();
    let tty = format!("add {A64}/usb1/1-2/1-2:1.0/ttyUSB0/tty/ttyUSB0");
    let rs = compile(
        "flow.rules",
        r#"SUBSYSTEM!="tty", GOTO="tty_end"
ENV{STEP}="one"
KERNEL=="ttyUSB0", ENV{STEP}="two", OPTIONS+="last_rule"
ENV{STEP}="three"
LABEL="tty_end"
RUN{builtin}+="log"
"#,
    );
    let mut m = Matched::default();
    for d in &ev {
        let e = Uevent::parse(d).unwrap();
        rs.evaluate(&e, &sysfs, &mut m);
        let here = format!("{} {}", e.action(), e.devpath());
        let env: Vec<(String, Vec<u8>)> = rs
            .env_assignments(&m)
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect();
        if here == tty {
            // rules 2 and 3 matched; last_rule stopped before 4 and the builtin
            assert_eq!(env, [("STEP".to_string(), b"two".to_vec())]);
            assert!(m.work.is_empty());
        } else if e.subsystem() == Some("tty") {
            assert_eq!(env, [("STEP".to_string(), b"three".to_vec())]);
            assert_eq!(m.work.len(), 1);
        } else {
            // jumped straight to the label
            assert!(env.is_empty());
            assert_eq!(m.work.len(), 1);
        }
    }
}

#[test]
fn substitutions_become_exactly_one_argument_each() {
    let (ev, sysfs) = a64();
    let rs = compile(
        "s.rules",
        r#"SUBSYSTEM=="tty", ATTRS{idVendor}=="0403", ENV{LABEL}="serial $kernel", RUN+="/bin/echo $kernel $number $devnode $env{LABEL} '$attr{serial} x' $attr{idProduct} %% $$HOME""#,
    );
    let mut m = Matched::default();
    let tty1 = ev
        .iter()
        .find(|d| String::from_utf8_lossy(d).contains("tty/ttyUSB1\0"))
        .unwrap();
    let e = Uevent::parse(tty1).unwrap();
    rs.evaluate(&e, &sysfs, &mut m);
    let mut hit = 0;
    let argv = rs.argv(&m.work[0], &e, &m, &sysfs, &mut hit).unwrap();
    let argv: Vec<String> = argv
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    // $attr{serial} of the tty comes from the parent the ATTRS walk selected
    assert_eq!(
        argv,
        [
            "/bin/echo",
            "ttyUSB1",
            "1",
            "/dev/ttyUSB1",
            "serial ttyUSB1",
            "FT9ZK2PB x",
            "6001",
            "%",
            "$HOME"
        ]
    );
    assert_eq!(hit, 0);
}

#[test]
fn dry_run_of_the_qemu_serial_plug_matches_its_golden_output() {
    let input = common::repo("tests/rules/dry-run/serial-plug.jsonl");
    let rules = "tests/rules/dry-run/serial.rules";
    let out = common::hotplugd()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["replay", "--dry-run", "--rules", rules])
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = common::read(common::repo("tests/rules/dry-run/serial-plug.expected"));
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
}

#[test]
fn sysfs_fixtures_have_their_symlinks() {
    // tests/corpus/sysfs/README.md: aarch64 190 symlinks, x86_64 187
    fn links(p: &Path) -> usize {
        let mut n = 0;
        for e in std::fs::read_dir(p).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_symlink() {
                n += 1;
            } else if t.is_dir() {
                n += links(&e.path());
            }
        }
        n
    }
    assert_eq!(links(&common::repo("tests/corpus/sysfs/aarch64")), 190);
    assert_eq!(links(&common::repo("tests/corpus/sysfs/x86_64")), 187);
}

// ---- issue 13: udev's leniency, OWNER/GROUP/MODE, SYMLINK, TAG, IMPORT ----

/// Resolves every user and group name (uid/gid 4242), so that what the
/// vendor files load does not depend on this machine's /etc/group.
struct AnyName;

impl parse::Names for AnyName {
    fn user(&self, _: &str) -> Result<Option<u32>, String> {
        Ok(Some(4242))
    }
    fn group(&self, _: &str) -> Result<Option<u32>, String> {
        Ok(Some(4242))
    }
}

/// Only `root` (0) and `dialout` (20) exist.
struct FewNames;

impl parse::Names for FewNames {
    fn user(&self, n: &str) -> Result<Option<u32>, String> {
        Ok((n == "root").then_some(0))
    }
    fn group(&self, n: &str) -> Result<Option<u32>, String> {
        Ok(match n {
            "root" => Some(0),
            "dialout" => Some(20),
            _ => None,
        })
    }
}

fn compile_names(
    name: &str,
    text: &str,
    names: &dyn parse::Names,
) -> Result<RuleSet, Vec<hotplugd::rules::Diagnostic>> {
    parse::compile_with(
        &[Source {
            name: name.into(),
            text: text.into(),
        }],
        &["log"],
        names,
    )
}

fn lenient(text: &str) -> RuleSet {
    compile_names("t.rules", text, &FewNames).unwrap_or_else(|e| panic!("{e:?}"))
}

fn show(d: &[hotplugd::rules::Diagnostic]) -> String {
    d.iter().map(|d| format!("{d}\n")).collect()
}

/// Every vendor file (tests/rules/vendor, SOURCES.md) loads with no error,
/// except the two of Raspberry Pi OS that use PROGRAM (refused: a program
/// run to decide a match would stall the daemon); each file's warnings are
/// exactly its committed snapshot (NAME.warnings; NAME.refused for the
/// refused ones). HOTPLUGD_BLESS=1 rewrites the snapshots.
#[test]
fn vendor_rules_load_with_their_snapshot_of_warnings() {
    let dir = common::repo("tests/rules/vendor");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rules"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 32, "the collected vendor files");
    let bless = std::env::var_os("HOTPLUGD_BLESS").is_some();
    let (mut loaded, mut refused) = (0, Vec::new());
    for f in &files {
        let base = f.file_name().unwrap().to_string_lossy().into_owned();
        let text = common::read(f);
        let name = format!("vendor/{base}");
        let (snapshot, got) = match compile_names(&name, &text, &AnyName) {
            Ok(rs) => {
                assert!(rs.errors.is_empty(), "{base}:\n{}", show(&rs.errors));
                assert!(!rs.is_empty(), "{base}: no rules");
                // what loaded renders to rules that load the same
                let once = rs.render_file(0);
                let again = compile_names(&name, &once, &AnyName)
                    .unwrap_or_else(|e| panic!("{base} rendered:\n{}", show(&e)));
                assert_eq!(again.len(), rs.len(), "{base}");
                assert_eq!(again.render_file(0), once, "{base}");
                loaded += 1;
                (f.with_extension("warnings"), show(&rs.warnings))
            }
            Err(e) => {
                refused.push(base.clone());
                assert!(
                    e.iter()
                        .any(|d| d.message.starts_with("PROGRAM is not supported")),
                    "{base}:\n{}",
                    show(&e)
                );
                (f.with_extension("refused"), show(&e))
            }
        };
        if bless {
            std::fs::write(&snapshot, &got).unwrap();
        }
        let want = std::fs::read_to_string(&snapshot)
            .unwrap_or_else(|_| panic!("{base}: no {}", snapshot.display()));
        assert_eq!(got, want, "{base}: differs from {}", snapshot.display());
    }
    assert_eq!(refused, ["60-dma-heap.rules", "99-com.rules"]);
    assert_eq!(loaded, 30);
}

/// A broken line in the middle of a file: the rules before and after it
/// load and match, and the error names file:line:column.
#[test]
fn a_skipped_line_leaves_the_rest_of_the_file_working() {
    let rs = lenient(
        "SUBSYSTEM==\"tty\", ENV{BEFORE}=\"1\"\n\
         SUBSYSTEM==\"tty\", FROB=\"x\", ENV{BROKEN}=\"1\"\n\
         SUBSYSTEM==\"tty\" ENV{AFTER}=\"1\",, ENV{QUOTED}=\"say \\\"hi\\\"\"\n",
    );
    assert_eq!(rs.len(), 2);
    assert_eq!(rs.errors.len(), 1);
    let d = &rs.errors[0];
    assert_eq!((d.file.as_str(), d.line, d.col), ("t.rules", 2, 19));
    assert!(
        d.to_string()
            .starts_with("t.rules:2:19: unknown key 'FROB' (line skipped, as udev skips it)\n    SUBSYSTEM==\"tty\", FROB=\"x\", ENV{BROKEN}=\"1\"\n                      ^"),
        "{d}"
    );
    // a missing and a doubled comma: warnings, the line loads
    assert_eq!(rs.warnings.len(), 2, "{}", show(&rs.warnings));
    let ev = tty_event("add", "ttyUSB0", true);
    let env = eval(&rs, &ev).1;
    assert_eq!(get(&env, "BEFORE"), Some("1"));
    assert_eq!(get(&env, "AFTER"), Some("1"));
    assert_eq!(get(&env, "QUOTED"), Some("say \"hi\""));
    assert_eq!(get(&env, "BROKEN"), None);
}

fn tty_event(action: &str, kernel: &str, node: bool) -> Vec<u8> {
    let dev = format!("/devices/platform/serial8250/tty/{kernel}");
    let mut raw = format!(
        "{action}@{dev}\0ACTION={action}\0DEVPATH={dev}\0SUBSYSTEM=tty\0SEQNUM=7\0GONE=yes\0"
    );
    if node {
        raw.push_str(&format!(
            "MAJOR=4\0MINOR=64\0DEVNAME={}\0",
            kernel.replace('!', "/")
        ));
    }
    raw.into_bytes()
}

fn eval(rs: &RuleSet, raw: &[u8]) -> (Box<Matched>, Vec<(String, Vec<u8>)>) {
    let ev = Uevent::parse(raw).unwrap();
    let mut m = Box::<Matched>::default();
    rs.evaluate(&ev, &NoSysfs, &mut m);
    let env = rs.env(&ev, &m);
    (m, env)
}

fn get<'a>(env: &'a [(String, Vec<u8>)], key: &str) -> Option<&'a str> {
    env.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| std::str::from_utf8(v).unwrap())
}

fn links(m: &Matched) -> Vec<&str> {
    m.node.links.iter().map(|l| l.as_str()).collect()
}

#[test]
fn owner_group_mode_take_the_last_value_unless_one_was_final() {
    let rs = lenient(
        r#"SUBSYSTEM=="tty", OWNER="root", GROUP="dialout", MODE="0660"
SUBSYSTEM=="tty", OWNER="1000", GROUP="0", MODE="600"
KERNEL=="ttyUSB*", GROUP:="dialout", MODE:="0620"
SUBSYSTEM=="tty", GROUP="root", MODE="0666", OWNER+="root"
"#,
    );
    assert_eq!(
        rs.warnings.len(),
        1,
        "OWNER+= is taken as =: {}",
        show(&rs.warnings)
    );
    let (m, _) = eval(&rs, &tty_event("add", "ttyUSB0", true));
    assert_eq!(
        (m.node.uid, m.node.gid, m.node.mode),
        (Some(0), Some(20), Some(0o620))
    );
    // without the := rule, the last one wins
    let (m, _) = eval(&rs, &tty_event("add", "ttyS0", true));
    assert_eq!(
        (m.node.uid, m.node.gid, m.node.mode),
        (Some(0), Some(0), Some(0o666))
    );
    // a name that does not resolve is an error naming it; as in udev the
    // term is ignored and the rest of the line loads
    let rs = lenient("SUBSYSTEM==\"tty\", GROUP=\"plugdev\", MODE=\"0664\"\nSUBSYSTEM==\"tty\", OWNER=\"nobody-here\"\n");
    assert_eq!(rs.len(), 2);
    assert_eq!(rs.errors.len(), 2, "{}", show(&rs.errors));
    assert!(
        rs.errors[0]
            .message
            .starts_with("unknown group \"plugdev\""),
        "{}",
        show(&rs.errors)
    );
    assert!(
        rs.errors[1]
            .message
            .starts_with("unknown user \"nobody-here\""),
        "{}",
        show(&rs.errors)
    );
    let (m, _) = eval(&rs, &tty_event("add", "ttyS0", true));
    assert_eq!(
        (m.node.uid, m.node.gid, m.node.mode),
        (None, None, Some(0o664))
    );
}

#[test]
fn symlink_operators_escaping_and_priority_are_udevs() {
    let rs = lenient(
        r#"SUBSYSTEM=="tty", SYMLINK+="first serial/$env{NAMEX}"
SUBSYSTEM=="tty", SYMLINK+="first", SYMLINK+="odd/a*b?c"
KERNEL=="ttyS1", SYMLINK="only"
KERNEL=="ttyS2", SYMLINK:="fixed"
KERNEL=="ttyS2", SYMLINK+="late", SYMLINK="cleared"
KERNEL=="ttyS3", OPTIONS+="string_escape=none", SYMLINK+="serial/$env{NAMEX}"
KERNEL=="ttyS4", OPTIONS+="string_escape=replace", SYMLINK+="one link/$env{NAMEX}"
KERNEL=="ttyS5", SYMLINK+="../escape ok/../../x", OPTIONS+="link_priority=-5"
KERNEL=="cciss/c0d0", SYMLINK+="disk/$kernel"
"#,
    );
    assert!(rs.errors.is_empty(), "{}", show(&rs.errors));
    let with = |kernel: &str| {
        let mut raw = tty_event("add", kernel, true);
        raw.extend_from_slice(b"NAMEX=My Modem\0");
        eval(&rs, &raw)
    };
    // substituted whitespace becomes `_`, written spaces separate links;
    // characters udev does not allow in a name become `_`
    let (m, env) = with("ttyS0");
    assert_eq!(links(&m), ["first", "serial/My_Modem", "odd/a_b_c"]);
    assert_eq!(
        get(&env, "DEVLINKS"),
        Some("/dev/first /dev/serial/My_Modem /dev/odd/a_b_c")
    );
    assert_eq!(links(&with("ttyS1").0), ["only"]);
    // := clears and is final: later += and = change nothing
    assert_eq!(links(&with("ttyS2").0), ["fixed"]);
    // string_escape=none: the substituted space splits the value
    assert_eq!(
        links(&with("ttyS3").0),
        [
            "first",
            "serial/My_Modem",
            "odd/a_b_c",
            "serial/My",
            "Modem"
        ]
    );
    // string_escape=replace: one link, spaces replaced
    let (m, _) = with("ttyS4");
    assert_eq!(links(&m)[3], "one_link/My_Modem");
    // a link leaving /dev is not made, and counted; link_priority is kept
    let (m, _) = with("ttyS5");
    assert_eq!(links(&m), ["first", "serial/My_Modem", "odd/a_b_c"]);
    assert_eq!(m.limits_hit, 2, "`../escape` and `ok/../../x`");
    assert_eq!(m.node.link_priority, -5);
    // KERNEL compares with `!` as `/`, and $kernel gives the `/` form
    let (m, _) = with("cciss!c0d0");
    assert!(links(&m).contains(&"disk/cciss/c0d0"), "{:?}", links(&m));
    // no device node: no links (as udev)
    let (m, env) = eval(&rs, &tty_event("add", "ttyS0", false));
    assert!(m.node.links.is_empty());
    assert_eq!(get(&env, "DEVLINKS"), None);
}

#[test]
fn tags_add_remove_and_clear_and_reach_handlers() {
    let rs = lenient(
        r#"SUBSYSTEM=="tty", TAG+="uaccess", TAG+="seat", TAG+="uaccess"
KERNEL=="ttyS1", TAG-="seat"
KERNEL=="ttyS2", TAG="only"
KERNEL=="ttyS2", TAG+="systemd", RUN{builtin}+="log"
"#,
    );
    let tags = |m: &Matched| {
        m.node
            .tags
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
    };
    let (m, env) = eval(&rs, &tty_event("add", "ttyS0", true));
    assert_eq!(tags(&m), ["uaccess", "seat"]);
    assert_eq!(get(&env, "TAGS"), Some(":uaccess:seat:"));
    assert_eq!(get(&env, "CURRENT_TAGS"), Some(":uaccess:seat:"));
    // TAG-= removes from the current tags; TAGS keeps every tag added (udev)
    let (m, env) = eval(&rs, &tty_event("add", "ttyS1", true));
    assert_eq!(tags(&m), ["uaccess"]);
    assert_eq!(get(&env, "TAGS"), Some(":uaccess:seat:"));
    assert_eq!(get(&env, "CURRENT_TAGS"), Some(":uaccess:"));
    // TAG== / TAGS== / SYMLINK== match what earlier rules set
    let rs2 = lenient(
        r#"SUBSYSTEM=="tty", TAG+="seat", SYMLINK+="serial/x"
TAG=="seat", TAGS=="se*", SYMLINK=="serial/*", ENV{ALL}="1"
TAG!="seat", ENV{NOT}="1"
SYMLINK=="other", ENV{NOT}="1"
"#,
    );
    let (_, env) = eval(&rs2, &tty_event("add", "ttyS1", true));
    assert_eq!(get(&env, "ALL"), Some("1"));
    assert_eq!(get(&env, "NOT"), None);
    let raw = tty_event("add", "ttyS2", true);
    let (m, _) = eval(&rs, &raw);
    assert_eq!(tags(&m), ["only", "systemd"]);
    // the builtin's raw event carries them too
    let ev = Uevent::parse(&raw).unwrap();
    let added: Vec<(&str, &[u8])> = rs.env_assignments(&m).collect();
    assert!(
        added.contains(&("TAGS", b":only:systemd:".as_slice())),
        "{added:?}"
    );
    assert!(added.contains(&("CURRENT_TAGS", b":only:systemd:".as_slice())));
    assert_eq!(ev.get("TAGS"), None);
}

#[test]
fn env_appends_with_a_space_and_an_empty_value_removes() {
    let rs = lenient(
        r#"SUBSYSTEM=="tty", ENV{LIST}+="a"
SUBSYSTEM=="tty", ENV{LIST}+="b", ENV{GONE}="", ENV{NEW}="x"
ENV{NEW}=="x", ENV{NEW}=""
ENV{NEW}=="", ENV{SEEN_EMPTY}="1"
"#,
    );
    let (_, env) = eval(&rs, &tty_event("add", "ttyS0", true));
    assert_eq!(get(&env, "LIST"), Some("a b"));
    assert_eq!(get(&env, "GONE"), None, "the event's GONE=yes is removed");
    assert_eq!(get(&env, "NEW"), None);
    assert_eq!(get(&env, "SEEN_EMPTY"), Some("1"));
}

/// The board's persistent link rules on the captured x86_64 tree give
/// udev's names (README's table; tests/identity.rs checks the properties
/// against udev 252 itself), through IMPORT{builtin}="usb_id"/"path_id".
#[test]
fn the_board_persistent_links_are_udevs_names() {
    let path = "board/generic/rules.d/60-persistent-links.rules";
    // `hotplugd check` accepts it: no error, no warning
    let (code, stdout, stderr) = check(&["--strict", "--rules", path]);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stdout, "rules: 45 rules from 1 files\n");
    assert_eq!(stderr, "");
    let rs = compile(path, &common::read(common::repo(path)));
    let events = fixture("tests/corpus/sysfs/x86_64/uevents.jsonl");
    let sysfs = SysfsRoot::new(&common::repo("tests/corpus/sysfs/x86_64"));
    let mut m = Box::<Matched>::default();
    let mut got = Vec::new();
    for d in &events {
        let ev = Uevent::parse(d).unwrap();
        rs.evaluate(&ev, &sysfs, &mut m);
        assert_eq!(m.limits_hit, 0, "{}", ev.devpath());
        for l in &m.node.links {
            got.push(format!("{} {}", ev.action(), l));
        }
        if ev.kernel_name() == "ttyUSB0" && ev.action() == "add" && ev.subsystem() == Some("tty") {
            // imported properties reach handlers, all of them (usb_id: 25)
            let env = rs.env(&ev, &m);
            assert_eq!(
                get(&env, "ID_SERIAL"),
                Some("QEMU_QEMU_USB_SERIAL_FT4RJ7QA")
            );
            assert_eq!(get(&env, "ID_USB_DRIVER"), Some("ftdi_sio"));
            assert_eq!(get(&env, "ID_PATH"), Some("pci-0000:00:02.0-usb-0:2:1.0"));
            assert!(get(&env, ".ID_PORT").is_none());
            assert_eq!(
                get(&env, "DEVLINKS"),
                Some("/dev/serial/by-path/pci-0000:00:02.0-usb-0:2:1.0-port0 /dev/serial/by-id/usb-QEMU_QEMU_USB_SERIAL_FT4RJ7QA-if00-port0")
            );
        }
    }
    let want = [
        "serial/by-id/usb-QEMU_QEMU_USB_SERIAL_FT4RJ7QA-if00-port0",
        "serial/by-path/pci-0000:00:02.0-usb-0:2:1.0-port0",
        "disk/by-id/usb-QEMU_QEMU_HARDDISK_QSTICK0001-0:0",
        "disk/by-id/usb-QEMU_QEMU_HARDDISK_QSTICK0001-0:0-part1",
        "disk/by-path/pci-0000:00:02.0-usb-0:3:1.0-scsi-0:0:0:0",
        "disk/by-path/pci-0000:00:02.0-usb-0:3:1.0-scsi-0:0:0:0-part1",
        // input_id classifies it: udev's -event-kbd
        "input/by-id/usb-QEMU_QEMU_USB_Keyboard_68284-0000:00:02.0-4-event-kbd",
        "input/by-path/pci-0000:00:02.0-usb-0:4:1.0-event-kbd",
    ];
    for w in want {
        assert!(got.contains(&format!("add {w}")), "no {w} in {got:#?}");
    }
    assert!(!got.iter().any(|g| g.starts_with("remove")), "{got:?}");
}

/// IMPORT runs after the line's match terms (an ENV{} test of an imported
/// key on the same line sees the value before the import), and a failing
/// import makes the rule not match.
#[test]
fn import_runs_after_the_match_terms_and_a_failure_is_no_match() {
    let (events, sysfs) = a64();
    let rs = compile(
        "i.rules",
        r#"KERNEL=="ttyUSB0", ENV{ID_BUS}=="usb", IMPORT{builtin}="usb_id", ENV{SAME_LINE}="1"
KERNEL=="ttyUSB0", IMPORT{builtin}="usb_id", ENV{IMPORTED}="$env{ID_VENDOR_ID}:$env{ID_MODEL_ID}"
KERNEL=="ttyUSB0", ENV{ID_BUS}=="usb", ENV{LATER}="1"
SUBSYSTEM=="platform", IMPORT{builtin}="usb_id", ENV{NOT_USB}="1"
"#,
    );
    let mut m = Box::<Matched>::default();
    let mut seen = 0;
    for d in &events {
        let ev = Uevent::parse(d).unwrap();
        rs.evaluate(&ev, &sysfs, &mut m);
        let env = rs.env(&ev, &m);
        assert_eq!(get(&env, "NOT_USB"), None, "{}", ev.devpath());
        if ev.kernel_name() == "ttyUSB0" && ev.subsystem() == Some("tty") {
            seen += 1;
            assert_eq!(get(&env, "SAME_LINE"), None);
            assert_eq!(get(&env, "IMPORTED"), Some("0403:6001"));
            assert_eq!(get(&env, "LATER"), Some("1"));
        }
    }
    assert!(seen > 0);
    // without sysfs the builtin fails: the rule does not match
    let (m, env) = eval(&rs, &tty_event("add", "ttyUSB0", true));
    assert_eq!(get(&env, "IMPORTED"), None);
    assert_eq!(m.count, 0);
}

/// `--rules` given udev's directories: one order by file name across them;
/// a later directory's file replaces an earlier one of the same name; a
/// symlink to /dev/null masks it.
#[test]
fn rule_directories_merge_by_file_name_and_later_ones_win() {
    let root = std::env::temp_dir().join(format!("hotplugd-rulesdirs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (lib, etc) = (root.join("lib"), root.join("etc"));
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::create_dir_all(&etc).unwrap();
    let rule = |dir: &Path, name: &str, value: &str| {
        std::fs::write(
            dir.join(name),
            format!("SUBSYSTEM==\"tty\", ENV{{ORDER}}+=\"{value}\"\n"),
        )
        .unwrap();
    };
    rule(&lib, "10-a.rules", "lib10");
    rule(&lib, "30-c.rules", "lib30");
    rule(&lib, "40-d.rules", "lib40");
    rule(&etc, "20-b.rules", "etc20");
    rule(&etc, "30-c.rules", "etc30");
    std::os::unix::fs::symlink("/dev/null", etc.join("40-d.rules")).unwrap();
    let rs = parse::load(&[lib.clone(), etc.clone()], &[], false);
    let _ = std::fs::remove_dir_all(&root);
    let rs = rs.unwrap_or_else(|e| panic!("{}", show(&e)));
    let names: Vec<&str> = rs
        .files
        .iter()
        .map(|f| f.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(names, ["10-a.rules", "20-b.rules", "30-c.rules"]);
    assert!(rs.files[2].contains("/etc/"), "{:?}", rs.files);
    let (_, env) = eval(&rs, &tty_event("add", "ttyS0", true));
    assert_eq!(get(&env, "ORDER"), Some("lib10 etc20 etc30"));
}

#[test]
fn rendering_keeps_the_udev_keys_and_quotes() {
    let text = r#"KERNEL=="tty*", ENV{Q}="say \"hi\"", ENV{E}=e"tab\there\\", OWNER:="0", GROUP="20", MODE="0620", SYMLINK+="a b/$kernel", SYMLINK:="c", TAG+="uaccess", TAG-="seat", TAG="x", ENV{L}+="more", OPTIONS+="link_priority=-3", OPTIONS+="string_escape=replace"
SUBSYSTEMS=="usb", IMPORT{builtin}="usb_id", IMPORT{builtin}="path_id", SYMLINK="by-path/$env{ID_PATH}"
IMPORT{program}="/bin/id \"x\"", ENV{NEVER}="1"
"#;
    let rs = lenient(text);
    assert!(rs.errors.is_empty(), "{}", show(&rs.errors));
    let once = rs.render_file(0);
    assert_eq!(lenient(&once).render_file(0), once);
    for part in [
        r#"ENV{Q}=e"say \"hi\"""#,
        r#"ENV{E}=e"tab\there\\""#,
        r#"OWNER:="0""#,
        r#"MODE="0620""#,
        r#"SYMLINK:="c""#,
        r#"TAG-="seat""#,
        r#"ENV{L}+="more""#,
        r#"OPTIONS+="link_priority=-3""#,
        r#"OPTIONS+="string_escape=replace""#,
        r#"IMPORT{builtin}="path_id""#,
        r#"IMPORT{program}=e"/bin/id \"x\"""#,
    ] {
        assert!(once.contains(part), "{part} not in {once}");
    }
}

/// `replay --dry-run` shows what the rules decided for the node: owner,
/// group, mode, links and tags.
#[test]
fn dry_run_shows_the_node_links_and_tags() {
    let dir = std::env::temp_dir().join(format!("hotplugd-dry-node-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rules = dir.join("n.rules");
    std::fs::write(
        &rules,
        "SUBSYSTEM==\"tty\", KERNEL==\"ttyUSB0\", OWNER=\"0\", MODE=\"0620\", SYMLINK+=\"x/$kernel\", TAG+=\"uaccess\", OPTIONS+=\"link_priority=7\"\n",
    )
    .unwrap();
    let out = common::hotplugd()
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["replay", "--dry-run", "--rules"])
        .arg(&rules)
        .args([
            "--sysfs-root",
            "tests/corpus/sysfs/x86_64",
            "tests/corpus/sysfs/x86_64/uevents.jsonl",
        ])
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let want = "  ENV{DEVLINKS}=\"/dev/x/ttyUSB0\"\n  ENV{TAGS}=\":uaccess:\"\n  ENV{CURRENT_TAGS}=\":uaccess:\"\n  node: OWNER=0 GROUP=- MODE=0620\n  link_priority=7\n";
    assert!(text.contains(want), "{text}");
    assert_eq!(
        text.matches("node: ").count(),
        1,
        "only the tty's add: {text}"
    );
}

/// The device table follows the subsystems of rules that set a node's
/// owner, group, mode, links or tags too (their `remove` must be known).
#[test]
fn node_rules_count_for_the_tracked_subsystems() {
    let rs = lenient("SUBSYSTEM==\"tty\", MODE=\"0660\"\nSUBSYSTEM==\"block\", SYMLINK+=\"x\"\nSUBSYSTEM==\"input\", TAG+=\"seat\"\nSUBSYSTEM==\"net\", ENV{X}=\"1\"\n");
    assert_eq!(
        rs.subsystems(),
        Some(vec!["block".to_string(), "input".into(), "tty".into()])
    );
    let rs = lenient("ATTRS{idVendor}==\"0403\", GROUP=\"dialout\"\n");
    assert_eq!(
        rs.subsystems(),
        None,
        "a node rule with no SUBSYSTEM== can match any"
    );
}
