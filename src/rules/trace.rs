//! The per-term trace behind `hotplugd test`: for one event, every rule
//! the evaluation visits, each of its terms with the value it saw and
//! whether it held. Which rules matched is taken from
//! [`RuleSet::evaluate`] itself (the trace cannot disagree with the
//! daemon); the per-term values are computed next to it, with the `ENV{}`
//! values earlier rules had set at that point (the rules before the one
//! shown are evaluated again for that). A debugging aid: it allocates.

use super::{ancestors, env_value, Match, MatchKey, Matched, RuleSet, Sysfs};
use crate::limits::MAX_ATTR_LEN;
use crate::uevent::Uevent;
use crate::usb::UsbView;

/// One term of a rule, as the trace saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TermTrace {
    /// The term as written (`SUBSYSTEM=="tty"`).
    pub term: String,
    /// The value it compared (`None`: there was none, e.g. an unreadable
    /// attribute).
    pub seen: Option<String>,
    /// For a parent term (`KERNELS`, `SUBSYSTEMS`, `DRIVERS`, `ATTRS`): the
    /// nearest device of the chain where it holds or, if it holds nowhere,
    /// the nearest one with a value (`seen` is read there).
    pub at: Option<String>,
    /// The term holds (after `!=`).
    pub held: bool,
}

/// One visited rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleTrace {
    /// Index in [`RuleSet::rules`].
    pub rule: usize,
    /// The rule matched (as the evaluator decided).
    pub matched: bool,
    /// Its terms, in evaluation order (cheapest first).
    pub terms: Vec<TermTrace>,
}

fn term_text(t: &Match) -> String {
    format!(
        "{}{}\"{}\"",
        t.key.name(),
        if t.negate { "!=" } else { "==" },
        String::from_utf8_lossy(&t.pattern)
    )
}

fn walks(k: &MatchKey) -> bool {
    matches!(
        k,
        MatchKey::Attrs(_) | MatchKey::Kernels | MatchKey::Subsystems | MatchKey::Drivers
    )
}

fn trimmed(b: &[u8]) -> String {
    lossy(b.trim_ascii_end())
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The value a term compares at device `dev` (for parent terms) or for the
/// event.
fn seen(
    rs: &RuleSet,
    t: &Match,
    ev: &Uevent<'_>,
    usb: Option<&UsbView>,
    sysfs: &dyn Sysfs,
    m: &Matched,
    dev: &str,
) -> Option<String> {
    let mut buf = [0u8; MAX_ATTR_LEN];
    match &t.key {
        MatchKey::Action => Some(ev.action().into()),
        MatchKey::Subsystem => Some(ev.subsystem().unwrap_or("").into()),
        MatchKey::Devtype => Some(lossy(ev.get("DEVTYPE").unwrap_or(b""))),
        MatchKey::Devpath => Some(ev.devpath().into()),
        MatchKey::Kernel => Some(ev.kernel_name().into()),
        MatchKey::Driver => Some(lossy(ev.get("DRIVER").unwrap_or(b""))),
        MatchKey::Env(k) => Some(lossy(env_value(rs, ev, m, k))),
        MatchKey::Usb(f) => {
            let mut s = heapless::String::<8>::new();
            Some(match usb {
                Some(u) if u.field(f, &mut s) => s.as_str().into(),
                _ => String::new(),
            })
        }
        // shown as compared: without sysfs's trailing newline
        MatchKey::Attr(name) => sysfs.attr(ev.devpath(), name, &mut buf).map(trimmed),
        MatchKey::Attrs(name) => sysfs.attr(dev, name, &mut buf).map(trimmed),
        MatchKey::Kernels => Some(dev.rsplit('/').next().unwrap_or("").into()),
        MatchKey::Subsystems => sysfs.link(dev, "subsystem", &mut buf).map(lossy),
        MatchKey::Drivers => sysfs.link(dev, "driver", &mut buf).map(lossy),
        // what earlier rules of this event set
        MatchKey::Tag => Some(
            m.node
                .tags
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        ),
        MatchKey::Symlink => Some(
            m.node
                .links
                .iter()
                .map(|l| l.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        ),
    }
}

/// Whether a parent term holds at `dev` (after `!=`), as the evaluator
/// decides it.
fn holds_at(t: &Match, sysfs: &dyn Sysfs, dev: &str) -> bool {
    super::parent_term_holds(t, sysfs, dev, &mut [0u8; MAX_ATTR_LEN])
}

/// Runs `ev` through `rs` into `m` and returns the trace of every rule
/// the evaluation visited (rules skipped by a `GOTO` or after
/// `last_rule` are not in it).
pub fn trace(rs: &RuleSet, ev: &Uevent<'_>, sysfs: &dyn Sysfs, m: &mut Matched) -> Vec<RuleTrace> {
    rs.evaluate(ev, sysfs, m);
    let usb = UsbView::of(ev);
    // The rules before the one traced, to see the ENV{} values set so far.
    let mut before = RuleSet {
        files: rs.files.clone(),
        matches: rs.matches.clone(),
        actions: rs.actions.clone(),
        ..RuleSet::default()
    };
    let mut partial = Box::<Matched>::default();
    let mut out = Vec::new();
    let mut i = 0;
    while i < rs.rules.len() {
        let rule = &rs.rules[i];
        if rule.label {
            i += 1;
            continue;
        }
        let terms = &rs.matches[rule.matches.clone()];
        if terms.iter().any(|t| matches!(t.key, MatchKey::Env(_))) {
            before.rules = rs.rules[..i].to_vec();
            before.evaluate(ev, sysfs, &mut partial);
        } else {
            partial.clear();
        }
        // the parent where every parent term holds, as the evaluator finds it
        let joint = ancestors(ev.devpath()).find(|d| {
            terms
                .iter()
                .filter(|t| walks(&t.key))
                .all(|t| holds_at(t, sysfs, d))
        });
        let mut tt = Vec::new();
        for t in terms {
            if walks(&t.key) {
                let seen_at = |d: &str| seen(rs, t, ev, usb.as_ref(), sysfs, &partial, d);
                // where they all hold; else where this one holds; else the
                // nearest device that has a value
                let at = joint.or_else(|| ancestors(ev.devpath()).find(|d| holds_at(t, sysfs, d)));
                let shown = at.or_else(|| ancestors(ev.devpath()).find(|d| seen_at(d).is_some()));
                tt.push(TermTrace {
                    term: term_text(t),
                    seen: shown.and_then(seen_at),
                    at: shown.map(String::from),
                    held: at.is_some(),
                });
            } else {
                let hit = rs.term_matches(t, ev, usb.as_ref(), sysfs, &partial);
                tt.push(TermTrace {
                    term: term_text(t),
                    seen: seen(rs, t, ev, usb.as_ref(), sysfs, &partial, ev.devpath()),
                    at: None,
                    held: hit != t.negate,
                });
            }
        }
        let matched = m.rules.contains(&i);
        out.push(RuleTrace {
            rule: i,
            matched,
            terms: tt,
        });
        if matched {
            if rule.last_rule {
                break;
            }
            i = rule.goto.unwrap_or(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::parse::{compile, Source};
    use crate::rules::NoSysfs;

    fn rules(text: &str) -> RuleSet {
        compile(
            &[Source {
                name: "t.rules".into(),
                text: text.into(),
            }],
            &[],
        )
        .unwrap()
    }

    #[test]
    fn each_term_shows_the_value_it_saw_and_env_set_earlier_counts() {
        let rs = rules(
            "SUBSYSTEM==\"net\", ENV{MARK}=\"1\"\n\
             SUBSYSTEM==\"net\", KERNEL==\"eth*\", RUN+=\"/bin/true\"\n\
             ENV{MARK}==\"1\", RUN+=\"/bin/echo\"\n",
        );
        let raw = b"change@/devices/virtual/net/lo\0ACTION=change\0DEVPATH=/devices/virtual/net/lo\0SUBSYSTEM=net\0";
        let ev = Uevent::parse(raw).unwrap();
        let mut m = Matched::default();
        let t = trace(&rs, &ev, &NoSysfs, &mut m);
        assert_eq!(t.len(), 3);
        assert!(t[0].matched && !t[1].matched && t[2].matched);
        let kernel = &t[1].terms[1];
        assert_eq!(kernel.term, "KERNEL==\"eth*\"");
        assert_eq!(kernel.seen.as_deref(), Some("lo"));
        assert!(!kernel.held);
        // ENV{MARK} was set by rule 1, not by the event
        assert_eq!(t[2].terms[0].seen.as_deref(), Some("1"));
        assert!(t[2].terms[0].held);
    }
}
