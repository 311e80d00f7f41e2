#!/usr/bin/env bash
# Installs, from Debian's packages only, what CI needs beside rustup's toolchain:
#   - Debian's Rust (rustc-web/cargo-web), the only Rust with a standard library
#     for aarch64 and armv7 that can be installed here. Its version is whatever
#     the archive has (1.85 once, 1.96 on 2026-12-07); the MSRV itself is
#     checked with rustup's 1.85 by .ci/run's MSRV step;
#   - the standard library for arm64 and armhf, at exactly the same version;
#   - the cross linkers and qemu-user, to run the ARM test suites;
#   - std's source (rust-web-src), to rebuild std for size (build-release.sh).
# Versions are found, not hard-coded: the newest version of libstd-rust-web-dev
# that the archive has for every architecture we need (see
# ../shared/notes/cross-toolchain.md). Idempotent; safe to run again.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
ARCHES="amd64 arm64 armhf"

log() { printf 'cross/setup: %s\n' "$*" >&2; }

# The newest version of $1 that apt offers for every one of $ARCHES.
common_version() {
    local pkg=$1 arch best="" common=""
    for arch in $ARCHES; do
        local vs
        vs=$(apt-cache madison "$pkg:$arch" 2>/dev/null | awk -F'|' '{gsub(/ /,"",$2); print $2}' | sort -u)
        if [ -z "$common" ]; then common=$vs; else
            common=$(comm -12 <(printf '%s\n' "$common") <(printf '%s\n' "$vs"))
        fi
    done
    for v in $common; do
        if [ -z "$best" ] || dpkg --compare-versions "$v" gt "$best"; then best=$v; fi
    done
    printf '%s\n' "$best"
}

have_all() {
    [ -x /usr/bin/rustc ] && [ -x /usr/bin/cargo ] && command -v qemu-aarch64 >/dev/null &&
    command -v qemu-arm >/dev/null && command -v aarch64-linux-gnu-gcc >/dev/null &&
    command -v arm-linux-gnueabihf-gcc >/dev/null &&
    [ -d /usr/lib/rustlib/aarch64-unknown-linux-gnu/lib ] &&
    [ -d /usr/lib/rustlib/armv7-unknown-linux-gnueabihf/lib ] &&
    [ -e /lib/ld-linux-aarch64.so.1 ] && [ -e /lib/ld-linux-armhf.so.3 ] &&
    [ -f /usr/lib/rustlib/src/rust/library/Cargo.lock ]
}

if have_all; then
    log "already installed: $(/usr/bin/rustc --version)"
    exit 0
fi

for a in arm64 armhf; do
    dpkg --print-foreign-architectures | grep -qx "$a" || dpkg --add-architecture "$a"
done
# The armhf security index is sometimes mid-sync ("Mirror sync in progress?");
# the rest of the update is usable, so a failure here is not fatal.
apt-get update -q >/dev/null 2>&1 || log "apt-get update reported errors (tolerated)"

V=$(common_version libstd-rust-web-dev)
[ -n "$V" ] || { log "no version of libstd-rust-web-dev exists for all of: $ARCHES"; exit 1; }
# liblzma5 is Multi-Arch: same and has been seen at different versions per
# architecture; pin one version that exists for all of them.
L=$(common_version liblzma5)
[ -n "$L" ] || { log "no common liblzma5 version for: $ARCHES"; exit 1; }
log "Rust $V, liblzma5 $L"

pkgs=(rustc-web="$V" cargo-web="$V" libstd-rust-web-dev="$V" rust-web-src="$V"
      gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross
      qemu-user libc6:arm64 libc6:armhf)
# libc6:arm64/armhf (multiarch, the same version as the host's libc6) are what
# qemu-user runs the binaries with; see test.sh for why not the -cross copies.
# the runtime library package is named after the major.minor version (libstd-rust-web-1.85)
mm=$(printf '%s' "$V" | sed -E 's/^([0-9]+\.[0-9]+).*/\1/')
for a in amd64 arm64 armhf; do
    pkgs+=("liblzma5:$a=$L" "libstd-rust-web-$mm:$a=$V")
    [ "$a" = amd64 ] || pkgs+=("libstd-rust-web-dev:$a=$V")
done
apt-get install -y -q --no-install-recommends --allow-downgrades "${pkgs[@]}" >/dev/null
have_all || { log "installation finished but something is missing"; exit 1; }
log "installed: $(/usr/bin/rustc --version), $(qemu-aarch64 --version | head -1)"
