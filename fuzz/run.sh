#!/usr/bin/env bash
# Runs each fuzz target for RUNS executions (default 100,000: the short run
# .ci/run does) from seeds made of the repository's real data.
#
#   fuzz/run.sh                      # short: 100,000 executions per target
#   RUNS=10000000 fuzz/run.sh        # the long run (10 million per target)
#   TARGETS=rules_parse fuzz/run.sh
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install --locked
# cargo-fuzz`). A crash fails the run and leaves the input in
# fuzz/artifacts/<target>/: add it to the target's regression test.
set -euo pipefail
cd "$(dirname "$0")"
RUNS=${RUNS:-100000}
command -v cargo-fuzz >/dev/null || cargo install --locked --quiet cargo-fuzz
python3 seed.py
for t in ${TARGETS:-uevent_parse rules_parse replay_input}; do
    mkdir -p "corpus/$t"
    t0=$(date +%s)
    # corpus/ collects what the fuzzer finds; seeds/ is read only
    log=$(mktemp)
    if ! cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -runs="$RUNS" -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        tail -40 "$log"
        rm -f "$log"
        echo "fuzz/run.sh: $t FAILED (the input is in fuzz/artifacts/$t/)"
        exit 1
    fi
    grep -E '^stat::(number_of_executed_units|peak_rss_mb)' "$log" || true
    rm -f "$log"
    echo "fuzz/run.sh: $t: $RUNS runs in $(( $(date +%s) - t0 ))s"
done
