#!/usr/bin/env bash
# The side-by-side benchmark, from a clean clone, as root:
#
#   bench/run.sh                       # 10k/100k/500k bursts x 5, 1M once, latency
#   bench/run.sh --repeat 3 --sizes 10000,100000
#   bench/run.sh --extra 'name=/path/to/listener ARGS'        # any other listener
#   MDEVD_SRC=DIR SKALIBS_SRC=DIR bench/run.sh                # with mdevd too
#
# Builds hotplugd (release) and the C baseline, fetches the peers from
# Debian's packages without installing them (busybox-static for `mdev -d`
# and `uevent`, udev for `udevadm monitor --kernel`: `apt-get download` +
# `dpkg -x` under bench/work), then runs bench/compare.py, which prints the
# table and writes docs/benchmarks.md and docs/benchmarks.svg. Options go to
# compare.py.
#
# mdevd is not packaged by Debian: give checkouts of skarnet's skalibs and
# mdevd as SKALIBS_SRC and MDEVD_SRC and they are built (static skalibs,
# under bench/work/mdevd-build, nothing installed) and benchmarked as
# `mdevd -b 16M` with an empty mdev.conf. Without them mdevd is left out and
# the script says so.
set -euo pipefail
cd "$(dirname "$0")/.."
W=$PWD/bench/work
mkdir -p "$W/debs" "$W/peers"
command -v gcc >/dev/null || apt-get install -y -q gcc libc6-dev >/dev/null
command -v ss >/dev/null || apt-get install -y -q iproute2 >/dev/null
for p in busybox-static udev; do
    if ! ls "$W/debs/${p}_"*.deb >/dev/null 2>&1; then
        (cd "$W/debs" && apt-get download -q "$p" >/dev/null 2>&1) || { echo "bench/run.sh: apt-get download $p failed" >&2; exit 1; }
    fi
done
for d in "$W"/debs/*.deb; do dpkg -x "$d" "$W/pkgroot"; done
ln -sf "$W/pkgroot/bin" "$W/peers/" 2>/dev/null || true
if [ ! -x "$W/peers/bin/busybox" ] || [ ! -x "$W/peers/bin/udevadm" ]; then
    echo "bench/run.sh: peers missing after unpacking" >&2
    exit 1
fi
gcc -O2 -o "$W/baseline" bench/baseline.c
MDEVD=()
if [ -n "${MDEVD_SRC:-}" ] && [ -n "${SKALIBS_SRC:-}" ]; then
    B=$W/mdevd-build
    if [ ! -x "$B/mdevd/mdevd" ]; then
        rm -rf "$B" && mkdir -p "$B"
        cp -r "$SKALIBS_SRC" "$B/skalibs" && cp -r "$MDEVD_SRC" "$B/mdevd"
        (cd "$B/skalibs" && ./configure --prefix="$B/root" --disable-shared --enable-static \
            && make -j2 && make install) >"$B/build.log" 2>&1
        (cd "$B/mdevd" && ./configure --prefix="$B/root" --with-sysdeps="$B/root/lib/skalibs/sysdeps" \
            --with-include="$B/root/include" --with-lib="$B/root/lib" --disable-shared \
            && make -j2) >>"$B/build.log" 2>&1 || { echo "bench/run.sh: mdevd build failed, see $B/build.log" >&2; exit 1; }
    fi
    MDEVD=(--mdevd "$B/mdevd/mdevd")
else
    echo "bench/run.sh: MDEVD_SRC/SKALIBS_SRC not set: mdevd is left out" >&2
fi
cargo build --release --locked --quiet
exec python3 bench/compare.py --work "$W" "${MDEVD[@]}" "$@"
