"""Command line of the daemon: --help/--version, one-line startup errors,
the mount lock, the reserved .squeezefs directory, and that block_size= and
codec= really reach the containers on disk (issue 2, "Command line")."""

import errno
import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from sqfs_util import (BIN, CODEC_IDS, ctr_current_record, ctr_header,
                       wait_for)

TEXT = b"".join(b"line %06d: the quick brown fox jumps over the lazy dog\n" % i
                for i in range(20000))  # ~1.1 MB, very compressible


def run_daemon_expect_failure(args, timeout=15, mnt=None, pre=None):
    """Runs squeezefs in the foreground with `args`; it must exit on its own.
    If it mounts or hangs instead, the mount is taken down and the test fails.
    Returns (rc, stdout, stderr)."""
    argv = (pre or []) + [BIN, "-f"] + list(args)
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=subprocess.DEVNULL, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        if mnt and os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", mnt], check=False)
        try:
            out, err = p.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        if mnt and os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", "-z", mnt], check=False)
        pytest.fail("squeezefs %r did not exit by itself (it should refuse "
                    "to start); stderr: %s" % (args, err))
    if mnt and os.path.ismount(mnt):  # daemonized despite -f?
        subprocess.run(["fusermount3", "-u", mnt], check=False)
        pytest.fail("squeezefs %r mounted instead of failing" % (args,))
    return p.returncode, out, err


def assert_one_line_error(rc, err, what):
    assert rc != 0, "%s: squeezefs exited 0" % what
    assert rc == 1, "%s: exit status %d, spec says 1" % (what, rc)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, "%s: expected one line on stderr, got %r" % (what, err)
    assert lines[0].startswith("squeezefs:"), \
        "%s: message should start with 'squeezefs:': %r" % (what, lines[0])


def test_help_exits_0():
    r = subprocess.run([BIN, "--help"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0, r
    text = r.stdout + r.stderr
    for word in ("block_size", "codec", "cache_size"):
        assert word in text, "--help does not mention %s:\n%s" % (word, text)


def test_version_exits_0():
    r = subprocess.run([BIN, "--version"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0, r
    assert "squeezefs" in (r.stdout + r.stderr).lower(), r


def test_no_arguments_is_an_error():
    r = subprocess.run([BIN], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0, r


# ---- startup errors ---------------------------------------------------------

def _setup(kind, tmp):
    """Returns (args, mountpoint to guard) for one startup error `kind`."""
    b = tmp / "backing"
    m = tmp / "mnt"
    b.mkdir()
    m.mkdir()
    if kind == "backing_missing":
        return [str(tmp / "nope"), str(m)], m
    if kind == "backing_not_dir":
        f = tmp / "file"
        f.write_bytes(b"x")
        return [str(f), str(m)], m
    if kind == "mountpoint_missing":
        return [str(b), str(tmp / "nope-mnt")], None
    if kind == "mountpoint_inside_backing":
        inner = b / "sub" / "mnt"
        inner.mkdir(parents=True)
        return [str(b), str(inner)], inner
    if kind == "mountpoint_is_backing":
        return [str(b), str(b)], b
    if kind == "backing_inside_mountpoint":
        inner = m / "sub" / "backing"
        inner.mkdir(parents=True)
        return [str(inner), str(m)], m
    if kind == "mountpoint_inside_backing_via_symlink":
        (tmp / "alias").symlink_to(b)
        (b / "mnt2").mkdir()
        return [str(tmp / "alias"), str(b / "mnt2")], b / "mnt2"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", [
    "backing_missing", "backing_not_dir", "mountpoint_missing",
    "mountpoint_inside_backing", "mountpoint_is_backing",
    "backing_inside_mountpoint", "mountpoint_inside_backing_via_symlink"])
def test_startup_path_errors(tmp_path, kind):
    args, guard = _setup(kind, tmp_path)
    rc, out, err = run_daemon_expect_failure(
        args, mnt=str(guard) if guard else None)
    assert_one_line_error(rc, err, kind)


def test_backing_unreadable(tmp_path):
    """An unreadable BACKING (mode 000 for a daemon without
    CAP_DAC_OVERRIDE, as root would otherwise read anything)."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) missing")
    b = tmp_path / "backing"
    m = tmp_path / "mnt"
    b.mkdir()
    m.mkdir()
    os.chmod(b, 0)
    try:
        rc, out, err = run_daemon_expect_failure(
            [str(b), str(m)], mnt=str(m),
            pre=["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                 "--inh-caps=-dac_override,-dac_read_search"])
    finally:
        os.chmod(b, 0o755)
    assert_one_line_error(rc, err, "unreadable backing")


@pytest.mark.parametrize("opt", [
    "block_size=3000", "block_size=2M", "block_size=2K", "block_size=0",
    "block_size=abc", "codec=foo", "codec=zstd:99", "codec=zlib:10",
    "codec=lz4:x", "cache_size=abc"])
def test_bad_option_values(tmp_path, opt):
    b = tmp_path / "backing"
    m = tmp_path / "mnt"
    b.mkdir()
    m.mkdir()
    rc, out, err = run_daemon_expect_failure(["-o", opt, str(b), str(m)],
                                             mnt=str(m))
    assert_one_line_error(rc, err, opt)
    assert not os.listdir(b) or os.listdir(b) == [".squeezefs"], \
        "refused mount left files in BACKING: %r" % os.listdir(b)


def test_second_mount_of_same_backing_fails(make_mount, tmp_path):
    m1 = make_mount(name="one")
    with open(m1.path("f"), "wb") as f:
        f.write(b"first mount\n")
    assert os.path.exists(m1.bpath(".squeezefs", "lock")), \
        "no lock file BACKING/.squeezefs/lock while mounted"
    m2dir = tmp_path / "second-mnt"
    m2dir.mkdir()
    rc, out, err = run_daemon_expect_failure([m1.backing, str(m2dir)],
                                             mnt=str(m2dir))
    assert_one_line_error(rc, err, "second mount of the same BACKING")
    # the first mount is unharmed
    with open(m1.path("f"), "rb") as f:
        assert f.read() == b"first mount\n"
    assert m1.proc.poll() is None
    # after a clean unmount the lock is released: mounting again works
    m1.remount()
    with open(m1.path("f"), "rb") as f:
        assert f.read() == b"first mount\n"


def test_lock_released_after_kill(make_mount):
    """A kill -9'd daemon must not leave BACKING locked forever."""
    m = make_mount()
    with open(m.path("f"), "wb") as f:
        f.write(b"data")
    m.kill()
    m.start()
    assert os.path.exists(m.path("f"))


# ---- the reserved directory -------------------------------------------------

def test_reserved_dir_invisible(sqfs):
    """BACKING/.squeezefs stays hidden: the mount's name of it is the
    control directory (test_control.py), which no listing shows."""
    with open(sqfs.path("visible"), "wb") as f:
        f.write(b"x")
    assert os.path.isdir(sqfs.bpath(".squeezefs"))
    ls = subprocess.run(["ls", "-a", sqfs.mnt], capture_output=True, text=True,
                        check=True).stdout.split()
    assert "visible" in ls
    assert ".squeezefs" not in ls, ls
    assert ".squeezefs" not in os.listdir(sqfs.mnt)
    # reachable by name: the control directory, not BACKING's
    assert "stats" in os.listdir(sqfs.path(".squeezefs"))
    with pytest.raises(FileNotFoundError):
        os.stat(sqfs.path(".squeezefs", "lock"))
    # it cannot be made, removed or replaced from inside either
    with pytest.raises(OSError):
        os.mkdir(sqfs.path(".squeezefs"))
    with pytest.raises(OSError):
        os.rmdir(sqfs.path(".squeezefs"))
    assert ".squeezefs" not in os.listdir(sqfs.mnt)
    assert os.path.isdir(sqfs.bpath(".squeezefs"))


def test_ro_option(make_mount):
    m = make_mount(name="rw")
    with open(m.path("f"), "wb") as f:
        f.write(TEXT)
    m.stop()
    m.opts = ["ro"]
    m.start()
    with open(m.path("f"), "rb") as f:
        assert f.read() == TEXT
    with pytest.raises(OSError) as ei:
        open(m.path("g"), "wb")
    assert ei.value.errno == errno.EROFS


# ---- options reach the disk -------------------------------------------------

@pytest.mark.parametrize("spelling,shift", [
    ("4096", 12), ("4K", 12), ("8K", 13), ("64K", 16), ("128K", 17),
    ("1M", 20), (None, 17)])
def test_block_size_option_recorded(make_mount, spelling, shift):
    m = make_mount(opts=["block_size=" + spelling] if spelling else None)
    data = (TEXT * 4)[:3 * (1 << shift) + 1000]
    with open(m.path("f"), "wb") as f:
        f.write(data)
    m.remount()
    with open(m.path("f"), "rb") as f:
        assert f.read() == data
    m.stop()
    h = ctr_header(m.bpath("f"))
    assert h["magic_ok"], "backing file is not a container"
    assert h["block_shift"] == shift, h
    assert h["hdr_size"] == 128
    # blocks 0..3 have records at the documented slots
    for i in range(4):
        cur = ctr_current_record(m.bpath("f"), i)
        assert cur is not None, "no record for block %d" % i
        assert cur[1]["hdr"].get("b") == i, cur


def test_block_size_fixed_per_file(make_mount):
    """A file keeps the block size it was created with across a remount
    with another block_size=."""
    m = make_mount(opts=["block_size=4K"])
    with open(m.path("old"), "wb") as f:
        f.write(TEXT[:100000])
    m.stop()
    m.opts = ["block_size=64K"]
    m.start()
    with open(m.path("old"), "r+b") as f:
        f.seek(50000)
        f.write(b"PATCH")
    with open(m.path("new"), "wb") as f:
        f.write(TEXT[:100000])
    m.remount()
    expect = bytearray(TEXT[:100000])
    expect[50000:50005] = b"PATCH"
    with open(m.path("old"), "rb") as f:
        assert f.read() == bytes(expect)
    m.stop()
    assert ctr_header(m.bpath("old"))["block_shift"] == 12
    assert ctr_header(m.bpath("new"))["block_shift"] == 16


@pytest.mark.parametrize("codec,cid,level", [
    ("none", 0, None), ("lz4", 1, None), ("zstd", 2, None),
    ("zstd:7", 2, 7), ("zlib:6", 3, 6), ("brotli:5", 4, 5),
    # auto: the analyzer picks; text must come out compressed by some codec
    ("auto", None, None), (None, None, None)])
def test_codec_option_recorded(make_mount, codec, cid, level):
    m = make_mount(opts=["codec=" + codec] if codec else None)
    with open(m.path("f"), "wb") as f:
        f.write(TEXT)
    m.remount()
    with open(m.path("f"), "rb") as f:
        assert f.read() == TEXT
    st = os.stat(m.path("f"))
    m.stop()
    bs = ctr_header(m.bpath("f"))["block_size"]
    nblocks = (len(TEXT) + bs - 1) // bs
    for i in range(nblocks):
        cur = ctr_current_record(m.bpath("f"), i, bs)
        assert cur is not None, "block %d has no record" % i
        hdr = cur[1]["hdr"]
        if cid is None:
            assert hdr.get("c") in (1, 2, 3, 4), "block %d: codec %r (%s)" % (
                i, hdr.get("c"), codec)
        else:
            assert hdr.get("c") == cid, "block %d: codec %r, wanted %d (%s)" % (
                i, hdr.get("c"), cid, codec)
        if level is not None:
            assert hdr.get("l") == level, hdr
        raw = min(bs, len(TEXT) - i * bs)
        assert hdr.get("r") == raw, hdr
        if cid == 0:
            assert hdr.get("s") == raw, hdr
        else:
            assert hdr.get("s") < raw // 2, "text barely compressed: %r" % hdr
    if cid != 0:
        assert st.st_blocks * 512 < len(TEXT) // 2, \
            "st_blocks should show the compressed size: %d" % st.st_blocks


def test_auto_stores_incompressible_raw(make_mount):
    m = make_mount(opts=["codec=auto"])
    data = os.urandom(300000)
    with open(m.path("r"), "wb") as f:
        f.write(data)
    m.remount()
    with open(m.path("r"), "rb") as f:
        assert f.read() == data
    m.stop()
    for i in range(2):
        cur = ctr_current_record(m.bpath("r"), i)
        assert cur is not None
        assert cur[1]["hdr"].get("c") == CODEC_IDS["none"], cur[1]["hdr"]


def test_cache_size_option_accepted(make_mount):
    m = make_mount(opts=["cache_size=1M", "block_size=64K"])
    with open(m.path("f"), "wb") as f:
        f.write(TEXT * 3)
    m.remount()
    with open(m.path("f"), "rb") as f:
        assert f.read() == TEXT * 3


def test_lock_file_and_mount_leave_no_stray_files(sqfs):
    assert wait_for(lambda: os.path.isdir(sqfs.bpath(".squeezefs")), 2)
    with open(sqfs.path("a"), "wb") as f:
        f.write(b"a")
    sqfs.stop()
    top = sorted(os.listdir(sqfs.backing))
    assert top == [".squeezefs", "a"], top


def test_debug_flag(make_mount):
    m = make_mount(start=False)
    m.argv = lambda: [BIN, "-d", m.backing, m.mnt]   # -d implies foreground
    m.start()
    with open(m.path("f"), "wb") as f:
        f.write(TEXT)
    m.remount()
    with open(m.path("f"), "rb") as f:
        assert f.read() == TEXT
    m.stop()
    assert len(m.read_log()) > 100, "-d logged nothing"


def mount_options(mnt):
    """The options of the mount at `mnt`, from /proc/self/mounts."""
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if fields[1] == mnt:
                return fields[3].split(",")
    raise AssertionError("%s is not mounted" % mnt)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs a root daemon")
def test_root_daemon_keeps_kernel_permission_checks(make_mount):
    """A root daemon's private mount still has the kernel check permissions
    (default_permissions): the kernel lets in every caller with root's uids,
    whatever its capabilities or fsuid (knfsd, a service that dropped
    CAP_DAC_OVERRIDE), and the daemon's root would read anything for it."""
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) missing")
    m = make_mount()
    assert "default_permissions" in mount_options(m.mnt)
    with open(m.path("theirs"), "wb") as f:
        f.write(b"user 1000's secret\n")
    os.chown(m.path("theirs"), 1000, 1000)
    os.chmod(m.path("theirs"), 0o600)
    nocaps = ["setpriv", "--inh-caps=-all", "--bounding-set=-all"]
    r = subprocess.run(nocaps + ["cat", m.path("theirs")],
                       capture_output=True, timeout=20)
    assert r.returncode != 0 and b"Permission denied" in r.stderr, r
    r = subprocess.run(nocaps + ["sh", "-c", "echo x >> \"$0\"",
                                 m.path("theirs")],
                       capture_output=True, timeout=20)
    assert r.returncode != 0, r
    with open(m.path("theirs"), "rb") as f:
        assert f.read() == b"user 1000's secret\n"
    r = subprocess.run(["cat", m.path("theirs")], capture_output=True,
                       timeout=20)
    assert r.returncode == 0 and r.stdout == b"user 1000's secret\n", r


UNPRIV_CHECKS = r"""
import os, subprocess, sys
mnt, bk = sys.argv[1], sys.argv[2]
f = os.path.join(mnt, "f")
with open(f, "wb") as fh:
    fh.write(b"#!/bin/sh\necho ran\n")
os.chmod(f, 0o644)
assert os.access(f, os.R_OK) and os.access(f, os.W_OK)
assert not os.access(f, os.X_OK), "X_OK on a file without x bits"
try:
    subprocess.run([f], check=True)
    raise AssertionError("ran a file without x bits")
except PermissionError:
    pass
os.chmod(f, 0o755)
assert subprocess.run([f], capture_output=True).stdout == b"ran\n"
os.mkdir(os.path.join(mnt, "d"))
for name, mode in (("d", 0o700), ("d", 0o100), ("f", 0), ("f", 0o400),
                   ("f", 0o200), ("f", 0o500)):
    os.chmod(os.path.join(mnt, name), mode)
    for want in (os.R_OK, os.W_OK, os.X_OK, os.R_OK | os.W_OK):
        assert os.access(os.path.join(mnt, name), want) == \
            os.access(os.path.join(bk, name), want), (name, oct(mode), want)
os.chmod(f, 0o644)
# A second open shares the first one's container: it is checked all the
# same, as BACKING would check it.
held = open(f, "r+b")
os.chmod(f, 0o444)
for how in ("ab", "r+b", "wb"):
    try:
        open(f, how).close()
        raise AssertionError("opened a 0444 file with " + how)
    except PermissionError:
        pass
os.chmod(f, 0)
try:
    open(f, "rb").close()
    raise AssertionError("read a 0000 file")
except PermissionError:
    pass
try:
    os.open(f, os.O_CREAT | os.O_WRONLY)
    raise AssertionError("O_CREAT opened a 0000 file for writing")
except PermissionError:
    pass
held.write(b"#")
held.close()
os.chmod(f, 0o644)
with open(f, "rb") as fh:
    assert fh.read(1) == b"#"
print("OK")
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="runs a daemon as nobody")
def test_unprivileged_private_mount_leaves_permissions_to_backing():
    """An unprivileged daemon's private mount can only be used by its own
    user: the kernel's default_permissions check (a GETATTR of the
    directory after each create or unlink) is left out, and BACKING
    answers access(), exec and every open, a second open of a file already
    open included."""
    if shutil.which("setpriv") is None or \
            shutil.which("fusermount3") is None:
        pytest.skip("setpriv or fusermount3 missing")
    top = tempfile.mkdtemp(prefix="sq-unpriv-", dir="/tmp")
    os.chmod(top, 0o755)
    bk, mnt = os.path.join(top, "b"), os.path.join(top, "m")
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    proc = None
    # libfuse opens /dev/fuse itself before it falls back to fusermount3,
    # and some machines (this one's containers) keep it root's only.
    fuse_mode = os.stat("/dev/fuse").st_mode & 0o7777
    try:
        if fuse_mode & 0o006 != 0o006:
            os.chmod("/dev/fuse", fuse_mode | 0o666)
        for d in (bk, mnt):
            os.mkdir(d)
            os.chown(d, 65534, 65534)
        # the checkout may be where nobody cannot reach (/root)
        exe = os.path.join(top, "squeezefs")
        shutil.copy(BIN, exe)
        os.chmod(exe, 0o755)
        proc = subprocess.Popen(nobody + [exe, "-f", bk, mnt],
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                opts = mount_options(mnt)
                break
            except AssertionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.communicate(timeout=5)[0] \
                        if proc.poll() is not None else b""
                    pytest.fail("no unprivileged mount: %r" % out)
                time.sleep(0.05)
        assert "default_permissions" not in opts
        r = subprocess.run(nobody + [sys.executable, "-c", UNPRIV_CHECKS,
                                     mnt, bk],
                           capture_output=True, timeout=60, cwd=top)
        assert r.returncode == 0 and r.stdout.strip() == b"OK", r
    finally:
        if proc is not None:
            subprocess.run(["umount", mnt], capture_output=True)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        os.chmod("/dev/fuse", fuse_mode)
        shutil.rmtree(top, ignore_errors=True)


def test_allow_other_and_default_permissions(make_mount):
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) missing")
    m = make_mount(opts=["allow_other", "default_permissions"])
    with open(m.path("public"), "wb") as f:
        f.write(b"everyone may read this\n")
    with open(m.path("private"), "wb") as f:
        f.write(b"root only\n")
    os.chmod(m.path("public"), 0o644)
    os.chmod(m.path("private"), 0o600)
    os.chmod(m.mnt, 0o755)
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    # relative paths from cwd = the mount: pytest's tmp dirs are 0700
    r = subprocess.run(nobody + ["cat", "public"], capture_output=True,
                       timeout=20, cwd=m.mnt)
    assert r.returncode == 0 and r.stdout == b"everyone may read this\n", r
    r = subprocess.run(nobody + ["cat", "private"],
                       capture_output=True, timeout=20, cwd=m.mnt)
    assert r.returncode != 0 and b"Permission denied" in r.stderr, r
    r = subprocess.run(nobody + ["touch", "new"], capture_output=True,
                       timeout=20, cwd=m.mnt)
    assert r.returncode != 0, r
    assert not os.path.exists(m.path("new"))


def bdi_max_bytes(mnt):
    st = os.stat(mnt)
    p = "/sys/class/bdi/%d:%d/max_bytes" % (os.major(st.st_dev),
                                           os.minor(st.st_dev))
    if not os.path.exists(p):
        pytest.skip("no %s (Linux < 6.2)" % p)
    with open(p) as f:
        return int(f.read())


@pytest.mark.skipif(os.geteuid() != 0, reason="the bdi knobs need root")
def test_writeback_cache_raises_dirty_limit(make_mount, tmp_path):
    """With -o writeback_cache, the mount may hold an eighth of the RAM (at
    most 1 GiB) in dirty pages rather than the kernel's 1% for FUSE, or
    random writes into a large file are throttled page by page; without
    it, the kernel's limit stays.  A space in the mount point's path checks
    that the mount is found in /proc/self/mountinfo's escaped form."""
    want = min(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGESIZE") // 8,
               1 << 30)
    m = make_mount(opts=["writeback_cache"], name="wb",
                   mnt=tmp_path / "wb mnt")
    got = bdi_max_bytes(m.mnt)
    # the kernel keeps it as a ratio of the dirtyable memory and reads it
    # back from that memory now (close, not equal), and refuses more than
    # its global limit allows (the daemon then halves it, down to 64 MiB)
    assert min(want, 64 << 20) * 0.9 <= got <= want * 1.1, (got, want)
    plain = make_mount(name="plain")
    if plain.writeback():  # the wb pass puts it on every mount
        return
    assert bdi_max_bytes(plain.mnt) < want // 2
