//! `hotplugd trigger`: asks the kernel to send an event for each matching
//! device (or subsystem) by writing `ACTION UUID` to its `uevent` file,
//! parents first, as `udevadm trigger` does; with `--settle`, waits until
//! the running daemon has handled them all.

use std::io::Write;
use std::path::Path;

use crate::app::AppError;
use crate::cli::{TriggerOpts, TriggerType};
use crate::rules::glob;

/// One thing to write to: its devpath (or `/bus/NAME`) and what the
/// filters look at.
#[derive(Debug)]
struct Target {
    devpath: String,
    subsystem: String,
    fields: Vec<Vec<u8>>,
}

fn devices(root: &Path) -> (Vec<Target>, Vec<String>) {
    let mut found = Vec::new();
    let rep = crate::sys::walk::walk(root, &|_| true, &mut found);
    let mut v: Vec<Target> = found
        .into_iter()
        .filter(|f| !f.subsystem.is_empty())
        .map(|f| Target {
            devpath: f.devpath,
            subsystem: f.subsystem,
            fields: f.fields,
        })
        .collect();
    // lexical order puts every parent before its children
    v.sort_by(|a, b| a.devpath.cmp(&b.devpath));
    (v, rep.unread)
}

fn subsystems(root: &Path) -> Vec<Target> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(root.join("bus")) {
        for e in rd.flatten() {
            if let Some(name) = e.file_name().to_str() {
                if e.path().join("uevent").exists() {
                    v.push(Target {
                        devpath: format!("/bus/{name}"),
                        subsystem: name.to_string(),
                        fields: Vec::new(),
                    });
                }
            }
        }
    }
    v.sort_by(|a, b| a.devpath.cmp(&b.devpath));
    v
}

fn attr_value(root: &Path, devpath: &str, name: &str) -> Option<Vec<u8>> {
    let p = root.join(devpath.trim_start_matches('/')).join(name);
    let mut v = std::fs::read(p).ok()?;
    while v.last().is_some_and(|b| b.is_ascii_whitespace()) {
        v.pop();
    }
    Some(v)
}

/// The udev filters: subsystem and sysname lists match any of theirs;
/// every attribute filter must hold; property filters match any.
fn selected(o: &TriggerOpts, root: &Path, t: &Target) -> bool {
    let sub = t.subsystem.as_bytes();
    if !o.subsystem_match.is_empty()
        && !o
            .subsystem_match
            .iter()
            .any(|g| glob::matches(g.as_bytes(), sub))
    {
        return false;
    }
    if o.subsystem_nomatch
        .iter()
        .any(|g| glob::matches(g.as_bytes(), sub))
    {
        return false;
    }
    let sysname = t.devpath.rsplit('/').next().unwrap_or("");
    if !o.sysname_match.is_empty()
        && !o
            .sysname_match
            .iter()
            .any(|g| glob::matches(g.as_bytes(), sysname.as_bytes()))
    {
        return false;
    }
    for (name, want) in &o.attr_match {
        match (attr_value(root, &t.devpath, name), want) {
            (None, _) => return false,
            (Some(v), Some(g)) if !glob::matches(g.as_bytes(), &v) => return false,
            _ => {}
        }
    }
    for (name, want) in &o.attr_nomatch {
        match (attr_value(root, &t.devpath, name), want) {
            (Some(_), None) => return false,
            (Some(v), Some(g)) if glob::matches(g.as_bytes(), &v) => return false,
            _ => {}
        }
    }
    if !o.property_match.is_empty() {
        let any = o.property_match.iter().any(|(k, g)| {
            t.fields.iter().any(|f| {
                f.len() > k.len()
                    && f.starts_with(k.as_bytes())
                    && f[k.len()] == b'='
                    && glob::matches(g.as_bytes(), &f[k.len() + 1..])
            })
        });
        if !any {
            return false;
        }
    }
    true
}

fn uuid() -> Result<String, AppError> {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_string())
        .map_err(|e| AppError::System(format!("/proc/sys/kernel/random/uuid: {e}")))
}

/// `hotplugd trigger`.
pub fn run(o: &TriggerOpts) -> Result<(), AppError> {
    // always the real sysfs: a write to a fixture's uevent file would
    // only overwrite it
    let root = Path::new("/sys");
    let control = super::control_path(&o.control);
    // Before writing anything: with --settle, a daemon must be there.
    if o.settle && !o.dry_run {
        drop(super::connect(&control)?);
    }
    let targets = match o.kind {
        TriggerType::Devices => {
            let (v, unread) = devices(root);
            for d in unread {
                log::warn!(
                    "{d}: not read (unreadable, or below the walk's depth bound); not triggered"
                );
            }
            v
        }
        TriggerType::Subsystems => subsystems(root),
    };
    let mut out = std::io::stdout().lock();
    let uuid = uuid()?;
    let mut written = Vec::new();
    let mut failed = 0usize;
    for t in targets.iter().filter(|t| selected(o, root, t)) {
        if o.verbose {
            let _ = writeln!(out, "{}{}", root.display(), t.devpath);
        }
        if o.dry_run {
            continue;
        }
        let file = root.join(t.devpath.trim_start_matches('/')).join("uevent");
        match std::fs::write(&file, format!("{} {uuid}", o.action)) {
            Ok(()) => written.push(t.devpath.clone()),
            // gone meanwhile, or a device that refuses (as udevadm: say, go on)
            Err(e) => {
                failed += 1;
                log::warn!("{}: {e}", file.display());
            }
        }
    }
    let _ = out.flush();
    log::debug!(
        "trigger: {} written ({} failed), SYNTH_UUID={uuid}",
        written.len(),
        failed
    );
    if o.settle && !o.dry_run {
        super::settle(&control, o.timeout, Some(&written))?;
    }
    Ok(())
}
