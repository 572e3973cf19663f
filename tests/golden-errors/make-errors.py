#!/usr/bin/python3
"""Writes tests/golden-errors/v1/, a backing directory of damaged (and a few
odd but valid) containers, and v1.json, what each must do when mounted:
"eio" files fail every read, files with "bad_blocks" fail reads of those
blocks only, the rest read back their "sha256".  Damage is made by hand from
containers a mount wrote, following docs/FORMAT.md (format version 1).

    tests/golden-errors/make-errors.py [-b SQUEEZEFS_BIN]

Like tests/golden/, the committed bytes are the test: regenerate only to
add a case, and check the diff keeps the old cases' bytes."""

import argparse
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
import read_container as rc  # noqa: E402

BS = 4096
TEXT = open("/usr/share/common-licenses/GPL-3", "rb").read()


def mount(binary, backing, mnt):
    p = subprocess.Popen([binary, "-f", "-o", "block_size=4K,codec=zstd",
                          backing, mnt])
    for _ in range(1000):
        if os.path.ismount(mnt):
            return p
        if p.poll() is not None:
            break
        time.sleep(0.01)
    raise RuntimeError("squeezefs did not mount")


def umount(mnt, proc):
    subprocess.run(["fusermount3", "-u", mnt], check=True)
    if proc.wait(timeout=60) != 0:
        raise RuntimeError("squeezefs exited %d" % proc.returncode)


def patch(path, off, data):
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(data)


def flip(path, off, mask=0x01):
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ mask]))


def record_bytes(path, blk, slot):
    """(offset, prefix+header+payload bytes, header dict) of a record."""
    with rc.Container(path) as c:
        st, h, _ = c._classify(blk, slot)
        assert st == rc.VALID, (path, blk, slot)
        off = rc.slot_offset(c.shift, blk, slot)
    n = rc.REC_PREFIX + h["hdr_len"] + h["s"]
    with open(path, "rb") as f:
        f.seek(off)
        return off, f.read(n), h


def rewrite_header(path, blk, slot, pairs):
    """Replaces the msgpack header of a record with `pairs` (an ordered
    dict), recomputing hdr_len and hdr_sum; the payload moves with it."""
    off, raw, h = record_bytes(path, blk, slot)
    payload = raw[rc.REC_PREFIX + h["hdr_len"]:]
    hdr = msgpack.packb(pairs)
    assert 1 <= len(hdr) <= rc.HDR_LEN_MAX
    prefix = rc.REC_MAGIC + struct.pack("<HHQ", len(hdr), 0, rc.xxh3(hdr))
    patch(path, off, prefix + hdr + payload)


def fix_header_sum(path):
    with open(path, "rb") as f:
        h = f.read(rc.OFF_HEADER_SUM)
    patch(path, rc.OFF_HEADER_SUM, struct.pack("<Q", rc.xxh3(h)))


def sha(data):
    return hashlib.sha256(data).hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-b", default=os.path.join(ROOT, "build", "squeezefs"))
    a = ap.parse_args()

    tmp = tempfile.mkdtemp()
    backing, mnt = os.path.join(tmp, "b"), os.path.join(tmp, "m")
    os.mkdir(backing)
    os.mkdir(mnt)
    text3 = TEXT[:3 * BS - 100]
    names3 = ["good-text", "flipped-payload", "unknown-codec",
              "equal-generations"]
    names1 = ["good-one", "bad-magic", "truncated-header",
              "size-records-bad", "header-sum-bad", "future-version",
              "torn-newer", "unknown-key", "leftover-past-size"]
    proc = mount(a.b, backing, mnt)
    try:
        for n in names3:
            with open(os.path.join(mnt, n), "wb") as f:
                f.write(text3)
        for n in names1:
            with open(os.path.join(mnt, n), "wb") as f:
                f.write(TEXT[:1000] if n != "good-one" else b"a")
        os.makedirs(os.path.join(mnt, "dir"))
        with open(os.path.join(mnt, "dir", "good-nested"), "wb") as f:
            f.write(TEXT[:500])
        os.symlink("good-text", os.path.join(mnt, "good-link"))
    finally:
        umount(mnt, proc)
    shutil.rmtree(os.path.join(backing, ".squeezefs"), ignore_errors=True)

    p = lambda n: os.path.join(backing, n)  # noqa: E731
    cases = {}

    flip(p("bad-magic"), 0, 0x40)
    cases["bad-magic"] = "magic 0x89 becomes 0xc9"
    with open(p("truncated-header"), "r+b") as f:
        f.truncate(100)
    cases["truncated-header"] = "container cut to 100 bytes"
    flip(p("size-records-bad"), rc.OFF_SIZE_A + 16)
    flip(p("size-records-bad"), rc.OFF_SIZE_B + 16)
    cases["size-records-bad"] = "both size records fail their sums"
    flip(p("header-sum-bad"), 20)
    cases["header-sum-bad"] = "a reserved byte changed, header_sum stale"
    # A version no release reaches (4 was once the future: format 4
    # exists since 2026-12-07, and this file was patched to 0x7fff then).
    patch(p("future-version"), 8, struct.pack("<H", 0x7fff))
    fix_header_sum(p("future-version"))
    cases["future-version"] = "format_version 0x7fff, header_sum recomputed"

    _, _, h = record_bytes(p("flipped-payload"), 1, 0)
    flip(p("flipped-payload"), h["payload_offset"] + h["s"] // 2)
    cases["flipped-payload"] = "one payload byte of block 1 flipped"
    _, _, h = record_bytes(p("unknown-codec"), 1, 0)
    rewrite_header(p("unknown-codec"), 1, 0, {
        "b": 1, "g": h["g"], "c": 7, "l": h["l"], "r": h["r"],
        "s": h["s"], "x": h["x"]})
    cases["unknown-codec"] = "block 1 has codec id 7 (valid record)"
    off, raw, h = record_bytes(p("equal-generations"), 0, 0)
    patch(p("equal-generations"), rc.slot_offset(12, 0, 1), raw)
    cases["equal-generations"] = "block 0: slot 1 is a copy of slot 0"

    # Valid, if unusual: must read fine.
    off, raw, h = record_bytes(p("torn-newer"), 0, 0)
    torn = bytearray(raw[:rc.REC_PREFIX + h["hdr_len"]])
    torn[rc.REC_PREFIX + 6] ^= 0x01  # the "g" value: 1 -> 0, sum stale
    patch(p("torn-newer"), rc.slot_offset(12, 0, 1), bytes(torn))
    cases["torn-newer"] = ("block 0 slot 1: a record whose header fails "
                           "its sum (outranked, reads the slot 0 data)")
    _, _, h = record_bytes(p("unknown-key"), 0, 0)
    rewrite_header(p("unknown-key"), 0, 0, {
        "b": 0, "g": h["g"], "c": h["c"], "l": h["l"], "r": h["r"],
        "s": h["s"], "x": h["x"], "z": [1, {"q": b"\x00"}, None],
        "zz": 3.5})
    cases["unknown-key"] = ("block 0 header has unknown keys "
                            "(an array, a float): ignored")
    junk = rc.REC_MAGIC + os.urandom(200)
    patch(p("leftover-past-size"), rc.slot_offset(12, 2, 1), junk)
    cases["leftover-past-size"] = ("junk record in block 2, past the "
                                   "size: never read")

    files = {}
    eio = {"bad-magic", "truncated-header", "size-records-bad",
           "header-sum-bad", "future-version"}
    for n in names1 + names3:
        data = b"a" if n == "good-one" else (
            text3 if n in names3 else TEXT[:1000])
        if n in eio:
            files[n] = {"type": "file", "eio": True}
        elif n in ("flipped-payload", "unknown-codec", "equal-generations"):
            bad = [0] if n == "equal-generations" else [1]
            files[n] = {"type": "file", "size": len(data), "block_size": BS,
                        "bad_blocks": bad,
                        "blocks_sha256": {
                            str(i): sha(data[i * BS:(i + 1) * BS])
                            for i in range(3) if i not in bad}}
        else:
            files[n] = {"type": "file", "size": len(data),
                        "sha256": sha(data)}
        if n in cases:
            files[n]["damage"] = cases[n]
    files["dir"] = {"type": "dir"}
    files["dir/good-nested"] = {"type": "file", "size": 500,
                                "sha256": sha(TEXT[:500])}
    files["good-link"] = {"type": "symlink", "target": "good-text"}

    # The independent reader must agree with the manifest.
    for n, e in files.items():
        if e["type"] != "file":
            continue
        try:
            got = rc.read_file(p(n))
            assert not e.get("eio") and not e.get("bad_blocks"), n
            assert sha(got) == e["sha256"], n
        except rc.Damaged:
            assert e.get("eio") or e.get("bad_blocks"), n

    out = os.path.join(HERE, "v1")
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(backing, out, symlinks=True)
    with open(os.path.join(HERE, "v1.json"), "w") as f:
        json.dump({"format_version": 1, "files": files}, f, indent=1,
                  sort_keys=True)
        f.write("\n")
    shutil.rmtree(tmp)
    print("wrote", out)


if __name__ == "__main__":
    main()
