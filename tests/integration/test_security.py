"""Issue 5, security: nothing escapes BACKING.  Symlinks inside BACKING are
shown as symlinks and never followed by the daemon itself (the kernel
resolves them relative to the mount); names with "..", newlines, 255 bytes
and non-UTF-8 bytes work; with allow_other (and the default_permissions the
daemon then adds) an unprivileged user cannot read or change another
user's 0600 file, and what a user creates is owned by that user in BACKING,
with setgid directories passing on their group."""

import errno
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

from sqfs_util import fsck_clean

NOBODY = 65534


def fingerprint(path):
    st = os.stat(path)
    with open(path, "rb") as f:
        h = hashlib.sha256(f.read()).hexdigest()
    return (h, st.st_mode, st.st_uid, st.st_gid, st.st_size,
            st.st_mtime_ns, st.st_ctime_ns)


def test_symlinks_in_backing_are_not_followed(make_mount, tmp_path):
    # BACKING is one level deeper than the mount point, so a relative
    # "../x" means tmp/deep/x to the daemon and tmp/x through the mount
    deep = tmp_path / "deep"
    backing = deep / "backing"
    backing.mkdir(parents=True)
    (deep / "target").write_bytes(b"BACKING SIDE, never to be seen\n")
    (tmp_path / "target").write_bytes(b"MOUNT SIDE\n")
    (deep / "outdir").mkdir()
    (tmp_path / "outdir").mkdir()
    os.symlink("/etc", backing / "link")
    os.symlink("/etc/passwd", backing / "f")
    os.symlink("../target", backing / "up")
    os.symlink("../outdir", backing / "updir")
    os.mkdir(backing / "dir")
    passwd = fingerprint("/etc/passwd")
    etc = sorted(os.listdir("/etc"))

    m = make_mount(backing=backing, mnt=tmp_path / "mnt")
    for name, target in (("link", "/etc"), ("f", "/etc/passwd"),
                         ("up", "../target"), ("updir", "../outdir")):
        st = os.lstat(m.path(name))
        assert stat.S_ISLNK(st.st_mode), name
        assert os.readlink(m.path(name)) == target
    assert sorted(os.listdir(m.mnt)) == ["dir", "f", "link", "up", "updir"]
    # the kernel resolves them, relative to the mount point
    assert open(m.path("up"), "rb").read() == b"MOUNT SIDE\n"
    with open(m.path("f"), "rb") as a, open("/etc/passwd", "rb") as b:
        assert a.read() == b.read()
    assert sorted(os.listdir(m.path("link"))) == etc
    # creating "under" a relative link lands where the mount's view says
    with open(m.path("updir", "new"), "wb") as f:
        f.write(b"x")
    assert os.listdir(deep / "outdir") == []
    assert os.listdir(tmp_path / "outdir") == ["new"]

    # operations on the links themselves touch only the links
    os.chown(m.path("f"), 1234, 1234, follow_symlinks=False)
    assert os.lstat(backing / "f").st_uid == 1234
    with pytest.raises(OSError):
        os.setxattr(m.path("f"), "user.x", b"1", follow_symlinks=False)
    os.utime(m.path("f"), ns=(1, 1), follow_symlinks=False)
    os.rename(m.path("f"), m.path("f2"))
    os.link(m.path("f2"), m.path("f3"), follow_symlinks=False)
    assert stat.S_ISLNK(os.lstat(backing / "f3").st_mode)
    os.unlink(m.path("f2"))
    os.unlink(m.path("f3"))
    os.rename(m.path("link"), m.path("dir", "link"))
    os.unlink(m.path("dir", "link"))
    assert fingerprint("/etc/passwd") == passwd
    assert sorted(os.listdir("/etc")) == etc

    # a directory swapped for a link behind the daemon's back: what the
    # daemon creates must stay inside BACKING
    os.mkdir(m.path("victim"))
    os.stat(m.path("victim"))  # the daemon now holds it
    os.rename(backing / "victim", backing / "victim.old")
    os.symlink("../outdir", backing / "victim")
    for name in ("a", "b"):
        try:
            with open(m.path("victim", name), "wb") as f:
                f.write(b"y")
        except OSError:
            pass
        try:
            os.mkdir(m.path("victim", name + "d"))
        except OSError:
            pass
    assert os.listdir(deep / "outdir") == [], \
        "the daemon followed a symlink in BACKING"
    assert sorted(os.listdir(deep)) == ["backing", "outdir", "target"]
    assert open(deep / "target", "rb").read().startswith(b"BACKING SIDE")
    m.stop()
    fsck_clean(m, "symlinks")


WEIRD = [b"...", b"..\n", b"a..b", b"..x", b"x..", b". .", b"..\x01",
         b"a\nb", b"\n", b"line1\nline2\n", b"x" * 255, b"\xff\xfe\x80",
         b"caf\xe9", b"\xc3\x28", b" lead and trail ", b"-rf", b"*?[",
         b"\\back\\slash", b"\x7f\x1b[31m"]


def test_odd_names(make_mount):
    m = make_mount(opts=["block_size=4K"])
    root = m.mnt.encode()
    bk = m.backing.encode()
    for i, name in enumerate(WEIRD):
        p = os.path.join(root, name)
        data = b"%d:" % i + name * 50
        with open(p, "wb") as f:
            f.write(data)
        assert os.stat(p).st_size == len(data)
        assert open(p, "rb").read() == data
        assert os.path.exists(os.path.join(bk, name)), name
        d = os.path.join(root, b"d" + name[:254])
        os.mkdir(d)
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
        os.symlink(name, os.path.join(d, b"l"))
        assert os.readlink(os.path.join(d, b"l")) == name
        assert open(os.path.join(d, b"l"), "rb").read() == data
    names = set(os.listdir(root))
    for name in WEIRD:
        assert name in names, name
    with pytest.raises(OSError) as ei:
        open(os.path.join(root, b"y" * 256), "wb")
    assert ei.value.errno == errno.ENAMETOOLONG
    m.remount()
    for i, name in enumerate(WEIRD):
        p = os.path.join(root, name)
        data = b"%d:" % i + name * 50
        assert open(p, "rb").read() == data, name
        q = os.path.join(root, b"r" + name[:254])
        os.rename(p, q)
        assert open(q, "rb").read() == data
        os.rename(q, p)
        os.unlink(p)
        assert not os.path.lexists(os.path.join(bk, name))
        d = os.path.join(root, b"d" + name[:254])
        os.unlink(os.path.join(d, b"l"))
        os.unlink(os.path.join(d, name))
        os.rmdir(d)
    assert os.listdir(root) == []
    m.stop()
    fsck_clean(m, "odd names")


# ---- permissions, as an unprivileged user -------------------------------

CHILD = r"""
import errno, json, os, sys
mnt = sys.argv[1]
out = {}
def t(name, fn):
    try:
        fn()
        out[name] = 0
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno, e.errno)
p = os.path.join(mnt, "secret")
t("read", lambda: open(p, "rb").read())
t("write", lambda: open(p, "r+b").write(b"x"))
t("append", lambda: open(p, "ab").write(b"x"))
t("truncate", lambda: os.truncate(p, 0))
t("chmod", lambda: os.chmod(p, 0o666))
t("chown", lambda: os.chown(p, os.getuid(), -1))
t("utime", lambda: os.utime(p, (1, 1)))
t("setxattr", lambda: os.setxattr(p, "user.x", b"1"))
t("unlink", lambda: os.unlink(p))
t("rename", lambda: os.rename(p, os.path.join(mnt, "pub", "stolen")))
t("create_in_root", lambda: open(os.path.join(mnt, "mine"), "wb"))
t("read_other_user", lambda: open(os.path.join(mnt, "pub", "other"),
                                  "rb").read())
t("unlink_sticky", lambda: os.unlink(os.path.join(mnt, "pub", "other")))
pub = os.path.join(mnt, "pub")
t("own_create", lambda: open(os.path.join(pub, "mine"), "wb").write(b"m"))
t("own_mkdir", lambda: os.mkdir(os.path.join(pub, "mydir")))
t("own_fifo", lambda: os.mkfifo(os.path.join(pub, "myfifo")))
t("own_symlink", lambda: os.symlink("mine", os.path.join(pub, "mylink")))
t("own_chmod", lambda: os.chmod(os.path.join(pub, "mine"), 0o600))
sg = os.path.join(mnt, "sg")
t("sg_create", lambda: open(os.path.join(sg, "f"), "wb").write(b"s"))
t("sg_mkdir", lambda: os.mkdir(os.path.join(sg, "d")))
t("sg_nested", lambda: open(os.path.join(sg, "d", "g"), "wb").write(b"s"))
print(json.dumps(out))
"""


@pytest.fixture
def public_dir():
    """A directory every user can reach (pytest's tmp_path is 0700)."""
    d = tempfile.mkdtemp(prefix="sqfs-sec-", dir="/tmp")
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        mnt = os.path.join(d, "mnt")
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", "-z", mnt], check=False)
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_other_users(public_dir, make_mount):
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv not installed")
    m = make_mount(opts=["allow_other"], backing=os.path.join(public_dir,
                                                              "backing"),
                   mnt=os.path.join(public_dir, "mnt"))
    os.chmod(m.mnt, 0o755)
    secret = m.path("secret")
    with open(secret, "wb") as f:
        f.write(b"root only\n")
        # close() does not wait for the block to be stored: fsync so the
        # container is final before its fingerprint is taken
        f.flush()
        os.fsync(f.fileno())
    os.chmod(secret, 0o600)
    os.mkdir(m.path("pub"))
    os.chmod(m.path("pub"), 0o1777)
    other = m.path("pub", "other")
    with open(other, "wb") as f:
        f.write(b"user 1001 only\n")
    os.chown(other, 1001, 1001)
    os.chmod(other, 0o600)
    os.mkdir(m.path("sg"))
    os.chown(m.path("sg"), 0, 4321)
    os.chmod(m.path("sg"), 0o2777)
    before = fingerprint(m.bpath("secret"))

    r = subprocess.run(["setpriv", "--reuid=%d" % NOBODY,
                        "--regid=%d" % NOBODY, "--clear-groups",
                        sys.executable, "-c", CHILD, m.mnt],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    denied = ("read", "write", "append", "truncate", "chmod", "chown",
              "utime", "setxattr", "unlink", "rename", "create_in_root",
              "read_other_user", "unlink_sticky")
    for k in denied:
        assert res[k] in ("EACCES", "EPERM"), "%s: %s (all: %s)" % (
            k, res[k], res)
    for k in ("own_create", "own_mkdir", "own_fifo", "own_symlink",
              "own_chmod", "sg_create", "sg_mkdir", "sg_nested"):
        assert res[k] == 0, "%s failed: %s (all: %s)" % (k, res[k], res)
    assert fingerprint(m.bpath("secret")) == before
    assert open(secret, "rb").read() == b"root only\n"
    assert open(other, "rb").read() == b"user 1001 only\n"

    # what the user created is the user's, in BACKING as in the mount
    for name in ("mine", "mydir", "myfifo", "mylink"):
        for st in (os.lstat(m.bpath("pub", name)),
                   os.lstat(m.path("pub", name))):
            assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY), \
                "%s owned by %d:%d" % (name, st.st_uid, st.st_gid)
    assert stat.S_ISFIFO(os.lstat(m.bpath("pub", "myfifo")).st_mode)
    assert stat.S_IMODE(os.stat(m.bpath("pub", "mine")).st_mode) == 0o600
    # setgid directory: the group is passed on, and so is the bit on dirs
    for name in ("f", "d", "d/g"):
        st = os.lstat(m.bpath("sg", name))
        assert (st.st_uid, st.st_gid) == (NOBODY, 4321), \
            "sg/%s owned by %d:%d" % (name, st.st_uid, st.st_gid)
    assert os.lstat(m.bpath("sg", "d")).st_mode & stat.S_ISGID
    assert os.lstat(m.path("sg", "d")).st_mode & stat.S_ISGID
    m.stop()
    fsck_clean(m, "permissions")
