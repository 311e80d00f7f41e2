//! Rules: a udev-style language, compiled once into tables, matched many
//! times without allocating.
//!
//! - [`parse`] turns rule files into a [`RuleSet`] or a list of
//!   [`Diagnostic`]s (`file:line:column: message`, the line, a caret). A
//!   failed load changes nothing: the caller keeps the old set.
//! - [`RuleSet::evaluate`] runs one event through the rules into a reusable
//!   [`Matched`] (fixed capacity; no allocation). Terms that need sysfs
//!   (`ATTR`, then the parent walk of `ATTRS`/`KERNELS`/`SUBSYSTEMS`/
//!   `DRIVERS`) are evaluated only after the rule's event-only terms matched.
//! - Building the handler's argv and environment from a [`Matched`] happens
//!   afterwards ([`RuleSet::argv`], [`RuleSet::env`]) and allocates: it is
//!   part of starting a process, which allocates anyway.
//!
//! sysfs is reached only through the [`Sysfs`] trait, so this module stays
//! free of I/O; `sys::sysfs` implements it for a real (or fixture) tree.

pub mod glob;
pub mod index;
pub mod parse;
pub mod subst;

use core::fmt;
use core::ops::Range;

use crate::limits::{
    MAX_ATTR_LEN, MAX_ENV_ASSIGN, MAX_LINKS, MAX_LINK_LEN, MAX_PARENT_DEPTH, MAX_RUN_PER_EVENT,
    MAX_SUBST_LEN, MAX_TAGS, MAX_TAG_LEN,
};
use crate::uevent::Uevent;
use crate::usb::UsbView;
use subst::{Piece, Template};

/// Read access to sysfs for matching and substitution. Implementations must
/// not allocate.
pub trait Sysfs {
    /// The contents of attribute `name` of the device at `devpath` (a
    /// kobject path such as `/devices/...`), or `None` if it cannot be read.
    fn attr<'b>(&self, devpath: &str, name: &str, buf: &'b mut [u8]) -> Option<&'b [u8]>;
    /// The last component of the target of symlink `name` (`subsystem`,
    /// `driver`) of the device at `devpath`.
    fn link<'b>(&self, devpath: &str, name: &str, buf: &'b mut [u8]) -> Option<&'b [u8]>;
}

/// A sysfs with nothing in it (every read fails): for checks without a tree.
pub struct NoSysfs;

impl Sysfs for NoSysfs {
    fn attr<'b>(&self, _: &str, _: &str, _: &'b mut [u8]) -> Option<&'b [u8]> {
        None
    }
    fn link<'b>(&self, _: &str, _: &str, _: &'b mut [u8]) -> Option<&'b [u8]> {
        None
    }
}

/// What a match term compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MatchKey {
    /// `ACTION`
    Action,
    /// `SUBSYSTEM`
    Subsystem,
    /// `DEVTYPE` (the event's `DEVTYPE` field)
    Devtype,
    /// `DEVPATH`
    Devpath,
    /// `KERNEL`: the last component of DEVPATH
    Kernel,
    /// `DRIVER`: the event's `DRIVER` field
    Driver,
    /// `ENV{KEY}`: a field of the event, or a value an earlier rule set
    Env(Box<str>),
    /// `USB{field}`: a field of the typed USB view, formatted as sysfs does
    Usb(&'static str),
    /// `ATTR{file}`: an attribute of the device
    Attr(Box<str>),
    /// `ATTRS{file}`: an attribute of the device or a parent
    Attrs(Box<str>),
    /// `KERNELS`: the name of the device or a parent
    Kernels,
    /// `SUBSYSTEMS`: the subsystem of the device or a parent
    Subsystems,
    /// `DRIVERS`: the driver of the device or a parent
    Drivers,
}

impl MatchKey {
    /// 0: from the event alone; 1: reads the device's sysfs; 2: walks parents.
    fn cost(&self) -> u8 {
        match self {
            MatchKey::Attr(_) => 1,
            MatchKey::Attrs(_) | MatchKey::Kernels | MatchKey::Subsystems | MatchKey::Drivers => 2,
            _ => 0,
        }
    }
}

/// One `KEY==value` or `KEY!=value` term.
#[derive(Clone, Debug)]
pub struct Match {
    /// What is compared.
    pub key: MatchKey,
    /// `!=`
    pub negate: bool,
    /// The glob as written (checked at load).
    pub pattern: Box<[u8]>,
    /// The same, compiled for matching.
    pub glob: glob::Compiled,
}

/// A command line to run: `argv[0]` is a literal absolute path.
#[derive(Clone, Debug)]
pub struct Command {
    /// The words, each one argument after substitution.
    pub argv: Vec<Template>,
}

/// One assignment, in rule order. New capabilities (device nodes, USB
/// identity properties) become new variants.
#[derive(Clone, Debug)]
pub enum Action {
    /// `RUN+="/abs/program args"`
    Run(Command),
    /// `RUN{builtin}+="name args"`
    Builtin {
        /// The registered name.
        name: Box<str>,
        /// Index in the builtin names given to the loader.
        id: usize,
        /// The words after the name.
        args: Vec<Template>,
    },
    /// `ENV{KEY}="value"`
    SetEnv {
        /// The variable.
        key: Box<str>,
        /// Its new value.
        value: Template,
    },
    /// `ATTR{file}="value"`: written to sysfs when the event's work runs.
    WriteAttr {
        /// The attribute, relative to the device.
        name: Box<str>,
        /// What to write.
        value: Template,
    },
}

/// One compiled rule.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Index into [`RuleSet::files`].
    pub file: usize,
    /// 1-based line where the rule starts.
    pub line: usize,
    /// Match terms, cheapest first (event-only, then ATTR, then parents).
    pub matches: Range<usize>,
    /// Assignments in the order written.
    pub actions: Range<usize>,
    /// `GOTO`: index of the rule to continue with.
    pub goto: Option<usize>,
    /// `GOTO`: the label's name.
    pub goto_name: Option<Box<str>>,
    /// `OPTIONS+="last_rule"`
    pub last_rule: bool,
    /// Bit `i` set: the rule's ACTION terms allow `ACTIONS[i]`. Checked
    /// before anything else, so most rules reject an event with one AND.
    pub action_mask: u8,
    /// This is a `LABEL="..."` line: never matches, only a GOTO target.
    pub label: bool,
    /// The label's name, for a `LABEL` line.
    pub label_name: Option<Box<str>>,
}

/// Compiled rules: immutable once loaded.
#[derive(Debug, Default)]
pub struct RuleSet {
    /// The files the rules came from, as given.
    pub files: Vec<String>,
    /// The rules in order.
    pub rules: Vec<Rule>,
    /// All match terms; rules index into it.
    pub matches: Vec<Match>,
    /// All assignments; rules index into it.
    pub actions: Vec<Action>,
    /// Warnings found while loading (the set loaded anyway).
    pub warnings: Vec<Diagnostic>,
    /// Trust problems found on the descriptors the rule files were read
    /// from and the directories leading to them (as root only), each with
    /// the path at fault; [`parse::check_trust`] reports them.
    pub(crate) read_trust: Vec<(std::path::PathBuf, Diagnostic)>,
    /// Which rules an event can meet ([`index`]); built by [`RuleSet::index`].
    pub(crate) index: std::cell::OnceCell<index::RuleIndex>,
    /// True if the files were loaded with trust checks (as root).
    pub(crate) trust_checked: bool,
}

/// A problem in a rule file, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as given (or `<default rules>`).
    pub file: String,
    /// 1-based line (0: about the file as a whole).
    pub line: usize,
    /// 1-based column, in characters (0: about the file as a whole).
    pub col: usize,
    /// What is wrong and how to fix it.
    pub message: String,
    /// The physical line, for the caret display.
    pub source: String,
    /// A warning: reported, but the rules load.
    pub warning: bool,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.warning { "warning: " } else { "" };
        if self.line == 0 {
            return write!(f, "{}: {kind}{}", self.file, self.message);
        }
        write!(
            f,
            "{}:{}:{}: {kind}{}",
            self.file, self.line, self.col, self.message
        )?;
        if !self.source.is_empty() {
            let caret: String = self
                .source
                .chars()
                .take(self.col.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            write!(f, "\n    {}\n    {caret}^", self.source)?;
        }
        Ok(())
    }
}

/// A value after substitution.
pub type Value = heapless::Vec<u8, MAX_SUBST_LEN>;

/// One piece of work an event collected: a `RUN` or `ATTR{}=` assignment
/// of a matching rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Work {
    /// The rule.
    pub rule: usize,
    /// The action (index into [`RuleSet::actions`]).
    pub action: usize,
    /// Length of the devpath prefix naming the parent that the rule's
    /// parent-walking terms matched, if any (for `$attr{}`).
    pub parent: Option<usize>,
}

#[derive(Clone, Debug)]
struct EnvAssign {
    action: usize,
    value: Value,
}

/// What the rules decided for the event's device node and links: udev's
/// `OWNER`, `GROUP`, `MODE`, `SYMLINK`, `TAG` and `OPTIONS+="link_priority=N"`
/// (issue 13). Filled by [`RuleSet::evaluate`] (later rules override
/// earlier ones unless a value was set with `:=`); applied by the daemon
/// after the rules ran and before handlers start (see `crate::devnode`).
#[derive(Clone, Debug, Default)]
pub struct NodeAssign {
    /// `OWNER`: uid, resolved at load.
    pub uid: Option<u32>,
    /// `GROUP`: gid, resolved at load.
    pub gid: Option<u32>,
    /// `MODE`: permission bits (`0o7777` at most).
    pub mode: Option<u32>,
    /// `SYMLINK`: links relative to `/dev`, after substitution and udev's
    /// escaping, in rule order, without duplicates.
    pub links: heapless::Vec<heapless::String<MAX_LINK_LEN>, MAX_LINKS>,
    /// `OPTIONS+="link_priority=N"` (0 unless a rule set it).
    pub link_priority: i32,
    /// `TAG`: tag names (`[A-Za-z0-9_-]`), in rule order, without duplicates.
    pub tags: heapless::Vec<heapless::String<MAX_TAG_LEN>, MAX_TAGS>,
}

impl NodeAssign {
    /// Empties it for the next event.
    pub fn clear(&mut self) {
        *self = NodeAssign::default();
    }
}

/// What one event collected from the rules. Reused across events (clear,
/// then fill); fixed capacity, so evaluation never allocates.
#[derive(Debug, Default)]
pub struct Matched {
    /// Rules that matched.
    pub count: usize,
    /// The first matching rules (for `replay --dry-run`).
    pub rules: heapless::Vec<usize, 64>,
    /// `RUN` and `ATTR{}=` work, in order.
    pub work: heapless::Vec<Work, MAX_RUN_PER_EVENT>,
    env: heapless::Vec<EnvAssign, MAX_ENV_ASSIGN>,
    /// Work items and `ENV{}` assignments dropped at the per-event limits,
    /// and values cut at `MAX_SUBST_LEN`. Logged and counted by the caller.
    pub limits_hit: usize,
    /// Device node permissions, links and tags (issue 13).
    pub node: NodeAssign,
}

impl Matched {
    /// Empties it for the next event.
    pub fn clear(&mut self) {
        self.count = 0;
        self.rules.clear();
        self.work.clear();
        self.env.clear();
        self.limits_hit = 0;
        self.node.clear();
    }

    /// True if there is work (processes to run, attributes to write).
    pub fn has_work(&self) -> bool {
        !self.work.is_empty()
    }
}

/// The actions the kernel sends.
pub const ACTIONS: [&str; 8] = [
    "add", "remove", "change", "move", "online", "offline", "bind", "unbind",
];

/// The bit of an action in [`Rule::action_mask`]; `None` for an action the
/// kernel does not send today (then the ACTION terms decide alone).
pub fn action_bit(action: &str) -> Option<u8> {
    ACTIONS.iter().position(|a| *a == action).map(|i| 1 << i)
}

/// The actions a pattern allows, as a mask.
pub fn action_mask(g: &glob::Compiled) -> u8 {
    ACTIONS
        .iter()
        .enumerate()
        .filter(|(_, a)| g.matches(a.as_bytes()))
        .fold(0, |m, (i, _)| m | 1 << i)
}

/// The device and its parents: `/devices/a/b/c`, `/devices/a/b`,
/// `/devices/a` (never `/devices` itself), at most [`MAX_PARENT_DEPTH`].
pub fn ancestors(devpath: &str) -> impl Iterator<Item = &str> {
    let mut cur = Some(devpath);
    let mut n = 0;
    core::iter::from_fn(move || {
        let p = cur?;
        n += 1;
        // a path with fewer than two components (e.g. "/devices") ends it
        if n > MAX_PARENT_DEPTH || p.len() < 2 || !p[1..].contains('/') {
            cur = None;
            return None;
        }
        cur = p.rfind('/').map(|i| &p[..i]);
        Some(p)
    })
}

fn trim_end_ws(v: &[u8]) -> &[u8] {
    let n = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &v[..n]
}

/// Compares an attribute value as udev does: trailing whitespace is
/// ignored unless the pattern itself ends in whitespace.
fn attr_matches(t: &Match, value: &[u8]) -> bool {
    let v = if t.pattern.last().is_some_and(|b| b.is_ascii_whitespace()) {
        value
    } else {
        trim_end_ws(value)
    };
    t.glob.matches(v)
}

/// The trailing digits of a kernel name (`ttyUSB12` → `12`).
pub fn kernel_number(kernel: &str) -> &str {
    let n = kernel
        .bytes()
        .rev()
        .take_while(|b| b.is_ascii_digit())
        .count();
    &kernel[kernel.len() - n..]
}

impl RuleSet {
    /// The rules index, built on first use: call it once after loading
    /// (the daemon does) so that no event pays for building it.
    pub fn index(&self) -> &index::RuleIndex {
        self.index.get_or_init(|| index::RuleIndex::build(self))
    }

    /// `file:line` of a rule.
    pub fn location(&self, rule: usize) -> RuleLocation<'_> {
        RuleLocation {
            file: &self.files[self.rules[rule].file],
            line: self.rules[rule].line,
        }
    }

    /// Rules that can match (labels not counted).
    pub fn len(&self) -> usize {
        self.rules.iter().filter(|r| !r.label).count()
    }

    /// True if there are no rules.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The subsystems this rule set can act on: `None` if some rule with
    /// work has no `SUBSYSTEM==` literal terms (it could match any).
    pub fn subsystems(&self) -> Option<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        for r in self.rules.iter().filter(|r| !r.label) {
            if !self.actions[r.actions.clone()].iter().any(|a| {
                matches!(
                    a,
                    Action::Run(_) | Action::Builtin { .. } | Action::WriteAttr { .. }
                )
            }) {
                continue;
            }
            let mut found = false;
            for m in &self.matches[r.matches.clone()] {
                if m.key == MatchKey::Subsystem && !m.negate {
                    for alt in glob::alternatives(&m.pattern) {
                        if !glob::is_literal(alt) {
                            return None;
                        }
                        let s = String::from_utf8_lossy(alt).into_owned();
                        if !out.contains(&s) {
                            out.push(s);
                        }
                    }
                    found = true;
                }
            }
            if !found {
                return None;
            }
        }
        out.sort();
        Some(out)
    }

    /// Runs `ev` through the rules into `m` (cleared first). Never
    /// allocates; sysfs is read only for rules whose cheaper terms matched.
    pub fn evaluate(&self, ev: &Uevent<'_>, sysfs: &dyn Sysfs, m: &mut Matched) {
        m.clear();
        let usb = UsbView::of(ev);
        let abit = action_bit(ev.action());
        let sel = self.index().select(ev, usb.as_ref());
        let mut i = sel.next(0);
        while i < self.rules.len() {
            let rule = &self.rules[i];
            if rule.label || abit.is_some_and(|b| rule.action_mask & b == 0) {
                i = sel.next(i + 1);
                continue;
            }
            let Some(parent) = self.rule_matches(rule, ev, usb.as_ref(), sysfs, m) else {
                i = sel.next(i + 1);
                continue;
            };
            m.count += 1;
            let _ = m.rules.push(i);
            for a in rule.actions.clone() {
                match &self.actions[a] {
                    Action::SetEnv { key, value } => {
                        let mut v = Value::new();
                        let cx = Expand {
                            rs: self,
                            ev,
                            m,
                            sysfs,
                            parent,
                        };
                        if !cx.expand(value, &mut v) {
                            m.limits_hit += 1;
                        }
                        // replace an earlier assignment of the same key
                        let pos = m.env.iter().position(|e| match &self.actions[e.action] {
                            Action::SetEnv { key: k, .. } => k == key,
                            _ => false,
                        });
                        match pos {
                            Some(p) => {
                                m.env[p] = EnvAssign {
                                    action: a,
                                    value: v,
                                }
                            }
                            None => {
                                if m.env
                                    .push(EnvAssign {
                                        action: a,
                                        value: v,
                                    })
                                    .is_err()
                                {
                                    m.limits_hit += 1;
                                }
                            }
                        }
                    }
                    Action::Run(_) | Action::Builtin { .. } | Action::WriteAttr { .. } => {
                        let w = Work {
                            rule: i,
                            action: a,
                            parent,
                        };
                        if m.work.push(w).is_err() {
                            m.limits_hit += 1;
                        }
                    }
                }
            }
            if rule.last_rule {
                break;
            }
            i = sel.next(rule.goto.unwrap_or(i + 1));
        }
    }

    /// `Some(parent)` if the rule matches, where `parent` is the devpath
    /// prefix length of the parent its walking terms matched (if any).
    fn rule_matches(
        &self,
        rule: &Rule,
        ev: &Uevent<'_>,
        usb: Option<&UsbView>,
        sysfs: &dyn Sysfs,
        m: &Matched,
    ) -> Option<Option<usize>> {
        let terms = &self.matches[rule.matches.clone()];
        let mut walk_from = terms.len();
        for (n, t) in terms.iter().enumerate() {
            if t.key.cost() == 2 {
                walk_from = n;
                break;
            }
            if self.term_matches(t, ev, usb, sysfs, m) == t.negate {
                return None;
            }
        }
        let walk = &terms[walk_from..];
        if walk.is_empty() {
            return Some(None);
        }
        let mut buf = [0u8; MAX_ATTR_LEN];
        for dev in ancestors(ev.devpath()) {
            let all = walk.iter().all(|t| {
                let hit = match &t.key {
                    MatchKey::Kernels => t
                        .glob
                        .matches(dev.rsplit('/').next().unwrap_or("").as_bytes()),
                    MatchKey::Subsystems => sysfs
                        .link(dev, "subsystem", &mut buf)
                        .is_some_and(|v| t.glob.matches(v)),
                    MatchKey::Drivers => sysfs
                        .link(dev, "driver", &mut buf)
                        .is_some_and(|v| t.glob.matches(v)),
                    MatchKey::Attrs(name) => match sysfs.attr(dev, name, &mut buf) {
                        Some(v) => attr_matches(t, v),
                        // unreadable: the term fails whatever the operator
                        None => return false,
                    },
                    _ => false,
                };
                hit != t.negate
            });
            if all {
                return Some(Some(dev.len()));
            }
        }
        None
    }

    /// Whether an event-only or ATTR term's value matches its pattern
    /// (before negation). An unreadable ATTR makes `!=` fail too: `!`
    /// applied to "no value" is still no match, as in udev.
    fn term_matches(
        &self,
        t: &Match,
        ev: &Uevent<'_>,
        usb: Option<&UsbView>,
        sysfs: &dyn Sysfs,
        m: &Matched,
    ) -> bool {
        let g = &t.glob;
        match &t.key {
            MatchKey::Action => g.matches(ev.action().as_bytes()),
            MatchKey::Subsystem => g.matches(ev.subsystem().unwrap_or("").as_bytes()),
            MatchKey::Devtype => g.matches(ev.get("DEVTYPE").unwrap_or(b"")),
            MatchKey::Devpath => g.matches(ev.devpath().as_bytes()),
            MatchKey::Kernel => g.matches(ev.kernel_name().as_bytes()),
            MatchKey::Driver => g.matches(ev.get("DRIVER").unwrap_or(b"")),
            MatchKey::Env(k) => g.matches(env_value(self, ev, m, k)),
            MatchKey::Usb(field) => {
                let mut s = heapless::String::<8>::new();
                let v = match usb {
                    Some(u) if u.field(field, &mut s) => s.as_bytes(),
                    _ => b"",
                };
                g.matches(v)
            }
            MatchKey::Attr(name) => {
                let mut buf = [0u8; MAX_ATTR_LEN];
                match sysfs.attr(ev.devpath(), name, &mut buf) {
                    Some(v) => attr_matches(t, v),
                    None => t.negate, // makes the caller's `== negate` test fail
                }
            }
            MatchKey::Attrs(_) | MatchKey::Kernels | MatchKey::Subsystems | MatchKey::Drivers => {
                false
            }
        }
    }

    /// The argv of a `RUN` work item, substituted (allocates: one `Vec` per
    /// argument). `None` if the work item is not a `RUN`.
    pub fn argv(
        &self,
        w: &Work,
        ev: &Uevent<'_>,
        m: &Matched,
        sysfs: &dyn Sysfs,
        limits_hit: &mut usize,
    ) -> Option<Vec<Vec<u8>>> {
        let words = match &self.actions[w.action] {
            Action::Run(c) => &c.argv,
            Action::Builtin { args, .. } => args,
            _ => return None,
        };
        let cx = Expand {
            rs: self,
            ev,
            m,
            sysfs,
            parent: w.parent,
        };
        Some(
            words
                .iter()
                .map(|t| {
                    let mut v = Value::new();
                    if !cx.expand(t, &mut v) {
                        *limits_hit += 1;
                    }
                    v.to_vec()
                })
                .collect(),
        )
    }

    /// The substituted value of an `ATTR{}=` work item: (attribute, value).
    /// A value longer than `MAX_SUBST_LEN` is cut there (and still written,
    /// as a `RUN` argument is still passed) and counted in `limits_hit`, for
    /// the caller to log, as [`RuleSet::argv`] does. `None` if the work item
    /// is not an `ATTR{}=`.
    pub fn attr_write(
        &self,
        w: &Work,
        ev: &Uevent<'_>,
        m: &Matched,
        sysfs: &dyn Sysfs,
        limits_hit: &mut usize,
    ) -> Option<(String, Vec<u8>)> {
        let Action::WriteAttr { name, value } = &self.actions[w.action] else {
            return None;
        };
        let cx = Expand {
            rs: self,
            ev,
            m,
            sysfs,
            parent: w.parent,
        };
        let mut v = Value::new();
        if !cx.expand(value, &mut v) {
            *limits_hit += 1;
        }
        Some((name.to_string(), v.to_vec()))
    }

    /// The environment a handler sees: the event's fields (a repeated key
    /// once, with its last value) in wire order, then the `ENV{}`
    /// assignments of matching rules (replacing event fields of the same
    /// name). Allocates.
    pub fn env(&self, ev: &Uevent<'_>, m: &Matched) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = Vec::with_capacity(ev.fields().len() + m.env.len());
        for f in ev.fields() {
            match out.iter_mut().find(|(k, _)| k == f.key) {
                Some(e) => e.1 = f.value.to_vec(),
                None => out.push((f.key.to_string(), f.value.to_vec())),
            }
        }
        for e in &m.env {
            if let Action::SetEnv { key, .. } = &self.actions[e.action] {
                if subst::is_private(key) {
                    continue;
                }
                match out.iter_mut().find(|(k, _)| k == key.as_ref()) {
                    Some(x) => x.1 = e.value.to_vec(),
                    None => out.push((key.to_string(), e.value.to_vec())),
                }
            }
        }
        out
    }

    /// The `ENV{}` assignments collected, as (key, value), for dry runs and
    /// the handler's event; private ones (`ENV{.NAME}`) are left out.
    pub fn env_assignments<'a>(
        &'a self,
        m: &'a Matched,
    ) -> impl Iterator<Item = (&'a str, &'a [u8])> {
        m.env
            .iter()
            .filter_map(move |e| match &self.actions[e.action] {
                Action::SetEnv { key, .. } if !subst::is_private(key) => {
                    Some((key.as_ref(), &e.value[..]))
                }
                _ => None,
            })
    }
}

/// `file:line`.
pub struct RuleLocation<'a> {
    /// The file.
    pub file: &'a str,
    /// The line.
    pub line: usize,
}

impl fmt::Display for RuleLocation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// An `ENV{key}` value: the last assignment by a matching rule, else the
/// event's field, else empty.
fn env_value<'a>(rs: &RuleSet, ev: &Uevent<'a>, m: &'a Matched, key: &str) -> &'a [u8] {
    for e in m.env.iter().rev() {
        if let Action::SetEnv { key: k, .. } = &rs.actions[e.action] {
            if k.as_ref() == key {
                return &e.value;
            }
        }
    }
    ev.get(key).unwrap_or(b"")
}

/// What substitution reads.
struct Expand<'a, 'e> {
    rs: &'a RuleSet,
    ev: &'a Uevent<'e>,
    m: &'a Matched,
    sysfs: &'a dyn Sysfs,
    parent: Option<usize>,
}

impl Expand<'_, '_> {
    /// Expands `t` into `out`; false if the result was cut at the capacity.
    fn expand(&self, t: &Template, out: &mut Value) -> bool {
        out.clear();
        let mut ok = true;
        let mut put = |out: &mut Value, b: &[u8]| {
            let room = out.capacity() - out.len();
            let n = b.len().min(room);
            let _ = out.extend_from_slice(&b[..n]);
            ok &= n == b.len();
        };
        for p in &t.0 {
            match p {
                Piece::Lit(l) => put(out, l),
                Piece::Kernel => put(out, self.ev.kernel_name().as_bytes()),
                Piece::Number => put(out, kernel_number(self.ev.kernel_name()).as_bytes()),
                Piece::Devpath => put(out, self.ev.devpath().as_bytes()),
                Piece::Devnode => {
                    if let Some(n) = self.ev.get("DEVNAME") {
                        if !n.starts_with(b"/") {
                            put(out, b"/dev/");
                        }
                        put(out, n);
                    }
                }
                Piece::Env(k) => put(out, env_value(self.rs, self.ev, self.m, k)),
                Piece::Attr(name) => {
                    let mut buf = [0u8; MAX_ATTR_LEN];
                    let dev = self.ev.devpath();
                    if let Some(v) = self.sysfs.attr(dev, name, &mut buf) {
                        put(out, trim_end_ws(v));
                    } else if let Some(v) = self
                        .parent
                        // udev: fall back to the parent a walking term selected
                        .and_then(|pl| self.sysfs.attr(&dev[..pl], name, &mut buf))
                    {
                        put(out, trim_end_ws(v));
                    }
                }
            }
        }
        ok
    }
}

impl MatchKey {
    /// The key as written in a rule.
    pub fn name(&self) -> String {
        match self {
            MatchKey::Action => "ACTION".into(),
            MatchKey::Subsystem => "SUBSYSTEM".into(),
            MatchKey::Devtype => "DEVTYPE".into(),
            MatchKey::Devpath => "DEVPATH".into(),
            MatchKey::Kernel => "KERNEL".into(),
            MatchKey::Driver => "DRIVER".into(),
            MatchKey::Env(k) => format!("ENV{{{k}}}"),
            MatchKey::Usb(f) => format!("USB{{{f}}}"),
            MatchKey::Attr(a) => format!("ATTR{{{a}}}"),
            MatchKey::Attrs(a) => format!("ATTRS{{{a}}}"),
            MatchKey::Kernels => "KERNELS".into(),
            MatchKey::Subsystems => "SUBSYSTEMS".into(),
            MatchKey::Drivers => "DRIVERS".into(),
        }
    }
}

/// A template as rule text (`$` and `%` doubled in literals).
/// `short`: every substitution in udev's fixed-width form (`%k`, `%E{X}`),
/// never longer than what was parsed, so the rendered value stays within
/// `MAX_VALUE_LEN` (the fuzzer found `%n` x 150 rendering past it).
fn render_template(t: &Template, out: &mut String, short: bool) {
    for (i, p) in t.0.iter().enumerate() {
        // `$kernel` followed by a letter, digit or `_` would read as a
        // longer (unknown) name: then the fixed-width udev form (`%k`) is
        // the one that parses back the same (a fuzzer found `%ptd`).
        let glued = short
            || matches!(t.0.get(i + 1), Some(Piece::Lit(l))
            if l.first().is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_'));
        let named = |long: &str, short: &str| {
            if glued {
                short.to_string()
            } else {
                long.to_string()
            }
        };
        match p {
            Piece::Lit(l) => {
                for c in String::from_utf8_lossy(l).chars() {
                    match c {
                        '$' => out.push_str("$$"),
                        '%' => out.push_str("%%"),
                        c => out.push(c),
                    }
                }
            }
            Piece::Kernel => out.push_str(&named("$kernel", "%k")),
            Piece::Number => out.push_str(&named("$number", "%n")),
            Piece::Devpath => out.push_str(&named("$devpath", "%p")),
            Piece::Devnode => out.push_str(&named("$devnode", "%N")),
            Piece::Env(k) => {
                out.push_str(if short { "%E{" } else { "$env{" });
                out.push_str(k);
                out.push('}');
            }
            Piece::Attr(a) => {
                out.push_str(if short { "%s{" } else { "$attr{" });
                out.push_str(a);
                out.push('}');
            }
        }
    }
}

/// RUN words: a word with a space or tab, or an empty word, in `'...'`.
fn render_words(words: &[Template], out: &mut String, short: bool) {
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let mut s = String::new();
        render_template(w, &mut s, short);
        if s.is_empty() || s.contains([' ', '\t']) {
            out.push('\'');
            out.push_str(&s);
            out.push('\'');
        } else {
            out.push_str(&s);
        }
    }
}

impl RuleSet {
    /// The rules of file `file` as canonical rule text, one rule per line:
    /// what they mean, without comments or layout. Parsing the result gives
    /// the same rules (tests and the fuzzer check this round trip).
    pub fn render_file(&self, file: usize) -> String {
        let mut out = String::new();
        for r in self.rules.iter().filter(|r| r.file == file) {
            let mut terms: Vec<String> = Vec::new();
            if let Some(l) = &r.label_name {
                terms.push(format!("LABEL=\"{l}\""));
            }
            for m in &self.matches[r.matches.clone()] {
                let op = if m.negate { "!=" } else { "==" };
                terms.push(format!(
                    "{}{op}\"{}\"",
                    m.key.name(),
                    String::from_utf8_lossy(&m.pattern)
                ));
            }
            for a in &self.actions[r.actions.clone()] {
                let value = |short: bool| {
                    let mut v = String::new();
                    match a {
                        Action::Run(c) => render_words(&c.argv, &mut v, short),
                        Action::Builtin { name, args, .. } => {
                            v.push_str(name);
                            if !args.is_empty() {
                                v.push(' ');
                                render_words(args, &mut v, short);
                            }
                        }
                        Action::SetEnv { value, .. } | Action::WriteAttr { value, .. } => {
                            render_template(value, &mut v, short)
                        }
                    }
                    v
                };
                let mut v = value(false);
                if v.len() > crate::limits::MAX_VALUE_LEN {
                    v = value(true);
                }
                let mut s = match a {
                    Action::Run(_) => "RUN+=\"".to_string(),
                    Action::Builtin { .. } => "RUN{builtin}+=\"".to_string(),
                    Action::SetEnv { key, .. } => format!("ENV{{{key}}}=\""),
                    Action::WriteAttr { name, .. } => format!("ATTR{{{name}}}=\""),
                };
                s.push_str(&v);
                s.push('"');
                terms.push(s);
            }
            if r.last_rule {
                terms.push("OPTIONS+=\"last_rule\"".into());
            }
            if let Some(g) = &r.goto_name {
                terms.push(format!("GOTO=\"{g}\""));
            }
            out.push_str(&terms.join(", "));
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `ATTR{}=` value longer than `MAX_SUBST_LEN` after substitution is
    /// cut, and the cut is counted (issue 12: it used to be silent).
    #[test]
    fn a_long_attr_write_value_is_cut_and_counted() {
        let src = parse::Source {
            name: "t.rules".into(),
            text: "SUBSYSTEM==\"tty\", ATTR{power/control}=\"$env{LONG}$env{LONG}\"\n\
                   SUBSYSTEM==\"tty\", ATTR{power/wakeup}=\"$env{LONG}\"\n"
                .into(),
        };
        let rs = parse::compile(&[src], &[]).expect("loads");
        let long = "x".repeat(MAX_SUBST_LEN / 2 + 100);
        let raw = format!(
            "change@/devices/virtual/tty/tty1\0ACTION=change\0DEVPATH=/devices/virtual/tty/tty1\0SUBSYSTEM=tty\0SEQNUM=1\0LONG={long}\0"
        );
        let ev = Uevent::parse(raw.as_bytes()).expect("event");
        let mut m = Matched::default();
        rs.evaluate(&ev, &NoSysfs, &mut m);
        assert_eq!(m.work.len(), 2);

        let mut hit = 0;
        let (name, value) = rs
            .attr_write(&m.work[0], &ev, &m, &NoSysfs, &mut hit)
            .expect("an ATTR{} write");
        assert_eq!(name, "power/control");
        assert_eq!(value.len(), MAX_SUBST_LEN, "cut at the limit");
        assert_eq!(hit, 1, "the cut is counted");

        // a value that fits is not counted
        let (_, value) = rs
            .attr_write(&m.work[1], &ev, &m, &NoSysfs, &mut hit)
            .expect("an ATTR{} write");
        assert_eq!(value, long.as_bytes());
        assert_eq!(hit, 1);
    }
}
