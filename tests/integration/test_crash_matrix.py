"""Issue 5, crash matrix: the daemon kills itself (tests/tools/faultinj.c,
SQ_FAULT_KILL) at the Nth backing pwrite, fdatasync, fallocate, ftruncate
or renameat, N random, while a writer does writes, truncates down and up,
hole punches, renames, atomic replaces (write + fsync + rename over) and
fsyncs over several files.  After each crash: fsck is clean, the remount
works, every file holds, block by block, a version the writer produced since
its last successful fsync (so fsync'd data survives and nothing reads back
as garbage or EIO), a renamed file is under its old or its new name, and a
replaced file is wholly its old or its new version.  20 rounds (200 with
SQ_LONG=1); SQ_CRASH_SEED picks another sequence.

Crash model as in test_crash.py: only the daemon dies; the kernel keeps its
completed backing writes, and the writer's journal on the plain filesystem
needs no fsync.  The journal, per file: NAME.base (8-byte op sequence +
content at the last successful fsync) and NAME.log (each op appended before
it is issued)."""

import os
import random
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sqfs_util import (EXIT_DAEMON_GONE, JOURNAL_REC, LONG,  # noqa: E402
                       OP_PUNCH, OP_RENAME, OP_REPLACE, OP_TRUNC, OP_WRITE,
                       faultinj_env, fsck_clean, journal_apply, journal_key,
                       journal_read_base, journal_read_log, journal_write_base,
                       punch_hole, read_blockwise, start_writer_script,
                       stop_writer)

OP_NAMES = {OP_WRITE: "pwrite", OP_TRUNC: "ftruncate", OP_PUNCH: "punch",
            OP_RENAME: "rename", OP_REPLACE: "replace"}
MOVED = ".moved"

# name, block size at creation, maximum size; "r" is only ever replaced
FILES = (("f0", 4096, 512 << 10), ("f1", 131072, 1 << 20),
         ("d/f2", 4096, 256 << 10), ("r", 4096, 64 << 10))
DATA_FILES = FILES[:3]

# the kill points and how many calls of each a round may reach
KILL_OPS = (("pwrite", 400), ("fdatasync", 40), ("fallocate", 40),
            ("ftruncate", 15), ("renameat", 10))


# ---- the writer (a separate process, killed or orphaned by the crash) ----

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
        else:
            out += (b"crash matrix %d\n" % r.randrange(10**6)) * (seg // 14 + 1)
    return bytes(out[:n])


def writer_main(argv):
    state, mnt, seed = argv[0], argv[1], int(argv[2])
    r = random.Random(seed)
    files = []
    for name, bs, mx in FILES:
        seq, content = journal_read_base(state, name)
        logfd = os.open(os.path.join(state, journal_key(name) + ".log"),
                        os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.ftruncate(logfd, 0)
        f = {"name": name, "bs": bs, "max": mx, "seq": seq, "model": content,
             "log": logfd, "pending": 0, "every": r.randint(1, 6),
             "path": os.path.join(mnt, name)}
        if name != "r":
            f["fd"] = os.open(f["path"], os.O_RDWR)
        files.append(f)
    print("ready", flush=True)

    def log(f, kind, a, b, data):
        f["seq"] += 1
        os.write(f["log"],
                 JOURNAL_REC.pack(f["seq"], kind, a, b, len(data)) + data)

    def synced(f):
        journal_write_base(state, f["name"], f["seq"], f["model"])
        os.ftruncate(f["log"], 0)
        f["pending"], f["every"] = 0, r.randint(1, 6)

    try:
        while True:
            f = r.choice(files)
            size, mx, bs = len(f["model"]), f["max"], f["bs"]
            if f["name"] == "r":  # atomic replace
                data = gen_data(r, r.randint(0, mx))
                tmp = f["path"] + ".new"
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                             0o644)
                os.write(fd, data)
                os.fsync(fd)
                os.close(fd)
                log(f, OP_REPLACE, 0, 0, data)
                os.rename(tmp, f["path"])
                f["model"][:] = data
                synced(f)
                continue
            x = r.random()
            if x < 0.45:
                off = r.randint(0, mx // bs) * bs + r.randint(-64, 64) \
                    if r.random() < 0.4 else r.randint(0, min(size + bs, mx))
                off = min(max(off, 0), mx - 1)
                n = min(r.choice((r.randint(1, 100), r.randint(1, 4096),
                                  r.randint(1, 65536))), mx - off)
                kind, a, b, data = OP_WRITE, off, 0, gen_data(r, n)
            elif x < 0.6:
                n = min(r.randint(1, 32768), mx - size)
                if n <= 0:
                    continue
                kind, a, b, data = OP_WRITE, size, 0, gen_data(r, n)
            elif x < 0.7:
                kind, a, b, data = OP_TRUNC, r.randint(0, size), 0, b""
            elif x < 0.75:
                kind, a, b, data = OP_TRUNC, r.randint(size, mx), 0, b""
            elif x < 0.85:
                kind, a, b, data = OP_PUNCH, r.randint(0, max(size, 1)), \
                    r.randint(1, 3 * bs), b""
            elif x < 0.92:  # there and back: the fd stays valid
                log(f, OP_RENAME, 0, 0, b"")
                os.rename(f["path"], f["path"] + MOVED)
                log(f, OP_RENAME, 1, 0, b"")
                os.rename(f["path"] + MOVED, f["path"])
                continue
            else:
                f["pending"] = f["every"]
                kind = None
            if kind is not None:
                log(f, kind, a, b, data)
                if kind == OP_WRITE:
                    # the kernel sends a write page by page when it must:
                    # a daemon dying in between leaves a short write
                    if os.pwrite(f["fd"], data, a) != len(data):
                        sys.exit(EXIT_DAEMON_GONE)
                elif kind == OP_TRUNC:
                    os.ftruncate(f["fd"], a)
                else:
                    punch_hole(f["fd"], a, b)
                journal_apply(f["model"], kind, a, b, data)
                f["pending"] += 1
            if f["pending"] >= f["every"]:
                (os.fdatasync if r.random() < 0.3 else os.fsync)(f["fd"])
                synced(f)
    except OSError:
        sys.exit(EXIT_DAEMON_GONE)


# ---- the test -------------------------------------------------------------

def check_file(m, state, name, bs, where):
    """Checks one file against its journal, puts it back under its own
    name, and returns (content, last seq)."""
    base_seq, base = journal_read_base(state, name)
    recs = [x for x in journal_read_log(state, name) if x[0] > base_seq]
    states, cur = [bytes(base)], bytearray(base)
    for _, kind, a, b, data in recs:
        journal_apply(cur, kind, a, b, data)
        states.append(bytes(cur))
    if recs and recs[-1][1] == OP_WRITE:
        # the op in flight at the crash may have reached the daemon only in
        # part: FUSE splits a write at page boundaries and sends the parts
        # in order, so any prefix ending on a page boundary may be there
        _, _, a, _, data = recs[-1]
        cur = bytearray(states[-2])
        for cut in range((a // 4096 + 1) * 4096, a + len(data), 4096):
            part = bytearray(cur)
            journal_apply(part, OP_WRITE, a, 0, data[:cut - a])
            states.insert(-1, bytes(part))
    last = recs[-1][0] if recs else base_seq
    ctx = "%s: %s (bs %d): fsync'd at #%d (%d bytes), then %s" % (
        where, name, bs, base_seq, len(base),
        ["#%d %s a=%d b=%d len=%d" % (s, OP_NAMES[k], a, b, len(d))
         for s, k, a, b, d in recs])
    p, moved = m.path(name), m.path(name) + MOVED
    here, there = os.path.exists(p), os.path.exists(moved)
    renames = [x for x in recs if x[1] == OP_RENAME]
    assert here != there, "%s\nunder both or no names (%s, %s)" % (
        ctx, here, there)
    if there:
        assert renames, "%s\nmoved without a rename logged" % ctx
        os.rename(moved, p)
    got = bytes(read_blockwise(p, bs)[1])
    if name == "r":
        assert got in states, "%s\nreplaced file is no whole version " \
            "(%d bytes)" % (ctx, len(got))
        return got, last
    sizes = [len(s) for s in states]
    assert len(got) in sizes, "%s\nsize %d is none of %s" % (ctx, len(got),
                                                             sizes)
    for off in range(0, len(got), bs):
        blk = got[off:off + bs]
        if not any((s[off:off + len(blk)] + bytes(len(blk)))[:len(blk)] == blk
                   for s in states):
            raise AssertionError("%s\nblock %d matches no version"
                                 % (ctx, off // bs))
    return got, last


def check_all(m, state, where):
    for name, bs, _ in FILES:
        got, last = check_file(m, state, name, bs, where)
        journal_write_base(state, name, last, got)
        open(os.path.join(state, journal_key(name) + ".log"), "wb").close()
    leftover = m.path("r.new")
    if os.path.exists(leftover):
        os.unlink(leftover)


def start_writer(state, mnt, seed):
    return start_writer_script([sys.executable, os.path.abspath(__file__),
                                "writer", str(state), mnt, str(seed)])


def test_crash_matrix(make_mount, tmp_path):
    rounds = 200 if LONG else 20
    seed = int(os.environ.get("SQ_CRASH_SEED", "5005"))
    rng = random.Random(seed)
    state = tmp_path / "state"
    state.mkdir()

    m = make_mount(opts=["block_size=4K"])
    for bsz in (4096, 131072):
        for name, bs, _ in FILES:
            if bs == bsz:
                os.makedirs(os.path.dirname(m.path(name)), exist_ok=True)
                init = b"initial %s\n" % name.encode()
                with open(m.path(name), "wb") as f:
                    f.write(init)
                    os.fsync(f.fileno())
                journal_write_base(state, name, 0, init)
        m.stop()
        m.opts = ["block_size=128K"]
        m.start()
    m.stop()

    shim_kills, stats = {}, []
    for rnd in range(rounds):
        op, most = KILL_OPS[rnd % len(KILL_OPS)]
        nth = rng.randint(1, most)
        where = "round %d (seed %d, kill at %s #%d)" % (rnd, seed, op, nth)
        m.env = faultinj_env(op=op, nth=nth, kill=1,
                             path_substr=m.backing + "/")
        m.start()
        w = start_writer(state, m.mnt, seed * 1000 + rnd)
        died = False
        try:
            m.proc.wait(timeout=rng.uniform(0.3, 1.5))
            died = True
        except subprocess.TimeoutExpired:
            pass
        m.kill()  # reaps a self-killed daemon, or kills a live one
        stop_writer(w, where + ": writer")
        m.check_log()
        if died:
            assert "faultinj: inject" in m.read_log(), \
                "%s: the daemon died by itself:\n%s" % (where,
                                                        m.read_log()[-3000:])
            shim_kills[op] = shim_kills.get(op, 0) + 1
        stats.append((op, nth, died))
        fsck_clean(m, where + ", after the crash")
        m.env = {}
        m.start()
        check_all(m, state, where)
        m.stop()

    fsck_clean(m, "at the end")
    m.start()
    for name, bs, _ in FILES:
        _, want = journal_read_base(state, name)
        assert read_blockwise(m.path(name), bs)[1] == want, name
    m.stop()
    print("crash matrix (op, nth, killed by the shim):", stats)
    # the hooks really kill at each kind of point, not only the timer
    for op in ("pwrite", "fdatasync", "renameat"):
        assert shim_kills.get(op), "never killed at %s: %s" % (op, stats)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "writer":
        writer_main(sys.argv[2:])
    else:
        sys.exit("usage: test_crash_matrix.py writer STATE MOUNTPOINT SEED")
