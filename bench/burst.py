#!/usr/bin/env python3
"""Measure one uevent listener on one real burst of kernel uevents.

Runs inside a private network + mount namespace with its own sysfs (re-execs
itself under `unshare -nm`), so the burst reaches no other listener on the
machine. Writes N `change UUID` lines to the namespace's lo uevent file as
fast as Python can (each write is one real kernel uevent), then waits until
the listener has been quiet for a while and reads:

  received   events of this burst the listener reported (its own count)
  dropped    the socket's Drops column in /proc/net/netlink (kernel's count)
  cpu_us     listener utime+stime during the burst, per event (µs)
  rss_kb     listener VmHWM (peak RSS) at the end, and VmRSS before the burst

Usage: bench/burst.py N [--repeat R] [--rcvbuf SIZE] -- LISTENER ARGV...
The listener must print the stats line of `hotplugd monitor` on SIGTERM
(accepted=...), or use --count-stdout PATTERN to count stdout lines.
"""
import argparse, os, re, signal, subprocess, sys, time, uuid

CLK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])  # utime, stime (fields 14, 15)


def status(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def socket_rows():
    rows = {}
    for line in open("/proc/net/netlink").read().splitlines()[1:]:
        c = line.split()
        if c[1] == "15":  # NETLINK_KOBJECT_UEVENT
            rows[int(c[9])] = {"drops": int(c[8]), "pid": int(c[2])}
    return rows


def socket_inodes(pid):
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            t = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]", t)
        if m:
            out.add(int(m.group(1)))
    return out


def one(n, argv, count_stdout):
    out = open("/dev/null", "w") if not count_stdout else subprocess.PIPE
    p = subprocess.Popen(argv, stdout=out, stderr=subprocess.PIPE, text=True)
    # wait for the socket to exist (bound before the listener logs anything)
    t0 = time.time()
    inode = None
    while time.time() - t0 < 10:
        rows = socket_rows()
        mine = socket_inodes(p.pid) & set(rows)
        if mine:
            inode = mine.pop()
            break
        time.sleep(0.02)
    if inode is None:
        p.kill()
        sys.exit(f"listener {argv} opened no uevent socket: {p.stderr.read()}")
    time.sleep(0.2)
    rss0 = status(p.pid, "VmRSS")
    c0 = cpu_ticks(p.pid)
    tag = str(uuid.uuid4())
    line = f"change {tag}".encode()
    fd = os.open("/sys/class/net/lo/uevent", os.O_WRONLY)
    g0 = time.monotonic()
    for _ in range(n):
        os.pwrite(fd, line, 0)
    gen_s = time.monotonic() - g0
    os.close(fd)
    # wait until the listener's CPU time stops moving (it has drained)
    last, still = cpu_ticks(p.pid), 0
    while still < 5:
        time.sleep(0.1)
        now = cpu_ticks(p.pid)
        still = still + 1 if now == last else 0
        last = now
    c1 = last
    hwm = status(p.pid, "VmHWM")
    drops = socket_rows().get(inode, {}).get("drops", -1)
    p.send_signal(signal.SIGTERM)
    try:
        _, err = p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
    m = re.search(r"accepted=(\d+)", err or "")
    received = int(m.group(1)) if m else -1
    return {
        "received": received, "dropped": drops, "lost": n - received if received >= 0 else -1,
        "cpu_us": (c1 - c0) / CLK * 1e6 / n, "rss0_kb": rss0, "hwm_kb": hwm,
        "gen_rate": n / gen_s,
    }


def main():
    if os.environ.get("HOTPLUGD_BENCH_INSIDE") != "1":
        os.environ["HOTPLUGD_BENCH_INSIDE"] = "1"
        os.execvp("unshare", ["unshare", "-nm", "--", "sh", "-c",
                              'mount -t sysfs sysfs /sys && exec "$@"', "sh",
                              sys.executable, *sys.argv])
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--count-stdout", action="store_true")
    ap.add_argument("argv", nargs="+")
    a = ap.parse_args()
    for i in range(a.repeat):
        r = one(a.n, a.argv, a.count_stdout)
        print(f"run {i+1}: N={a.n} received={r['received']} lost={r['lost']} dropped={r['dropped']} "
              f"cpu={r['cpu_us']:.2f}us/event rss_idle={r['rss0_kb']}kB peak={r['hwm_kb']}kB "
              f"rate={r['gen_rate']:.0f}/s", flush=True)


if __name__ == "__main__":
    main()
