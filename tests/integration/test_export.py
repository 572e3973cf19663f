"""Moving out (issue "Move in, live in, move out"): `squeezefs export
BACKING DEST` writes the plain tree back, with modes, owners, times,
xattrs, hard links, symlinks, special files and holes, a progress line
(bytes, rate, ETA) on stderr; rsync's own comparison finds nothing to
change between DEST and the tree that was copied in.  It refuses a
mounted BACKING, and names a file it could not read (exit 1)."""

import os
import shutil
import subprocess
import sys

import pytest

from sqfs_util import BIN, ROOT, is_packed, run_fsck, skip_under, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="owners and mknod need root")


def export(*args):
    return subprocess.run([BIN, "export"] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=600)


def build_tree(src):
    """What a user moves in: the corpus's kinds of files, and everything a
    tree can hold besides data."""
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts",
                                                 "make-corpus"),
                    "--size", "4M", "--seed", "2", str(src / "corpus")],
                   check=True, capture_output=True, timeout=300)
    (src / "d" / "e").mkdir(parents=True)
    (src / "d" / "nums").write_bytes(
        b"".join(b"%d\n" % k for k in range(100000)))
    (src / "small").write_bytes(b"a small file\n")
    os.link(src / "small", src / "d" / "small-link")
    os.symlink("d/nums", src / "lnk")
    os.symlink("nowhere", src / "dangling")
    with open(src / "sparse", "wb") as f:
        f.truncate(10 << 20)
        f.seek(5 << 20)
        f.write(b"data in the middle")
    (src / "random").write_bytes(os.urandom(300000))
    (src / "empty").write_bytes(b"")
    os.mkfifo(src / "fifo")
    os.chown(src / "d" / "nums", 1001, 1002)
    os.chmod(src / "small", 0o640)
    os.chmod(src / "d", 0o2750)
    os.setxattr(src / "small", "user.note", b"kept")
    os.setxattr(src / "d", "user.dir-note", b"kept too")
    for p, ns in ((src / "d" / "nums", 1577934245123456789),
                  (src / "random", 1000000000987654321),
                  (src / "d", 1234567890000000001)):
        os.utime(p, ns=(ns, ns), follow_symlinks=False)


def rsync_diff(a, b):
    r = subprocess.run(["rsync", "-anc", "--itemize-changes", "-H", "-X",
                        "-A", "--numeric-ids", str(a) + "/", str(b) + "/"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_export_gives_the_plain_tree_back(make_mount, tmp_path):
    if shutil.which("rsync") is None:
        pytest.skip("rsync missing")
    src = tmp_path / "src"
    src.mkdir()
    build_tree(src)
    m = make_mount()
    r = subprocess.run(["cp", "-a", str(src) + "/.", m.mnt],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    if m.packs():  # export reads packed files too (nopack: containers only)
        assert wait_for(lambda: is_packed(m.bpath("small")), timeout=30)
    m.stop()
    dest = tmp_path / "dest"
    r = export("--progress", m.backing, dest)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "MiB/s" in r.stderr and "ETA" in r.stderr and "100%" in \
        r.stderr, r.stderr
    diff = rsync_diff(src, dest)
    assert diff == "", "export differs from what went in:\n" + diff[:3000]
    # holes stay holes (export writes whole blocks: the one with data is
    # 1 MiB under make test-matrix's block_size=1M); hard links stay one
    # file
    assert os.stat(dest / "sparse").st_blocks * 512 < \
        max(1 << 20, 2 * m.block_size())
    assert os.stat(dest / "small").st_ino == \
        os.stat(dest / "d" / "small-link").st_ino
    # BACKING is untouched and still mounts
    assert run_fsck(m.backing).returncode == 0
    m.start()
    assert rsync_diff(src, m.mnt) == ""


def test_export_refuses_a_mounted_backing(make_mount, tmp_path):
    m = make_mount()
    (tmp_path / "x").write_bytes(b"x")
    with open(m.path("f"), "wb") as f:
        f.write(b"mounted\n")
    r = export(m.backing, tmp_path / "dest")
    assert r.returncode == 2 and "mounted" in r.stderr, r
    assert not (tmp_path / "dest").exists()
    # a DEST that holds anything is refused too
    m.stop()
    r = export(m.backing, tmp_path)
    assert r.returncode == 2 and "empty directory" in r.stderr, r


def test_export_names_what_it_cannot_read(make_mount, tmp_path):
    skip_under("nopack",
               reason="this test checks a packed file that lost its reference")
    m = make_mount()
    with open(m.path("ok"), "wb") as f:
        f.write(b"readable\n" * 1000)
    with open(m.path("lost"), "wb") as f:
        f.write(b"its reference goes\n")
    assert wait_for(lambda: is_packed(m.bpath("lost")), timeout=30)
    m.stop()
    # what a copy without xattrs does to a packed file
    for name in ("trusted.squeezefs.packed", "user.squeezefs.packed"):
        try:
            os.removexattr(m.bpath("lost"), name)
        except OSError:
            pass
    r = export("--no-progress", m.backing, tmp_path / "dest")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "lost" in r.stdout and "lost its pack reference" in r.stdout, r
    assert (tmp_path / "dest" / "ok").read_bytes() == b"readable\n" * 1000
    assert r.stderr == "", r.stderr  # --no-progress: no progress line
