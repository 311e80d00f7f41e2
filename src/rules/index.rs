//! Which rules an event can meet at all: an index of the rule set by
//! ACTION, SUBSYSTEM and, for USB events, vendor, so that an event skips the
//! rules that cannot match it without looking at them.
//!
//! Built once per rule set (see [`RuleSet::index`]); looking up an event is
//! three table lookups and never allocates. The index only ever *removes*
//! rules that could not match: every rule it keeps is still evaluated term by
//! term as before, in file order, with GOTO and `last_rule` as before. It is
//! a necessary condition per rule, taken from terms that depend on the event
//! alone:
//!
//! - ACTION: [`super::Rule::action_mask`] (an action the kernel does not send today
//!   keeps every rule, as evaluation does).
//! - SUBSYSTEM: a rule with a `SUBSYSTEM=="a|b"` term whose alternatives are
//!   all literal can only match events of those subsystems. SUBSYSTEM is the
//!   event's own field: no rule can change it.
//! - USB vendor: a rule with `ATTR{idVendor}=="0403"` or `USB{idVendor}==
//!   "0403"` (literal, four lower-case hex digits, as sysfs prints it) can
//!   only match a USB device whose idVendor is that. For a `usb` event with
//!   a valid `PRODUCT` the vendor is known from the event: the kernel builds
//!   `PRODUCT` from the same descriptor field sysfs shows as `idVendor`
//!   (`drivers/usb/core/driver.c`, `usb_uevent`; `sysfs.c`, `idVendor`). An
//!   interface event has no `idVendor` attribute, so such a rule fails on
//!   it anyway.
//! - Vendors up the chain: a rule with `ATTRS{idVendor}=="0403"` (literal,
//!   as above) can only match if the event's device or one of its parents
//!   has that `idVendor`. When some rule the other sets keep has such a
//!   term, the caller reads `idVendor` of the device and each parent once
//!   ([`chain_vendors`], through the event's read cache, so the rules that
//!   remain read them again for free) and the index keeps the rules with no
//!   such term plus those naming a vendor found. A value that is not four
//!   lower-case hex digits, or more than [`CHAIN_VENDORS`] of them, gives
//!   no condition.
//!
//! Negated terms (`!=`) and globs give no condition; the rule stays a
//! candidate for every event.

use super::{glob, MatchKey, RuleSet, Sysfs, MAX_ATTR_LEN};
use crate::uevent::Uevent;
use crate::usb::UsbView;

/// The most `idVendor` values up one device's chain the index uses (a
/// device, its hubs and the root hub); beyond it, no condition.
pub const CHAIN_VENDORS: usize = 6;

/// The `idVendor` values of a device and its parents.
pub type ChainVendors = heapless::Vec<u16, CHAIN_VENDORS>;

/// Reads `idVendor` of `devpath` and each parent (as `ATTRS{}` walks
/// them); `None` if one does not read as four lower-case hex digits (after
/// trailing white space, as `ATTRS{}` compares) or there are more than
/// [`CHAIN_VENDORS`].
pub fn chain_vendors(devpath: &str, sysfs: &dyn Sysfs) -> Option<ChainVendors> {
    let mut out = ChainVendors::new();
    let mut buf = [0u8; MAX_ATTR_LEN];
    for dev in super::ancestors(devpath) {
        if let Some(v) = sysfs.attr(dev, "idVendor", &mut buf) {
            let v = vendor_literal(super::trim_end_ws(v))?;
            if !out.contains(&v) {
                out.push(v).ok()?;
            }
        }
    }
    Some(out)
}

/// One bit per rule.
type Bits = Box<[u64]>;

/// The index of one rule set.
#[derive(Debug, Default)]
pub struct RuleIndex {
    /// Rules that can match each action of [`super::ACTIONS`]; the last
    /// set (every rule) serves actions not in that list.
    by_action: Vec<Bits>,
    /// The literal subsystems rules name, sorted, and for each the rules
    /// that can match an event of that subsystem.
    subsystems: Vec<(Box<[u8]>, Bits)>,
    /// Rules that can match a subsystem no rule names.
    other_subsystem: Bits,
    /// The vendors rules name, sorted, and the rules for each.
    vendors: Vec<(u16, Bits)>,
    /// Rules that can match a USB device of a vendor no rule names.
    other_vendor: Bits,
    /// Every rule (events whose vendor is not known).
    all: Bits,
    /// The vendors `ATTRS{idVendor}` terms name, sorted, and the rules
    /// naming each.
    chain: Vec<(u16, Bits)>,
    /// Rules with no such term.
    chain_free: Bits,
    rules: usize,
}

/// The rules one event can meet: iterate with [`Selection::next`].
#[derive(Clone, Debug)]
pub struct Selection<'a> {
    sets: [&'a [u64]; 3],
    /// Rules are kept if in any of these (none: no condition).
    any: heapless::Vec<&'a [u64], { CHAIN_VENDORS + 1 }>,
    rules: usize,
}

impl Selection<'_> {
    /// The first candidate rule at or after `from`, or the number of rules
    /// when there is none.
    pub fn next(&self, from: usize) -> usize {
        let mut w = from / 64;
        let words = self.sets[0].len();
        if w >= words {
            return self.rules;
        }
        let mut bits = self.word(w) & (!0u64 << (from % 64));
        loop {
            if bits != 0 {
                return (w * 64 + bits.trailing_zeros() as usize).min(self.rules);
            }
            w += 1;
            if w >= words {
                return self.rules;
            }
            bits = self.word(w);
        }
    }

    fn word(&self, w: usize) -> u64 {
        let all = self.sets[0][w] & self.sets[1][w] & self.sets[2][w];
        if self.any.is_empty() {
            return all;
        }
        all & self.any.iter().fold(0, |acc, b| acc | b[w])
    }

    /// True if a rule kept so far has an `ATTRS{idVendor}` term: only then
    /// is the chain worth reading ([`RuleIndex::narrow`]).
    pub fn wants_chain(&self, index: &RuleIndex) -> bool {
        !index.chain.is_empty()
            && (0..self.sets[0].len()).any(|w| self.word(w) & !index.chain_free[w] != 0)
    }
}

impl RuleIndex {
    /// Indexes `rs`.
    pub fn build(rs: &RuleSet) -> RuleIndex {
        let n = rs.rules.len();
        let words = n.div_ceil(64).max(1);
        let empty = || vec![0u64; words].into_boxed_slice();
        let set = |b: &mut Bits, i: usize| b[i / 64] |= 1 << (i % 64);

        let mut all = empty();
        let mut by_action: Vec<Bits> = (0..=super::ACTIONS.len()).map(|_| empty()).collect();
        // per rule: the subsystems and vendors it is limited to (None: any)
        let mut rule_subs: Vec<Option<Vec<&[u8]>>> = Vec::with_capacity(n);
        let mut rule_vendors: Vec<Option<Vec<u16>>> = Vec::with_capacity(n);
        let mut rule_chain: Vec<Option<Vec<u16>>> = Vec::with_capacity(n);
        for (i, r) in rs.rules.iter().enumerate() {
            if r.label {
                // never matches; GOTO lands on it and goes on from there
                rule_subs.push(None);
                rule_vendors.push(None);
                rule_chain.push(None);
                continue;
            }
            set(&mut all, i);
            for (a, bits) in by_action.iter_mut().enumerate() {
                if a == super::ACTIONS.len() || r.action_mask & (1 << a) != 0 {
                    set(bits, i);
                }
            }
            let terms = &rs.matches[r.matches.clone()];
            rule_subs.push(
                terms
                    .iter()
                    .filter(|t| !t.negate && matches!(t.key, MatchKey::Subsystem))
                    .find_map(|t| literal_alts(&t.pattern)),
            );
            rule_vendors.push(
                terms
                    .iter()
                    .filter(|t| {
                        !t.negate
                            && match &t.key {
                                MatchKey::Attr(name) => &**name == "idVendor",
                                MatchKey::Usb(name) => *name == "idVendor",
                                _ => false,
                            }
                    })
                    .find_map(|t| vendors_of(&t.pattern)),
            );
            rule_chain.push(
                terms
                    .iter()
                    .filter(|t| {
                        !t.negate
                            && matches!(&t.key, MatchKey::Attrs(name) if &**name == "idVendor")
                    })
                    .find_map(|t| vendors_of(&t.pattern)),
            );
        }

        let (subsystems, other_subsystem) = keyed(&rule_subs, &empty, true);
        let subsystems = subsystems
            .into_iter()
            .map(|(s, b)| (Box::from(s), b))
            .collect();
        let (vendors, other_vendor) = keyed(&rule_vendors, &empty, true);
        let (chain, chain_free) = keyed(&rule_chain, &empty, false);
        RuleIndex {
            by_action,
            subsystems,
            other_subsystem,
            vendors,
            other_vendor,
            all,
            chain,
            chain_free,
            rules: n,
        }
    }

    /// Narrows `sel` to the rules whose `ATTRS{idVendor}` terms name a
    /// vendor of `found` (the chain's, from [`chain_vendors`]), keeping the
    /// rules without such a term.
    pub fn narrow<'a>(&'a self, sel: &mut Selection<'a>, found: &ChainVendors) {
        sel.any.clear();
        let _ = sel.any.push(&self.chain_free);
        for v in found {
            if let Ok(k) = self.chain.binary_search_by_key(v, |(c, _)| *c) {
                let _ = sel.any.push(&self.chain[k].1);
            }
        }
    }

    /// The rules `ev` can meet. `usb` is the event's typed USB view, if it
    /// is a USB event with a valid `PRODUCT`.
    pub fn select(&self, ev: &Uevent<'_>, usb: Option<&UsbView>) -> Selection<'_> {
        let a = super::ACTIONS
            .iter()
            .position(|a| *a == ev.action())
            .unwrap_or(super::ACTIONS.len());
        let sub = ev.subsystem().unwrap_or("").as_bytes();
        let subs = match self.subsystems.binary_search_by(|(s, _)| (**s).cmp(sub)) {
            Ok(k) => &self.subsystems[k].1,
            Err(_) => &self.other_subsystem,
        };
        let vendor = match usb {
            None => &self.all,
            Some(u) => match self.vendors.binary_search_by_key(&u.vendor, |(v, _)| *v) {
                Ok(k) => &self.vendors[k].1,
                Err(_) => &self.other_vendor,
            },
        };
        Selection {
            sets: [&self.by_action[a], subs, vendor],
            any: heapless::Vec::new(),
            rules: self.rules,
        }
    }
}

/// The alternatives of `p` if every one is literal (then the pattern
/// matches exactly those strings).
fn literal_alts(p: &[u8]) -> Option<Vec<&[u8]>> {
    let alts: Vec<&[u8]> = glob::alternatives(p).collect();
    alts.iter().all(|a| glob::is_literal(a)).then_some(alts)
}

/// Bits per key from each rule's keys (`None`: the rule names none), and
/// the bits of the rules that name none. With `into_every`, those rules are
/// also in every key's bits (a condition ANDed with the others); without,
/// the caller ORs the two (a condition on any of several keys).
fn keyed<K: Ord + Copy>(
    per_rule: &[Option<Vec<K>>],
    empty: &dyn Fn() -> Bits,
    into_every: bool,
) -> (Vec<(K, Bits)>, Bits) {
    let set = |b: &mut Bits, i: usize| b[i / 64] |= 1 << (i % 64);
    let mut keys: Vec<K> = per_rule.iter().flatten().flatten().copied().collect();
    keys.sort_unstable();
    keys.dedup();
    let mut free = empty();
    let mut sets: Vec<(K, Bits)> = keys.iter().map(|&k| (k, empty())).collect();
    for (i, ks) in per_rule.iter().enumerate() {
        match ks {
            None => {
                set(&mut free, i);
                if into_every {
                    for (_, b) in sets.iter_mut() {
                        set(b, i);
                    }
                }
            }
            Some(list) => {
                for k in list {
                    if let Ok(at) = keys.binary_search(k) {
                        set(&mut sets[at].1, i);
                    }
                }
            }
        }
    }
    (sets, free)
}

/// The vendors a pattern names if it is one or more literal vendors.
fn vendors_of(p: &[u8]) -> Option<Vec<u16>> {
    literal_alts(p)?.iter().map(|a| vendor_literal(a)).collect()
}

/// `0403` → 0x0403: exactly four lower-case hex digits, as sysfs prints
/// `idVendor` (`%04x`). Anything else gives no condition.
fn vendor_literal(p: &[u8]) -> Option<u16> {
    if p.len() != 4 || !p.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u16::from_str_radix(core::str::from_utf8(p).ok()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Matched;

    fn rules(text: &str) -> RuleSet {
        let dir = std::env::temp_dir().join(format!("hotplugd-index-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join(format!(
            "{:x}.rules",
            text.len() * 31 + text.as_bytes()[0] as usize
        ));
        std::fs::write(&f, text).unwrap();
        let rs = crate::rules::parse::load(std::slice::from_ref(&f), &["log"], false).unwrap();
        let _ = std::fs::remove_file(f);
        rs
    }

    fn selected(rs: &RuleSet, d: &[u8]) -> Vec<usize> {
        let ev = Uevent::parse(d).unwrap();
        let usb = UsbView::of(&ev);
        let idx = RuleIndex::build(rs);
        let sel = idx.select(&ev, usb.as_ref());
        listed(&sel, rs.rules.len())
    }

    /// The rules a selection keeps, in order.
    fn listed(sel: &Selection<'_>, rules: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut i = sel.next(0);
        while i < rules {
            out.push(i);
            i = sel.next(i + 1);
        }
        out
    }

    const LO: &[u8] = b"change@/devices/virtual/net/lo\0ACTION=change\0\
        DEVPATH=/devices/virtual/net/lo\0SUBSYSTEM=net\0INTERFACE=lo\0";
    const FTDI: &[u8] = b"add@/devices/u/1-1\0ACTION=add\0DEVPATH=/devices/u/1-1\0\
        SUBSYSTEM=usb\0DEVTYPE=usb_device\0PRODUCT=403/6001/600\0";

    #[test]
    fn keeps_only_rules_the_event_can_meet() {
        let rs = rules(
            "ACTION==\"add\", SUBSYSTEM==\"usb\", ATTR{idVendor}==\"0403\", ENV{A}=\"0\"\n\
             ACTION==\"add\", SUBSYSTEM==\"usb\", ATTR{idVendor}==\"0502\", ENV{A}=\"1\"\n\
             SUBSYSTEM==\"net|usb\", ENV{A}=\"2\"\n\
             SUBSYSTEM!=\"usb\", ENV{A}=\"3\"\n\
             SUBSYSTEM==\"tt*\", ENV{A}=\"4\"\n\
             ACTION==\"remove\", ENV{A}=\"5\"\n\
             USB{idVendor}==\"0403|2341\", ENV{A}=\"6\"\n\
             ATTR{idVendor}==\"0403\", ENV{A}=\"7\"\n",
        );
        assert_eq!(selected(&rs, LO), [2, 3, 4, 6, 7]);
        assert_eq!(selected(&rs, FTDI), [0, 2, 3, 4, 6, 7]);
        // a vendor no rule names: every vendor-keyed rule is out
        let other = b"add@/d\0ACTION=add\0DEVPATH=/d\0SUBSYSTEM=usb\0DEVTYPE=usb_device\0PRODUCT=1d6b/2/600\0";
        assert_eq!(selected(&rs, other), [2, 3, 4]);
        // an action the kernel does not send today keeps the action-keyed rules
        let odd = b"frob@/d\0ACTION=frob\0DEVPATH=/d\0SUBSYSTEM=usb\0";
        assert_eq!(selected(&rs, odd), [0, 1, 2, 3, 4, 5, 6, 7]);
    }

    /// The fixture's 76 real USB events (and two made-up ones) through
    /// `evaluate` (which uses the index) and through the rules one by one
    /// without it: the same matches. Returns the matches counted.
    fn same_with_and_without_the_index(rs: &RuleSet) -> usize {
        let text = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/corpus/sysfs/aarch64/uevents.jsonl"
        ))
        .unwrap();
        let sysfs = crate::sys::sysfs::SysfsRoot::new(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/corpus/sysfs/aarch64"
        )));
        let mut events = crate::replay::read_events(&text).unwrap();
        events.push(LO.to_vec());
        events.push(FTDI.to_vec());
        let mut m: Box<Matched> = Box::default();
        let mut matched = 0;
        for d in &events {
            let ev = Uevent::parse(d).unwrap();
            rs.evaluate(&ev, &sysfs, &mut m);
            let with: Vec<usize> = m.rules.iter().copied().collect();
            matched += with.len();
            let usb = UsbView::of(&ev);
            let mut without = Vec::new();
            let mut i = 0;
            while i < rs.rules.len() {
                let r = &rs.rules[i];
                if !r.label && rs.rule_matches(r, &ev, usb.as_ref(), &sysfs, &m).is_some() {
                    without.push(i);
                    if r.last_rule {
                        break;
                    }
                    i = r.goto.unwrap_or(i + 1);
                } else {
                    i += 1;
                }
            }
            assert_eq!(with, without, "{}", ev.devpath());
        }
        matched
    }

    #[test]
    fn evaluation_with_the_index_equals_evaluation_of_every_rule() {
        let rs = rules(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/bench/rules/usb-100.rules"
            ))
            .unwrap(),
        );
        let matched = same_with_and_without_the_index(&rs);
        assert!(matched > 5, "the rules really matched ({matched})");
    }

    #[test]
    fn attrs_vendor_rules_give_the_same_matches_with_the_chain_index() {
        // the fixture's vendors (FTDI, NEC hub, QEMU, Netchip, ...), the
        // root hubs', made-up ones; alternatives, a negation, a glob, a
        // vendor on a parent only, a GOTO over vendor rules
        let mut text = String::from(
            "ATTRS{idVendor}==\"1d6b\", ENV{ROOT}=\"1\"\n\
             SUBSYSTEM==\"tty\", ATTRS{idVendor}==\"0403|2341\", ENV{TTY}=\"1\"\n\
             ATTRS{idVendor}!=\"0403\", ENV{NOT}=\"1\"\n\
             ATTRS{idVendor}==\"04*\", ENV{GLOB}=\"1\"\n\
             ATTRS{idVendor}==\"0403\", GOTO=\"end\"\n\
             ATTRS{idVendor}==\"46f4\", ENV{SKIPPED}=\"1\"\n\
             LABEL=\"end\"\n\
             KERNEL==\"ttyUSB*\", ATTRS{idVendor}==\"0403\", ATTRS{idProduct}==\"6001\", ENV{BOTH}=\"1\"\n",
        );
        for (n, v) in [0x0403u16, 0x0409, 0x46f4, 0x0525, 0x0627, 0x1234, 0xfeed]
            .into_iter()
            .enumerate()
        {
            text.push_str(&format!(
                "ATTRS{{idVendor}}==\"{v:04x}\", ENV{{HIT}}=\"{n}\"\n"
            ));
        }
        let rs = rules(&text);
        assert!(!rs.index().chain.is_empty(), "the chain index is in use");
        let matched = same_with_and_without_the_index(&rs);
        assert!(matched > 20, "the rules really matched ({matched})");
    }

    #[test]
    fn the_chain_narrows_to_the_vendors_found() {
        let rs = rules(
            "ATTRS{idVendor}==\"0403\", ENV{A}=\"0\"\n\
             ATTRS{idVendor}==\"1d6b|0409\", ENV{A}=\"1\"\n\
             ENV{A}=\"2\"\n\
             ATTRS{idVendor}!=\"0403\", ENV{A}=\"3\"\n",
        );
        let idx = rs.index();
        let ev = Uevent::parse(LO).unwrap();
        let keep = |found: &[u16]| {
            let mut sel = idx.select(&ev, None);
            assert!(sel.wants_chain(idx));
            idx.narrow(&mut sel, &ChainVendors::from_slice(found).unwrap());
            listed(&sel, rs.rules.len())
        };
        assert_eq!(keep(&[]), [2, 3]);
        assert_eq!(keep(&[0x0403, 0x1d6b]), [0, 1, 2, 3]);
        assert_eq!(keep(&[0x0409]), [1, 2, 3]);
        // no vendor rule left after the other sets: nothing to read
        let only = rules("SUBSYSTEM==\"usb\", ATTRS{idVendor}==\"0403\", ENV{A}=\"0\"\n");
        assert!(!only.index().select(&ev, None).wants_chain(only.index()));
    }
}
