#!/usr/bin/env python3
"""A FUSE server whose one file never answers a read: a stand-in for a hung
mount or a wedged driver, for tests of handlers that SIGKILL cannot end.

Usage (always in a private mount namespace, so nothing reaches the host):

    unshare -m python3 tests/support/fuse_hang.py MOUNTPOINT

It creates MOUNTPOINT if missing (and removes it again on release), mounts
itself there with mount(2) and prints one line per event on stdout, flushed:

    ready                 mounted and FUSE_INIT answered; MOUNTPOINT/file exists
    blocked pid=N         process N's read of MOUNTPOINT/file is now held by us

Kernel fact (fs/fuse/dev.c, request_wait_answer(); measured on 6.18, see
tests/support/fuse_hang.md): a request waits interruptibly, then killably
while it is still queued; once the server has read it from /dev/fuse the
caller waits in plain wait_event() until the answer comes. So from "blocked
pid=N" on, SIGKILL does not end process N: it stays in request_wait_answer
(state S until a signal comes, then D with the signal pending) until we
answer or the connection goes away. A real hung FUSE, NFS hard mount or
wedged driver holds its callers the same way. The file is opened with
FOPEN_DIRECT_IO and FUSE_ASYNC_READ is not offered, so every read(2) of it is
one synchronous FUSE_READ that reaches us, whatever the page cache holds.

Release: SIGTERM, SIGINT or SIGHUP makes us close /dev/fuse (the last fd of
the connection, so the kernel aborts it), detach the mount and exit 0; the
kernel then ends every held request with ECONNABORTED and the held processes
die of their pending signal. If we are killed outright the kernel closes
/dev/fuse itself, with the same effect, and the mount goes with the
namespace. We also die with our parent thread (PR_SET_PDEATHSIG), so a
crashed test leaves nothing stuck.

Only the Python 3 standard library is used (no libfuse, no fusermount).
"""

import ctypes
import os
import signal
import stat
import struct
import sys

MS_NOSUID, MS_NODEV, MNT_DETACH, PR_SET_PDEATHSIG = 2, 4, 2, 1

# Opcodes and structs from include/uapi/linux/fuse.h.
LOOKUP, FORGET, GETATTR, OPEN, READ, RELEASE = 1, 2, 3, 14, 15, 18
STATFS, FLUSH, INIT, OPENDIR, READDIR, RELEASEDIR = 17, 25, 26, 27, 28, 29
INTERRUPT, DESTROY, BATCH_FORGET = 36, 38, 42
IN_HEADER = struct.Struct("<IIQQIIIHH")  # len opcode unique nodeid uid gid pid extlen pad
OUT_HEADER = struct.Struct("<IiQ")  # len error unique
FOPEN_DIRECT_IO = 1
ROOT, FILE = 1, 2
NAME = b"file"
ENOENT, ENOSYS = 2, 38

libc = ctypes.CDLL(None, use_errno=True)


def check(ret, what):
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def attr(ino):
    mode = (stat.S_IFDIR | 0o555) if ino == ROOT else (stat.S_IFREG | 0o444)
    size = 0 if ino == ROOT else 4096
    # ino size blocks atime mtime ctime atimens mtimens ctimens mode nlink uid gid rdev blksize flags
    return struct.pack("<QQQQQQIIIIIIIIII", ino, size, 8, 0, 0, 0, 0, 0, 0,
                       mode, 2 if ino == ROOT else 1, 0, 0, 0, 4096, 0)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: fuse_hang.py MOUNTPOINT")
    mnt = sys.argv[1]
    check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
    created = not os.path.isdir(mnt)
    if created:
        os.makedirs(mnt)
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    opts = f"fd={fd},rootmode=40000,user_id=0,group_id=0".encode()
    check(libc.mount(b"fuse", mnt.encode(), b"fuse", MS_NOSUID | MS_NODEV, opts), "mount")

    def release(*_):
        os.close(fd)  # last /dev/fuse fd: the kernel aborts the connection
        libc.umount2(mnt.encode(), MNT_DETACH)
        if created:
            os.rmdir(mnt)
        os._exit(0)

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, release)

    def reply(unique, payload=b"", error=0):
        os.write(fd, OUT_HEADER.pack(OUT_HEADER.size + len(payload), -error, unique) + payload)

    while True:
        buf = os.read(fd, 1 << 20)
        _, op, unique, node, _, _, pid, _, _ = IN_HEADER.unpack_from(buf)
        body = buf[IN_HEADER.size:]
        if op == INIT:
            major, minor, readahead, flags = struct.unpack_from("<IIII", body)
            # major minor max_readahead flags max_background congestion max_write
            # time_gran max_pages map_alignment flags2 max_stack_depth unused[6]
            reply(unique, struct.pack("<IIIIHHIIHHII24x", 7, min(minor, 31),
                                      readahead, 0, 16, 12, 4096, 1, 1, 0, 0, 0))
            print("ready", flush=True)
        elif op == LOOKUP:
            if node == ROOT and body.rstrip(b"\0") == NAME:
                # nodeid generation entry_valid attr_valid entry_nsec attr_nsec attr
                reply(unique, struct.pack("<QQQQII", FILE, 0, 0, 0, 0, 0) + attr(FILE))
            else:
                reply(unique, error=ENOENT)
        elif op == GETATTR:
            reply(unique, struct.pack("<QII", 0, 0, 0) + attr(node))
        elif op in (OPEN, OPENDIR):
            reply(unique, struct.pack("<QIi", 0, FOPEN_DIRECT_IO if op == OPEN else 0, 0))
        elif op == READ:
            if node == FILE:
                print(f"blocked pid={pid}", flush=True)  # never answered
            else:
                reply(unique, error=ENOSYS)
        elif op == READDIR:
            reply(unique)  # empty listing
        elif op in (FORGET, BATCH_FORGET, INTERRUPT):
            pass  # no reply expected; INTERRUPT left unanswered on purpose
        elif op in (RELEASE, RELEASEDIR, FLUSH):
            reply(unique)
        elif op == DESTROY:
            reply(unique)
        else:
            reply(unique, error=ENOSYS)


if __name__ == "__main__":
    main()
