"""Inode numbers (issue "Correctness first", items 1 and 2).

tar, cp -a and rsync -H find the hard links of a tree by (st_dev, st_ino):
a file whose number they have seen before is stored or made as a link to
the earlier one.  So the number the mount shows must be the same on every
path that reports it, for every link of a file, and no two different live
files may ever share it, even after the kernel forgot one of them (under
memory pressure, drop_caches, or the daemon's own pruning under a low
open-file limit, fs/prune.c) and a new file came in its place.  squeezefs
shows BACKING's own number: st_ino on the mount equals the backing
object's st_ino (a packed file's backing object is its own empty
container, so the same holds for it), from stat, lstat, readdir (d_ino),
readdirplus, a directory read again from an offset, and after a remount.

The trees of tar, cp -a and rsync -aH taken under a low open-file limit
while the kernel's caches are dropped over and over must have exactly the
source's contents and hard links; and creating and removing tens of
thousands of hard-linked files under that limit must never fail with
EMFILE."""

import ctypes
import os
import random
import resource
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sqfs_util import (PACK_WAIT, is_packed, read_file,  # noqa: E402
                       sanitizer_runtimes, wait_for, write_unbuffered)

FD_LIMIT = 2000
NO_FDS = "out of file descriptors"


def lower_fd_limit(m, limit=FD_LIMIT):
    resource.prlimit(m.proc.pid, resource.RLIMIT_NOFILE, (limit, limit))
    time.sleep(1.5)  # the daemon reads its limit again every second


def check_no_fd_exhaustion(m):
    log = m.read_log()
    assert NO_FDS not in log, log[-2000:]


# ---- readdir with telldir/seekdir (Python has no seekdir) ----------------

class _Dirent(ctypes.Structure):  # glibc's struct dirent on 64-bit Linux
    _fields_ = [("d_ino", ctypes.c_uint64), ("d_off", ctypes.c_int64),
                ("d_reclen", ctypes.c_ushort), ("d_type", ctypes.c_ubyte),
                ("d_name", ctypes.c_char * 256)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.opendir.argtypes = [ctypes.c_char_p]
_libc.opendir.restype = ctypes.c_void_p
_libc.readdir.argtypes = [ctypes.c_void_p]
_libc.readdir.restype = ctypes.POINTER(_Dirent)
_libc.telldir.argtypes = [ctypes.c_void_p]
_libc.telldir.restype = ctypes.c_long
_libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
_libc.rewinddir.argtypes = [ctypes.c_void_p]
_libc.closedir.argtypes = [ctypes.c_void_p]


def readdir_seeking(path):
    """Reads the directory `path` through one stream three times: whole,
    again from the telldir() position of its middle entry (seekdir), and
    again after rewinddir().  Returns three lists of (name, d_ino), "."
    and ".." left out."""
    def read_rest(dirp, where=None):
        out = []
        while True:
            pos = _libc.telldir(dirp)
            ctypes.set_errno(0)
            de = _libc.readdir(dirp)
            if not de:
                assert ctypes.get_errno() == 0, os.strerror(ctypes.get_errno())
                return out
            name = de.contents.d_name.decode()
            if name not in (".", ".."):
                out.append((name, de.contents.d_ino))
                if where is not None:
                    where.append(pos)

    dirp = _libc.opendir(os.fsencode(path))
    assert dirp, os.strerror(ctypes.get_errno())
    try:
        pos = []
        whole = read_rest(dirp, pos)
        mid = len(whole) // 2
        _libc.seekdir(dirp, pos[mid])
        tail = read_rest(dirp)
        assert [n for n, _ in tail] == [n for n, _ in whole[mid:]], \
            "seekdir: %s..., expected %s..." % (tail[:3], whole[mid:mid + 3])
        _libc.rewinddir(dirp)
        again = read_rest(dirp)
    finally:
        _libc.closedir(dirp)
    return whole, tail, again


# ---- item 1: the number is BACKING's, on every path ----------------------

def make_ino_tree(m):
    """A tree of every kind of object; returns the relative paths of the
    small files that get packed."""
    os.makedirs(m.path("d", "e", "f"))
    os.mkdir(m.path("many"))
    small = []
    # several READDIR replies, so that seekdir goes to the daemon
    for k in range(300):
        p = os.path.join("many", "small-file-with-a-long-name-%04d" % k)
        write_unbuffered(m.path(p), b"small %d\n" % k * (1 + k % 5))
        small.append(p)
    for k in range(5):
        os.mkdir(m.path("many", "sub%d" % k))
        os.symlink("small-file-with-a-long-name-%04d" % k,
                   m.path("many", "link%d" % k))
        os.link(m.path(small[k]), m.path("many", "hard%d" % k))
    write_unbuffered(m.path("d", "big"), random.Random(1).randbytes(300000))
    write_unbuffered(m.path("d", "empty"), b"")
    write_unbuffered(m.path("d", "e", "f", "deep"), b"deep\n")
    small.append("d/e/f/deep")
    os.link(m.path("d", "big"), m.path("d", "e", "big-link"))
    os.link(m.path(small[7]), m.path("d", "e", "f", "small-link"))
    os.symlink("../d/big", m.path("d", "e", "sym"))
    os.symlink("/nowhere/at/all", m.path("dangling"))
    return small


def check_inos(m, where):
    """Every object's st_ino from lstat, stat and readdir (d_ino) equals its
    backing object's, also for what a listing brought in (readdirplus on a
    cold mount) and for directories read again from an offset."""
    bad = []

    def expect(rel, got, how):
        want = os.lstat(m.bpath(rel)).st_ino
        if got != want:
            bad.append("%s %s: %d, BACKING %d" % (how, rel or "/", got, want))

    def walk(reldir):
        with os.scandir(m.path(reldir)) as it:  # listed before any lookup
            entries = list(it)
        for e in entries:
            rel = os.path.join(reldir, e.name)
            expect(rel, e.inode(), "d_ino")
            expect(rel, e.stat(follow_symlinks=False).st_ino, "listed, lstat")
        for e in entries:
            rel = os.path.join(reldir, e.name)
            expect(rel, os.lstat(m.path(rel)).st_ino, "lstat")
            if not e.is_symlink():
                expect(rel, os.stat(m.path(rel)).st_ino, "stat")
        for e in os.scandir(m.path(reldir)):  # listed again
            expect(os.path.join(reldir, e.name), e.inode(), "d_ino again")
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                walk(os.path.join(reldir, e.name))

    expect("", os.stat(m.mnt).st_ino, "stat")
    expect("", os.lstat(m.mnt).st_ino, "lstat")
    walk("")
    for rel in ("many", "d/e"):
        whole, tail, again = readdir_seeking(m.path(rel))
        for how, entries in (("d_ino", whole), ("d_ino after seekdir", tail),
                             ("d_ino after rewinddir", again)):
            for name, ino in entries:
                expect(os.path.join(rel, name), ino, how)
    assert not bad, "%s: %d wrong inode numbers:\n%s" % (
        where, len(bad), "\n".join(bad[:20]))


def test_ino_is_the_backing_ino(make_mount):
    m = make_mount()
    small = make_ino_tree(m)
    check_inos(m, "just written")
    if m.packs():  # nopack: the small files keep their containers
        for rel in small:
            assert wait_for(lambda: is_packed(m.bpath(rel)),
                            timeout=PACK_WAIT), "%s never packed" % rel
        check_inos(m, "packed")
    # hard links share the number, symlinks are their own object
    assert os.stat(m.path("d", "big")).st_ino == \
        os.stat(m.path("d", "e", "big-link")).st_ino
    assert os.stat(m.path("many", "hard3")).st_ino == \
        os.stat(m.path(small[3])).st_ino
    assert os.lstat(m.path("many", "link3")).st_ino != \
        os.stat(m.path("many", "link3")).st_ino
    assert os.stat(m.path("many", "link3")).st_ino == \
        os.stat(m.path(small[3])).st_ino
    before = {rel: os.lstat(m.path(rel)).st_ino for rel in small}
    m.remount()
    check_inos(m, "after remount")
    after = {rel: os.lstat(m.path(rel)).st_ino for rel in small}
    assert after == before


def test_ino_kept_over_a_files_life(make_mount):
    """Writing (which unpacks a packed file), truncating, chmod, rename and
    a new link leave the number as it was."""
    m = make_mount()
    os.mkdir(m.path("a"))
    os.mkdir(m.path("b"))
    write_unbuffered(m.path("a", "f"), b"a small file\n")
    write_unbuffered(m.path("a", "g"), random.Random(2).randbytes(200000))
    if m.packs():  # nopack: a/f keeps its container
        assert wait_for(lambda: is_packed(m.bpath("a", "f")),
                        timeout=PACK_WAIT)
    ino_f = os.stat(m.path("a", "f")).st_ino
    ino_g = os.stat(m.path("a", "g")).st_ino

    def same(rel, ino, when):
        got = os.stat(m.path(rel)).st_ino
        want = os.lstat(m.bpath(rel)).st_ino
        assert got == ino == want, "%s %s: %d, before %d, BACKING %d" % (
            when, rel, got, ino, want)

    same("a/f", ino_f, "packed")
    same("a/g", ino_g, "written")
    with open(m.path("a", "f"), "r+b") as f:
        f.seek(5)
        f.write(b"X" * 5000)
    same("a/f", ino_f, "written again (unpacked)")
    os.truncate(m.path("a", "g"), 1000)
    os.chmod(m.path("a", "g"), 0o600)
    same("a/g", ino_g, "truncated and chmod")
    os.rename(m.path("a", "f"), m.path("b", "f2"))
    os.rename(m.path("a", "g"), m.path("b", "g2"))
    os.link(m.path("b", "f2"), m.path("a", "f3"))
    for rel, ino in (("b/f2", ino_f), ("a/f3", ino_f), ("b/g2", ino_g)):
        same(rel, ino, "renamed or linked")
    m.remount()
    for rel, ino in (("b/f2", ino_f), ("a/f3", ino_f), ("b/g2", ino_g)):
        same(rel, ino, "after remount")


def test_live_files_never_share_a_number(make_mount):
    """Files the kernel forgot (the daemon prunes them under a low fd
    limit) and files created after them, and a file unlinked while open:
    every number stays its file's own."""
    m = make_mount()
    lower_fd_limit(m, 512)
    os.mkdir(m.path("t"))
    write_unbuffered(m.path("t", "victim"), b"unlinked while open\n")
    fd = os.open(m.path("t", "victim"), os.O_RDONLY)
    try:
        ino_victim = os.fstat(fd).st_ino
        os.unlink(m.path("t", "victim"))
        seen = {}
        for k in range(1500):
            p = m.path("t", "f%04d" % k)
            write_unbuffered(p, b"%d\n" % k)
            seen.setdefault(os.lstat(p).st_ino, []).append(k)
            if k % 300 == 299:
                for j in range(0, k, 7):  # look up older ones again
                    ino = os.lstat(m.path("t", "f%04d" % j)).st_ino
                    seen.setdefault(ino, [])
                    if j not in seen[ino]:
                        seen[ino].append(j)
        shared = {i: ks for i, ks in seen.items() if len(ks) > 1}
        assert not shared, "files sharing a number: %s" % list(
            shared.values())[:10]
        assert ino_victim not in seen, \
            "a new file got the number of an unlinked open one"
        assert os.fstat(fd).st_ino == ino_victim
        assert os.read(fd, 100) == b"unlinked while open\n"
    finally:
        os.close(fd)
    check_no_fd_exhaustion(m)


# ---- item 2: tar, cp -a, rsync -aH while the kernel forgets --------------

class DropCaches:
    """Writes 3 to /proc/sys/vm/drop_caches at once and then every
    `period` seconds in a thread until stopped: each time the kernel
    forgets every inode nothing holds (FORGET to the daemon)."""

    PATH = "/proc/sys/vm/drop_caches"

    def __init__(self, period=0.2):
        self.period = period
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while True:
            with open(self.PATH, "w") as f:
                f.write("3")
            if self.stop.wait(self.period):
                return

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def drop_caches_writable():
    try:
        with open(DropCaches.PATH, "w") as f:
            f.write("3")
        return True
    except OSError:
        return False


NPAIRS = 3000
NSINGLES = 1000
NSUB = 8


def pair_content(k):
    if k % 97 == 0:  # a few that are not packed
        return random.Random(k).randbytes(20000)
    return b"pair %d of the link test\n" % k * (1 + k % 9)


def single_content(k):
    return b"single %d\n" % k * (1 + k % 4)


def make_link_tree(top):
    """Returns ({relpath: content}, {frozenset of the relpaths of a pair})."""
    files = {}
    pairs = set()
    for s in range(NSUB):
        os.mkdir(os.path.join(top, "d%d" % s))
    for k in range(NPAIRS):
        a = "d%d/a%05d" % (k % NSUB, k)
        if k % 4 == 0:  # the second name in another directory
            b = "d%d/x%05d" % ((k + 3) % NSUB, k)
        else:
            b = "d%d/b%05d" % (k % NSUB, k)
        data = pair_content(k)
        write_unbuffered(os.path.join(top, a), data)
        os.link(os.path.join(top, a), os.path.join(top, b))
        files[a] = files[b] = data
        pairs.add(frozenset((a, b)))
    for k in range(NSINGLES):
        rel = "d%d/s%05d" % (k % NSUB, k)
        files[rel] = single_content(k)
        write_unbuffered(os.path.join(top, rel), files[rel])
    return files, pairs


def check_copy(root, files, pairs, what):
    found = {}
    groups = {}
    for dirpath, _dirs, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            found[rel] = p
            groups.setdefault((st.st_dev, st.st_ino), set()).add(rel)
    missing = sorted(set(files) - set(found))
    extra = sorted(set(found) - set(files))
    assert not missing and not extra, "%s: missing %s, extra %s" % (
        what, missing[:10], extra[:10])
    linked = {frozenset(g) for g in groups.values() if len(g) > 1}
    assert linked == pairs, (
        "%s: hard links differ from the source's: %d groups not in the "
        "source (e.g. %s), %d source pairs not linked (e.g. %s)" % (
            what, len(linked - pairs),
            [sorted(g) for g in list(linked - pairs)[:5]],
            len(pairs - linked),
            [sorted(g) for g in list(pairs - linked)[:5]]))
    wrong = [r for r in sorted(files) if read_file(found[r]) != files[r]]
    assert not wrong, "%s: %d files with wrong contents: %s" % (
        what, len(wrong), wrong[:10])


def run(cmd):
    """Runs `cmd`; returns None, or what went wrong."""
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if r.returncode == 0:
        return None
    return "%s exited %d:\n%s%s" % (" ".join(cmd), r.returncode,
                                    r.stdout[-1500:], r.stderr[-1500:])


def test_tar_cp_rsync_keep_hard_links_while_forgetting(make_mount, tmp_path):
    if not drop_caches_writable():
        pytest.skip("/proc/sys/vm/drop_caches not writable")
    m = make_mount()
    lower_fd_limit(m)
    src = m.path("src")
    os.mkdir(src)
    files, pairs = make_link_tree(src)
    # Unmounting packs what is queued: nothing changes a ctime under tar
    # ("file changed as we read it"), and the tree starts cold.
    m.remount()
    lower_fd_limit(m)
    out = str(tmp_path / "out")
    os.mkdir(out)
    tar = os.path.join(out, "src.tar")
    copies = (
        ("tar", ["tar", "-cf", tar, "-C", m.mnt, "src"],
         os.path.join(out, "tar", "src")),
        ("cp -a", ["cp", "-a", src, os.path.join(out, "cp")],
         os.path.join(out, "cp")),
        ("rsync -aH", ["rsync", "-aH", src + "/", os.path.join(out, "rsync")],
         os.path.join(out, "rsync")))
    problems = []
    for what, cmd, root in copies:
        with DropCaches():
            err = run(cmd)
        if err is None and what == "tar":
            os.mkdir(os.path.join(out, "tar"))
            err = run(["tar", "-xf", tar, "-C", os.path.join(out, "tar")])
        try:
            if err:
                raise AssertionError(err)
            check_copy(root, files, pairs, what)
        except AssertionError as e:
            problems.append(str(e))
    log = m.read_log()
    if NO_FDS in log:
        problems.append("daemon log: " + log[-1000:])
    assert not problems, "\n\n".join(problems)


# ---- item 2: many hard-linked files under a low fd limit -----------------

NLINKED = 25000
NDIRS = 50


def test_create_and_remove_many_hard_linked_files(make_mount):
    """25,000 files with a second name each (50,000 names over 50
    directories), then all removed, with the open-file limit at 2,000:
    every call succeeds and it stays fast."""
    m = make_mount()
    lower_fd_limit(m)
    top = m.path("top")
    os.mkdir(top)
    dirs = [os.path.join(top, "d%02d" % d) for d in range(NDIRS)]
    t0 = time.monotonic()
    for d in dirs:
        os.mkdir(d)
    step = "create"
    k = 0
    try:
        for k in range(NLINKED):
            a = os.path.join(dirs[k % NDIRS], "a%05d" % k)
            step = "create"
            fd = os.open(a, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            step = "write"
            os.write(fd, b"%d\n" % k)
            os.close(fd)
            step = "link"
            os.link(a, os.path.join(dirs[k % NDIRS], "b%05d" % k))
        t1 = time.monotonic()
        for k in range(NLINKED):
            d = dirs[k % NDIRS]
            step = "unlink"
            os.unlink(os.path.join(d, "a%05d" % k))
            os.unlink(os.path.join(d, "b%05d" % k))
        step = "rmdir"
        for d in dirs:
            os.rmdir(d)
    except OSError as e:
        raise AssertionError("%s of file %d failed: %s\n%s" % (
            step, k, e, m.read_log()[-1000:]))
    t2 = time.monotonic()
    assert os.listdir(top) == []
    check_no_fd_exhaustion(m)
    print("created and linked in %.1f s, removed in %.1f s" % (
        t1 - t0, t2 - t1))
    # About 30 s here (100-130 s under ASan on a loaded machine): a bound
    # that leaves room for a busy machine but not for requests waiting on
    # the pruner or a cost growing with the number of inodes.
    bound = 480 if sanitizer_runtimes() else 120
    assert t2 - t0 < bound, "took %.0f s (created and linked in %.0f s)" % (
        t2 - t0, t1 - t0)
