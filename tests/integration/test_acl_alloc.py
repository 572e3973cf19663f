"""Correctness first, items 5 and 6: fallocate checks BACKING's free space,
POSIX ACLs and setgid clearing behave as on a local filesystem.

- fallocate (mode 0) of a range whose new part is larger than BACKING's
  free space fails up front with ENOSPC and leaves the size alone; one
  that fits succeeds and sets the size; a range already written needs no
  new space, even on a full disk.  BACKING is on a 64 MiB tmpfs that is
  then filled through the mount until ENOSPC; after deleting, writing and
  fallocate work again, and fsck is clean.
- Default ACLs: files, fifos and directories made (mode 0666 / 0777,
  umask 022) by root and by nobody in a directory with a default ACL get
  the same ACL, owner and mode on the mount as the same calls get in a
  plain directory on an ACL-capable local filesystem (the umask is
  ignored, the default ACL decides); a directory made in a setgid
  directory with a default ACL keeps the setgid bit, g+w and the default
  ACL.  Without a default ACL the umask applies (0644, 0755).
- Access ACLs are enforced on a shared (allow_other) mount: a named-user
  entry grants read, write and directory access to a user the mode bits
  shut out, removing it denies again, and a named-user entry of --- denies
  what the mode's "other" bits allow; the mode (group bits = mask) follows
  each setfacl as on the plain directory.
- Setgid clearing: a 06666 file of root:4321 written, fallocated,
  hole-punched, truncated or opened with O_TRUNC by a user outside group
  4321 loses both setuid and setgid (0666) on the mount and in BACKING, as
  in the plain directory; a group member's write clears only setuid and
  root's write clears nothing, also as there.
"""

import ctypes
import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

from sqfs_util import fsck_clean, write_and_sync

NOBODY = 65534
GROUP = 4321            # the group of the setgid files and directories
OTHER_UID = 1001        # a named user in the ACLs that never acts
DEFAULT_ACL = "u::rwx,g::rwx,o::r-x,u:%d:r-x" % OTHER_UID

TMPFS_MB = 64  # conftest.SMALL_TMPFS_MB: the small_tmpfs fixture's

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def run(*argv):
    """Runs a command that must succeed; returns its stdout."""
    r = subprocess.run([str(a) for a in argv], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, "%s exited %d: %s" % (
        " ".join(map(str, argv)), r.returncode, r.stderr.strip())
    return r.stdout


def getfacl(path):
    """The ACL of `path` as getfacl prints it (numeric ids, no header)."""
    return run("getfacl", "-c", "-n", "-p", path)


def default_entries(path):
    return [l for l in getfacl(path).splitlines() if l.startswith("default:")]


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def describe(path):
    """What must match between the mount and the plain directory."""
    st = os.lstat(path)
    return {"mode": oct(stat.S_IMODE(st.st_mode)), "uid": st.st_uid,
            "gid": st.st_gid, "acl": getfacl(path)}


def as_user(who, script, *args):
    """Runs `script` with sys.executable as `who`: "root", "nobody" (uid
    and gid 65534, no groups), "member" (nobody with GROUP as supplementary
    group) or "other" (uid and gid OTHER_UID); returns its JSON output."""
    ids = {"nobody": ["--reuid=%d" % NOBODY, "--regid=%d" % NOBODY,
                      "--clear-groups"],
           "member": ["--reuid=%d" % NOBODY, "--regid=%d" % NOBODY,
                      "--groups=%d" % GROUP],
           "other": ["--reuid=%d" % OTHER_UID, "--regid=%d" % OTHER_UID,
                     "--clear-groups"]}
    argv = [sys.executable, "-c", script] + [str(a) for a in args]
    if who != "root":
        argv = ["setpriv"] + ids[who] + argv
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                       cwd="/")
    assert r.returncode == 0, "%s: %s" % (who, r.stderr)
    return json.loads(r.stdout)


# The child scripts report each step as 0 or the errno's name.
PRELUDE = r"""
import ctypes, errno, json, os, sys
os.umask(0o022)
out = {}
def t(name, fn):
    try:
        fn()
        out[name] = 0
    except OSError as e:
        out[name] = errno.errorcode.get(e.errno, e.errno)
"""


def acl_supported(d):
    """Whether the filesystem of directory `d` takes access and default
    ACLs."""
    probe = os.path.join(d, "acl-probe")
    os.mkdir(probe)
    try:
        for argv in (["setfacl", "-m", "u:%d:r-x" % OTHER_UID, probe],
                     ["setfacl", "-d", "-m", DEFAULT_ACL, probe]):
            if subprocess.run(argv, capture_output=True).returncode != 0:
                return False
        return True
    finally:
        os.rmdir(probe)


@pytest.fixture
def acl_area():
    """A directory every user can reach (pytest's tmp_path is 0700) on an
    ACL-capable filesystem: in the temporary directory pytest also uses,
    else on a small ext4 image mounted there.  Holds BACKING, the mount
    point and the plain reference directory."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    for tool in ("setfacl", "getfacl", "setpriv"):
        if shutil.which(tool) is None:
            pytest.skip("%s not installed (apt-get install acl)" % tool)
    top = tempfile.mkdtemp(prefix="sqfs-acl-", dir=tempfile.gettempdir())
    os.chmod(top, 0o755)
    area, loop = top, None
    try:
        if not acl_supported(top):
            img = os.path.join(top, "ext4.img")
            with open(img, "wb") as f:
                f.truncate(64 << 20)
            loop = os.path.join(top, "ext4")
            os.mkdir(loop)
            r = subprocess.run(["mkfs.ext4", "-q", "-F", img],
                               capture_output=True, text=True)
            if r.returncode == 0:
                r = subprocess.run(["mount", "-o", "loop,acl", img, loop],
                                   capture_output=True, text=True)
            if r.returncode != 0:
                loop = None
                pytest.skip("no ACLs on %s and no ext4 image: %s" % (
                    top, r.stderr.strip()))
            os.chmod(loop, 0o755)
            area = loop
            if not acl_supported(area):
                pytest.skip("no ACL support on %s or an ext4 image" % top)
        yield area
    finally:
        mnt = os.path.join(area, "mnt")
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-u", "-z", mnt], check=False)
        if loop is not None and os.path.ismount(loop):
            if subprocess.run(["umount", loop]).returncode != 0:
                subprocess.run(["umount", "-l", loop], check=False)
        shutil.rmtree(top, ignore_errors=True)


def shared_mount(make_mount, area):
    """An allow_other mount in `area` and the plain directory beside it;
    returns (mount, [mount root, plain root])."""
    m = make_mount(opts=["allow_other"], backing=os.path.join(area, "backing"),
                   mnt=os.path.join(area, "mnt"))
    os.chmod(m.mnt, 0o755)
    plain = os.path.join(area, "plain")
    os.mkdir(plain)
    os.chmod(plain, 0o755)
    return m, [m.mnt, plain]


def compare(roots, rels, where):
    """Asserts every path in `rels` looks the same under both roots (the
    mount first); returns the mount's descriptions."""
    diffs, got = [], {}
    for rel in rels:
        a = describe(os.path.join(roots[0], rel))
        b = describe(os.path.join(roots[1], rel))
        got[rel] = a
        if a != b:
            diffs.append("%s: %s" % (rel, "; ".join(
                "%s %s on the mount, %s locally" % (
                    k, *(v.strip().replace("\n", ",") if k == "acl" else v
                         for v in (a[k], b[k])))
                for k in a if a[k] != b[k])))
    assert not diffs, "%s: the mount differs from a local directory:\n%s" % (
        where, "\n".join(diffs))
    return got


# ---- item 6: default ACLs and the umask ----------------------------------

CREATE = PRELUDE + r"""
who = sys.argv[1]
for i, d in enumerate(sys.argv[2:]):
    def mkfile(p):
        os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    t("%d/f-%s" % (i, who), lambda: mkfile(os.path.join(d, "f-" + who)))
    t("%d/p-%s" % (i, who), lambda: os.mkfifo(os.path.join(d, "p-" + who),
                                               0o666))
    t("%d/d-%s" % (i, who), lambda: os.mkdir(os.path.join(d, "d-" + who),
                                              0o777))
    t("%d/d-%s/f" % (i, who), lambda: mkfile(os.path.join(d, "d-" + who,
                                                           "f")))
print(json.dumps(out))
"""

WHO = ("root", "nobody")


def create_as_everyone(roots, dirs):
    """Runs CREATE as root and as nobody in each of `dirs` under each root;
    asserts every step worked on both; returns the paths made."""
    rels = []
    for who in WHO:
        for d in dirs:
            res = as_user(who, CREATE, who,
                          *[os.path.join(r, d) for r in roots])
            for step, err in sorted(res.items()):
                assert err == 0, "%s as %s: %s (all: %s)" % (
                    step, who, err, res)
            rels += [os.path.join(d, n) for n in
                     ("f-" + who, "p-" + who, "d-" + who,
                      os.path.join("d-" + who, "f"))]
    return rels


@needs_root
def test_default_acl_inherited(acl_area, make_mount):
    m, roots = shared_mount(make_mount, acl_area)
    for root in roots:
        da = os.path.join(root, "da")
        os.mkdir(da)
        os.chmod(da, 0o777)
        run("setfacl", "-d", "-m", DEFAULT_ACL, da)
        sg = os.path.join(root, "sg")
        os.mkdir(sg)
        os.chown(sg, 0, GROUP)
        os.chmod(sg, 0o2777)
        run("setfacl", "-d", "-m", DEFAULT_ACL, sg)
    compare(roots, ["da", "sg"], "the directories with a default ACL")
    rels = create_as_everyone(roots, ["da", "sg"])
    got = compare(roots, rels, "made in a directory with a default ACL")

    # what the default ACL means, spelt out: umask 022 ignored, mask from
    # the mode asked for, named user kept, directories inherit it all
    want_default = default_entries(m.path("da"))
    assert "default:user:%d:r-x" % OTHER_UID in want_default
    for rel, d in sorted(got.items()):
        base = os.path.basename(rel)
        isdir = base.startswith("d-")
        want = (0o775 if isdir else 0o664) | (
            stat.S_ISGID if isdir and rel.startswith("sg/") else 0)
        assert d["mode"] == oct(want), "%s: mode %s, want %s" % (
            rel, d["mode"], oct(want))
        assert "user:%d:r-x" % OTHER_UID in d["acl"], (rel, d["acl"])
        assert ("mask::rwx" if isdir else "mask::rw-") in d["acl"], (
            rel, d["acl"])
        if isdir:
            assert default_entries(m.path(rel)) == want_default, rel
        if rel.startswith("sg/"):
            assert d["gid"] == GROUP, "%s: group %d" % (rel, d["gid"])
    for who in WHO:
        st = os.stat(m.bpath("sg", "d-" + who))
        assert st.st_mode & stat.S_ISGID and st.st_gid == GROUP, \
            "BACKING sg/d-%s: mode %o, group %d" % (who, st.st_mode, st.st_gid)

    # kept in BACKING, not only in the daemon's memory
    m.remount()
    assert compare(roots, rels, "after a remount") == got
    m.stop()
    fsck_clean(m, "default ACLs")


@needs_root
def test_umask_without_default_acl(acl_area, make_mount):
    m, roots = shared_mount(make_mount, acl_area)
    for root in roots:
        os.mkdir(os.path.join(root, "pub"))
        os.chmod(os.path.join(root, "pub"), 0o777)
    rels = create_as_everyone(roots, ["pub"])
    got = compare(roots, rels, "made in a directory without default ACL")
    for rel, d in sorted(got.items()):
        want = 0o755 if os.path.basename(rel).startswith("d-") else 0o644
        assert d["mode"] == oct(want), "%s: mode %s, want %s (umask 022)" % (
            rel, d["mode"], oct(want))
        assert mode(m.bpath(rel)) == want, "BACKING %s: mode %o" % (
            rel, mode(m.bpath(rel)))
    m.stop()
    fsck_clean(m, "umask")


# ---- item 6: access ACLs are enforced ------------------------------------

ACCESS = PRELUDE + r"""
phase = sys.argv[1]
for i, d in enumerate(sys.argv[2:]):
    t("%d/read" % i, lambda: open(os.path.join(d, "grant"), "rb").read())
    t("%d/write" % i, lambda: open(os.path.join(d, "wgrant"), "r+b")
      .write(b"w"))
    t("%d/read_denied" % i, lambda: open(os.path.join(d, "deny"), "rb")
      .read())
    t("%d/create_in_dir" % i, lambda: os.close(os.open(
        os.path.join(d, "dir", "new-" + phase),
        os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)))
print(json.dumps(out))
"""


def access_results(who, phase, roots):
    """Runs ACCESS as `who` on both roots; asserts both give the same
    results; returns the mount's {step: 0 or errno name}."""
    res = as_user(who, ACCESS, "%s-%s" % (phase, who), *roots)
    mnt = {k[2:]: v for k, v in res.items() if k.startswith("0/")}
    loc = {k[2:]: v for k, v in res.items() if k.startswith("1/")}
    assert mnt == loc, "%s: mount %s, local directory %s" % (who, mnt, loc)
    return mnt


@needs_root
def test_access_acl_enforced(acl_area, make_mount):
    m, roots = shared_mount(make_mount, acl_area)
    files = (("grant", 0o600, "u:%d:r--" % NOBODY),
             ("wgrant", 0o600, "u:%d:rw-" % NOBODY),
             ("deny", 0o644, "u:%d:---" % NOBODY))
    for root in roots:
        for name, mode_bits, entry in files:
            p = os.path.join(root, name)
            with open(p, "wb") as f:
                f.write(b"root's %s\n" % name.encode())
            os.chmod(p, mode_bits)
            run("setfacl", "-m", entry, p)
        d = os.path.join(root, "dir")
        os.mkdir(d)
        os.chmod(d, 0o700)
        run("setfacl", "-m", "u:%d:rwx" % NOBODY, d)
    got = compare(roots, ["grant", "wgrant", "deny", "dir"],
                  "after setfacl -m")
    assert got["grant"]["mode"] == oct(0o640), got["grant"]  # mask r--
    assert got["dir"]["mode"] == oct(0o770), got["dir"]

    res = access_results("nobody", "granted", roots)
    assert res == {"read": 0, "write": 0, "read_denied": "EACCES",
                   "create_in_dir": 0}, res
    # the --- entry is nobody's only: others still read by the mode
    assert access_results("other", "granted", roots)["read_denied"] == 0

    for root in roots:
        for name in ("grant", "wgrant", "dir"):
            run("setfacl", "-x", "u:%d" % NOBODY, os.path.join(root, name))
    got = compare(roots, ["grant", "wgrant", "deny", "dir"],
                  "after setfacl -x")
    assert got["grant"]["mode"] == oct(0o600), got["grant"]
    res = access_results("nobody", "removed", roots)
    assert res == {"read": "EACCES", "write": "EACCES",
                   "read_denied": "EACCES", "create_in_dir": "EACCES"}, res
    # nobody's one granted write, over the first byte
    assert open(m.path("wgrant"), "rb").read() == b"woot's wgrant\n"
    m.stop()
    fsck_clean(m, "access ACLs")


# ---- item 6: setgid clearing ---------------------------------------------

KILL = PRELUDE + r"""
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64,
                           ctypes.c_int64]
def fd_op(p, fn, flags=os.O_WRONLY):
    fd = os.open(p, flags)
    try:
        fn(fd)
    finally:
        os.close(fd)
def falloc(fd, mode, off, length):  # mode 3: PUNCH_HOLE | KEEP_SIZE
    if libc.fallocate(fd, mode, off, length):
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
OPS = {
    "write": lambda p: fd_op(p, lambda fd: os.pwrite(fd, b"y", 5)),
    "fallocate": lambda p: fd_op(p, lambda fd: falloc(fd, 0, 0, 200000)),
    "punch": lambda p: fd_op(p, lambda fd: falloc(fd, 3, 0, 8192)),
    "truncate": lambda p: os.truncate(p, 10),
    "open_trunc": lambda p: os.close(os.open(p, os.O_WRONLY | os.O_TRUNC)),
}
for arg in sys.argv[1:]:
    op, p = arg.split(":", 1)
    t(arg, lambda: OPS[op](p))
print(json.dumps(out))
"""

# (file name, who acts, what it does)
KILL_CASES = [("write", "nobody", "write"),
              ("fallocate", "nobody", "fallocate"),
              ("punch", "nobody", "punch"),
              ("truncate", "nobody", "truncate"),
              ("open_trunc", "nobody", "open_trunc"),
              ("member_write", "member", "write"),
              ("root_write", "root", "write")]


@needs_root
def test_setgid_cleared_by_non_member(acl_area, make_mount):
    m, roots = shared_mount(make_mount, acl_area)
    content = bytes(range(256)) * 400
    for root in roots:
        pub = os.path.join(root, "pub")
        os.mkdir(pub)
        os.chmod(pub, 0o777)
        for name, _, _ in KILL_CASES:
            p = os.path.join(pub, name)
            with open(p, "wb") as f:
                f.write(content)
            os.chown(p, 0, GROUP)
            os.chmod(p, 0o6666)
    rels = [os.path.join("pub", n) for n, _, _ in KILL_CASES]
    for rel, d in compare(roots, rels, "before").items():
        assert d["mode"] == oct(0o6666), (rel, d)

    for who in ("nobody", "member", "root"):
        args = ["%s:%s" % (op, os.path.join(r, "pub", name))
                for r in roots for name, w, op in KILL_CASES if w == who]
        res = as_user(who, KILL, *args)
        failed = {k: v for k, v in res.items() if v != 0}
        assert not failed, "as %s: %s" % (who, failed)

    modes = {}
    for name, _, _ in KILL_CASES:
        mm, lm = (mode(os.path.join(r, "pub", name)) for r in roots)
        bm = mode(m.bpath("pub", name))
        modes[name] = (oct(mm), oct(bm), oct(lm))
    bad = {n: v for n, v in modes.items() if len(set(v)) != 1}
    assert not bad, ("modes (mount, BACKING, local directory) differ: %s; "
                     "all: %s" % (bad, modes))
    for name, who, _ in KILL_CASES:
        if who == "nobody":
            assert modes[name][0] == oct(0o666), \
                "%s by nobody: mode %s, want setuid and setgid cleared" % (
                    name, modes[name][0])
    sizes = {n: os.stat(m.path("pub", n)).st_size for n, _, _ in KILL_CASES}
    assert (sizes["fallocate"], sizes["punch"], sizes["truncate"],
            sizes["open_trunc"]) == (200000, len(content), 10, 0), sizes
    m.stop()
    fsck_clean(m, "setgid clearing")


# ---- item 5: fallocate checks the free space -----------------------------

def free_bytes(m):
    st = os.statvfs(m.backing)
    return st.f_bavail * st.f_frsize


LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64,
                           ctypes.c_int64]


def try_fallocate(path, off, length):
    """fallocate mode 0 on `path` (created if missing); returns None or the
    errno, and the size after it.  The system call itself: glibc's
    posix_fallocate would answer EOPNOTSUPP by writing every block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        err = None
        if LIBC.fallocate(fd, 0, off, length):
            err = ctypes.get_errno()
        return err, os.fstat(fd).st_size
    finally:
        os.close(fd)


def expect_enospc(m, path, off, length, size_before):
    free = free_bytes(m)
    err, size = try_fallocate(path, off, length)
    assert err == errno.ENOSPC, (
        "fallocate of %d MiB at %d with %.1f MiB free in BACKING: %s "
        "(size now %d), want ENOSPC" % (
            length >> 20, off, free / 2 ** 20,
            "succeeded" if err is None else errno.errorcode.get(err, err),
            size))
    assert size == size_before, "size %d after the failed fallocate, was %d" \
        % (size, size_before)
    assert os.stat(path).st_size == size_before


def test_fallocate_checks_free_space(small_tmpfs, make_mount, tmp_path):
    m = make_mount(backing=small_tmpfs / "backing", mnt=tmp_path / "fs-mnt")
    head = os.urandom(100000)
    assert write_and_sync(m.path("pre"), head) is None
    free = free_bytes(m)
    assert free > (TMPFS_MB - 8) << 20, "only %d bytes free" % free

    # more than there is: refused, whether the file is new or not
    expect_enospc(m, m.path("pre"), 0, 2 * free, len(head))
    expect_enospc(m, m.path("new"), 0, 2 * free, 0)
    expect_enospc(m, m.path("pre"), len(head), free + (8 << 20), len(head))
    # what fits: the size is set, the data kept, the rest reads as zeros
    quarter = free // 4 // 4096 * 4096
    err, size = try_fallocate(m.path("pre"), 0, quarter)
    assert err is None, "fallocate of a quarter of the free space: %s" % (
        errno.errorcode.get(err, err))
    assert size == quarter == os.stat(m.path("pre")).st_size
    with open(m.path("pre"), "rb") as f:
        assert f.read(len(head)) == head
        f.seek(quarter - 65536)
        assert f.read() == bytes(65536)
    os.unlink(m.path("new"))

    # fill BACKING with incompressible data until it is full
    filled, failure = [], None
    for i in range(2 * TMPFS_MB // 4 + 4):
        name = "fill%02d" % i
        failure = write_and_sync(m.path(name), os.urandom(4 << 20))
        if failure is not None:
            break
        filled.append(name)
    assert failure is not None, "%d MiB never filled up" % TMPFS_MB
    assert failure[1] == errno.ENOSPC, "filling: %s failed with %s" % (
        failure[0], errno.errorcode.get(failure[1], failure[1]))
    assert len(filled) >= 4, "full after %d files" % len(filled)
    assert m.proc.poll() is None, "daemon died"
    # full: even a small extension is refused; a range already written
    # needs nothing new and is fine
    expect_enospc(m, m.path("late"), 0, 2 * free_bytes(m) + (4 << 20), 0)
    err, size = try_fallocate(m.path(filled[0]), 0, 4 << 20)
    assert err is None, "fallocate over written data on a full disk: %s" % (
        errno.errorcode.get(err, err))
    assert size == 4 << 20

    # deleting makes room: writing and fallocate work again
    for name in filled + ["fill%02d" % len(filled), "late"]:
        os.unlink(m.path(name))
    again = os.urandom(8 << 20)
    assert write_and_sync(m.path("again"), again) is None
    with open(m.path("again"), "rb") as f:
        assert f.read() == again
    err, size = try_fallocate(m.path("alloc"), 0, free_bytes(m) // 4)
    assert err is None, "fallocate after deleting: %s" % (
        errno.errorcode.get(err, err))
    m.stop()
    fsck_clean(m, "after ENOSPC")
    m.start()
    assert os.stat(m.path("pre")).st_size == quarter
    with open(m.path("again"), "rb") as f:
        assert f.read() == again
    m.stop()
