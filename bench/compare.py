#!/usr/bin/env python3
"""hotplugd and its peers on the same real uevent bursts, in one run.

Called by bench/run.sh (which builds and fetches everything). Runs inside a
private network + mount namespace with its own sysfs (re-execs itself under
`unshare -nm`), so bursts reach only the listener under test. For each
listener and each N, REPEAT times: start it, write N `change UUID` lines to
lo's uevent file as fast as the kernel takes them (each one a real kernel
uevent), wait until its CPU time stops moving, then read:

  lost     the kernel's count of events dropped for its socket (the Drops
           column of /proc/net/netlink), and its own count where it has one
  cpu      CPU time during the burst, per event (µs): the scheduler's
           nanosecond count (/proc/PID/schedstat), user and system
  ratio    CPU per event over the C loop's in the same round (each round
           runs every listener once, in rotated order, so load drift on a
           shared machine hits all of them alike); the median of the rounds
  rss      VmRSS before the burst (idle) and VmHWM (peak) after it
  rcvbuf   the socket's effective receive buffer (`ss -m`: rb)

--check ID=MAX,... exits 1 when a listener's median ratio is above MAX (the
CI's regression check: bench/check.sh). Then once per listener a 1,000,000-event burst: what it lost, whether it is
still alive, and whether it still receives the next event. And hotplugd's
event -> handler exec latency (bench/latency.py). Prints a table and writes
docs/benchmarks.md and docs/benchmarks.svg. Prints numbers; asserts nothing.
"""
import argparse
import datetime
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CLK = os.sysconf("SC_CLK_TCK")

if os.environ.get("HOTPLUGD_BENCH_INSIDE") != "1":
    os.environ["HOTPLUGD_BENCH_INSIDE"] = "1"
    os.execvp("unshare", ["unshare", "-nm", "--", "sh", "-c",
                          'mount -t sysfs sysfs /sys && exec "$@"', "sh", sys.executable, *sys.argv])

ap = argparse.ArgumentParser()
ap.add_argument("--work", required=True, help="where bench/run.sh put the peers")
ap.add_argument("--bin", default=os.path.join(REPO, "target/release/hotplugd"))
ap.add_argument("--sizes", default="10000,100000,500000")
ap.add_argument("--repeat", type=int, default=5)
ap.add_argument("--big", type=int, default=1_000_000)
ap.add_argument("--only", default="", help="comma-separated listener ids (default: all): "
                "c, monitor-json, run-noop, run-usb100, busybox-uevent, mdev, udevadm, mdevd")
ap.add_argument("--mdevd", default="", help="an mdevd binary (bench/run.sh builds one when MDEVD_SRC is set)")
ap.add_argument("--check", default="", help="ID=MAX,...: fail if the median CPU ratio to the C loop exceeds MAX")
ap.add_argument("--no-latency", action="store_true")
ap.add_argument("--no-report", action="store_true", help="print only; write no docs/benchmarks.*")
ap.add_argument("--extra", action="append", default=[], help="NAME=COMMAND LINE: another listener")
ap.add_argument("--out", default=os.path.join(REPO, "docs"))
a = ap.parse_args()
W = a.work
bb = os.path.join(W, "peers/bin/busybox")
udevadm = os.path.join(W, "peers/bin/udevadm")
noop = os.path.join(W, "noop.rules")
with open(noop, "w") as f:
    f.write('SUBSYSTEM=="no-such-subsystem", RUN{builtin}+="log"\n')
usb100 = os.path.join(HERE, "rules/usb-100.rules")

LISTENERS = [
    # name, argv, how it counts (stats: accepted= on stderr; lines: stdout
    # lines naming lo; None: no count of its own), binary for the size column, id
    ("C baseline (recv loop)", [os.path.join(W, "baseline")], "stats", os.path.join(W, "baseline"), "c"),
    ("hotplugd monitor --json", [a.bin, "monitor", "--json"], "lines", a.bin, "monitor-json"),
    ("hotplugd run, no-op rules", [a.bin, "run", "--rules", noop], "stats", a.bin, "run-noop"),
    ("hotplugd run, 100 USB rules", [a.bin, "run", "--rules", usb100], "stats", a.bin, "run-usb100"),
    ("busybox uevent", [bb, "uevent"], None, bb, "busybox-uevent"),
    ("busybox mdev -d", ["unshare", "-m", "sh", "-c",
                         'mount -t tmpfs tmpfs /dev && exec "$0" mdev -d -f', bb], None, bb, "mdev"),
    ("udevadm monitor --kernel", [udevadm, "monitor", "--kernel"], "lines", udevadm, "udevadm"),
]
if a.mdevd:
    # mdevd with an empty mdev.conf, its own /dev, and the queue hotplugd gets
    # by default (-b is in bytes; the kernel doubles it like ours)
    empty_conf = os.path.abspath(os.path.join(W, "mdev.conf"))
    open(empty_conf, "w").close()
    LISTENERS.append(("mdevd -b 16M", ["unshare", "-m", "sh", "-c",
                                       'mount -t tmpfs tmpfs /dev && exec "$0" -b 16777216 -f "$1"',
                                       a.mdevd, empty_conf], None, a.mdevd, "mdevd"))
for e in a.extra:
    name, _, cmd = e.partition("=")
    LISTENERS.append((name, cmd.split(), None, cmd.split()[0], name))
if a.only:
    keep = set(a.only.split(","))
    LISTENERS = [l for l in LISTENERS if l[4] in keep or l[0] in keep]


def cpu_ns(pid):
    """CPU time of `pid` in ns: the first field of /proc/PID/schedstat
    (user and system, at the scheduler's resolution, not in 10 ms ticks)."""
    try:
        return int(open(f"/proc/{pid}/schedstat").read().split()[0])
    except (OSError, IndexError, ValueError):
        return cpu_ticks(pid) * (1_000_000_000 // CLK)


def cpu_ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])


def status(pid, key):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def socket_rows():
    rows = {}
    for line in open("/proc/net/netlink").read().splitlines()[1:]:
        c = line.split()
        if c[1] == "15":
            rows[int(c[9])] = int(c[8])
    return rows


def inode_of(pid):
    rows = socket_rows()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            t = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]", t)
        if m and int(m.group(1)) in rows:
            return int(m.group(1))
    return None


def port_of(inode):
    for line in open("/proc/net/netlink").read().splitlines()[1:]:
        c = line.split()
        if c[1] == "15" and int(c[9]) == inode:
            return int(c[2])
    return None


def rcvbuf(inode):
    """The socket's effective receive buffer: `ss -f netlink -m` lists it
    as `uevent:COMM/PORT ... skmem:(...,rbN,...)`."""
    port = port_of(inode)
    out = subprocess.run(["ss", "-f", "netlink", "-m"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if re.search(rf"uevent:\S*/{port}\s", line or ""):
            m = re.search(r"rb(\d+)", line)
            if m:
                return int(m.group(1))
    return None


def burst(n, tag):
    line = f"change {tag}".encode()
    fd = os.open("/sys/class/net/lo/uevent", os.O_WRONLY)
    t0 = time.monotonic()
    for _ in range(n):
        os.pwrite(fd, line, 0)
    took = time.monotonic() - t0
    os.close(fd)
    return n / took


def settle(pid):
    last, still = cpu_ns(pid), 0
    while still < 5:
        time.sleep(0.1)
        try:
            now = cpu_ns(pid)
        except OSError:
            return last
        still = still + 1 if now == last else 0
        last = now
    return last


def one(spec, n, after=False):
    name, argv, counting, _, _ = spec
    out_path = os.path.join(W, "stdout")
    err_path = os.path.join(W, "stderr")
    out = open(out_path, "w")
    err = open(err_path, "w")
    p = subprocess.Popen(argv, stdout=out, stderr=err)
    inode = None
    t0 = time.time()
    while time.time() - t0 < 10 and inode is None:
        try:
            inode = inode_of(p.pid)
        except OSError:
            break
        time.sleep(0.02)
    if inode is None:
        p.kill()
        p.wait()
        return {"error": "no uevent socket"}
    time.sleep(0.3)
    rb = rcvbuf(inode)
    rss0 = status(p.pid, "VmRSS")
    c0 = cpu_ns(p.pid)
    tag = str(uuid.uuid4())
    rate = burst(n, tag)
    c1 = settle(p.pid)
    hwm = status(p.pid, "VmHWM")
    drops = socket_rows().get(inode, -1)
    died = p.poll()  # exited during the burst (its socket, and Drops, are gone)
    # -1: the listener closed the socket it had (busybox uevent reopens one
    # after an overrun): the kernel's count for it is gone with it
    r = {"drops": drops if died is None and drops >= 0 else None, "socket_closed": drops < 0 and died is None,
         "cpu_us": (c1 - c0) / 1000 / n,
         "rss0": rss0, "hwm": hwm, "rb": rb, "rate": rate, "died": died}
    if after:
        r["alive"] = p.poll() is None
        before_lines = sum(1 for _ in open(out_path, errors="replace"))
        if r["alive"]:
            burst(1, str(uuid.uuid4()))
            time.sleep(1.0)
            r["alive"] = p.poll() is None
        r["next_seen_lines"] = sum(1 for _ in open(out_path, errors="replace")) - before_lines
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    r["exit"] = p.returncode
    out.close()
    err.close()
    errtext = open(err_path, errors="replace").read()
    if counting == "stats":
        m = re.findall(r"accepted=(\d+)", errtext)
        r["own"] = int(m[-1]) if m else None
        for k in ("overruns", "dropped", "resyncs", "synthetic_adds", "synthetic_removes"):
            mm = re.findall(rf"\b{k}=(\d+)", errtext)
            if mm:
                r[k] = int(mm[-1])
    elif counting == "lines":
        r["own"] = sum(1 for l in open(out_path, errors="replace") if "/devices/virtual/net/lo" in l)
    else:
        r["own"] = None
    if r["own"] is not None:
        r["own_lost"] = max(0, n + (1 if after else 0) - r["own"])
    return r


def died_note(runs):
    notes = []
    d = [r["died"] for r in runs if r.get("died") is not None]
    if d:
        notes.append(f"exited during {len(d)} of {len(runs)} runs (status {sorted(set(d))})")
    c = sum(1 for r in runs if r.get("socket_closed"))
    if c:
        notes.append(f"closed its socket during {c} of {len(runs)} runs (its Drops count went with it)")
    return "; ".join(notes)


def fmt_range(vals, f="{:.0f}"):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    lo, med, hi = min(vals), statistics.median(vals), max(vals)
    if lo == hi:
        return f.format(med)
    return f"{f.format(lo)} / {f.format(med)} / {f.format(hi)}"


def ratio_runs(results, name, n):
    """Per round: CPU per event over the C loop's in the same round."""
    base = results.get(("C baseline (recv loop)", n))
    if not base:
        return []
    out = []
    for r, b in zip(results[(name, n)], base):
        if r.get("cpu_us") and b.get("cpu_us"):
            out.append(r["cpu_us"] / b["cpu_us"])
    return out


def load_avg():
    try:
        return open("/proc/loadavg").read().split()[:3]
    except OSError:
        return ["?"] * 3


sizes = [int(x) for x in a.sizes.split(",")]
results = {}
load_before = load_avg()
for n in sizes:
    for spec in LISTENERS:
        results[(spec[0], n)] = []
    for i in range(a.repeat):
        # one round: every listener once, the order rotated each round
        k = i % len(LISTENERS)
        for spec in LISTENERS[k:] + LISTENERS[:k]:
            results[(spec[0], n)].append(one(spec, n))
    for spec in LISTENERS:
        runs = results[(spec[0], n)]
        lost = [r.get("drops") for r in runs]
        ratio = ratio_runs(results, spec[0], n)
        print(f"{spec[0]:32s} N={n:7d} lost(kernel Drops) {fmt_range(lost)}  "
              f"cpu {fmt_range([r.get('cpu_us') for r in runs], '{:.2f}')} us/event  "
              f"ratio {fmt_range(ratio, '{:.2f}')}  "
              f"own-count lost {fmt_range([r.get('own_lost') for r in runs])} {died_note(runs)}", flush=True)
load_after = load_avg()
print(f"load average before {' '.join(load_before)}, after {' '.join(load_after)}", flush=True)

failed = []
for item in filter(None, a.check.split(",")):
    lid, _, mx = item.partition("=")
    spec = next((l for l in LISTENERS if l[4] == lid), None)
    if spec is None:
        sys.exit(f"--check {lid}: no such listener in this run")
    for n in sizes:
        rs = ratio_runs(results, spec[0], n)
        med = statistics.median(rs) if rs else float("inf")
        lost = [r.get("drops") for r in results[(spec[0], n)]]
        ok = med <= float(mx)
        print(f"check {lid} N={n}: median CPU ratio to the C loop {med:.2f} (limit {mx}) "
              f"{'ok' if ok else 'FAILED'}", flush=True)
        if not ok:
            failed.append(lid)
if a.no_report:
    sys.exit(1 if failed else 0)

big = {}
for spec in LISTENERS:
    if a.big <= 0:
        break
    r = one(spec, a.big, after=True)
    big[spec[0]] = r
    print(f"{spec[0]:32s} N={a.big} lost {r.get('drops')} alive={r.get('alive')} exit={r.get('exit')} "
          f"{ {k: r[k] for k in ('own', 'resyncs', 'overruns', 'dropped') if k in r} }", flush=True)

if a.no_latency:
    lat_line = "not measured in this run (--no-latency)"
else:
    lat = subprocess.run([sys.executable, os.path.join(HERE, "latency.py"), "--bin", a.bin],
                         capture_output=True, text=True)
    lat_line = (lat.stdout.strip().splitlines() or ["latency: no output"])[-1]
print(lat_line, flush=True)


# ---------------------------------------------------------------- the report
def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def size_of(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return None


os.makedirs(a.out, exist_ok=True)
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
md = []
md.append("# Benchmarks: hotplugd and its peers\n")
md.append(f"Generated by `bench/run.sh` on {now}. Machine: {os.cpu_count()} CPUs ({cpu_model()}), "
          f"kernel {platform.release()}, {platform.machine()}. Each case ran {a.repeat} times on the "
          f"same kind of burst; cells show min / median / max when they differ. Bursts are real kernel "
          f"uevents (writes of `change UUID` to lo's uevent file) in a private network namespace, "
          f"written as fast as the kernel takes them. Listeners run in rounds (each once per round, "
          f"the order rotated), so the ratio column compares runs made side by side. Load average "
          f"(other work on this shared machine) before: {' '.join(load_before)}, after: {' '.join(load_after)}.\n")
md.append("![loss and CPU per event](benchmarks.svg)\n")
md.append("| listener | N | lost (kernel Drops) | runs with 0 lost | lost (own count) | CPU µs/event | ratio to C loop | idle RSS kB | peak RSS kB | rcvbuf | binary bytes | notes |")
md.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
for spec in LISTENERS:
    for n in sizes:
        runs = [r for r in results[(spec[0], n)] if "error" not in r]
        if not runs:
            md.append(f"| {spec[0]} | {n} | error | | | | | | | | | |")
            continue
        md.append("| " + " | ".join([
            spec[0], f"{n:,}",
            fmt_range([r.get("drops") for r in runs]),
            f"{sum(1 for r in runs if r.get('drops') == 0 and r.get('own_lost', 0) == 0)} of {len(runs)}",
            fmt_range([r.get("own_lost") for r in runs]),
            fmt_range([r["cpu_us"] for r in runs], "{:.2f}"),
            fmt_range(ratio_runs(results, spec[0], n), "{:.2f}"),
            fmt_range([r["rss0"] for r in runs]),
            fmt_range([r["hwm"] for r in runs]),
            str(runs[0].get("rb") or "-"),
            f"{size_of(spec[3]):,}" if size_of(spec[3]) else "-",
            died_note(runs),
        ]) + " |")
md.append("")
md.append(f"## {a.big:,} events at once (beyond every buffer)\n")
md.append("| listener | lost (kernel Drops) | its own count | alive after | next event seen | notes |")
md.append("|---|---|---|---|---|---|")
for spec in LISTENERS:
    if spec[0] not in big:
        continue
    r = big[spec[0]]
    notes = []
    if "resyncs" in r:
        notes.append(f"overruns={r.get('overruns')} dropped={r.get('dropped')} resyncs={r.get('resyncs')}")
    if r.get("socket_closed"):
        notes.append("closed its socket during the burst (its Drops count went with it); still running")
    if r.get("died") is not None:
        notes.append(f"exited during the burst (status {r.get('died')})")
    elif r.get("exit") not in (None, 0, -15):
        notes.append(f"exit status {r.get('exit')}")
    seen = "-" if spec[2] != "lines" else ("yes" if r.get("next_seen_lines", 0) > 0 else "no")
    md.append(f"| {spec[0]} | {r.get('drops') if r.get('drops') is not None else 'unknown'} | {r.get('own') if r.get('own') is not None else '-'} | "
              f"{'yes' if r.get('alive') else 'no'} | {seen} | {'; '.join(notes)} |")
md.append("")
md.append("## hotplugd: event → handler exec latency\n")
md.append(f"`bench/latency.py`, 100 USB rules plus one that runs a timestamping handler: {lat_line}\n")
md.append(open(os.path.join(HERE, "notes.md")).read())
open(os.path.join(a.out, "benchmarks.md"), "w").write("\n".join(md) + "\n")

# SVG: two bar charts, no plotting dependency
names = [s[0] for s in LISTENERS]
mid = sizes[len(sizes) // 2]
top_n = sizes[-1]
loss = [statistics.median([r["drops"] for r in results[(nm, top_n)] if r.get("drops") is not None] or [0])
        for nm in names]
cpu = [statistics.median([r["cpu_us"] for r in results[(nm, mid)] if "error" not in r] or [0]) for nm in names]
W_, bar_h, gap, label_w, chart_w = 900, 18, 6, 260, 560
h = 60 + 2 * (len(names) * (bar_h + gap) + 50)
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W_}" height="{h}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W_}" height="{h}" fill="white"/>']
y = 30


def chart(title, vals, unit, color):
    global y
    svg.append(f'<text x="10" y="{y}" font-size="14" font-weight="bold">{title}</text>')
    y += 15
    top = max(vals) or 1
    for nm, v in zip(names, vals):
        w = chart_w * v / top
        svg.append(f'<text x="10" y="{y + 13}">{nm}</text>')
        svg.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}"/>')
        svg.append(f'<text x="{label_w + w + 5:.1f}" y="{y + 13}">{v:,.2f} {unit}</text>' if isinstance(v, float) and v < 100
                   else f'<text x="{label_w + w + 5:.1f}" y="{y + 13}">{v:,.0f} {unit}</text>')
        y += bar_h + gap
    y += 35


chart(f"Events lost in a {top_n:,}-event burst (median, kernel Drops; 0 for a listener that died)",
      [float(v) for v in loss], "", "#c0392b")
chart(f"CPU per event, {mid:,}-event burst (median)", cpu, "µs", "#2c7fb8")
svg.append("</svg>")
open(os.path.join(a.out, "benchmarks.svg"), "w").write("\n".join(svg) + "\n")
print(f"wrote {os.path.join(a.out, 'benchmarks.md')} and benchmarks.svg")
