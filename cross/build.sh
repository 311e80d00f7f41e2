#!/usr/bin/env bash
# Builds one release flavour of hotplugd for one target with Debian's Rust and
# prints the binary's path (cross/build-release.sh says what the flavours are):
#
#   cross/build.sh stable|board TARGET
#
# stable: target/cross/TARGET/release/hotplugd
# board:  target/cross-board/TARGET/release/hotplugd (std rebuilt for size)
# Incremental: a second call with nothing changed rebuilds nothing.
#
# The musl targets (aarch64-unknown-linux-musl, x86_64-unknown-linux-musl)
# give a static binary that needs no C library on the board: Debian has no
# Rust standard library for them, so they are built with rustup's 1.85
# (the MSRV toolchain), its std for the target and its std source fetched
# here once, linked by the same cross gcc as the glibc targets.
set -euo pipefail
cd "$(dirname "$0")/.."
flavour=${1:?stable or board} target=${2:?target triple}
host=$(/usr/bin/rustc -vV | sed -n 's/^host: //p')
case $target in
    aarch64-unknown-linux-gnu | aarch64-unknown-linux-musl) linker=aarch64-linux-gnu-gcc ;;
    armv7-unknown-linux-gnueabihf) linker=arm-linux-gnueabihf-gcc ;;
    "$host" | x86_64-unknown-linux-musl) linker=cc ;;
    *) echo "cross/build.sh: no settings for $target" >&2; exit 2 ;;
esac
var=$(printf '%s' "$target" | tr 'a-z-' 'A-Z_')
if [ "${target%-musl}" != "$target" ]; then
    tc=1.85
    { rustup toolchain list | grep -q "^$tc" || rustup toolchain install "$tc" --profile minimal; } >&2
    rustup target add "$target" --toolchain "$tc" >&2
    [ "$flavour" = stable ] || rustup component add rust-src --toolchain "$tc" >&2
    rustc_bin=$(rustup which rustc --toolchain "$tc") cargo_bin=$(rustup which cargo --toolchain "$tc")
else
    rustc_bin=/usr/bin/rustc cargo_bin=/usr/bin/cargo
fi
case $flavour in
    stable)
        dir=target/cross
        env "CARGO_TARGET_${var}_LINKER=$linker" RUSTC="$rustc_bin" CARGO_TARGET_DIR=$dir \
            "$cargo_bin" build --locked --release --quiet --target "$target" ;;
    board)
        dir=target/cross-board
        env "CARGO_TARGET_${var}_LINKER=$linker" RUSTC="$rustc_bin" CARGO_TARGET_DIR=$dir \
            RUSTC_BOOTSTRAP=1 "$cargo_bin" build --locked --release --quiet --target "$target" \
            -Zbuild-std=std,panic_abort -Zbuild-std-features=optimize_for_size ;;
    *) echo "cross/build.sh: flavour is stable or board, not $flavour" >&2; exit 2 ;;
esac
printf '%s\n' "$dir/$target/release/hotplugd"
