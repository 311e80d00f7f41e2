#!/bin/sh
# Installs a board's hotplugd configuration into a root filesystem (a
# Buildroot/Yocto staging tree, an SD card's root, or / on the board):
# board/generic first, then board/BOARD on top (a file of the same name
# replaces the generic one).
#
#   board/install.sh BOARD DESTDIR [options]
#
#   --init SYSTEM      busybox | openrc | runit | s6 | systemd | none (default none)
#   --bin FILE         also install FILE as DESTDIR/usr/sbin/hotplugd
#   --libexecdir DIR   where handlers go and RUN+= points (default
#                      /usr/libexec/hotplugd; the rules are rewritten to match)
#
# Result:
#   DESTDIR/etc/hotplugd/rules.d/*.rules        rules (check: hotplugd check --rules ...)
#   DESTDIR/<libexecdir>/*                       handler scripts
#   DESTDIR/etc/init.d/S10hotplugd + inittab.hotplugd   (busybox)
#   DESTDIR/etc/init.d/hotplugd                  (openrc)
#   DESTDIR/etc/sv/hotplugd/                     (runit)
#   DESTDIR/etc/s6/hotplugd/                     (s6)
#   DESTDIR/etc/systemd/system/hotplugd.service  (systemd)
set -eu

usage() {
    sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

[ $# -ge 2 ] || usage
board=$1
dest=$2
shift 2
init=none
bin=
libexec=/usr/libexec/hotplugd
while [ $# -gt 0 ]; do
    case $1 in
        --init) init=${2:?--init needs a value}; shift 2 ;;
        --bin) bin=${2:?--bin needs a file}; shift 2 ;;
        --libexecdir) libexec=${2:?--libexecdir needs a directory}; shift 2 ;;
        *) echo "install.sh: unknown option '$1'" >&2; usage ;;
    esac
done

here=$(cd "$(dirname "$0")" && pwd)
[ -d "$here/$board" ] || { echo "install.sh: no board '$board' in $here" >&2; exit 2; }
case $libexec in /*) ;; *) echo "install.sh: --libexecdir must be absolute" >&2; exit 2 ;; esac
case $init in busybox | openrc | runit | s6 | systemd | none) ;; *)
    echo "install.sh: --init '$init': expected busybox, openrc, runit, s6, systemd or none" >&2; exit 2 ;;
esac

rules=$dest/etc/hotplugd/rules.d
handlers=$dest$libexec
mkdir -p "$rules" "$handlers"

# generic first, then the board's own files over it
layers=generic
[ "$board" = generic ] || layers="generic $board"
for layer in $layers; do
    if [ -d "$here/$layer/rules.d" ]; then
        for f in "$here/$layer"/rules.d/*.rules; do
            [ -e "$f" ] || continue
            # RUN+= paths follow --libexecdir
            sed "s|/usr/libexec/hotplugd/|$libexec/|g" "$f" >"$rules/${f##*/}"
            chmod 644 "$rules/${f##*/}"
        done
    fi
    if [ -d "$here/$layer/handlers" ]; then
        for f in "$here/$layer"/handlers/*; do
            [ -e "$f" ] || continue
            cp "$f" "$handlers/${f##*/}"
            chmod 755 "$handlers/${f##*/}"
        done
    fi
done

# init files: the board's own, if it has them, else the generic ones
init_src=$here/generic/init
[ -d "$here/$board/init" ] && init_src=$here/$board/init
case $init in
    busybox)
        mkdir -p "$dest/etc/init.d"
        cp "$init_src/busybox/S10hotplugd" "$dest/etc/init.d/S10hotplugd"
        chmod 755 "$dest/etc/init.d/S10hotplugd"
        cp "$init_src/busybox/inittab" "$dest/etc/inittab.hotplugd"
        ;;
    openrc)
        mkdir -p "$dest/etc/init.d"
        cp "$init_src/openrc/hotplugd" "$dest/etc/init.d/hotplugd"
        chmod 755 "$dest/etc/init.d/hotplugd"
        ;;
    runit)
        mkdir -p "$dest/etc/sv"
        cp -R "$init_src/runit/hotplugd" "$dest/etc/sv/"
        ;;
    s6)
        mkdir -p "$dest/etc/s6"
        cp -R "$init_src/s6/hotplugd" "$dest/etc/s6/"
        ;;
    systemd)
        mkdir -p "$dest/etc/systemd/system"
        cp "$init_src/systemd/hotplugd.service" "$dest/etc/systemd/system/"
        ;;
    none) ;;
esac

if [ -n "$bin" ]; then
    mkdir -p "$dest/usr/sbin"
    cp "$bin" "$dest/usr/sbin/hotplugd"
    chmod 755 "$dest/usr/sbin/hotplugd"
fi
echo "install.sh: $board installed into $dest (rules in /etc/hotplugd/rules.d, handlers in $libexec, init: $init)"
