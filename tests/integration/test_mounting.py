"""Mounting like any filesystem (issue "Move in, live in, move out"):
`mount -t fuse.squeezefs BACKING MNT -o opts` and an /etc/fstab line both go
through libfuse's mount.fuse3 helper, which runs `squeezefs` from the
PATH that mount(8) gives its helpers (`make install` puts it in
/usr/local/bin); `umount` ends it.  And a daemon stopped by SIGTERM in the
middle of a large copy stores what it holds and exits 0: every byte that
an fsync acknowledged before the signal is there afterwards, and fsck is
clean."""

import errno
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

from sqfs_util import BIN, ROOT, run_fsck, wait_for

INSTALLED = "/usr/local/bin/squeezefs"

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="mount(8) and /etc/fstab need root")


@pytest.fixture
def installed():
    """squeezefs where mount.fuse3 finds it: /usr/local/bin, as `make
    install` puts it (a symlink to the binary under test, removed after;
    an installed squeezefs that is not ours is left alone: skip)."""
    if os.path.lexists(INSTALLED):
        if os.path.realpath(INSTALLED) != os.path.realpath(BIN):
            pytest.skip("%s is another squeezefs" % INSTALLED)
        yield INSTALLED
        return
    os.symlink(BIN, INSTALLED)
    try:
        yield INSTALLED
    finally:
        os.unlink(INSTALLED)


def daemons_of(backing):
    """Pids of squeezefs daemons serving `backing` (they daemonize)."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"squeezefs" and \
                os.fsencode(backing) in argv:
            pids.append(int(pid))
    return pids


def mount_type(mnt):
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == mnt:
                return line.split(" - ")[1].split()[0]
    return None


def umount_and_wait(mnt, backing):
    r = subprocess.run(["umount", mnt], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert wait_for(lambda: not daemons_of(backing), timeout=60), \
        "the daemon did not exit after umount"


def use_it(mnt, backing, blksize):
    """Writes and reads through the mount; the option given on the mount
    line (block_size) reached the daemon."""
    data = b"mounted like any filesystem\n" * 5000
    with open(os.path.join(mnt, "f"), "wb") as f:
        f.write(data)
    with open(os.path.join(mnt, "f"), "rb") as f:
        assert f.read() == data
    assert os.stat(os.path.join(mnt, "f")).st_blksize == blksize
    os.mkdir(os.path.join(mnt, "d"))
    os.symlink("../f", os.path.join(mnt, "d", "l"))
    with open(os.path.join(mnt, "d", "l"), "rb") as f:
        assert f.read() == data
    # stored compressed in BACKING, not as the plain bytes
    assert os.path.getsize(os.path.join(backing, "f")) != len(data) or \
        open(os.path.join(backing, "f"), "rb").read() != data


def use_and_umount(mnt, backing, blksize):
    """The mount mount(8) made is squeezefs's; use it, then umount it."""
    try:
        assert mount_type(mnt) == "fuse.squeezefs"
        use_it(mnt, backing, blksize)
    finally:
        if os.path.ismount(mnt):
            umount_and_wait(mnt, backing)


def test_mount_t_fuse_squeezefs(installed, tmp_path):
    backing, mnt = str(tmp_path / "backing"), str(tmp_path / "mnt")
    os.mkdir(backing)
    os.mkdir(mnt)
    r = subprocess.run(["mount", "-t", "fuse.squeezefs", backing, mnt,
                        "-o", "block_size=64K,codec=zstd,noatime"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    use_and_umount(mnt, backing, 64 << 10)
    assert run_fsck(backing).returncode == 0
    # A bad option fails the mount, with squeezefs's message.
    r = subprocess.run(["mount", "-t", "fuse.squeezefs", backing, mnt,
                        "-o", "block_size=3"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode != 0 and "block_size" in r.stderr, r
    assert not os.path.ismount(mnt)


def test_fstab_entry(installed, tmp_path):
    backing, mnt = str(tmp_path / "backing"), str(tmp_path / "mnt")
    os.mkdir(backing)
    os.mkdir(mnt)
    with open("/etc/fstab", "rb") as f:
        saved = f.read()
    line = ("%s %s fuse.squeezefs noauto,nofail,_netdev,"
            "x-systemd.automount,block_size=32K,policy=fast 0 0\n"
            % (backing, mnt))
    try:
        with open("/etc/fstab", "ab") as f:
            f.write(line.encode())
        r = subprocess.run(["mount", mnt], capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        use_and_umount(mnt, backing, 32 << 10)
    finally:
        with open("/etc/fstab", "wb") as f:
            f.write(saved)
    assert run_fsck(backing).returncode == 0


def test_make_install(tmp_path):
    """`make install` puts the binary where mount.fuse3 looks for it."""
    build = os.path.relpath(os.path.dirname(BIN), ROOT)
    dest = tmp_path / "dest"
    r = subprocess.run(["make", "-s", "-C", ROOT, "install", "BUILD=" + build,
                        "DESTDIR=" + str(dest), "PREFIX=/usr/local"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    got = dest / "usr" / "local" / "bin" / "squeezefs"
    assert os.access(got, os.X_OK)
    with open(got, "rb") as a, open(BIN, "rb") as b:
        assert a.read() == b.read()


def test_sigterm_during_large_copy(make_mount):
    """A writer copies files in, fsyncing each; SIGTERM arrives in the
    middle.  The daemon exits 0 after storing everything it holds, every
    file whose fsync returned before the signal reads back whole after a
    remount, and fsck is clean."""
    m = make_mount()
    chunk = (b"".join(b"line %08d of a large copy\n" % k
                      for k in range(4000)))
    synced = []
    stop = threading.Event()
    errors = []

    def writer():
        k = 0
        while not stop.is_set():
            name = m.path("f%04d" % k)
            data = chunk + os.urandom(4096) + b"%d" % k
            try:
                with open(name, "wb") as f:
                    for _ in range(8):
                        f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                synced.append((name, data * 8))
            except OSError as e:
                if e.errno not in (errno.ENOTCONN, errno.ENOENT,
                                   errno.EIO, errno.ECONNABORTED):
                    errors.append(e)
                return
            k += 1

    t = threading.Thread(target=writer)
    t.start()
    assert wait_for(lambda: len(synced) >= 5, timeout=60), \
        "the writer did not get going"
    before = len(synced)
    m.proc.send_signal(signal.SIGTERM)
    rc = m.proc.wait(timeout=120)
    stop.set()
    t.join(timeout=60)
    m.proc = None
    assert rc == 0, "daemon exited %d after SIGTERM:\n%s" % (
        rc, m.read_log()[-3000:])
    assert not errors, errors
    assert wait_for(lambda: not os.path.ismount(m.mnt), timeout=10)
    m.check_log()
    r = run_fsck(m.backing)
    assert r.returncode == 0, r.stdout + r.stderr
    m.start()
    assert len(synced) >= before
    for name, data in synced:
        with open(name, "rb") as f:
            assert f.read() == data, name


@pytest.mark.skipif(shutil.which("fusermount3") is None,
                    reason="no fusermount3")
def test_sigint_and_sighup_also_end_cleanly(make_mount):
    for sig in (signal.SIGINT, signal.SIGHUP):
        m = make_mount(name="s%d" % sig)
        with open(m.path("x"), "wb") as f:
            f.write(b"kept\n" * 1000)
        time.sleep(0.1)
        m.proc.send_signal(sig)
        try:
            rc = m.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            # Where every thread is, for the failure report.
            bt = subprocess.run(["gdb", "-batch", "-p", str(m.proc.pid),
                                 "-ex", "thread apply all bt"],
                                capture_output=True, text=True).stdout
            raise AssertionError("no exit 60 s after signal %d:\n%s\n%s" %
                                 (sig, m.read_log()[-2000:], bt[-12000:]))
        assert rc == 0, m.read_log()[-2000:]
        m.proc = None
        assert wait_for(lambda: not os.path.ismount(m.mnt), timeout=10)
        m.start()
        with open(m.path("x"), "rb") as f:
            assert f.read() == b"kept\n" * 1000
