//! `hotplugd info DEVICE`: what the kernel says about a device (its
//! `uevent` file), its node, and what the running daemon recorded for it;
//! `--attribute-walk`: the device and each parent with their attributes,
//! every line a match term to paste into a rule.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::app::AppError;
use crate::cli::InfoOpts;
use crate::identity::{EntryKind, SysfsView};
use crate::monitor::{self, OutBuf};
use crate::rules::ancestors;
use crate::sys::sysfs::SysfsRoot;

/// Attribute values longer than this are skipped (said so).
const MAX_SHOWN: usize = 4096;

/// One device of the walk.
#[derive(Debug, Default)]
struct Level {
    devpath: String,
    kernel: String,
    subsystem: String,
    driver: String,
    attrs: Vec<(String, String)>,
    /// (name, why it is not shown)
    skipped: Vec<(String, &'static str)>,
}

/// Why a value cannot be shown as a match term, if it cannot.
fn unshowable(v: &[u8]) -> Option<&'static str> {
    if v.len() >= MAX_SHOWN {
        return Some("too long");
    }
    let Ok(s) = core::str::from_utf8(v) else {
        return Some("binary");
    };
    if s.contains('\n') {
        return Some("several lines");
    }
    if s.chars().any(|c| c.is_control() || c == '"') {
        return Some("binary or quote");
    }
    None
}

fn level(view: &SysfsRoot, devpath: &str) -> Level {
    let mut l = Level {
        devpath: devpath.to_string(),
        kernel: devpath.rsplit('/').next().unwrap_or("").to_string(),
        ..Level::default()
    };
    let mut buf = vec![0u8; MAX_SHOWN];
    if let Some(n) = view.link_name(devpath, "subsystem", &mut buf) {
        l.subsystem = String::from_utf8_lossy(&buf[..n]).into_owned();
    }
    if let Some(n) = view.link_name(devpath, "driver", &mut buf) {
        l.driver = String::from_utf8_lossy(&buf[..n]).into_owned();
    }
    let mut names = Vec::new();
    view.for_each_entry(devpath, &mut |name, kind| {
        if kind == EntryKind::File && name != "uevent" {
            names.push(name.to_string());
        }
    });
    names.sort();
    for name in names {
        match view.read_attr(devpath, &name, &mut buf) {
            None => l.skipped.push((name, "unreadable")),
            Some(n) => {
                let v = &buf[..n];
                // sysfs ends values with a newline; rules compare without it
                let v = v.strip_suffix(b"\n").unwrap_or(v);
                let v = trim_end(v);
                match unshowable(v) {
                    Some(why) => l.skipped.push((name, why)),
                    None => l
                        .attrs
                        .push((name, String::from_utf8_lossy(v).into_owned())),
                }
            }
        }
    }
    l
}

fn trim_end(v: &[u8]) -> &[u8] {
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &v[..end]
}

fn quoted(b: &[u8]) -> String {
    let mut o = OutBuf::new();
    let _ = monitor::json_string(&mut o, b);
    String::from_utf8_lossy(o.as_bytes()).into_owned()
}

/// The device and its parents (each with a `uevent` file), nearest first.
fn walk(view: &SysfsRoot, devpath: &str) -> Vec<Level> {
    ancestors(devpath)
        .filter(|d| d.len() > "/devices".len())
        .filter(|d| view.kind(&format!("{d}/uevent")).is_some())
        .map(|d| level(view, d))
        .collect()
}

fn attribute_walk(levels: &[Level], json: bool) -> String {
    let mut s = String::new();
    if json {
        s.push_str("{\"devices\":[");
        for (i, l) in levels.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!(
                "{{\"devpath\":{},\"kernel\":{},\"subsystem\":{},\"driver\":{},\"attributes\":{{",
                quoted(l.devpath.as_bytes()),
                quoted(l.kernel.as_bytes()),
                quoted(l.subsystem.as_bytes()),
                quoted(l.driver.as_bytes())
            ));
            let a: Vec<String> = l
                .attrs
                .iter()
                .map(|(k, v)| format!("{}:{}", quoted(k.as_bytes()), quoted(v.as_bytes())))
                .collect();
            s.push_str(&a.join(","));
            s.push_str("},\"skipped\":{");
            let k: Vec<String> = l
                .skipped
                .iter()
                .map(|(k, why)| format!("{}:{}", quoted(k.as_bytes()), quoted(why.as_bytes())))
                .collect();
            s.push_str(&k.join(","));
            s.push_str("}}");
        }
        s.push_str("]}\n");
        return s;
    }
    s.push_str(
        "Each device from the one given up to its last parent, as match terms: a rule\n\
         may use terms of the device itself (KERNEL, SUBSYSTEM, DRIVER, ATTR) and of\n\
         one single parent (KERNELS, SUBSYSTEMS, DRIVERS, ATTRS).\n\n",
    );
    for (i, l) in levels.iter().enumerate() {
        let (k, sub, drv, attr) = if i == 0 {
            s.push_str(&format!("  looking at device '{}':\n", l.devpath));
            ("KERNEL", "SUBSYSTEM", "DRIVER", "ATTR")
        } else {
            s.push_str(&format!("  looking at parent device '{}':\n", l.devpath));
            ("KERNELS", "SUBSYSTEMS", "DRIVERS", "ATTRS")
        };
        s.push_str(&format!("    {k}==\"{}\"\n", l.kernel));
        s.push_str(&format!("    {sub}==\"{}\"\n", l.subsystem));
        s.push_str(&format!("    {drv}==\"{}\"\n", l.driver));
        for (name, v) in &l.attrs {
            s.push_str(&format!("    {attr}{{{name}}}==\"{v}\"\n"));
        }
        if !l.skipped.is_empty() {
            let list: Vec<String> = l
                .skipped
                .iter()
                .map(|(n, why)| format!("{n} ({why})"))
                .collect();
            s.push_str(&format!("    # not shown: {}\n", list.join(", ")));
        }
        s.push('\n');
    }
    s
}

/// What the daemon's device table holds for `devpath`: `Ok(None)` if it
/// does not track it; `Err` with the reason if no daemon answers.
fn daemon_record(control: &Path, devpath: &str) -> Result<Option<Vec<(String, String)>>, String> {
    let c = super::connect(control).map_err(|e| e.to_string())?;
    match super::ask(
        &c,
        control,
        &format!("device {devpath}"),
        Some(Duration::from_secs(5)),
    ) {
        Ok(Some(Some(r))) => Ok(Some(r.fields)),
        Ok(Some(None)) => Ok(None),
        Ok(None) => Err("the daemon did not answer within 5 s".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// `hotplugd info`.
pub fn run(o: &InfoOpts) -> Result<(), AppError> {
    let devpath = super::resolve(&o.device, &o.sysfs_root)?;
    let view = SysfsRoot::new(&o.sysfs_root);
    let text = if o.attribute_walk {
        attribute_walk(&walk(&view, &devpath), o.json)
    } else {
        let props = super::properties(&view, &devpath);
        // the daemon knows only the real /sys
        let daemon = if o.sysfs_root == Path::new("/sys") {
            Some(daemon_record(&super::control_path(&o.control), &devpath))
        } else {
            None
        };
        summary(&devpath, &props, daemon.as_ref(), o.json)
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(|e| AppError::System(format!("standard output: {e}")))
}

type Record = Result<Option<Vec<(String, String)>>, String>;

fn summary(
    devpath: &str,
    props: &[(String, Vec<u8>)],
    daemon: Option<&Record>,
    json: bool,
) -> String {
    let get = |k: &str| {
        props
            .iter()
            .find(|(p, _)| p == k)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    let node = get("DEVNAME").map(|n| format!("/dev/{n}"));
    let mut s = String::new();
    if json {
        s.push_str(&format!("{{\"devpath\":{}", quoted(devpath.as_bytes())));
        s.push_str(",\"node\":");
        match &node {
            Some(n) => s.push_str(&quoted(n.as_bytes())),
            None => s.push_str("null"),
        }
        s.push_str(",\"properties\":{");
        let p: Vec<String> = props
            .iter()
            .map(|(k, v)| format!("{}:{}", quoted(k.as_bytes()), quoted(v)))
            .collect();
        s.push_str(&p.join(","));
        s.push_str("},\"daemon\":");
        match daemon {
            Some(Ok(Some(f))) => {
                let p: Vec<String> = f
                    .iter()
                    .map(|(k, v)| format!("{}:{}", quoted(k.as_bytes()), quoted(v.as_bytes())))
                    .collect();
                s.push_str(&format!("{{\"record\":{{{}}}}}", p.join(",")));
            }
            Some(Ok(None)) => s.push_str("{\"record\":null}"),
            Some(Err(e)) => s.push_str(&format!("{{\"error\":{}}}", quoted(e.as_bytes()))),
            None => s.push_str("null"),
        }
        s.push_str("}\n");
        return s;
    }
    s.push_str(&format!("P: {devpath}\n"));
    s.push_str(&format!(
        "M: {}\n",
        devpath.rsplit('/').next().unwrap_or("")
    ));
    if let Some(sub) = get("SUBSYSTEM") {
        s.push_str(&format!("U: {sub}\n"));
    }
    if let Some(n) = &node {
        s.push_str(&format!("N: {}\n", n.trim_start_matches("/dev/")));
    }
    for (k, v) in props {
        let v = String::from_utf8_lossy(v);
        if k == "DEVNAME" {
            s.push_str(&format!("E: DEVNAME=/dev/{v}\n"));
        } else {
            s.push_str(&format!("E: {k}={v}\n"));
        }
    }
    match daemon {
        Some(Ok(Some(f))) => {
            s.push_str("\nthe daemon's device table:\n");
            for (k, v) in f {
                s.push_str(&format!("  {k}={v}\n"));
            }
        }
        Some(Ok(None)) => {
            s.push_str("\nthe daemon's device table has no record of it (its subsystem is not tracked: see run --track)\n")
        }
        Some(Err(e)) => s.push_str(&format!("\n(no daemon record: {e})\n")),
        None => {}
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_a_rule_cannot_hold_are_said() {
        assert_eq!(unshowable(b"0403"), None);
        assert_eq!(unshowable(b"a\nb"), Some("several lines"));
        assert_eq!(unshowable(b"\x12\x01"), Some("binary or quote"));
        assert_eq!(unshowable(b"\xff\xfe"), Some("binary"));
        assert_eq!(unshowable(b"say \"hi\""), Some("binary or quote"));
    }
}
