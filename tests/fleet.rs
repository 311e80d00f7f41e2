//! The fleet handler (`board/generic/handlers/mqtt-publish`) against a real
//! Mosquitto broker: Debian's `mosquitto` on 127.0.0.1 with a random port,
//! `mosquitto_sub` as the receiver, hotplugd and tap devices, all in a
//! private network namespace.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use hotplugd::json;

const T: Duration = Duration::from_secs(20);

fn inside(ns: &Netns, argv: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/proc/{}/ns/net", ns.pid()))
        .arg(format!("--mount=/proc/{}/ns/mnt", ns.pid()))
        .arg("--")
        .args(argv);
    c
}

fn ip_in(ns: &Netns, args: &[&str]) {
    let mut argv = vec!["ip"];
    argv.extend_from_slice(args);
    let st = inside(ns, &argv).status().expect("nsenter ip");
    assert!(st.success(), "ip {args:?} in the namespace failed");
}

/// A free port on the namespace's loopback (asked of the kernel there).
fn free_port(ns: &Netns) -> u16 {
    ns.run_inside(|| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        l.local_addr().unwrap().port()
    })
}

fn broker(ns: &Netns, s: &Scratch, port: u16) -> Proc {
    let conf = s.path("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"),
    )
    .unwrap();
    let mut c = inside(ns, &["mosquitto", "-v", "-c", conf.to_str().unwrap()]);
    c.stdout(Stdio::null());
    let p = Proc::spawn(c);
    // mosquitto logs to stderr: "Opening ipv4 listen socket on port N."
    assert!(
        p.wait_stderr(&format!("listen socket on port {port}"), T),
        "mosquitto did not start: {}",
        p.stderr()
    );
    p
}

#[test]
fn tap_plug_and_unplug_arrive_at_the_broker_in_order_and_a_dead_broker_is_counted() {
    let test = "tap_plug_and_unplug_arrive_at_the_broker_in_order_and_a_dead_broker_is_counted";
    if !need_root(test)
        || !need_tool(test, "mosquitto")
        || !need_tool(test, "mosquitto_sub")
        || !need_tool(test, "mosquitto_pub")
    {
        return;
    }
    let ns = Netns::new();
    ip_in(&ns, &["link", "set", "lo", "up"]);
    let s = Scratch::new("fleet");
    let port = free_port(&ns);
    let mut mq = broker(&ns, &s, port);
    let port_s = port.to_string();

    // the receiver; -d prints the SUBACK once it is subscribed
    let mut c = inside(
        &ns,
        &[
            "stdbuf",
            "-oL",
            "mosquitto_sub",
            "-d",
            "-v",
            "-q",
            "1",
            "-h",
            "127.0.0.1",
            "-p",
            &port_s,
            "-t",
            "hotplug/#",
        ],
    );
    c.stderr(Stdio::inherit());
    let sub = Proc::spawn(c);
    assert!(
        sub.next_line(T, |l| l.contains("SUBACK")).is_some(),
        "mosquitto_sub did not subscribe"
    );

    let handler = repo("board/generic/handlers/mqtt-publish");
    let rules = s.rules(&format!(
        "ACTION==\"add|remove\", SUBSYSTEM==\"net\", RUN+=\"{}\"\n",
        handler.display()
    ));
    let mut c = ns.hotplugd();
    c.args(["run", "--rules", &rules, "-v"])
        .args(["--pass-env", "HOTPLUGD_MQTT_HOST"])
        .args(["--pass-env", "HOTPLUGD_MQTT_PORT"])
        .args(["--pass-env", "HOTPLUGD_MQTT_TIMEOUT"])
        .env("HOTPLUGD_MQTT_HOST", "127.0.0.1")
        .env("HOTPLUGD_MQTT_PORT", &port_s)
        .env("HOTPLUGD_MQTT_TIMEOUT", "1");
    let hp = Proc::spawn(c);
    hp.wait_listening();

    let taps: Vec<String> = (0..3).map(|i| format!("{}{i}", Tap::name("m"))).collect();
    for t in &taps {
        ip_in(&ns, &["tuntap", "add", "dev", t, "mode", "tap"]);
    }
    for t in &taps {
        ip_in(&ns, &["link", "del", t]);
    }
    let host = read("/proc/sys/kernel/hostname").trim().to_string();
    let mut got: Vec<(String, String)> = Vec::new(); // (interface, action)
    while got.len() < 2 * taps.len() {
        let Some(l) = sub.next_line(T, |l| l.starts_with("hotplug/")) else {
            break;
        };
        let (topic, payload) = l.split_once(' ').expect("-v: topic then payload");
        let v = json::parse(payload.as_bytes())
            .unwrap_or_else(|e| panic!("not JSON ({e:?}): {payload}"));
        let action = v
            .get("action")
            .and_then(|a| a.as_str())
            .unwrap()
            .to_string();
        assert_eq!(topic, format!("hotplug/{host}/net/{action}"), "{l}");
        assert_eq!(v.get("host").and_then(|h| h.as_str()), Some(host.as_str()));
        assert_eq!(v.get("subsystem").and_then(|h| h.as_str()), Some("net"));
        assert!(v.get("seqnum").and_then(|n| n.as_u64()).is_some(), "{l}");
        let env = v.get("env").expect("env");
        let ifname = env.get("INTERFACE").and_then(|i| i.as_str()).unwrap();
        assert_eq!(
            env.get("DEVPATH").and_then(|d| d.as_str()),
            v.get("devpath").and_then(|d| d.as_str())
        );
        assert!(
            env.get("PATH").is_none() && env.get("HOTPLUGD_RULE").is_none(),
            "{l}"
        );
        got.push((ifname.to_string(), action));
    }
    for t in &taps {
        let of_t: Vec<&str> = got
            .iter()
            .filter(|(i, _)| i == t)
            .map(|(_, a)| a.as_str())
            .collect();
        assert_eq!(of_t, ["add", "remove"], "{t}: all messages {got:?}");
    }

    // every handler so far has exited (the subscriber may see a message
    // before its publisher has the broker's PUBACK): only then stop it
    for t in &taps {
        assert!(
            hp.wait_stderr(&format!("for remove /devices/virtual/net/{t} exited 0"), T),
            "{}",
            hp.stderr()
        );
    }
    // a broker that accepts connections but never answers: the handler's
    // timeout ends it, hotplugd counts it and goes on
    mq.signal(nix::sys::signal::Signal::SIGSTOP);
    let t = format!("{}s", Tap::name("m"));
    ip_in(&ns, &["tuntap", "add", "dev", &t, "mode", "tap"]);
    assert!(
        hp.wait_stderr("within 1s; hotplug/", T),
        "no timeout logged: {}",
        hp.stderr()
    );
    assert!(
        hp.wait_stderr(&format!("for add /devices/virtual/net/{t} exited"), T),
        "{}",
        hp.stderr()
    );
    // a broker that is gone: refused at once, counted, and still no stall
    mq.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = mq.wait(T);
    let t2 = format!("{}g", Tap::name("m"));
    ip_in(&ns, &["tuntap", "add", "dev", &t2, "mode", "tap"]);
    assert!(
        hp.wait_stderr("mosquitto_pub failed", T),
        "no failure logged: {}",
        hp.stderr()
    );
    assert!(
        hp.wait_stderr(&format!("for add /devices/virtual/net/{t2} exited"), T),
        "{}",
        hp.stderr()
    );
    let (st, err) = hp.stop();
    assert!(st.success(), "{err}");
    assert_eq!(stat(&err, "handlers_started"), 8, "{err}");
    assert_eq!(stat(&err, "handlers_failed"), 2, "{err}");
    drop(sub);
}

#[test]
fn the_opt_in_rules_file_loads_and_is_not_loaded_by_default() {
    let f = repo("board/generic/rules.d/90-mqtt.rules.off");
    let out = hotplugd()
        .args(["check", "--rules"])
        .arg(&f)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("rules: 1 rules from 1 files"), "{text}");
    // a directory loads only *.rules: the shipped set does not publish
    let out = hotplugd()
        .args(["check", "--rules"])
        .arg(repo("board/generic/rules.d"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("mqtt"), "{text}");
    assert!(out.status.success());
}
