#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets from real containers: mounts
squeezefs (4 KiB blocks, so seeds stay small) on a scratch backing dir,
writes a few files with each codec, unmounts, and saves

  corpus/fuzz_container/  whole containers
  corpus/fuzz_record/     2 selector bytes (block shift - 12, block index)
                          + the first 272 bytes of each used slot
  corpus/fuzz_codec/      codec byte, raw length (u24 LE), payload

    tests/fuzz/make-corpus.py [SQUEEZEFS_BIN]

Run it again only to refresh the seeds; the committed files are what the
fuzz runs and the regression runs use."""

import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
import read_container as rc  # noqa: E402

BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build",
                                                          "squeezefs")
TEXT = open("/usr/share/common-licenses/GPL-3", "rb").read()


def mount(backing, mnt, codec):
    """Starts a foreground daemon; returns it once the mount is up."""
    p = subprocess.Popen([BIN, "-f", "-o", "block_size=4K,codec=" + codec,
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


def write(path, data, off=0, sync=False):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    os.pwrite(fd, data, off)
    if sync:
        os.fsync(fd)
    os.close(fd)


def main():
    tmp = tempfile.mkdtemp()
    backing, mnt = os.path.join(tmp, "b"), os.path.join(tmp, "m")
    os.mkdir(backing)
    os.mkdir(mnt)
    files = []
    proc = None
    try:
        for codec in ("none", "lz4", "lz4:12", "zstd", "zlib", "brotli"):
            proc = mount(backing, mnt, codec)
            name = codec.replace(":", "")
            write(os.path.join(mnt, name + "-text"), TEXT[:6000])
            files.append(name + "-text")
            umount(mnt, proc)
        proc = mount(backing, mnt, "zstd")
        write(os.path.join(mnt, "one"), b"a")
        # A hole at block 0, data in block 1, a partial tail.
        write(os.path.join(mnt, "sparse"), TEXT[:100], 4096 + 50)
        # A zero record (block 0) and a rewritten block 1 (generation 2).
        p = os.path.join(mnt, "zeroed")
        write(p, TEXT[:8192], sync=True)
        write(p, bytes(4096), 0, sync=True)
        write(p, TEXT[8192:8192 + 300], 4096, sync=True)
        # Truncated down into block 0.
        p = os.path.join(mnt, "trunc")
        write(p, os.urandom(5000), sync=True)
        os.truncate(p, 777)
        files += ["one", "sparse", "zeroed", "trunc"]
        umount(mnt, proc)
        proc = None

        out = {t: os.path.join(HERE, "corpus", t) for t in
               ("fuzz_container", "fuzz_record", "fuzz_codec")}
        for d in out.values():
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(d)
        for f in files:
            src = os.path.join(backing, f)
            shutil.copyfile(src, os.path.join(out["fuzz_container"], f))
            with rc.Container(src) as c, open(src, "rb") as fh:
                raw = fh.read()
                for i in range(c.nblocks):
                    for k in (0, 1):
                        st, h, _ = c._classify(i, k)
                        if st != rc.VALID:
                            continue
                        off = rc.slot_offset(c.shift, i, k)
                        head = raw[off:off + rc.REC_PREFIX + rc.HDR_LEN_MAX]
                        with open(os.path.join(out["fuzz_record"], "%s-%d-%d"
                                               % (f, i, k)), "wb") as o:
                            o.write(bytes([c.shift - 12, i]) + head)
                        if h["c"] == rc.CODEC_ZERO:
                            continue
                        pay = raw[h["payload_offset"]:
                                  h["payload_offset"] + h["s"]]
                        with open(os.path.join(out["fuzz_codec"], "%s-%d-%d"
                                               % (f, i, k)), "wb") as o:
                            o.write(bytes([0x80 | h["c"]]) +
                                    h["r"].to_bytes(3, "little") + pay)
    finally:
        if proc is not None and proc.poll() is None:
            umount(mnt, proc)
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
