"""The statistics database BACKING/.squeezefs/stats.db (docs/STATS.md,
engine/track.h) through a real mount.

(A) The `files` rows agree with the containers after rename (of files and
of a directory holding files), hard link, unlink of one link and of the
last one, rename over a file, truncate, unmount and remount: every regular
file of BACKING (outside .squeezefs/) has exactly one row, whose id is its
container's inode number, whose logical_bytes is the size seen through the
mount and whose path is NULL or one of its names; no row names a file
that does not exist.

(B) stats.db deleted, truncated (to half its size, or to nothing),
filled with garbage, or locked by another process, before mounting and
while mounted: every file operation still works, the log says what
happened in one line (not one per flush), and once the problem is gone
the statistics come back: after unmount stats.db is a sound SQLite
database whose rows agree with the containers, as in (A).

Statistics are flushed every second here (-o stats_flush=1; 5 s by
default) and at unmount,
so the rows are compared after m.stop() or after waiting for a flush.
The database is read with Python's sqlite3, as a user would read it."""

import os
import random
import re
import sqlite3
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sqfs_util import (read_file, skip_under, wait_for,  # noqa: E402
                       words_text,
                       wait_packed, write_file)

DB = os.path.join(".squeezefs", "stats.db")
FLUSH_SECS = 1          # -o stats_flush=1 on every mount here
BUSY_SECS = 2           # SQ_STATS_BUSY_MS_DEFAULT

# engine/track.c's log lines
MSG_NEW = "statistics: new stats.db; filling it from BACKING"
MSG_REMOVED = ("statistics: stats.db was removed or replaced while "
               "mounted; making it anew")
MSG_DAMAGED = "statistics: stats.db was damaged ("
MSG_LOCKED = "statistics: stats.db is locked by another process"
DAMAGED_RE = re.compile(r"stats\.db was damaged \((.*)\), moved to "
                        r"\.squeezefs/(stats\.db\.damaged-(\d+)(-\d+)?); "
                        r"rebuilding it from BACKING")

WORDS = ("statistics row inode container rename link unlink truncate "
         "flush settle pack codec block hot cold squeeze lorem ipsum "
         "dolor sit amet").split()


def text(n, seed):
    """n bytes of compressible, non-repeating text."""
    return words_text(n, seed, WORDS)


def noise(n, seed):
    """n bytes that do not compress."""
    return random.Random(seed).randbytes(n)


# ---- reading stats.db and BACKING ----------------------------------------

def db_path(m):
    return m.bpath(DB)


def file_id(ino):
    """files.id of a container of inode number `ino` (signed 64-bit)."""
    return ino - (1 << 64) if ino >= 1 << 63 else ino


def query(m, sql, args=()):
    """Rows of `sql` on the Mount `m`'s stats.db, opened read-only (also
    fine while the daemon has it open: WAL)."""
    c = sqlite3.connect("file:%s?mode=ro" % db_path(m), uri=True,
                        timeout=10)
    try:
        return c.execute(sql, args).fetchall()
    finally:
        c.close()


def quick_check(m):
    """PRAGMA quick_check's answer on stats.db, or the error opening or
    reading it raised."""
    try:
        return "; ".join(r[0] for r in query(m, "PRAGMA quick_check"))
    except sqlite3.Error as e:
        return "sqlite3 error: %s" % e


def file_rows(m):
    """id -> (path, logical_bytes) of every row of `files`."""
    return {r[0]: (r[1], r[2]) for r in
            query(m, "SELECT id, path, logical_bytes FROM files")}


def mount_sizes(m):
    """Relative name -> st_size of every regular file seen through the
    mount."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(m.mnt):
        for n in filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            if os.path.stat.S_ISREG(st.st_mode):
                out[os.path.relpath(p, m.mnt)] = st.st_size
    return out


def backing_files(m):
    """st_ino -> set of names (relative to BACKING) of every regular file
    of BACKING outside the top-level .squeezefs."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(m.backing):
        if dirpath == m.backing and ".squeezefs" in dirnames:
            dirnames.remove(".squeezefs")
        for n in filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            if os.path.stat.S_ISREG(st.st_mode):
                out.setdefault(st.st_ino, set()).add(
                    os.path.relpath(p, m.backing))
    return out


def row_problems(m, sizes, exact_path=()):
    """What is wrong with the `files` rows of the Mount `m` (unmounted, or
    flushed) against its containers: a list of strings, empty when they
    agree.  `sizes`: name -> size seen through the mount (mount_sizes());
    `exact_path`: names of files of one link whose row must name them (not
    NULL)."""
    inodes = backing_files(m)
    try:
        rows = file_rows(m)
    except sqlite3.Error as e:
        return ["cannot read the files table: %s" % e]
    names = set()
    for ns in inodes.values():
        names |= ns
    probs = []
    if names != set(sizes):
        probs.append("BACKING has files %s the mount does not show, the "
                     "mount %s BACKING has not" % (
                         sorted(names - set(sizes)),
                         sorted(set(sizes) - names)))
    by_id = {file_id(ino): ns for ino, ns in inodes.items()}
    for fid, ns in sorted(by_id.items(), key=lambda kv: min(kv[1])):
        label = "/".join(sorted(ns))
        if fid not in rows:
            probs.append("no row for %s (inode %d)" % (label, fid))
            continue
        path, logical = rows[fid]
        want = {sizes.get(n) for n in ns}
        if len(want) != 1 or logical not in want:
            probs.append("row of %s (inode %d): logical_bytes %s, the "
                         "mount says %s" % (label, fid, logical,
                                            sorted(want, key=str)))
        if path is not None and path not in ns:
            probs.append("row of %s (inode %d): path %r is none of its "
                         "names" % (label, fid, path))
        for n in exact_path:
            if n in ns and path != n:
                probs.append("row of %s (inode %d): path %r, want %r"
                             % (label, fid, path, n))
    for fid in sorted(set(rows) - set(by_id)):
        probs.append("row %d (path %r, %s bytes) names no file of BACKING"
                     % (fid, rows[fid][0], rows[fid][1]))
    return probs


def assert_rows_agree(m, sizes, where, exact_path=()):
    probs = row_problems(m, sizes, exact_path)
    assert not probs, "%s: files rows disagree with BACKING:\n  %s" % (
        where, "\n  ".join(probs[:30]))


@pytest.fixture
def make_mount(make_mount):
    """conftest's, with statistics flushed every second."""
    def factory(opts=None, **kw):
        return make_mount(opts=["stats_flush=1"] + list(opts or []), **kw)
    return factory


def stat_lines(log):
    """The log's lines about the statistics store, but for the summary a
    scan of BACKING ends with (what a background job did, not the
    problem)."""
    return [l.strip() for l in log.splitlines() if "statistics:" in l and
            "scanned BACKING" not in l]


# ---- (A) rows against containers ----------------------------------------

def test_rows_follow_renames_links_unlinks_truncates_and_remount(
        make_mount):
    m = make_mount()
    files = {
        "zero.bin": noise(200000, 1),       # truncated to 0 below
        "small.txt": text(120, 2),          # packed, then grown
        "tiny.bin": noise(700, 3),          # packed, then shortened
        "text.txt": text(40000, 4),
        "mid.bin": noise(300000, 5),        # unlinked below
        "rand.bin": noise(3 << 20, 6),      # hard linked, truncated
        "big.txt": text((2 << 20) + 4321, 7),
        "over.txt": text(5000, 8),          # renamed over target.bin
        "target.bin": noise(90000, 9),
        "hl.txt": text(7000, 10),           # two links, one unlinked
        "dir/a.txt": text(9000, 11),
        "dir/sub/b.bin": noise(200000, 12),
        "dir/sub/c.txt": text(150, 13),
        "dir/sub/deep/d.txt": text(60000, 14),
        "dirx/keep.txt": text(4000, 15),    # a prefix of "dir" + "x"
    }
    for d in ("dir/sub/deep", "dirx"):
        os.makedirs(m.path(d))
    for n, data in files.items():
        write_file(m.path(n), data)
    # Their rows reach the database at the first flush: the renames
    # below then move rows that exist (and, below, rows still pending).
    m.stop()
    m.start()
    want = dict(files)
    two_links = set()       # names whose row may say NULL

    os.rename(m.path("text.txt"), m.path("renamed.txt"))
    want["renamed.txt"] = want.pop("text.txt")

    ino = os.stat(m.bpath("rand.bin")).st_ino
    os.link(m.path("rand.bin"), m.path("dir", "rand.link"))
    assert os.stat(m.bpath("dir", "rand.link")).st_ino == ino, \
        "a hard link made through the mount is no hard link in BACKING"
    want["dir/rand.link"] = want["rand.bin"]
    two_links |= {"rand.bin", "dir/rand.link"}

    os.link(m.path("hl.txt"), m.path("dir", "sub", "hl2.txt"))
    os.unlink(m.path("hl.txt"))
    want["dir/sub/hl2.txt"] = want.pop("hl.txt")
    two_links.add("dir/sub/hl2.txt")

    os.unlink(m.path("mid.bin"))
    del want["mid.bin"]

    os.rename(m.path("over.txt"), m.path("target.bin"))
    want["target.bin"] = want.pop("over.txt")

    # truncate by path, through a handle, and one that grows the file
    os.truncate(m.path("zero.bin"), 0)
    want["zero.bin"] = b""
    with open(m.path("tiny.bin"), "r+b") as f:
        f.truncate(100)
    want["tiny.bin"] = want["tiny.bin"][:100]
    os.truncate(m.path("rand.bin"), (1 << 20) + 123)
    want["rand.bin"] = want["dir/rand.link"] = want["rand.bin"][:(1 << 20)
                                                                + 123]
    with open(m.path("big.txt"), "r+b") as f:
        f.truncate(777777)
    want["big.txt"] = want["big.txt"][:777777]
    os.truncate(m.path("small.txt"), 250000)
    want["small.txt"] = want["small.txt"] + bytes(250000 - 120)

    # a directory holding files, some of them written in this mount
    write_file(m.path("dir", "sub", "new.txt"), text(11111, 16))
    want["dir/sub/new.txt"] = text(11111, 16)
    os.rename(m.path("dir"), m.path("newdir"))
    want = {("new" + n if n.startswith("dir/") else n): v
            for n, v in want.items()}
    two_links = {("new" + n if n.startswith("dir/") else n)
                 for n in two_links}

    sizes = mount_sizes(m)
    assert sizes == {n: len(v) for n, v in want.items()}, \
        "the mount shows other files or sizes than were made"
    for n, v in want.items():
        assert read_file(m.path(n)) == v, "%s reads back wrong" % n
    m.stop()
    assert quick_check(m) == "ok"
    single = [n for n in want if n not in two_links]
    assert_rows_agree(m, sizes, "after the first unmount", single)
    rows = file_rows(m)
    # the hard link: one row, its id the container's inode number
    assert rows[file_id(ino)][0] in (None, "rand.bin", "newdir/rand.link")
    assert rows[file_id(ino)][1] == (1 << 20) + 123
    # the tree moved: no row keeps the old prefix, the look-alike stays
    old = [r for r in rows.values() if r[0] and r[0].startswith("dir/")]
    assert not old, "rows still under dir/ after its rename: %s" % old
    moved = sorted(r[0] for r in rows.values()
                   if r[0] and r[0].startswith("newdir/"))
    assert moved == sorted(n for n in single if n.startswith("newdir/")), \
        "rows under newdir/: %s" % moved
    assert any(r[0] == "dirx/keep.txt" for r in rows.values())

    # Second round: after a remount, one more of each, compared both at
    # a flush while mounted and after the unmount.
    m.start()
    os.rename(m.path("renamed.txt"), m.path("newdir", "sub", "r.txt"))
    want["newdir/sub/r.txt"] = want.pop("renamed.txt")
    os.unlink(m.path("newdir", "rand.link"))
    del want["newdir/rand.link"]
    two_links.discard("newdir/rand.link")
    with open(m.path("newdir", "a.txt"), "ab") as f:
        f.write(text(70000, 17))
    want["newdir/a.txt"] += text(70000, 17)
    write_file(m.path("late.bin"), noise(500000, 18))
    want["late.bin"] = noise(500000, 18)
    os.unlink(m.path("tiny.bin"))
    del want["tiny.bin"]
    os.rename(m.path("newdir", "sub"), m.path("moved"))
    want = {("moved/" + n[len("newdir/sub/"):]
             if n.startswith("newdir/sub/") else n): v
            for n, v in want.items()}
    two_links = {("moved/" + n[len("newdir/sub/"):]
                  if n.startswith("newdir/sub/") else n) for n in two_links}
    single = [n for n in want if n not in two_links]
    sizes = mount_sizes(m)
    assert sizes == {n: len(v) for n, v in want.items()}
    ok = wait_for(lambda: not row_problems(m, sizes, single),
                  timeout=3 * FLUSH_SECS, step=0.5)
    assert ok, "no flush brought the rows up to date while mounted:\n  " \
        + "\n  ".join(row_problems(m, sizes, single)[:30])
    m.stop()
    assert quick_check(m) == "ok"
    assert_rows_agree(m, sizes, "after the second unmount", single)
    assert not [l for l in stat_lines(m.read_log()) if "damaged" in l or
                "cannot" in l or "locked" in l], m.read_log()


def test_empty_file_made_through_the_mount_has_a_row(make_mount):
    m = make_mount()
    open(m.path("empty"), "wb").close()
    os.mknod(m.path("nod"), 0o644 | os.path.stat.S_IFREG)
    write_file(m.path("full"), text(1000, 1))
    sizes = mount_sizes(m)
    assert sizes == {"empty": 0, "nod": 0, "full": 1000}
    m.stop()
    assert_rows_agree(m, sizes, "after unmount")


def test_packed_file_truncated_to_zero_updates_its_row(make_mount):
    skip_under("nopack", reason="this test truncates packed files")
    m = make_mount()
    names = ["by_path", "by_handle", "by_open"]
    for i, n in enumerate(names):
        write_file(m.path(n), text(3000, 20 + i))
    wait_packed(m, names)
    m.remount()
    os.truncate(m.path("by_path"), 0)
    with open(m.path("by_handle"), "r+b") as f:
        f.truncate(0)
    open(m.path("by_open"), "wb").close()
    sizes = mount_sizes(m)
    assert sizes == {n: 0 for n in names}
    m.stop()
    assert_rows_agree(m, sizes, "after unmount", names)


# ---- (B) a missing, damaged or locked stats.db -----------------------------

class Locker:
    """Another process's write transaction on stats.db (Python's sqlite3
    here, the daemon being the other process): BEGIN EXCLUSIVE, held
    until release()."""

    def __init__(self, m):
        self.c = sqlite3.connect(db_path(m), timeout=10,
                                 isolation_level=None)
        self.c.execute("BEGIN EXCLUSIVE")
        # a real write, so the lock is the writer's whatever the mode
        self.c.execute("INSERT INTO log (time, action) VALUES (?, ?)",
                       (int(time.time()), "test-lock"))
        self.since = time.monotonic()

    def release(self):
        if self.c is not None:
            self.c.execute("COMMIT")
            self.c.close()
            self.c = None


def damage(m, problem):
    """Does `problem` to stats.db; returns the bytes it left in it (None
    when none).  'locked' is Locker's business."""
    p = db_path(m)
    if problem == "deleted":
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(p + suffix)
            except FileNotFoundError:
                pass
        return None
    size = os.path.getsize(p)
    if problem == "truncated":
        os.truncate(p, size // 2)
    elif problem == "emptied":
        os.truncate(p, 0)
    elif problem == "garbage":
        # in place: same inode, same size
        with open(p, "r+b") as f:
            f.write(noise(size, 99))
    else:
        raise ValueError(problem)
    with open(p, "rb") as f:
        return f.read()


class Workload:
    """File operations through the mount, each checked, and the contents
    the mount must show."""

    def __init__(self, m):
        self.m = m
        self.want = {}
        self.n = 0

    def put(self, name, data):
        write_file(self.m.path(name), data)
        self.want[name] = data

    def base(self):
        os.makedirs(self.m.path("d", "e"))
        self.put("a.txt", text(20000, 1))
        self.put("b.bin", noise(400000, 2))
        self.put("small.txt", text(300, 3))
        self.put("d/c.txt", text(150000, 4))
        self.put("d/e/f.bin", noise(70000, 5))
        self.put("gone.txt", text(5000, 6))
        self.put("cut.bin", noise(300000, 7))
        self.put("keep.txt", text(9000, 8))      # never touched again

    def round(self, tag):
        """write, read back, rename, unlink, truncate: all must work."""
        self.n += 1
        k = self.n
        m = self.m
        self.put("new%d.txt" % k, text(30000 + k, 100 + k))
        self.put("d/new%d.bin" % k, noise(200000 + k, 200 + k))
        for name, data in self.want.items():
            assert read_file(m.path(name)) == data, \
                "%s: %s reads back wrong" % (tag, name)
        os.rename(m.path("new%d.txt" % k), m.path("d", "e", "ren%d.txt" % k))
        self.want["d/e/ren%d.txt" % k] = self.want.pop("new%d.txt" % k)
        victim = "gone.txt" if "gone.txt" in self.want else \
            "d/new%d.bin" % (k - 1)
        os.unlink(m.path(victim))
        del self.want[victim]
        assert not os.path.exists(m.path(victim)), tag
        cut = len(self.want["cut.bin"]) - 1000 * k
        os.truncate(m.path("cut.bin"), cut)
        self.want["cut.bin"] = self.want["cut.bin"][:cut]
        with open(m.path("a.txt"), "ab") as f:
            f.write(text(1000, 300 + k))
        self.want["a.txt"] += text(1000, 300 + k)

    def check(self, tag):
        sizes = mount_sizes(self.m)
        assert sizes == {n: len(v) for n, v in self.want.items()}, tag
        for name, data in self.want.items():
            assert read_file(self.m.path(name)) == data, \
                "%s: %s reads back wrong" % (tag, name)
        return sizes


EXPECT = {
    ("deleted", "before"): MSG_NEW,
    ("deleted", "mounted"): MSG_REMOVED,
    ("truncated", "before"): MSG_DAMAGED,
    ("truncated", "mounted"): MSG_DAMAGED,
    ("garbage", "before"): MSG_DAMAGED,
    ("garbage", "mounted"): MSG_DAMAGED,
    ("locked", "before"): MSG_LOCKED,
    ("locked", "mounted"): MSG_LOCKED,
    # A 0-byte stats.db is "migrated" (docs/STATS.md section 1), but the
    # rows it lost must come back, and the log must say something.
    ("emptied", "before"): "stats.db was empty",
    ("emptied", "mounted"): "statistics:",
}


def case(problem, when):
    return pytest.param(problem, when, id="%s-%s" % (problem, when))


@pytest.mark.parametrize("problem,when", [
    case(p, w) for p in ("deleted", "truncated", "emptied", "garbage",
                         "locked") for w in ("before", "mounted")])
def test_stats_db_trouble(make_mount, problem, when):
    """stats.db `problem` (deleted, truncated to half, emptied, garbage,
    locked) `when` (before the mount, or while mounted after a flush):
    file operations work, one log line says what happened (as soon as the
    daemon can know: at the mount, or at the next flush), and the rows
    come back at a flush once the problem is gone, and after unmount in a
    sound database."""
    m = make_mount()
    w = Workload(m)
    w.base()
    m.stop()
    base_rows = file_rows(m)
    assert len(base_rows) == len(w.want), \
        "precondition: %d rows for %d files" % (len(base_rows), len(w.want))
    assert os.path.exists(m.bpath(".squeezefs", "stats.clean"))
    expect = EXPECT[(problem, when)]
    log0 = len(m.read_log())

    def seg():
        return m.read_log()[log0:]

    locker = None
    left = None
    try:
        t0 = time.time()
        if when == "before":
            if problem == "locked":
                locker = Locker(m)
            else:
                left = damage(m, problem)
            m.start()
        else:
            m.start()
            w.round("before the trouble")
            # a flush wrote those: the WAL holds frames, as it mostly
            # does while mounted
            ids = {file_id(os.stat(m.bpath(n)).st_ino) for n in w.want}
            assert wait_for(lambda: file_rows(m).keys() >= ids,
                            timeout=2 * FLUSH_SECS + BUSY_SECS, step=0.5), \
                "precondition: no flush while mounted"
            t0 = time.time()
            if problem == "locked":
                locker = Locker(m)
            else:
                left = damage(m, problem)

        # Operations while it is wrong; the daemon must say so at the
        # mount, or at the next flush while mounted.
        w.round("with stats.db %s" % problem)
        if locker is not None:
            # a flush runs into the lock (it waits BUSY_SECS for it)
            while time.monotonic() - locker.since < \
                    FLUSH_SECS + BUSY_SECS + 1:
                w.round("stats.db locked")
                time.sleep(0.5)
        else:
            wait_for(lambda: expect in seg(),
                     timeout=(FLUSH_SECS + BUSY_SECS + 2 if when == "mounted"
                              else BUSY_SECS + 2), step=0.2)
        w.round("after the daemon could notice")
        lines = stat_lines(seg())
        assert sum(expect in l for l in lines) == 1, \
            "stats.db %s %s: want one log line with %r by now, got:\n%s" % (
                problem, "before the mount" if when == "before" else
                "while mounted", expect, "\n".join(lines) or "(none)")
    finally:
        if locker is not None:
            locker.release()

    # The problem is gone (lock released, database made anew): more
    # operations, then the rows come back at a flush while mounted, and
    # at the unmount's.
    w.round("after the trouble")
    sizes = w.check("after the trouble")
    ok = wait_for(lambda: not row_problems(m, sizes),
                  timeout=FLUSH_SECS + BUSY_SECS + 2, step=0.5)
    assert ok, "no flush brought the rows back while mounted:\n  %s\n" \
        "log:\n%s" % ("\n  ".join(row_problems(m, sizes)[:30]),
                      "\n".join(stat_lines(seg())))
    w.round("a flush later")
    sizes = w.check("before unmount")
    m.stop()
    log = seg()

    # the log: the line about the problem once, no line repeated
    lines = stat_lines(log)
    n = sum(expect in l for l in lines)
    assert n == 1, "want one log line with %r, got %d:\n%s" % (
        expect, n, "\n".join(lines))
    rep = [l for l in set(lines) if lines.count(l) > 1]
    assert not rep, "log lines repeated: %s\n%s" % (rep, "\n".join(lines))

    if expect == MSG_DAMAGED:
        mo = DAMAGED_RE.search(log)
        assert mo, "damaged line not as expected:\n%s" % "\n".join(lines)
        aside = m.bpath(".squeezefs", mo.group(2))
        assert os.path.exists(aside), "%s not found" % aside
        assert t0 - 1 <= int(mo.group(3)) <= time.time() + 1, mo.group(0)
        if when == "before":
            # moved aside as it was found
            assert read_file(aside) == left
        assert not os.path.exists(aside + "-shm")

    # the statistics came back, in a sound database
    assert os.path.exists(db_path(m))
    qc = quick_check(m)
    assert qc == "ok", "stats.db after unmount: %s\nlog:\n%s" % (
        qc, "\n".join(lines))
    assert query(m, "PRAGMA user_version") == [(1,)]
    assert_rows_agree(m, sizes, "after unmount")
    # the next mount takes it as it is
    log1 = len(m.read_log())
    m.start()
    assert w.check("after remount") == sizes
    m.stop()
    again = stat_lines(m.read_log()[log1:])
    assert not [l for l in again if "damaged" in l or "cannot" in l or
                "locked" in l or "not end cleanly" in l or
                "new stats.db" in l], again
    assert_rows_agree(m, sizes, "after a remount")


def test_class_and_compression_time(make_mount):
    """files.class is the class most of a file's bytes had when it was last
    written, compress_ns the codec time its stores took and rewrites the
    blocks changed in part (both added up)."""
    skip_under("codec", reason="a forced codec classifies nothing")
    m = make_mount(opts=["settle=off"])
    write_file(m.path("notes.txt"), text(600000, 7))
    write_file(m.path("noise.bin"), noise(600000, 8))
    m.stop()
    rows = {p: (c, ns) for p, c, ns in query(
        m, "SELECT path, class, compress_ns FROM files")}
    assert rows["notes.txt"][0] == "text", rows
    assert rows["notes.txt"][1] > 0, rows
    # Random bytes are stored raw without running a codec (but trials).
    assert rows["noise.bin"][0] == "random", rows
    m.start()
    with open(m.path("notes.txt"), "ab") as f:
        f.write(text(300000, 9))
    m.stop()
    ns2 = query(m, "SELECT compress_ns FROM files WHERE path = "
                "'notes.txt'")[0][0]
    assert ns2 > rows["notes.txt"][1]
    # Rewrites in place: three blocks of data changed in part (the append
    # rewrote the last block, which it filled up).
    r0 = query(m, "SELECT rewrites FROM files WHERE path = 'notes.txt'"
               )[0][0]
    assert r0 == 1
    m.start()
    with open(m.path("notes.txt"), "r+b") as f:
        for off in (1000, 300000, 500000):
            f.seek(off)
            f.write(b"changed in place")
    m.stop()
    assert query(m, "SELECT rewrites FROM files WHERE path = 'notes.txt'"
                 )[0][0] == r0 + 3
