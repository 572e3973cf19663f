"""Issue 5, fault injection: the daemon runs under tests/tools/faultinj.c
(LD_PRELOAD) and its backing pwrite, fsync, fdatasync, fallocate, ftruncate,
renameat or open calls fail with EIO or ENOSPC on demand.  Under every
fault the user's operation reports an error (the injected errno or EIO) or
succeeds, the daemon stays up and keeps serving other files, and once the
fault is gone every file fsync'd before reads back intact, a clean unmount
works and `squeezefs fsck` is clean."""

import errno
import os
import random
import time

import pytest

from sqfs_util import (check_contents, faultinj_env, fsck_clean, punch_hole,
                       read_file, write_fault_ctl, write_unbuffered)

OPS = ("pwrite", "pwritev", "fsync", "fdatasync", "fallocate", "ftruncate",
       "renameat", "openat")
BS = 4096


def injected(m):
    return m.read_log().count("faultinj: inject")


def data(r, n):
    """Half random, half compressible, so both raw and compressed blocks
    are stored."""
    h = n // 2
    return r.randbytes(h) + (b"fault injection %d\n" % r.randrange(1000)
                             * (n // 16 + 1))[:n - h]


def check_blocks(got, states, where):
    """Every block of `got` equals that block in one of `states` (zeros past
    a state's end), and the size is one of theirs."""
    sizes = sorted({len(s) for s in states})
    assert len(got) in sizes, "%s: size %d is none of %s" % (where, len(got),
                                                            sizes)
    for off in range(0, len(got), BS):
        blk = got[off:off + BS]
        if not any((s[off:off + len(blk)] + bytes(len(blk)))[:len(blk)] == blk
                   for s in states):
            raise AssertionError("%s: block %d matches no version"
                                 % (where, off // BS))


def apply(buf, kind, a, b=b""):
    buf = bytearray(buf)
    if kind == "write":
        if len(buf) < a:
            buf.extend(bytes(a - len(buf)))
        buf[a:a + len(b)] = b
    elif kind == "trunc":
        buf = buf[:a] if a < len(buf) else buf + bytes(a - len(buf))
    elif kind == "punch":
        off, n = a
        end = min(off + n, len(buf))
        if off < end:
            buf[off:end] = bytes(end - off)
    return bytes(buf)


def victim_workload(m, r, v0):
    """Runs every kind of operation on "victim" and a new file; returns
    (results: list of (step, errno or None), states: the contents victim
    may have now)."""
    res, states, cur = [], [v0], v0

    def step(name, fn):
        try:
            out = fn()
            res.append((name, None))
            return out
        except OSError as e:
            res.append((name, e.errno))
            return None

    fd = step("open", lambda: os.open(m.path("victim"), os.O_RDWR))
    if fd is not None:
        w1, w2 = data(r, 2 * BS + 100), data(r, 2000)
        for name, kind, a, b, fn in (
                ("pwrite", "write", 0, w1, lambda: os.pwrite(fd, w1, 0)),
                ("pwrite2", "write", 30000, w2,
                 lambda: os.pwrite(fd, w2, 30000)),
                ("punch", "punch", (3 * BS, BS), b"",
                 lambda: punch_hole(fd, 3 * BS, BS)),
                ("truncate-down", "trunc", 20000, b"",
                 lambda: os.ftruncate(fd, 20000)),
                ("truncate-up", "trunc", 45000, b"",
                 lambda: os.ftruncate(fd, 45000))):
            cur = apply(cur, kind, a, b)
            states.append(cur)
            step(name, fn)
        step("fsync", lambda: os.fsync(fd))
        step("fdatasync", lambda: os.fdatasync(fd))
        step("close", lambda: os.close(fd))
    if step("rename", lambda: os.rename(m.path("victim"),
                                        m.path("victim.moved"))) is None \
            and res[-1][1] is None:
        step("rename-back", lambda: os.rename(m.path("victim.moved"),
                                              m.path("victim")))
    nfd = step("create", lambda: os.open(m.path("victim.new"),
                                         os.O_RDWR | os.O_CREAT | os.O_EXCL,
                                         0o644))
    if nfd is not None:
        step("new-write", lambda: os.write(nfd, b"n" * 10000))
        step("new-fsync", lambda: os.fsync(nfd))
        step("new-close", lambda: os.close(nfd))
    return res, states


def daemon_serves(m, durable, r, where):
    """Other files stay readable and writable while the fault is armed."""
    assert m.proc.poll() is None, "%s: daemon died:\n%s" % (
        where, m.read_log()[-3000:])
    check_contents(m, {k: v for k, v in durable.items()
                       if not k.startswith("victim")}, where, "fsync'd ")
    content = data(r, 3 * BS + 7)
    write_unbuffered(m.path("other"), content, sync=True)
    assert read_file(m.path("other")) == content
    durable["other"] = content


def setup_files(m, r):
    durable = {}
    os.mkdir(m.path("keep"))
    for i in range(3):
        name = "keep/k%d" % i
        durable[name] = data(r, r.randint(1, 12) * BS + r.randint(0, 99))
        write_unbuffered(m.path(name), durable[name], sync=True)
    durable["victim"] = data(r, 10 * BS + 123)
    write_unbuffered(m.path("victim"), durable["victim"], sync=True)
    return durable


def finish(m, durable, where):
    """Clean unmount, fsck, remount, every fsync'd file intact."""
    check_contents(m, durable, where + ", before unmount", "fsync'd ")
    m.stop()
    fsck_clean(m, where)
    m.start()
    check_contents(m, durable, where + ", after remount", "fsync'd ")
    m.stop()


@pytest.mark.parametrize("err", ["EIO", "ENOSPC"])
@pytest.mark.parametrize("op", OPS)
def test_sticky_fault_on_one_file(make_mount, tmp_path, op, err):
    """Every call of `op` on the victim's backing paths fails from the first
    one on; the user sees it, everything else keeps working."""
    ctl = tmp_path / "fault.ctl"
    r = random.Random("%s-%s" % (op, err))
    m = make_mount(opts=["block_size=4K"], env=faultinj_env(ctl=ctl))
    durable = setup_files(m, r)
    v0 = durable["victim"]

    write_fault_ctl(ctl, op=op, errno=err, mode="sticky",
                    path_substr="victim")
    res, states = victim_workload(m, r, v0)
    daemon_serves(m, durable, r, "%s %s armed" % (op, err))
    n = injected(m)
    where = "%s/%s: results %s" % (op, err, res)

    allowed = {getattr(errno, err), errno.EIO}
    for step, e in res:
        assert e is None or e in allowed, "%s: %s failed with %s" % (
            where, step, errno.errorcode.get(e, e))
    # pwritev: the daemon does not call it (yet); everything else must fire
    never = op == "pwritev" and n == 0
    assert n > 0 or never, "%s: the fault never fired:\n%s" % (
        where, m.read_log())
    failed = {s for s, e in res if e is not None}
    # the cut after a shrink only frees space: the size record is what
    # counts, and what the cut left is freed later, so it may stay silent
    absorbed = op == "ftruncate"
    assert failed or never or absorbed, "%s: %d faults injected but no " \
        "operation failed" % (where, n)
    # a successful fsync while the data cannot be stored would be a lie
    if op in ("pwrite", "fdatasync", "fsync"):
        assert "fsync" in failed, where
    if op in ("pwrite", "fdatasync"):
        assert "fdatasync" in failed, where

    write_fault_ctl(ctl)  # disarm
    # Stores go on in the background (workers, the release the kernel
    # sends after close): one that met the armed fault may log it after
    # `n` above was taken.  Count from the disarming on.
    time.sleep(0.3)
    n = injected(m)
    daemon_serves(m, durable, r, where + ", disarmed")
    if "open" not in failed:
        try:
            got = read_file(m.path("victim"))
        except OSError as e:
            raise AssertionError("%s: reading victim after the fault: %s"
                                 % (where, e))
        check_blocks(got, states, where + ", victim after the fault")
        if not failed:
            assert got == states[-1], where + ": victim differs"
        if "fsync" not in failed:
            durable["victim"] = got  # fsync'd: must survive as it is
    if not ({"create", "new-write", "new-fsync"} & failed):
        durable["victim.new"] = b"n" * 10000
    # the faulted files are writable again, and that sticks
    for name in ("victim.again", "victim" if "fsync" in failed else None):
        if name:
            durable[name] = data(r, 7 * BS + 5)
            write_unbuffered(m.path(name), durable[name], sync=True)
    assert injected(m) == n, "fault fired after disarming"
    finish(m, durable, where)
    if never:
        pytest.skip("the daemon never calls pwritev")


@pytest.mark.parametrize("op", [o for o in OPS if o != "pwritev"])
def test_one_fault_anywhere(make_mount, tmp_path, op):
    """A single failure of the Nth `op` call on any path, in the middle of a
    mixed workload over several files: errors come back as EIO, later
    operations may succeed again, and what was fsync'd stays."""
    ctl = tmp_path / "fault.ctl"
    r = random.Random("once-" + op)
    m = make_mount(opts=["block_size=4K"], env=faultinj_env(ctl=ctl))
    durable = setup_files(m, r)
    fired = 0
    for nth in (1, 2, 5):
        write_fault_ctl(ctl, op=op, nth=nth, errno="EIO")
        for i in range(4):
            name = "w%d" % i
            content = data(r, r.randint(1, 9) * BS + r.randint(0, 999))
            ok = True
            try:
                fd = os.open(m.path(name), os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                assert e.errno == errno.EIO, e
                continue
            try:
                os.ftruncate(fd, len(content) + 3 * BS)
                punch_hole(fd, 0, BS)
                os.pwrite(fd, content, 0)
                os.ftruncate(fd, len(content))
                os.fsync(fd)
            except OSError as e:
                assert e.errno == errno.EIO, e
                ok = False
            try:
                os.close(fd)
            except OSError as e:
                assert e.errno == errno.EIO, e
                ok = False
            tmp = name + ".tmp"
            try:
                os.rename(m.path(name), m.path(tmp))
                os.rename(m.path(tmp), m.path(name))
            except OSError as e:
                assert e.errno == errno.EIO, e
                if os.path.exists(m.path(tmp)):
                    os.rename(m.path(tmp), m.path(name))
            if ok:
                durable[name] = content
            else:
                durable.pop(name, None)
        fired = injected(m)
        write_fault_ctl(ctl)  # the next round arms it again
        daemon_serves(m, durable, r, "%s nth=%d" % (op, nth))
    assert fired >= 1, "the fault never fired:\n" + m.read_log()
    write_fault_ctl(ctl)
    finish(m, durable, "one %s fault" % op)


@pytest.mark.parametrize("op", ["pwrite", "ftruncate"])
def test_failed_truncate_keeps_written_data(make_mount, tmp_path, op):
    """A shrinking truncate that fails (its size record or the cut of the
    container) must not lose bytes an earlier, successful write() put
    there: POSIX leaves the file unchanged by a failed truncate, and what
    the size record says must be what is shown."""
    ctl = tmp_path / "fault.ctl"
    m = make_mount(opts=["block_size=4K"], env=faultinj_env(ctl=ctl))
    r = random.Random(5)
    base = data(r, 8 * BS)
    write_unbuffered(m.path("t"), base, sync=True)
    fd = os.open(m.path("t"), os.O_RDWR)
    try:
        # not yet stored: partial blocks stay dirty in the daemon
        newer = b"W" * 100
        os.pwrite(fd, newer, 5 * BS + 10)
        os.pwrite(fd, newer, 2 * BS + 10)
        write_fault_ctl(ctl, op=op, errno="EIO", path_substr="backing/t")
        try:
            os.ftruncate(fd, 2 * BS + 50)
            failed = False
        except OSError as e:
            assert e.errno == errno.EIO
            failed = True
        write_fault_ctl(ctl)
        assert injected(m) >= 1, m.read_log()
        want = apply(apply(base, "write", 5 * BS + 10, newer), "write",
                     2 * BS + 10, newer)
        if not failed:
            want = want[:2 * BS + 50]
        got = os.pread(fd, len(base) + BS, 0)
        assert len(got) == len(want), \
            "size %d after %s truncate, want %d" % (
                len(got), "failed" if failed else "successful", len(want))
        for off in range(0, len(want), BS):
            assert got[off:off + BS] == want[off:off + BS], \
                "block %d differs after a %s truncate" % (
                    off // BS, "failed" if failed else "successful")
        os.fsync(fd)
    finally:
        os.close(fd)
    m.stop()
    fsck_clean(m, "after truncate fault")
    m.start()
    assert read_file(m.path("t")) == want
    m.stop()
