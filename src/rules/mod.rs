//! Rules: udev's language, compiled once into tables, matched many times
//! without allocating.
//!
//! - [`parse`] turns rule files into a [`RuleSet`] or a list of
//!   [`Diagnostic`]s (`file:line:column: message`, the line, a caret). Lines
//!   udev would skip are skipped ([`RuleSet::errors`]); a refused load
//!   changes nothing: the caller keeps the old set.
//! - [`RuleSet::evaluate`] runs one event through the rules into a reusable
//!   [`Matched`] (fixed capacity; no allocation). Terms that need sysfs
//!   (`ATTR`, then the parent walk of `ATTRS`/`KERNELS`/`SUBSYSTEMS`/
//!   `DRIVERS`) are evaluated only after the rule's event-only terms
//!   matched, and `IMPORT{builtin}` after all of them (as udev orders
//!   them); a failing import makes the rule not match. The builtin itself
//!   (`crate::identity`) allocates; what it returns is copied into fixed
//!   room. `OWNER`/`GROUP`/`MODE`/`SYMLINK`/`TAG` results go to
//!   [`Matched::node`] ([`NodeAssign`]) for the device node code.
//! - The handler's argv and environment are handed out word by word
//!   ([`RuleSet::words_each`], [`RuleSet::env_each`]) without allocating;
//!   [`RuleSet::argv`] and [`RuleSet::env`] collect them for tools and tests.
//!
//! sysfs is reached only through the [`Sysfs`] trait, so this module stays
//! free of I/O; `sys::sysfs` implements it for a real (or fixture) tree.

pub mod glob;
pub mod index;
pub mod lint;
pub mod parse;
pub mod subst;
pub mod trace;

use core::fmt;
use core::ops::Range;

use crate::limits::{
    MAX_ATTR_LEN, MAX_ENV_ASSIGN, MAX_IMPORTED, MAX_IMPORTED_LEN, MAX_LINKS, MAX_LINK_LEN,
    MAX_PARENT_DEPTH, MAX_RUN_PER_EVENT, MAX_SUBST_LEN, MAX_TAGS, MAX_TAG_LEN,
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
    /// `IMPORT{builtin}="name"`: runs the identity builtin `name`
    /// (`usb_id`, `path_id`: [`crate::identity::run_builtin`]) on the
    /// device at `devpath`; `None` if it fails (then, as in udev, the rule
    /// does not match). `id_bus_set`: the event already has `ID_BUS`. The
    /// builtin allocates (only for the rules that import); the caller
    /// copies its result into fixed room. Default: no builtins.
    fn builtin(
        &self,
        _name: &str,
        _devpath: &str,
        _id_bus_set: bool,
    ) -> Option<crate::identity::Properties> {
        None
    }
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
    /// `TAG`, `TAGS`: a tag an earlier rule set for this event (udev 252:
    /// true if any current tag matches)
    Tag,
    /// `SYMLINK`: a link an earlier rule set for this event (true if any
    /// matches)
    Symlink,
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
    /// `RUN{service}+=`: a long-running program bound to the device
    /// (started after the device's `add` work, restarted, stopped on
    /// `remove`; see [`crate::services`]), not a handler of the event.
    pub service: bool,
}

/// What an assignment operator does (udev's `=`, `+=`, `-=`, `:=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssignOp {
    /// `=`: replaces (for lists: clears, then adds).
    Assign,
    /// `+=`: adds to a list.
    Add,
    /// `-=`: removes from a list.
    Remove,
    /// `:=`: as `=`, and final: later rules cannot change it.
    Final,
}

impl AssignOp {
    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            AssignOp::Assign => "=",
            AssignOp::Add => "+=",
            AssignOp::Remove => "-=",
            AssignOp::Final => ":=",
        }
    }
}

/// Which device node property an `OWNER`/`GROUP`/`MODE` assignment sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeKey {
    /// `OWNER`: a uid.
    Owner,
    /// `GROUP`: a gid.
    Group,
    /// `MODE`: permission bits.
    Mode,
}

impl NodeKey {
    fn bit(self) -> u8 {
        match self {
            NodeKey::Owner => 1,
            NodeKey::Group => 2,
            NodeKey::Mode => 4,
        }
    }
}

/// udev's `OPTIONS+="string_escape=..."`: how `SYMLINK` values are escaped
/// (event state: it holds for the rest of the event's rules).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Escape {
    /// Not set: whitespace from substitutions becomes `_`, characters not
    /// allowed in a device name become `_`, spaces separate links.
    #[default]
    Unset,
    /// `string_escape=none`: nothing is replaced.
    None,
    /// `string_escape=replace`: as unset, and spaces become `_` too, so
    /// the value is one link.
    Replace,
}

/// One assignment, in rule order.
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
    /// `ENV{KEY}="value"` (an empty value removes `KEY`, as udev);
    /// `ENV{KEY}+="value"` appends, after a space if `KEY` has a value.
    SetEnv {
        /// The variable.
        key: Box<str>,
        /// Its new value.
        value: Template,
        /// `+=`
        append: bool,
    },
    /// `ATTR{file}="value"`: written to sysfs when the event's work runs.
    WriteAttr {
        /// The attribute, relative to the device.
        name: Box<str>,
        /// What to write.
        value: Template,
    },
    /// `OWNER`, `GROUP`, `MODE` (`=`, or `:=` final), resolved at load.
    Node {
        /// Which one.
        key: NodeKey,
        /// uid, gid or mode bits.
        value: u32,
        /// `:=`
        fixed: bool,
    },
    /// `SYMLINK` (`+=`, `=`, `:=`): space-separated links below `/dev`.
    Symlink {
        /// The operator.
        op: AssignOp,
        /// The links, before substitution and escaping.
        value: Template,
    },
    /// `TAG` (`+=`, `-=`, `=`).
    Tag {
        /// The operator (`:=` is loaded as `=`).
        op: AssignOp,
        /// The tag (`[A-Za-z0-9_-]`).
        name: Box<str>,
    },
    /// `OPTIONS+="link_priority=N"`
    LinkPriority(i32),
    /// `OPTIONS+="string_escape=none|replace"`
    StringEscape(Escape),
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
    /// `IMPORT{builtin}="name"` terms: run after every match term matched;
    /// one that fails makes the rule not match (as in udev).
    pub imports: Vec<Box<str>>,
    /// An `IMPORT` hotplugd cannot do (`IMPORT{program|file|cmdline|db|
    /// parent}`, a builtin it lacks), as written: as a failing import in
    /// udev, the rule never matches; a load warning says so.
    pub import_fails: Option<Box<str>>,
    /// `GOTO`: index of the rule to continue with.
    pub goto: Option<usize>,
    /// `GOTO`: the label's name.
    pub goto_name: Option<Box<str>>,
    /// A `GOTO` that was dropped (no such `LABEL` after it, as udev drops
    /// it): kept only so the rule renders as written.
    pub goto_dropped: Option<Box<str>>,
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
    /// Errors udev also reports and loads past: a line skipped (as udev
    /// skips it), or a term ignored (an unknown user or group, as udev
    /// ignores it); the rest loaded. `check` exits 1 on any; `run` logs
    /// them and runs.
    pub errors: Vec<Diagnostic>,
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

/// An `ENV{}` value a rule set: `seq` orders it against imported ones.
#[derive(Clone, Debug)]
struct EnvAssign {
    action: usize,
    value: Value,
    seq: u32,
}

/// A property `IMPORT{builtin}` set.
#[derive(Clone, Debug)]
struct Imported {
    key: &'static str,
    value: heapless::Vec<u8, MAX_IMPORTED_LEN>,
    seq: u32,
}

/// `DEVLINKS` (`/dev/a /dev/b`) for every link of [`MAX_LINKS`].
const DEVLINKS_LEN: usize = MAX_LINKS * (MAX_LINK_LEN + 6);
/// `TAGS` (`:a:b:`) for every tag of [`MAX_TAGS`].
const TAGS_LEN: usize = MAX_TAGS * (MAX_TAG_LEN + 1) + 1;

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
    imported: heapless::Vec<Imported, MAX_IMPORTED>,
    seq: u32,
    /// `:=` seen: bits of [`NodeKey`], and 8 for `SYMLINK`.
    fixed: u8,
    esc: Escape,
    /// Work items, `ENV{}` assignments, imported properties, links and
    /// tags dropped at the per-event limits, and values cut at
    /// `MAX_SUBST_LEN`/`MAX_IMPORTED_LEN`. Logged and counted by the caller.
    pub limits_hit: usize,
    /// Device node permissions, links and tags (issue 13).
    pub node: NodeAssign,
    /// `DEVLINKS` as udev exports it (`/dev/a /dev/b`), empty without links.
    devlinks: heapless::Vec<u8, DEVLINKS_LEN>,
    /// Every tag this event's rules added, removed or not (udev's `TAGS`;
    /// `CURRENT_TAGS` is [`NodeAssign::tags`]).
    all_tags: heapless::Vec<heapless::String<MAX_TAG_LEN>, MAX_TAGS>,
    /// `TAGS` as udev exports it (`:a:b:`), empty without tags.
    tags: heapless::Vec<u8, TAGS_LEN>,
    /// `CURRENT_TAGS` as udev exports it (`:a:b:`), empty without tags.
    current_tags: heapless::Vec<u8, TAGS_LEN>,
}

impl Matched {
    /// Empties it for the next event.
    pub fn clear(&mut self) {
        self.count = 0;
        self.rules.clear();
        self.work.clear();
        self.env.clear();
        self.imported.clear();
        self.seq = 0;
        self.fixed = 0;
        self.esc = Escape::Unset;
        self.limits_hit = 0;
        self.node.clear();
        self.devlinks.clear();
        self.all_tags.clear();
        self.tags.clear();
        self.current_tags.clear();
    }

    fn next_seq(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }

    /// What udev exports besides the properties: `DEVLINKS`, `TAGS` (every
    /// tag added, even one a later `TAG-=` removed) and `CURRENT_TAGS` (the
    /// tags in force), each only when not empty.
    pub fn exported<'a>(&'a self) -> impl Iterator<Item = (&'static str, &'a [u8])> + 'a {
        let links = (!self.devlinks.is_empty()).then_some(("DEVLINKS", &self.devlinks[..]));
        let tags = (!self.tags.is_empty()).then_some(("TAGS", &self.tags[..]));
        let current =
            (!self.current_tags.is_empty()).then_some(("CURRENT_TAGS", &self.current_tags[..]));
        links.into_iter().chain(tags).chain(current)
    }

    /// True if there is work (processes to run, attributes to write).
    pub fn has_work(&self) -> bool {
        !self.work.is_empty()
    }
}

/// [`Matched::fixed`]: a `SYMLINK:=` was applied.
const LINKS_FIXED: u8 = 8;

/// Adds one link (relative to `/dev`) unless it is there already. A link
/// that is too long or would leave `/dev` (`..`, an empty name) is not
/// made and counted in `limits_hit`.
fn add_link(m: &mut Matched, word: &[u8]) {
    let w = word.strip_prefix(b"/").unwrap_or(word);
    let bad = w.is_empty()
        || w.split(|&b| b == b'/')
            .any(|c| c == b".." || c == b"." || c.is_empty());
    let Ok(s) = core::str::from_utf8(w) else {
        m.limits_hit += 1;
        return;
    };
    if bad || s.len() > MAX_LINK_LEN {
        m.limits_hit += 1;
        return;
    }
    if m.node.links.iter().any(|l| l.as_str() == s) {
        return;
    }
    let mut l = heapless::String::new();
    let _ = l.push_str(s);
    if m.node.links.push(l).is_err() {
        m.limits_hit += 1;
    }
}

/// Fills `DEVLINKS` and `TAGS` from the links and tags (they fit: the
/// buffers hold every link and tag the limits allow).
fn export(m: &mut Matched) {
    for l in &m.node.links {
        if !m.devlinks.is_empty() {
            let _ = m.devlinks.push(b' ');
        }
        let _ = m.devlinks.extend_from_slice(b"/dev/");
        let _ = m.devlinks.extend_from_slice(l.as_bytes());
    }
    for (list, out) in [
        (&m.all_tags, &mut m.tags),
        (&m.node.tags, &mut m.current_tags),
    ] {
        for t in list {
            if out.is_empty() {
                let _ = out.push(b':');
            }
            let _ = out.extend_from_slice(t.as_bytes());
            let _ = out.push(b':');
        }
    }
}

/// A kernel name as udev compares it: `!` (the kernel's stand-in for `/`
/// in names such as `cciss!c0d0`) turned back into `/`. Without `!` (or
/// too long for the buffer) the name as it is.
fn sysname<'b>(name: &'b str, buf: &'b mut [u8; 256]) -> &'b [u8] {
    if !name.contains('!') || name.len() > buf.len() {
        return name.as_bytes();
    }
    for (d, s) in buf.iter_mut().zip(name.bytes()) {
        *d = if s == b'!' { b'/' } else { s };
    }
    &buf[..name.len()]
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

pub(crate) fn trim_end_ws(v: &[u8]) -> &[u8] {
    let n = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &v[..n]
}

/// Compares an attribute value as udev does: trailing whitespace is
/// ignored unless the pattern itself ends in whitespace.
pub(crate) fn attr_matches(t: &Match, value: &[u8]) -> bool {
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

    /// Files with skipped lines and not one rule (or label) loaded: files
    /// that do not parse at all (a half-written or binary file). A reload
    /// (SIGHUP) that finds one keeps the old rules.
    pub fn unparsed_files(&self) -> Vec<&str> {
        self.files
            .iter()
            .enumerate()
            .filter(|(i, f)| {
                self.errors.iter().any(|d| d.file == **f)
                    && !self.rules.iter().any(|r| r.file == *i)
            })
            .map(|(_, f)| f.as_str())
            .collect()
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
    /// work (a handler, an attribute write, or the device node's owner,
    /// group, mode, links or tags, which the device table must remember
    /// for the `remove`) has no `SUBSYSTEM==` literal terms (it could match
    /// any).
    pub fn subsystems(&self) -> Option<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        for r in self.rules.iter().filter(|r| !r.label) {
            if !self.actions[r.actions.clone()].iter().any(|a| {
                matches!(
                    a,
                    Action::Run(_)
                        | Action::Builtin { .. }
                        | Action::WriteAttr { .. }
                        | Action::Node { .. }
                        | Action::Symlink { .. }
                        | Action::Tag { .. }
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
        let index = self.index();
        let mut sel = index.select(ev, usb.as_ref());
        if sel.wants_chain(index) {
            if let Some(found) = index::chain_vendors(ev.devpath(), sysfs) {
                index.narrow(&mut sel, &found);
            }
        }
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
            if rule.import_fails.is_some() || !self.import(rule, ev, sysfs, m) {
                i = sel.next(i + 1);
                continue;
            }
            m.count += 1;
            let _ = m.rules.push(i);
            for a in rule.actions.clone() {
                self.assign(i, a, parent, ev, sysfs, m);
            }
            if rule.last_rule {
                break;
            }
            i = sel.next(rule.goto.unwrap_or(i + 1));
        }
        export(m);
    }

    /// Runs the rule's `IMPORT{builtin}` terms; false if one failed.
    fn import(&self, rule: &Rule, ev: &Uevent<'_>, sysfs: &dyn Sysfs, m: &mut Matched) -> bool {
        for name in &rule.imports {
            let id_bus_set = !env_value(self, ev, m, "ID_BUS").is_empty();
            let Some(props) = sysfs.builtin(name, ev.devpath(), id_bus_set) else {
                return false;
            };
            for (key, value) in props.iter() {
                let seq = m.next_seq();
                let mut v = heapless::Vec::new();
                let n = value.len().min(MAX_IMPORTED_LEN);
                let _ = v.extend_from_slice(&value[..n]);
                if n < value.len() {
                    m.limits_hit += 1;
                }
                let e = Imported { key, value: v, seq };
                match m.imported.iter_mut().find(|x| x.key == key) {
                    Some(x) => *x = e,
                    None => {
                        if m.imported.push(e).is_err() {
                            m.limits_hit += 1;
                        }
                    }
                }
            }
        }
        true
    }

    /// Applies assignment `a` of matching rule `rule`.
    fn assign(
        &self,
        rule: usize,
        a: usize,
        parent: Option<usize>,
        ev: &Uevent<'_>,
        sysfs: &dyn Sysfs,
        m: &mut Matched,
    ) {
        match &self.actions[a] {
            Action::SetEnv { key, value, append } => {
                let mut v = Value::new();
                if *append {
                    let cur = env_value(self, ev, m, key);
                    if !cur.is_empty() {
                        let _ = v.extend_from_slice(cur);
                        let _ = v.push(b' ');
                    }
                }
                let mut tail = Value::new();
                let cx = Expand {
                    rs: self,
                    ev,
                    m,
                    sysfs,
                    parent,
                };
                let mut ok = cx.expand(value, &mut tail, false);
                let room = v.capacity() - v.len();
                ok &= tail.len() <= room;
                let _ = v.extend_from_slice(&tail[..tail.len().min(room)]);
                if !ok {
                    m.limits_hit += 1;
                }
                let seq = m.next_seq();
                // replace an earlier assignment of the same key
                let pos = m.env.iter().position(|e| match &self.actions[e.action] {
                    Action::SetEnv { key: k, .. } => k == key,
                    _ => false,
                });
                let e = EnvAssign {
                    action: a,
                    value: v,
                    seq,
                };
                match pos {
                    Some(p) => m.env[p] = e,
                    None => {
                        if m.env.push(e).is_err() {
                            m.limits_hit += 1;
                        }
                    }
                }
            }
            Action::Run(_) | Action::Builtin { .. } | Action::WriteAttr { .. } => {
                let w = Work {
                    rule,
                    action: a,
                    parent,
                };
                if m.work.push(w).is_err() {
                    m.limits_hit += 1;
                }
            }
            Action::Node { key, value, fixed } => {
                if m.fixed & key.bit() != 0 {
                    return;
                }
                if *fixed {
                    m.fixed |= key.bit();
                }
                let slot = match key {
                    NodeKey::Owner => &mut m.node.uid,
                    NodeKey::Group => &mut m.node.gid,
                    NodeKey::Mode => &mut m.node.mode,
                };
                *slot = Some(*value);
            }
            Action::Symlink { op, value } => {
                // udev: only a device with a node gets links; `:=` ends changes
                if m.fixed & LINKS_FIXED != 0 || ev.get("MAJOR").is_none() {
                    return;
                }
                if *op == AssignOp::Final {
                    m.fixed |= LINKS_FIXED;
                }
                if matches!(op, AssignOp::Assign | AssignOp::Final) {
                    m.node.links.clear();
                }
                let mut v = Value::new();
                let cx = Expand {
                    rs: self,
                    ev,
                    m,
                    sysfs,
                    parent,
                };
                let esc = m.esc;
                if !cx.expand(value, &mut v, esc != Escape::None) {
                    // a cut value would name a wrong link: none is made
                    m.limits_hit += 1;
                    return;
                }
                match esc {
                    Escape::Unset => subst::replace_chars(&mut v, true),
                    Escape::Replace => subst::replace_chars(&mut v, false),
                    Escape::None => 0,
                };
                for word in v
                    .split(|b| b.is_ascii_whitespace())
                    .filter(|w| !w.is_empty())
                {
                    add_link(m, word);
                }
            }
            Action::Tag { op, name } => match op {
                AssignOp::Remove => m.node.tags.retain(|t| t.as_str() != name.as_ref()),
                _ => {
                    if *op != AssignOp::Add {
                        // udev: `TAG=` clears every tag (TAGS too); `TAG-=`
                        // only the current ones
                        m.node.tags.clear();
                        m.all_tags.clear();
                    }
                    if m.node.tags.iter().any(|t| t.as_str() == name.as_ref()) {
                        return;
                    }
                    let mut t = heapless::String::new();
                    // the loader keeps names within MAX_TAG_LEN
                    let _ = t.push_str(name);
                    if !m.all_tags.iter().any(|x| x == &t) {
                        let _ = m.all_tags.push(t.clone());
                    }
                    if m.node.tags.push(t).is_err() {
                        m.limits_hit += 1;
                    }
                }
            },
            Action::LinkPriority(p) => m.node.link_priority = *p,
            Action::StringEscape(e) => m.esc = *e,
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
            let all = walk
                .iter()
                .all(|t| parent_term_holds(t, sysfs, dev, &mut buf));
            if all {
                return Some(Some(dev.len()));
            }
        }
        None
    }

    /// Whether an event-only or ATTR term's value matches its pattern
    /// (before negation). An unreadable ATTR makes `!=` fail too: `!`
    /// applied to "no value" is still no match, as in udev.
    pub(crate) fn term_matches(
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
            MatchKey::Kernel => g.matches(sysname(ev.kernel_name(), &mut [0; 256])),
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
            MatchKey::Tag => m.node.tags.iter().any(|t| g.matches(t.as_bytes())),
            MatchKey::Symlink => m.node.links.iter().any(|l| g.matches(l.as_bytes())),
            MatchKey::Attrs(_) | MatchKey::Kernels | MatchKey::Subsystems | MatchKey::Drivers => {
                false
            }
        }
    }

    /// The argv of a `RUN` (or a builtin's arguments), substituted, as
    /// [`RuleSet::words_each`] gives it (allocates: for tools and tests).
    /// `None` if the work item is neither.
    pub fn argv(
        &self,
        w: &Work,
        ev: &Uevent<'_>,
        m: &Matched,
        sysfs: &dyn Sysfs,
        limits_hit: &mut usize,
    ) -> Option<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        self.words_each(w, ev, m, sysfs, limits_hit, &mut |a| out.push(a.to_vec()))
            .then_some(out)
    }

    /// The substituted value of an `ATTR{}=` work item: (attribute, value),
    /// as [`RuleSet::attr_each`] gives it (allocates: for tools and tests).
    /// A value longer than `MAX_SUBST_LEN` is cut there (and still written,
    /// as a `RUN` argument is still passed) and counted in `limits_hit`.
    /// `None` if the work item is not an `ATTR{}=`.
    pub fn attr_write(
        &self,
        w: &Work,
        ev: &Uevent<'_>,
        m: &Matched,
        sysfs: &dyn Sysfs,
        limits_hit: &mut usize,
    ) -> Option<(String, Vec<u8>)> {
        let mut out = None;
        self.attr_each(w, ev, m, sysfs, limits_hit, &mut |n, v| {
            out = Some((n.to_string(), v.to_vec()))
        });
        out
    }

    /// The substituted words of a `RUN` or builtin work item, each handed
    /// to `out` (no allocation). False if the work item is neither.
    /// Values cut at `MAX_SUBST_LEN` are counted in `limits_hit`.
    pub fn words_each(
        &self,
        w: &Work,
        ev: &Uevent<'_>,
        m: &Matched,
        sysfs: &dyn Sysfs,
        limits_hit: &mut usize,
        out: &mut dyn FnMut(&[u8]),
    ) -> bool {
        let words = match &self.actions[w.action] {
            Action::Run(c) => &c.argv,
            Action::Builtin { args, .. } => args,
            _ => return false,
        };
        let cx = Expand {
            rs: self,
            ev,
            m,
            sysfs,
            parent: w.parent,
        };
        let mut v = Value::new();
        for t in words {
            v.clear();
            if !cx.expand(t, &mut v, false) {
                *limits_hit += 1;
            }
            out(&v);
        }
        true
    }

    /// The substituted value of an `ATTR{}=` work item, handed to `out`
    /// with the attribute's name (no allocation); as [`RuleSet::attr_write`].
    /// False if the work item is not an `ATTR{}=`.
    pub fn attr_each(
        &self,
        w: &Work,
        ev: &Uevent<'_>,
        m: &Matched,
        sysfs: &dyn Sysfs,
        limits_hit: &mut usize,
        out: &mut dyn FnMut(&str, &[u8]),
    ) -> bool {
        let Action::WriteAttr { name, value } = &self.actions[w.action] else {
            return false;
        };
        let cx = Expand {
            rs: self,
            ev,
            m,
            sysfs,
            parent: w.parent,
        };
        let mut v = Value::new();
        if !cx.expand(value, &mut v, false) {
            *limits_hit += 1;
        }
        out(name, &v);
        true
    }

    /// The environment a handler sees, as [`RuleSet::env_each`] gives it
    /// (allocates: for tools and tests).
    pub fn env(&self, ev: &Uevent<'_>, m: &Matched) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::with_capacity(ev.fields().len() + m.env.len() + m.imported.len() + 3);
        self.env_each(ev, m, &mut |k, v| {
            out.push((String::from_utf8_lossy(k).into_owned(), v.to_vec()))
        });
        out
    }

    /// The handler environment, each (key, value) handed to `out`, without
    /// allocating: the event's fields in wire order (a key the event
    /// repeats once, at its first place, with its last value), a property
    /// the rules set (`ENV{}`) or imported (`IMPORT{builtin}`) replacing a
    /// field of the same name in place (the later of the two wins; an empty
    /// value, `ENV{KEY}=""`, removes it); then the new properties, `ENV{}`
    /// ones in the order first assigned, then imported ones; then
    /// `DEVLINKS`, `TAGS` and `CURRENT_TAGS` when there are links or tags.
    /// Private properties (`ENV{.NAME}`) are left out.
    pub fn env_each(&self, ev: &Uevent<'_>, m: &Matched, out: &mut dyn FnMut(&[u8], &[u8])) {
        let fields = ev.fields();
        for (i, f) in fields.iter().enumerate() {
            if fields[..i].iter().any(|g| g.key == f.key) {
                continue;
            }
            let value = match property(self, m, f.key) {
                Some([]) => continue, // removed
                Some(v) => v,
                None => fields[i..]
                    .iter()
                    .rev()
                    .find(|g| g.key == f.key)
                    .map_or(f.value, |g| g.value),
            };
            out(f.key.as_bytes(), value);
        }
        let in_event = |key: &str| fields.iter().any(|f| f.key == key);
        let set_by_env = |key: &str| {
            m.env.iter().any(
                |e| matches!(&self.actions[e.action], Action::SetEnv { key: k, .. } if k.as_ref() == key),
            )
        };
        for (i, e) in m.env.iter().enumerate() {
            let Action::SetEnv { key, .. } = &self.actions[e.action] else {
                continue;
            };
            if in_event(key)
                || m.env[..i].iter().any(|p| {
                    matches!(&self.actions[p.action], Action::SetEnv { key: k, .. } if k == key)
                })
            {
                continue;
            }
            match property(self, m, key) {
                Some(v) if !v.is_empty() => out(key.as_bytes(), v),
                _ => {}
            }
        }
        for e in &m.imported {
            if in_event(e.key) || set_by_env(e.key) || e.value.is_empty() {
                continue;
            }
            out(e.key.as_bytes(), &e.value);
        }
        for (k, v) in m.exported() {
            if !in_event(k) {
                out(k.as_bytes(), v);
            }
        }
    }

    /// What the rules added to the event, as (key, value), for dry runs and
    /// the handler's event: `ENV{}` assignments and imported properties
    /// (private ones, `ENV{.NAME}`, and removed ones left out), then
    /// `DEVLINKS`, `TAGS` and `CURRENT_TAGS`. An `ENV{KEY}=""` of a key
    /// the kernel sent cannot take it out of the raw event: it is only
    /// left out of the additions.
    pub fn env_assignments<'a>(
        &'a self,
        m: &'a Matched,
    ) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        // a key both set and imported: only the later one
        let set = m
            .env
            .iter()
            .filter_map(move |e| match &self.actions[e.action] {
                Action::SetEnv { key, .. }
                    if !subst::is_private(key)
                        && !e.value.is_empty()
                        && !m
                            .imported
                            .iter()
                            .any(|i| i.key == key.as_ref() && i.seq > e.seq) =>
                {
                    Some((key.as_ref(), &e.value[..]))
                }
                _ => None,
            });
        let imported = m
            .imported
            .iter()
            .filter(move |i| {
                !i.value.is_empty()
                    && !m.env.iter().any(|e| {
                        e.seq > i.seq
                            && matches!(&self.actions[e.action],
                                Action::SetEnv { key, .. } if key.as_ref() == i.key)
                    })
            })
            .map(|e| (e.key, &e.value[..]));
        let exported = m.exported().map(|(k, v)| -> (&'a str, &'a [u8]) { (k, v) });
        set.chain(imported).chain(exported)
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

/// An `ENV{key}` value: the latest of what a matching rule assigned and
/// what `IMPORT{builtin}` set, else the event's field, else empty (an
/// `ENV{key}=""` removes it: empty).
pub(crate) fn env_value<'a>(rs: &RuleSet, ev: &Uevent<'a>, m: &'a Matched, key: &str) -> &'a [u8] {
    let set = m.env.iter().find(|e| match &rs.actions[e.action] {
        Action::SetEnv { key: k, .. } => k.as_ref() == key,
        _ => false,
    });
    let imported = m.imported.iter().find(|e| e.key == key);
    match (set, imported) {
        (Some(s), Some(i)) if i.seq > s.seq => &i.value,
        (Some(s), _) => &s.value,
        (None, Some(i)) => &i.value,
        (None, None) => ev.get(key).unwrap_or(b""),
    }
}

/// A non-private property the rules set or imported (the later of the
/// two), if any: `Some(b"")` when `ENV{key}=""` removed it.
fn property<'a>(rs: &RuleSet, m: &'a Matched, key: &str) -> Option<&'a [u8]> {
    if subst::is_private(key) {
        return None;
    }
    let set = m.env.iter().find(|e| match &rs.actions[e.action] {
        Action::SetEnv { key: k, .. } => k.as_ref() == key,
        _ => false,
    });
    let imported = m.imported.iter().find(|e| e.key == key);
    match (set, imported) {
        (Some(s), Some(i)) if i.seq > s.seq => Some(&i.value),
        (Some(s), _) => Some(&s.value),
        (None, Some(i)) => Some(&i.value),
        (None, None) => None,
    }
}

/// Whether a parent-walking term (`KERNELS`, `SUBSYSTEMS`, `DRIVERS`,
/// `ATTRS{}`) holds at device `dev`, after its `!=`. An unreadable
/// attribute fails the term whatever the operator. (`hotplugd test`'s trace
/// asks the same question.)
pub(crate) fn parent_term_holds(
    t: &Match,
    sysfs: &dyn Sysfs,
    dev: &str,
    buf: &mut [u8; MAX_ATTR_LEN],
) -> bool {
    let hit = match &t.key {
        MatchKey::Kernels => t
            .glob
            .matches(sysname(dev.rsplit('/').next().unwrap_or(""), &mut [0; 256])),
        MatchKey::Subsystems => sysfs
            .link(dev, "subsystem", buf)
            .is_some_and(|v| t.glob.matches(v)),
        MatchKey::Drivers => sysfs
            .link(dev, "driver", buf)
            .is_some_and(|v| t.glob.matches(v)),
        MatchKey::Attrs(name) => match sysfs.attr(dev, name, buf) {
            Some(v) => attr_matches(t, v),
            None => return false,
        },
        _ => false,
    };
    hit != t.negate
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
    /// `ws`: whitespace in substituted values becomes `_` (udev, for
    /// `SYMLINK` unless `string_escape=none`).
    fn expand(&self, t: &Template, out: &mut Value, ws: bool) -> bool {
        out.clear();
        let mut ok = true;
        let mut put = |out: &mut Value, b: &[u8], sub: bool| {
            let room = out.capacity() - out.len();
            let n = b.len().min(room);
            let start = out.len();
            let _ = out.extend_from_slice(&b[..n]);
            if sub && ws {
                for c in &mut out[start..] {
                    if c.is_ascii_whitespace() {
                        *c = b'_';
                    }
                }
            }
            ok &= n == b.len();
        };
        for p in &t.0 {
            match p {
                Piece::Lit(l) => put(out, l, false),
                Piece::Kernel => put(out, sysname(self.ev.kernel_name(), &mut [0; 256]), true),
                Piece::Number => put(out, kernel_number(self.ev.kernel_name()).as_bytes(), true),
                Piece::Devpath => put(out, self.ev.devpath().as_bytes(), true),
                Piece::Devnode => {
                    if let Some(n) = self.ev.get("DEVNAME") {
                        if !n.starts_with(b"/") {
                            put(out, b"/dev/", true);
                        }
                        put(out, n, true);
                    }
                }
                Piece::Env(k) => put(out, env_value(self.rs, self.ev, self.m, k), true),
                Piece::Attr(name) => {
                    let mut buf = [0u8; MAX_ATTR_LEN];
                    let dev = self.ev.devpath();
                    if let Some(v) = self.sysfs.attr(dev, name, &mut buf) {
                        put(out, trim_end_ws(v), true);
                    } else if let Some(v) = self
                        .parent
                        // udev: fall back to the parent a walking term selected
                        .and_then(|pl| self.sysfs.attr(&dev[..pl], name, &mut buf))
                    {
                        put(out, trim_end_ws(v), true);
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
            MatchKey::Tag => "TAG".into(),
            MatchKey::Symlink => "SYMLINK".into(),
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

/// A value in double quotes as a rule file needs it: plain, or (if it
/// holds a `"`, a `\` or a control character) udev's `e"..."` with C
/// escapes, so that parsing it gives the value back.
pub fn quote(v: &str) -> String {
    if !v.contains(['"', '\\']) && !v.chars().any(char::is_control) {
        return format!("\"{v}\"");
    }
    let mut out = String::from("e\"");
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0b' => out.push_str("\\v"),
            '\x0c' => out.push_str("\\f"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
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
                terms.push(format!("LABEL={}", quote(l)));
            }
            for m in &self.matches[r.matches.clone()] {
                let op = if m.negate { "!=" } else { "==" };
                terms.push(format!(
                    "{}{op}{}",
                    m.key.name(),
                    quote(&String::from_utf8_lossy(&m.pattern))
                ));
            }
            for b in &r.imports {
                terms.push(format!("IMPORT{{builtin}}=\"{b}\""));
            }
            if let Some(t) = &r.import_fails {
                terms.push(t.to_string());
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
                        Action::SetEnv { value, .. }
                        | Action::WriteAttr { value, .. }
                        | Action::Symlink { value, .. } => render_template(value, &mut v, short),
                        Action::Node {
                            key: NodeKey::Mode,
                            value,
                            ..
                        } => v.push_str(&format!("{value:04o}")),
                        Action::Node { value, .. } => v.push_str(&value.to_string()),
                        Action::Tag { name, .. } => v.push_str(name),
                        Action::LinkPriority(p) => v.push_str(&format!("link_priority={p}")),
                        Action::StringEscape(e) => v.push_str(match e {
                            Escape::None => "string_escape=none",
                            _ => "string_escape=replace",
                        }),
                    }
                    v
                };
                let mut v = value(false);
                if v.len() > crate::limits::MAX_VALUE_LEN {
                    v = value(true);
                }
                let mut s = match a {
                    Action::Run(c) if c.service => "RUN{service}+=".to_string(),
                    Action::Run(_) => "RUN+=".to_string(),
                    Action::Builtin { .. } => "RUN{builtin}+=".to_string(),
                    Action::SetEnv { key, append, .. } => {
                        format!("ENV{{{key}}}{}=", if *append { "+" } else { "" })
                    }
                    Action::WriteAttr { name, .. } => format!("ATTR{{{name}}}="),
                    Action::Node { key, fixed, .. } => format!(
                        "{}{}",
                        match key {
                            NodeKey::Owner => "OWNER",
                            NodeKey::Group => "GROUP",
                            NodeKey::Mode => "MODE",
                        },
                        if *fixed { ":=" } else { "=" }
                    ),
                    Action::Symlink { op, .. } => format!("SYMLINK{}", op.as_str()),
                    Action::Tag { op, .. } => format!("TAG{}", op.as_str()),
                    Action::LinkPriority(_) | Action::StringEscape(_) => "OPTIONS+=".into(),
                };
                s.push_str(&quote(&v));
                terms.push(s);
            }
            if r.last_rule {
                terms.push("OPTIONS+=\"last_rule\"".into());
            }
            if let Some(g) = r.goto_name.as_ref().or(r.goto_dropped.as_ref()) {
                terms.push(format!("GOTO={}", quote(g)));
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

    /// The handler environment: a repeated kernel key once, at its first
    /// place, with its last value; `ENV{}` replaces in place (last
    /// assignment wins); new keys follow in the order first assigned;
    /// private keys are not exported.
    #[test]
    fn the_handler_environment_keeps_udevs_order_and_last_values() {
        let src = parse::Source {
            name: "t.rules".into(),
            text: "SUBSYSTEM==\"tty\", ENV{NEW}=\"1\", ENV{B}=\"x\", ENV{.P}=\"p\"\n\
                   SUBSYSTEM==\"tty\", ENV{NEW}=\"2\", ENV{OTHER}=\"o\"\n"
                .into(),
        };
        let rs = parse::compile(&[src], &[]).expect("loads");
        let raw = b"change@/d\0ACTION=change\0DEVPATH=/d\0SUBSYSTEM=tty\0A=1\0B=1\0A=2\0SEQNUM=1\0";
        let ev = Uevent::parse(raw).expect("event");
        let mut m = Matched::default();
        rs.evaluate(&ev, &NoSysfs, &mut m);
        let env: Vec<String> = rs
            .env(&ev, &m)
            .into_iter()
            .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(&v)))
            .collect();
        assert_eq!(
            env,
            [
                "ACTION=change",
                "DEVPATH=/d",
                "SUBSYSTEM=tty",
                "A=2",
                "B=x",
                "SEQNUM=1",
                "NEW=2",
                "OTHER=o"
            ]
        );
    }
}
