"""Backups of BACKING (issue "Move in, live in, move out"): a tree is moved
in through a mount, lived in (small files packed, then renamed, rewritten
and replaced), and BACKING is moved out with the everyday tools that drop
xattrs: `rsync -a` (no -X), `tar -c` without --xattrs then `tar -x`, and
`cp -r`.  Such a copy loses `trusted.squeezefs.packed`, so every packed
file of it is a 1-byte stub with no reference (docs/FORMAT.md section 13).

What is checked, on each copy:
- the reference really is gone (ENODATA) and the stub is 1 byte;
- a mount of the copy never returns wrong or empty bytes: each lost file
  fails with EIO and the daemon's log names its backing path ("lost its
  pack reference"); every file that was not packed (big files, empty
  files, directories, symlinks) reads as the original;
- `squeezefs fsck COPY` exits 1 and names exactly the lost files (empty
  files are empty, never lost);
- `fsck --reclaim COPY` frees nothing while a file is lost: no pack byte
  changes, non-zero exit;
- `fsck --repair COPY` restores each lost file from the pack index into a
  container of its own ("repaired"); with rsync -a, which keeps mtimes to
  the nanosecond, that includes a file renamed after it was packed and the
  files of a directory renamed after they were packed (the index follows
  renames made through the mount), whatever the copy tool kept, and it
  exits 0; a following `fsck` exits 0 and the mount reads every file byte
  for byte as the original (content, mode, mtime where the tool kept it,
  owner where it kept it);
- afterwards `fsck --reclaim COPY` may free the unused images, and every
  file still reads back identical.
And the original BACKING, read by all three tools, is unchanged and mounts
with everything identical."""

import errno
import glob
import os
import random
import stat
import struct
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sqfs_util import (PACK_WAIT, STUB_LEN, Mount, is_packed,  # noqa: E402
                       run_fsck, sha256_file, tree_paths, wait_for,
                       wait_packed)

XATTR = "trusted.squeezefs.packed"
LOST = "lost its pack reference"

# Pack index records (meta/pack.h): "SQPI", u32 record length, 40-byte
# reference, i64 mtime_sec, u32 mtime_nsec, u32 path_len, path, u64 sum.
IDX_HEAD = struct.Struct("<4sI40sqII")

FILE_MODES = (0o644, 0o600, 0o640, 0o755, 0o444, 0o700)
DIR_MODES = (0o755, 0o750, 0o700)
MTIME_BASE = 1_500_000_000 * 10**9  # 2017, far from "now"

WORDS = ("backup restore rsync tar archive copy move house box label shelf "
         "kitchen attic key door window letter photo album recipe invoice "
         "the of and to in is for on with that").split()


# ---- contents -----------------------------------------------------------

def prose(n, seed):
    rnd = random.Random(seed)
    out = bytearray()
    while len(out) < n:
        out += (" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(4, 14)))
                .capitalize() + ".\n").encode()
    return bytes(out[:n])


def code(n, seed):
    rnd = random.Random(seed)
    out = bytearray()
    i = 0
    while len(out) < n:
        out += b"int f%d_%d(int x) { return x * %d + %d; }\n" % (
            seed, i, rnd.randint(2, 99), rnd.randint(0, 9999))
        i += 1
    return bytes(out[:n])


def csv(n, seed):
    rnd = random.Random(seed)
    out = bytearray(b"id;name;amount\n")
    i = 0
    while len(out) < n:
        out += b"%d;%s;%d.%02d\n" % (i, rnd.choice(WORDS).encode(),
                                    rnd.randint(0, 9999), rnd.randint(0, 99))
        i += 1
    return bytes(out[:n])


def binary(n, seed):
    return random.Random(seed).randbytes(n)


def pack_hashes(backing):
    """sha256 of every pack file of `backing` (and of the pack index)."""
    out = {}
    for p in sorted(glob.glob(os.path.join(backing, ".squeezefs", "packs",
                                           "*"))):
        out[os.path.basename(p)] = sha256_file(p)
    return out


def index_records(backing):
    """(path, mtime_ns) of every record of BACKING's pack index."""
    p = os.path.join(backing, ".squeezefs", "packs", "index")
    with open(p, "rb") as f:
        buf = f.read()
    out = []
    pos = 0
    while pos + IDX_HEAD.size + 8 <= len(buf):
        magic, rlen, _ref, sec, nsec, plen = IDX_HEAD.unpack_from(buf, pos)
        if magic != b"SQPI" or rlen != IDX_HEAD.size + plen + 8 or \
                pos + rlen > len(buf):
            pos += 1
            continue
        path = buf[pos + IDX_HEAD.size:pos + IDX_HEAD.size + plen]
        out.append((path.decode(), sec * 10**9 + nsec))
        pos += rlen
    return out


# ---- the tree -----------------------------------------------------------

class Tree:
    """What the mount must show: `files` rel -> dict(data, mode, mtime,
    uid, gid); `links` rel -> target; `dirs` rel -> mode.  `small` are the
    files that must be packed, `big` and `empty` those that must not be;
    `renamed` the packed files whose path changed after they were packed;
    `hardlinks` the two names of one small file."""

    def __init__(self):
        self.files = {}
        self.links = {}
        self.dirs = {}
        self.small = set()
        self.big = set()
        self.empty = set()
        self.renamed = set()
        self.hardlinks = ()
        self.packs = {}
        self.index = []

    def all_paths(self):
        return sorted(set(self.files) | set(self.links) | set(self.dirs))

    def rename(self, old, new):
        """Follows a rename of `old` (a file or a directory) to `new`."""
        def move(d):
            out = {}
            for k, v in d.items():
                if k == old or k.startswith(old + "/"):
                    k = new + k[len(old):]
                out[k] = v
            return out

        def move_set(s):
            return {new + k[len(old):] if k == old or k.startswith(old + "/")
                    else k for k in s}
        self.files, self.links, self.dirs = (move(self.files),
                                             move(self.links),
                                             move(self.dirs))
        moved = {k for k in move_set(self.small) if k not in self.small}
        self.small, self.big, self.empty = (move_set(self.small),
                                            move_set(self.big),
                                            move_set(self.empty))
        self.renamed = move_set(self.renamed) | moved
        self.hardlinks = tuple(sorted(move_set(set(self.hardlinks))))


class Writer:
    """Writes files through a mount, each with its own mode, owner and a
    unique mtime (set right after its last close, before the packer takes
    it about a second later)."""

    def __init__(self, m, tree):
        self.m = m
        self.t = tree
        self.n = 0

    def mkdir(self, rel):
        parts = rel.split("/")
        for k in range(1, len(parts) + 1):
            d = "/".join(parts[:k])
            if d not in self.t.dirs:
                os.mkdir(self.m.path(d))
                self.t.dirs[d] = DIR_MODES[len(self.t.dirs) % len(DIR_MODES)]

    def file(self, rel, data, kind):
        if "/" in rel:
            self.mkdir(rel.rsplit("/", 1)[0])
        p = self.m.path(rel)
        with open(p, "wb") as f:
            f.write(data)
        self.n += 1
        mode = FILE_MODES[self.n % len(FILE_MODES)]
        uid = gid = 0
        if self.n % 4 == 1:
            uid, gid = 1000 + self.n % 3, 100 + self.n % 2
            os.chown(p, uid, gid)
        os.chmod(p, mode)
        # unique to the nanosecond, and never a whole second
        mtime = MTIME_BASE + self.n * 1_000_003_007 + 123_457
        os.utime(p, ns=(mtime, mtime))
        self.t.files[rel] = {"data": data, "mode": mode, "mtime": mtime,
                             "uid": uid, "gid": gid}
        getattr(self.t, kind).add(rel)

    def symlink(self, rel, target):
        os.symlink(target, self.m.path(rel))
        self.t.links[rel] = target

    def finish_dirs(self):
        for d, mode in self.t.dirs.items():
            os.chmod(self.m.path(d), mode)


def build(m):
    """Moves a tree in through the mount `m` and lives in it; returns the
    Tree the mount must show afterwards."""
    t = Tree()
    w = Writer(m, t)
    gens = (prose, code, csv)
    # ~270 small text files of 1 byte to 3.5 KiB in nested directories
    for i in range(270):
        top = ("docs", "src/lib", "notes", "src/lib/deep/er")[i % 4]
        sub = "%s/d%d" % (top, i % 7) if i % 3 else top
        n = random.Random(i).choice((1, 9, 60, 300, 900, 1700, 2600, 3500))
        w.file("%s/f%03d.txt" % (sub, i), gens[i % 3](n, i), "small")
    w.file("tiny/zero-byte", b"\0", "small")
    w.file("tiny/one-byte", b"x", "small")
    # small binaries
    for i in range(16):
        w.file("bin/b%02d.dat" % i, binary(16 + 70 * i, 900 + i), "small")
    # identical contents in several places
    same = prose(1234, 4242)
    for rel in ("dups/one.txt", "dups/two.txt", "dups/sub/three.txt",
                "docs/same-as-dups.txt"):
        w.file(rel, same, "small")
    same_bin = binary(333, 77)
    for rel in ("dups/x.bin", "bin/also-x.bin"):
        w.file(rel, same_bin, "small")
    # genuinely empty files: empty they stay
    for rel in ("empty/e1", "empty/e2", "docs/d1/empty.txt",
                "src/lib/empty.c", "notes/.hidden-empty"):
        w.file(rel, b"", "empty")
    w.mkdir("empty/dir/nothing-here")
    # bigger files, never packed
    w.file("big/text-300k.txt", prose(300 * 1024, 5), "big")
    w.file("big/random-1m.bin", binary(1024 * 1024, 6), "big")
    w.file("big/mixed-100k.bin",
           binary(50 * 1024, 7) + code(50 * 1024, 8), "big")
    w.file("src/lib/big-module.c", code(150 * 1024, 9), "big")
    # a hard-linked pair of small files
    w.file("links/h1.txt", prose(700, 31), "small")
    w.mkdir("links/sub")
    os.link(m.path("links/h1.txt"), m.path("links/sub/h2.txt"))
    t.files["links/sub/h2.txt"] = t.files["links/h1.txt"]
    t.small.add("links/sub/h2.txt")
    t.hardlinks = ("links/h1.txt", "links/sub/h2.txt")
    # symlinks: to a small file, to a directory, dangling, absolute
    w.symlink("links/to-file", "../docs/f000.txt")
    w.symlink("links/to-dir", "../src/lib")
    w.symlink("links/dangling", "no/such/file")
    w.symlink("links/absolute", "/etc/hostname")
    w.finish_dirs()
    wait_packed(m, t.small)

    # live in it: rewrite a packed file (its path gets a second record),
    # move a packed file away and put a new one at its old path
    assert {"docs/d1/f008.txt", "docs/d2/f016.txt"} <= t.small
    w.file("docs/d1/f008.txt", prose(2222, 10001), "small")
    os.rename(m.path("docs/d2/f016.txt"), m.path("notes/moved-f016.txt"))
    t.rename("docs/d2/f016.txt", "notes/moved-f016.txt")
    w.file("docs/d2/f016.txt", csv(1500, 10002), "small")
    wait_packed(m, t.small)
    # rename a directory holding packed files (nested ones too)
    os.rename(m.path("src/lib"), m.path("src/library"))
    t.rename("src/lib", "src/library")
    os.rename(m.path("notes/d4"), m.path("docs/d1/notes-d4"))
    t.rename("notes/d4", "docs/d1/notes-d4")
    time.sleep(0.5)
    return t


def check_tree(mnt, t, mtime="ns", owner=True, eio=()):
    """Everything under the mount `mnt` as in `t`: names, contents, modes,
    mtimes ("ns", "s" or None: not kept), owners; the files in `eio` fail
    with EIO instead of returning bytes.  Returns a list of problems."""
    bad = []
    got = tree_paths(mnt)
    want = t.all_paths()
    if got != want:
        bad.append("names: missing %s, extra %s" % (
            sorted(set(want) - set(got))[:10],
            sorted(set(got) - set(want))[:10]))
    for rel, f in sorted(t.files.items()):
        p = os.path.join(mnt, rel)
        try:
            st = os.lstat(p)
        except OSError as e:
            bad.append("%s: lstat: %s" % (rel, e))
            continue
        if not stat.S_ISREG(st.st_mode):
            bad.append("%s: not a regular file (%o)" % (rel, st.st_mode))
            continue
        if rel in eio:
            try:
                with open(p, "rb") as fh:
                    data = fh.read()
                bad.append("%s: lost file read %d bytes (%r...), not EIO" % (
                    rel, len(data), data[:16]))
            except OSError as e:
                if e.errno != errno.EIO:
                    bad.append("%s: lost file: %s, not EIO" % (rel, e))
            continue
        try:
            with open(p, "rb") as fh:
                data = fh.read()
        except OSError as e:
            bad.append("%s: read: %s" % (rel, e))
            continue
        if data != f["data"]:
            bad.append("%s: %d bytes read, want %d (%s)" % (
                rel, len(data), len(f["data"]),
                "same length" if len(data) == len(f["data"]) else "differ"))
        if st.st_size != len(f["data"]):
            bad.append("%s: st_size %d, want %d" % (rel, st.st_size,
                                                     len(f["data"])))
        if stat.S_IMODE(st.st_mode) != f["mode"]:
            bad.append("%s: mode %o, want %o" % (rel, stat.S_IMODE(st.st_mode),
                                                 f["mode"]))
        if mtime == "ns" and st.st_mtime_ns != f["mtime"]:
            bad.append("%s: mtime %d, want %d" % (rel, st.st_mtime_ns,
                                                  f["mtime"]))
        if mtime == "s" and st.st_mtime_ns // 10**9 != f["mtime"] // 10**9:
            bad.append("%s: mtime %d s, want %d s" % (
                rel, st.st_mtime_ns // 10**9, f["mtime"] // 10**9))
        if owner and (st.st_uid, st.st_gid) != (f["uid"], f["gid"]):
            bad.append("%s: owner %d:%d, want %d:%d" % (
                rel, st.st_uid, st.st_gid, f["uid"], f["gid"]))
    for rel, target in sorted(t.links.items()):
        p = os.path.join(mnt, rel)
        try:
            if os.readlink(p) != target:
                bad.append("%s: symlink to %r, want %r" % (
                    rel, os.readlink(p), target))
        except OSError as e:
            bad.append("%s: readlink: %s" % (rel, e))
    for rel, mode in sorted(t.dirs.items()):
        p = os.path.join(mnt, rel)
        try:
            st = os.lstat(p)
        except OSError as e:
            bad.append("%s: lstat: %s" % (rel, e))
            continue
        if not stat.S_ISDIR(st.st_mode) or stat.S_IMODE(st.st_mode) != mode:
            bad.append("%s: directory mode %o, want dir %o" % (
                rel, st.st_mode, mode))
    return bad


def assert_tree(mnt, t, what, **kw):
    bad = check_tree(mnt, t, **kw)
    assert not bad, "%s: %d problems:\n  %s" % (what, len(bad),
                                                "\n  ".join(bad[:25]))


def named(out, backing, words=LOST):
    """The paths (relative to `backing`) fsck's output names on a line
    that says `words`."""
    pre = str(backing) + "/"
    return {line.split(": ", 1)[0][len(pre):]
            for line in out.splitlines()
            if line.startswith(pre) and words in line}


def unrepaired_lines(out, backing):
    return {rel for rel in named(out, backing)
            if any(line.startswith(str(backing) + "/" + rel + ": ") and
                   ("not repaired" in line or "failed" in line)
                   for line in out.splitlines())}


# ---- fixtures -----------------------------------------------------------

@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """BACKING of the tree, built once through a mount and unmounted; the
    Tree (with `packs`: sha256 of its packs and index, and `index`: its
    records) describes it.  Tests copy it before they touch anything."""
    base = tmp_path_factory.mktemp("original")
    m = Mount(base / "backing", base / "mnt", log=base / "daemon.log")
    m.start()
    try:
        t = build(m)
        m.stop()
    finally:
        m.cleanup()
    # what unmount left: every small file packed (a 1-byte hole with its
    # reference), every big or empty one not
    left = sorted(r for r in t.small if not is_packed(m.bpath(r)))
    assert not left, "not packed after unmount: %s" % left[:10]
    for rel in t.small:
        st = os.stat(m.bpath(rel))
        assert st.st_size == STUB_LEN and st.st_blocks == 0, \
            "%s: stub of %d bytes, %d blocks" % (rel, st.st_size,
                                                 st.st_blocks)
    for rel in t.big:
        assert not is_packed(m.bpath(rel)), rel
        assert os.stat(m.bpath(rel)).st_size > 3072, rel
    for rel in t.empty:
        assert os.stat(m.bpath(rel)).st_size == 0, rel
        with pytest.raises(OSError) as ei:
            os.getxattr(m.bpath(rel), XATTR)
        assert ei.value.errno == errno.ENODATA, rel
    t.packs = pack_hashes(m.backing)
    assert any(k.endswith(".sqp") for k in t.packs) and "index" in t.packs, \
        sorted(t.packs)
    t.index = index_records(m.backing)
    recorded = {p for p, _ in t.index}
    # the index knows every packed file by the path it had when packed
    unrecorded = sorted(r for r in t.small
                        if r not in recorded and r not in t.renamed and
                        r not in t.hardlinks)
    assert not unrecorded, "packed files without a record in the pack " \
        "index: %s" % unrecorded[:10]
    assert any(h in recorded for h in t.hardlinks), t.hardlinks
    r = run_fsck(m.backing)
    assert r.returncode == 0, "fsck of the original: %s %s" % (r.stdout,
                                                               r.stderr)
    t.backing = m.backing
    return t


def copy_rsync_a(src, dst, tmp):
    subprocess.run(["rsync", "-a", str(src) + "/", str(dst) + "/"],
                   check=True)


def copy_tar(src, dst, tmp):
    archive = os.path.join(str(tmp), "backing.tar")
    subprocess.run(["tar", "-C", str(src), "-cf", archive, "."], check=True)
    os.mkdir(dst)
    subprocess.run(["tar", "-C", str(dst), "-xf", archive], check=True)
    os.unlink(archive)


def copy_cp_r(src, dst, tmp):
    subprocess.run(["sh", "-c", 'umask 022 && exec cp -r "$0" "$1"',
                    str(src), str(dst)], check=True)


# tool: (copy, mtimes kept ("ns", "s", None), owners kept)
TOOLS = {
    "rsync_a": (copy_rsync_a, "ns", True),
    # GNU tar's default format keeps whole seconds
    "tar_no_xattrs": (copy_tar, "s", True),
    "cp_r": (copy_cp_r, None, False),
}


def snapshot_original(original, tmp_path):
    """A private copy of the original BACKING, xattrs, holes and hard links
    kept, so that tests share nothing."""
    src = tmp_path / "backing"
    subprocess.run(["cp", "-a", "--reflink=never", original.backing,
                    str(src)], check=True)
    assert all(is_packed(os.path.join(src, r)) for r in original.small)
    return src


# ---- tests --------------------------------------------------------------

@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_copy_without_xattrs(original, tool, make_mount, tmp_path):
    t = original
    copy, kept_mtime, kept_owner = TOOLS[tool]
    src = snapshot_original(t, tmp_path)
    dst = tmp_path / ("copy-" + tool)
    copy(src, dst, tmp_path)
    cp = str(dst)

    # the copy lost every reference: each packed file is a bare 1-byte stub
    lost = set(t.small)
    for rel in sorted(lost):
        p = os.path.join(cp, rel)
        assert os.stat(p).st_size == STUB_LEN, rel
        with pytest.raises(OSError) as ei:
            os.getxattr(p, XATTR)
        assert ei.value.errno == errno.ENODATA, (rel, ei.value)
    assert pack_hashes(cp) == t.packs, "%s did not copy the packs" % tool
    assert tree_paths(cp) == t.all_paths()

    # fsck names exactly the lost files, never an empty one
    r = run_fsck(cp)
    assert r.returncode == 1, (r.returncode, r.stdout[-2000:], r.stderr)
    got = named(r.stdout, cp)
    assert got == lost, "fsck named %d, lost %d; not named: %s; named " \
        "wrongly: %s" % (len(got), len(lost), sorted(lost - got)[:10],
                         sorted(got - lost)[:10])

    # a mount of the copy: EIO for each lost file, the rest as it was
    m = make_mount(backing=dst, mnt=tmp_path / "lost-mnt", name="lost")
    assert_tree(m.mnt, t, "mount of the %s copy" % tool, mtime=kept_mtime,
                owner=kept_owner, eio=lost)
    m.stop()
    log = m.read_log()
    # (the names of one inode, hard links kept by tar: any of them)
    real = os.path.realpath(cp)
    logged = {line.split(real + "/", 1)[1].split(": ", 1)[0]
              for line in log.splitlines()
              if LOST in line and real + "/" in line}
    inodes = {}
    for rel in lost:
        st = os.stat(os.path.join(cp, rel))
        inodes.setdefault((st.st_dev, st.st_ino), set()).add(rel)
    unlogged = sorted(min(names) for names in inodes.values()
                      if not names & logged)
    assert not unlogged, "the daemon's log does not name %d lost files " \
        "(%s); log:\n%s" % (len(unlogged), unlogged[:5], log[-2000:])
    assert logged <= lost, "logged as lost: %s" % sorted(logged - lost)

    # --reclaim frees nothing while any file is lost
    r = run_fsck(cp, "--reclaim")
    assert r.returncode != 0, ("--reclaim with lost files exited 0",
                               r.stdout[-2000:], r.stderr)
    assert pack_hashes(cp) == t.packs, \
        "--reclaim changed the packs while files were lost: " + r.stdout[-2000:]
    assert all(os.stat(os.path.join(cp, rel)).st_size == STUB_LEN
               for rel in lost)

    # --repair: from the index, by path, else by the mtime to the ns
    recorded = {p for p, _ in t.index}
    r = run_fsck(cp, "--repair")
    out = r.stdout
    not_repaired = unrepaired_lines(out, cp)
    repaired = named(out, cp, "repaired") - not_repaired
    # Every rename happened through the mount, and the index follows
    # renames (move records): nothing may stay, whatever the tool kept,
    # but a hard link's other name when the copy split the pair and kept
    # no mtimes (cp -r): the index records the name a file was packed
    # under, and nothing else tells the split-off copy's bytes.
    may_stay = set()
    if tool == "cp_r":
        may_stay = {rel for rel in t.hardlinks if rel not in recorded}
    assert repaired | not_repaired == lost, \
        "--repair did not name: %s; named wrongly: %s" % (
            sorted(lost - repaired - not_repaired)[:10],
            sorted((repaired | not_repaired) - lost)[:10])
    assert not_repaired <= may_stay, \
        "--repair of the %s copy left %s unrepaired:\n%s" % (
            tool, sorted(not_repaired - may_stay), out[-3000:])
    if not_repaired:
        assert r.returncode == 1, (r.returncode, out[-2000:], r.stderr)
    else:
        assert r.returncode == 0, (r.returncode, out[-2000:], r.stderr)
    for rel in repaired:
        p = os.path.join(cp, rel)
        assert os.stat(p).st_size > STUB_LEN and not is_packed(p), rel
    assert tree_paths(cp) == t.all_paths(), "--repair left files behind"

    def check_copy(stage):
        """fsck exits 1 exactly while files stay unrepaired, and a mount
        shows the tree (EIO for those)."""
        r = run_fsck(cp)
        assert r.returncode == (1 if not_repaired else 0), (
            stage, r.returncode, r.stdout[-2000:], r.stderr)
        m = make_mount(backing=dst, mnt=tmp_path / (stage + "-mnt"),
                       name=stage)
        assert_tree(m.mnt, t, "mount of the %s %s copy" % (stage, tool),
                    mtime=kept_mtime, owner=kept_owner, eio=not_repaired)
        m.stop()

    r = run_fsck(cp)
    assert named(r.stdout, cp) == not_repaired, r.stdout[-2000:]
    check_copy("repaired")

    # --reclaim after the repair: frees what it may, breaks nothing
    before = pack_hashes(cp)
    r = run_fsck(cp, "--reclaim")
    if not_repaired:
        assert r.returncode != 0 and pack_hashes(cp) == before, (
            r.returncode, r.stdout[-2000:], r.stderr)
    else:
        assert r.returncode == 0, (r.returncode, r.stdout[-2000:], r.stderr)
    check_copy("reclaimed")
    print("%s: %d lost, %d repaired, %d left unrepaired (e.g. %s)" % (
        tool, len(lost), len(repaired), len(not_repaired),
        sorted(not_repaired)[:3]))


def test_original_backing_unchanged_by_copies(original, make_mount,
                                              tmp_path):
    """The copy tools only read BACKING: its references, packs and index
    stay as they were, and it mounts with everything identical."""
    t = original
    for name, (copy, _, _) in sorted(TOOLS.items()):
        copy(t.backing, tmp_path / name, tmp_path)
    assert pack_hashes(t.backing) == t.packs
    left = sorted(r for r in t.small if not is_packed(
        os.path.join(t.backing, r)))
    assert not left, "the original lost references: %s" % left[:10]
    r = run_fsck(t.backing)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr)
    m = make_mount(backing=t.backing, mnt=tmp_path / "mnt", name="original")
    assert_tree(m.mnt, t, "mount of the original")
    a, b = (os.stat(m.path(h)) for h in t.hardlinks)
    assert a.st_ino == b.st_ino and a.st_nlink == 2, "hard link pair broken"
    m.stop()


@pytest.mark.parametrize("tool", ["rsync_a", "tar_no_xattrs"])
def test_repair_never_gives_a_file_another_files_bytes(make_mount, tmp_path,
                                                        tool):
    """Files renamed onto a path that has a record of another packed file
    (log rotation, two files swapped through a temporary name): the copy
    kept mtimes, so --repair can tell the record is not this file's.  Each
    file of the repaired copy reads as the original, or, left unrepaired
    (exit 1, named), fails with EIO: never with another file's bytes."""
    copy, kept_mtime, _ = TOOLS[tool]
    t = Tree()
    m = make_mount(backing=tmp_path / "backing", mnt=tmp_path / "mnt",
                   name="orig")
    w = Writer(m, t)
    w.file("var/log/app.log.1", prose(900, 1), "small")
    w.file("var/log/app.log", prose(900, 2), "small")
    w.file("home/a.txt", code(700, 3), "small")
    w.file("home/b.txt", csv(700, 4), "small")
    w.finish_dirs()
    wait_packed(m, t.small)
    # rotate: app.log.1 -> app.log.2, app.log -> app.log.1, a new app.log
    for old, new in (("var/log/app.log.1", "var/log/app.log.2"),
                     ("var/log/app.log", "var/log/app.log.1")):
        os.rename(m.path(old), m.path(new))
        t.rename(old, new)
    w.file("var/log/app.log", prose(900, 5), "small")
    # swap a and b through a temporary name
    for old, new in (("home/a.txt", "home/tmp"), ("home/b.txt", "home/a.txt"),
                     ("home/tmp", "home/b.txt")):
        os.rename(m.path(old), m.path(new))
        t.rename(old, new)
    wait_packed(m, t.small)
    m.stop()
    dst = tmp_path / "copy"
    copy(m.backing, dst, tmp_path)
    cp = str(dst)
    assert all(os.stat(os.path.join(cp, r)).st_size == STUB_LEN
               for r in t.small)

    r = run_fsck(cp, "--repair")
    not_repaired = unrepaired_lines(r.stdout, cp)
    assert r.returncode == (1 if not_repaired else 0), (r.returncode,
                                                       r.stdout, r.stderr)
    c = make_mount(backing=dst, mnt=tmp_path / "copy-mnt", name="copy")
    bad = check_tree(c.mnt, t, mtime=kept_mtime, eio=not_repaired)
    c.stop()
    assert not bad, "after fsck --repair of the %s copy (exit %d):\n  %s" \
        "\nfsck said:\n%s" % (tool, r.returncode, "\n  ".join(bad),
                              r.stdout)


def write_packed(m, name, data):
    with open(m.path(name), "wb") as f:
        f.write(data)
    assert wait_for(lambda: is_packed(m.bpath(name)), timeout=PACK_WAIT), \
        name + " never packed"


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_repair_after_renames_over_packed_files(make_mount, tmp_path, tool):
    """A packed file renamed over another packed file that lives on under
    a second name, and two packed files swapped by a mount that does not
    pack (-o nopack): the index follows both (a rename drops the records
    of what it replaced), so a repair gives every name its own bytes."""
    m = make_mount()
    write_packed(m, "b", b"B" * 8)
    write_packed(m, "a", b"A" * 8)
    os.link(m.path("a"), m.path("c"))
    os.rename(m.path("b"), m.path("a"))  # a: B's; c: A's, still live
    write_packed(m, "x", b"X" * 9)
    write_packed(m, "y", b"Y" * 9)
    m.stop()
    m.opts.append("nopack")
    m.start()
    os.rename(m.path("x"), m.path("t"))
    os.rename(m.path("y"), m.path("x"))
    os.rename(m.path("t"), m.path("y"))
    m.stop()
    want = {"a": b"B" * 8, "c": b"A" * 8, "x": b"Y" * 9, "y": b"X" * 9}
    dst = tmp_path / "copy"
    TOOLS[tool][0](m.bpath(), dst, tmp_path)
    r = run_fsck(dst, "--repair")
    out = r.stdout + r.stderr
    c = make_mount(backing=dst, mnt=tmp_path / "copy-mnt", name="copy")
    for name, data in want.items():
        try:
            with open(c.path(name), "rb") as f:
                got = f.read()
        except OSError as e:
            # unrepaired (the hard link's other name after cp -r): named,
            # and EIO, never another file's bytes
            assert e.errno == errno.EIO and name in out, (name, e, out)
            continue
        assert got == data, "%s reads %r after --repair:\n%s" % (
            name, got, out)
