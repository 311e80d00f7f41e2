//! The rules-file trust check, as root (issue 12): the file is judged on
//! the descriptor it was read from, and every directory up to `/` must be
//! root's and not writable by group or others, unless sticky like `/tmp`.
//! Each refusal names the rules file, the path at fault and the fix.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mkdir(p: &Path, mode: u32) -> PathBuf {
    std::fs::create_dir(p).unwrap();
    chmod(p, mode); // whatever the umask
    p.to_path_buf()
}

fn rules_file(p: &Path, text: &str) -> PathBuf {
    std::fs::write(p, text).unwrap();
    chmod(p, 0o644);
    p.to_path_buf()
}

const RULE: &str = "SUBSYSTEM==\"net\", RUN{builtin}+=\"log\"\n";

fn check(rules: &Path, extra: &[&str]) -> (i32, String) {
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
fn a_group_writable_directory_of_the_rules_file_is_refused_naming_it() {
    if !need_root("trust_group_dir") {
        return;
    }
    let s = Scratch::new("trust-gdir");
    let dir = mkdir(&s.path("etc"), 0o775);
    let rules = rules_file(&dir.join("a.rules"), RULE);
    let (code, err) = check(&rules, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "{}: directory {} above it is writable by its group (mode 0775)",
            rules.display(),
            dir.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("Fix: `chmod go-w {}`", dir.display())),
        "{err}"
    );
    // --insecure-rules: a warning, and the rules load
    let (code, err) = check(&rules, &["--insecure-rules"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("[accepted: --insecure-rules]"), "{err}");
    chmod(&dir, 0o755);
    let (code, err) = check(&rules, &[]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_world_writable_directory_two_levels_up_is_refused() {
    if !need_root("trust_two_up") {
        return;
    }
    let s = Scratch::new("trust-2up");
    let top = mkdir(&s.path("top"), 0o777);
    let mid = mkdir(&top.join("mid"), 0o755);
    let rules = rules_file(&mid.join("a.rules"), RULE);
    let (code, err) = check(&rules, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "{}: directory {} above it is writable by group and others (mode 0777), without the sticky bit",
            rules.display(),
            top.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("Fix: `chmod go-w {}`", top.display())),
        "{err}"
    );
    assert!(
        !err.contains(&format!("directory {} ", mid.display())),
        "{err}"
    );
    // the same through a rules directory, each directory named once
    let (code, err) = check(&mid, &[]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        err.matches(&format!("directory {} above it", top.display()))
            .count(),
        1,
        "{err}"
    );
    chmod(&mid, 0o775);
    let (code, err) = check(&mid, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "{}: rules directory is writable by its group (mode 0775)",
            mid.display()
        )),
        "{err}"
    );
    assert_eq!(err.matches("(mode 0775)").count(), 1, "{err}");
}

#[test]
fn a_sticky_world_writable_ancestor_like_tmp_is_accepted() {
    if !need_root("trust_sticky") {
        return;
    }
    let s = Scratch::new("trust-sticky");
    let top = mkdir(&s.path("tmp"), 0o1777);
    let mid = mkdir(&top.join("hotplugd"), 0o755);
    let rules = rules_file(&mid.join("a.rules"), RULE);
    let (code, err) = check(&rules, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("above it"), "{err}");
    // but not when the directory after it is not root's: its owner could
    // replace the rules
    nix::unistd::chown(&mid, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let (code, err) = check(&rules, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "directory {} above it is owned by uid 65534, not root",
            mid.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("Fix: `chown root {}`", mid.display())),
        "{err}"
    );
    // a rules directory must not be writable even with the sticky bit
    let (code, err) = check(&top, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("rules directory is writable by group and others (mode 1777)"),
        "{err}"
    );
}

#[test]
fn a_symlinked_rules_file_is_judged_by_the_file_it_reads() {
    if !need_root("trust_symlink") {
        return;
    }
    let s = Scratch::new("trust-link");
    let etc = mkdir(&s.path("etc"), 0o755);
    let store = mkdir(&s.path("store"), 0o755);
    let target = rules_file(&store.join("real.rules"), RULE);
    let link = etc.join("a.rules");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let (code, err) = check(&link, &[]);
    assert_eq!(code, 0, "trusted as created: {err}");

    // the file read is writable by others: refused, naming the real file
    chmod(&target, 0o646);
    let (code, err) = check(&link, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "{}: rules file (through a symlink: {}) is writable by others (mode 0646)",
            link.display(),
            target.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("Fix: `chmod go-w {}`", target.display())),
        "{err}"
    );
    chmod(&target, 0o644);

    // the target's directory is writable: refused, though the link's is fine
    chmod(&store, 0o777);
    let (code, err) = check(&link, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("directory {} above it", store.display())),
        "{err}"
    );
    chmod(&store, 0o755);

    // a link someone else owns, in a sticky directory: they could replace it
    let drop = mkdir(&s.path("drop"), 0o1777);
    let theirs = drop.join("b.rules");
    std::os::unix::fs::symlink(&target, &theirs).unwrap();
    std::os::unix::fs::lchown(&theirs, Some(65534), None).unwrap();
    let (code, err) = check(&theirs, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "symlink {} on its path is owned by uid 65534, not root",
            theirs.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("Fix: `chown -h root {}`", theirs.display())),
        "{err}"
    );
}

#[test]
fn a_run_program_under_a_writable_directory_two_levels_up_is_refused() {
    if !need_root("trust_run_dirs") {
        return;
    }
    let s = Scratch::new("trust-run");
    let top = mkdir(&s.path("opt"), 0o777);
    let bin = mkdir(&top.join("bin"), 0o755);
    let prog = bin.join("h.sh");
    std::fs::write(&prog, "#!/bin/sh\nexit 0\n").unwrap();
    chmod(&prog, 0o755);
    let rules = rules_file(
        &s.path("a.rules"),
        &format!("SUBSYSTEM==\"net\", RUN+=\"{}\"\n", prog.display()),
    );
    let (code, err) = check(&rules, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "{}: directory {} above it is writable by group and others",
            prog.display(),
            top.display()
        )),
        "{err}"
    );
}
