#!/usr/bin/env python3
"""Builds the fuzzers' seed corpora from the repository's real data:
datagrams of every captured event (tests/corpus), every rules file in the
repository (tests/rules, board/, examples/), and the capture files
themselves as replay input. Writes fuzz/seeds/<target>/ (git-ignored)."""
import glob
import json
import os
import shutil

here = os.path.dirname(os.path.abspath(__file__))
repo = os.path.dirname(here)
seeds = os.path.join(here, "seeds")
shutil.rmtree(seeds, ignore_errors=True)
for t in ("uevent_parse", "rules_parse", "replay_input"):
    os.makedirs(os.path.join(seeds, t))


def put(target, name, data):
    with open(os.path.join(seeds, target, name), "wb") as f:
        f.write(data)


captures = sorted(glob.glob(os.path.join(repo, "tests/corpus/*.jsonl"))) + sorted(
    glob.glob(os.path.join(repo, "tests/corpus/sysfs/*/uevents.jsonl"))
)
n = 0
for path in captures:
    put("replay_input", os.path.basename(os.path.dirname(path)) + "-" + os.path.basename(path),
        open(path, "rb").read())
    for line in open(path, encoding="utf-8"):
        e = json.loads(line)
        env = e["env"].items() if isinstance(e["env"], dict) else e["env"]
        d = f"{e['action']}@{e['devpath']}\0".encode("utf-8", "surrogateescape")
        for k, v in env:
            d += f"{k}={v}\0".encode("utf-8", "surrogateescape")
        put("uevent_parse", f"ev{n:04d}", d)
        n += 1
rules = []
for d in ("tests/rules", "board", "examples"):
    rules += glob.glob(os.path.join(repo, d, "**/*.rules"), recursive=True)
for path in sorted(rules):
    put("rules_parse", path[len(repo) + 1:].replace("/", "_"), open(path, "rb").read())
# every input that once crashed a target stays a seed (and a test)
for path in sorted(glob.glob(os.path.join(here, "regressions/*/*"))):
    put(os.path.basename(os.path.dirname(path)), "regression-" + os.path.basename(path),
        open(path, "rb").read())
for t in ("uevent_parse", "rules_parse", "replay_input"):
    print(f"seeds/{t}: {len(os.listdir(os.path.join(seeds, t)))} files")
