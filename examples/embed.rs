//! Embedding hotplugd: the same daemon as `hotplugd run`, with a Rust
//! handler of your own next to the built-in `log`.
//!
//! ```sh
//! cargo run --example embed -- --rules examples/embed.rules
//! ```
//!
//! A builtin runs on the daemon's single thread, in rule order with the
//! event's other handlers: keep it short and never block (hand slow work to
//! a process with `RUN+=`).

use std::cell::Cell;
use std::process::ExitCode;
use std::rc::Rc;

use hotplugd::cli::{Command, HandlerOpts, RunOpts};
use hotplugd::limits::DEFAULT_RCVBUF;
use hotplugd::runner::default_builtins;
use hotplugd::usb::{UsbKind, UsbView};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    // Reuse hotplugd's own command line for `run`'s options.
    let args = std::iter::once("run".into()).chain(std::env::args_os().skip(1));
    let opts = match hotplugd::cli::parse(args) {
        Ok(cli) => match cli.command {
            Command::Run(o) => o,
            Command::Help(h) => {
                print!("{h}");
                return ExitCode::SUCCESS;
            }
            _ => unreachable!("parsed as `run`"),
        },
        Err(e) => {
            eprintln!("embed: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = RunOpts {
        handlers: HandlerOpts {
            rules: if opts.handlers.rules.is_empty() {
                vec!["examples/embed.rules".into()]
            } else {
                opts.handlers.rules
            },
            ..opts.handlers
        },
        rcvbuf: if opts.rcvbuf == 0 {
            DEFAULT_RCVBUF
        } else {
            opts.rcvbuf
        },
        ..opts
    };

    // A builtin with state: count the USB devices present.
    let present = Rc::new(Cell::new(0i64));
    let mut builtins = default_builtins();
    let p = present.clone();
    builtins.register(
        "usb-count",
        Box::new(move |call| {
            let Some(usb) = UsbView::of(call.event) else {
                return Err("not a USB event".into());
            };
            if usb.kind != UsbKind::Device {
                return Ok(());
            }
            match call.event.action() {
                "add" => p.set(p.get() + 1),
                "remove" => p.set(p.get() - 1),
                _ => {}
            }
            log::info!(
                "{} {:04x}:{:04x}: {} USB devices present ({})",
                call.event.action(),
                usb.vendor,
                usb.product,
                p.get(),
                call.rule
            );
            Ok(())
        }),
    );
    match hotplugd::app::run(&opts, builtins) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            ExitCode::from(1)
        }
    }
}
