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

#[test]
fn every_error_file_gives_exactly_its_golden_diagnostics() {
    let pairs = golden_pairs("tests/rules/errors");
    assert!(pairs.len() >= 7);
    let mut all = String::new();
    for (rules, expected) in pairs {
        let (code, stdout, stderr) = check(&["--rules", &rules]);
        assert_eq!(code, Some(1), "{rules}: check must fail\n{stderr}");
        assert!(stdout.is_empty(), "{rules}: {stdout}");
        let want = std::fs::read_to_string(&expected)
            .unwrap_or_else(|_| panic!("{rules} has no {}", expected.display()));
        assert_eq!(
            stderr,
            want,
            "{rules}: diagnostics differ from {}",
            expected.display()
        );
        all.push_str(&stderr);
    }
    // Every kind of error the loader knows appears in some golden file.
    for phrase in [
        "expected ',' between terms",
        "expected an operator",
        "expected a value in double quotes",
        "expected a key",
        "has no closing '}'",
        "unknown key",
        "keys are upper case",
        "is not supported yet",
        "is a udev key that hotplugd does not support",
        "takes no {...}",
        "needs {...}",
        "is not a variable name",
        "is not an attribute name",
        "is a match key: use == or !=",
        "RUN takes +=",
        "ENV{} takes ==, != or =",
        "OPTIONS takes +=",
        "GOTO takes =",
        "LABEL takes =",
        "without a closing ']'",
        "range is backwards",
        "ends with a lone '\\'",
        "matches no action the kernel sends",
        "devpaths start with '/'",
        "names contain no '/'",
        "lower-case hex digits",
        "decimal without leading zeros",
        "cannot be assigned",
        "must be an absolute path",
        "literal absolute path, without substitutions",
        "a lone '$'",
        "unknown substitution $",
        "unknown substitution %",
        "unclosed single quote",
        "no builtin named",
        "expected RUN{program}, RUN{builtin} or RUN{service}",
        "RUN needs a program",
        "has no LABEL=",
        "GOTO only jumps forward",
        "is not supported (only last_rule)",
        "LABEL needs a name",
        "is defined twice",
        "not UTF-8",
    ] {
        assert!(all.contains(phrase), "no golden file shows: {phrase}");
    }
}

#[test]
fn warnings_are_printed_and_the_rules_load() {
    for (rules, expected) in golden_pairs("tests/rules/warnings") {
        let (code, stdout, stderr) = check(&["--rules", &rules]);
        assert_eq!(code, Some(0), "{rules}\n{stderr}");
        assert_eq!(stdout, "rules: 2 rules from 1 files, 2 warnings\n");
        assert_eq!(stderr, std::fs::read_to_string(expected).unwrap());
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
