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
//!   it anyway. `ATTRS{idVendor}` is not used: it walks up to hubs of other
//!   vendors.
//!
//! Negated terms (`!=`) and globs give no condition; the rule stays a
//! candidate for every event.

use super::{glob, MatchKey, RuleSet};
use crate::uevent::Uevent;
use crate::usb::UsbView;

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
    rules: usize,
}

/// The rules one event can meet: iterate with [`Selection::next`].
#[derive(Clone, Copy, Debug)]
pub struct Selection<'a> {
    sets: [&'a [u64]; 3],
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
        self.sets[0][w] & self.sets[1][w] & self.sets[2][w]
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
        for (i, r) in rs.rules.iter().enumerate() {
            if r.label {
                // never matches; GOTO lands on it and goes on from there
                rule_subs.push(None);
                rule_vendors.push(None);
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
                    .find_map(|t| {
                        literal_alts(&t.pattern)?
                            .iter()
                            .map(|a| vendor_literal(a))
                            .collect::<Option<Vec<u16>>>()
                    }),
            );
        }

        let mut names: Vec<&[u8]> = rule_subs.iter().flatten().flatten().copied().collect();
        names.sort_unstable();
        names.dedup();
        let mut other_subsystem = empty();
        let mut subsystems: Vec<(Box<[u8]>, Bits)> =
            names.iter().map(|s| (Box::from(*s), empty())).collect();
        for (i, subs) in rule_subs.iter().enumerate() {
            match subs {
                None => {
                    set(&mut other_subsystem, i);
                    for (_, b) in subsystems.iter_mut() {
                        set(b, i);
                    }
                }
                Some(list) => {
                    for s in list {
                        if let Ok(k) = names.binary_search(s) {
                            set(&mut subsystems[k].1, i);
                        }
                    }
                }
            }
        }

        let mut ids: Vec<u16> = rule_vendors.iter().flatten().flatten().copied().collect();
        ids.sort_unstable();
        ids.dedup();
        let mut other_vendor = empty();
        let mut vendors: Vec<(u16, Bits)> = ids.iter().map(|&v| (v, empty())).collect();
        for (i, vs) in rule_vendors.iter().enumerate() {
            match vs {
                None => {
                    set(&mut other_vendor, i);
                    for (_, b) in vendors.iter_mut() {
                        set(b, i);
                    }
                }
                Some(list) => {
                    for v in list {
                        if let Ok(k) = ids.binary_search(v) {
                            set(&mut vendors[k].1, i);
                        }
                    }
                }
            }
        }
        RuleIndex {
            by_action,
            subsystems,
            other_subsystem,
            vendors,
            other_vendor,
            all,
            rules: n,
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
        let mut out = Vec::new();
        let mut i = sel.next(0);
        while i < rs.rules.len() {
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

    #[test]
    fn evaluation_with_the_index_equals_evaluation_of_every_rule() {
        // The same rules and events through evaluate (which uses the index)
        // and through the rules one by one without it: same matches.
        let rs = rules(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/bench/rules/usb-100.rules"
            ))
            .unwrap(),
        );
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
        assert!(matched > 5, "the rules really matched ({matched})");
    }
}
