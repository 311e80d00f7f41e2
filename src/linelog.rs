//! A child's output, logged line by line within a rate: what handlers,
//! services and `modprobe` runs write. No I/O of its own (it logs through
//! `log`) and no clock: the caller passes `now`.
//!
//! At most [`LOG_LINES_PER_SEC`] lines a second are logged; the rest are
//! counted (`output_lines_suppressed`) and summarised once the second is
//! over, so a flooding child cannot grow the log without bound. A line
//! longer than [`HANDLER_LINE`] is logged cut, marked and counted
//! (`output_lines_cut`). The line buffer is fixed: nothing is allocated
//! per line.

use std::time::{Duration, Instant};

use log::{info, warn};

use crate::limits::HANDLER_LINE;
use crate::stats::Stats;

/// Lines of one child's output logged per second; the rest are counted
/// and summarised once a second.
pub const LOG_LINES_PER_SEC: u32 = 20;

/// The log state of one child's output.
#[derive(Debug)]
pub struct LineLog {
    pid: i32,
    line: heapless::Vec<u8, HANDLER_LINE>,
    cutting: bool,
    /// Start of the current one-second window and lines logged in it.
    window: Instant,
    window_lines: u32,
    /// What was not logged since the last summary.
    quiet_lines: u64,
    quiet_bytes: u64,
    /// Lines seen so far, logged or not.
    lines: u64,
}

impl LineLog {
    /// Output of `pid`, starting now.
    pub fn new(pid: i32, now: Instant) -> LineLog {
        LineLog {
            pid,
            line: heapless::Vec::new(),
            cutting: false,
            window: now,
            window_lines: 0,
            quiet_lines: 0,
            quiet_bytes: 0,
            lines: 0,
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Lines seen so far, logged or not.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Splits `data` into lines and logs each, within the rate.
    pub fn feed(&mut self, mut data: &[u8], now: Instant, stats: &mut Stats) {
        if now >= self.window + Duration::from_secs(1) {
            self.summarise();
            self.window = now;
            self.window_lines = 0;
        }
        while !data.is_empty() {
            let nl = data.iter().position(|&b| b == b'\n');
            let chunk = &data[..nl.unwrap_or(data.len())];
            if self.window_lines >= LOG_LINES_PER_SEC {
                // over the rate: count, don't keep
                self.quiet_bytes += (chunk.len() + usize::from(nl.is_some())) as u64;
                if nl.is_some() {
                    self.quiet_lines += 1;
                    self.lines += 1;
                    stats.output_lines_suppressed += 1;
                    self.line.clear();
                    self.cutting = false;
                }
            } else if !self.cutting {
                let room = self.line.capacity() - self.line.len();
                let take = chunk.len().min(room);
                let _ = self.line.extend_from_slice(&chunk[..take]);
                if take < chunk.len() {
                    stats.output_lines_cut += 1;
                    info!(
                        "[{}] {} [line cut at {HANDLER_LINE} bytes]",
                        self.pid,
                        crate::exec::printable(&self.line)
                    );
                    self.window_lines += 1;
                    self.lines += 1;
                    self.line.clear();
                    self.cutting = true;
                }
            }
            match nl {
                Some(i) => {
                    if !self.cutting && self.window_lines < LOG_LINES_PER_SEC {
                        self.flush();
                    }
                    self.cutting = false;
                    data = &data[i + 1..];
                }
                None => break,
            }
        }
    }

    /// Logs a line not yet ended by a newline (the pipe ended).
    pub fn flush(&mut self) {
        if !self.line.is_empty() {
            info!("[{}] {}", self.pid, crate::exec::printable(&self.line));
            self.window_lines += 1;
            self.lines += 1;
            self.line.clear();
        }
    }

    /// The pipe ended or the child was reaped: the last line and the
    /// summary of what was not logged.
    pub fn finish(&mut self) {
        self.flush();
        self.summarise();
    }

    /// When [`LineLog::tick`] has a summary to log.
    pub fn due(&self) -> Option<Instant> {
        (self.quiet_lines > 0).then(|| self.window + Duration::from_secs(1))
    }

    /// Logs the summary once its second is over.
    pub fn tick(&mut self, now: Instant) {
        if self.due().is_some_and(|d| now >= d) {
            self.summarise();
        }
    }

    fn summarise(&mut self) {
        if self.quiet_lines > 0 {
            warn!(
                "[{}] {} more lines ({} bytes) of output not logged (over {LOG_LINES_PER_SEC} lines/s; \
                 output_lines_suppressed counts them)",
                self.pid, self.quiet_lines, self.quiet_bytes
            );
            self.quiet_lines = 0;
            self.quiet_bytes = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_logged_within_the_rate_and_counted() {
        let t0 = Instant::now();
        let mut st = Stats::default();
        let mut l = LineLog::new(7, t0);
        for _ in 0..100 {
            l.feed(b"y\n", t0, &mut st);
        }
        assert_eq!(l.lines(), 100);
        assert_eq!(st.output_lines_suppressed, 80);
        assert_eq!(l.due(), Some(t0 + Duration::from_secs(1)));
        l.tick(t0 + Duration::from_secs(1));
        assert_eq!(l.due(), None);
        // a new second: logged again
        l.feed(b"z\n", t0 + Duration::from_secs(1), &mut st);
        assert_eq!(st.output_lines_suppressed, 80);
    }

    #[test]
    fn a_long_line_is_cut_once_and_counted() {
        let t0 = Instant::now();
        let mut st = Stats::default();
        let mut l = LineLog::new(7, t0);
        l.feed(&[b'x'; HANDLER_LINE + 10], t0, &mut st);
        l.feed(b"xx\nnext", t0, &mut st);
        l.finish();
        assert_eq!(st.output_lines_cut, 1);
        assert_eq!(l.lines(), 2);
    }
}
