#!/usr/bin/env python3
"""Event -> handler exec latency of `hotplugd run`.

In a private network namespace (re-execs itself under `unshare -nm`), starts
`hotplugd run` with the given rules plus one rule that runs bench/stamp (a
handler that timestamps itself) for marked lo events; writes N events, one
every --gap ms, each carrying its write time (CLOCK_REALTIME, ns) as
SYNTH_ARG_T; prints p50/p99/max of stamp - T.

Usage: bench/latency.py [--n N] [--gap MS] [--rules FILE] [--bin PATH]
                        [--static-stamp] [--floor]

--static-stamp links the stamp statically, so the handler's own dynamic
loader (a few hundred µs here) is not counted; --floor runs bench/exec_floor
(recv, fork, execve: nothing else) instead of hotplugd, for the least any
listener can do on this machine.
"""
import argparse, os, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    if os.environ.get("HOTPLUGD_BENCH_INSIDE") != "1":
        os.environ["HOTPLUGD_BENCH_INSIDE"] = "1"
        os.execvp("unshare", ["unshare", "-nm", "--", "sh", "-c",
                              'mount -t sysfs sysfs /sys && exec "$@"', "sh", sys.executable, *sys.argv])
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--gap", type=float, default=5.0)
    ap.add_argument("--rules", default=os.path.join(HERE, "rules/usb-100.rules"))
    ap.add_argument("--bin", default=os.path.join(HERE, "../target/release/hotplugd"))
    ap.add_argument("--static-stamp", action="store_true")
    ap.add_argument("--floor", action="store_true")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="hotplugd-lat-")
    stamp = os.path.join(work, "stamp")
    subprocess.run(["gcc", "-O2", *(["-static"] if a.static_stamp else []), "-o", stamp,
                    os.path.join(HERE, "stamp.c")], check=True)
    out = os.path.join(work, "stamps")
    rules = os.path.join(work, "all.rules")
    with open(rules, "w") as f:
        f.write(open(a.rules).read())
        f.write(f'\nACTION=="change", SUBSYSTEM=="net", ENV{{SYNTH_ARG_T}}=="?*", RUN+="{stamp} {out}"\n')
    log = os.path.join(work, "log")
    if a.floor:
        floor = os.path.join(work, "exec_floor")
        subprocess.run(["gcc", "-O2", "-o", floor, os.path.join(HERE, "exec_floor.c")], check=True)
        p = subprocess.Popen([floor, stamp, out], stderr=open(log, "w"))
        ready = "listening"
    else:
        p = subprocess.Popen([a.bin, "run", "--rules", rules], stderr=open(log, "w"))
        ready = "listening for kernel uevents"
    t0 = time.time()
    while ready not in open(log).read():
        if time.time() - t0 > 10 or p.poll() is not None:
            sys.exit("hotplugd did not start:\n" + open(log).read())
        time.sleep(0.02)
    fd = os.open("/sys/class/net/lo/uevent", os.O_WRONLY)
    for i in range(a.n):
        t = time.clock_gettime_ns(time.CLOCK_REALTIME)
        os.pwrite(fd, f"change 00000000-0000-0000-0000-000000000000 T={t}".encode(), 0)
        time.sleep(a.gap / 1000)
    deadline = time.time() + 10
    lat = []
    while time.time() < deadline:
        try:
            lines = open(out).read().split("\n")
        except FileNotFoundError:
            lines = []
        lat = [(int(b) - int(t)) / 1e3 for t, b in (l.split() for l in lines if l)]
        if len(lat) >= a.n:
            break
        time.sleep(0.1)
    p.terminate()
    p.wait()
    lat.sort()
    q = lambda x: lat[min(len(lat) - 1, int(x * len(lat)))]
    who = "exec_floor (recv, fork, execve)" if a.floor else f"{os.path.basename(a.rules)} + 1 rule"
    stamp_kind = "static" if a.static_stamp else "dynamic"
    print(f"event -> handler exec, {len(lat)} of {a.n} events, {a.gap} ms apart, "
          f"{stamp_kind} stamp, {who}: p50 {q(0.50):.0f} us, p99 {q(0.99):.0f} us, max {lat[-1]:.0f} us")


if __name__ == "__main__":
    main()
