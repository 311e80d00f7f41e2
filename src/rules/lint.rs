//! `hotplugd check`'s lints, on compiled rules (what `udevadm verify`
//! warns about): duplicate rules, terms or assignments that conflict
//! within a rule, labels no `GOTO` jumps to. All are warnings: the rules
//! load and behave as written, but probably not as meant.
//!
//! A `GOTO` to a label of another file needs no lint: the loader already
//! refuses it (a `GOTO` only jumps forward within its file), naming the
//! line.

use super::{glob, Action, Diagnostic, MatchKey, RuleSet};

fn warn(rs: &RuleSet, rule: usize, message: String) -> Diagnostic {
    let r = &rs.rules[rule];
    Diagnostic {
        file: rs.files[r.file].clone(),
        line: r.line,
        col: 1,
        message,
        source: String::new(),
        warning: true,
    }
}

/// A rule's meaning as a comparable key: its terms (in any order), its
/// assignments (in order) and how it goes on.
fn identity(rs: &RuleSet, i: usize) -> String {
    let r = &rs.rules[i];
    let mut terms: Vec<String> = rs.matches[r.matches.clone()]
        .iter()
        .map(|t| format!("{:?}{}{:?}", t.key, t.negate, t.pattern))
        .collect();
    terms.sort();
    let actions: Vec<String> = rs.actions[r.actions.clone()]
        .iter()
        .map(|a| format!("{a:?}"))
        .collect();
    format!("{terms:?}|{actions:?}|{:?}|{}", r.goto_name, r.last_rule)
}

/// Every lint warning for `rs`, in rule order.
pub fn lint(rs: &RuleSet) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut seen: Vec<(String, usize)> = Vec::new();
    for (i, r) in rs.rules.iter().enumerate() {
        if r.label {
            let name = r.label_name.as_deref().unwrap_or("");
            if !rs
                .rules
                .iter()
                .any(|g| g.goto_name.as_deref() == Some(name))
            {
                out.push(warn(
                    rs,
                    i,
                    format!("LABEL=\"{name}\" is never the target of a GOTO (a typo in a GOTO, or left over?)"),
                ));
            }
            continue;
        }
        // duplicates (of rules that do something: a line whose every
        // assignment was ignored with a warning has said its piece)
        let inert = r.actions.is_empty() && r.goto.is_none() && !r.last_rule;
        let id = identity(rs, i);
        match seen.iter().find(|(s, _)| *s == id) {
            _ if inert => {}
            Some(&(_, first)) => out.push(warn(
                rs,
                i,
                format!(
                    "this rule is a duplicate of the rule at {} (same terms, same assignments): its work would be done twice",
                    rs.location(first)
                ),
            )),
            None => seen.push((id, i)),
        }
        // two == terms on one key with different literal values: never matches
        let terms = &rs.matches[r.matches.clone()];
        for (a, ta) in terms.iter().enumerate() {
            for tb in &terms[a + 1..] {
                if ta.key == tb.key
                    && !ta.negate
                    && !tb.negate
                    && ta.pattern != tb.pattern
                    && glob::is_literal(&ta.pattern)
                    && glob::is_literal(&tb.pattern)
                    && !walks(&ta.key)
                {
                    out.push(warn(
                        rs,
                        i,
                        format!(
                            "{}==\"{}\" and {}==\"{}\" conflict: this rule can never match",
                            ta.key.name(),
                            String::from_utf8_lossy(&ta.pattern),
                            tb.key.name(),
                            String::from_utf8_lossy(&tb.pattern)
                        ),
                    ));
                }
            }
        }
        // one key assigned twice in a rule
        let actions = &rs.actions[r.actions.clone()];
        for (a, x) in actions.iter().enumerate() {
            let Some(kx) = assigned(x) else { continue };
            if let Some(y) = actions[a + 1..]
                .iter()
                .find(|y| assigned(y).as_ref() == Some(&kx))
            {
                if format!("{x:?}") != format!("{y:?}") {
                    out.push(warn(
                        rs,
                        i,
                        format!("{kx} is assigned twice with different values in this rule: only the last one counts"),
                    ));
                    break;
                }
            }
        }
    }
    out
}

/// Parent terms (KERNELS, ...) may hold at different parents; two of them
/// on one key are not a conflict.
fn walks(k: &MatchKey) -> bool {
    matches!(
        k,
        MatchKey::Attrs(_) | MatchKey::Kernels | MatchKey::Subsystems | MatchKey::Drivers
    )
}

/// The key an assignment sets, when a later one would replace it.
fn assigned(a: &Action) -> Option<String> {
    match a {
        Action::SetEnv { key, .. } => Some(format!("ENV{{{key}}}")),
        Action::WriteAttr { name, .. } => Some(format!("ATTR{{{name}}}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::parse::{compile, Source};

    fn lints(text: &str) -> Vec<String> {
        let rs = compile(
            &[Source {
                name: "t.rules".into(),
                text: text.into(),
            }],
            &[],
        )
        .unwrap();
        lint(&rs).iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn each_lint_fires_once_where_it_should() {
        let w = lints(
            "SUBSYSTEM==\"tty\", KERNEL==\"ttyUSB*\", RUN+=\"/bin/true\"\n\
             KERNEL==\"ttyUSB*\", SUBSYSTEM==\"tty\", RUN+=\"/bin/true\"\n\
             SUBSYSTEM==\"tty\", SUBSYSTEM==\"net\", RUN+=\"/bin/true\"\n\
             SUBSYSTEM==\"usb\", ENV{A}=\"1\", ENV{A}=\"2\"\n\
             LABEL=\"unused\"\n",
        );
        assert_eq!(w.len(), 4, "{w:#?}");
        assert!(
            w[0].starts_with(
                "t.rules:2:1: warning: this rule is a duplicate of the rule at t.rules:1"
            ),
            "{}",
            w[0]
        );
        assert!(w[1].contains("can never match"), "{}", w[1]);
        assert!(w[2].contains("ENV{A} is assigned twice"), "{}", w[2]);
        assert!(w[3].contains("LABEL=\"unused\" is never"), "{}", w[3]);
    }

    #[test]
    fn clean_rules_have_no_lint() {
        let w = lints(
            "SUBSYSTEM!=\"tty\", GOTO=\"end\"\n\
             KERNELS==\"1-1\", KERNELS==\"usb1\", RUN+=\"/bin/true\"\n\
             KERNEL==\"ttyUSB*\", RUN+=\"/bin/true\"\n\
             LABEL=\"end\"\n",
        );
        assert!(w.is_empty(), "{w:#?}");
    }
}
