"""Acceptance 4 of issue 2: kill -9 the daemon while a writer loops over
several files doing pwrites, appends, truncates, hole punches and fsyncs;
after each crash, `squeezefs fsck` must find no damage, a remount must
succeed, and every block of every file must hold a version the writer
produced since its last successful fsync (so fsync'd bytes are all there and
nothing reads back garbage).  The same files carry on into the next round.

Crash model: only processes die.  The kernel page cache of BACKING survives
kill -9, so whatever the daemon had pwrite()n to BACKING is kept; what is lost
is the daemon's memory and requests the kernel had not handed over yet.  For
the same reason the writer's journal on the plain filesystem needs no fsync:
a write() that returned is visible to this test after the writer is killed.

The writer (this file run as a script) keeps, per file, in a state directory
on the plain filesystem:
  NAME.base  8-byte little-endian op sequence number + the file's content
             at its last successful fsync (replaced atomically after it)
  NAME.log   every op issued since, appended *before* the op is issued:
             struct <QBQQI (seq, kind, a, b, data length) + data.
After a crash the possible versions of a file are base, base+op1,
base+op1+op2, ...; each block (of the file's block size) must equal that
block in one of them, and the size must be one of their sizes.  With the
writeback cache each page must (the kernel writes pages back in any order).
"""

import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sqfs_util import (EXIT_DAEMON_GONE, JOURNAL_REC, LONG,  # noqa: E402
                       OP_PUNCH, OP_TRUNC, OP_WRITE, fsck_clean, journal_apply,
                       journal_key, journal_read_base, journal_read_log,
                       journal_write_base, punch_hole, read_blockwise,
                       start_writer_script, stop_writer)

# the ops this writer journals (check_file fails on any other kind)
OP_NAMES = {OP_WRITE: "pwrite", OP_TRUNC: "ftruncate", OP_PUNCH: "punch"}
PAGE = os.sysconf("SC_PAGE_SIZE")

# name, block size given at creation, maximum size
FILES = (("f0", 4096, 1 << 20), ("f1", 4096, 256 << 10),
         ("f2", 131072, 2 << 20), ("d/f3", 131072, 1 << 20))


# ---- the writer (runs as a separate process) ---------------------------

def gen_data(r, n):
    out = bytearray()
    while len(out) < n:
        k = n - len(out)
        seg = k if r.random() < 0.5 else r.randint(1, k)
        x = r.random()
        if x < 0.4:
            out += r.randbytes(seg)
        elif x < 0.6:
            out += bytes(seg)
        elif x < 0.85:
            out += (b"squeezefs crash test line %d\n" % r.randrange(10**6)) \
                * (seg // 20 + 1)
        else:
            out += bytes([r.randrange(256)]) * seg
    return bytes(out[:n])


def writer_main(argv):
    """writer STATE_DIR MOUNTPOINT SEED I,J,..: loops over FILES[I], ...
    until killed or the daemon goes away (exit 3)."""
    state_dir, mnt, seed = argv[0], argv[1], int(argv[2])
    which = [int(i) for i in argv[3].split(",")]
    r = random.Random(seed)
    files = []
    for name, bs, max_size in (FILES[i] for i in which):
        seq, content = journal_read_base(state_dir, name)
        fd = os.open(os.path.join(mnt, name), os.O_RDWR)
        logp = os.path.join(state_dir, journal_key(name) + ".log")
        logfd = os.open(logp, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.ftruncate(logfd, 0)
        files.append({"name": name, "bs": bs, "max": max_size, "seq": seq,
                      "model": content, "fd": fd, "log": logfd,
                      "pending": 0, "every": r.randint(1, 8)})
    print("ready", flush=True)

    def issue(f, kind, a, b, data):
        f["seq"] += 1
        os.write(f["log"],
                 JOURNAL_REC.pack(f["seq"], kind, a, b, len(data)) + data)
        try:
            if kind == OP_WRITE:
                n = os.pwrite(f["fd"], data, a)
                if n != len(data):
                    # the kernel sent it in pieces and the daemon died
                    # between them (see split_points)
                    sys.exit(EXIT_DAEMON_GONE)
            elif kind == OP_TRUNC:
                os.ftruncate(f["fd"], a)
            else:
                punch_hole(f["fd"], a, b)
        except OSError:
            sys.exit(EXIT_DAEMON_GONE)
        journal_apply(f["model"], kind, a, b, data)

    while True:
        f = r.choice(files)
        bs, size, mx = f["bs"], len(f["model"]), f["max"]
        x = r.random()
        if x < 0.55:  # pwrite, often across a block boundary
            if r.random() < 0.4:
                off = r.randint(0, mx // bs) * bs + r.randint(-100, 100)
            else:
                off = r.randint(0, min(size + bs, mx))
            off = min(max(off, 0), mx - 1)
            n = r.choice((r.randint(1, 100), r.randint(1, 4096),
                          r.randint(1, 65536)))
            n = min(n, mx - off)
            issue(f, OP_WRITE, off, 0, gen_data(r, n))
        elif x < 0.7:  # append
            n = min(r.randint(1, 32768), mx - size)
            if n > 0:
                issue(f, OP_WRITE, size, 0, gen_data(r, n))
        elif x < 0.8:  # truncate, mostly down
            new = r.randint(0, size) if r.random() < 0.7 else \
                r.randint(size, mx)
            issue(f, OP_TRUNC, new, 0, b"")
        elif x < 0.88:
            off = r.randint(0, max(size, 1))
            issue(f, OP_PUNCH, off, r.randint(1, 3 * bs), b"")
        else:  # fsync right now
            f["pending"] = f["every"] - 1
        f["pending"] += 1
        if f["pending"] >= f["every"]:
            try:
                (os.fdatasync if r.random() < 0.25 else os.fsync)(f["fd"])
            except OSError:
                sys.exit(EXIT_DAEMON_GONE)
            journal_write_base(state_dir, f["name"], f["seq"], f["model"])
            os.ftruncate(f["log"], 0)
            f["pending"], f["every"] = 0, r.randint(1, 8)


# ---- the test -----------------------------------------------------------

def split_points(off, n):
    """File offsets at which the kernel may have cut pwrite(off, n) into
    separate FUSE write requests.  Without writeback caching it sends them
    one after another, each ending at a page boundary (a partial page that
    is not cached ends a request), so a daemon killed in between has
    applied a prefix of the write ending at one of these offsets."""
    first = (off // PAGE + 1) * PAGE
    return range(first, off + n, PAGE)


def block_of(state, off, n):
    """Bytes [off, off+n) of a version, zeros past its end."""
    b = state[off:off + n]
    return b if len(b) == n else b + bytes(n - len(b))


def torn_write_matches(states, recs, off, blk):
    """Whether block `blk` at `off` is one of the versions a pwrite cut by
    the crash between two of its requests leaves (see split_points)."""
    n = len(blk)
    for j, (_, kind, a, _, data) in enumerate(recs):
        end = a + len(data)
        if kind != OP_WRITE or end <= off or a >= off + n:
            continue
        before = None
        for p in split_points(a, len(data)):
            if p <= off:
                continue
            if p >= off + n:
                break
            if before is None:
                before = bytearray(block_of(states[j], off, n))
            lo = max(a, off)
            cand = bytearray(before)
            cand[lo - off:p - off] = data[lo - a:p - a]
            if cand == blk:
                return True
    return False


def pages_match(states, off, blk):
    """With the writeback cache the kernel hands dirty pages over in no
    particular order (its writeback resumes where it last stopped and wraps
    around), so after a crash each page of a block holds a version of its
    own: whether every page of `blk` at `off` is that page in a version."""
    for p in range(0, len(blk), PAGE):
        page = blk[p:p + PAGE]
        if not any(block_of(s, off + p, len(page)) == page for s in states):
            return False
    return True


def check_file(m, state_dir, name, bs, where):
    """Checks one file after a crash against its journal; returns the
    content read and the last sequence number."""
    base_seq, base = journal_read_base(state_dir, name)
    recs = [rec for rec in journal_read_log(state_dir, name)
            if rec[0] > base_seq]
    states = [bytes(base)]
    cur = bytearray(base)
    for seq, kind, a, b, data in recs:
        journal_apply(cur, kind, a, b, data)
        states.append(bytes(cur))
    last_seq = recs[-1][0] if recs else base_seq
    size, got = read_blockwise(m.path(name), bs)
    ops_desc = ["#%d %s a=%d b=%d len=%d" % (s, OP_NAMES[k], a, b, len(d))
                for s, k, a, b, d in recs]
    ctx = ("%s: file %s (block size %d): last fsync at op #%d (size %d), "
           "%d ops after it: %s" % (where, name, bs, base_seq, len(base),
                                    len(recs), ops_desc))
    sizes = set(len(s) for s in states)
    for j, (_, kind, a, _, data) in enumerate(recs):
        if kind == OP_WRITE:
            sizes.update(max(len(states[j]), p)
                         for p in split_points(a, len(data)))
    assert size in sizes, "%s\nsize after recovery %d is none of %s" % (
        ctx, size, sorted(sizes))
    for off in range(0, size, bs):
        blk = bytes(got[off:off + bs])
        n = len(blk)
        if not any(block_of(s, off, n) == blk for s in states) and \
                not torn_write_matches(states, recs, off, blk) and \
                not (m.writeback() and pages_match(states, off, blk)):
            fsynced = block_of(base, off, n)
            i = next(j for j in range(n) if blk[j] != fsynced[j])
            raise AssertionError(
                "%s\nblock %d (offset %d, %d bytes) matches no version; vs "
                "the fsync'd one first difference at +%d: got %s want %s"
                % (ctx, off // bs, off, n, i, bytes(blk[i:i + 16]).hex(),
                   bytes(fsynced[i:i + 16]).hex()))
    return got, last_seq


def check_all(m, state_dir, where):
    for name, bs, _ in FILES:
        got, last_seq = check_file(m, state_dir, name, bs, where)
        # what we read is the new starting point: it must stay as it is
        journal_write_base(state_dir, name, last_seq, got)
        open(os.path.join(state_dir, journal_key(name) + ".log"), "wb").close()


def start_writer(state_dir, mnt, seed, which):
    return start_writer_script(
        [sys.executable, os.path.abspath(__file__), "writer", str(state_dir),
         mnt, str(seed), ",".join(map(str, which))], "crash writer")


def test_crash_rounds(make_mount, tmp_path):
    rounds = 200 if LONG else 20
    seed = int(os.environ.get("SQ_CRASH_SEED", "4242"))
    rng = random.Random(seed)
    state_dir = tmp_path / "state"
    state_dir.mkdir()

    # files created under a 4K mount keep 4K blocks, the others 128K
    m = make_mount(opts=["block_size=4K"])
    for bsz in (4096, 131072):
        for name, bs, _ in FILES:
            if bs != bsz:
                continue
            os.makedirs(os.path.dirname(m.path(name)), exist_ok=True)
            with open(m.path(name), "wb") as f:
                f.write(b"initial %s\n" % name.encode())
                os.fsync(f.fileno())
            journal_write_base(state_dir, name, 0,
                               b"initial %s\n" % name.encode())
        m.stop()
        m.opts = ["block_size=128K"]
        m.start()

    stats = []
    for rnd in range(rounds):
        where = "round %d (seed %d)" % (rnd, seed)
        # two writers, so the daemon also crashes amid concurrent requests
        ws = []
        try:
            for k in (0, 1):
                ws.append(start_writer(state_dir, m.mnt,
                                       seed * 1000 + rnd * 2 + k,
                                       range(k, len(FILES), 2)))
            delay = rng.uniform(0.05, 1.0)
            time.sleep(delay)
            m.kill()
        finally:
            for w in ws:  # never leave a writer holding the mount busy
                if w.poll() is None:
                    w.kill()
        for w in ws:
            stop_writer(w, "crash writer")
        m.check_log()
        logged = sum(len(journal_read_log(state_dir, n))
                     for n, _, _ in FILES)
        stats.append((round(delay, 2), logged))
        fsck_clean(m, where + ", right after kill -9")
        m.start()  # a remount after the crash must succeed
        check_all(m, state_dir, where)
        assert sorted(os.listdir(m.mnt)) == ["d", "f0", "f1", "f2"], \
            "%s: unexpected names in the mount: %s" % (where,
                                                      os.listdir(m.mnt))
        if rnd % 5 == 4:  # now and then, also a clean unmount cycle
            m.stop()
            fsck_clean(m, where + ", after a clean unmount")
            m.start()
            check_all(m, state_dir, where + ", after a clean remount")

    # the last state survives a clean unmount exactly
    m.stop()
    fsck_clean(m, "at the end")
    m.start()
    for name, bs, _ in FILES:
        _, want = journal_read_base(state_dir, name)
        size, got = read_blockwise(m.path(name), bs)
        assert got == want, "%s changed across a clean remount" % name
    m.stop()
    print("crash rounds (delay s, ops logged since last fsync):", stats)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "writer":
        writer_main(sys.argv[2:])
    else:
        sys.exit("usage: test_crash.py writer STATE_DIR MOUNTPOINT SEED I,J,..")
