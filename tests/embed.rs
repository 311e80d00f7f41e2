//! The library API: a Rust builtin registered next to the default ones
//! receives the events its rule matched, through the same engine `run`
//! uses (driven here by `replay` over a real QEMU capture).
//!
//! One test in this binary: the engine reads SIGCHLD from a signalfd, which
//! needs the signal blocked in every thread that could take it; with
//! builtins only, no child is started.

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use hotplugd::cli::{HandlerOpts, ReplayOpts};
use hotplugd::runner::default_builtins;
use hotplugd::usb::UsbView;

#[test]
fn a_rust_builtin_sees_its_events_with_rule_env_applied() {
    let seen: Rc<RefCell<Vec<String>>> = Rc::default();
    let mut b = default_builtins();
    let s = seen.clone();
    b.register(
        "record",
        Box::new(move |call| {
            let usb = UsbView::of(call.event).ok_or("not usb")?;
            s.borrow_mut().push(format!(
                "{} {:04x}:{:04x} {} {} args={:?}",
                call.event.action(),
                usb.vendor,
                usb.product,
                call.event.get_str("WHO").unwrap_or("-"),
                call.rule,
                call.args
                    .iter()
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect::<Vec<_>>()
            ));
            Ok(())
        }),
    );
    let dir = std::env::temp_dir().join(format!("hotplugd-embed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rules = dir.join("r.rules");
    std::fs::write(
        &rules,
        "ACTION==\"add|remove\", SUBSYSTEM==\"usb\", ENV{DEVTYPE}==\"usb_device\", \
         ENV{WHO}=\"ftdi\", RUN{builtin}+=\"record $kernel\"\n",
    )
    .unwrap();
    let opts = ReplayOpts {
        handlers: HandlerOpts {
            rules: vec![rules.clone()],
            ..HandlerOpts::default()
        },
        dry_run: false,
        input: Some(common::repo("tests/rules/dry-run/serial-plug.jsonl")),
    };
    hotplugd::app::replay(&opts, b).unwrap();
    let r = format!("{}:1", rules.display());
    assert_eq!(
        *seen.borrow(),
        [
            format!("add 0403:6001 ftdi {r} args=[\"1-3\"]"),
            format!("remove 0403:6001 ftdi {r} args=[\"1-3\"]"),
        ]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
