#!/usr/bin/env bash
# Builds hotplugd the way Buildroot and Yocto build it, and prints each
# stripped size: from a vendored copy (`cargo vendor`), `cargo build
# --offline --locked --release`, with each build system's profile overrides
# as environment variables, for aarch64 and armv7. Not part of CI (slow);
# the numbers are quoted in packaging/README.md.
#
#   packaging/sizes.sh [REV]        (default: the revision pinned in packaging/PIN)
#   TARGETS=aarch64-unknown-linux-gnu FLAVOURS="crate buildroot-fixed" packaging/sizes.sh
#
# Flavours:
#   crate            profile.release of Cargo.toml as it is (opt-level z, LTO,
#                    1 codegen unit, panic=abort, strip)
#   buildroot-O2     Buildroot's defaults (package/pkg-cargo.mk): codegen-units
#                    16, no LTO, opt-level from BR2_OPTIMIZE_2 (Buildroot's
#                    default), debug 0; on ARM --allow-multiple-definition
#   buildroot-Os     the same with BR2_OPTIMIZE_S (opt-level "s")
#   buildroot-fixed  Buildroot's defaults plus HOTPLUGD_CARGO_ENV from
#                    packaging/buildroot/package/hotplugd/hotplugd.mk
#   yocto            cargo.bbclass: --profile=release untouched, plus the
#                    recipe's CARGO_PROFILE_RELEASE_STRIP=false; stripped
#                    afterwards as do_package does
# Needs the cross toolchain of cross/setup.sh (Debian's Rust and ARM std).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=/dev/null
. packaging/PIN
rev=${1:-$REVISION}
work=$(mktemp -d "${TMPDIR:-/tmp}/hotplugd-sizes.XXXXXX")
trap 'rm -rf "$work"' EXIT
src=$work/hotplugd-$VERSION
git archive --prefix="hotplugd-$VERSION/" "$rev" | tar -x -C "$work"
mkdir -p "$src/.cargo"
(cd "$src" && /usr/bin/cargo vendor --locked --quiet "$work/vendor" >.cargo/config.toml)

# The assignments of HOTPLUGD_CARGO_ENV in the .mk, as NAME=VALUE words.
fix=$(sed -n '/^HOTPLUGD_CARGO_ENV/,/^$/p' packaging/buildroot/package/hotplugd/hotplugd.mk |
    grep -o 'CARGO_[A-Z_]*="[^"]*"' | tr -d '"')
[ -n "$fix" ] || { echo "sizes.sh: no HOTPLUGD_CARGO_ENV in hotplugd.mk" >&2; exit 1; }
br_common="CARGO_PROFILE_RELEASE_INCREMENTAL=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
    CARGO_PROFILE_RELEASE_SPLIT_DEBUGINFO=off CARGO_PROFILE_RELEASE_LTO=false
    CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=false
    CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=false"

printf '%-32s %-16s %9s\n' target flavour bytes
for target in ${TARGETS:-aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf}; do
    case $target in
        aarch64-unknown-linux-gnu) cross=aarch64-linux-gnu- arm= ;;
        armv7-unknown-linux-gnueabihf) cross=arm-linux-gnueabihf- arm=y ;;
        *) echo "sizes.sh: no settings for $target" >&2; exit 2 ;;
    esac
    var=$(printf '%s' "$target" | tr 'a-z-' 'A-Z_')
    br_arch=""
    [ -z "$arm" ] || br_arch="CARGO_TARGET_${var}_RUSTFLAGS=-Clink-arg=-Wl,--allow-multiple-definition"
    for flavour in ${FLAVOURS:-crate buildroot-O2 buildroot-Os buildroot-fixed yocto}; do
        case $flavour in
            crate) envs="" ;;
            buildroot-O2) envs="$br_common $br_arch CARGO_PROFILE_RELEASE_OPT_LEVEL=2" ;;
            buildroot-Os) envs="$br_common $br_arch CARGO_PROFILE_RELEASE_OPT_LEVEL=s" ;;
            buildroot-fixed) envs="$br_common $br_arch CARGO_PROFILE_RELEASE_OPT_LEVEL=2 $fix" ;;
            yocto) envs="CARGO_PROFILE_RELEASE_STRIP=false" ;;
            *) echo "sizes.sh: unknown flavour $flavour" >&2; exit 2 ;;
        esac
        # shellcheck disable=SC2086  # envs is a list of words on purpose
        (cd "$src" && env $envs "CARGO_TARGET_${var}_LINKER=${cross}gcc" RUSTC=/usr/bin/rustc \
            CARGO_TARGET_DIR="$work/target-$flavour" \
            /usr/bin/cargo build --offline --locked --release --quiet --target "$target")
        bin=$work/target-$flavour/$target/release/hotplugd
        # both systems strip target binaries with these options
        "${cross}strip" --remove-section=.comment --remove-section=.note "$bin"
        printf '%-32s %-16s %9s\n' "$target" "$flavour" "$(stat -c %s "$bin")"
    done
done
