"""The analyzer through a real mount (issue 3): under every policy, random
data is stored raw (codec 0), text compressed with the policy's codec, zero
blocks as zero records; min_saving= is honoured; bad policy= and
min_saving= values refuse to start with one line on stderr."""

import os
import random

import pytest

from sqfs_util import (CODEC_IDS, ctr_block_count, ctr_current_record,
                       ctr_header, ctr_image, is_packed, skip_under)
from test_cli import assert_one_line_error, run_daemon_expect_failure

# The analyzer's choices need codec=auto (the default): the tests that
# check them give it themselves, over make test-matrix's codec=none; and
# those that count 128 KiB blocks give that block size (the default).
AUTO = "codec=auto"
BS128K = "block_size=128K"

# What each policy stores text as: (codec id, level).
TEXT_CODEC = {"fast": (CODEC_IDS["zstd"], 1),
              "balanced": (CODEC_IDS["brotli"], 5),
              "max": (CODEC_IDS["brotli"], 11)}

WORDS = ("the of and to in a is that for it as was with be by on not he "
         "this are or his from at which but block compression filesystem "
         "kernel memory").split()


def english(n, seed):
    rnd = random.Random(seed)
    out = []
    size = 0
    while size < n:
        w = rnd.choice(WORDS) + (" " if rnd.random() > 0.1 else ".\n")
        out.append(w)
        size += len(w)
    return "".join(out).encode()[:n]


def records(path):
    """Current record header ('c', 'l', 'r', 's', ...) of every block."""
    bs = ctr_header(path)["block_size"]
    out = []
    for i in range(ctr_block_count(path, bs)):
        cur = ctr_current_record(path, i, bs)
        if cur is not None:
            out.append(cur[1]["hdr"])
    return out


@pytest.mark.parametrize("policy", ["fast", "balanced", "max", None])
def test_policy_stores_by_class(make_mount, policy):
    m = make_mount(opts=[AUTO, BS128K] +
                   (["policy=" + policy] if policy else []))
    rnd = os.urandom(3 * 131072 + 1000)
    text = english(3 * 131072 + 500, 1)
    zeros = bytes(4 * 131072)
    files = {"random.bin": rnd, "notes.txt": text, "zeros.img": zeros}
    for name, data in files.items():
        with open(m.path(name), "wb") as f:
            f.write(data)
    m.remount()
    for name, data in files.items():
        with open(m.path(name), "rb") as f:
            assert f.read() == data, name
    m.stop()

    recs = records(m.bpath("random.bin"))
    assert len(recs) == 4
    for h in recs:
        assert h["c"] == CODEC_IDS["none"], "random block not raw: %r" % h
        assert h["s"] == h["r"]

    codec, level = TEXT_CODEC[policy or "fast"]
    recs = records(m.bpath("notes.txt"))
    assert len(recs) == 4
    for h in recs:
        assert h["c"] == codec, "text under %s: %r" % (policy, h)
        assert h["l"] == level, "text under %s: %r" % (policy, h)
        if h["r"] >= 4096:  # not the 500-byte tail
            assert h["s"] < h["r"] // 2, "text barely compressed: %r" % h

    # Zero blocks: zero records or no record at all, never data.
    recs = records(m.bpath("zeros.img"))
    for h in recs:
        assert h["c"] == CODEC_IDS["zero"] and h["s"] == 0, h
    assert os.stat(m.bpath("zeros.img")).st_blocks * 512 < 64 * 1024


def test_forced_codec_overrides_policy(make_mount):
    m = make_mount(opts=["policy=max", "codec=lz4"])
    text = english(200000, 2)
    with open(m.path("t"), "wb") as f:
        f.write(text)
    m.stop()
    for h in records(m.bpath("t")):
        assert h["c"] == CODEC_IDS["lz4"], h


@pytest.mark.parametrize("opts,tiny_codec", [
    (["nopack", AUTO, BS128K], "none"),
    (["nopack", "codec=zstd", BS128K], "zstd")])
def test_one_page_files_stored_raw(make_mount, opts, tiny_codec):
    """Without packing, a file whose container fits in one 4 KiB page with
    its data raw takes that page compressed too: it is stored raw (no CPU
    on write or read), unless a codec is forced.  A larger file is
    compressed, and so is the same text in a larger file's first block."""
    m = make_mount(opts=opts)
    small = english(3800, 7)
    larger = english(5000, 7)
    for name, data in (("small.txt", small), ("larger.txt", larger)):
        with open(m.path(name), "wb") as f:
            f.write(data)
    m.remount()
    for name, data in (("small.txt", small), ("larger.txt", larger)):
        with open(m.path(name), "rb") as f:
            assert f.read() == data, name
    m.stop()
    (h,) = records(m.bpath("small.txt"))
    assert h["c"] == CODEC_IDS[tiny_codec] and h["r"] == len(small), h
    assert os.stat(m.bpath("small.txt")).st_blocks * 512 <= 4096
    (h,) = records(m.bpath("larger.txt"))
    assert h["c"] not in (CODEC_IDS["none"], CODEC_IDS["zero"]), h


def test_small_files_compressed_and_packed(make_mount):
    """With packing (the default) every byte of a small file counts: it is
    compressed, and its container goes into a pack."""
    skip_under("nopack",
               reason="this test checks that small files are packed")
    m = make_mount(opts=[AUTO])
    small = english(3800, 7)
    with open(m.path("small.txt"), "wb") as f:
        f.write(small)
    m.remount()
    with open(m.path("small.txt"), "rb") as f:
        assert f.read() == small
    m.stop()
    assert is_packed(m.bpath("small.txt"))
    (h,) = records(m.bpath("small.txt"))
    assert h["c"] not in (CODEC_IDS["none"], CODEC_IDS["zero"]), h
    assert h["r"] == len(small) and h["s"] < len(small) // 2, h
    assert len(ctr_image(m.bpath("small.txt"))) < 2048


@pytest.mark.parametrize("opt,raw", [("min_saving=0.9", True),
                                     ("min_saving=90%", True),
                                     ("min_saving=5%", False),
                                     ("min_saving=0", False)])
def test_min_saving(make_mount, opt, raw):
    m = make_mount(opts=[opt, AUTO, BS128K])
    # Random letters and digits: saves about 40%, not 90%.
    rnd = random.Random(3)
    data = bytes(rnd.choice(b"abcdefghijklmnopqrstuvwxyz0123456789")
                 for _ in range(262144))
    with open(m.path("d"), "wb") as f:
        f.write(data)
    m.remount()
    with open(m.path("d"), "rb") as f:
        assert f.read() == data
    m.stop()
    recs = records(m.bpath("d"))
    assert len(recs) == 2
    for h in recs:
        if raw:
            assert h["c"] == CODEC_IDS["none"], (opt, h)
        else:
            assert h["c"] not in (CODEC_IDS["none"], CODEC_IDS["zero"]), \
                (opt, h)


@pytest.mark.parametrize("opt,word", [
    ("policy=bogus", "policy"), ("policy=", "policy"),
    ("policy=Fast", "policy"), ("min_saving=0.95", "min_saving"),
    ("min_saving=91%", "min_saving"), ("min_saving=abc", "min_saving"),
    ("min_saving=-0.1", "min_saving"), ("min_saving=", "min_saving"),
    ("min_saving=0.1x", "min_saving")])
def test_bad_analyzer_options(tmp_path, opt, word):
    b = tmp_path / "backing"
    m = tmp_path / "mnt"
    b.mkdir()
    m.mkdir()
    rc, out, err = run_daemon_expect_failure(["-o", opt, str(b), str(m)],
                                             mnt=str(m))
    assert_one_line_error(rc, err, opt)
    assert err.strip().startswith("squeezefs: bad " + word), err
