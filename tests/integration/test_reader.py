"""The independent reader (tests/tools/read_container.py, written from
docs/FORMAT.md alone) must decode every container squeezefs writes to the
bytes the mount returned, for every codec and block size: this keeps the
format document honest and proves the data can be read without squeezefs."""

import errno
import glob
import os
import random
import sys

import pytest

from sqfs_util import ROOT, read_file, run_fsck

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
    seen = {n: read_file(m.path(n)) for n in exp}
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
                    "brotli": 4}.get((codec or "auto").split(":")[0])
        for b in info["blocks"]:
            assert "damaged" not in b, (n, b)
            if b["kind"] != "data":
                continue
            h = b["slots"][b["current"]]
            # Explicit codecs may store a block raw only when compressing
            # does not help; auto (the analyzer) picks any codec.
            if codec_id is None:
                assert h["c"] in rc.CODEC_NAMES, (n, b)
            else:
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


# ---- edge cases: both readers must agree --------------------------------
# Hand-made containers at the corners of docs/FORMAT.md (msgpack encodings,
# unknown keys, zero records, codec streams, slot states, header fields).
# squeezefs (fsck and the mount) and the independent reader must agree on
# which are damaged, block by block, and on what the others contain.

def _hdr128(shift=12, version=1, flags=0, hsize=128, recs=((1, 0), None),
            tail=b""):
    import struct
    h = bytearray(128)
    h[0:8] = rc.MAGIC
    struct.pack_into("<HHBB", h, 8, version, hsize, shift, flags)
    struct.pack_into("<Q", h, 48, rc.xxh3(bytes(h[:48])))
    for off, r in zip((56, 80), recs):
        if r is not None:
            s = struct.pack("<QQ", r[0], r[1])
            h[off:off + 24] = s + struct.pack("<Q", rc.xxh3(s))
    h[104:104 + len(tail)] = tail
    return bytes(h)


def _rec(hdr, payload, hsum=None, zero=0):
    import struct
    return rc.REC_MAGIC + struct.pack(
        "<HHQ", len(hdr), zero, rc.xxh3(hdr) if hsum is None else hsum) + \
        hdr + payload


def _build(size, slots, shift=12, **kw):
    out = bytearray(_hdr128(shift, recs=((1, 0), (2, size)), **kw))
    for (blk, k), data in slots.items():
        off = rc.slot_offset(shift, blk, k)
        out += bytes(max(0, off - len(out)))
        out[off:off + len(data)] = data
    return bytes(out)


def _map(pairs):
    return bytes([0x80 | len(pairs)]) + b"".join(k + v for k, v in pairs)


def _hdr(b=0, g=1, c=0, lv=0, r=1, s=1, x=None, payload=b"a", kb=b"\xa1b",
         extra=()):
    import msgpack
    p = msgpack.packb
    return _map([(kb, p(b) if isinstance(b, int) else b),
                 (b"\xa1g", p(g) if isinstance(g, int) else g),
                 (b"\xa1c", p(c) if isinstance(c, int) else c),
                 (b"\xa1l", p(lv) if isinstance(lv, int) else lv),
                 (b"\xa1r", p(r)), (b"\xa1s", p(s)),
                 (b"\xa1x", p(rc.xxh3(payload) if x is None else x))]
                + list(extra))


def edge_cases():
    import struct
    import zstandard
    import msgpack
    P = b"hello world, hello world, hello world!\n" * 20
    A = b"a"
    z = zstandard.ZstdCompressor().compress(P[:400])
    z2 = zstandard.ZstdCompressor().compress(P[400:])
    skip = struct.pack("<II", 0x184D2A50, 4) + b"abcd"
    zl = __import__("zlib").compress(P)
    co = __import__("zlib").compressobj(zdict=P[:64])
    zdict = co.compress(P) + co.flush()
    br = __import__("brotli").compress(P)
    l4 = __import__("lz4.block").block.compress(P, store_size=False)

    def one(hdr, payload=A, size=1, **kw):
        return _build(size, {(0, 0): _rec(hdr, payload, **kw)})

    def codec(c, payload, r, size=None):
        h = _hdr(c=c, r=r, s=len(payload), payload=payload)
        return _build(size or r, {(0, 0): _rec(h, payload)})

    bs_max = ((1 << 63) - 1 - 128) // (2 * 8192)
    return {
        "zero_record": one(_hdr(c=255, r=4096, s=0, payload=b""), b"",
                           size=4096),
        "zero_record_r_small": one(_hdr(c=255, r=100, s=0, payload=b""),
                                   b"", size=4096),
        "zero_record_x_other": one(_hdr(c=255, r=4096, s=0, x=5), b"",
                                   size=4096),
        "zstd": codec(2, z, 400),
        "zstd_two_frames": codec(2, z + z2, len(P)),
        "zstd_skippable_frames": codec(2, skip + z + skip, 400),
        "zstd_trailing_byte": codec(2, z + b"\0", 400),
        "zstd_frame_cut": codec(2, z[:-1], 400),
        "zlib": codec(3, zl, len(P)),
        "zlib_trailing_byte": codec(3, zl + b"x", len(P)),
        "zlib_two_streams": codec(3, zl + zl, 2 * len(P)),
        "brotli": codec(4, br, len(P)),
        "brotli_trailing_byte": codec(4, br + b"\0", len(P)),
        "lz4": codec(1, l4, len(P)),
        "lz4_r_short": codec(1, l4, len(P) - 1),
        "lz4_trailing_byte": codec(1, l4 + b"\0", len(P)),
        "zlib_preset_dict": codec(3, zdict, len(P)),
        "lz4_r_long": codec(1, l4, len(P) + 1),
        "codec_unknown": codec(9, P[:10], 10),
        "mp_plain": one(_hdr()),
        "mp_key_str8": one(_hdr(kb=b"\xd9\x01b")),
        "mp_key_bin": one(_hdr(kb=b"\xc4\x01b")),
        "mp_b_uint64": one(_hdr(b=b"\xcf" + bytes(8))),
        "mp_b_int8": one(_hdr(b=b"\xd0\x00")),
        "mp_b_negative": one(_hdr(b=b"\xff")),
        "mp_l_negative": one(_hdr(lv=b"\xff")),
        "mp_l_over_int32": one(_hdr(lv=b"\xce\x80\x00\x00\x00")),
        "mp_g_bool": one(_hdr(g=b"\xc3")),
        "mp_c_float": one(_hdr(c=b"\xca\x00\x00\x00\x00")),
        "mp_key_twice": one(_hdr(extra=[(b"\xa1g", b"\x01")])),
        "mp_unknown_nested": one(_hdr(extra=[(b"\xa1z", msgpack.packb(
            [1, {"a": [2, 3.5]}, None, True, b"x"]))])),
        "mp_unknown_int_key": one(_hdr(extra=[(b"\x05", b"\x06")])),
        "mp_unknown_ext": one(_hdr(extra=[(b"\xa1e", b"\xd4\x05\x01")])),
        "mp_unknown_ext_ts": one(_hdr(extra=[(b"\xa1e",
                                              b"\xd5\xff\x01\x02")])),
        "mp_unknown_bad_utf8": one(_hdr(extra=[(b"\xa2\xff\xfe", b"\x01")])),
        "mp_unknown_map_key": one(_hdr(extra=[(b"\x81\x01\x02", b"\x01")])),
        "mp_unknown_array_key": one(_hdr(extra=[(b"\x92\xa1b\x01",
                                                 b"\xa1b")])),
        "mp_trailing_nil": one(_hdr() + b"\xc0"),
        "mp_map16": one(b"\xde\x00\x07" + _hdr()[1:]),
        "mp_array": one(b"\x97" + b"\x00" * 7),
        "mp_reserved_c1": one(_hdr(extra=[(b"\xa1z", b"\xc1")])),
        "none_s_ne_r": one(_hdr(s=2), A + b"b"),
        "data_s_zero": one(_hdr(c=2, s=0, payload=b""), b""),
        "newer_invalid": _build(1, {(0, 0): _rec(_hdr(), A),
                                    (0, 1): _rec(_hdr(g=2), A, hsum=1)}),
        "both_invalid": _build(1, {(0, 0): _rec(_hdr(), A, hsum=1),
                                   (0, 1): _rec(_hdr(g=2), A, hsum=1)}),
        "newer_bad_payload": _build(1, {(0, 0): _rec(_hdr(), A),
                                        (0, 1): _rec(_hdr(g=2), b"b")}),
        "equal_generations": _build(1, {(0, 0): _rec(_hdr(), A),
                                        (0, 1): _rec(_hdr(), A)}),
        "hdr_len_0": _build(1, {(0, 0): _rec(b"", b"")}),
        "hdr_len_257": _build(1, {(0, 0): _rec(bytes(257), b"")}),
        "prefix_zero_field": one(_hdr(), zero=1),
        "wrong_block": one(_hdr(b=1)),
        "payload_cut": one(_hdr(), b""),
        "prefix_cut": _build(1, {(0, 0): b"SQ"}),
        "prefix_cut_zeros": _build(1, {(0, 0): b"\0\0"}),
        "header_cut": _build(1, {(0, 0): _rec(_hdr(), A)[:20]}),
        "prefix_last_byte": _build(1, {(0, 0): bytes(15) + b"\1"}),
        "block1_past_size": _build(5000, {(0, 0): _rec(_hdr(), A),
                                          (3, 1): b"SQBK junk"}),
        "reserved_tail": _build(1, {(0, 0): _rec(_hdr(), A)},
                                tail=b"\x01"),
        "size_at_limit": _hdr128(recs=((1, 0), (2, bs_max << 12))),
        "size_below_limit": _hdr128(recs=((1, 0), (2, (bs_max << 12) - 1))),
        "size_huge_other_ok": _hdr128(recs=((1, 1), (2, 1 << 62))),
        "size_seq_0": _hdr128(recs=((0, 1), None)),
        "size_equal_seq": _hdr128(recs=((3, 1), (3, 1))),
        "header_only": _hdr128(),
        "header_only_size5": _hdr128(recs=((1, 5), None)),
        "version_0": _hdr128(version=0),
        "version_2": _hdr128(version=2),
        "shift_11": _hdr128(shift=11),
        "shift_21": _hdr128(shift=21),
        "flags_1": _hdr128(flags=1),
        "header_size_0": _hdr128(hsize=0),
        "len_127": _hdr128()[:127],
        "len_1": b"\x89",
        "len_0": b"",
    }


def test_reader_agrees_on_edge_cases(make_mount):
    cases = edge_cases()
    m = make_mount(opts=["ro"], start=False)
    # Hand-made containers carry no volume id: a BACKING of a release
    # before volumes (.squeezefs/, no volume file) takes every file as a
    # container, as the reader does there (docs/FORMAT.md 2.1).
    os.makedirs(m.bpath(".squeezefs"), exist_ok=True)
    for name, data in cases.items():
        with open(m.bpath(name), "wb") as f:
            f.write(data)
    m.start()
    disagree = []
    py_bad = set()
    try:
        for name in sorted(cases):
            path = m.bpath(name)
            try:
                c = rc.Container(path)
            except rc.Damaged as e:
                py_bad.add(name)
                try:
                    with open(m.path(name), "rb") as f:
                        f.read(4096)
                    disagree.append("%s: mount reads, reader says %s"
                                    % (name, e))
                except OSError as oe:
                    if oe.errno != errno.EIO:
                        disagree.append("%s: %s" % (name, oe))
                continue
            with c:
                if os.stat(m.path(name)).st_size != c.size:
                    disagree.append("%s: sizes differ" % name)
                fd = os.open(m.path(name), os.O_RDONLY)
                try:
                    for i in range(min(c.nblocks, 4)):
                        try:
                            want = c.read_block(i)[:c.size - i * c.bs]
                        except rc.Damaged as e:
                            want = e
                            py_bad.add(name)
                        try:
                            got = os.pread(fd, c.bs, i * c.bs)
                        except OSError as oe:
                            got = oe
                        if isinstance(want, Exception) != \
                                isinstance(got, Exception) or (
                                not isinstance(got, Exception) and
                                got != want):
                            disagree.append(("%s block %d: mount %r, "
                                             "reader %r" % (name, i, got,
                                                            want))[:300])
                finally:
                    os.close(fd)
            assert m.proc.poll() is None, "daemon died at %s" % name
    finally:
        m.stop()
    r = run_fsck(m.backing)
    fsck_bad = {n for n in cases
                if (os.path.join(m.backing, n) + ":") in r.stdout + r.stderr}
    if fsck_bad != py_bad:
        disagree.append("fsck names %s, the reader %s" % (
            sorted(fsck_bad - py_bad), sorted(py_bad - fsck_bad)))
    assert not disagree, "\n".join(disagree)
    # A few that must be readable, so the test cannot pass by rejecting all.
    for ok in ("mp_unknown_map_key", "mp_unknown_array_key",
               "zstd_skippable_frames", "zero_record_x_other", "mp_key_str8",
               "newer_invalid", "block1_past_size", "len_0"):
        assert ok not in py_bad, ok
