//! hotplugd: a small, exact uevent/hotplug daemon for embedded Linux.
//!
//! # The layers, and who may use whom
//!
//! ```text
//!   main.rs ── cli ── app ──────────────── daemon (the one mio loop)
//!                                              │
//!          pure (no I/O):  monitor  uevent  stats
//!          the OS:         sys/ (netlink, signals) ── nix, libc
//! ```
//!
//! - [`uevent`] turns untrusted bytes into a checked, borrowed view. Pure,
//!   never panics, never allocates.
//! - [`monitor`] formats events (text or JSON) into a fixed buffer. Pure.
//! - [`stats`] holds the counters. Pure.
//! - [`sys`] is the only module that calls the OS below `std` and the only
//!   one with `unsafe` (each block with a `// SAFETY:` note): the crate
//!   denies `unsafe_code` and `sys` alone allows it.
//! - [`daemon`] owns the `mio::Poll` and every descriptor and child
//!   process: it receives, checks the sender, parses, counts, and hands
//!   events to a [`daemon::Mode`]; each turn serves every source within a
//!   budget (signals, handler pipes, the socket, timers).
//! - [`devnode`] decides /dev's duties (OWNER/GROUP/MODE, SYMLINK,
//!   link_priority; pure); [`sys::devnode`] carries them out.
//! - [`devices`] is the device table (pure, fixed capacity);
//!   [`recovery`] keeps it in step and runs coldplug and the resync after
//!   an overrun, walking sysfs through [`sys::walk`].
//! - [`runner`] runs the rules; [`exec`] is the handler engine, a state
//!   machine with no I/O and no clock: the loop gives it the time and what
//!   happened (output, exits) and carries out what it asks through
//!   [`exec::ProcIo`].
//! - [`broadcast`] encodes handled events for other programs (libudev's
//!   and the kernel's netlink formats). Pure; [`sys::broadcast`] sends.
//! - [`identity`] computes udev's `usb_id` / `path_id` properties over a
//!   sysfs view (pure; [`sys::sysfs_view`] reads a real tree).
//! - [`control`] is the protocol between the daemon and the tools (pure:
//!   requests, replies, when a `settle` may be answered); the daemon serves
//!   it through [`sys::control`]. [`tools`] are the short-lived commands
//!   (`info`, `test`, `trigger`, `settle`, `wait`) that read sysfs and ask
//!   the daemon; [`rules::trace`] and [`rules::lint`] serve `test` and
//!   `check`.
//! - [`boot`] gathers the boot duties beside the handler engine, each a
//!   pure state machine driven like [`exec`]: [`services`]
//!   (`RUN{service}`: device-bound long-running programs), [`kmod`]
//!   (`kmod load`: batched `modprobe` from MODALIAS) and [`firmware`]
//!   (the firmware user-helper; its copy runs in a child from
//!   [`sys::firmware`]). The runner routes each event's work and every
//!   reaped pid and pipe read there first. Allocation: per service (its
//!   argv and environment) and per `modprobe` batch, never per event.
//! - [`app`] runs one command; [`cli`] parses the command line.
//!
//! Arrows point one way: pure modules import nothing from `sys`, `daemon`
//! or `app`.
//!
//! # Memory
//! Allocation happens at start-up only: the 8 KiB receive buffer, the
//! 64 KiB output buffer, the control-message buffer, the poll's event
//! list, the compiled rules (again on SIGHUP) and the device table. Beyond
//! the receive → parse → match path: a job for each event with handlers
//! (argv, environment), and a resync's sysfs snapshot. `--broadcast` allocates
//! its two 8 KiB buffers at start; encoding and sending allocate nothing,
//! except that an event with no job waiting behind a related running job
//! becomes an empty job (so it is broadcast in order). The receive → parse → print path allocates nothing; a test counts
//! allocations across a burst of real kernel events (`tests/alloc.rs`).

#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod app;
pub mod boot;
pub mod broadcast;
pub mod cli;
pub mod control;
pub mod daemon;
pub mod devices;
pub mod devnode;
pub mod exec;
pub mod firmware;
pub mod identity;
pub mod job;
pub mod json;
pub mod kmod;
pub mod limits;
pub mod linelog;
pub mod monitor;
pub mod recovery;
pub mod replay;
pub mod rules;
pub mod runner;
pub mod services;
pub mod stats;
pub mod sys;
pub mod tools;
pub mod uevent;
pub mod usb;
