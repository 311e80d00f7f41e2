#!/usr/bin/env python3
"""Turn the sysfs fixtures' link stand-ins back into symlinks.

The shared corpus stores each symlink of the sysfs trees as a regular file
whose content is the link's target (`../../bus/usb`). sysfs attributes end in
a newline; link targets do not. A file is restored as a symlink when its
content starts with `../`, has no newline, and names a path that exists in
the tree. sysfs/README.md gives the counts this must produce (aarch64: 190
symlinks, x86_64: 187); tests/rules.rs checks them.

Usage: tests/corpus/restore-links.py tests/corpus/sysfs/aarch64 ...
"""
import os
import sys

for root in sys.argv[1:]:
    n = 0
    for d, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            if os.path.islink(p):
                continue
            with open(p, "rb") as fh:
                data = fh.read(400)
            if not data.startswith(b"../") or b"\n" in data or len(data) >= 300:
                continue
            target = data.decode()
            if not os.path.lexists(os.path.normpath(os.path.join(d, target))):
                continue
            os.chmod(p, 0o644)
            os.unlink(p)
            os.symlink(target, p)
            n += 1
    print(f"{root}: {n} links restored")
