#!/usr/bin/env python3
"""Soak: one million real kernel uevents through `hotplugd run`, with a
handler on a subset, and the daemon's resources compared before and after.

Runs inside a private network + mount namespace with its own sysfs
(re-execs itself under `unshare -nm`), so the flood reaches no other
listener. Every 1,000th event runs a handler (a shell script); the rest only
match nothing. Prints, at the start (after a warm-up) and at the end: RSS
(VmRSS), open file descriptors and child processes of the daemon; then the
daemon's stats line. A program that prints numbers, not a test.

Usage: bench/soak.py [--events N] [--every K] [--binary PATH]
  (default: 1,000,000 events, a handler every 1,000, target/release/hotplugd)
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid

ap = argparse.ArgumentParser()
ap.add_argument("--events", type=int, default=1_000_000)
ap.add_argument("--every", type=int, default=1000)
ap.add_argument("--binary", default="target/release/hotplugd")
ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
a = ap.parse_args()

if not a.inside:
    os.execvp("unshare", ["unshare", "-nm", "--", "sh", "-c",
                          'mount -t sysfs sysfs /sys && exec "$0" "$@"',
                          sys.executable, *sys.argv, "--inside"])


def status(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def resources(pid):
    children = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        children += len(open(f"/proc/{pid}/task/{t}/children").read().split())
    return {"rss_kb": status(pid, "VmRSS"), "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "children": children}


work = tempfile.mkdtemp(prefix="hotplugd-soak-")
log = os.path.join(work, "handled")
handler = os.path.join(work, "h.sh")
with open(handler, "w") as f:
    f.write(f'#!/bin/sh\necho "$SEQNUM" >> "{log}"\n')
os.chmod(handler, 0o755)
marker = str(uuid.uuid4())
rules = os.path.join(work, "soak.rules")
with open(rules, "w") as f:
    f.write(f'ENV{{SYNTH_UUID}}=="{marker}", ENV{{SYNTH_ARG_H}}=="1", RUN+="{handler}"\n')
err = open(os.path.join(work, "stderr"), "w+")
p = subprocess.Popen([a.binary, "run", "--rules", rules], stdout=subprocess.DEVNULL, stderr=err)
time.sleep(1.0)
lo = open("/sys/class/net/lo/uevent", "w")


def burst(n, start):
    for i in range(start, start + n):
        h = 1 if i % a.every == 0 else 0
        lo.write(f"change {marker} H={h}")
        lo.flush()


def settle(expect_handled):
    end = time.time() + 120
    while time.time() < end:
        got = sum(1 for _ in open(log)) if os.path.exists(log) else 0
        if got >= expect_handled and resources(p.pid)["children"] == 0:
            return got
        time.sleep(0.2)
    return -1


warm = 10_000
burst(warm, 0)
settle(warm // a.every)
before = resources(p.pid)
t0 = time.time()
done = warm
step = 50_000
while done < warm + a.events:
    n = min(step, warm + a.events - done)
    burst(n, done)
    done += n
handled = settle((warm + a.events + a.every - 1) // a.every)
took = time.time() - t0
after = resources(p.pid)
p.terminate()
p.wait(timeout=30)
err.seek(0)
stats = [l for l in err.read().splitlines() if l.startswith("stats:")]
print(f"events: {a.events} (+{warm} warm-up) in {took:.1f} s; handlers run: {handled}")
print(f"start: rss {before['rss_kb']} kB, fds {before['fds']}, children {before['children']}")
print(f"end:   rss {after['rss_kb']} kB, fds {after['fds']}, children {after['children']}")
print(stats[-1] if stats else "no stats line")
