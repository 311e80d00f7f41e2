#!/usr/bin/env python3
"""Boots the guest made by tests/vm/run.sh, plugs USB devices over QMP and
checks what hotplugd and the board's handlers did, from the serial console.

A USB keyboard is plugged on the QEMU command line, before hotplugd starts:
coldplug must handle it exactly once. Then, over QMP, one at a time: an FTDI
USB-serial adapter, a USB stick (FAT, with hello.txt), a keyboard and a USB
network adapter are plugged, checked, unplugged and checked again.

The guest loads no USB driver itself: hotplugd loads them from MODALIAS
(`kmod load`), the keyboard's at coldplug and the others on plug; both are
checked from /proc/modules, and the coldplug's modprobe runs are counted.

Every wait has a timeout; QEMU is killed on every exit path. Prints the
boot-to-ready time and the plug-to-handler latency per device. Exit 0 only
if every check passed."""

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("--arch", required=True, choices=["aarch64", "x86_64"])
ap.add_argument("--qemu", required=True)
ap.add_argument("--kernel", required=True)
ap.add_argument("--initrd", required=True)
ap.add_argument("--stick", required=True)
ap.add_argument("--workdir", required=True)
ap.add_argument("--boot-timeout", type=float, default=240)
a = ap.parse_args()

qmp_path = os.path.join(a.workdir, f"qmp-{a.arch}.sock")
if os.path.exists(qmp_path):
    os.unlink(qmp_path)
if a.arch == "aarch64":
    machine = ["-M", "virt", "-cpu", "cortex-a53"]
    console = "ttyAMA0"
else:
    machine = ["-M", "pc", "-cpu", "max"]
    console = "ttyS0"
cmd = [
    a.qemu, "-accel", "tcg", *machine, "-m", "512", "-smp", "1",
    "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
    "-kernel", a.kernel, "-initrd", a.initrd,
    "-append", f"console={console} quiet panic=-1 printk.devkmsg=on",
    "-device", "qemu-xhci,id=xhci",
    # plugged before hotplugd starts: coldplug must handle it once
    "-device", "usb-kbd,bus=xhci.0,id=ukbd-pre",
    "-drive", f"if=none,id=stick,format=raw,file={a.stick}",
    "-chardev", "ringbuf,id=ser0",  # usb-serial attaches only to an open chardev
    "-netdev", "user,id=net0",
    "-qmp", f"unix:{qmp_path},server=on,wait=off",
]
log_path = os.path.join(a.workdir, f"console-{a.arch}.log")
console_log = open(log_path, "w")
t_start = time.monotonic()
proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        stderr=open(os.path.join(a.workdir, f"qemu-{a.arch}.stderr"), "w"))
lines = []  # (host time, line)
cv = threading.Condition()


def reader():
    for raw in proc.stdout:
        s = raw.decode("utf-8", "replace").rstrip("\r\n").replace("\r", "")
        console_log.write(s + "\n")
        console_log.flush()
        with cv:
            lines.append((time.monotonic(), s))
            cv.notify_all()
    with cv:
        lines.append((time.monotonic(), "<<QEMU EXITED>>"))
        cv.notify_all()


threading.Thread(target=reader, daemon=True).start()
failures = []


def finish(code):
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    if failures:
        print("FAILED checks:", file=sys.stderr)
        for f in failures:
            print("  - " + f, file=sys.stderr)
        print(f"(console: {log_path})", file=sys.stderr)
    sys.exit(code if not failures else 1)


def wait_for(pred, timeout, since=0):
    """The first console line from index `since` on that satisfies pred."""
    end = time.monotonic() + timeout
    with cv:
        i = since
        while True:
            while i < len(lines):
                t, s = lines[i]
                if s == "<<QEMU EXITED>>":
                    failures.append("QEMU exited early")
                    finish(1)
                if pred(s):
                    return i, t, s
                i += 1
            rem = end - time.monotonic()
            if rem <= 0:
                return None
            cv.wait(rem)


def check(cond, what):
    print(("ok    " if cond else "FAIL  ") + what, flush=True)
    if not cond:
        failures.append(what)
    return cond


def send(line):
    proc.stdin.write((line + "\n").encode())
    proc.stdin.flush()


def ask(command, prefix, timeout=30):
    mark = len(lines)
    send(command)
    r = wait_for(lambda s: s.startswith(prefix), timeout, mark)
    return r[2][len(prefix):].strip() if r else None


def quiet(seconds):
    """Waits until no console line has come for `seconds` (max 20 s)."""
    end = time.monotonic() + 20
    while time.monotonic() < end:
        with cv:
            last = lines[-1][0] if lines else t_start
        if time.monotonic() - last >= seconds:
            return
        time.sleep(0.1)


try:
    r = wait_for(lambda s: s.startswith("E2E-READY") or s.startswith("E2E-ERROR"), a.boot_timeout)
    if not r or not r[2].startswith("E2E-READY"):
        failures.append(f"hotplugd not ready within {a.boot_timeout}s: {r[2] if r else 'timeout'}")
        finish(1)
    boot_s = r[1] - t_start
    print(f"boot to ready: {boot_s:.1f} s after QEMU start (guest {r[2]})", flush=True)
    quiet(1.0)

    # the connection to QEMU's monitor
    qs = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    for _ in range(100):
        try:
            qs.connect(qmp_path)
            break
        except OSError:
            time.sleep(0.05)
    qs.settimeout(30)
    qf = qs.makefile("rwb", buffering=0)

    def qmp(execute, **args):
        msg = {"execute": execute}
        if args:
            msg["arguments"] = args
        qf.write((json.dumps(msg) + "\n").encode())
        while True:
            m = json.loads(qf.readline())
            if "return" in m or "error" in m:
                return m

    json.loads(qf.readline())
    qmp("qmp_capabilities")

    # coldplug: the keyboard plugged before start, reported exactly once
    pre = [s for _, s in lines if "E2E-USB ACTION=add" in s and "/usb1/1-1 PRODUCT=627/1/" in s]
    check(len(pre) == 1, f"coldplug: the pre-plugged keyboard handled exactly once ({len(pre)})")
    check(all("COLDPLUG=1" in s for s in pre), "coldplug: marked HOTPLUGD_COLDPLUG=1")

    # module autoloading (kmod load): /init loads no USB driver; the
    # keyboard's (usbhid, hid-generic) come from its MODALIAS at coldplug
    def modules_loaded(names, timeout=60):
        end = time.monotonic() + timeout
        have = ""
        while time.monotonic() < end:
            have = ask("modules", "E2E-MODULES") or ""
            if all(n in have.split() for n in names):
                break
            time.sleep(1)
        return have

    mods = modules_loaded(["usbhid", "hid_generic"])
    check("usbhid" in mods.split() and "hid_generic" in mods.split(),
          f"kmod: usbhid and hid_generic loaded from MODALIAS at coldplug ({mods})")
    check(not any(n in mods.split() for n in ("ftdi_sio", "usb_storage", "cdc_ether")),
          f"kmod: no driver of a device not plugged yet ({mods})")
    # batched: the whole coldplug is one modprobe, then one per wave of
    # devices the loaded drivers create (the keyboard's hid device, its
    # input devices). How many waves split in two depends on the guest's
    # speed (names more than BATCH_DELAY apart go in separate runs; a
    # loaded host made 4 runs for 27 names once): the check is that runs
    # are batches, at least 4 names a run on average, where one run per
    # event would be about one run per name.
    cold = ask("stats", "E2E-STATS") or ""
    runs = re.search(r"\bkmod_runs=(\d+)", cold)
    names = re.search(r"\bkmod_aliases=(\d+)", cold)
    runs, names = (int(runs.group(1)) if runs else None), (int(names.group(1)) if names else None)
    print(f"kmod at coldplug: {runs} modprobe runs for {names} aliases", flush=True)
    check(runs is not None and names is not None and names >= 8 and 1 <= runs and runs * 4 <= names,
          f"kmod: coldplug batched, at least 4 names a modprobe run ({runs} runs for {names} names)")

    latencies = {}

    def plug(name, spec, expect, timeout=30):
        mark = len(lines)
        t0 = time.monotonic()
        rep = qmp("device_add", **spec)
        check("error" not in rep, f"{name}: device_add accepted ({rep})")
        r = wait_for(lambda s: expect(s), timeout, mark)
        if check(r is not None, f"{name}: handler ran on add"):
            latencies[name] = (r[1] - t0) * 1000
        quiet(1.0)
        return mark

    def unplug(name, spec_id, expect, timeout=30):
        mark = len(lines)
        t0 = time.monotonic()
        rep = qmp("device_del", id=spec_id)
        check("error" not in rep, f"{name}: device_del accepted")
        r = wait_for(lambda s: expect(s), timeout, mark)
        if check(r is not None, f"{name}: handler ran on remove"):
            latencies[name + " (remove)"] = (r[1] - t0) * 1000
        quiet(1.0)
        return mark

    def handler_lines(since, handler):
        return [s for _, s in lines[since:] if s.startswith(f"E2E-HANDLER {handler} ")]

    # 1. USB-serial adapter (FTDI 0403:6001)
    m = plug("usb-serial", {"driver": "usb-serial", "id": "userial0", "bus": "xhci.0", "chardev": "ser0"},
             lambda s: s.startswith("E2E-HANDLER usb-serial-getty ACTION=add"))
    h = handler_lines(m, "usb-serial-getty")
    check(len(h) == 1 and "DEVNAME=ttyUSB0" in h[0], f"usb-serial: getty handler saw ttyUSB0 once: {h}")
    usb = [s for _, s in lines[m:] if s.startswith("E2E-USB ACTION=add")]
    check(any("PRODUCT=403/6001/" in s for s in usb), f"usb-serial: its USB device carried PRODUCT=403/6001/...: {usb}")
    # /dev (issue 13): the board rule's MODE and GROUP when the handler
    # starts (getty then makes the tty its own: 0620), its SYMLINK, udev's
    # serial/by-id link
    check(len(h) == 1 and "NODE=crw-rw----:20 " in h[0],
          f"usb-serial: /dev/ttyUSB0 had MODE 0660 and GROUP dialout (20) when the handler started: {h}")
    link = ask("node /dev/serial/ftdi-0", "E2E-NODE") or ""
    check(link.startswith("l") and link.endswith("/dev/serial/ftdi-0 -> ../ttyUSB0"),
          f"usb-serial: /dev/serial/ftdi-0 -> ../ttyUSB0: {link}")
    by_id = ask("node /dev/serial/by-id", "E2E-NODE") or ""
    check("-if00-port0 -> ../../ttyUSB0" in by_id, f"usb-serial: a serial/by-id link to ttyUSB0: {by_id}")
    m = unplug("usb-serial", "userial0", lambda s: s.startswith("E2E-HANDLER usb-serial-getty ACTION=remove"))
    h = handler_lines(m, "usb-serial-getty")
    check(len(h) == 1, "usb-serial: remove handled once")
    check(len(h) == 1 and "ID_SERIAL=QEMU_QEMU_USB_SERIAL" in h[0],
          f"usb-serial: the remove handler sees the add's ID_SERIAL: {h}")
    gone = ask("node /dev/serial", "E2E-NODE") or ""
    check("No such file" in gone, f"usb-serial: the links (and /dev/serial) are gone after unplug: {gone}")

    # 2. USB stick (a partition table and one FAT partition): the partition
    # mounted read-only, readable, unmounted on removal; the whole disk,
    # with no filesystem of its own, is not mounted
    m = plug("usb-storage", {"driver": "usb-storage", "id": "ustor0", "bus": "xhci.0", "drive": "stick"},
             lambda s: s.startswith("E2E-HANDLER usb-mount ACTION=add DEVNAME=sda1 "))
    h = handler_lines(m, "usb-mount")
    check(sorted(re.findall(r"DEVNAME=(\S+)", " ".join(h))) == ["sda", "sda1"],
          f"usb-storage: usb-mount saw sda and sda1 once each: {h}")
    check(ask("cat /media/sda1/hello.txt", "E2E-CAT") == "hello from the stick", "usb-storage: a file of the stick is readable")
    mounts = ask("mounts /media/sda1", "E2E-MOUNTS") or ""
    check(" ro," in mounts and "vfat" in mounts, f"usb-storage: mounted read-only: {mounts}")
    check(ask("mounts /media/sda", "E2E-MOUNTS") == "none", "usb-storage: the partitioned whole disk is not mounted")
    check(ask("write /media/sda1/new", "E2E-WRITE") == "refused", "usb-storage: writing is refused")
    # udev's disk/by-id links (issue 14), from usb_id and the shipped rules
    by_id = ask("node /dev/disk/by-id", "E2E-NODE") or ""
    check("usb-QEMU_QEMU_HARDDISK_" in by_id and "-0:0-part1 -> ../../sda1" in by_id
          and "-0:0 -> ../../sda" in by_id,
          f"usb-storage: disk/by-id links to sda and sda1: {by_id}")
    m = unplug("usb-storage", "ustor0", lambda s: s.startswith("E2E-HANDLER usb-mount ACTION=remove"))
    quiet(1.0)
    h = handler_lines(m, "usb-mount")
    check(sorted(re.findall(r"DEVNAME=(\S+)", " ".join(h))) == ["sda", "sda1"],
          f"usb-storage: remove handled once for sda and once for sda1: {h}")
    check(ask("mounts /media/sda1", "E2E-MOUNTS") == "none", "usb-storage: unmounted on removal")
    gone = ask("node /dev/disk", "E2E-NODE") or ""
    check("No such file" in gone, f"usb-storage: the disk links (and /dev/disk) are gone after unplug: {gone}")

    # 3. keyboard: only the logging rule and the USB report
    m = plug("usb-kbd", {"driver": "usb-kbd", "id": "ukbd0", "bus": "xhci.0"},
             lambda s: s.startswith("E2E-USB ACTION=add") and "PRODUCT=627/1/" in s)
    check(not any(s.startswith("E2E-HANDLER") for _, s in lines[m:]), "usb-kbd: no board handler runs for a keyboard")
    unplug("usb-kbd", "ukbd0", lambda s: s.startswith("E2E-USB ACTION=remove") and "PRODUCT=627/1/" in s)

    # 4. network adapter: INTERFACE=usb0, brought up
    m = plug("usb-net", {"driver": "usb-net", "id": "unet0", "bus": "xhci.0", "netdev": "net0"},
             lambda s: s.startswith("E2E-HANDLER usb-net ACTION=add"))
    h = handler_lines(m, "usb-net")
    check(len(h) == 1 and "INTERFACE=usb0" in h[0], f"usb-net: handler saw INTERFACE=usb0 once: {h}")
    m = unplug("usb-net", "unet0", lambda s: s.startswith("E2E-HANDLER usb-net ACTION=remove"))
    check(len(handler_lines(m, "usb-net")) == 1, "usb-net: remove handled once")

    # nothing fired twice, over the whole run
    seen = {}
    for _, s in lines:
        if s.startswith("E2E-HANDLER "):
            key = re.sub(r" COLDPLUG=.*", "", s)
            seen[key] = seen.get(key, 0) + 1
    check(all(v == 1 for v in seen.values()), f"no handler fired twice: {[k for k, v in seen.items() if v > 1]}")

    # memory of the daemon on this architecture, after all of the above
    rss = ask("rss", "E2E-RSS") or ""
    print(f"hotplugd memory in the guest: {rss}", flush=True)
    check("VmRSS" in rss, f"the guest reports hotplugd's memory ({rss})")

    # the drivers of the devices plugged later came from their MODALIAS too
    mods = modules_loaded(["ftdi_sio", "usb_storage", "sd_mod", "cdc_ether"], timeout=10)
    for n in ("ftdi_sio", "usbserial", "usb_storage", "sd_mod", "cdc_ether", "usbnet"):
        check(n in mods.split(), f"kmod: {n} loaded from MODALIAS on plug ({mods})")

    # the counters
    stats = ask("stats", "E2E-STATS") or ""
    print("guest " + stats, flush=True)

    def stat(name):
        mm = re.search(rf"\b{name}=(\d+)", stats)
        return int(mm.group(1)) if mm else None

    for name in ("overruns", "rejected", "malformed", "truncated", "handlers_failed"):
        check(stat(name) == 0, f"counters: {name}=0 ({stat(name)})")
    check((stat("synthetic_adds") or 0) >= 1, f"counters: synthetic_adds={stat('synthetic_adds')} (coldplug)")
    check((stat("kmod_runs") or 0) >= 2, f"counters: kmod_runs={stat('kmod_runs')} (coldplug, then plugs)")
    check(stat("kmod_failed") == 0, f"counters: kmod_failed={stat('kmod_failed')}")
    if stat("kmod_failed"):
        # what modprobe said: hotplugd logs it to the kernel's log
        mark = len(lines)
        send("log")
        quiet(1.0)
        for _, s in lines[mark:]:
            if "kmod" in s or "modprobe" in s:
                print("guest " + s, flush=True)
    print(f"kmod: {stat('kmod_runs')} modprobe runs for {stat('kmod_aliases')} aliases", flush=True)
    stopped = ask("stop", "E2E-STOPPED")
    check(stopped == "0", f"the init script stops hotplugd ({stopped})")

    print(f"boot to ready: {boot_s:.1f} s; hotplugd {rss}", flush=True)
    for k, v in latencies.items():
        print(f"plug to handler: {k}: {v:.0f} ms", flush=True)
    try:
        qmp("quit")
    except Exception:
        pass
    finish(0)
except SystemExit:
    raise
except BaseException as e:  # noqa: BLE001 - report, kill QEMU, fail
    failures.append(f"harness error: {e!r}")
    finish(1)
