//! The memory of handler jobs: one arena reserved at start, cut into fixed
//! slots, recycled; nothing is allocated per job while events arrive.
//!
//! A job is what one event asks the handler engine ([`crate::exec`]) to do:
//! its label, DEVPATH, the event in wire form (what a builtin parses), the
//! handler environment, and the steps (`RUN` argv, builtin arguments,
//! `ATTR{}` writes). All of it is written once, by a [`JobWriter`], into the
//! job's slot of [`Jobs`], and read back through a [`JobView`]:
//!
//! - strings are byte spans of the slot;
//! - argv words and environment entries are NUL-terminated one after
//!   another ([`Words`]), exactly what `execve` takes, so starting a handler
//!   copies nothing;
//! - the `HOTPLUGD_RULE=file:line` entry of each step is written with it.
//!
//! The arena is one zeroed allocation of `slots × slot_bytes`: the kernel
//! maps its pages when a job first writes them, so an idle daemon's
//! resident memory does not grow with `--max-queue`. A job larger than its
//! slot (only rules with many long `ENV{}` values or arguments get there:
//! a kernel event is at most ~2 KiB, see [`crate::limits::JOB_SLOT`]) moves
//! to the heap, and that is counted (`job_oversize`) and logged by the
//! caller: nothing is cut.

use core::fmt;

use crate::limits::MAX_RUN_PER_EVENT;

/// A byte range of a job's data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn of<'a>(&self, data: &'a [u8]) -> &'a [u8] {
        data.get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

/// NUL-terminated words one after another (argv, arguments, environment
/// entries).
#[derive(Clone, Copy, Debug, Default)]
pub struct Words<'a> {
    block: &'a [u8],
}

impl<'a> Words<'a> {
    /// Words from a block in which each word ends with a NUL byte.
    pub fn new(block: &'a [u8]) -> Words<'a> {
        Words { block }
    }

    /// The words, without their NUL.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.block
            .split_inclusive(|&b| b == 0)
            .map(|w| w.strip_suffix(&[0]).unwrap_or(w))
    }

    /// How many words.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.block.is_empty()
    }

    /// Word `i`.
    pub fn get(&self, i: usize) -> Option<&'a [u8]> {
        self.iter().nth(i)
    }

    /// The block itself: every word followed by its NUL.
    pub fn block(&self) -> &'a [u8] {
        self.block
    }
}

/// One step of a job, as spans of its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Run a program: `argv` (NUL-terminated words).
    Exec {
        /// Program and arguments, substituted.
        argv: Span,
        /// `HOTPLUGD_RULE=file:line` and its NUL.
        rule: Span,
    },
    /// Call a builtin.
    Builtin {
        /// Index in [`crate::exec::Builtins`].
        id: usize,
        /// Its name.
        name: Span,
        /// Its arguments (NUL-terminated words).
        args: Span,
        /// `HOTPLUGD_RULE=file:line` and its NUL.
        rule: Span,
    },
    /// Write a sysfs attribute of the event's device.
    WriteAttr {
        /// Attribute, relative to the device.
        name: Span,
        /// Bytes to write.
        value: Span,
        /// `HOTPLUGD_RULE=file:line` and its NUL.
        rule: Span,
    },
}

const RULE_KEY: &[u8] = b"HOTPLUGD_RULE=";

/// The slot of a job started with every slot in use: its bytes are on the heap.
const NO_SLOT: u32 = u32::MAX;

/// The work of one event. Its bytes are in a slot of [`Jobs`]; read them
/// with [`Jobs::view`]. Give it back with [`Jobs::recycle`].
#[derive(Debug)]
pub struct Job {
    slot: u32,
    heap: Option<Vec<u8>>,
    label: Span,
    devpath: Span,
    devpath_old: Option<Span>,
    raw: Span,
    env: Span,
    used: u32,
    /// What is left to do, in order.
    pub(crate) steps: heapless::Deque<Step, MAX_RUN_PER_EVENT>,
}

/// The arena and its free slots.
pub struct Jobs {
    arena: Vec<u8>,
    slot_bytes: usize,
    free: Vec<u32>,
    slots: usize,
}

impl fmt::Debug for Jobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jobs")
            .field("slots", &self.slots)
            .field("slot_bytes", &self.slot_bytes)
            .field("free", &self.free.len())
            .finish()
    }
}

impl Jobs {
    /// Reserves `slots` slots of `slot_bytes` each.
    pub fn new(slots: usize, slot_bytes: usize) -> Jobs {
        let slots = slots.max(1);
        Jobs {
            // zeroed: the kernel maps the pages only when written
            arena: vec![0; slots * slot_bytes],
            slot_bytes,
            free: (0..slots as u32).rev().collect(),
            slots,
        }
    }

    /// Bytes reserved.
    pub fn reserved(&self) -> usize {
        self.arena.len()
    }

    /// Slots not in use.
    pub fn available(&self) -> usize {
        self.free.len()
    }

    /// Starts a job in a free slot. With none free (the engine stops taking
    /// events before that: see `Exec::has_room`) the job goes to the heap,
    /// as an oversized one does: counted by the caller, never lost.
    pub fn start(
        &mut self,
        action: &str,
        devpath: &str,
        devpath_old: Option<&str>,
    ) -> JobWriter<'_> {
        let (slot, bytes): (u32, &mut [u8]) = match self.free.pop() {
            Some(slot) => {
                let at = slot as usize * self.slot_bytes;
                (slot, &mut self.arena[at..at + self.slot_bytes])
            }
            None => (NO_SLOT, &mut []),
        };
        let mut w = JobWriter {
            job: Job {
                slot,
                heap: None,
                label: Span::default(),
                devpath: Span::default(),
                devpath_old: None,
                raw: Span::default(),
                env: Span::default(),
                used: 0,
                steps: heapless::Deque::new(),
            },
            slot: bytes,
            pos: 0,
            step_at: None,
            nul_in_word: false,
        };
        let s = w.pos;
        w.put(action.as_bytes());
        w.put(b" ");
        let d = w.pos;
        w.put(devpath.as_bytes());
        w.job.label = w.span(s);
        w.job.devpath = w.span(d);
        if let Some(old) = devpath_old {
            let o = w.pos;
            w.put(old.as_bytes());
            w.job.devpath_old = Some(w.span(o));
        }
        w
    }

    fn data<'a>(&'a self, job: &'a Job) -> &'a [u8] {
        match &job.heap {
            Some(h) => h,
            None if job.slot == NO_SLOT => &[],
            None => {
                let at = job.slot as usize * self.slot_bytes;
                &self.arena[at..at + self.slot_bytes]
            }
        }
    }

    /// Read access to a job's contents.
    pub fn view<'a>(&'a self, job: &'a Job) -> JobView<'a> {
        JobView {
            data: self.data(job),
            job,
        }
    }

    /// Gives the job's slot back.
    pub fn recycle(&mut self, job: Job) {
        if job.slot != NO_SLOT {
            debug_assert!(!self.free.contains(&job.slot));
            self.free.push(job.slot);
        }
    }
}

/// Read access to one job.
#[derive(Clone, Copy)]
pub struct JobView<'a> {
    data: &'a [u8],
    job: &'a Job,
}

fn text(b: &[u8]) -> &str {
    // written from `&str`, so always valid
    core::str::from_utf8(b).unwrap_or_default()
}

impl<'a> JobView<'a> {
    /// `ACTION DEVPATH`, for logs.
    pub fn label(&self) -> &'a str {
        text(self.job.label.of(self.data))
    }

    /// DEVPATH.
    pub fn devpath(&self) -> &'a str {
        text(self.job.devpath.of(self.data))
    }

    /// DEVPATH_OLD of a `move`.
    pub fn devpath_old(&self) -> Option<&'a str> {
        self.job.devpath_old.map(|s| text(s.of(self.data)))
    }

    /// The event in wire form with the `ENV{}` assignments appended.
    pub fn raw(&self) -> &'a [u8] {
        self.job.raw.of(self.data)
    }

    /// The handler environment (`KEY=VALUE` entries), without
    /// HOTPLUGD_RULE and the daemon's extra entries.
    pub fn env(&self) -> Words<'a> {
        Words::new(self.job.env.of(self.data))
    }

    /// The bytes of a span of this job.
    pub fn bytes(&self, s: Span) -> &'a [u8] {
        s.of(self.data)
    }

    /// The text of a span written from a `&str` (names, labels).
    pub fn str(&self, s: Span) -> &'a str {
        text(s.of(self.data))
    }

    /// The words of a span of this job.
    pub fn words(&self, s: Span) -> Words<'a> {
        Words::new(s.of(self.data))
    }

    /// `file:line` of a step's rule span, for logs.
    pub fn rule(&self, s: Span) -> &'a str {
        let b = s.of(self.data);
        let b = b.strip_prefix(RULE_KEY).unwrap_or(b);
        text(b.strip_suffix(&[0]).unwrap_or(b))
    }

    /// Bytes the job's contents take.
    pub fn used(&self) -> usize {
        self.job.used as usize
    }

    /// The steps left.
    pub fn steps(&self) -> impl Iterator<Item = &'a Step> + 'a {
        self.job.steps.iter()
    }

    /// True if the two jobs must not run at the same time (same device, or
    /// one is a parent of the other).
    pub fn related(&self, other: &JobView<'_>) -> bool {
        let mine = core::iter::once(self.devpath()).chain(self.devpath_old());
        mine.into_iter().any(|a| {
            core::iter::once(other.devpath())
                .chain(other.devpath_old())
                .any(|b| a == b || is_ancestor(a, b) || is_ancestor(b, a))
        })
    }
}

fn is_ancestor(a: &str, b: &str) -> bool {
    b.len() > a.len() && b.starts_with(a) && b.as_bytes()[a.len()] == b'/'
}

/// Why a step was not added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepError {
    /// A word contained a NUL byte (a substituted binary attribute): it
    /// cannot be an argument.
    NulInWord,
    /// More steps than [`MAX_RUN_PER_EVENT`].
    TooMany,
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StepError::NulInWord => "an argument contains a NUL byte",
            StepError::TooMany => "more steps than MAX_RUN_PER_EVENT",
        })
    }
}

/// Writes one job into its slot. Order: [`JobWriter::raw`], then the
/// environment entries, then the steps; [`JobWriter::finish`].
pub struct JobWriter<'a> {
    job: Job,
    slot: &'a mut [u8],
    pos: usize,
    step_at: Option<usize>,
    nul_in_word: bool,
}

impl fmt::Write for JobWriter<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.put(s.as_bytes());
        Ok(())
    }
}

impl JobWriter<'_> {
    fn put(&mut self, b: &[u8]) {
        if let Some(h) = self.job.heap.as_mut() {
            h.extend_from_slice(b);
            self.pos = h.len();
            return;
        }
        if self.pos + b.len() > self.slot.len() {
            let mut h = Vec::with_capacity((self.pos + b.len()) * 2);
            h.extend_from_slice(&self.slot[..self.pos]);
            h.extend_from_slice(b);
            self.pos = h.len();
            self.job.heap = Some(h);
            return;
        }
        self.slot[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }

    fn span(&self, start: usize) -> Span {
        Span {
            start: start as u32,
            end: self.pos as u32,
        }
    }

    /// The event in wire form, then `KEY=VALUE` fields appended to it.
    pub fn raw<'f>(&mut self, event: &[u8], extra: impl Iterator<Item = (&'f str, &'f [u8])>) {
        let s = self.pos;
        self.put(event);
        for (k, v) in extra {
            self.put(k.as_bytes());
            self.put(b"=");
            self.put(v);
            self.put(b"\0");
        }
        self.job.raw = self.span(s);
    }

    /// One `KEY=VALUE` entry of the handler environment; all of them come
    /// one after another, after [`JobWriter::raw`].
    pub fn env(&mut self, key: &[u8], value: &[u8]) {
        if self.job.env.is_empty() {
            self.job.env = self.span(self.pos);
        }
        debug_assert_eq!(self.job.env.end as usize, self.pos);
        self.put(key);
        self.put(b"=");
        self.put(value);
        self.put(b"\0");
        self.job.env.end = self.pos as u32;
    }

    /// Starts the words of a step (argv or builtin arguments).
    pub fn begin_words(&mut self) {
        self.step_at = Some(self.pos);
        self.nul_in_word = false;
    }

    /// One word of the step begun with [`JobWriter::begin_words`].
    pub fn word(&mut self, w: &[u8]) {
        self.nul_in_word |= w.contains(&0);
        self.put(w);
        self.put(b"\0");
    }

    fn words_end(&mut self) -> Span {
        let s = self.step_at.take().unwrap_or(self.pos);
        self.span(s)
    }

    fn rule(&mut self, rule: fmt::Arguments<'_>) -> Span {
        let s = self.pos;
        self.put(RULE_KEY);
        let _ = fmt::Write::write_fmt(self, rule);
        self.put(b"\0");
        self.span(s)
    }

    fn push(&mut self, step: Step) -> Result<(), StepError> {
        self.job
            .steps
            .push_back(step)
            .map_err(|_| StepError::TooMany)
    }

    /// Ends the words begun with [`JobWriter::begin_words`] as a `RUN`.
    pub fn exec(&mut self, rule: fmt::Arguments<'_>) -> Result<(), StepError> {
        let argv = self.words_end();
        if core::mem::take(&mut self.nul_in_word) {
            return Err(StepError::NulInWord);
        }
        let rule = self.rule(rule);
        self.push(Step::Exec { argv, rule })
    }

    /// Ends the words begun with [`JobWriter::begin_words`] as the
    /// arguments of builtin `id`.
    pub fn builtin(
        &mut self,
        id: usize,
        name: &str,
        rule: fmt::Arguments<'_>,
    ) -> Result<(), StepError> {
        let args = self.words_end();
        if core::mem::take(&mut self.nul_in_word) {
            return Err(StepError::NulInWord);
        }
        let n = self.pos;
        self.put(name.as_bytes());
        let name = self.span(n);
        let rule = self.rule(rule);
        self.push(Step::Builtin {
            id,
            name,
            args,
            rule,
        })
    }

    /// An `ATTR{name}=value` write.
    pub fn write_attr(
        &mut self,
        name: &str,
        value: &[u8],
        rule: fmt::Arguments<'_>,
    ) -> Result<(), StepError> {
        let n = self.pos;
        self.put(name.as_bytes());
        let name = self.span(n);
        let v = self.pos;
        self.put(value);
        let value = self.span(v);
        let rule = self.rule(rule);
        self.push(Step::WriteAttr { name, value, rule })
    }

    /// The job; `true` if it outgrew its slot and went to the heap (the
    /// caller counts `job_oversize` and logs it).
    pub fn finish(mut self) -> (Job, bool) {
        let oversize = self.job.heap.is_some();
        self.job.used = self.pos as u32;
        (self.job, oversize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(jobs: &mut Jobs, raw: &[u8]) -> (Job, bool) {
        let mut w = jobs.start("add", "/devices/a", None);
        w.raw(raw, [("X", &b"1"[..])].into_iter());
        w.env(b"ACTION", b"add");
        w.env(b"X", b"1");
        w.begin_words();
        w.word(b"/bin/echo");
        w.word(b"");
        w.word(b"hi there");
        w.exec(format_args!("r.rules:{}", 3)).unwrap();
        w.write_attr("power/control", b"on", format_args!("r.rules:4"))
            .unwrap();
        w.finish()
    }

    #[test]
    fn a_job_reads_back_what_was_written() {
        let mut jobs = Jobs::new(2, 4096);
        let (job, oversize) = one(&mut jobs, b"ACTION=add\0DEVPATH=/devices/a\0");
        assert!(!oversize);
        let v = jobs.view(&job);
        assert_eq!(v.label(), "add /devices/a");
        assert_eq!(v.devpath(), "/devices/a");
        assert_eq!(v.devpath_old(), None);
        assert_eq!(v.raw(), b"ACTION=add\0DEVPATH=/devices/a\0X=1\0");
        assert_eq!(
            v.env().iter().collect::<Vec<_>>(),
            [&b"ACTION=add"[..], b"X=1"]
        );
        let steps: Vec<Step> = v.steps().copied().collect();
        let Step::Exec { argv, rule } = steps[0] else {
            panic!("{steps:?}")
        };
        assert_eq!(
            v.words(argv).iter().collect::<Vec<_>>(),
            [&b"/bin/echo"[..], b"", b"hi there"]
        );
        assert_eq!(v.words(argv).len(), 3);
        assert_eq!(v.bytes(rule), b"HOTPLUGD_RULE=r.rules:3\0");
        assert_eq!(v.rule(rule), "r.rules:3");
        let Step::WriteAttr { name, value, .. } = steps[1] else {
            panic!()
        };
        assert_eq!(
            (v.bytes(name), v.bytes(value)),
            (&b"power/control"[..], &b"on"[..])
        );
    }

    #[test]
    fn slots_are_recycled_and_run_out() {
        let mut jobs = Jobs::new(2, 4096);
        let (a, _) = one(&mut jobs, b"A=1\0");
        let (b, _) = one(&mut jobs, b"B=1\0");
        // none free: the job goes to the heap, whole
        let (spare, oversize) = one(&mut jobs, b"S=1\0");
        assert!(oversize);
        assert_eq!(jobs.view(&spare).raw(), b"S=1\0X=1\0");
        jobs.recycle(spare);
        assert_eq!(jobs.available(), 0);
        assert_eq!(jobs.view(&a).raw(), b"A=1\0X=1\0");
        jobs.recycle(a);
        let (c, _) = one(&mut jobs, b"C=1\0");
        assert_eq!(jobs.view(&b).raw(), b"B=1\0X=1\0");
        assert_eq!(jobs.view(&c).raw(), b"C=1\0X=1\0");
    }

    #[test]
    fn a_job_larger_than_its_slot_moves_to_the_heap_whole() {
        let mut jobs = Jobs::new(1, 64);
        let big = [b'x'; 200];
        let (job, oversize) = one(&mut jobs, &big);
        assert!(oversize);
        let v = jobs.view(&job);
        assert_eq!(&v.raw()[..200], &big[..]);
        assert_eq!(v.label(), "add /devices/a");
        jobs.recycle(job);
        assert_eq!(jobs.available(), 1);
    }

    #[test]
    fn a_word_with_a_nul_is_refused_and_not_a_step() {
        let mut jobs = Jobs::new(1, 4096);
        let mut w = jobs.start("add", "/d", None);
        w.raw(b"", core::iter::empty());
        w.begin_words();
        w.word(b"/bin/x");
        w.word(b"a\0b");
        assert_eq!(w.exec(format_args!("r:1")), Err(StepError::NulInWord));
        let (job, _) = w.finish();
        assert_eq!(jobs.view(&job).steps().count(), 0);
    }

    #[test]
    fn related_jobs_are_same_device_or_parent_or_child() {
        let mut jobs = Jobs::new(4, 256);
        let mk = |jobs: &mut Jobs, p: &str, old: Option<&str>| jobs.start("add", p, old).finish().0;
        let a = mk(&mut jobs, "/devices/usb1/1-1", None);
        let b = mk(&mut jobs, "/devices/usb1/1-1/1-1:1.0", None);
        let c = mk(&mut jobs, "/devices/usb1/1-10", None);
        let d = mk(&mut jobs, "/devices/x", Some("/devices/usb1/1-10"));
        let (va, vb, vc, vd) = (jobs.view(&a), jobs.view(&b), jobs.view(&c), jobs.view(&d));
        assert!(va.related(&vb) && vb.related(&va));
        assert!(!va.related(&vc));
        assert!(vd.related(&vc) && vc.related(&vd));
    }
}
