#!/usr/bin/env bash
# Builds hotplugd and runs the WHOLE test suite for the ARM targets under
# qemu-user, with Debian's Rust (see setup.sh): unit tests, the
# integration tests with real kernel uevents, and the tests that run the
# binary (through HOTPLUGD_TEST_RUNNER, which tests/common/mod.rs honours).
#
#   cross/test.sh                                # both targets
#   TARGETS=armv7-unknown-linux-gnueabihf cross/test.sh
#
# The runners use the multiarch C libraries setup.sh installs (libc6:arm64,
# libc6:armhf, found through /lib/ld-linux-*.so.*), not `-L /usr/<triple>`:
# with the older libc6-*-cross copies there, qemu-user 7.2 hangs in
# pthread_create (aarch64) or crashes (armhf), and the test harness creates
# a thread per test.
set -euo pipefail
cd "$(dirname "$0")/.."
cross/setup.sh
for target in ${TARGETS:-aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf}; do
    case $target in
        aarch64-unknown-linux-gnu) linker=aarch64-linux-gnu-gcc; runner=qemu-aarch64 ;;
        armv7-unknown-linux-gnueabihf) linker=arm-linux-gnueabihf-gcc; runner=qemu-arm ;;
        *) echo "cross/test.sh: no settings for $target" >&2; exit 2 ;;
    esac
    var=$(printf '%s' "$target" | tr 'a-z-' 'A-Z_')
    printf '\n== %s: build and test under %s\n' "$target" "${runner%% *}"
    t0=$(date +%s)
    env "CARGO_TARGET_${var}_LINKER=$linker" "CARGO_TARGET_${var}_RUNNER=$runner" \
        HOTPLUGD_TEST_RUNNER="$runner" RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc \
        CARGO_TARGET_DIR=target/cross \
        /usr/bin/cargo test --locked --no-fail-fast --target "$target"
    printf '== %s: passed in %ss\n' "$target" "$(( $(date +%s) - t0 ))"
done
