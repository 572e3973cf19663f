"""Moving in (issue "Move in, live in, move out", part "Existing data";
docs/FORMAT.md 2.1, 12.1 and 12.2): a BACKING that already holds a
plain tree is mounted as it is, lived in, converted into containers in the
background, by `settle PATH` or by `squeezefs import`, and exported again.

1. A plain tree (no .squeezefs/) is served as it is: every file reads
   byte-identical, sizes, modes, owners, times, xattrs, symlinks, hard links
   and holes as they are; reading converts nothing.
2. Writes through the mount into plain files (middle, append, truncate
   shorter and longer, rename, delete, create) read back as expected.
3. Plain files that begin like a container (the magic and junk; a valid
   format-4 container without a volume id; a real container copied from
   another BACKING) read back as themselves, also after conversion.
4. `-o settle_after=1` converts every plain file that is not hard-linked
   into a container carrying BACKING's volume id; the stats then count no
   plain files; everything reads the same; fsck is clean.
5. `settle PATH` written to MOUNT/.squeezefs/control converts one plain
   file before the write returns.
6. `squeezefs export` of the converted BACKING gives the tree back, as
   `rsync -anc -HXA --numeric-ids` sees it.
7. `squeezefs import BACKING` converts an unmounted tree (exit 0, progress
   line with --progress), refuses a mounted one.
8. kill -9 of the daemon while it converts loses nothing: every file is the
   plain one or the container, reads the same after a remount; leftovers in
   .squeezefs/tmp are removed at mount; fsck is clean.
9. A BACKING of an older release (.squeezefs/ but no volume file) gets a
   volume file with LEGACY set and stays strict (plain files are EIO); a
   fresh one gets LEGACY clear.
"""

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import json
import os
import random
import shutil
import stat
import struct
import subprocess
import sys
import time

import pytest

from sqfs_util import (BIN, CTR_MAGIC, ROOT, Mount, ctl_command, is_packed,
                       read_file, run_fsck, skip_under, tree_paths, wait_for,
                       words_text)

# ---- the volume file and the version-5 header (docs/FORMAT.md 3, 12.1) ---------

VOL_MAGIC = b"\x89SQV\r\n\x1a\n"
VOL_LEN = 32
VOL_VERSION = 1
VOL_FLAG_LEGACY = 1
OFF_VOL_ID, OFF_VOL_ID2 = 104, 112
# what the mount logs (once) for a plain file that starts with the magic
LOOKALIKE_LOG = "looks like a squeezefs container of another backing directory"

# How long the background conversion of a tree may take (idle priority,
# slow under ASan).
CONVERT_WAIT = 120.0
# settle_after for mounts that must convert nothing by themselves: the
# files they serve are made "modified now" first (freshen()).
NEVER = "settle_after=3600"

WORDS = ("move in live out plain file container backing volume settle "
         "convert import export header magic block slot record size "
         "rename truncate append hole sparse link mode owner time xattr "
         "daemon kill crash leftover legacy strict").split()

def no_forced_codec():
    skip_under("codec", reason="a forced codec turns the settle loop off, "
               "and the settle loop converts plain files")


_xxh3 = None


def xxh3(data):
    """XXH3-64 (seed 0) of `data`: the xxhash module when it is there (as
    tests/tools/read_container.py uses it), else libxxhash through ctypes
    (squeezefs links it)."""
    global _xxh3
    if _xxh3 is None:
        try:
            import xxhash
            _xxh3 = lambda b: xxhash.xxh3_64(b).intdigest()  # noqa: E731
        except ImportError:
            lib = ctypes.CDLL(ctypes.util.find_library("xxhash") or
                              "libxxhash.so.0")
            fn = lib.XXH3_64bits
            fn.restype = ctypes.c_uint64
            fn.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
            _xxh3 = lambda b: fn(b, len(b))  # noqa: E731
    return _xxh3(bytes(data))


def vol_path(backing):
    return os.path.join(str(backing), ".squeezefs", "volume")


def volume(backing):
    """The volume file of `backing`, checked against the spec: {'raw',
    'id', 'legacy'}; None when there is none."""
    try:
        raw = read_file(vol_path(backing))
    except FileNotFoundError:
        return None
    assert len(raw) == VOL_LEN, "volume file of %d bytes: %r" % (len(raw), raw)
    assert raw[:8] == VOL_MAGIC, "volume file magic %r" % raw[:8]
    version, flags, reserved, vid, csum = struct.unpack_from("<HHIQQ", raw, 8)
    assert version == VOL_VERSION, "volume file version %d" % version
    assert flags & ~VOL_FLAG_LEGACY == 0, "unknown volume flags %#x" % flags
    assert reserved == 0, "volume file reserved bytes %#x" % reserved
    assert vid != 0, "volume id 0"
    assert csum == xxh3(raw[:24]), "volume file sum %#x, want %#x" % (
        csum, xxh3(raw[:24]))
    return {"raw": raw, "id": vid, "legacy": bool(flags & VOL_FLAG_LEGACY)}


def backing_kind(path, vid):
    """What the regular backing file `path` is: 'packed' (a stub with its
    reference), 'empty', 'container' (the container magic and the volume
    id `vid` in both copies, bytes 104..119), or 'plain'."""
    if is_packed(path):
        return "packed"
    with open(path, "rb") as f:
        head = f.read(128)
    if not head:
        return "empty"
    if len(head) == 128 and head[:8] == CTR_MAGIC and \
            struct.unpack_from("<QQ", head, OFF_VOL_ID) == (vid, vid):
        return "container"
    return "plain"


def regular_files(root):
    """{relative path: lstat} of the regular files under `root`, the
    top-level .squeezefs left out."""
    out = {}
    for rel in tree_paths(root):
        try:
            st = os.lstat(os.path.join(str(root), rel))
        except FileNotFoundError:  # renamed under us
            continue
        if stat.S_ISREG(st.st_mode):
            out[rel] = st
    return out


def begins_like_a_container(path):
    with open(path, "rb") as f:
        return f.read(8) == CTR_MAGIC


def unconverted(backing, vid, lookalikes=False):
    """Regular backing files that should become containers and are not
    yet: not hard-linked, not empty, and still plain.  Plain files that
    begin like a container are left plain by the settle loop and by import
    without --all (most likely containers of another BACKING, or of this
    one copied without .squeezefs/volume): counted only with
    `lookalikes`."""
    left = []
    for rel, st in regular_files(backing).items():
        if st.st_nlink > 1:
            continue
        p = os.path.join(str(backing), rel)
        try:
            if backing_kind(p, vid) == "plain" and \
                    (lookalikes or not begins_like_a_container(p)):
                left.append(rel)
        except FileNotFoundError:
            left.append(rel)
    return sorted(left)


def plain_lookalikes(backing, vid):
    """The plain files that begin like a container."""
    return sorted(rel for rel in unconverted(backing, vid, lookalikes=True)
                  if begins_like_a_container(os.path.join(str(backing), rel)))


def wait_converted(m, vid, timeout=CONVERT_WAIT):
    left = []

    def done():
        left[:] = unconverted(m.backing, vid)
        return not left
    ok = wait_for(done, timeout=timeout, step=0.5)
    assert ok, "still plain after %.0f s: %d files, e.g. %s\n%s" % (
        timeout, len(left), left[:10], m.read_log()[-2000:])


# ---- mounts, control, stats ---------------------------------------------

@contextlib.contextmanager
def mounted(backing, mnt, opts=(), log=None):
    """A started Mount of `backing` at `mnt`; unmounted (or killed) when the
    block ends, also when it fails (then without masking the failure)."""
    m = Mount(backing, mnt, opts=list(opts), log=log)
    m.start()
    try:
        yield m
    except BaseException:
        try:
            m.cleanup()
        except Exception:
            pass
        raise
    m.cleanup()


def totals(m):
    with open(m.path(".squeezefs", "stats"), "rb") as f:
        return json.loads(f.read())["totals"]


def squeezefs(*args, timeout=600):
    return subprocess.run([BIN] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=timeout)


def fsck_ok(backing, where):
    r = run_fsck(backing)
    assert r.returncode == 0, "%s: fsck exited %d:\n%s%s" % (
        where, r.returncode, r.stdout[-3000:], r.stderr[-3000:])


# ---- trees -----------------------------------------------------------------

def cp_a(src, dst):
    """cp -a SRC DST (DST must not exist): a copy with everything."""
    r = subprocess.run(["cp", "-a", str(src), str(dst)], capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr


def freshen(root):
    """Makes every regular file under `root` look just modified (distinct
    nanoseconds), so that a mount with settle_after=3600 converts none."""
    now = time.time_ns()
    for i, rel in enumerate(sorted(regular_files(root))):
        t = now - (i + 1) * 1000003
        os.utime(os.path.join(str(root), rel), ns=(t, t))


def mp_uint(v):
    """The shortest msgpack encoding of the unsigned integer `v`."""
    if v < 0x80:
        return bytes([v])
    for tag, fmt, lim in ((0xcc, ">B", 1 << 8), (0xcd, ">H", 1 << 16),
                          (0xce, ">I", 1 << 32), (0xcf, ">Q", 1 << 64)):
        if v < lim:
            return bytes([tag]) + struct.pack(fmt, v)
    raise ValueError(v)


def v4_header(size, shift=12):
    """A valid format-4 file header (docs/FORMAT.md 3 and 4): correct
    header_sum, size record A (seq 1, size 0) and, for a non-zero `size`,
    record B (seq 2, `size`); bytes 104..127 zero (no volume id)."""
    h = bytearray(128)
    h[:8] = CTR_MAGIC
    struct.pack_into("<HHBB", h, 8, 4, 128, shift, 0)
    struct.pack_into("<Q", h, 48, xxh3(h[:48]))
    recs = ((1, 0), (2, size) if size else None)
    for off, rec in zip((56, 80), recs):
        if rec is not None:
            s = struct.pack("<QQ", *rec)
            h[off:off + 24] = s + struct.pack("<Q", xxh3(s))
    return bytes(h)


def v4_container(payload):
    """A complete, valid format-4 container (block size 4 KiB, block 0 one
    raw record, docs/FORMAT.md 6 and 11.1) whose content is `payload`:
    what a release before volumes wrote."""
    n = len(payload)
    assert 1 <= n <= 4096
    hdr = (b"\x87" + b"\xa1b\x00" + b"\xa1g\x01" + b"\xa1c\x00" +
           b"\xa1l\x00" + b"\xa1r" + mp_uint(n) + b"\xa1s" + mp_uint(n) +
           b"\xa1x" + mp_uint(xxh3(payload)))
    rec = b"SQBK" + struct.pack("<HHQ", len(hdr), 0, xxh3(hdr)) + hdr + \
        payload
    return v4_header(n) + rec


V4_PAYLOAD = b"the content of a valid version 4 container, not its bytes\n" * 15


def crafted_files(foreign_raw):
    """{name: bytes} of plain files that begin like a container."""
    rnd = random.Random(5)
    out = {
        # (a) the container magic, then junk: long, and short (2..127)
        "magic-then-junk": CTR_MAGIC + rnd.randbytes(5000),
        "magic-short": CTR_MAGIC + b"junk after the magic",
        # (b) a valid format-4 container (header_sum, size records, a valid
        # block record), no volume id; and a bare valid header of 128 bytes
        "v4-container": v4_container(V4_PAYLOAD),
        "v4-header-only": v4_header(0),
    }
    if foreign_raw is not None:
        # (c) a real container of another BACKING
        out["foreign-container"] = foreign_raw
    return out


def build_plain_tree(src, corpus=None, foreign_raw=None):
    """A plain tree as a user has it before moving in: the corpus (when
    given) and hand-made files of every shape.  Returns {'contents':
    {relative path: bytes} of the hand-made regular files, 'hardlinks':
    [the two names of the hard-linked pair], 'crafted': {relative path:
    bytes}}."""
    src = str(src)
    os.makedirs(src)
    rnd = random.Random(3)
    contents = {}

    def p(rel):
        return os.path.join(src, rel)

    def put(rel, data):
        os.makedirs(os.path.dirname(p(rel)), exist_ok=True)
        with open(p(rel), "wb") as f:
            f.write(data)
        contents[rel] = data

    if corpus is not None:
        cp_a(corpus, p("corpus"))
    for d in ("hand/deep/a/b/c", "hand/sub", "hand/crafted"):
        os.makedirs(p(d))
    put("hand/empty", b"")
    put("hand/one-x", b"x")
    for n in (2, 3, 15, 64, 100, 127):
        put("hand/small-%d" % n, words_text(n, n, WORDS))
    put("hand/len-128", rnd.randbytes(128))
    put("hand/zero-led", b"\0" + b"a plain file starting with a NUL\n" * 3)
    put("hand/text-300k", words_text(300000, 1, WORDS))
    put("hand/big", rnd.randbytes(1 << 20) + words_text(2 << 20, 2, WORDS)
        + rnd.randbytes(12345))
    put("hand/rename-me", words_text(40000, 3, WORDS))
    put("hand/delete-me", words_text(9000, 4, WORDS))
    put("hand/deep/a/b/c/leaf.txt", words_text(5000, 5, WORDS))
    put("hand/exec", b"#!/bin/sh\necho moved in\n")
    put("hand/readonly", words_text(7000, 6, WORDS))
    put("hand/setuid", words_text(3000, 7, WORDS))
    put("hand/sub/hl-a", words_text(20000, 8, WORDS))
    os.link(p("hand/sub/hl-a"), p("hand/hl-b"))
    contents["hand/hl-b"] = contents["hand/sub/hl-a"]
    # sparse: holes before, between and after the data
    sparse = bytearray(6 << 20)
    for off, data in ((2 << 20, b"data after a 2 MiB hole"),
                      ((5 << 20) + 3, b"more data, then a hole to the end")):
        sparse[off:off + len(data)] = data
    with open(p("hand/sparse"), "wb") as f:
        f.truncate(len(sparse))
        f.seek(2 << 20)
        f.write(b"data after a 2 MiB hole")
        f.seek((5 << 20) + 3)
        f.write(b"more data, then a hole to the end")
    contents["hand/sparse"] = bytes(sparse)
    crafted = {}
    for name, data in crafted_files(foreign_raw).items():
        put("hand/crafted/" + name, data)
        crafted["hand/crafted/" + name] = data
    os.symlink("big", p("hand/link-big"))
    os.symlink("nowhere", p("hand/dangling"))
    os.symlink("deep/a", p("hand/dirlink"))
    os.mkfifo(p("hand/fifo"))
    # owners (root only), then modes (chown clears setuid)
    if os.geteuid() == 0:
        os.chown(p("hand/text-300k"), 1001, 1002)
        os.chown(p("hand/exec"), 1003, 1003)
        os.chown(p("hand/sub"), 1004, 1005)
    os.chmod(p("hand/small-64"), 0o600)
    os.chmod(p("hand/exec"), 0o751)
    os.chmod(p("hand/readonly"), 0o444)
    os.chmod(p("hand/setuid"), 0o4755)
    os.chmod(p("hand/deep"), 0o2750)
    os.chmod(p("hand/sub"), 0o700)
    os.setxattr(p("hand/big"), "user.note", b"kept")
    os.setxattr(p("hand/small-15"), "user.bin", bytes(range(256)))
    os.setxattr(p("hand/crafted/v4-container"), "user.origin", b"crafted")
    os.setxattr(p("hand/deep"), "user.dir-note", b"kept too")
    # times, with nanoseconds; directories last, deepest first
    t = 1577934245123456789
    for i, rel in enumerate(sorted(contents)):
        os.utime(p(rel), ns=(t + i * 7777777, t + i * 1000000007))
    os.utime(p("hand/link-big"), ns=(t, t + 5), follow_symlinks=False)
    dirs = [d for d, _, _ in os.walk(p("hand"))]
    for i, d in enumerate(sorted(dirs, key=len, reverse=True)):
        os.utime(d, ns=(t - i, t - 1000 * i - 1))
    return {"contents": contents,
            "hardlinks": ["hand/sub/hl-a", "hand/hl-b"],
            "crafted": crafted}


def rsync_diff(a, b, *extra):
    r = subprocess.run(["rsync", "-anc", "--itemize-changes", "-H", "-X",
                        "-A", "--numeric-ids"] + list(extra) +
                       [str(a) + "/", str(b) + "/"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, "rsync %s -> %s failed: %s" % (a, b, r.stderr)
    return [ln for ln in r.stdout.splitlines() if ln.strip()]


# rsync's line for the top directory when only its mtime differs: making
# BACKING/.squeezefs/ in a plain tree's top directory changes its mtime
ROOT_TIME_ONLY = ".d..t...... ./"


def compare_trees(want, got, where, allow_root_time=False):
    """Asserts that `got` holds what `want` does, as rsync -anc -HXA
    --numeric-ids sees it (data, sizes, modes, owners, mtimes, xattrs,
    ACLs, symlinks, hard links, special files), and the same names.  First
    without directory mtimes (-O), then with them, so that a failure says
    which."""
    assert tree_paths(got) == tree_paths(want), \
        "%s: other names: missing %s, extra %s" % (
            where, sorted(set(tree_paths(want)) - set(tree_paths(got)))[:10],
            sorted(set(tree_paths(got)) - set(tree_paths(want)))[:10])
    diff = rsync_diff(want, got, "-O")
    assert diff == [], "%s: rsync finds differences:\n%s" % (
        where, "\n".join(diff[:50]))
    diff = [ln for ln in rsync_diff(want, got)
            if not (allow_root_time and ln == ROOT_TIME_ONLY)]
    assert diff == [], "%s: directory mtimes differ:\n%s" % (
        where, "\n".join(diff[:50]))


def sync_mtimes(frm, to, rels):
    """Gives each of `rels` under `to` the atime and mtime it has under
    `frm` (what the same changes made at another moment leave apart)."""
    for rel in sorted(rels):
        st = os.lstat(os.path.join(str(frm), rel))
        os.utime(os.path.join(str(to), rel),
                 ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)


def live_in(root, contents):
    """Step 2 of the acceptance: changes to a plain tree, made by the same
    system calls under `root` (the mount, or its shadow copy).  `contents`
    holds the hand-made files' bytes before.  Returns ({relative path:
    expected bytes} of every file changed or made, the files whose mtime
    the changes set, the directories whose mtime they set)."""
    want = {}

    def p(rel):
        return os.path.join(str(root), rel)

    def pwrite(rel, data, off):
        fd = os.open(p(rel), os.O_WRONLY)
        try:
            assert os.pwrite(fd, data, off) == len(data)
            os.fsync(fd)
        finally:
            os.close(fd)
        buf = bytearray(want.get(rel, contents[rel]))
        if len(buf) < off:
            buf.extend(bytes(off - len(buf)))
        buf[off:off + len(data)] = data
        want[rel] = bytes(buf)

    def append(rel, data):
        fd = os.open(p(rel), os.O_WRONLY | os.O_APPEND)
        try:
            assert os.write(fd, data) == len(data)
            os.fsync(fd)
        finally:
            os.close(fd)
        want[rel] = want.get(rel, contents[rel]) + data

    def truncate(rel, n):
        os.truncate(p(rel), n)
        old = want.get(rel, contents[rel])
        want[rel] = old[:n] + bytes(max(0, n - len(old)))

    def create(rel, data):
        fd = os.open(p(rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            assert os.write(fd, data) == len(data)
            os.fsync(fd)
        finally:
            os.close(fd)
        want[rel] = data

    # a write in the middle, across the 128 KiB block boundary
    pwrite("hand/big", b"<patched in the middle>" * 300, 131000)
    # appends: a 64-byte file, the 1-byte one, one name of a hard link
    append("hand/small-64", b"appended line\n" * 100)
    append("hand/one-x", b"y")
    append("hand/sub/hl-a", b"appended through one name\n")
    want["hand/hl-b"] = want["hand/sub/hl-a"]
    # truncate shorter, and longer (a hole at the end)
    truncate("hand/text-300k", 1234)
    truncate("hand/small-15", 200000)
    # a write into a hole of the sparse file
    pwrite("hand/sparse", b"written into the hole", 4 << 20)
    # rename within a directory and across directories
    os.rename(p("hand/rename-me"), p("hand/renamed"))
    want["hand/renamed"] = contents["hand/rename-me"]
    os.rename(p("hand/deep/a/b/c/leaf.txt"), p("hand/sub/leaf-moved.txt"))
    want["hand/sub/leaf-moved.txt"] = contents["hand/deep/a/b/c/leaf.txt"]
    # delete
    os.unlink(p("hand/delete-me"))
    # new files, one in a new directory
    os.mkdir(p("new"), 0o755)
    create("new/created.bin", random.Random(9).randbytes(200000))
    create("hand/created.txt", b"made through the mount\n")
    files = {"hand/big", "hand/small-64", "hand/one-x", "hand/sub/hl-a",
             "hand/text-300k", "hand/small-15", "hand/sparse",
             "new/created.bin", "hand/created.txt"}
    dirs = {".", "new", "hand", "hand/sub", "hand/deep/a/b/c"}
    return want, files, dirs


def check_files(root, want, where):
    for rel, data in sorted(want.items()):
        try:
            got = read_file(os.path.join(str(root), rel))
        except OSError as e:
            raise AssertionError("%s: reading %s: %s" % (where, rel, e))
        assert got == data, "%s: %s reads %d bytes (sha256 %s), want %d" % (
            where, rel, len(got), hashlib.sha256(got).hexdigest()[:16],
            len(data))
        st = os.stat(os.path.join(str(root), rel))
        assert st.st_size == len(data), "%s: %s st_size %d, want %d" % (
            where, rel, st.st_size, len(data))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("movein-corpus") / "corpus"
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts",
                                                 "make-corpus"),
                    "--size", "8M", "--seed", "3", str(d)],
                   check=True, capture_output=True, timeout=300)
    return d


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """A real container written by another BACKING's squeezefs (nopack, so
    it is a container file, not a packed image): {'raw': its backing
    file's bytes, 'content': what it holds, 'volume': that BACKING's volume
    file (None when it has none)}."""
    d = tmp_path_factory.mktemp("movein-foreign")
    content = words_text(100000, 11, WORDS)
    with mounted(d / "backing", d / "mnt", ["nopack"],
                 log=d / "daemon.log") as m:
        with open(m.path("f"), "wb") as f:
            f.write(content)
    raw = read_file(str(d / "backing" / "f"))
    try:
        vol = read_file(vol_path(d / "backing"))
    except FileNotFoundError:
        vol = None
    return {"raw": raw, "content": content, "volume": vol}


def need_rsync():
    if shutil.which("rsync") is None:
        pytest.skip("rsync missing")


def plain_backing(tmp_path):
    """A plain tree (build_plain_tree) copied with cp -a into a BACKING
    never mounted: (tree, backing)."""
    need_rsync()
    tree = build_plain_tree(tmp_path / "src")
    backing = tmp_path / "backing"
    cp_a(tmp_path / "src", backing)
    freshen(backing)
    return tree, backing


# ---- 1. a plain tree is served as it is ------------------------------------

def test_plain_tree_is_served_as_it_is(tmp_path, corpus, foreign):
    """Acceptance 1 (and 3, reading): a BACKING holding a plain tree and no
    .squeezefs/ mounts; the mount shows exactly the tree (rsync -anc -HXA:
    data, sizes, modes, owners, times, xattrs, symlinks, the hard link, the
    FIFO); reading converts nothing and changes no backing file; the first
    mount writes a volume file with LEGACY clear, and a remount (now that
    .squeezefs/ exists) serves the tree the same."""
    need_rsync()
    tree = build_plain_tree(tmp_path / "src", corpus, foreign["raw"])
    backing = tmp_path / "backing"
    cp_a(tmp_path / "src", backing)
    freshen(backing)  # the settle loop must convert nothing here
    ref = tmp_path / "ref"
    cp_a(backing, ref)
    assert not os.path.exists(backing / ".squeezefs")
    plain = {rel: read_file(str(ref / rel)) for rel in regular_files(ref)}
    first = None
    for mount_no in (1, 2):
        where = "mount %d" % mount_no
        with mounted(backing, tmp_path / "mnt", [NEVER]) as m:
            vol = volume(backing)
            assert vol is not None, "%s: no .squeezefs/volume" % where
            assert not vol["legacy"], \
                "%s: a plain tree's volume file has LEGACY set" % where
            first = first or vol["raw"]
            assert vol["raw"] == first, "%s: the volume file changed" % where
            compare_trees(ref, m.mnt, where, allow_root_time=True)
            for rel, data in sorted(plain.items()):
                assert os.stat(m.path(rel)).st_size == len(data), \
                    "%s: %s st_size differs from the plain file's" % (
                        where, rel)
            for rel, data in tree["crafted"].items():
                assert read_file(m.path(rel)) == data, \
                    "%s: crafted %s does not read as itself" % (where, rel)
            a, b = (os.stat(m.path(n)) for n in tree["hardlinks"])
            assert a.st_ino == b.st_ino and a.st_nlink == 2, \
                "%s: the hard-linked pair is not one file" % where
            assert os.stat(m.path("hand/sparse")).st_size == 6 << 20
        # reading converted nothing: every backing file is the plain one
        for rel, data in sorted(plain.items()):
            p = str(backing / rel)
            assert read_file(p) == data, \
                "%s: backing file %s changed by reading" % (where, rel)
            assert os.lstat(p).st_mtime_ns == os.lstat(str(ref / rel)).\
                st_mtime_ns, "%s: backing file %s's mtime changed" % (
                    where, rel)
    fsck_ok(backing, "plain tree, after two mounts")


# ---- 2. writes into plain files -------------------------------------------

def test_plain_files_take_writes(tmp_path):
    """Acceptance 2: through the mount, a write into the middle of a plain
    file, appends (to a 64-byte, a 1-byte and a hard-linked file), truncate
    shorter and longer, a write into a hole, renames, a delete and new
    files; the mount then matches a shadow copy changed by the same system
    calls (rsync -anc -HXA), also after a remount; fsck is clean."""
    tree, backing = plain_backing(tmp_path)
    shadow = tmp_path / "shadow"
    cp_a(backing, shadow)
    with mounted(backing, tmp_path / "mnt", [NEVER]) as m:
        want, files, dirs = live_in(m.mnt, tree["contents"])
        want2, _, _ = live_in(shadow, tree["contents"])
        assert want == want2
        check_files(m.mnt, want, "after the changes")
        check_files(shadow, want, "the shadow copy")
        assert not os.path.exists(m.path("hand/delete-me"))
        assert not os.path.exists(m.path("hand/rename-me"))
        sync_mtimes(m.mnt, shadow, files | dirs)
        compare_trees(shadow, m.mnt, "after the changes")
        m.remount()
        check_files(m.mnt, want, "after a remount")
        compare_trees(shadow, m.mnt, "after a remount")
    fsck_ok(backing, "after writes into plain files")


def test_one_byte_results_are_not_lost_stubs(tmp_path):
    """Acceptance 2, at the edge of the spec's rule that a 1-byte backing
    file holding 0x00 is a stub that lost its reference: writes through the
    mount that leave a plain file holding the single byte 0x00 (overwrite a
    1-byte file, truncate a NUL-led file to 1 byte, truncate to 0 then write
    a NUL) read back as that byte, also after a remount, and fsck finds
    nothing damaged."""
    backing = tmp_path / "backing"
    backing.mkdir()
    (backing / "one-x").write_bytes(b"x")
    (backing / "zero-led").write_bytes(b"\0 and more bytes after the NUL\n")
    (backing / "one-y").write_bytes(b"y")
    freshen(backing)
    with mounted(backing, tmp_path / "mnt", [NEVER]) as m:
        fd = os.open(m.path("one-x"), os.O_WRONLY)
        try:
            assert os.pwrite(fd, b"\0", 0) == 1
            os.fsync(fd)
        finally:
            os.close(fd)
        os.truncate(m.path("zero-led"), 1)
        os.truncate(m.path("one-y"), 0)
        with open(m.path("one-y"), "r+b") as f:
            f.write(b"\0")
            f.flush()
            os.fsync(f.fileno())
        for mount_no in (1, 2):
            for name in ("one-x", "zero-led", "one-y"):
                try:
                    got = read_file(m.path(name))
                except OSError as e:
                    raise AssertionError("mount %d: %s: %s (taken for a lost "
                                         "stub?)" % (mount_no, name, e))
                assert got == b"\0", "mount %d: %s reads %r" % (
                    mount_no, name, got)
                assert os.stat(m.path(name)).st_size == 1
            if mount_no == 1:
                m.remount()
    fsck_ok(backing, "after 1-byte NUL results")


# ---- 3. files that begin like a container ---------------------------------

def test_container_lookalikes_read_as_themselves(tmp_path, foreign):
    """Acceptance 3: plain files that start with the container magic and
    junk (long and short), a valid format-4 container without a volume id
    (and a bare valid 128-byte header), and a real container copied from
    another BACKING read as their own bytes with their own lengths (the
    log says once that one looks like another BACKING's container); after
    `settle` of each they are containers of this volume and still read as
    the same bytes, also after a remount; fsck is clean and export writes
    the same bytes."""
    no_forced_codec()
    crafted = crafted_files(foreign["raw"])
    # the test data is what it claims to be
    fraw = foreign["raw"]
    assert fraw[:8] == CTR_MAGIC and len(fraw) > 128
    assert struct.unpack_from("<H", fraw, 8)[0] == 5, \
        "a format-5 build wrote format_version %d" % struct.unpack_from(
            "<H", fraw, 8)[0]
    assert foreign["volume"] is not None, "the other BACKING has no volume"
    fid = struct.unpack_from("<Q", foreign["volume"], 16)[0]
    assert struct.unpack_from("<QQ", fraw, OFF_VOL_ID) == (fid, fid), \
        "the other BACKING's container does not carry its volume id twice"
    try:
        sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
        import read_container as rc
    except ImportError:
        rc = None
    if rc is not None:
        assert rc.Container.from_image(crafted["v4-container"]).read_all() \
            == V4_PAYLOAD, "the crafted format-4 container is not valid"
    backing = tmp_path / "backing"
    backing.mkdir()
    for name, data in crafted.items():
        (backing / name).write_bytes(data)
    freshen(backing)
    with mounted(backing, tmp_path / "mnt", [NEVER]) as m:
        vid = volume(backing)["id"]
        assert vid != fid, "two BACKINGs got the same volume id"
        for name, data in sorted(crafted.items()):
            assert os.stat(m.path(name)).st_size == len(data), name
            assert read_file(m.path(name)) == data, \
                "%s does not read as its own bytes" % name
            assert backing_kind(m.bpath(name), vid) == "plain", name
        assert wait_for(lambda: LOOKALIKE_LOG in m.read_log(), timeout=5), \
            "the log does not say %r:\n%s" % (LOOKALIKE_LOG,
                                              m.read_log()[-2000:])
        for name, data in sorted(crafted.items()):
            assert ctl_command(m, "settle " + name) == 0, \
                "settle %s: %s" % (name, read_file(m.path(".squeezefs",
                                                          "last_error")))
            kind = backing_kind(m.bpath(name), vid)
            assert kind in ("container", "packed"), \
                "%s is %s after settle" % (name, kind)
            assert read_file(m.path(name)) == data, \
                "%s changed by its conversion" % name
        m.remount()
        for name, data in sorted(crafted.items()):
            assert read_file(m.path(name)) == data, \
                "%s after the conversion and a remount" % name
    fsck_ok(backing, "converted lookalikes")
    dest = tmp_path / "dest"
    r = squeezefs("export", "--no-progress", backing, dest)
    assert r.returncode == 0, r.stdout + r.stderr
    for name, data in sorted(crafted.items()):
        assert read_file(str(dest / name)) == data, "export of %s" % name


# ---- 4 and 6. background conversion, then moving out ------------------------

def test_background_conversion_then_export(tmp_path, corpus, foreign):
    """Acceptance 4, 2 and 6: mounted with settle_after=1, the tree is lived
    in (the changes of acceptance 2, racing the conversion), then every
    plain file that is not hard-linked becomes a container with BACKING's
    volume id (the hard-linked pair stays plain); the mount then matches a
    shadow copy changed the same way (rsync -anc -HXA: file times, modes,
    owners and xattrs kept by the conversion; untouched directories' mtimes
    too); fsck is clean; `squeezefs export` gives the same tree back."""
    no_forced_codec()
    need_rsync()
    tree = build_plain_tree(tmp_path / "src", corpus, foreign["raw"])
    backing = tmp_path / "backing"
    cp_a(tmp_path / "src", backing)  # old mtimes: all due at once
    shadow = tmp_path / "shadow"
    cp_a(tmp_path / "src", shadow)
    with mounted(backing, tmp_path / "mnt",
                 ["settle_after=1", "settle_cpu=100", "stats_flush=1"]) as m:
        vid = volume(backing)["id"]
        assert not volume(backing)["legacy"]
        start = time.time_ns()
        want, files, dirs = live_in(m.mnt, tree["contents"])
        live_in(shadow, tree["contents"])
        check_files(m.mnt, want, "after the changes")
        for rel in files:
            assert os.lstat(m.path(rel)).st_mtime_ns >= start - 2 * 10**9, \
                "%s: the write did not set its mtime" % rel
        sync_mtimes(m.mnt, shadow, files)
        wait_converted(m, vid)
        # hard-linked plain files are left plain
        for rel in tree["hardlinks"]:
            st = os.lstat(m.bpath(rel))
            assert st.st_nlink == 2, "%s: nlink %d in BACKING" % (
                rel, st.st_nlink)
        check_files(m.mnt, want, "after the conversion")
        check_files(m.mnt, tree["crafted"], "crafted, after the conversion")
        # The look-alikes stay plain: converted only when asked.
        left = plain_lookalikes(backing, vid)
        assert left and all(rel in tree["crafted"] for rel in left), left
        assert "looks like a squeezefs container of another backing " \
            "directory" in m.read_log()
        # the changes' directories may have moved since (renames into
        # them); untouched ones must not have
        sync_mtimes(m.mnt, shadow, dirs)
        compare_trees(shadow, m.mnt, "after the conversion")
    fsck_ok(backing, "after the background conversion")
    dest = tmp_path / "dest"
    r = squeezefs("export", "--no-progress", backing, dest)
    assert r.returncode == 0, r.stdout + r.stderr
    compare_trees(shadow, dest, "export after the conversion")
    a, b = (os.lstat(str(dest / n)) for n in tree["hardlinks"])
    assert a.st_ino == b.st_ino, "export split the hard-linked pair"


def test_background_conversion_empties_plain_stats(tmp_path):
    """Acceptance 4, the stats: a plain tree without hard links, mounted
    with settle_after=1, ends with totals.plain_files == 0 and
    totals.plain_bytes == 0 in MOUNT/.squeezefs/stats, every file a
    container of the volume, all reading the same; fsck is clean."""
    no_forced_codec()
    backing = tmp_path / "backing"
    (backing / "d").mkdir(parents=True)
    rnd = random.Random(4)
    files = {"a.txt": words_text(150000, 1, WORDS),
             "d/b.bin": rnd.randbytes(70000),
             "d/c.txt": words_text(100, 2, WORDS),
             "x": b"x",
             "two": b"ab",
             "d/e": words_text(5000, 3, WORDS)}
    for rel, data in files.items():
        (backing / rel).write_bytes(data)
        os.utime(backing / rel, ns=(1600000000 * 10**9,) * 2)
    with mounted(backing, tmp_path / "mnt",
                 ["settle_after=1", "settle_cpu=100", "stats_flush=1"]) as m:
        vid = volume(backing)["id"]
        seen = []

        def no_plain():
            t = totals(m)
            seen[:] = [t.get("plain_files"), t.get("plain_bytes")]
            return seen == [0, 0]
        assert wait_for(no_plain, timeout=CONVERT_WAIT, step=0.5), \
            "stats still count plain files/bytes %s:\n%s" % (
                seen, m.read_log()[-2000:])
        assert unconverted(backing, vid) == [], \
            "stats count no plain files, BACKING holds %s" % \
            unconverted(backing, vid)
        check_files(m.mnt, files, "after the conversion")
    fsck_ok(backing, "after the conversion")


def test_pinned_plain_file_is_converted_with_its_pin(tmp_path):
    """A codec pin set on a plain file through the mount (user.squeezefs.codec)
    is what its conversion stores it with, and the container keeps it."""
    no_forced_codec()
    backing = tmp_path / "backing"
    backing.mkdir()
    data = words_text(200000, 8, WORDS)
    (backing / "pinned.txt").write_bytes(data)
    (backing / "free.txt").write_bytes(data)
    with mounted(backing, tmp_path / "mnt", [NEVER]) as m:
        os.setxattr(m.path("pinned.txt"), "user.squeezefs.codec", b"lz4")
        for name in ("pinned.txt", "free.txt"):
            assert ctl_command(m, "settle " + name) == 0, m.read_log()
        pinned = json.loads(os.getxattr(m.path("pinned.txt"),
                                        "user.squeezefs.stats"))
        free = json.loads(os.getxattr(m.path("free.txt"),
                                      "user.squeezefs.stats"))
        assert pinned["state"] != "plain" and free["state"] != "plain"
        assert set(pinned["blocks"]) == {"lz4:1"} or \
            set(pinned["blocks"]) == {"lz4"}, pinned
        assert pinned["pin"] == "lz4", pinned
        assert not any(k.startswith("lz4") for k in free["blocks"]), free
        assert read_file(m.path("pinned.txt")) == data


def test_plain_files_put_in_while_unmounted_are_converted(tmp_path):
    """Files copied into BACKING beside the mount, while it is unmounted
    after a clean unmount (cp -a keeps their old mtimes, not their ctime),
    are found by the next mount and converted like those of the first."""
    no_forced_codec()
    backing = tmp_path / "backing"
    backing.mkdir()
    (backing / "first.txt").write_bytes(words_text(20000, 5, WORDS))
    opts = ["settle_after=1", "settle_cpu=100", "stats_flush=1"]
    with mounted(backing, tmp_path / "mnt", opts) as m:
        vid = volume(backing)["id"]
        wait_converted(m, vid)
    later = {"later.txt": words_text(30000, 6, WORDS),
             "sub/later.bin": random.Random(7).randbytes(20000)}
    (backing / "sub").mkdir()
    for rel, data in later.items():
        (backing / rel).write_bytes(data)
        os.utime(backing / rel, ns=(1500000000 * 10**9,) * 2)
    assert sorted(unconverted(backing, vid)) == sorted(later)
    with mounted(backing, tmp_path / "mnt", opts) as m:
        wait_converted(m, vid)
        check_files(m.mnt, later, "files put in while unmounted")
        for rel in later:
            assert os.stat(m.path(rel)).st_mtime == 1500000000, rel
    fsck_ok(backing, "after converting files put in while unmounted")


# ---- 5. settle PATH ---------------------------------------------------------

def test_settle_command_converts_one_plain_file(tmp_path):
    """Acceptance 5: with settle_after=3600 (nothing converts by itself),
    writing `settle a` to MOUNT/.squeezefs/control returns 0 with a's
    backing file already a container of the volume, keeping its mode,
    owner, group, mtime and xattr; the other plain files stay plain;
    totals.plain_files and plain_bytes go from 4 files to 3."""
    no_forced_codec()
    backing = tmp_path / "backing"
    backing.mkdir()
    rnd = random.Random(6)
    # sizes in whole 4 KiB pages: plain_bytes is the same whether it counts
    # logical or allocated bytes
    files = {"a": words_text(65536, 1, WORDS), "b": rnd.randbytes(65536),
             "c": words_text(131072, 2, WORDS), "d": rnd.randbytes(12288)}
    for rel, data in files.items():
        with open(backing / rel, "wb") as f:
            f.write(data)
            os.fsync(f.fileno())
    os.setxattr(backing / "a", "user.note", b"kept")
    os.chmod(backing / "a", 0o640)
    if os.geteuid() == 0:
        os.chown(backing / "a", 1001, 1002)
    freshen(backing)
    before = os.lstat(backing / "a")
    total = sum(len(d) for d in files.values())
    with mounted(backing, tmp_path / "mnt", [NEVER]) as m:
        vid = volume(backing)["id"]
        seen = []

        def figures(n, nbytes):
            t = totals(m)
            seen[:] = [t.get("plain_files"), t.get("plain_bytes")]
            return seen == [n, nbytes]
        assert wait_for(lambda: figures(4, total), timeout=10), \
            "stats before: plain_files, plain_bytes = %s, want %s" % (
                seen, [4, total])
        # The command-line view says so too (compsize's table).
        r = squeezefs("stats", m.mnt)
        assert r.returncode == 0 and "4 plain" in r.stdout, r.stdout + \
            r.stderr
        assert ctl_command(m, "settle a") == 0, \
            read_file(m.path(".squeezefs", "last_error"))
        kind = backing_kind(m.bpath("a"), vid)
        assert kind == "container", \
            "a's backing file is %s when the settle command returns" % kind
        for rel in "bcd":
            assert backing_kind(m.bpath(rel), vid) == "plain", \
                "%s converted too" % rel
            assert read_file(m.bpath(rel)) == files[rel]
        after = os.lstat(m.bpath("a"))
        assert stat.S_IMODE(after.st_mode) == 0o640
        assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
        assert after.st_mtime_ns == before.st_mtime_ns, \
            "the conversion changed the mtime"
        assert os.getxattr(m.bpath("a"), "user.note") == b"kept"
        st = os.lstat(m.path("a"))
        assert (stat.S_IMODE(st.st_mode), st.st_mtime_ns, st.st_size) == \
            (0o640, before.st_mtime_ns, len(files["a"]))
        assert os.getxattr(m.path("a"), "user.note") == b"kept"
        check_files(m.mnt, files, "after settle a")
        assert wait_for(lambda: figures(3, total - len(files["a"])),
                        timeout=10), \
            "stats after: plain_files, plain_bytes = %s, want %s" % (
                seen, [3, total - len(files["a"])])
    fsck_ok(backing, "after settle of one plain file")


# ---- 7. squeezefs import -----------------------------------------------------

def test_import_converts_an_unmounted_tree(tmp_path, corpus, foreign):
    """Acceptance 7: `squeezefs import --no-progress BACKING` on a plain tree
    exits 0, writes a volume file with LEGACY clear and leaves every
    regular file that is not hard-linked a container of the volume (the
    hard-linked pair plain, as it was); mounted, the tree reads as it was
    (rsync -anc -HXA); import of the mounted BACKING is refused ("mounted");
    fsck is clean; a second import changes nothing."""
    need_rsync()
    tree = build_plain_tree(tmp_path / "src", corpus, foreign["raw"])
    backing = tmp_path / "backing"
    cp_a(tmp_path / "src", backing)
    r = squeezefs("import", "--no-progress", backing)
    assert r.returncode == 0, "import exited %d:\n%s%s" % (
        r.returncode, r.stdout[-3000:], r.stderr[-3000:])
    vol = volume(backing)
    assert vol is not None and not vol["legacy"], \
        "import wrote no volume file, or one with LEGACY set: %r" % vol
    left = unconverted(backing, vol["id"])
    assert left == [], "import left %d plain files, e.g. %s" % (
        len(left), left[:10])
    # Look-alikes are left plain (said on stdout) unless --all.
    looks = plain_lookalikes(backing, vol["id"])
    assert looks and all(rel in tree["crafted"] for rel in looks), looks
    assert "begin like a squeezefs container" in r.stdout, r.stdout
    for rel in tree["hardlinks"]:
        p = str(backing / rel)
        assert os.lstat(p).st_nlink == 2 and \
            read_file(p) == tree["contents"][rel], \
            "hard-linked %s is no longer the plain file" % rel
    tmpdir = backing / ".squeezefs" / "tmp"
    assert not tmpdir.exists() or os.listdir(tmpdir) == [], \
        "import left %s" % os.listdir(tmpdir)
    with mounted(backing, tmp_path / "mnt", [NEVER]) as m:
        compare_trees(tmp_path / "src", m.mnt, "mounted after import",
                      allow_root_time=True)
        check_files(m.mnt, tree["crafted"], "crafted, after import")
        r = squeezefs("import", "--no-progress", backing)
        assert r.returncode != 0 and "mounted" in r.stdout + r.stderr, \
            "import of a mounted BACKING: exit %d\n%s%s" % (
                r.returncode, r.stdout, r.stderr)
    r = squeezefs("import", "--all", "--no-progress", backing)
    assert r.returncode == 0, r.stdout + r.stderr
    assert unconverted(backing, vol["id"], lookalikes=True) == []
    with mounted(backing, tmp_path / "mnt", [NEVER]) as m:
        check_files(m.mnt, tree["crafted"], "crafted, after import --all")
    fsck_ok(backing, "after import")
    digest = {rel: read_file(str(backing / rel))
              for rel in regular_files(backing)}
    r = squeezefs("import", "--no-progress", backing)
    assert r.returncode == 0, r.stdout + r.stderr
    again = {rel: read_file(str(backing / rel))
             for rel in regular_files(backing)}
    assert sorted(again) == sorted(digest)
    changed = [rel for rel in digest if again[rel] != digest[rel]]
    assert changed == [], "a second import rewrote %s" % changed[:10]


def test_import_shows_progress(tmp_path):
    """Acceptance 7, the progress line: `squeezefs import --progress`
    writes export's kind of progress line to stderr (MiB/s, ETA, 100%) and
    converts the tree."""
    backing = tmp_path / "backing"
    backing.mkdir()
    rnd = random.Random(7)
    files = {"r%d" % i: rnd.randbytes(1 << 20) for i in range(3)}
    files.update({"t%d" % i: words_text(1 << 20, i, WORDS) for i in range(3)})
    for rel, data in files.items():
        (backing / rel).write_bytes(data)
    r = squeezefs("import", "--progress", backing)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "MiB/s" in r.stderr and "ETA" in r.stderr and "100%" in \
        r.stderr, "no progress line: %r" % r.stderr[-2000:]
    vid = volume(backing)["id"]
    assert unconverted(backing, vid) == []
    with mounted(backing, tmp_path / "mnt", [NEVER]) as m:
        check_files(m.mnt, files, "after import --progress")


# ---- 8. kill -9 while converting --------------------------------------------

def test_kill_during_conversion_loses_nothing(tmp_path):
    """Acceptance 8: kill -9 of the daemon while the settle loop converts
    several multi-MiB plain files (killed once at least one is converted):
    each backing file is then the whole plain file or a container of the
    volume, never neither; the remount removes the leftovers in
    .squeezefs/tmp, every file reads as it was, the conversion is taken up
    again and finishes; fsck is clean."""
    no_forced_codec()
    backing = tmp_path / "backing"
    backing.mkdir()
    rnd = random.Random(8)
    text = words_text(1 << 20, 8, WORDS)
    files = {}
    for i in range(6):
        if i % 2:
            files["f%d.bin" % i] = rnd.randbytes((2 << 20) + 4321 * i)
        else:
            files["f%d.txt" % i] = (b"file %d\n" % i + text * 3)[:(3 << 20) -
                                                               777 * i]
    files["small.txt"] = words_text(3000, 9, WORDS)
    for rel, data in files.items():
        (backing / rel).write_bytes(data)
        os.utime(backing / rel, ns=(1600000000 * 10**9,) * 2)
    mnt = tmp_path / "mnt"
    opts = ["settle_after=1", "settle_cpu=100", "stats_flush=1"]
    m = Mount(backing, mnt, opts=opts)
    m.start()
    try:
        vid = volume(backing)["id"]
        big = sorted(n for n in files if n != "small.txt")

        def some_converted():
            return any(backing_kind(str(backing / n), vid) != "plain"
                       for n in big)
        assert wait_for(some_converted, timeout=CONVERT_WAIT, step=0.005), \
            "no file converted in %.0f s:\n%s" % (CONVERT_WAIT,
                                                  m.read_log()[-2000:])
        m.kill()
    finally:
        m.cleanup()
    # never neither: the whole plain file or this volume's container
    kinds = {}
    for rel, data in sorted(files.items()):
        p = str(backing / rel)
        assert os.path.exists(p), "%s is gone after kill -9" % rel
        kinds[rel] = backing_kind(p, vid)
        if kinds[rel] == "plain":
            assert read_file(p) == data, \
                "%s is plain but not the plain file it was" % rel
    # a leftover of a conversion cut off, besides whatever the kill left
    tmpdir = backing / ".squeezefs" / "tmp"
    tmpdir.mkdir(exist_ok=True)
    (tmpdir / "convert.left-by-the-test").write_bytes(b"half a container")
    leftovers = set(os.listdir(tmpdir))
    with mounted(backing, mnt, opts) as m:
        assert wait_for(lambda: not leftovers & set(os.listdir(tmpdir)),
                        timeout=5), \
            "leftovers in .squeezefs/tmp after the remount: %s" % sorted(
                leftovers & set(os.listdir(tmpdir)))
        assert volume(backing)["id"] == vid
        check_files(mnt, files, "after kill -9 (%s) and a remount" % kinds)
        wait_converted(m, vid)
        check_files(mnt, files, "after the conversion was taken up again")
    fsck_ok(backing, "after kill -9 during conversion")


# ---- 9. the volume file: legacy and fresh BACKINGs ------------------------------

def copy_golden_v4(dst):
    """A copy of tests/golden/v4 (a BACKING written by the release before
    volumes), with the pack references git cannot keep set again."""
    src = os.path.join(ROOT, "tests", "golden", "v4")
    shutil.copytree(src, dst, symlinks=True)
    with open(src + ".xattrs.json") as f:
        for rel, xattrs in json.load(f).items():
            for name, value in xattrs.items():
                os.setxattr(os.path.join(str(dst), rel), name,
                            bytes.fromhex(value), follow_symlinks=False)
    with open(src + ".json") as f:
        return json.load(f)["files"]


def read_errno(path):
    """None when `path` reads, else the errno of the failure."""
    try:
        read_file(path)
        return None
    except OSError as e:
        return e.errno


@pytest.mark.parametrize("kind", ["golden-v4", "bare-reserved-dir"])
def test_older_backing_stays_strict(tmp_path, kind):
    """Acceptance 9: a BACKING with .squeezefs/ but no volume file (the
    golden v4 BACKING, or a bare .squeezefs/) gets a volume file with
    LEGACY set at its first mount and keeps it; its containers read as
    before, while a plain file in it reads as EIO and is never converted
    (settle_after=1)."""
    backing = tmp_path / "backing"
    golden = {}
    if kind == "golden-v4":
        if os.geteuid() != 0:
            pytest.skip("setting trusted.* pack references needs root")
        golden = copy_golden_v4(backing)
    else:
        (backing / ".squeezefs").mkdir(parents=True)
    assert volume(backing) is None
    plain = b"a plain file in a legacy BACKING\n" * 10
    (backing / "plain.txt").write_bytes(plain)
    os.utime(backing / "plain.txt", ns=(1600000000 * 10**9,) * 2)
    first = None
    for mount_no in (1, 2):
        with mounted(backing, tmp_path / "mnt",
                     ["settle_after=1", "settle_cpu=100"]) as m:
            vol = volume(backing)
            assert vol is not None, "no volume file after the mount"
            assert vol["legacy"], "an older BACKING's volume file lacks LEGACY"
            if first is None:
                first = vol["raw"]
            assert vol["raw"] == first, "the volume file was rewritten"
            for rel, e in sorted(golden.items()):
                if e["type"] == "file":
                    got = read_file(m.path(rel))
                    assert hashlib.sha256(got).hexdigest() == e["sha256"], \
                        "golden %s reads differently" % rel
            assert read_errno(m.path("plain.txt")) == errno.EIO, \
                "a plain file in a legacy BACKING must read as EIO"
            if mount_no == 1:
                time.sleep(3)  # the settle loop would have converted it
            assert read_file(str(backing / "plain.txt")) == plain, \
                "a legacy mount converted a plain file"


def test_fresh_backing_gets_a_volume(tmp_path):
    """Acceptance 9: an empty BACKING (no .squeezefs/) gets a volume file at
    its first mount: magic, version 1, LEGACY clear, a non-zero id, a valid
    sum; it stays the same across remounts; another fresh BACKING gets
    another id; files written then carry the id in both header copies and
    format_version 5."""
    ids = []
    for name in ("one", "two"):
        backing = tmp_path / (name + "-backing")
        with mounted(backing, tmp_path / (name + "-mnt"), ["nopack"]) as m:
            vol = volume(backing)
            assert vol is not None, "no volume file after the first mount"
            assert not vol["legacy"], "a fresh BACKING got LEGACY"
            with open(m.path("f"), "wb") as f:
                f.write(words_text(20000, 1, WORDS))
            m.remount()
            assert volume(backing)["raw"] == vol["raw"], \
                "the volume file changed at a remount"
        raw = read_file(str(backing / "f"))
        assert raw[:8] == CTR_MAGIC
        assert struct.unpack_from("<H", raw, 8)[0] == 5
        assert struct.unpack_from("<QQ", raw, OFF_VOL_ID) == (vol["id"],) * 2
        ids.append(vol["id"])
    assert ids[0] != ids[1], "two fresh BACKINGs got the same volume id"


@pytest.mark.parametrize("damage", ["sum", "short", "magic"])
def test_damaged_volume_file_refuses_the_mount(tmp_path, damage):
    """The spec: a damaged volume file (bad sum, wrong length, bad magic)
    makes the mount refuse with a message; removed, the BACKING mounts in
    legacy mode (LEGACY set, since .squeezefs/ exists) and its containers
    read."""
    backing = tmp_path / "backing"
    data = words_text(20000, 2, WORDS)
    with mounted(backing, tmp_path / "mnt", ["nopack"]) as m:
        with open(m.path("f"), "wb") as f:
            f.write(data)
    raw = bytearray(volume(backing)["raw"])
    if damage == "sum":
        raw[17] ^= 0x40  # the id, covered by the sum
    elif damage == "short":
        raw = raw[:31]
    else:
        raw[3] ^= 0x01
    with open(vol_path(backing), "wb") as f:
        f.write(raw)
    m = Mount(backing, tmp_path / "mnt", log=tmp_path / "refused.log")
    with pytest.raises(RuntimeError):
        try:
            m.start()
        finally:
            m.cleanup()
    log = m.read_log()
    assert "volume" in log, "the refusal does not name the volume file:\n" + \
        log[-2000:]
    os.unlink(vol_path(backing))
    with mounted(backing, tmp_path / "mnt") as m:
        assert volume(backing)["legacy"], \
            "a BACKING whose volume file was lost must mount as LEGACY"
        assert read_file(m.path("f")) == data


def test_readers_leave_a_plain_tree_plain(tmp_path):
    """fsck, export and a ro mount of a plain tree leave it a plain tree:
    fsck exits 0 twice and makes nothing; export (which takes BACKING's
    lock, and so makes .squeezefs/) makes the volume file with it, LEGACY
    clear (docs/FORMAT.md 12.1: whatever first makes .squeezefs/ makes the
    volume file); export gives the tree back, a ro mount serves it, and the
    first rw mount after them serves the plain files (not EIO)."""
    tree, backing = plain_backing(tmp_path)
    ref = tmp_path / "ref"
    cp_a(backing, ref)
    for i in (1, 2):
        fsck_ok(backing, "fsck %d of a plain tree" % i)
        assert volume(backing) is None, "fsck wrote a volume file"
    dest = tmp_path / "dest"
    r = squeezefs("export", "--no-progress", backing, dest)
    assert r.returncode == 0, r.stdout + r.stderr
    vol = volume(backing)
    assert vol is not None and not vol["legacy"], \
        "export made .squeezefs/ without a volume file, or a LEGACY one: %r" \
        % vol
    compare_trees(ref, dest, "export of a plain tree", allow_root_time=True)
    with mounted(backing, tmp_path / "mnt", ["ro", NEVER]) as m:
        check_files(m.mnt, tree["crafted"], "ro mount")
        check_files(m.mnt, {"hand/big": tree["contents"]["hand/big"]},
                    "ro mount")
    assert volume(backing) == vol, "a ro mount changed the volume file"
    with mounted(backing, tmp_path / "mnt", [NEVER]) as m:
        vol = volume(backing)
        assert vol is not None and not vol["legacy"], \
            "after fsck/export/ro, the first rw mount took the plain tree " \
            "for an older BACKING: %r" % vol
        compare_trees(ref, m.mnt, "rw mount after the readers",
                      allow_root_time=True)
