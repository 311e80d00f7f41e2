//! Least privilege on the real binary: as root, rule files, rule
//! directories and RUN programs that others could change are refused (with
//! the path and the fix) unless `--insecure-rules`; `--handler-user` runs
//! handlers with dropped privileges and no supplementary groups.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

fn chmod(p: &std::path::Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn check(rules: &std::path::Path, extra: &[&str]) -> (i32, String) {
    let out = hotplugd()
        .arg("check")
        .arg("--rules")
        .arg(rules)
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn untrusted_rules_and_programs_are_refused_naming_the_fix() {
    if !need_root("untrusted_rules") {
        return;
    }
    let s = Scratch::new("trust");
    let prog = s.script("h.sh", "exit 0");
    let rules =
        std::path::PathBuf::from(s.rules(&format!("SUBSYSTEM==\"net\", RUN+=\"{prog}\"\n")));
    assert_eq!(
        check(&rules, &[]).0,
        0,
        "trusted as created (0644, 0755, root)"
    );

    // a rules file anyone can write
    chmod(&rules, 0o666);
    let (code, err) = check(&rules, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "{}: rules file is writable by group and others (mode 0666)",
            rules.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("Fix: `chmod go-w {}`", rules.display())),
        "{err}"
    );
    assert!(err.contains("--insecure-rules"), "{err}");
    let (code, err) = check(&rules, &["--insecure-rules"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("[accepted: --insecure-rules]"), "{err}");
    chmod(&rules, 0o644);

    // a rules directory its group can write: any new file would load
    let dir = s.path("rules.d");
    std::fs::create_dir(&dir).unwrap();
    std::fs::copy(&rules, dir.join("a.rules")).unwrap();
    chmod(&dir, 0o775);
    let (code, err) = check(&dir, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("rules directory is writable by its group (mode 0775)"),
        "{err}"
    );
    chmod(&dir, 0o755);
    assert_eq!(check(&dir, &[]).0, 0);

    // a RUN program others can write, then one owned by someone else
    chmod(std::path::Path::new(&prog), 0o757);
    let (code, err) = check(&rules, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "{prog}: RUN program is writable by others (mode 0757)"
        )),
        "{err}"
    );
    chmod(std::path::Path::new(&prog), 0o755);
    nix::unistd::chown(
        std::path::Path::new(&prog),
        Some(nix::unistd::Uid::from_raw(65534)),
        None,
    )
    .unwrap();
    let (code, err) = check(&rules, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("RUN program is owned by uid 65534, not root"),
        "{err}"
    );
    assert!(err.contains(&format!("Fix: `chown root {prog}`")), "{err}");

    // run refuses to start the same way (exit 1), and starts when told
    let out = hotplugd()
        .args(["run", "--rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let mut c = hotplugd();
    c.args(["run", "--insecure-rules", "--rules"]).arg(&rules);
    let p = Proc::spawn(c);
    p.wait_listening();
    assert!(
        p.stderr().contains("[accepted: --insecure-rules]"),
        "{}",
        p.stderr()
    );
    let (st, _) = p.stop();
    assert!(st.success());
    nix::unistd::chown(
        std::path::Path::new(&prog),
        Some(nix::unistd::Uid::from_raw(0)),
        None,
    )
    .unwrap();

    // a reload that finds the file made writable keeps the old rules
    let mut c = hotplugd();
    c.args(["run", "--rules"]).arg(&rules);
    let p = Proc::spawn(c);
    p.wait_listening();
    chmod(&rules, 0o646);
    p.signal(Signal::SIGHUP);
    assert!(
        p.wait_stderr("stay in force", Duration::from_secs(10)),
        "{}",
        p.stderr()
    );
    assert!(
        p.stderr().contains("writable by others (mode 0646)"),
        "{}",
        p.stderr()
    );
    let (st, _) = p.stop();
    assert!(st.success());
}

fn id_of(args: &[&str]) -> String {
    let out = Command::new("id").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn handler_user_runs_handlers_unprivileged_without_supplementary_groups() {
    if !need_root("handler_user") {
        return;
    }
    let s = Scratch::new("huser");
    let out_dir = s.path("out");
    std::fs::create_dir(&out_dir).unwrap();
    chmod(&out_dir, 0o1777);
    let out = out_dir.join("ids");
    let id = uuid();
    let h = s.script(
        "ids.sh",
        &format!("{{ id -u; id -g; id -G; pwd; }} > \"{}\"", out.display()),
    );
    let rules = s.rules(&format!("ENV{{SYNTH_UUID}}==\"{id}\", RUN+=\"{h}\"\n"));
    let mut c = hotplugd();
    c.args(["run", "--rules", &rules, "--handler-user", "nobody"]);
    let p = Proc::spawn(c);
    p.wait_listening();
    synth(&lo_uevent(), "change", &id, &[]);
    let mut got = String::new();
    for _ in 0..500 {
        got = std::fs::read_to_string(&out).unwrap_or_default();
        if got.lines().count() == 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (st, err) = p.stop();
    assert!(st.success(), "{err}");
    let uid = id_of(&["-u", "nobody"]);
    let gid = id_of(&["-g", "nobody"]);
    assert_eq!(
        got,
        format!("{uid}\n{gid}\n{gid}\n/\n"),
        "uid, gid, groups, cwd; {err}"
    );
    assert!(
        err.contains(&format!("RUN handlers run as uid {uid} gid {gid}")),
        "{err}"
    );

    // refused at start: root, or a user that does not exist (exit 1)
    for (spec, want) in [
        ("root", "handlers would still run as root"),
        ("no-such-user-hp", "no such user 'no-such-user-hp'"),
        (
            "nobody:no-such-group-hp",
            "no such group 'no-such-group-hp'",
        ),
    ] {
        let o = hotplugd()
            .args(["run", "--rules", &rules, "--handler-user", spec])
            .output()
            .unwrap();
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{spec}: {e}");
        assert!(e.contains(want), "{spec}: {e}");
    }
}
