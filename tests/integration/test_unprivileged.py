"""An unprivileged user's mount packs small files too (issue "Move in, live
in, move out"): where the daemon may not set trusted.* xattrs it keeps each
packed file's reference under user.squeezefs.packed (docs/FORMAT.md 13.1),
which BACKING's owner may set.  The benchmark's corpus copied in by
`nobody` through its own mount takes within 2% of what root's mount of
the same corpus takes on disk; every file reads back, the reference names
stay hidden and refused on the mount, and fsck is clean."""

import os
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from sqfs_util import BIN, ROOT, is_packed, run_fsck, wait_for

NOBODY = 65534
AS_NOBODY = ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY,
             "--clear-groups"]
CORPUS_SIZE = "16M"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None or
    shutil.which("fusermount3") is None,
    reason="needs root, setpriv and fusermount3")


@pytest.fixture
def public():
    """A directory every user can reach (pytest's tmp_path is 0700), with
    /dev/fuse open to all for the test (libfuse opens it itself before it
    falls back to fusermount3; some containers keep it root's only)."""
    top = tempfile.mkdtemp(prefix="sq-unpriv-pack-", dir="/tmp")
    os.chmod(top, 0o755)
    fuse_mode = os.stat("/dev/fuse").st_mode & 0o7777
    if fuse_mode & 0o006 != 0o006:
        os.chmod("/dev/fuse", fuse_mode | 0o666)
    try:
        yield top
    finally:
        for d in os.listdir(top):
            p = os.path.join(top, d)
            if mounted(p):
                subprocess.run(["umount", "-l", p], check=False)
        os.chmod("/dev/fuse", fuse_mode)
        shutil.rmtree(top, ignore_errors=True)


def mounted(mnt):
    """Whether `mnt` is a mount point (from mountinfo: root may not even
    stat another user's FUSE mount without allow_other)."""
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == mnt for line in f)


def allocated(root):
    """Bytes BACKING takes on disk (du -B1), its packs included."""
    out = subprocess.run(["du", "-s", "-B1", root], capture_output=True,
                         text=True, check=True).stdout
    return int(out.split()[0])


def fill(top, who, corpus):
    """Mounts a fresh BACKING as `who` ("root" or "nobody"), copies the
    corpus in as that user, unmounts, waits for the daemon to exit 0.
    Returns BACKING."""
    bk, mnt = os.path.join(top, who + "-b"), os.path.join(top, who + "-m")
    os.mkdir(bk)
    os.mkdir(mnt)
    pre = []
    exe = BIN
    if who == "nobody":
        for d in (bk, mnt):
            os.chown(d, NOBODY, NOBODY)
        # the checkout may be where nobody cannot reach (/root)
        exe = os.path.join(top, "squeezefs")
        if not os.path.exists(exe):
            shutil.copy(BIN, exe)
            os.chmod(exe, 0o755)
        pre = AS_NOBODY
    log = open(os.path.join(top, who + ".log"), "wb")
    proc = subprocess.Popen(pre + [exe, "-f", bk, mnt], stdout=log,
                            stderr=subprocess.STDOUT)
    log.close()
    try:
        assert wait_for(lambda: mounted(mnt) or proc.poll() is not None,
                        timeout=20)
        assert mounted(mnt), open(os.path.join(top, who + ".log"),
                                  errors="replace").read()
        r = subprocess.run(pre + ["cp", "-r", corpus + "/.", mnt],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        if who == "nobody":
            # the reference names are squeezefs's: hidden, and refused
            probe = os.path.join(mnt, "probe")
            r = subprocess.run(pre + [sys.executable, "-c", PROBE, probe],
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0 and r.stdout.strip() == "OK", r
    finally:
        subprocess.run(["umount", mnt], capture_output=True)
        rc = proc.wait(timeout=120)
    assert rc == 0, open(os.path.join(top, who + ".log"),
                         errors="replace").read()[-3000:]
    return bk, mnt, exe, pre


PROBE = r"""
import errno, os, sys, time
p = sys.argv[1]
with open(p, "wb") as f:
    f.write(b"small\n")
time.sleep(2.5)  # packed about a second after the last close
for name in ("user.squeezefs.packed", "user.squeezefs.other"):
    try:
        os.getxattr(p, name)
        sys.exit("%s readable on the mount" % name)
    except OSError as e:
        assert e.errno == errno.ENODATA, e
    try:
        os.setxattr(p, name, b"x")
        sys.exit("%s settable on the mount" % name)
    except OSError as e:
        assert e.errno in (errno.EPERM, errno.EACCES), e
assert not any(n.startswith("user.squeezefs.") for n in os.listxattr(p))
os.setxattr(p, "user.mine", b"ok")  # other user.* names are the user's
assert os.getxattr(p, "user.mine") == b"ok"
print("OK")
"""


def test_unprivileged_mount_packs_like_root(public):
    corpus = os.path.join(public, "corpus")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts",
                                                 "make-corpus"),
                    "--size", CORPUS_SIZE, "--seed", "1", corpus],
                   check=True, capture_output=True, timeout=300)
    os.remove(os.path.join(corpus, "MANIFEST.tsv"))
    subprocess.run(["chmod", "-R", "a+rX", corpus], check=True)
    root_bk = fill(public, "root", corpus)[0]
    bk, mnt, exe, pre = fill(public, "nobody", corpus)

    small = [os.path.join(d, f) for d, _, fs in os.walk(bk)
             if ".squeezefs" not in d for f in fs]
    packed = [p for p in small if is_packed(p)]
    assert len(packed) > len(small) // 2, \
        "nobody's mount packed %d of %d files" % (len(packed), len(small))
    assert all("user.squeezefs.packed" in os.listxattr(p) for p in packed)
    a_root, a_user = allocated(root_bk), allocated(bk)
    print("allocated: root %d, nobody %d bytes (%d of %d files packed)"
          % (a_root, a_user, len(packed), len(small)))
    assert a_user <= a_root * 1.02, \
        "nobody's BACKING takes %d bytes, root's %d (%.1f%% more)" % (
            a_user, a_root, 100.0 * (a_user - a_root) / a_root)

    # everything reads back through a new unprivileged mount, and fsck
    # (as root, which reads user.* names too) is clean
    proc = subprocess.Popen(pre + [exe, "-f", bk, mnt],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: mounted(mnt), timeout=20)
        # as nobody: the mount is that user's alone
        r = subprocess.run(pre + ["diff", "-r", "-x", "probe", corpus, mnt],
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    finally:
        subprocess.run(["umount", mnt], capture_output=True)
        proc.wait(timeout=120)
    time.sleep(0.2)
    r = run_fsck(bk)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr
