"""The independent reader (tests/tools/read_container.py, written from
docs/FORMAT.md alone) must decode every container squeezefs writes to the
bytes the mount returned, for every codec and block size: this keeps the
format document honest and proves the data can be read without squeezefs."""

import glob
import os
import random
import sys

import pytest

from sqfs_util import ROOT, run_fsck

sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
import read_container as rc  # noqa: E402

CODECS = ["lz4", "lz4:12", "zstd:19", "zlib:9", "brotli:11", "none", None]
BLOCK_SIZES = {"4K": 4096, "128K": 128 << 10, "1M": 1 << 20}


def text_bytes(n):
    """n bytes of English text (Debian's licence texts, repeated)."""
    src = b""
    for p in sorted(glob.glob("/usr/share/common-licenses/*")):
        if os.path.isfile(p):
            with open(p, "rb") as f:
                src += f.read()
    src = src or b"The quick brown fox jumps over the lazy dog.\n"
    return (src * (n // len(src) + 1))[:n]


def pwrite_path(path, data, off, sync=False):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, data, off)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def build_files(mnt, bs, rnd):
    """Writes files of many shapes into the mount; returns {name: expected
    bytes} and {name: what the reader's --info must show}."""
    exp = {}
    want = {}

    def put(name, data):
        with open(os.path.join(mnt, name), "wb") as f:
            f.write(data)
        exp[name] = data

    put("empty", b"")
    put("one", b"a")
    put("block_plus_one", text_bytes(bs + 1))
    # Text over five blocks, the last one partial.
    put("text5", text_bytes(5 * bs - 777))
    put("random", rnd.randbytes(2 * bs + bs // 2))
    # Mostly zeros with a little data: compressible but not a zero block.
    z = bytearray(3 * bs)
    z[bs + 5] = 7
    put("sparse_bytes", bytes(z))

    # Sparse: holes at blocks 0, 2, 3 and past the data; a partial tail.
    p = os.path.join(mnt, "holes")
    size = 6 * bs + 123
    with open(p, "wb") as f:
        f.truncate(size)
    m = bytearray(size)
    d1 = text_bytes(bs // 2)
    d4 = rnd.randbytes(100)
    pwrite_path(p, d1, bs + 10)
    pwrite_path(p, d4, 4 * bs + bs // 3)
    m[bs + 10:bs + 10 + len(d1)] = d1
    m[4 * bs + bs // 3:4 * bs + bs // 3 + 100] = d4
    exp["holes"] = bytes(m)
    want["holes"] = {0: "hole", 2: "hole", 3: "hole", 5: "hole",
                     1: "data", 4: "data"}

    # Rewritten blocks: block 1 once (generation 2, slot 1), block 2
    # twice (generation 3, back in slot 0), with syncs in between so each
    # version is a separate store.
    p = os.path.join(mnt, "rewritten")
    m = bytearray(text_bytes(4 * bs))
    pwrite_path(p, bytes(m), 0, sync=True)
    for blk, rounds in ((1, 1), (2, 2)):
        for r in range(rounds):
            d = rnd.randbytes(bs // 3) + text_bytes(bs // 4)
            off = blk * bs + 100 * (r + 1)
            pwrite_path(p, d, off, sync=True)
            m[off:off + len(d)] = d
    exp["rewritten"] = bytes(m)
    want["rewritten"] = {0: ("data", 0, 1), 1: ("data", 1, 2),
                         2: ("data", 0, 3), 3: ("data", 0, 1)}

    # A block with data overwritten by zeros: a zero record.
    p = os.path.join(mnt, "zeroed")
    m = bytearray(text_bytes(3 * bs))
    pwrite_path(p, bytes(m), 0, sync=True)
    pwrite_path(p, bytes(bs), bs, sync=True)
    m[bs:2 * bs] = bytes(bs)
    exp["zeroed"] = bytes(m)
    want["zeroed"] = {0: "data", 1: "zero", 2: "data"}

    # Truncated down into a block, then up again: the bytes past the cut
    # must read as zeros.
    p = os.path.join(mnt, "trunc")
    d = rnd.randbytes(3 * bs + bs // 2)
    pwrite_path(p, d, 0, sync=True)
    os.truncate(p, bs + bs // 2 + 3)
    os.truncate(p, 4 * bs + 9)
    exp["trunc"] = d[:bs + bs // 2 + 3] + bytes(4 * bs + 9 -
                                                (bs + bs // 2 + 3))
    # Truncated to zero, then written again; and truncated down only.
    p = os.path.join(mnt, "trunc0")
    pwrite_path(p, text_bytes(2 * bs), 0, sync=True)
    os.truncate(p, 0)
    pwrite_path(p, b"again", 0)
    exp["trunc0"] = b"again"
    p = os.path.join(mnt, "truncdown")
    d = text_bytes(3 * bs)
    pwrite_path(p, d, 0, sync=True)
    os.truncate(p, 2 * bs - 1)
    exp["truncdown"] = d[:2 * bs - 1]
    return exp, want


def read_mount(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("bs_name", list(BLOCK_SIZES))
@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c or "auto")
def test_reader_matches_mount(make_mount, codec, bs_name):
    bs = BLOCK_SIZES[bs_name]
    opts = ["block_size=" + bs_name]
    if codec:
        opts.append("codec=" + codec)
    rnd = random.Random("%s/%s" % (codec, bs_name))
    m = make_mount(opts=opts)
    exp, want = build_files(m.mnt, bs, rnd)
    seen = {n: read_mount(m.path(n)) for n in exp}
    for n in exp:
        assert seen[n] == exp[n], "mount returned wrong data for %s" % n
    m.stop()

    for n, data in exp.items():
        path = m.bpath(n)
        with rc.Container(path) as c:
            assert c.size == len(data), n
            assert c.check() == [], n
            got = c.read_all()
            info = c.info()
        assert got == seen[n], "independent reader differs on %s" % n
        if data:
            assert info["block_size"] == bs, n
        codec_id = {"none": 0, "lz4": 1, "zstd": 2, "zlib": 3,
                    "brotli": 4}[(codec or "zstd").split(":")[0]]
        for b in info["blocks"]:
            assert "damaged" not in b, (n, b)
            if b["kind"] != "data":
                continue
            h = b["slots"][b["current"]]
            # Explicit codecs may store a block raw only when compressing
            # does not help; auto stores raw or zstd.
            assert h["c"] in (codec_id, 0), (n, b)
            if codec and ":" in codec and h["c"] == codec_id:
                assert h["l"] == int(codec.split(":")[1]), (n, b)
        for blk, w in want.get(n, {}).items():
            b = info["blocks"][blk]
            if isinstance(w, tuple):
                assert (b["kind"], b["current"],
                        b["slots"][b["current"]]["g"]) == w, (n, blk, b)
            else:
                assert b["kind"] == w, (n, blk, b)
    r = run_fsck(m.backing)
    assert r.returncode == 0, r.stdout + r.stderr


def test_reader_cli(make_mount, tmp_path):
    """The command line: content to stdout, --check, exit 1 on damage."""
    import subprocess
    tool = os.path.join(ROOT, "tests", "tools", "read_container.py")
    m = make_mount(opts=["block_size=4K", "codec=zstd"])
    data = text_bytes(3 * 4096 + 5)
    with open(m.path("f"), "wb") as f:
        f.write(data)
    m.stop()
    r = subprocess.run([tool, m.bpath("f")], capture_output=True)
    assert r.returncode == 0 and r.stdout == data, r.stderr
    r = subprocess.run([tool, "--check", m.bpath("f")], capture_output=True)
    assert r.returncode == 0 and r.stdout == b"", r.stderr
    # Flip one payload byte of block 1: --check names the block and fails;
    # reading the whole file fails too.
    with rc.Container(m.bpath("f")) as c:
        k, h = c.current(1)[1:]
    off = h["payload_offset"] + h["s"] // 2
    with open(m.bpath("f"), "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0x40]))
    r = subprocess.run([tool, "--check", m.bpath("f")], capture_output=True,
                       text=True)
    assert r.returncode == 1 and "block 1: checksum" in r.stderr, r.stderr
    r = subprocess.run([tool, m.bpath("f")], capture_output=True)
    assert r.returncode == 1 and b"block 1" in r.stderr, r.stderr
    # Not a container at all.
    bad = tmp_path / "bad"
    bad.write_bytes(b"hello, world\n" * 20)
    r = subprocess.run([tool, str(bad)], capture_output=True, text=True)
    assert r.returncode == 1 and "bad magic" in r.stderr, r.stderr
