#!/usr/bin/env bash
# The CI's performance regression check (called from .ci/run), as root.
#
# Runs the C recv loop, `hotplugd run` with the 100 USB rules and
# `hotplugd monitor --json` side by side in rotated rounds (bench/compare.py,
# 7 rounds of 20,000 real uevents in a private network namespace) and fails
# when the median ratio of CPU per event to the C loop's, in the same rounds,
# is above a loose limit: 2.5x for `run`, 3x for `monitor --json` (they
# measure 1.2x-1.4x on a quiet machine, docs/benchmarks.md; a clean-clone CI
# run on 2026-12-07 measured `run` at 1.82x, so 2x would flake). Ratios, never times: a noisy shared
# 2-core machine slows every listener of a round alike. Needs only gcc and
# the release build; fetches no peers.
set -euo pipefail
cd "$(dirname "$0")/.."
W=$PWD/bench/work
mkdir -p "$W"
command -v gcc >/dev/null || apt-get install -y -q gcc libc6-dev >/dev/null
command -v ss >/dev/null || apt-get install -y -q iproute2 >/dev/null
gcc -O2 -o "$W/baseline" bench/baseline.c
cargo build --release --locked --quiet
exec python3 bench/compare.py --work "$W" --sizes 20000 --repeat 7 --big 0 --no-latency \
    --no-report --only c,run-usb100,monitor-json --check run-usb100=2.5,monitor-json=3.0
