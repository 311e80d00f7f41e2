//! The control protocol between `hotplugd run` and the tools (`settle`,
//! `trigger --settle`, `wait`, `info`): requests, replies, and the state
//! machine that decides when a `settle` may be answered. Pure: the socket
//! itself (`AF_UNIX`, `SOCK_SEQPACKET`, root only) is [`crate::sys::control`],
//! and [`crate::daemon`] serves it.
//!
//! # Messages
//! One request per datagram, one reply per request, all text:
//!
//! - `status` → `ok` then `KEY=VALUE` lines: `seqnum=N` (the SEQNUM of the
//!   last kernel event handed to the rules; absent before the first),
//!   `queued=LABEL` and `running=LABEL` (one line per job, `ACTION DEVPATH`),
//!   `recovery=busy|idle` (a coldplug or resync pass), `stats=...` (the
//!   counters line).
//! - `settle` → `ok` and `seqnum=N`, sent only once the daemon has read its
//!   uevent socket to the end *after* reading the request, has no job
//!   queued or running and no coldplug or resync pass pending. The wait has
//!   no limit on the daemon's side: the client owns the timeout.
//! - `device DEVPATH` → `ok` and the `KEY=VALUE` record the device table
//!   holds for it, or `unknown` (not tracked, or not present).
//! - anything else → `error MESSAGE`.
//!
//! # Why a ping covers the kernel's seqnum
//! A write to a `uevent` file (and every device the kernel adds or removes)
//! puts its event on every listening netlink socket of the namespace
//! *before* the system call returns (`kobject_uevent_env` →
//! `netlink_broadcast`). So once the tool's trigger has returned and the
//! daemon has then read its socket to the end, every event the kernel sent
//! the daemon up to that point has been read. Comparing with
//! `/sys/kernel/uevent_seqnum` instead would hang: the counter also
//! counts events of other network namespaces (a container's `lo`), which
//! never reach the daemon's socket.

use core::fmt::Write as _;

/// Where `hotplugd run` listens unless told otherwise (`--control`).
pub const DEFAULT_PATH: &str = "/run/hotplugd/control";

/// The longest request read (`device ` + a devpath of `MAX_PATH`).
pub const MAX_REQUEST: usize = 4200;

/// The longest reply sent; a longer job list is cut (said in the reply).
pub const MAX_REPLY: usize = 32 * 1024;

/// Clients served at once; one more is accepted and closed at once
/// (counted in `control_refused=`).
pub const MAX_CLIENTS: usize = 8;

/// Requests read from one client per turn of the loop.
pub const REQUESTS_PER_TURN: usize = 4;

/// When every client slot is taken, a client that has sent nothing for
/// this long and waits for no `settle` answer is dropped to make room (a
/// client that connects and never asks would otherwise hold its slot for
/// good).
pub const IDLE_DROP: std::time::Duration = std::time::Duration::from_secs(5);

/// A parsed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    /// `status`
    Status,
    /// `settle`
    Settle,
    /// `device DEVPATH`
    Device(&'a str),
}

impl<'a> Request<'a> {
    /// Parses one datagram (a trailing newline is allowed).
    pub fn parse(b: &'a [u8]) -> Result<Request<'a>, &'static str> {
        let b = b.strip_suffix(b"\n").unwrap_or(b);
        let s = core::str::from_utf8(b).map_err(|_| "the request is not UTF-8")?;
        match s {
            "status" => Ok(Request::Status),
            "settle" => Ok(Request::Settle),
            _ => match s.strip_prefix("device ") {
                Some(p) if p.starts_with('/') && !p.contains(['\n', '\0']) => {
                    Ok(Request::Device(p))
                }
                Some(_) => Err("device: expected a devpath starting with /"),
                None => Err("unknown request: expected status, settle or device DEVPATH"),
            },
        }
    }
}

/// What the daemon tells a `status` request; filled by the loop (seqnum,
/// counters) and the mode (jobs, recovery).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// SEQNUM of the last kernel event handed to the rules.
    pub seqnum: Option<u64>,
    /// Labels (`ACTION DEVPATH`) of jobs waiting for a handler slot.
    pub queued: Vec<String>,
    /// Labels of jobs with a handler running.
    pub running: Vec<String>,
    /// A coldplug or resync pass is under way.
    pub recovery_busy: bool,
    /// The counters line.
    pub stats: String,
}

impl Status {
    /// The reply text, at most [`MAX_REPLY`] bytes.
    pub fn reply(&self) -> String {
        let mut s = String::from("ok\n");
        if let Some(n) = self.seqnum {
            let _ = writeln!(s, "seqnum={n}");
        }
        let _ = writeln!(
            s,
            "recovery={}",
            if self.recovery_busy { "busy" } else { "idle" }
        );
        let _ = writeln!(s, "stats={}", self.stats);
        let jobs = self
            .running
            .iter()
            .map(|l| ("running", l))
            .chain(self.queued.iter().map(|l| ("queued", l)));
        let total = self.running.len() + self.queued.len();
        for (n, (k, l)) in jobs.enumerate() {
            if s.len() + k.len() + l.len() + 64 > MAX_REPLY {
                let _ = writeln!(s, "cut={}", total - n);
                break;
            }
            let _ = writeln!(s, "{k}={l}");
        }
        s
    }
}

/// A reply, parsed by a tool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    /// The `KEY=VALUE` lines after `ok`, in order.
    pub fields: Vec<(String, String)>,
}

impl Reply {
    /// Parses a reply; `Err` with the daemon's message for `error ...`,
    /// `Ok(None)` for `unknown`.
    pub fn parse(b: &[u8]) -> Result<Option<Reply>, String> {
        let s = String::from_utf8_lossy(b);
        let mut lines = s.lines();
        match lines.next() {
            Some("ok") => {}
            Some("unknown") => return Ok(None),
            Some(l) => {
                return Err(l.strip_prefix("error ").unwrap_or(l).to_string());
            }
            None => return Err("empty reply".into()),
        }
        let fields = lines
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Ok(Some(Reply { fields }))
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in order.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Where one waiting `settle` stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Read; the socket has not been read to its end since.
    NeedDrain,
    /// The socket was read to its end after the request: answer once idle.
    Drained,
}

/// The `settle` requests waiting for an answer, by client id.
#[derive(Debug, Default)]
pub struct Settles {
    waiting: Vec<(usize, Phase)>,
}

impl Settles {
    /// A `settle` from `client` was read. The loop must then read the
    /// uevent socket (even if it did not become readable).
    pub fn request(&mut self, client: usize) {
        self.waiting.push((client, Phase::NeedDrain));
    }

    /// The uevent socket was read to its end.
    pub fn drained(&mut self) {
        for w in &mut self.waiting {
            w.1 = Phase::Drained;
        }
    }

    /// Client `client` went away: forget its requests.
    pub fn forget(&mut self, client: usize) {
        self.waiting.retain(|w| w.0 != client);
    }

    /// True if any request waits for a drain of the socket.
    pub fn wants_drain(&self) -> bool {
        self.waiting.iter().any(|w| w.1 == Phase::NeedDrain)
    }

    /// True if `client` waits for a `settle` answer.
    pub fn waiting_for(&self, client: usize) -> bool {
        self.waiting.iter().any(|w| w.0 == client)
    }

    /// True if nothing waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// With the daemon idle (`idle`): the clients to answer now (each
    /// once), removed from the list.
    pub fn take_answerable(&mut self, idle: bool, out: &mut Vec<usize>) {
        out.clear();
        if !idle {
            return;
        }
        self.waiting.retain(|&(c, p)| {
            if p == Phase::Drained {
                out.push(c);
                false
            } else {
                true
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        assert_eq!(Request::parse(b"status\n"), Ok(Request::Status));
        assert_eq!(Request::parse(b"settle"), Ok(Request::Settle));
        assert_eq!(
            Request::parse(b"device /devices/virtual/net/lo"),
            Ok(Request::Device("/devices/virtual/net/lo"))
        );
        assert!(Request::parse(b"device lo").is_err());
        assert!(Request::parse(b"reboot").is_err());
        assert!(Request::parse(b"\xff").is_err());
    }

    #[test]
    fn a_settle_waits_for_a_drain_after_it_and_for_idle() {
        let mut s = Settles::default();
        let mut out = Vec::new();
        s.request(3);
        assert!(s.wants_drain());
        // idle but the socket not read since the request: not yet
        s.take_answerable(true, &mut out);
        assert!(out.is_empty());
        s.drained();
        assert!(!s.wants_drain());
        // drained but a handler runs: not yet
        s.take_answerable(false, &mut out);
        assert!(out.is_empty());
        // a second request after the drain needs its own drain
        s.request(4);
        s.take_answerable(true, &mut out);
        assert_eq!(out, vec![3]);
        assert!(s.wants_drain());
        s.forget(4);
        assert!(s.is_empty());
    }

    #[test]
    fn status_round_trips_and_is_bounded() {
        let st = Status {
            seqnum: Some(42),
            queued: vec!["add /devices/a".into()],
            running: vec!["change /devices/b".into()],
            recovery_busy: false,
            stats: "stats: received=1".into(),
        };
        let r = Reply::parse(st.reply().as_bytes()).unwrap().unwrap();
        assert_eq!(r.get("seqnum"), Some("42"));
        assert_eq!(r.all("queued").collect::<Vec<_>>(), ["add /devices/a"]);
        assert_eq!(r.all("running").collect::<Vec<_>>(), ["change /devices/b"]);
        let big = Status {
            queued: (0..2000)
                .map(|i| format!("add /devices/x/{i:040}"))
                .collect(),
            ..Status::default()
        };
        let text = big.reply();
        assert!(text.len() <= MAX_REPLY);
        let r = Reply::parse(text.as_bytes()).unwrap().unwrap();
        let shown = r.all("queued").count();
        assert_eq!(
            r.get("cut").unwrap().parse::<usize>().unwrap() + shown,
            2000
        );
        assert_eq!(Reply::parse(b"unknown\n"), Ok(None));
        assert_eq!(Reply::parse(b"error nope\n"), Err("nope".into()));
    }
}
