"""Issue 5, full backing disk: BACKING lives on a 64 MiB tmpfs that the test
fills through the mount with incompressible data.  Writes then fail with
ENOSPC, reported by write(), fsync() and close() alike; after deleting files
writing works again; every file fully written and fsync'd before the disk
filled up reads back intact, also after a remount; fsck is clean."""

import errno
import os
import random

from sqfs_util import (check_contents, fsck_clean, read_file, wait_for,
                       write_and_sync)

SIZE_MB = 64  # conftest.SMALL_TMPFS_MB: the small_tmpfs fixture's
FILE_SIZE = 6 << 20


def top_off(d):
    """Fills what is left of the tmpfs with a plain file outside BACKING,
    so that the next block the daemon stores cannot fit."""
    p = os.path.join(d, "filler")
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for n in (1 << 20, 4096, 1):
            while True:
                try:
                    os.write(fd, b"\xff" * n)
                except OSError as e:
                    assert e.errno == errno.ENOSPC, e
                    break
    finally:
        os.close(fd)
    return p


def test_full_backing_disk(small_tmpfs, make_mount):
    r = random.Random(64)
    backing = small_tmpfs / "backing"
    m = make_mount(backing=backing)
    durable, failures = {}, []
    for i in range(2 * SIZE_MB * (1 << 20) // FILE_SIZE):
        name = "big%02d" % i
        content = r.randbytes(FILE_SIZE)
        res = write_and_sync(m.path(name), content)
        if res is None:
            durable[name] = content
        else:
            failures.append((name,) + res)
            break
    assert failures, "64 MiB never filled up"
    name, where, err = failures[0]
    assert err == errno.ENOSPC, "%s: %s failed with %s, want ENOSPC" % (
        name, where, errno.errorcode.get(err, err))
    assert len(durable) >= 4, "filled up after %d files" % len(durable)
    assert m.proc.poll() is None, "daemon died"
    check_contents(m, durable, "when full")
    # the file that hit ENOSPC reads without errors (old or new blocks)
    read_file(m.path(name))

    # now really full, every path must say so
    filler = top_off(small_tmpfs)
    seen = {}
    # write(): a whole block is stored while the write runs
    fd = os.open(m.path("w"), os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, r.randbytes(4 << 20))
    except OSError as e:
        seen["write"] = e.errno
    try:
        os.close(fd)
    except OSError as e:
        # the writeback cache takes the write and stores it at close
        if m.writeback() and "write" not in seen:
            seen["write"] = e.errno
    # fsync(): a partial block waits in the daemon until the fsync
    fd = os.open(m.path("f"), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, r.randbytes(1000))
    try:
        os.fsync(fd)
    except OSError as e:
        seen["fsync"] = e.errno
    try:
        os.close(fd)
    except OSError:
        pass
    # close(): the flush stores it
    fd = os.open(m.path("c"), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, r.randbytes(1000))
    try:
        os.close(fd)
    except OSError as e:
        seen["close"] = e.errno
    assert seen == {"write": errno.ENOSPC, "fsync": errno.ENOSPC,
                    "close": errno.ENOSPC}, seen
    assert m.proc.poll() is None, "daemon died"
    check_contents(m, durable, "when full, after the failed writes")

    # deleting files makes room again
    os.unlink(filler)
    for n in (name, "w", "f", "c"):
        os.unlink(m.path(n))
    for n in sorted(durable)[:2]:
        os.unlink(m.path(n))
        del durable[n]
    # The space comes back once the kernel has forgotten the unlinked
    # files (FORGET, asynchronous: the daemon holds each one's fd until
    # then), as on any filesystem whose deleted files are still held.
    def free():
        st = os.statvfs(small_tmpfs)
        return st.f_bavail * st.f_frsize
    assert wait_for(lambda: free() >= 2 * FILE_SIZE, timeout=30), \
        "deleting files freed only %d bytes" % free()
    for i in range(3):
        content = r.randbytes(FILE_SIZE // 2) + bytes(100000)
        n = "again%d" % i
        res = write_and_sync(m.path(n), content)
        assert res is None, "%s after deleting: %s" % (n, res)
        durable[n] = content
    check_contents(m, durable, "after deleting")

    m.stop()
    fsck_clean(m, "after ENOSPC")
    m.start()
    check_contents(m, durable, "after remount")
    m.stop()


def test_full_disk_during_conversion(small_tmpfs, make_mount):
    """Moving in on a full disk: converting a plain file needs room for its
    container beside it.  With none, the plain files stay as they are and
    read intact, nothing is left in .squeezefs/tmp, and once there is room
    again the conversion goes on (a full disk is tried again, not given
    up)."""
    r = random.Random(65)
    backing = small_tmpfs / "backing"
    backing.mkdir()
    # Converting random.bin needs 3 MiB more than the disk has (the
    # text file, once converted, frees less than that).
    plain = {"random.bin": r.randbytes(3 << 20),
             "text.txt": b"".join(b"%08d moved in\n" % k
                                  for k in range(20000))}
    for n, data in plain.items():
        with open(backing / n, "wb") as f:
            f.write(data)
    # A first mount makes the volume file (a mount refuses to start when
    # it cannot) and finds the plain files; then the disk fills up.
    m = make_mount(backing=backing, opts=["settle_after=3600"])
    assert wait_for(lambda: "scanned BACKING" in m.read_log(), timeout=30)
    m.stop()
    filler = top_off(small_tmpfs)
    # Room for the statistics, none for a 3 MiB container of random bytes.
    os.truncate(filler, os.path.getsize(filler) - (768 << 10))
    m = make_mount(backing=backing, opts=["settle_after=1", "settle_cpu=100"],
                   name="full")
    # The settle loop met ENOSPC and gave the file back, saying so.
    assert wait_for(lambda: "random.bin not converted yet: No space left "
                    "on device" in m.read_log(), timeout=60), \
        m.read_log()[-2000:]
    check_contents(m, plain, "plain files on a full disk")
    m.stop()
    # What an attempt built is gone with it (a retry may have been under
    # way at the unmount: it stops and cleans up too).
    assert os.listdir(backing / ".squeezefs" / "tmp") == [], \
        os.listdir(backing / ".squeezefs" / "tmp")
    with open(backing / "random.bin", "rb") as f:
        assert f.read(8) != b"\x89SQZ\r\n\x1a\n"
    os.remove(filler)
    m.start()

    def converted():
        for n in plain:
            with open(backing / n, "rb") as f:
                if f.read(8) != b"\x89SQZ\r\n\x1a\n":
                    return False
        return True
    assert wait_for(converted, timeout=120, step=0.5), m.read_log()[-2000:]
    check_contents(m, plain, "converted once there was room")
    m.stop()
    fsck_clean(m, "after conversion on a disk that was full")
