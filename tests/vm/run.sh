#!/usr/bin/env bash
# End-to-end: the cross-built hotplugd started by the board's busybox init
# script inside a QEMU guest running Debian's own kernel, with real USB
# devices plugged and unplugged over QMP. Asserts, from the guest's serial
# console, that the board's rules ran the right handlers with the right
# environment (tests/vm/harness.py says exactly what).
#
#   tests/vm/run.sh                 # aarch64 guest (qemu-system-aarch64 -M virt, TCG)
#   ARCH=x86_64 tests/vm/run.sh     # x86_64 guest (qemu-system-x86_64, TCG)
#
# Needs root (apt-get, mknod) and Debian's archive. Packages are fetched with
# `apt-get download` and unpacked with `dpkg -x` under $W (default
# tests/vm/work, git-ignored), never installed: Debian's qemu-system 7.2
# conflicts with the machine's qemu-utils. KVM is not used (it hangs here).
# Every wait is bounded; QEMU is always killed.
set -euo pipefail
cd "$(dirname "$0")/../.."
ARCH=${ARCH:-aarch64}
W=${HOTPLUGD_VM_WORK:-$PWD/tests/vm/work}
mkdir -p "$W/debs" "$W/build"
export DEBIAN_FRONTEND=noninteractive
log() { printf 'tests/vm: %s\n' "$*" >&2; }
t0=$(date +%s)

case $ARCH in
    aarch64) darch=arm64 qpkg=qemu-system-arm qbin=qemu-system-aarch64 ;;
    x86_64) darch=amd64 qpkg=qemu-system-x86 qbin=qemu-system-x86_64 ;;
    *) log "ARCH must be aarch64 or x86_64"; exit 2 ;;
esac

# ---- packages (found, not hard-coded: the newest 6.1 kernel in the archive)
if [ "$darch" = arm64 ] && ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
    apt-get update -q >/dev/null 2>&1 || log "apt-get update reported errors (tolerated)"
fi
KVER=$(apt-cache search --names-only "^linux-image-6\.1\.0-[0-9]+-$darch-unsigned\$" |
    sed -E "s/^linux-image-(6\.1\.0-[0-9]+)-$darch-unsigned .*/\1/" | sort -V | tail -1)
[ -n "$KVER" ] || { log "no linux-image-6.1.0-*-$darch-unsigned in the archive"; exit 1; }
fetch() { # fetch DIR PKG[:ARCH]...: download (cached in $W/debs) and unpack
    local dir=$1 p n a d; shift
    mkdir -p "$dir"
    for p in "$@"; do
        n=${p%%:*}; a=${p#*:}; [ "$a" = "$p" ] && a=amd64
        [ -e "$dir/.unpacked-$n-$a" ] && continue
        if ! ls "$W/debs/${n}_"*"_$a.deb" "$W/debs/${n}_"*_all.deb >/dev/null 2>&1; then
            (cd "$W/debs" && apt-get download -q "$p" >/dev/null 2>&1) || { log "apt-get download $p failed"; exit 1; }
        fi
        for d in "$W/debs/${n}_"*"_$a.deb" "$W/debs/${n}_"*_all.deb; do
            [ -e "$d" ] && dpkg -x "$d" "$dir"
        done
        touch "$dir/.unpacked-$n-$a"
    done
}
fetch "$W/qemu" "$qpkg" qemu-system-common qemu-system-data
if [ "$ARCH" = x86_64 ]; then fetch "$W/qemu" seabios ipxe-qemu; fi
if [ ! -e "$W/.libs-$qpkg" ]; then
    # qemu's plain shared-library dependencies (not qemu-* or firmware packages)
    libs=$(dpkg-deb -f "$W/debs/${qpkg}_"*_amd64.deb Depends | tr ',' '\n' | sed 's/(.*)//;s/|.*//;s/ //g' |
        grep -vE '^(qemu-|seabios|ipxe-|$)')
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $libs cpio dosfstools mtools >/dev/null
    touch "$W/.libs-$qpkg"
fi
fetch "$W/guest-$darch" "linux-image-$KVER-$darch-unsigned:$darch" "busybox-static:$darch"
QEMU=$W/qemu/usr/bin/$qbin
"$QEMU" --version | head -1 >&2
KROOT=$W/guest-$darch
KERNEL=$KROOT/boot/vmlinuz-$KVER-$darch
log "kernel $KVER-$darch ($(( $(date +%s) - t0 ))s)"

# ---- hotplugd for the guest: the board flavour (std rebuilt for size, see
# cross/build-release.sh), linked statically against musl: the binary a
# board ships, which needs no C library in the image, and whose memory we
# report (with glibc's shared pages it was 2,860 kB in the aarch64 guest)
cross/setup.sh
BIN=$(cross/build.sh board "$ARCH-unknown-linux-musl")
if readelf -l "$BIN" | grep -q INTERP; then
    log "$BIN is not statically linked"; exit 1
fi

# ---- the initramfs: busybox, modules, hotplugd, board/generic, /init
st=$W/initramfs-$ARCH
rm -rf "$st"
mkdir -p "$st"/{bin,sbin,dev,proc,sys,run,tmp,media,etc/default,lib/modules,usr/bin,usr/sbin}
cp "$KROOT/bin/busybox" "$st/bin/busybox"
sh board/install.sh generic "$st" --init busybox --bin "$BIN" >&2
# the board's group database: the rules resolve GROUP="dialout" at load
printf 'root:x:0:\ndialout:x:20:\n' >"$st/etc/group"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$st/etc/passwd"
# Test-only additions: each handler reports what it saw on the console,
# then runs the board's real handler; one rule reports USB devices.
for h in "$st"/usr/libexec/hotplugd/*; do
    mv "$h" "$h.real"
    cat >"$h" <<'WRAP'
#!/bin/sh
node=$([ -n "${DEVNAME:-}" ] && ls -ln "/dev/$DEVNAME" 2>/dev/null | awk '{print $1 ":" $4}')
echo "E2E-HANDLER ${0##*/} ACTION=$ACTION DEVNAME=${DEVNAME:-} INTERFACE=${INTERFACE:-} PRODUCT=${PRODUCT:-} ID_SERIAL=${ID_SERIAL:-} NODE=${node:-} COLDPLUG=${HOTPLUGD_COLDPLUG:-0} RESYNC=${HOTPLUGD_RESYNC:-0}" >/dev/console
exec "$0.real"
WRAP
    chmod 755 "$h"
done
cat >"$st/usr/libexec/hotplugd/e2e-usb-report" <<'WRAP'
#!/bin/sh
echo "E2E-USB ACTION=$ACTION DEVPATH=$DEVPATH PRODUCT=${PRODUCT:-} COLDPLUG=${HOTPLUGD_COLDPLUG:-0}" >/dev/console
WRAP
chmod 755 "$st/usr/libexec/hotplugd/e2e-usb-report"
echo 'ACTION=="add|remove", SUBSYSTEM=="usb", ENV{DEVTYPE}=="usb_device", RUN+="/usr/libexec/hotplugd/e2e-usb-report"' \
    >"$st/etc/hotplugd/rules.d/90-e2e-report.rules"
echo 'LOG_TARGET=kmsg' >"$st/etc/default/hotplugd"

# modules (busybox depmod: the host has no kmod). /init insmods only the
# host controller and what no device asks for (evdev, the filesystems); the
# USB drivers (usbhid, hid-generic, usb-storage, sd_mod, ftdi_sio,
# cdc_ether, rndis_host and their dependencies) are loaded by hotplugd from
# MODALIAS (board/generic/rules.d/05-drivers.rules: `kmod load`) through
# busybox modprobe, at coldplug and on plug. modules.dep and modules.alias
# come from busybox depmod over the guest's own module tree.
BOOT_MODS="xhci-pci evdev vfat nls_cp437 nls_ascii nls_utf8"
AUTO_MODS="usbhid hid-generic usb-storage sd_mod usbserial ftdi_sio usbnet cdc_ether rndis_host"
mdir=$KROOT/lib/modules/$KVER-$darch
gmdir=$st/lib/modules/$KVER-$darch
[ -e "$mdir/modules.dep" ] || "$KROOT/bin/busybox" depmod -b "$KROOT" "$KVER-$darch" 2>/dev/null ||
    qemu-"$ARCH" "$KROOT/bin/busybox" depmod -b "$KROOT" "$KVER-$darch"
order() { # order MODULE...: the modules.dep paths of MODULEs and their dependencies, dependencies first
    python3 - "$mdir" "$@" <<'PY'
import os, sys
mdir, want = sys.argv[1], sys.argv[2:]
dep = {}
for line in open(os.path.join(mdir, "modules.dep")):
    k, _, v = line.strip().partition(":")
    dep[k] = v.split()
norm = lambda s: os.path.basename(s).split(".ko")[0].replace("-", "_")
by = {norm(k): k for k in dep}
out, seen = [], set()
def visit(p):
    if p in seen:
        return
    seen.add(p)
    for d in dep[p]:
        visit(d)
    out.append(p)
for w in want:
    if norm(w) in by:
        visit(by[norm(w)])
    else:
        sys.exit(f"no module {w} in modules.dep")
print("\n".join(out))
PY
}
# shellcheck disable=SC2086  # word lists
{ order $BOOT_MODS; order $AUTO_MODS; } | sort -u | while read -r p; do
    case $p in *.ko.xz | *.ko.zst) log "compressed module $p: not supported"; exit 1 ;; esac
    mkdir -p "$gmdir/$(dirname "$p")"
    cp "$mdir/$p" "$gmdir/$p"
done
"$KROOT/bin/busybox" depmod -b "$st" "$KVER-$darch" 2>/dev/null ||
    qemu-"$ARCH" "$KROOT/bin/busybox" depmod -b "$st" "$KVER-$darch"
[ -s "$gmdir/modules.alias" ] || { log "busybox depmod made no modules.alias"; exit 1; }
grep -q "usb:v0403p6001" "$gmdir/modules.alias" || { log "modules.alias has no ftdi_sio alias"; exit 1; }
mkdir -p "$st/etc/modprobe.d"
echo "options usb-storage delay_use=0" >"$st/etc/modprobe.d/e2e.conf"
# shellcheck disable=SC2086
order $BOOT_MODS | sed "s|^|$KVER-$darch/|" >"$st/etc/modules.load"
mknod -m 600 "$st/dev/console" c 5 1
cat >"$st/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run; mount -t tmpfs tmpfs /media; mount -t tmpfs tmpfs /tmp
dmesg -n 1
while read -r m; do insmod "/lib/modules/$m" || echo "E2E-ERROR insmod $m"; done </etc/modules.load
echo "E2E-BOOTED uptime=$(cut -d' ' -f1 /proc/uptime)"
# the keyboard plugged on QEMU's command line is present before we start
# (as on a board booted with devices attached): wait for its enumeration
i=0
while [ ! -e /sys/bus/usb/devices/1-1 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -e /sys/bus/usb/devices/1-1 ] || echo "E2E-ERROR the pre-plugged keyboard did not appear"
sleep 0.5
# as init would: the board's busybox init script, which returns when ready
if /etc/init.d/S10hotplugd start; then
    echo
    echo "E2E-READY uptime=$(cut -d' ' -f1 /proc/uptime)"
else
    echo "E2E-ERROR hotplugd did not start"; dmesg | tail -20
fi
# commands from the harness, one per line on the console
while read -r cmd arg; do
    case $cmd in
        cat) echo "E2E-CAT $(cat "$arg" 2>&1)" ;;
        node) echo "E2E-NODE $(ls -ln "$arg" 2>&1 | tr -s ' \n' ' ')" ;;
        mounts) echo "E2E-MOUNTS $(grep " $arg " /proc/mounts || echo none)" ;;
        write) if touch "$arg" 2>/dev/null; then echo "E2E-WRITE ok"; else echo "E2E-WRITE refused"; fi ;;
        stats)
            kill -USR1 "$(cat /run/hotplugd.pid)"; sleep 1
            echo "E2E-STATS $(dmesg | grep 'stats:' | tail -1)" ;;
        log) dmesg | grep 'hotplugd\[' | sed 's/^/E2E-LOG /' ;;
        modules) echo "E2E-MODULES $(cut -d' ' -f1 /proc/modules | sort | tr '\n' ' ')" ;;
        rss) echo "E2E-RSS $(grep -E 'VmRSS|VmHWM|RssAnon|RssFile' "/proc/$(cat /run/hotplugd.pid)/status" | tr -s ' \t\n' ' ')" ;;
        stop) /etc/init.d/S10hotplugd stop; echo "E2E-STOPPED $?" ;;
        *) echo "E2E-UNKNOWN $cmd" ;;
    esac
done </dev/console >/dev/console 2>&1
echo "E2E-CONSOLE-CLOSED"
while :; do sleep 3600; done
INIT
chmod 755 "$st/init"
(cd "$st" && find . | cpio -o -H newc --quiet -R 0:0) >"$W/build/initrd-$ARCH.cpio"
log "initramfs $(du -h "$W/build/initrd-$ARCH.cpio" | cut -f1) ($(( $(date +%s) - t0 ))s)"

# ---- a stick as sticks come: an MBR partition table, one FAT partition
# (from sector 2048) with a file on it, so the guest sees sda and sda1
img=$W/build/stick.img
rm -f "$img"
truncate -s 8M "$img"
python3 - "$img" <<'MBR'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    start, count = 2048, 8 * 2048 - 2048
    # status, CHS first (unused), type 0x0e (FAT16, LBA), CHS last, LBA start, sectors
    entry = struct.pack("<B3sB3sII", 0, b"\xfe\xff\xff", 0x0E, b"\xfe\xff\xff", start, count)
    f.seek(446)
    f.write(entry + bytes(48) + b"\x55\xaa")
MBR
mkfs.vfat --offset=2048 -n E2ESTICK "$img" 7168 >/dev/null
printf 'hello from the stick\n' >"$W/build/hello.txt"
mcopy -i "$img@@1048576" "$W/build/hello.txt" ::/hello.txt

# ---- boot, plug, assert
python3 tests/vm/harness.py --arch "$ARCH" --qemu "$QEMU" --kernel "$KERNEL" \
    --initrd "$W/build/initrd-$ARCH.cpio" --stick "$img" --workdir "$W"
log "passed; wall time $(( $(date +%s) - t0 ))s"
