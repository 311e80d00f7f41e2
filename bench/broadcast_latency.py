#!/usr/bin/env python3
"""Event -> broadcast latency of `hotplugd run --broadcast udev`.

In a private network namespace (re-execs itself under `unshare -nm`), starts
`hotplugd run --broadcast udev` with the given rules plus one rule that sets
an ENV{} value on lo events; one listener socket on kernel group 1 and one on
udev group 2 (both in this process); writes N `change` events to lo's uevent
file, one every --gap ms. For each SEQNUM, the latency is the time between
receiving the kernel's event on group 1 and hotplugd's libudev datagram on
group 2 (same clock, same process: the cost of receive, rules, encode, send).
Prints p50/p99/max in microseconds.

With --handler, the rule also runs /bin/true, so the broadcast waits for a
handler process (fork, exec, exit, SIGCHLD): udevd's "after RUN" ordering.

Usage: bench/broadcast_latency.py [--n N] [--gap MS] [--rules FILE] [--bin PATH] [--handler]
"""
import argparse, os, select, socket, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))


def seqnum(fields):
    for f in fields:
        if f.startswith(b"SEQNUM="):
            return int(f[7:])
    return None


def main():
    if os.environ.get("HOTPLUGD_BENCH_INSIDE") != "1":
        os.environ["HOTPLUGD_BENCH_INSIDE"] = "1"
        os.execvp("unshare", ["unshare", "-nm", "--", "sh", "-c",
                              'mount -t sysfs sysfs /sys && exec "$@"', "sh", sys.executable, *sys.argv])
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--gap", type=float, default=2.0)
    ap.add_argument("--rules", default=os.path.join(HERE, "rules/usb-100.rules"))
    ap.add_argument("--bin", default=os.path.join(HERE, "../target/release/hotplugd"))
    ap.add_argument("--handler", action="store_true")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="hotplugd-bcast-")
    rules = os.path.join(work, "all.rules")
    run = ', RUN+="/bin/true"' if a.handler else ""
    with open(rules, "w") as f:
        f.write(open(a.rules).read())
        f.write(f'\nACTION=="change", SUBSYSTEM=="net", ENV{{BENCH_ROLE}}="lo"{run}\n')
    k = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 15)
    k.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    k.bind((0, 1))
    u = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 15)
    u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    u.bind((0, 2))
    log = os.path.join(work, "log")
    p = subprocess.Popen([a.bin, "run", "--rules", rules, "--broadcast", "udev"],
                         stderr=open(log, "w"))
    t0 = time.time()
    while "listening for kernel uevents" not in open(log).read():
        if time.time() - t0 > 10 or p.poll() is not None:
            sys.exit("hotplugd did not start:\n" + open(log).read())
        time.sleep(0.02)
    fd = os.open("/sys/class/net/lo/uevent", os.O_WRONLY)
    seen_k, seen_u = {}, {}
    next_write = time.monotonic()
    written = 0
    deadline = None
    while True:
        now = time.monotonic()
        if written < a.n and now >= next_write:
            os.pwrite(fd, b"change", 0)
            written += 1
            next_write = now + a.gap / 1000
            if written == a.n:
                deadline = now + 5
        if deadline and (now > deadline or len(seen_u) >= a.n):
            break
        timeout = max(0.0, next_write - time.monotonic()) if written < a.n else 0.2
        r, _, _ = select.select([k, u], [], [], timeout)
        for s in r:
            d = s.recv(16384)
            t = time.monotonic_ns()
            if s is k:
                n = seqnum(d.split(b"\0")[1:])
                if n is not None:
                    seen_k[n] = t
            elif d.startswith(b"libudev\0"):
                off = int.from_bytes(d[16:20], sys.byteorder)
                n = seqnum(d[off:].split(b"\0"))
                if n is not None:
                    seen_u[n] = t
    p.terminate()
    p.wait()
    lat = sorted((seen_u[n] - seen_k[n]) / 1e3 for n in seen_u if n in seen_k)
    if not lat:
        sys.exit("no broadcast received:\n" + open(log).read())
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    print(f"events written {a.n}, kernel events seen {len(seen_k)}, broadcasts {len(seen_u)}"
          f"{' (rule runs /bin/true)' if a.handler else ''}")
    print(f"event -> broadcast latency: p50 {pct(0.50):.0f} us, p99 {pct(0.99):.0f} us, "
          f"max {lat[-1]:.0f} us")
    print(open(log).read().strip().splitlines()[-1])


if __name__ == "__main__":
    main()
