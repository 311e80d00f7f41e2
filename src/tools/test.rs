//! `hotplugd test DEVICE`: builds the event the device would send from its
//! `uevent` file and runs the rules on it with a per-term trace
//! ([`crate::rules::trace`]), then prints what would be done: `ENV{}`
//! assignments, the node's owner, mode and links, and each handler's argv
//! and environment. Runs nothing and changes nothing.

use std::io::Write;

use crate::app::AppError;
use crate::cli::TestOpts;
use crate::exec::printable;
use crate::rules::trace::trace;
use crate::rules::Matched;
use crate::runner::RulesFrom;
use crate::sys::sysfs::SysfsRoot;
use crate::uevent::Uevent;

/// `hotplugd test`.
pub fn run(o: &TestOpts, builtins: &crate::exec::Builtins) -> Result<(), AppError> {
    let devpath = super::resolve(&o.device, &o.sysfs_root)?;
    let view = SysfsRoot::new(&o.sysfs_root);
    let from = if o.rules.is_empty() {
        RulesFrom::Default
    } else {
        RulesFrom::Paths {
            paths: o.rules.clone(),
            insecure: o.insecure_rules,
        }
    };
    let rules = from.load(&builtins.names()).map_err(|errors| {
        for e in &errors {
            log::error!("{e}");
        }
        AppError::Config(format!("rules did not load: {} errors", errors.len()))
    })?;
    let props = super::properties(&view, &devpath);
    let raw = super::event_bytes(&o.action, &devpath, &props);
    let ev = Uevent::parse(&raw).map_err(|e| {
        AppError::Config(format!(
            "{devpath}: its uevent file does not make an event: {e}"
        ))
    })?;
    let mut m = Box::<Matched>::default();
    let visited = trace(&rules, &ev, &view, &mut m);

    let mut s = String::new();
    s.push_str(&format!(
        "event (from {}{devpath}/uevent, nothing sent):\n",
        view.root()
    ));
    for f in ev.fields() {
        s.push_str(&format!("  {}={}\n", f.key, printable(f.value)));
    }
    s.push_str(&format!(
        "\nrules: {} rules from {} files; {} visited, {} matched\n",
        rules.len(),
        rules.files.len(),
        visited.len(),
        m.count
    ));
    for r in &visited {
        s.push_str(&format!(
            "\n{} {}\n",
            rules.location(r.rule),
            if r.matched { "MATCHED" } else { "no match" }
        ));
        if r.terms.is_empty() {
            s.push_str("  (no terms: matches every event)\n");
        }
        for t in &r.terms {
            let seen = match &t.seen {
                Some(v) => format!("saw \"{}\"", printable(v.as_bytes())),
                None => "no value (unreadable or absent)".into(),
            };
            let at = t.at.as_ref().map_or(String::new(), |d| format!(" at {d}"));
            s.push_str(&format!(
                "  {} {}: {seen}{at}\n",
                if t.held { "ok  " } else { "FAIL" },
                t.term
            ));
        }
        if !r.matched && r.terms.iter().all(|t| t.held) {
            s.push_str("  => each term holds alone, but the parent terms do not all hold at the same parent device\n");
        }
    }
    let env: Vec<_> = rules.env_assignments(&m).collect();
    if !env.is_empty() {
        s.push_str("\nassignments:\n");
        for (k, v) in env {
            s.push_str(&format!("  ENV{{{k}}}=\"{}\"\n", printable(v)));
        }
    }
    let n = &m.node;
    if n.uid.is_some()
        || n.gid.is_some()
        || n.mode.is_some()
        || !n.links.is_empty()
        || !n.tags.is_empty()
    {
        s.push_str("\nnode:\n");
        if let Some(u) = n.uid {
            s.push_str(&format!("  owner uid {u}\n"));
        }
        if let Some(g) = n.gid {
            s.push_str(&format!("  group gid {g}\n"));
        }
        if let Some(md) = n.mode {
            s.push_str(&format!("  mode {md:04o}\n"));
        }
        for l in &n.links {
            s.push_str(&format!("  link /dev/{l} (priority {})\n", n.link_priority));
        }
        for t in &n.tags {
            s.push_str(&format!("  tag {t}\n"));
        }
    }
    if m.has_work() {
        s.push_str("\nwould run (nothing is run):\n");
        let cfg = crate::exec::ExecConfig {
            max_children: 1,
            max_queue: 1,
            timeout: std::time::Duration::from_secs(1),
            grace: std::time::Duration::from_secs(1),
            extra_env: Vec::new(),
            handler_creds: None,
        };
        let mut jobs = crate::job::Jobs::new(1, crate::limits::JOB_SLOT);
        crate::app::work_lines(&rules, &ev, &m, &view, &cfg, &mut jobs, &mut |l: String| {
            s.push_str(&l)
        });
    }
    std::io::stdout()
        .write_all(s.as_bytes())
        .map_err(|e| AppError::System(format!("standard output: {e}")))
}
