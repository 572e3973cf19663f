"""Frozen backing directories (docs/FORMAT.md section 10).

tests/golden/vN/ was written by the release that introduced container
format N; it must keep mounting and reading exactly as vN.json says,
forever.  tests/golden-errors/vN/ holds damaged containers: they must give
EIO (for the damaged blocks only, where the damage is in one block) while
everything else reads fine, the daemon stays up, and fsck names them.

Each test mounts a copy, never the committed directory.  Git keeps bytes,
symlinks and the executable bit only, so nothing here looks at holes,
hard links, modes, times or xattrs of the checked-out files."""

import errno
import glob
import hashlib
import json
import os
import shutil
import stat
import sys

import pytest

from sqfs_util import (ROOT, STUB_LEN, Mount, is_packed, run_fsck,  # noqa: E402
                       sha256_file, tree_paths)

sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
import read_container as rc  # noqa: E402

GOLDEN = sorted(glob.glob(os.path.join(ROOT, "tests", "golden", "v*/")))
ERRORS = sorted(glob.glob(os.path.join(ROOT, "tests", "golden-errors",
                                       "v*/")))


def load_manifest(d):
    with open(d.rstrip("/") + ".json") as f:
        return json.load(f)


def copy_backing(src, tmp_path):
    """A copy of golden directory src, with the xattrs git cannot keep
    (vN.xattrs.json: packed references, docs/FORMAT.md section 13) set
    again; those need root."""
    dst = tmp_path / "backing"
    shutil.copytree(src, dst, symlinks=True)
    # A BACKING an older release mounted has .squeezefs/ (its lock file),
    # which git does not keep for v1 and v2: that is how squeezefs tells
    # it from a directory of plain files (docs/FORMAT.md 12.1).
    os.makedirs(dst / ".squeezefs", exist_ok=True)
    xfile = src.rstrip("/") + ".xattrs.json"
    if os.path.exists(xfile):
        if os.geteuid() != 0:
            pytest.skip("setting trusted.* xattrs needs root")
        with open(xfile) as f:
            for rel, xattrs in json.load(f).items():
                for name, value in xattrs.items():
                    os.setxattr(os.path.join(dst, rel), name,
                                bytes.fromhex(value), follow_symlinks=False)
    return dst


def backing_digest(root):
    """{relative path: sha256 of the bytes} of every regular file."""
    out = {}
    for rel in tree_paths(root):
        p = os.path.join(root, rel)
        if stat.S_ISREG(os.lstat(p).st_mode):
            out[rel] = sha256_file(p)
    return out


def check_tree(mnt, files):
    assert tree_paths(mnt) == sorted(files), "the mount shows other names"
    for rel, e in sorted(files.items()):
        p = os.path.join(mnt, rel)
        st = os.lstat(p)
        if e["type"] == "dir":
            assert stat.S_ISDIR(st.st_mode), rel
        elif e["type"] == "symlink":
            assert stat.S_ISLNK(st.st_mode), rel
            assert os.readlink(p) == e["target"], rel
        else:
            assert stat.S_ISREG(st.st_mode), rel
            assert st.st_size == e["size"], rel
            assert sha256_file(p) == e["sha256"], rel


def test_golden_present():
    assert GOLDEN, "no tests/golden/v*/ directories"
    assert ERRORS, "no tests/golden-errors/v*/ directories"
    for d in GOLDEN + ERRORS:
        assert os.path.isfile(d.rstrip("/") + ".json"), d


@pytest.mark.parametrize("mode", ["rw", "ro"])
@pytest.mark.parametrize("golden", GOLDEN, ids=lambda d: os.path.basename(
    d.rstrip("/")))
def test_golden_reads(golden, mode, tmp_path):
    man = load_manifest(golden)
    files = man["files"]
    backing = copy_backing(golden, tmp_path)
    before = backing_digest(backing)
    m = Mount(backing, tmp_path / "mnt", opts=["ro"] if mode == "ro" else [],
              log=tmp_path / "daemon.log")
    m.start()
    try:
        check_tree(m.mnt, files)
        if mode == "ro":
            with pytest.raises(OSError) as ei:
                open(m.path("new-file"), "wb")
            assert ei.value.errno == errno.EROFS
    finally:
        m.cleanup()
    # Reading never changes a container.  A rw mount gives each packed
    # file of version 3 (an empty backing file) its 1-byte stub and a
    # pack index record (docs/FORMAT.md, version 4): the image stays.
    after = backing_digest(backing)
    after.pop(".squeezefs/lock", None)
    if man["format_version"] < 5 and mode == "rw":
        # The mount made the volume file of a BACKING of a release before
        # volumes (docs/FORMAT.md 12.1): LEGACY, so every file stays a
        # container.
        with open(os.path.join(backing, ".squeezefs/volume"), "rb") as f:
            assert f.read()[10] & 1, "volume of an old BACKING not LEGACY"
    if mode == "rw" and man["format_version"] < 4:
        packed = [rel for rel in after
                  if is_packed(os.path.join(backing, rel))]
        stub = hashlib.sha256(b"\0" * STUB_LEN).hexdigest()
        empty = hashlib.sha256(b"").hexdigest()
        for rel in packed:
            assert (before[rel], after[rel]) == (empty, stub), rel
            after[rel] = before[rel]
        if packed:
            assert os.path.getsize(os.path.join(
                backing, ".squeezefs/packs/index")) > 0
    assert after == before

    # The independent reader agrees, container by container.
    for rel, e in files.items():
        if e["type"] == "file":
            got = rc.read_file(os.path.join(backing, rel))
            assert hashlib.sha256(got).hexdigest() == e["sha256"], rel
    r = run_fsck(backing)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("golden", GOLDEN, ids=lambda d: os.path.basename(
    d.rstrip("/")))
def test_golden_writable(golden, tmp_path):
    """A current build keeps writing to containers of an older version:
    change one block of each multi-block file, append to another, and all
    reads back after a remount."""
    files = load_manifest(golden)["files"]
    backing = copy_backing(golden, tmp_path)
    m = Mount(backing, tmp_path / "mnt", log=tmp_path / "daemon.log")
    m.start()
    try:
        expect = {}
        for rel, e in sorted(files.items()):
            if e["type"] != "file" or e["size"] < 4096:
                continue
            p = m.path(rel)
            with open(p, "rb") as f:
                data = bytearray(f.read())
            patch = b"patched %s\n" % rel.encode()
            off = len(data) // 2
            with open(p, "r+b") as f:
                f.seek(off)
                f.write(patch)
                f.seek(0, os.SEEK_END)
                f.write(b"tail")
            data[off:off + len(patch)] = patch
            expect[rel] = bytes(data) + b"tail"
        assert expect
        m.remount()
        for rel, data in expect.items():
            with open(m.path(rel), "rb") as f:
                assert f.read() == data, rel
    finally:
        m.cleanup()
    r = run_fsck(backing)
    assert r.returncode == 0, r.stdout + r.stderr


def read_fails_eio(path, off=0, n=1 << 20):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        return e.errno == errno.EIO
    try:
        os.pread(fd, n, off)
    except OSError as e:
        return e.errno == errno.EIO
    finally:
        os.close(fd)
    return False


@pytest.mark.parametrize("golden", ERRORS, ids=lambda d: os.path.basename(
    d.rstrip("/")))
def test_golden_errors(golden, tmp_path):
    files = load_manifest(golden)["files"]
    backing = copy_backing(golden, tmp_path)
    before = backing_digest(backing)
    m = Mount(backing, tmp_path / "mnt", log=tmp_path / "daemon.log")
    m.start()
    try:
        assert tree_paths(m.mnt) == sorted(files)
        for rel, e in sorted(files.items()):
            p = m.path(rel)
            if e["type"] == "dir":
                assert os.path.isdir(p), rel
            elif e["type"] == "symlink":
                assert os.readlink(p) == e["target"], rel
            elif e.get("eio"):
                assert read_fails_eio(p), "%s: read did not fail with EIO" \
                    % rel
            elif e.get("bad_blocks"):
                bs = e["block_size"]
                assert os.stat(p).st_size == e["size"], rel
                fd = os.open(p, os.O_RDONLY)
                try:
                    for b in e["bad_blocks"]:
                        assert read_fails_eio(p, b * bs, bs), (rel, b)
                    for b, want in e["blocks_sha256"].items():
                        got = os.pread(fd, bs, int(b) * bs)
                        assert hashlib.sha256(got).hexdigest() == want, \
                            (rel, b)
                finally:
                    os.close(fd)
            else:
                assert os.stat(p).st_size == e["size"], rel
                assert sha256_file(p) == e["sha256"], rel
            # After every file the daemon is still there.
            assert m.proc.poll() is None, "daemon died at %s" % rel
            assert os.path.ismount(m.mnt)
        # And still serves good files after all the damage.
        good = [r for r, e in files.items() if "sha256" in e]
        for rel in good:
            assert sha256_file(m.path(rel)) == files[rel]["sha256"], rel
    finally:
        m.cleanup()  # asserts a clean exit and no sanitizer findings
    # The daemon never rewrote a damaged (or any) container by reading it.
    after = backing_digest(backing)
    after.pop(".squeezefs/lock", None)
    assert after == before

    bad = sorted(r for r, e in files.items()
                 if e.get("eio") or e.get("bad_blocks"))
    r = run_fsck(backing)
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    named = set()
    for line in out.splitlines():
        for rel in files:
            if line.startswith(os.path.join(str(backing), rel) + ":"):
                named.add(rel)
    assert sorted(named) == bad, out

    # The independent reader finds exactly the same damage.
    for rel, e in files.items():
        if e["type"] != "file":
            continue
        p = os.path.join(backing, rel)
        if e.get("eio"):
            with pytest.raises(rc.Damaged):
                rc.Container(p).close()
        else:
            with rc.Container(p) as c:
                probs = c.check()
            assert len(probs) == len(e.get("bad_blocks", [])), (rel, probs)


@pytest.mark.parametrize("golden", ERRORS, ids=lambda d: os.path.basename(
    d.rstrip("/")))
def test_golden_errors_whole_file(golden, tmp_path):
    """Reading a file with one damaged block from the start, as cp does,
    must fail with EIO: never a silent short file."""
    files = load_manifest(golden)["files"]
    backing = copy_backing(golden, tmp_path)
    m = Mount(backing, tmp_path / "mnt", log=tmp_path / "daemon.log")
    m.start()
    try:
        for rel, e in sorted(files.items()):
            if not e.get("bad_blocks"):
                continue
            with pytest.raises(OSError) as ei:
                with open(m.path(rel), "rb") as f:
                    f.read()
            assert ei.value.errno == errno.EIO, rel
            assert os.stat(m.path(rel)).st_size == e["size"], rel
    finally:
        m.cleanup()
