"""POSIX edge cases of a real mount that plain read/write tests miss.

O_DIRECT and the page cache (one fd opened with O_DIRECT, another buffered,
on a 640 KiB range at a 4K-aligned, not block-aligned offset of a 4 MiB
file, filled again and again with alternating bytes for a few seconds):
  * after an O_DIRECT write returns, buffered reads of the range (through a
    buffered fd kept open across the writes, and through a fresh one) see
    only the new bytes, while other threads keep reading the range buffered
    during the writes (those reads may see old or new pages, never zeros
    or bytes that were never written); the bytes around the range keep
    their old value;
  * after a buffered write, an O_DIRECT read sees only the new bytes;
  * the same with an asynchronous O_DIRECT write (io_submit, through
    ctypes) racing buffered reads: once io_getevents reports it done, no
    page read during the write may be left stale in the page cache.

Unmount then mount again at once (100 rounds, each after writing a few MiB
that were not fsync'd, so the old daemon is still storing them when
`umount` returns): the new daemon on the same BACKING and mount point must
come up every time (it waits for the finishing one instead of refusing),
every old daemon exits 0, and every round's data reads back intact; fsck
finds BACKING clean.  A second mount of a BACKING that is really mounted
still fails at once with "already mounted".

SEEK_DATA/SEEK_HOLE and st_blksize agree: st_blksize is the file's own
block size (128 KiB by default, `-o block_size=` for new files, kept by a
file across remounts with another block_size); every offset SEEK_DATA or
SEEK_HOLE returns for a block-aligned query is a multiple of st_blksize or
the file size; no non-zero byte lies in a reported hole; every
st_blksize-aligned chunk never written lies in a reported hole; SEEK_DATA
and SEEK_HOLE at any offset agree with the map they draw.  A small file
that got packed still reports its block size and is all data.  With the
writeback cache (SEEK_* then report the whole file as data, see README)
only st_blksize and "no data reported as a hole" are checked."""

import ctypes
import errno
import hashlib
import mmap
import os
import platform
import random
import signal
import struct
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sqfs_util import (PACK_WAIT, is_packed, run_fsck,  # noqa: E402
                       skip_under, wait_for)

KiB = 1 << 10
MiB = 1 << 20
PAGE = 4096

# ---- O_DIRECT against the page cache ----------------------------------------

RACE_SECONDS = 4.0
FILE_SIZE = 4 * MiB
RANGE_OFF = MiB + 12 * KiB      # 4K-aligned, inside a 128 KiB block
RANGE_LEN = 640 * KiB           # ends inside a block too
MARGIN = 8 * KiB                # bytes around the range that never change
BASE = 0x11                     # what the file holds outside the range
FILLS = (0x55, 0xaa, 0x33, 0xcc, 0x0f, 0xf0)
ALLOWED = bytes((BASE,) + FILLS)


def make_base_file(path):
    with open(path, "wb") as f:
        f.write(bytes([BASE]) * FILE_SIZE)
        os.fsync(f.fileno())


def describe_mismatch(data, fill, base_off):
    """Where `data` (read at file offset `base_off`) differs from all
    `fill` bytes: the first bad page, its byte values, how many pages are
    bad."""
    want = bytes([fill]) * PAGE
    bad = [i for i in range(0, len(data), PAGE)
           if data[i:i + PAGE] != want[:len(data) - i]]
    if not bad:
        return None
    i = bad[0]
    vals = sorted(set(data[i:i + PAGE]))
    return ("%d of %d pages stale/wrong; first at file offset %d holds %s, "
            "want 0x%02x" % (len(bad), (len(data) + PAGE - 1) // PAGE,
                             base_off + i, ["0x%02x" % v for v in vals[:6]],
                             fill))


def check_window(data, fill, what):
    """`data` is the range with MARGIN bytes on each side: the range must
    hold only `fill`, the margins only BASE."""
    lo, hi = data[:MARGIN], data[MARGIN + RANGE_LEN:]
    mid = data[MARGIN:MARGIN + RANGE_LEN]
    assert len(mid) == RANGE_LEN and len(hi) == MARGIN, \
        "%s: short read (%d bytes)" % (what, len(data))
    if mid != bytes([fill]) * RANGE_LEN:
        pytest.fail("%s: %s" % (what, describe_mismatch(mid, fill, RANGE_OFF)))
    assert lo == bytes([BASE]) * MARGIN, \
        "%s: bytes before the range changed" % what
    assert hi == bytes([BASE]) * MARGIN, \
        "%s: bytes after the range changed" % what


def read_window_buffered(fd):
    return os.pread(fd, RANGE_LEN + 2 * MARGIN, RANGE_OFF - MARGIN)


class BufferedReaders:
    """Threads that keep reading the range through buffered fds of their
    own while the test writes it: each read may see old or new pages but
    only bytes that were written to the file."""

    def __init__(self, path, n=2):
        self.path = path
        self.stop = threading.Event()
        self.errors = []
        self.reads = 0
        self.threads = [threading.Thread(target=self.run, daemon=True)
                        for _ in range(n)]

    def run(self):
        try:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                while not self.stop.is_set():
                    data = os.pread(fd, RANGE_LEN, RANGE_OFF)
                    if len(data) != RANGE_LEN:
                        raise AssertionError("concurrent buffered read "
                                             "short: %d" % len(data))
                    odd = data.translate(None, ALLOWED)
                    if odd:
                        raise AssertionError(
                            "concurrent buffered read saw bytes never "
                            "written: %s" % sorted(set(odd))[:6])
                    self.reads += 1
            finally:
                os.close(fd)
        except Exception as e:  # reported by finish()
            self.errors.append(e)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(60)
        return False

    def finish(self):
        self.__exit__()
        assert not any(t.is_alive() for t in self.threads), \
            "buffered reader threads hang"
        if self.errors:
            raise self.errors[0]
        assert self.reads > 0, "the buffered readers never read"


def test_direct_write_then_buffered_read(sqfs):
    """O_DIRECT writes of the range while buffered readers race them; after
    each write returns, a buffered read through a long-lived fd (and every
    few rounds through a fresh fd) sees only the new bytes."""
    m = sqfs
    p = m.path("direct-w")
    make_base_file(p)
    bfd = os.open(p, os.O_RDONLY)
    dfd = os.open(p, os.O_RDWR | os.O_DIRECT)
    buf = mmap.mmap(-1, RANGE_LEN)
    rounds = 0
    try:
        os.pread(bfd, FILE_SIZE, 0)          # the old bytes are cached
        with BufferedReaders(p) as readers:
            end = time.monotonic() + RACE_SECONDS
            while time.monotonic() < end or rounds < 4:
                fill = FILLS[rounds % len(FILLS)]
                buf[:] = bytes([fill]) * RANGE_LEN
                n = os.pwritev(dfd, [buf], RANGE_OFF)
                assert n == RANGE_LEN, "short O_DIRECT write %d" % n
                check_window(read_window_buffered(bfd), fill,
                             "round %d: buffered read (kept fd) after "
                             "O_DIRECT write" % rounds)
                if rounds % 8 == 0:
                    fd = os.open(p, os.O_RDONLY)
                    try:
                        check_window(read_window_buffered(fd), fill,
                                     "round %d: buffered read (new fd) after "
                                     "O_DIRECT write" % rounds)
                    finally:
                        os.close(fd)
                rounds += 1
            readers.finish()
        last = FILLS[(rounds - 1) % len(FILLS)]
    finally:
        os.close(dfd)
        os.close(bfd)
        buf.close()
    m.remount()
    fd = os.open(p, os.O_RDONLY)
    try:
        check_window(read_window_buffered(fd), last, "after remount")
    finally:
        os.close(fd)


def test_buffered_write_then_direct_read(sqfs):
    """Buffered writes of the range through a long-lived fd; after each, an
    O_DIRECT read (of the range and its margins) sees only the new bytes."""
    m = sqfs
    p = m.path("direct-r")
    make_base_file(p)
    bfd = os.open(p, os.O_RDWR)
    dfd = os.open(p, os.O_RDONLY | os.O_DIRECT)
    win = mmap.mmap(-1, RANGE_LEN + 2 * MARGIN)
    rounds = 0
    try:
        os.pread(bfd, FILE_SIZE, 0)
        end = time.monotonic() + RACE_SECONDS
        while time.monotonic() < end or rounds < 4:
            fill = FILLS[rounds % len(FILLS)]
            n = os.pwrite(bfd, bytes([fill]) * RANGE_LEN, RANGE_OFF)
            assert n == RANGE_LEN
            n = os.preadv(dfd, [win], RANGE_OFF - MARGIN)
            assert n == len(win), "short O_DIRECT read %d" % n
            check_window(bytes(win), fill,
                         "round %d: O_DIRECT read after buffered write"
                         % rounds)
            rounds += 1
    finally:
        os.close(dfd)
        os.close(bfd)
        win.close()


# Linux AIO through raw system calls (no libaio in the standard library).
AIO_NR = {"x86_64": (206, 207, 209, 208),      # setup, destroy, submit,
          "aarch64": (0, 1, 2, 4)}             # getevents
IOCB = struct.Struct("<QIIHhIQQqQII")           # struct iocb, 64 bytes
IO_EVENT = struct.Struct("<QQqq")
IOCB_CMD_PWRITE = 1


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class Aio:
    def __init__(self):
        nrs = AIO_NR.get(platform.machine())
        if nrs is None:
            pytest.skip("no AIO syscall numbers for %s" % platform.machine())
        self.nr_setup, self.nr_destroy, self.nr_submit, self.nr_getevents = nrs
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.libc.syscall.restype = ctypes.c_long
        self.ctx = ctypes.c_ulong(0)
        if self.libc.syscall(ctypes.c_long(self.nr_setup), ctypes.c_long(4),
                             ctypes.byref(self.ctx)) != 0:
            e = ctypes.get_errno()
            pytest.skip("io_setup: %s" % os.strerror(e))
        self.iocb = ctypes.create_string_buffer(IOCB.size)
        self.event = ctypes.create_string_buffer(IO_EVENT.size)

    def submit_pwrite(self, fd, buf, length, offset, tag):
        addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        IOCB.pack_into(self.iocb, 0, tag, 0, 0, IOCB_CMD_PWRITE, 0, fd, addr,
                       length, offset, 0, 0, 0)
        arr = (ctypes.c_void_p * 1)(ctypes.addressof(self.iocb))
        r = self.libc.syscall(ctypes.c_long(self.nr_submit), self.ctx,
                              ctypes.c_long(1), arr)
        if r != 1:
            raise OSError(ctypes.get_errno(), "io_submit returned %d" % r)

    def wait(self, timeout=60):
        """Waits for the one request in flight; returns its result."""
        ts = Timespec(timeout, 0)
        while True:
            r = self.libc.syscall(ctypes.c_long(self.nr_getevents), self.ctx,
                                  ctypes.c_long(1), ctypes.c_long(1),
                                  self.event, ctypes.byref(ts))
            if r == 1:
                return IO_EVENT.unpack(self.event.raw)[2]
            e = ctypes.get_errno()
            if r < 0 and e == errno.EINTR:
                continue
            raise AssertionError("io_getevents returned %d (%s): the "
                                 "O_DIRECT write did not complete"
                                 % (r, os.strerror(e) if r < 0 else "timeout"))

    def close(self):
        self.libc.syscall(ctypes.c_long(self.nr_destroy), self.ctx)


def test_async_direct_write_racing_buffered_reads(sqfs):
    """The original report: an asynchronous O_DIRECT write (io_submit) of
    the range while buffered reads of it go on.  Pages read during the
    write may be old; once io_getevents reports the write done, a buffered
    read (kept fd, new fd) must see only the new bytes: no page read
    during the write may stay in the page cache."""
    m = sqfs
    p = m.path("direct-aio")
    make_base_file(p)
    aio = Aio()
    bfd = os.open(p, os.O_RDONLY)
    dfd = os.open(p, os.O_RDWR | os.O_DIRECT)
    buf = mmap.mmap(-1, RANGE_LEN)
    rounds = 0
    stale = []
    try:
        os.pread(bfd, FILE_SIZE, 0)
        with BufferedReaders(p) as readers:
            end = time.monotonic() + RACE_SECONDS
            while time.monotonic() < end or rounds < 4:
                fill = FILLS[rounds % len(FILLS)]
                buf[:] = bytes([fill]) * RANGE_LEN
                aio.submit_pwrite(dfd, buf, RANGE_LEN, RANGE_OFF, rounds)
                # a read of our own while the write is in flight
                os.pread(bfd, RANGE_LEN, RANGE_OFF)
                res = aio.wait()
                assert res == RANGE_LEN, \
                    "async O_DIRECT write returned %d" % res
                data = read_window_buffered(bfd)
                mid = data[MARGIN:MARGIN + RANGE_LEN]
                if mid != bytes([fill]) * RANGE_LEN:
                    stale.append("round %d (kept fd): %s" % (
                        rounds, describe_mismatch(mid, fill, RANGE_OFF)))
                else:
                    check_window(data, fill, "round %d" % rounds)
                if rounds % 4 == 0:
                    fd = os.open(p, os.O_RDONLY)
                    try:
                        data = os.pread(fd, RANGE_LEN, RANGE_OFF)
                    finally:
                        os.close(fd)
                    if data != bytes([fill]) * RANGE_LEN:
                        stale.append("round %d (new fd): %s" % (
                            rounds, describe_mismatch(data, fill, RANGE_OFF)))
                rounds += 1
            readers.finish()
    finally:
        aio.close()
        os.close(dfd)
        os.close(bfd)
        buf.close()
    assert not stale, ("buffered reads after %d of %d completed async "
                       "O_DIRECT writes returned stale bytes; first: %s"
                       % (len(stale), rounds, stale[0]))


# ---- unmount and mount again at once ----------------------------------------

CYCLES = 100
CYCLE_TEXT = MiB        # compressed with brotli: the old daemon is still
CYCLE_RANDOM = MiB      # storing it when umount returns (stored raw, fast)
CYCLE_SMALL = 4         # packed at unmount
WORDS = (b"squeeze compress block container pack image hole seek data "
         b"mount unmount daemon store write read lorem ipsum dolor").split()


def base_text(n, seed=7):
    rnd = random.Random(seed)
    out = []
    size = 0
    i = 0
    while size < n:
        line = b"%d %s\n" % (i, b" ".join(rnd.choice(WORDS) for _ in
                                          range(rnd.randint(3, 12))))
        out.append(line)
        size += len(line)
        i += 1
    return b"".join(out)[:n]


def unmount(mnt):
    if os.geteuid() == 0:
        r = subprocess.run(["umount", mnt], capture_output=True, text=True)
    else:
        r = subprocess.run(["fusermount3", "-u", mnt], capture_output=True,
                           text=True)
    assert r.returncode == 0, "unmounting %s failed: %s" % (mnt, r.stderr)


def reap(old):
    """Waits for an unmounted daemon; returns its exit code (kills it and
    returns None if it does not exit)."""
    try:
        rc = old.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        old.proc.kill()
        old.proc.wait()
        rc = None
    old.proc = None     # its mount point now belongs to a newer daemon
    return rc


def test_unmount_then_mount_again_at_once(make_mount, tmp_path):
    """100 rounds of: write 2 MiB (not fsync'd) and some small files,
    `umount`, start a new daemon on the same BACKING and mount point right
    away.  Each new daemon must mount; each old one must exit 0 (reaped
    after its successor mounted); all rounds' data reads back intact."""
    backing = tmp_path / "cyc-backing"
    mnt = tmp_path / "cyc-mnt"
    cur = make_mount(name="cyc", backing=backing, mnt=mnt)
    text = base_text(CYCLE_TEXT + CYCLES * 997)
    sums = {}
    pending = []        # unmounted daemons not reaped yet: (round, Mount)
    t0 = time.monotonic()
    waits = []
    try:
        for i in range(CYCLES):
            big = b"round %d\n" % i + text[i * 997:i * 997 + CYCLE_TEXT] + \
                os.urandom(CYCLE_RANDOM)
            name = "r%03d" % i
            with open(cur.path(name), "wb") as f:
                f.write(big)
            sums[name] = hashlib.sha256(big).hexdigest()
            for k in range(CYCLE_SMALL):
                small = b"round %d small %d\n" % (i, k) + \
                    text[k * 131:k * 131 + 500 + 211 * k]
                sname = "s%03d-%d" % (i, k)
                with open(cur.path(sname), "wb") as f:
                    f.write(small)
                sums[sname] = hashlib.sha256(small).hexdigest()
            unmount(cur.mnt)
            pending.append((i, cur))
            nxt = make_mount(name="cyc", start=False, backing=backing,
                             mnt=mnt)
            t = time.monotonic()
            failed = None
            try:
                nxt.start()
            except RuntimeError as e:
                failed = str(e)
            if failed:
                pytest.fail("round %d: mounting BACKING again right after "
                            "umount failed: %s" % (i, failed))
            waits.append(time.monotonic() - t)
            cur = nxt
            # reap the previous daemons now that their successor is up
            while pending:
                j, old = pending.pop()
                rc = reap(old)
                assert rc == 0, ("round %d: the unmounted daemon exited "
                                 "%s:\n%s" % (j, rc, old.read_log()[-3000:]))
                old.check_log()
            assert os.path.ismount(cur.mnt), ("round %d: the new mount "
                                              "vanished when the old daemon "
                                              "exited" % i)
        elapsed = time.monotonic() - t0
        # everything written in every round is there
        for name, want in sorted(sums.items()):
            with open(cur.path(name), "rb") as f:
                got = hashlib.sha256(f.read()).hexdigest()
            assert got == want, "%s does not read back intact" % name
    finally:
        for j, old in pending:
            if old.proc is not None:
                reap(old)
    cur.stop()
    r = run_fsck(backing)
    assert r.returncode == 0, "fsck after the remount rounds:\n%s%s" % (
        r.stdout[-3000:], r.stderr[-3000:])
    print("%d rounds in %.1f s; new mount up after %.3f s at most "
          "(median %.3f s)" % (CYCLES, elapsed, max(waits),
                               sorted(waits)[len(waits) // 2]))


def test_second_mount_of_a_mounted_backing_fails_at_once(make_mount):
    """A BACKING that is really mounted (busy storing, or idle) cannot be
    mounted a second time at another mount point: the second daemon exits
    non-zero within 5 s saying "already mounted", and the first mount
    keeps working."""
    m = make_mount(name="one")
    other = make_mount(name="two", start=False, backing=m.backing)
    data = base_text(4 * MiB, seed=11)
    for attempt in range(4):
        busy = attempt % 2 == 0
        if busy:        # unstored data: the daemon is storing it
            with open(m.path("busy%d" % attempt), "wb") as f:
                f.write(data)
        t = time.monotonic()
        proc = subprocess.Popen(other.argv(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            if os.path.ismount(other.mnt):
                subprocess.run(["fusermount3", "-u", "-z", other.mnt],
                               check=False)
            pytest.fail("attempt %d (%s): a second mount of a mounted BACKING "
                        "did not fail within 5 s" %
                        (attempt, "busy" if busy else "idle"))
        took = time.monotonic() - t
        out = out.decode(errors="replace")
        assert proc.returncode != 0, ("attempt %d: a second mount of a "
                                      "mounted BACKING succeeded" % attempt)
        assert "already mounted" in out, \
            "attempt %d: second mount failed without 'already mounted': %s" % (
                attempt, out[-2000:])
        assert took < 5, took
        assert not os.path.ismount(other.mnt)
    for attempt in (0, 2):
        with open(m.path("busy%d" % attempt), "rb") as f:
            assert f.read() == data
    m.stop()


# ---- st_blksize and SEEK_DATA/SEEK_HOLE -------------------------------------

BS_PARAMS = [pytest.param(None, 128 * KiB, id="default-128K"),
             pytest.param("4K", 4 * KiB, id="4K")]


def seek(fd, off, whence):
    """lseek returning None for ENXIO."""
    try:
        return os.lseek(fd, off, whence)
    except OSError as e:
        assert e.errno == errno.ENXIO, "lseek(%d, %s): %s" % (
            off, "SEEK_DATA" if whence == os.SEEK_DATA else "SEEK_HOLE", e)
        return None


def seek_map(fd, size, bs, strict):
    """Walks the file with SEEK_DATA/SEEK_HOLE from offset 0; returns the
    data regions [(start, end)].  With `strict`, every offset returned is
    a multiple of `bs` or the size (queries are at region boundaries)."""
    regions = []
    off = 0
    while off < size:
        d = seek(fd, off, os.SEEK_DATA)
        if d is None:
            break
        assert off <= d < size, "SEEK_DATA(%d) = %d (size %d)" % (off, d, size)
        if regions:
            assert d > off, ("SEEK_DATA(%d) = %d: the offset SEEK_HOLE "
                             "returned is data" % (off, d))
        h = seek(fd, d, os.SEEK_HOLE)
        assert h is not None and d < h <= size, \
            "SEEK_HOLE(%d) = %s right after SEEK_DATA (size %d)" % (d, h, size)
        if strict:
            for what, q, r in (("SEEK_DATA", off, d), ("SEEK_HOLE", d, h)):
                assert r % bs == 0 or r == size, \
                    ("%s(%d) = %d: neither a multiple of st_blksize %d nor "
                     "the size %d" % (what, q, r, bs, size))
        regions.append((d, h))
        off = h
    return regions


def in_regions(regions, o):
    for a, b in regions:
        if a <= o < b:
            return (a, b)
    return None


def check_probes(fd, size, bs, regions, strict, rnd):
    """SEEK_DATA/SEEK_HOLE at many offsets (block boundaries, around region
    edges, random ones) agree with `regions`."""
    probes = set(range(0, size, bs))
    for a, b in regions:
        probes.update((a - 1, a, a + 1, b - 1, b, b + 1))
    probes.update(rnd.randrange(size) for _ in range(200))
    probes = sorted(o for o in probes if 0 <= o < size)
    for o in probes:
        reg = in_regions(regions, o)
        d = seek(fd, o, os.SEEK_DATA)
        h = seek(fd, o, os.SEEK_HOLE)
        if reg:
            assert d == o, "SEEK_DATA(%d) = %s inside data %s" % (o, d, reg)
            assert h == reg[1], \
                "SEEK_HOLE(%d) = %s inside data %s" % (o, h, reg)
        else:
            nxt = [a for a, _ in regions if a > o]
            assert d == (nxt[0] if nxt else None), \
                "SEEK_DATA(%d) = %s in a hole; data regions %s" % (
                    o, d, regions)
            assert h == o, "SEEK_HOLE(%d) = %s in a hole" % (o, h)
        if strict and o % bs == 0:
            for what, r in (("SEEK_DATA", d), ("SEEK_HOLE", h)):
                assert r is None or r % bs == 0 or r == size, \
                    ("%s(%d) = %d: neither a multiple of st_blksize %d nor "
                     "the size %d" % (what, o, r, bs, size))


def check_file_map(m, p, bs, size, written, zeroed, content, when):
    """st_blksize, and SEEK_DATA/SEEK_HOLE against the bytes of `p`."""
    wb = m.writeback()
    assert os.stat(p).st_blksize == bs, \
        "%s: stat st_blksize %d, the file's block size is %d" % (
            when, os.stat(p).st_blksize, bs)
    fd = os.open(p, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        assert st.st_blksize == bs, \
            "%s: fstat st_blksize %d, the file's block size is %d" % (
                when, st.st_blksize, bs)
        assert st.st_size == size
        data = os.pread(fd, size + 1, 0)
        assert data == content, "%s: the file does not read back" % when
        regions = seek_map(fd, size, bs, strict=not wb)
        # no non-zero byte in a hole
        holes = []
        prev = 0
        for a, b in regions + [(size, size)]:
            if a > prev:
                holes.append((prev, a))
            prev = b
        for a, b in holes:
            if data[a:b].count(0) != b - a:
                first = a + next(i for i, c in enumerate(data[a:b]) if c)
                pytest.fail("%s: byte %d is data (0x%02x) but lies in the "
                            "reported hole [%d, %d); regions %s"
                            % (when, first, data[first], a, b, regions))
        for off, n in written:
            for o in (off, off + n - 1):
                assert in_regions(regions, o), \
                    "%s: written byte %d reported as a hole; regions %s" % (
                        when, o, regions)
        if wb:
            return
        # every never-written block lies in a hole
        touched = written + zeroed
        for start in range(0, size, bs):
            end = min(start + bs, size)
            if any(o < end and start < o + n for o, n in touched):
                continue
            for a, b in regions:
                assert not (a < end and start < b), \
                    ("%s: block [%d, %d) was never written but SEEK_DATA "
                     "reports data [%d, %d)" % (when, start, end, a, b))
        check_probes(fd, size, bs, regions, True, random.Random(size + bs))
    finally:
        os.close(fd)


@pytest.mark.parametrize("opt,bs", BS_PARAMS)
def test_seek_data_hole_agree_with_blksize(make_mount, opt, bs):
    """A sparse file with data at 0..4K, 10 bytes at 1 MiB, 200 bytes
    across a block boundary, zeros written at 3 MiB, 7 bytes at the end of
    an unaligned size: checked while the data is unstored, after fsync and
    after a remount (never opened by that daemon)."""
    m = make_mount(opts=["block_size=" + opt] if opt else None)
    if opt is None:  # the run's default (make test-matrix's block_size=)
        bs = m.block_size()
    p = m.path("sparse")
    size = 4 * MiB + 12345
    rnd = random.Random(3)
    # 200 bytes across the first block boundary past 2 MiB; at 2 MiB
    # itself with 1M blocks (make test-matrix's block_size=1M), whose next
    # boundary is the zeros at 3 MiB
    cross = 2 * MiB + bs if 2 * MiB + bs < 3 * MiB else 2 * MiB
    written = [(0, 4096), (MiB, 10), (cross - 100, 200), (size - 7, 7)]
    zeroed = [(3 * MiB, 64 * KiB)]
    content = bytearray(size)
    fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, size)
        for off, n in written:
            chunk = bytes(rnd.randrange(1, 256) for _ in range(n))
            assert os.pwrite(fd, chunk, off) == n
            content[off:off + n] = chunk
        for off, n in zeroed:
            os.pwrite(fd, bytes(n), off)
            content[off:off + n] = bytes(n)
        content = bytes(content)
        check_file_map(m, p, bs, size, written, zeroed, content,
                       "before fsync")
        os.fsync(fd)
        check_file_map(m, p, bs, size, written, zeroed, content,
                       "after fsync")
    finally:
        os.close(fd)
    m.remount()
    check_file_map(m, p, bs, size, written, zeroed, content, "after remount")


@pytest.mark.parametrize("opt,bs", BS_PARAMS)
def test_packed_small_file_blksize_and_seek(make_mount, opt, bs):
    """A small file packed about a second after its close still reports
    its block size as st_blksize, and SEEK_DATA/SEEK_HOLE see it as data
    from 0 to its size; also after a remount."""
    skip_under("nopack", reason="this test checks a packed file")
    m = make_mount(opts=["block_size=" + opt] if opt else None)
    if opt is None:  # the run's default (make test-matrix's block_size=)
        bs = m.block_size()
    p = m.path("small.txt")
    content = b"a small text file that gets packed\n" * 12
    with open(p, "wb") as f:
        f.write(content)
    assert wait_for(lambda: is_packed(m.bpath("small.txt")),
                    timeout=PACK_WAIT), "small.txt was not packed"
    size = len(content)

    def check(when):
        assert os.stat(p).st_blksize == bs, \
            "%s: packed file: stat st_blksize %d, want %d" % (
                when, os.stat(p).st_blksize, bs)
        fd = os.open(p, os.O_RDONLY)
        try:
            assert os.fstat(fd).st_blksize == bs, \
                "%s: packed file: fstat st_blksize %d, want %d" % (
                    when, os.fstat(fd).st_blksize, bs)
            assert os.pread(fd, size + 10, 0) == content
            assert seek(fd, 0, os.SEEK_DATA) == 0
            assert seek(fd, 0, os.SEEK_HOLE) == size
            assert seek(fd, 100, os.SEEK_DATA) == 100
            assert seek(fd, 100, os.SEEK_HOLE) == size
            assert seek(fd, size - 1, os.SEEK_HOLE) == size
            assert seek(fd, size, os.SEEK_DATA) is None
        finally:
            os.close(fd)
        assert is_packed(m.bpath("small.txt")), "%s: no longer packed" % when

    check("packed")
    m.remount()
    check("packed, after remount")


def test_blksize_is_the_files_own_after_remount(make_mount):
    """A file created under block_size=4K keeps reporting 4096 (and holes
    at 4K granularity) once mounted with the default 128K, and a new file
    there reports 128K (the run's default under make test-matrix's
    block_size=1M; 128K given in its block_size=4K pass)."""
    m = make_mount(opts=["block_size=4K"])
    small_bs = m.path("made-4k")
    fd = os.open(small_bs, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, 256 * KiB)
        os.pwrite(fd, b"x" * 100, 0)
        os.pwrite(fd, b"y" * 100, 64 * KiB)
        os.fsync(fd)
    finally:
        os.close(fd)
    m.stop()
    m.opts = []
    if m.block_size() == 4 * KiB:
        m.opts = ["block_size=128K"]
    new_bs = m.block_size()
    m.start()
    with open(m.path("made-128k"), "wb") as f:
        f.write(b"z" * 5000)
        f.flush()
        os.fsync(f.fileno())
        assert os.fstat(f.fileno()).st_blksize == new_bs
    assert os.stat(small_bs).st_blksize == 4 * KiB
    fd = os.open(small_bs, os.O_RDONLY)
    try:
        assert os.fstat(fd).st_blksize == 4 * KiB
        if m.writeback():
            assert seek(fd, 0, os.SEEK_HOLE) >= 64 * KiB + 100
        else:
            assert seek(fd, 0, os.SEEK_HOLE) == 4 * KiB
            assert seek(fd, 4 * KiB, os.SEEK_DATA) == 64 * KiB
            assert seek(fd, 64 * KiB, os.SEEK_HOLE) == 68 * KiB
            assert seek(fd, 68 * KiB, os.SEEK_DATA) is None
    finally:
        os.close(fd)
    assert os.stat(m.path("made-128k")).st_blksize == new_bs


# A child that keeps O_DIRECT writes of one range going while two threads
# read it buffered, dropping the page cache between reads (the kernel then
# holds pages locked for reads the daemon must answer).
DIRECT_HAMMER = r"""
import mmap, os, sys, threading, time
p, secs = sys.argv[1], float(sys.argv[2])
n = 256 << 10
stop = threading.Event()
def reader():
    fd = os.open(p, os.O_RDONLY)
    while not stop.is_set():
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.pread(fd, 2 * n, 0)
    os.close(fd)
ts = [threading.Thread(target=reader) for _ in range(2)]
for t in ts:
    t.start()
dfd = os.open(p, os.O_RDWR | os.O_DIRECT)
buf = mmap.mmap(-1, n)
end = time.monotonic() + secs
k = 0
while time.monotonic() < end:
    buf[:] = bytes([k & 0xff]) * n
    os.pwrite(dfd, buf, n // 2)
    k += 1
stop.set()
for t in ts:
    t.join()
print(k)
"""


def abort_fuse_connection():
    """Ends a hung FUSE connection (fusectl), so that cleanup can go on."""
    ctl = "/sys/fs/fuse/connections"
    if not os.listdir(ctl):
        subprocess.run(["mount", "-t", "fusectl", "none", ctl], check=False)
    for c in os.listdir(ctl):
        try:
            with open(os.path.join(ctl, c, "abort"), "w") as f:
                f.write("1")
        except OSError:
            pass


def test_direct_writes_with_one_thread_never_hang(make_mount):
    """With a single request thread (max_threads=1), an O_DIRECT write that
    waited for the kernel to drop its pages before replying would wait for
    a buffered read only that thread could answer: the daemon leaves the
    dropping to another thread then.  Writes and reads go on to the end."""
    m = make_mount(opts=["max_threads=1"])
    p = m.path("direct-one-thread")
    with open(p, "wb") as f:
        f.write(b"\x11" * (1 << 20))
    proc = subprocess.Popen([sys.executable, "-c", DIRECT_HAMMER, p, "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        # the child waits in the kernel for the hung mount: free it first
        abort_fuse_connection()
        proc.kill()
        proc.communicate(timeout=30)
        m.kill()
        pytest.fail("O_DIRECT writes with buffered readers hung the mount")
    assert proc.returncode == 0 and int(out) > 0, err[-2000:]
