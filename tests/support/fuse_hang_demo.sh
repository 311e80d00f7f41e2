#!/bin/sh
# Shows what tests/support/fuse_hang.py is for: a reader of its file that
# SIGKILL does not end until the server is told to let go. Run as root from
# anywhere; the mount lives only in the server's private mount namespace.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d); mnt=$tmp/mnt; out=$tmp/out
trap 'kill $srv 2>/dev/null || true; rm -rf "$tmp"' EXIT

wait_for() { # PATTERN: until the server prints it, at most 10 s
    i=0; until grep -q "$1" "$out"; do
        i=$((i + 1)); [ $i -le 200 ] || { echo "no '$1' from the server" >&2; exit 1; }
        sleep 0.05
    done
}
: > "$out"
unshare -m -- python3 "$here/fuse_hang.py" "$mnt" > "$out" & srv=$!
wait_for '^ready'
echo "server $srv: ready"

# The victim joins the server's mount namespace, like a handler of a hotplugd
# started with nsenter --mount=/proc/$srv/ns/mnt.
nsenter --mount=/proc/$srv/ns/mnt -- cat "$mnt/file" > /dev/null & v=$!
wait_for "^blocked pid=$v"
echo "server: $(grep ^blocked "$out")"

show() {
    if [ -e /proc/$v/stat ]; then
        echo "$(date +%T) victim $v: state $(cut -d' ' -f3 /proc/$v/stat)," \
            "wchan $(cat /proc/$v/wchan), pending $(grep ^ShdPnd /proc/$v/status | cut -f2)"
    else
        echo "$(date +%T) victim $v: gone"
    fi
}
show
kill -KILL $v; echo "$(date +%T) kill -9 $v"
sleep 5; show
kill -TERM $srv; wait $srv && echo "$(date +%T) server released the mount, exit 0"
st=0; wait $v || st=$?; echo "victim exit status $st (137 = killed by SIGKILL)"; show
