//! /dev's duties, decided without I/O (issue 13): whether the rules'
//! `OWNER`/`GROUP`/`MODE` may be applied to the node the kernel made, where
//! a `SYMLINK` points and who owns it when two devices claim it, and the
//! `remove` the rules and handlers see (with what its `add` knew).
//!
//! What it leaves to others: the rules fill [`NodeAssign`] (and export
//! `DEVLINKS`, `TAGS`, `CURRENT_TAGS` to handlers)
//! ([`crate::rules`]); [`crate::sys::devnode`] looks at /dev and carries
//! the decisions out with `*at()` calls on a /dev directory descriptor;
//! [`crate::runner`] calls both between the rules and the handlers; the
//! device table ([`crate::devices`]) keeps each device's links, tags and
//! properties from one event to the next.
//!
//! # udev's rules, as followed here
//! - Permissions (udev-node.c, `node_permissions_apply`): only a node whose
//!   type (block if `SUBSYSTEM=block`, else char) and `MAJOR:MINOR` are the
//!   event's; anything else at `/dev/$DEVNAME` (a symlink, a regular file,
//!   another device) is left alone and the refusal logged. A node no rule
//!   gave an owner, group or mode keeps what devtmpfs gave it.
//! - Link targets are relative, as udev makes them: `serial/by-id/x` to
//!   `ttyUSB0` is `../../ttyUSB0`.
//! - Two devices claiming one link (udev-node.c, `link_find_prioritized`,
//!   systemd 252): the device whose event is being handled takes the link
//!   unless another claimant has a strictly higher `link_priority`; when the
//!   holder goes away, the remaining claimant with the highest priority gets
//!   it (equal priorities: the first found; udev takes the first directory
//!   entry, an order it does not define either).
//! - A path holding anything but a symlink (a regular file, a directory, a
//!   node) is never replaced (udev: "Conflicting inode").

use core::fmt;

use crate::limits::{MAX_FIELDS, MAX_LINK_LEN};
use crate::rules::NodeAssign;
use crate::uevent::Uevent;

/// The key the device table keeps a device's `link_priority` under (a
/// private key: never shown to rules or handlers).
pub const PRIORITY_KEY: &str = ".LINK_PRIORITY";

/// Bytes of a link target (`../../` per directory level, then DEVNAME).
pub const MAX_TARGET: usize = 2 * MAX_LINK_LEN;

/// A link target, relative to the link's directory.
pub type Target = heapless::String<MAX_TARGET>;

/// The device node an event names: `/dev/$DEVNAME`, block or char,
/// `MAJOR:MINOR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeId<'a> {
    /// DEVNAME, relative to /dev (a leading `/dev/` removed).
    pub name: &'a str,
    /// `SUBSYSTEM=block`.
    pub block: bool,
    /// MAJOR.
    pub major: u32,
    /// MINOR.
    pub minor: u32,
}

impl<'a> NodeId<'a> {
    /// The event's node, if it names one (DEVNAME, MAJOR and MINOR, and a
    /// name that stays inside /dev).
    pub fn of(ev: &Uevent<'a>) -> Option<NodeId<'a>> {
        let name = devname(ev.get_str("DEVNAME")?);
        let num = |k| ev.get_str(k)?.parse::<u32>().ok();
        if check_link(name).is_err() {
            return None;
        }
        Some(NodeId {
            name,
            block: ev.subsystem() == Some("block"),
            major: num("MAJOR")?,
            minor: num("MINOR")?,
        })
    }
}

/// DEVNAME relative to /dev (the kernel sends it so; a `/dev/` prefix, as
/// in a replayed udev event, is removed).
pub fn devname(v: &str) -> &str {
    v.strip_prefix("/dev/").unwrap_or(v)
}

/// What is at a path under /dev, as `lstat` sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Nothing.
    Missing,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A symbolic link.
    Symlink,
    /// A directory.
    Dir,
    /// A regular file.
    Regular,
    /// A socket or a fifo.
    Other,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Missing => "nothing",
            Kind::Char => "a character device",
            Kind::Block => "a block device",
            Kind::Symlink => "a symlink",
            Kind::Dir => "a directory",
            Kind::Regular => "a regular file",
            Kind::Other => "a socket or fifo",
        })
    }
}

/// What `lstat` said of a node path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// Its type.
    pub kind: Kind,
    /// `st_rdev` as (major, minor).
    pub rdev: (u32, u32),
    /// Permission bits (`st_mode & 0o7777`).
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl Seen {
    /// Nothing at the path.
    pub const MISSING: Seen = Seen {
        kind: Kind::Missing,
        rdev: (0, 0),
        perm: 0,
        uid: 0,
        gid: 0,
    };
}

/// Why permissions were not applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The path holds something that is not a device node (a symlink, a
    /// file someone put there, a directory), or nothing.
    NotANode(Kind),
    /// A block node for a char device or the other way round.
    WrongType(Kind),
    /// A node of another device.
    WrongDevnum(u32, u32),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotANode(k) => write!(f, "the path holds {k}, not the device node"),
            Refusal::WrongType(k) => write!(f, "the path holds {k} of the other type"),
            Refusal::WrongDevnum(a, b) => {
                write!(f, "the path holds the node of another device ({a}:{b})")
            }
        }
    }
}

/// What to do with the node's permissions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Perms {
    /// No rule set an owner, group or mode: leave devtmpfs's.
    Untouched,
    /// The node already has what the rules say.
    Unchanged,
    /// Change these (`None`: leave as it is).
    Apply {
        /// New permission bits.
        mode: Option<u32>,
        /// New owner.
        uid: Option<u32>,
        /// New group.
        gid: Option<u32>,
    },
    /// Not the event's node: leave it, say why.
    Refused(Refusal),
}

/// Decides what to do with the permissions of the node at `/dev/$DEVNAME`
/// given what is there (udev's `node_permissions_apply`).
pub fn perms(a: &NodeAssign, node: &NodeId<'_>, seen: &Seen) -> Perms {
    if a.uid.is_none() && a.gid.is_none() && a.mode.is_none() {
        return Perms::Untouched;
    }
    match seen.kind {
        Kind::Char | Kind::Block => {}
        k => return Perms::Refused(Refusal::NotANode(k)),
    }
    if (seen.kind == Kind::Block) != node.block {
        return Perms::Refused(Refusal::WrongType(seen.kind));
    }
    if seen.rdev != (node.major, node.minor) {
        return Perms::Refused(Refusal::WrongDevnum(seen.rdev.0, seen.rdev.1));
    }
    let mode = a.mode.map(|m| m & 0o7777).filter(|&m| m != seen.perm);
    let uid = a.uid.filter(|&u| u != seen.uid);
    let gid = a.gid.filter(|&g| g != seen.gid);
    if mode.is_none() && uid.is_none() && gid.is_none() {
        return Perms::Unchanged;
    }
    Perms::Apply { mode, uid, gid }
}

/// Why a link name is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadLink {
    /// Empty, or an empty component (`a//b`, a trailing `/`).
    Empty,
    /// Absolute: links are relative to /dev.
    Absolute,
    /// A `.` or `..` component: it could leave /dev.
    Dots,
    /// Longer than [`MAX_LINK_LEN`].
    TooLong,
    /// Under `.hotplugd/`, where the record of made links lives.
    Reserved,
}

impl fmt::Display for BadLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BadLink::Empty => "an empty name or path component",
            BadLink::Absolute => "an absolute path (links are relative to /dev)",
            BadLink::Dots => "a '.' or '..' component",
            BadLink::TooLong => "longer than MAX_LINK_LEN (256)",
            BadLink::Reserved => "under .hotplugd/ (hotplugd's record of made links)",
        })
    }
}

/// Checks a path relative to /dev (a link, or DEVNAME): it must stay
/// inside /dev whatever its components.
pub fn check_link(link: &str) -> Result<(), BadLink> {
    if link.starts_with('/') {
        return Err(BadLink::Absolute);
    }
    if link.len() > MAX_LINK_LEN {
        return Err(BadLink::TooLong);
    }
    if link.split('/').next() == Some(RECORD_TOP) {
        return Err(BadLink::Reserved);
    }
    for c in link.split('/') {
        match c {
            "" => return Err(BadLink::Empty),
            "." | ".." => return Err(BadLink::Dots),
            _ => {}
        }
    }
    Ok(())
}

/// The directory under /dev holding the record of links hotplugd made
/// (see [`crate::sys::devnode`]).
pub const RECORD_TOP: &str = ".hotplugd";

/// The target of link `link` to node `node` (both relative to /dev), as
/// udev writes it: relative to the link's directory, after their common
/// leading directories. False if it does not fit.
pub fn relative_target(link: &str, node: &str, out: &mut Target) -> bool {
    out.clear();
    let link_dirs: &str = link.rsplit_once('/').map_or("", |(d, _)| d);
    let mut l = link_dirs.split('/').filter(|c| !c.is_empty()).peekable();
    let mut n = node.split('/').peekable();
    // drop common leading directories (never the node's last component)
    let mut n_rest = node;
    loop {
        match (l.peek(), n.peek()) {
            (Some(a), Some(b)) if a == b && n_rest.contains('/') => {
                n_rest = &n_rest[b.len() + 1..];
                l.next();
                n.next();
            }
            _ => break,
        }
    }
    for _ in l {
        if out.push_str("../").is_err() {
            return false;
        }
    }
    out.push_str(n_rest).is_ok()
}

/// Another device that claims a link, from the device table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claimant<'a> {
    /// Its devpath.
    pub devpath: &'a str,
    /// Its DEVNAME, relative to /dev.
    pub node: &'a str,
    /// Its `link_priority`.
    pub priority: i32,
}

/// Picks, among other claimants, the one udev would give the link to:
/// the highest priority, the first found among equals.
pub fn best<'a>(claimants: impl Iterator<Item = Claimant<'a>>) -> Option<Claimant<'a>> {
    let mut best: Option<Claimant<'a>> = None;
    for c in claimants {
        if best.is_none_or(|b| c.priority > b.priority) {
            best = Some(c);
        }
    }
    best
}

/// Whose node a claimed link points to: the claiming device's, unless
/// `other` (the best other claimant) has a strictly higher priority.
pub fn winner<'a>(ours: Claimant<'a>, other: Option<Claimant<'a>>) -> Claimant<'a> {
    match other {
        Some(o) if o.priority > ours.priority => o,
        _ => ours,
    }
}

/// `DEVLINKS`'s value: `/dev/`-prefixed links separated by spaces. The
/// links, relative to /dev.
pub fn devlinks(value: &[u8]) -> impl Iterator<Item = &str> {
    value
        .split(|&b| b == b' ')
        .filter_map(|l| core::str::from_utf8(l).ok())
        .map(devname)
        .filter(|l| !l.is_empty())
}

/// True if the `DEVLINKS` value `value` holds `link` (relative to /dev).
pub fn claims(value: &[u8], link: &str) -> bool {
    devlinks(value).any(|l| l == link)
}

/// A fixed buffer events are built in: allocated once, reused for every
/// event (no allocation per event).
pub struct EventBuf {
    buf: Box<[u8]>,
    len: usize,
    fields: usize,
}

impl EventBuf {
    /// A buffer of `bytes`.
    pub fn new(bytes: usize) -> EventBuf {
        EventBuf {
            buf: vec![0u8; bytes].into_boxed_slice(),
            len: 0,
            fields: 0,
        }
    }

    /// Starts over with `raw` (a whole datagram: header and fields). False
    /// if it does not fit.
    pub fn start(&mut self, raw: &[u8], fields: usize) -> bool {
        self.len = 0;
        self.fields = 0;
        if raw.len() > self.buf.len() {
            return false;
        }
        self.buf[..raw.len()].copy_from_slice(raw);
        self.len = raw.len();
        self.fields = fields;
        true
    }

    /// Appends `KEY=VALUE\0` from parts; false (nothing appended) if it
    /// would not fit or the event would have more than [`MAX_FIELDS`].
    pub fn push(&mut self, parts: &[&[u8]]) -> bool {
        let n: usize = parts.iter().map(|p| p.len()).sum::<usize>() + 1;
        if self.len + n > self.buf.len() || self.fields >= MAX_FIELDS {
            return false;
        }
        for p in parts {
            self.buf[self.len..self.len + p.len()].copy_from_slice(p);
            self.len += p.len();
        }
        self.buf[self.len] = 0;
        self.len += 1;
        self.fields += 1;
        true
    }

    /// The datagram built so far.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Builds in `out` the `remove` the rules and handlers see: the kernel's
/// fields (they win), then each field of the device's last record
/// (`KEY=VALUE`, from the device table) whose key the kernel did not send,
/// private keys (`.NAME`) left out. Returns the record fields that did not
/// fit (the event keeps the kernel's fields whole), or `None` if the
/// kernel's event itself does not fit `out`.
pub fn merge_remove<'r>(
    ev: &Uevent<'_>,
    record: impl Iterator<Item = &'r [u8]>,
    out: &mut EventBuf,
) -> Option<usize> {
    if !out.start(ev.raw(), ev.fields().len()) {
        return None;
    }
    let mut cut = 0;
    for f in record {
        let eq = f.iter().position(|&b| b == b'=').unwrap_or(f.len());
        let Ok(key) = core::str::from_utf8(&f[..eq]) else {
            continue;
        };
        if key.is_empty() || key.starts_with('.') || ev.get(key).is_some() {
            continue;
        }
        if !out.push(&[f]) {
            cut += 1;
        }
    }
    Some(cut)
}

/// The tags of a `TAGS` value (`:a:b:`).
pub fn tags(value: &[u8]) -> impl Iterator<Item = &str> + Clone {
    value
        .split(|&b| b == b':')
        .filter(|t| !t.is_empty())
        .filter_map(|t| core::str::from_utf8(t).ok())
}

/// What a link should become, from what is at its path now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkPlan {
    /// It already points where it should.
    Keep,
    /// Make it (atomically: temporary name, then rename over the path).
    Make,
    /// The path holds something that is not a symlink: leave it, say so.
    Refuse(Kind),
}

/// Decides a link's fate: `seen` is what is at its path, `current` its
/// target if it is a symlink, `want` the target it should have.
pub fn link_plan(seen: Kind, current: Option<&[u8]>, want: &str) -> LinkPlan {
    match seen {
        Kind::Missing => LinkPlan::Make,
        Kind::Symlink if current == Some(want.as_bytes()) => LinkPlan::Keep,
        Kind::Symlink => LinkPlan::Make,
        k => LinkPlan::Refuse(k),
    }
}

/// What to do with a link its device no longer claims (removed, or not
/// claimed by a `change`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// It points to another device's node (or is not a symlink): not ours
    /// to remove.
    Leave,
    /// Nobody else claims it: remove it.
    Remove,
    /// Another claimant gets it: point it there.
    Hand,
}

/// Decides a released link's fate: `current` its target (if a symlink),
/// `ours` the target it has when it is the releasing device's, `next` the
/// best remaining claimant.
pub fn release(current: Option<&[u8]>, ours: &str, next: bool) -> Release {
    match current {
        Some(t) if t == ours.as_bytes() => {
            if next {
                Release::Hand
            } else {
                Release::Remove
            }
        }
        _ => Release::Leave,
    }
}

/// udev's encoding of a path as one file name (`util_path_encode`): `/`
/// becomes `\x2f` and `\` becomes `\x5c`. False if it does not fit.
pub fn encode_name(path: &str, out: &mut heapless::String<{ 4 * MAX_LINK_LEN }>) -> bool {
    out.clear();
    for c in path.chars() {
        let ok = match c {
            '/' => out.push_str("\\x2f"),
            '\\' => out.push_str("\\x5c"),
            c => out.push(c),
        };
        if ok.is_err() {
            return false;
        }
    }
    true
}

/// The inverse of [`encode_name`]; false if `name` is not such a name.
pub fn decode_name(name: &str, out: &mut heapless::String<MAX_LINK_LEN>) -> bool {
    out.clear();
    let mut rest = name;
    while !rest.is_empty() {
        let (c, n) = if let Some(r) = rest.strip_prefix("\\x2f") {
            ('/', r)
        } else if let Some(r) = rest.strip_prefix("\\x5c") {
            ('\\', r)
        } else if rest.starts_with('\\') {
            return false;
        } else {
            let c = rest.chars().next().unwrap_or('?');
            (c, &rest[c.len_utf8()..])
        };
        if out.push(c).is_err() {
            return false;
        }
        rest = n;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assign(uid: Option<u32>, gid: Option<u32>, mode: Option<u32>) -> NodeAssign {
        NodeAssign {
            uid,
            gid,
            mode,
            ..NodeAssign::default()
        }
    }

    const FULL: NodeId<'static> = NodeId {
        name: "full",
        block: false,
        major: 1,
        minor: 7,
    };

    fn char_node(rdev: (u32, u32), perm: u32) -> Seen {
        Seen {
            kind: Kind::Char,
            rdev,
            perm,
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn permissions_only_on_the_events_own_node() {
        let a = assign(Some(5), Some(20), Some(0o660));
        assert_eq!(
            perms(&a, &FULL, &char_node((1, 7), 0o666)),
            Perms::Apply {
                mode: Some(0o660),
                uid: Some(5),
                gid: Some(20)
            }
        );
        // what is already right is not applied again
        let mut s = char_node((1, 7), 0o660);
        s.uid = 5;
        assert_eq!(
            perms(&a, &FULL, &s),
            Perms::Apply {
                mode: None,
                uid: None,
                gid: Some(20)
            }
        );
        s.gid = 20;
        assert_eq!(perms(&a, &FULL, &s), Perms::Unchanged);
        // another device's node, a block node, a symlink, a file, nothing
        assert_eq!(
            perms(&a, &FULL, &char_node((1, 3), 0o666)),
            Perms::Refused(Refusal::WrongDevnum(1, 3))
        );
        let mut b = char_node((1, 7), 0o666);
        b.kind = Kind::Block;
        assert_eq!(
            perms(&a, &FULL, &b),
            Perms::Refused(Refusal::WrongType(Kind::Block))
        );
        for k in [Kind::Symlink, Kind::Regular, Kind::Dir, Kind::Missing] {
            let mut x = char_node((1, 7), 0o666);
            x.kind = k;
            assert_eq!(perms(&a, &FULL, &x), Perms::Refused(Refusal::NotANode(k)));
        }
        // no rule touched it: devtmpfs's permissions stay, whatever is there
        assert_eq!(
            perms(&NodeAssign::default(), &FULL, &Seen::MISSING),
            Perms::Untouched
        );
    }

    #[test]
    fn targets_are_relative_like_udevs() {
        let mut t = Target::new();
        for (link, node, want) in [
            ("serial/by-id/x", "ttyUSB0", "../../ttyUSB0"),
            ("ftdi", "ttyUSB0", "ttyUSB0"),
            ("serial/ftdi-0", "ttyUSB0", "../ttyUSB0"),
            ("bus/x", "bus/usb/001/002", "usb/001/002"),
            ("input/by-id/k", "input/event3", "../event3"),
            ("disk/by-id/a", "sda1", "../../sda1"),
            ("a", "bus/usb/001/002", "bus/usb/001/002"),
        ] {
            assert!(relative_target(link, node, &mut t));
            assert_eq!(t.as_str(), want, "{link} -> {node}");
        }
    }

    #[test]
    fn link_names_stay_inside_dev() {
        assert_eq!(check_link("serial/by-id/x"), Ok(()));
        assert_eq!(check_link("/etc/passwd"), Err(BadLink::Absolute));
        assert_eq!(check_link("../etc"), Err(BadLink::Dots));
        assert_eq!(check_link("a/./b"), Err(BadLink::Dots));
        assert_eq!(check_link("a//b"), Err(BadLink::Empty));
        assert_eq!(check_link(""), Err(BadLink::Empty));
        assert_eq!(check_link(".hotplugd/links/x"), Err(BadLink::Reserved));
        assert_eq!(
            check_link(&"a".repeat(MAX_LINK_LEN + 1)),
            Err(BadLink::TooLong)
        );
    }

    #[test]
    fn priority_follows_udev() {
        let ours = Claimant {
            devpath: "/d/b",
            node: "ttyUSB1",
            priority: 0,
        };
        let a = |p| Claimant {
            devpath: "/d/a",
            node: "ttyUSB0",
            priority: p,
        };
        // equal: the device whose event is handled takes it
        assert_eq!(winner(ours, Some(a(0))), ours);
        assert_eq!(winner(ours, Some(a(-5))), ours);
        assert_eq!(winner(ours, Some(a(10))), a(10));
        assert_eq!(winner(ours, None), ours);
        // among the rest: highest, first among equals
        let c = |d, p| Claimant {
            devpath: d,
            node: "x",
            priority: p,
        };
        let all = [c("/1", 0), c("/2", 3), c("/3", 3), c("/4", -1)];
        assert_eq!(best(all.into_iter()), Some(c("/2", 3)));
        assert_eq!(best([].into_iter()), None);
    }

    #[test]
    fn link_and_release_plans() {
        assert_eq!(link_plan(Kind::Missing, None, "../x"), LinkPlan::Make);
        assert_eq!(
            link_plan(Kind::Symlink, Some(b"../x"), "../x"),
            LinkPlan::Keep
        );
        assert_eq!(
            link_plan(Kind::Symlink, Some(b"../y"), "../x"),
            LinkPlan::Make
        );
        assert_eq!(
            link_plan(Kind::Regular, None, "../x"),
            LinkPlan::Refuse(Kind::Regular)
        );
        assert_eq!(
            link_plan(Kind::Dir, None, "../x"),
            LinkPlan::Refuse(Kind::Dir)
        );
        assert_eq!(release(Some(b"../x"), "../x", false), Release::Remove);
        assert_eq!(release(Some(b"../x"), "../x", true), Release::Hand);
        assert_eq!(release(Some(b"../y"), "../x", false), Release::Leave);
        assert_eq!(release(None, "../x", false), Release::Leave);
    }

    #[test]
    fn a_remove_gets_what_the_add_knew_and_the_kernel_wins() {
        let rm = b"remove@/devices/x/ttyUSB0\0ACTION=remove\0DEVPATH=/devices/x/ttyUSB0\0SUBSYSTEM=tty\0DEVNAME=ttyUSB0\0SEQNUM=9\0";
        let ev = Uevent::parse(rm).unwrap();
        let record: [&[u8]; 5] = [
            b"SUBSYSTEM=stale",
            b"ID_SERIAL=FTDI_X",
            b"DEVLINKS=/dev/serial/a /dev/b",
            b".LINK_PRIORITY=3",
            b"TAGS=:uaccess:",
        ];
        let mut out = EventBuf::new(4096);
        assert_eq!(merge_remove(&ev, record.into_iter(), &mut out), Some(0));
        let m = Uevent::parse(out.bytes()).expect("parses");
        assert_eq!(m.action(), "remove");
        assert_eq!(m.get_str("SUBSYSTEM"), Some("tty"), "the kernel's wins");
        assert_eq!(m.get_str("ID_SERIAL"), Some("FTDI_X"));
        assert_eq!(m.get_str("TAGS"), Some(":uaccess:"));
        assert_eq!(m.get(PRIORITY_KEY), None, "private keys stay private");
        let links: Vec<&str> = devlinks(m.get("DEVLINKS").unwrap()).collect();
        assert_eq!(links, ["serial/a", "b"]);
        // what does not fit is counted; the kernel's fields stay whole
        let mut small = EventBuf::new(rm.len() + 20);
        assert_eq!(merge_remove(&ev, record.into_iter(), &mut small), Some(2));
        let s = Uevent::parse(small.bytes()).unwrap();
        assert_eq!(s.get_str("ID_SERIAL"), Some("FTDI_X"), "what fits is kept");
        assert_eq!(s.get_str("DEVNAME"), Some("ttyUSB0"));
    }

    #[test]
    fn devlinks_and_tags_in_udevs_forms() {
        let v = b"/dev/serial/a /dev/b";
        assert_eq!(devlinks(v).collect::<Vec<_>>(), ["serial/a", "b"]);
        assert!(claims(v, "b"));
        assert!(!claims(v, "serial"));
        assert_eq!(
            tags(b":uaccess:seat:").collect::<Vec<_>>(),
            ["uaccess", "seat"]
        );
    }

    #[test]
    fn record_names_round_trip() {
        let mut e = heapless::String::new();
        let mut d = heapless::String::new();
        assert!(encode_name("serial/by-id/a\\b", &mut e));
        assert_eq!(e.as_str(), "serial\\x2fby-id\\x2fa\\x5cb");
        assert!(decode_name(&e, &mut d));
        assert_eq!(d.as_str(), "serial/by-id/a\\b");
        assert!(!decode_name("a\\x41", &mut d));
    }
}
