#!/usr/bin/env bash
# Builds one release flavour of hotplugd for one target with Debian's Rust and
# prints the binary's path (cross/build-release.sh says what the flavours are):
#
#   cross/build.sh stable|board TARGET
#
# stable: target/cross/TARGET/release/hotplugd
# board:  target/cross-board/TARGET/release/hotplugd (std rebuilt for size)
# Incremental: a second call with nothing changed rebuilds nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
flavour=${1:?stable or board} target=${2:?target triple}
host=$(/usr/bin/rustc -vV | sed -n 's/^host: //p')
case $target in
    aarch64-unknown-linux-gnu) linker=aarch64-linux-gnu-gcc ;;
    armv7-unknown-linux-gnueabihf) linker=arm-linux-gnueabihf-gcc ;;
    "$host") linker=cc ;;
    *) echo "cross/build.sh: no settings for $target" >&2; exit 2 ;;
esac
var=$(printf '%s' "$target" | tr 'a-z-' 'A-Z_')
case $flavour in
    stable)
        dir=target/cross
        env "CARGO_TARGET_${var}_LINKER=$linker" RUSTC=/usr/bin/rustc CARGO_TARGET_DIR=$dir \
            /usr/bin/cargo build --locked --release --quiet --target "$target" ;;
    board)
        dir=target/cross-board
        env "CARGO_TARGET_${var}_LINKER=$linker" RUSTC=/usr/bin/rustc CARGO_TARGET_DIR=$dir \
            RUSTC_BOOTSTRAP=1 /usr/bin/cargo build --locked --release --quiet --target "$target" \
            -Zbuild-std=std,panic_abort -Zbuild-std-features=optimize_for_size ;;
    *) echo "cross/build.sh: flavour is stable or board, not $flavour" >&2; exit 2 ;;
esac
printf '%s\n' "$dir/$target/release/hotplugd"
