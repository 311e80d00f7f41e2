#!/usr/bin/env bash
# Builds the release binary for the host and both ARM targets with Debian's
# Rust (/usr/bin/rustc: 1.96 here), in two flavours, and prints each stripped size:
#
#   stable  `cargo build --release` (profile.release: opt-level z, LTO, one
#           codegen unit, panic=abort, stripped). Over 450 KB on ARM: about
#           170 KB of it is std's backtrace symbolizer (gimli, addr2line,
#           miniz_oxide), which the prebuilt std always links.
#   board   the same, plus std rebuilt for size: -Zbuild-std=std,panic_abort
#           -Zbuild-std-features=optimize_for_size (needs the rust-web-src
#           package of the same version, and RUSTC_BOOTSTRAP=1 to allow the
#           -Z flags on a stable compiler, as distributions do for Firefox).
#           Panic messages are kept. This is the binary to put on a board;
#           the 800 KB budget (819,200 bytes) is checked on it, for ARM.
#           (480 KB until 2026-12-07, when /dev management, udev's rules
#           language, the daily tools, services, kmod and firmware loading
#           and input_id came in: +64 % of source, +300 KB of binary.
#           450 KB until 2026-12-06: aarch64 then crossed a 64 KiB step.
#           GNU ld ends RELRO on a 64 KiB boundary for 64K-page kernels, so
#           the file grows in 64 KiB steps: 461,168 bytes held 413,632 of
#           text, 19,072 of data and ~25 KB of alignment padding.)
#
# aarch64-unknown-linux-musl is built by rustup's 1.85 (cross/build.sh says
# why): a static binary that needs no C library on the board, and the one the
# VM test runs. Its resident memory in the aarch64 guest is about half the
# glibc build's, whose shared library pages count in it.
#
#   cross/build-release.sh
#   TARGETS=aarch64-unknown-linux-gnu cross/build-release.sh
#
# Binaries: target/cross/<target>/release/hotplugd (stable) and
# target/cross-board/<target>/release/hotplugd (board). Each ARM binary is
# also run once under qemu-user (`--version`, `check`) as a smoke test.
set -euo pipefail
cd "$(dirname "$0")/.."
cross/setup.sh
BUDGET=819200
host=$(/usr/bin/rustc -vV | sed -n 's/^host: //p')
status=0
printf '%-32s %-7s %9s  %s\n' target flavour bytes note
for target in ${TARGETS:-$host aarch64-unknown-linux-gnu aarch64-unknown-linux-musl armv7-unknown-linux-gnueabihf}; do
    case $target in
        aarch64-unknown-linux-gnu | aarch64-unknown-linux-musl) strip=aarch64-linux-gnu-strip run=qemu-aarch64 ;;
        armv7-unknown-linux-gnueabihf) strip=arm-linux-gnueabihf-strip run=qemu-arm ;;
        "$host") strip=strip run="" ;;
        *) echo "cross/build-release.sh: no settings for $target" >&2; exit 2 ;;
    esac
    for flavour in stable board; do
        bin=$(cross/build.sh $flavour "$target")
        "$strip" "$bin"   # profile.release strips already; be sure of what we report
        size=$(stat -c %s "$bin")
        note=""
        if [ "$target" != "$host" ] && [ $flavour = board ]; then
            if [ "$size" -gt "$BUDGET" ]; then note="OVER BUDGET ($BUDGET)"; status=1; else note="within budget ($BUDGET)"; fi
        fi
        # smoke test: it starts, and loads the built-in rules
        if ! { $run "$bin" --version >/dev/null && $run "$bin" check >/dev/null; }; then
            note="$note; DOES NOT RUN"
            status=1
        fi
        printf '%-32s %-7s %9s  %s\n' "$target" "$flavour" "$size" "$note"
    done
done
exit $status
