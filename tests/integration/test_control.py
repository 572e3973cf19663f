"""See and steer it (issue "See and steer it"): MOUNT/.squeezefs, the
control directory (fs/ctl.c), the user.squeezefs.stats and
user.squeezefs.codec xattrs, and `squeezefs stats|settle|recompress`
(admin/mounted.c), on real mounts.

1. After a mixed corpus is copied in, `stats` parses as JSON; its
   `backing_bytes` is `du -B1` of BACKING exactly, and it is the files'
   allocated bytes plus the overhead it itemizes (directories, other
   objects, BACKING/.squeezefs less the packed images); the files'
   user.squeezefs.stats add up to its totals; `squeezefs stats MOUNT`
   prints a TOTAL row of the same figures; `metrics` passes a strict parse
   of the Prometheus text format (the parser is below).
2. find, ls -a, du, rsync -aX and cp -a of the mount never meet
   `.squeezefs` nor a `user.squeezefs.*` name.
3. user.squeezefs.codec=zstd:19 on a directory: files made below it are
   stored with zstd:19 (their stats say so); `squeezefs recompress
   --codec lz4` of a tree changes its codec, keeps every byte and mtime,
   and shows progress.
4. Bad commands each fail with EINVAL, leave last_error saying why, and
   change nothing; with allow_other, another user cannot write control
   but may read stats and metrics.
"""

import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from sqfs_util import BIN, ROOT, ctl_command, wait_for, words_text

ADMIN = os.path.join(os.path.dirname(BIN), "squeezefs-admin")
CORPUS_SIZE = "12M"
NOBODY = 65534
WORDS = ("compress settle block codec level brotli zstd container pack "
         "index inode mount backing kernel request reply page cache write "
         "read flush sync rename link unlink directory file stats").split()


def ctl(m, *parts):
    return m.path(".squeezefs", *parts)


def read_ctl(m, name):
    with open(ctl(m, name), "rb") as f:
        return f.read()


def stats(m):
    return json.loads(read_ctl(m, "stats"))


def command(m, text):
    """Writes one command; returns 0 or the errno it failed with."""
    return ctl_command(m, text)


def xstats(path):
    return json.loads(os.getxattr(path, "user.squeezefs.stats"))


def du(path):
    out = subprocess.run(["du", "-s", "-B1", path], capture_output=True,
                         text=True, check=True).stdout
    return int(out.split()[0])


def squeezefs(*args, **kw):
    return subprocess.run([BIN] + list(args), capture_output=True,
                          text=True, timeout=600, **kw)


def tree_hashes(root):
    out = {}
    for d, dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = (
                    hashlib.sha256(fh.read()).hexdigest(),
                    os.stat(p).st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("ctl-corpus") / "c"
    subprocess.run(["/usr/bin/python3",
                    os.path.join(ROOT, "scripts", "make-corpus"),
                    "--size", CORPUS_SIZE, "--seed", "7", str(d)],
                   check=True, capture_output=True, timeout=300)
    os.remove(os.path.join(d, "MANIFEST.tsv"))
    return d


def settled_figures(m):
    """stats once BACKING has stopped changing (the packer done, about a
    second after the last close; the statistics flushed): the file read
    around a du of BACKING, all the same three times in a row a second
    apart."""
    seen = []

    def steady():
        a = stats(m)
        d = du(m.backing)
        b = stats(m)
        ok = (a["totals"] == b["totals"] and
              a["backing_bytes"] == b["backing_bytes"] == d)
        seen.append((a["totals"], d) if ok else None)
        return len(seen) >= 3 and seen[-1] is not None and \
            seen[-1] == seen[-2] == seen[-3]
    assert wait_for(steady, timeout=90, step=1.0), seen[-3:]
    return stats(m)


# ---- 1. the figures --------------------------------------------------------

METRIC_LINE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)'            # name
    r'(\{([a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*"'
    r'(,[a-zA-Z_][a-zA-Z0-9_]*="(\\.|[^"\\])*")*)?\})?'  # labels
    r' (-?[0-9.eE+-]+|NaN|\+Inf|-Inf)'        # value
    r'( -?[0-9]+)?$')                          # timestamp


def parse_metrics(text):
    """A strict reading of the Prometheus text exposition format (0.0.4):
    every metric family starts with one HELP and one TYPE line before its
    samples, a family is not split, names and labels are well formed,
    values are floats, the text ends with a newline.  Returns
    {name: (type, [(labels, value)])}."""
    assert text.endswith("\n"), "no final newline"
    fams, order, cur = {}, [], None
    for line in text[:-1].split("\n"):
        assert line, "empty line"
        if line.startswith("# HELP "):
            name, _, helptext = line[7:].partition(" ")
            assert name not in fams, "family %s twice" % name
            assert helptext, line
            fams[name] = {"help": helptext, "type": None, "samples": []}
            order.append(name)
            cur = name
        elif line.startswith("# TYPE "):
            name, _, typ = line[7:].partition(" ")
            assert name == cur, "TYPE of %s after %s's HELP" % (name, cur)
            assert fams[name]["type"] is None and not fams[name]["samples"]
            assert typ in ("counter", "gauge", "untyped"), line
            fams[name]["type"] = typ
        elif line.startswith("#"):
            continue
        else:
            mt = METRIC_LINE.match(line)
            assert mt, "bad sample line: %r" % line
            name = mt.group(1)
            assert name == cur, "sample of %s in %s's family" % (name, cur)
            assert fams[name]["type"], "sample before TYPE: %r" % line
            float(mt.group(7))
            labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:\\.|'
                                     r'[^"\\])*)"', mt.group(3) or ""))
            fams[name]["samples"].append((labels, float(mt.group(7))))
    for name in order:
        assert name.startswith("squeezefs_"), name
        if fams[name]["type"] == "counter":
            assert name.endswith("_total"), name
    return fams


def test_stats_agree_with_du_xattrs_command_and_metrics(make_mount, corpus):
    m = make_mount()
    subprocess.run(["cp", "-a", str(corpus) + "/.", m.mnt], check=True,
                   timeout=600)
    first = next(os.path.join(d, f) for d, _, fs in os.walk(m.mnt)
                 for f in sorted(fs))
    os.link(first, m.path("a-hard-link"))
    os.symlink("nowhere", m.path("a-symlink"))
    assert command(m, "flush") == 0
    s = settled_figures(m)
    t, o = s["totals"], s["overhead"]

    # du of BACKING, itemized
    assert s["backing_bytes"] == (t["allocated_bytes"] + o["directory_bytes"]
                                  + o["other_bytes"] + o["squeezefs_bytes"])
    assert t["damaged_files"] == 0
    assert t["packed_files"] > 0, "the corpus has small files to pack"
    logical = sum(os.lstat(os.path.join(d, f)).st_size
                  for d, _, fs in os.walk(m.mnt) for f in fs
                  if os.path.isfile(os.path.join(d, f)) and
                  not os.path.islink(os.path.join(d, f))
                  and os.lstat(os.path.join(d, f)).st_nlink == 1)
    logical += os.lstat(m.path("a-hard-link")).st_size
    assert t["logical_bytes"] == logical
    assert 0 < t["ratio"] < 1
    assert sum(c["blocks"] for c in s["codecs"]) == t["blocks"]

    # every file's xattr, once per inode, adds up to the totals
    seen, alloc, logi, files, packed = set(), 0, 0, 0, 0
    for d, _, fs in os.walk(m.mnt):
        for f in fs:
            p = os.path.join(d, f)
            st = os.lstat(p)
            if not os.path.isfile(p) or os.path.islink(p) or \
                    st.st_ino in seen:
                continue
            seen.add(st.st_ino)
            x = xstats(p)
            assert x["type"] == "file"
            alloc += x["allocated_bytes"]
            logi += x["logical_bytes"]
            files += 1
            packed += x["packed"]
            assert x["state"] in ("hot", "settled", "packed"), x
    assert (alloc, logi, files, packed) == (
        t["allocated_bytes"], t["logical_bytes"], t["files"],
        t["packed_files"])
    root = xstats(m.mnt)
    assert root["type"] == "directory"
    assert (root["allocated_bytes"], root["logical_bytes"],
            root["files"]) == (t["allocated_bytes"], t["logical_bytes"],
                               t["files"])

    # squeezefs stats MOUNT: the TOTAL row
    r = squeezefs("stats", "--bytes", m.mnt)
    assert r.returncode == 0, r.stderr
    total = [ln.split() for ln in r.stdout.splitlines()
             if ln.startswith("TOTAL")]
    assert total, r.stdout
    assert int(total[0][2]) == t["allocated_bytes"], r.stdout
    assert int(total[0][3]) == t["logical_bytes"], r.stdout
    assert "Disk Usage" in r.stdout and "Uncompressed" in r.stdout
    rows = {ln.split()[0]: ln.split() for ln in r.stdout.splitlines()[2:]}
    for c in s["codecs"]:
        row = rows["%s:%d" % (c["codec"], c["level"])]
        assert int(row[2]) == c["stored_bytes"]
        assert int(row[3]) == c["logical_bytes"]
    j = json.loads(squeezefs("stats", "--json", m.mnt).stdout)
    assert j["allocated_bytes"] == t["allocated_bytes"]
    assert j["files"] == t["files"]

    # metrics: the same figures, strictly formatted
    fams = parse_metrics(read_ctl(m, "metrics").decode())
    assert fams["squeezefs_allocated_bytes"]["samples"][0][1] == \
        t["allocated_bytes"]
    assert fams["squeezefs_logical_bytes"]["samples"][0][1] == \
        t["logical_bytes"]
    assert fams["squeezefs_backing_bytes"]["samples"][0][1] == du(m.backing)
    blocks = {(lb["codec"], lb["level"]): v
              for lb, v in fams["squeezefs_codec_blocks"]["samples"]}
    assert blocks == {(c["codec"], str(c["level"])): c["blocks"]
                      for c in s["codecs"]}
    for name in ("cache_hits_total", "read_bytes_total",
                 "written_bytes_total", "settle_queued_files"):
        assert "squeezefs_" + name in fams
    assert fams["squeezefs_written_bytes_total"]["samples"][0][1] > 0


def test_stats_json_sections(sqfs):
    with open(sqfs.path("f"), "wb") as f:
        f.write(b"hello " * 50000)
    with open(sqfs.path("f"), "rb") as f:
        assert f.read() == b"hello " * 50000
    s = stats(sqfs)
    assert s["version"] == 1
    assert s["io"]["bytes_written"] >= 300000
    assert s["io"]["bytes_read"] >= 300000
    assert set(s["cache"]) >= {"bytes", "capacity_bytes", "hits", "misses"}
    assert "dirty_bytes" in s["write_queue"]
    assert s["policy"]["name"] == "fast"
    assert s["policy"]["foreground"]["text"].startswith("zstd:")
    assert s["policy"]["settle"]["text"] == "brotli:11"
    assert s["settle"]["mode"] == "max"
    assert s["settle"]["state"] in ("idle", "settling")
    for k in ("queued_files", "queued_bytes", "saved_bytes", "last_run"):
        assert k in s["settle"]
    # fresh at every open
    with open(sqfs.path("g"), "wb") as f:
        f.write(b"x" * 10000)
    assert stats(sqfs)["totals"]["files"] == s["totals"]["files"] + 1


# ---- 2. never seen by tools ------------------------------------------------

def no_squeezefs_names(top):
    for d, dirs, files in os.walk(top):
        for n in dirs + files:
            assert n != ".squeezefs", os.path.join(d, n)
            p = os.path.join(d, n)
            if not os.path.islink(p):
                assert not [x for x in os.listxattr(p)
                            if x.startswith("user.squeezefs.")], p


def test_tools_never_see_it(make_mount, tmp_path):
    m = make_mount()
    os.makedirs(m.path("d", "e"))
    with open(m.path("d", "e", "f.txt"), "wb") as f:
        f.write(b"text\n" * 10000)
    with open(m.path("top.bin"), "wb") as f:
        f.write(os.urandom(5000))
    os.setxattr(m.path("d"), "user.squeezefs.codec", b"zstd:19")
    os.setxattr(m.path("top.bin"), "user.mine", b"kept")
    assert os.path.isdir(m.path(".squeezefs"))
    assert sorted(os.listdir(m.path(".squeezefs"))) == [
        "control", "last_error", "metrics", "stats"]

    find = subprocess.run(["find", m.mnt], capture_output=True, text=True,
                          check=True).stdout
    assert ".squeezefs" not in find
    ls = subprocess.run(["ls", "-aR", m.mnt], capture_output=True,
                        text=True, check=True).stdout
    assert ".squeezefs" not in ls
    d = subprocess.run(["du", "-a", m.mnt], capture_output=True, text=True,
                       check=True).stdout
    assert ".squeezefs" not in d
    for p in (m.mnt, m.path("d"), m.path("top.bin"), m.path("d", "e")):
        assert not [x for x in os.listxattr(p)
                    if x.startswith("user.squeezefs.")], p
    getf = subprocess.run(["getfattr", "-R", "-d", "-m", "-", m.mnt],
                          capture_output=True, text=True)
    assert "squeezefs" not in getf.stdout

    copy = str(tmp_path / "copy")
    r = subprocess.run(["rsync", "-aX", m.mnt + "/", copy + "/"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    no_squeezefs_names(copy)
    assert os.getxattr(os.path.join(copy, "top.bin"), "user.mine") == b"kept"
    copy2 = str(tmp_path / "copy2")
    subprocess.run(["cp", "-a", m.mnt, copy2], check=True, timeout=120)
    no_squeezefs_names(copy2)
    assert sorted(os.listdir(copy2)) == ["d", "top.bin"]
    tar = subprocess.run(["tar", "-C", m.mnt, "--xattrs", "-cf", "-", "."],
                         capture_output=True, timeout=120)
    assert tar.returncode == 0 and b".squeezefs" not in tar.stdout


def test_control_dir_cannot_be_changed(sqfs):
    c = sqfs.path(".squeezefs")
    for fn, args, errs in (
            (os.mkdir, (c,), (errno.EEXIST,)),
            (os.rmdir, (c,), (errno.EBUSY, errno.EPERM, errno.ENOTEMPTY)),
            (os.unlink, (c,), (errno.EISDIR, errno.EPERM)),
            (os.rename, (c, sqfs.path("x")), (errno.EBUSY, errno.EPERM)),
            (os.mkdir, (os.path.join(c, "sub"),), (errno.EACCES,
                                                   errno.EPERM)),
            (os.unlink, (os.path.join(c, "stats"),), (errno.EACCES,
                                                      errno.EPERM)),
            (os.symlink, ("x", os.path.join(c, "l")), (errno.EACCES,
                                                        errno.EPERM))):
        with pytest.raises(OSError) as ei:
            fn(*args)
        assert ei.value.errno in errs, (fn, args, ei.value)
    with open(sqfs.path("f"), "wb"):
        pass
    with pytest.raises(OSError):
        os.rename(sqfs.path("f"), c)
    with pytest.raises(OSError):
        os.link(sqfs.path("f"), os.path.join(c, "f"))
    with pytest.raises(OSError):
        open(os.path.join(c, "stats"), "wb")
    with pytest.raises(FileNotFoundError):
        os.stat(os.path.join(c, "lock"))      # BACKING's stays hidden
    with pytest.raises(FileNotFoundError):
        os.stat(os.path.join(c, "stats.db"))
    with pytest.raises(OSError):
        os.setxattr(os.path.join(c, "stats"), "user.x", b"1")
    assert os.path.isdir(sqfs.bpath(".squeezefs"))


# ---- 3. pins and recompress ------------------------------------------------

def test_codec_pin_on_a_directory(make_mount):
    m = make_mount(opts=["nopack"])
    os.mkdir(m.path("pinned"))
    os.setxattr(m.path("pinned"), "user.squeezefs.codec", b"zstd:19")
    assert os.getxattr(m.path("pinned"), "user.squeezefs.codec") == \
        b"zstd:19"
    text = b"".join(b"line %d of a pinned text file\n" % i
                    for i in range(20000))
    os.makedirs(m.path("pinned", "sub"))
    for p in (m.path("pinned", "a.txt"), m.path("pinned", "sub", "b.txt"),
              m.path("free.txt")):
        with open(p, "wb") as f:
            f.write(text)
    for p in (m.path("pinned", "a.txt"), m.path("pinned", "sub", "b.txt")):
        x = xstats(p)
        assert x["pin"] == "zstd:19", x
        assert set(x["blocks"]) == {"zstd:19"}, x
    assert os.getxattr(m.path("pinned", "sub"), "user.squeezefs.codec") == \
        b"zstd:19"
    assert "zstd:19" not in xstats(m.path("free.txt"))["blocks"]
    assert xstats(m.path("free.txt"))["pin"] is None
    # the settle loop leaves a pinned file alone
    assert command(m, "settle pinned/a.txt") == 0
    assert set(xstats(m.path("pinned", "a.txt"))["blocks"]) == {"zstd:19"}
    # kept in BACKING across a remount
    m.stop()
    m.start()
    assert os.getxattr(m.path("pinned", "a.txt"), "user.squeezefs.codec") \
        == b"zstd:19"
    # bad values are refused; removing returns to automatic
    for bad in (b"zstd:99", b"gzip", b"", b"fast\0"):
        with pytest.raises(OSError) as ei:
            os.setxattr(m.path("pinned"), "user.squeezefs.codec", bad)
        assert ei.value.errno == errno.EINVAL
    os.removexattr(m.path("pinned"), "user.squeezefs.codec")
    with pytest.raises(OSError) as ei:
        os.getxattr(m.path("pinned"), "user.squeezefs.codec")
    assert ei.value.errno == errno.ENODATA
    with open(m.path("pinned", "c.txt"), "wb") as f:
        f.write(text)
    assert "zstd:19" not in xstats(m.path("pinned", "c.txt"))["blocks"]
    with pytest.raises(OSError) as ei:
        os.setxattr(m.path("free.txt"), "user.squeezefs.stats", b"{}")
    assert ei.value.errno in (errno.EPERM, errno.EACCES)


def test_recompress_a_tree(make_mount, corpus):
    m = make_mount()
    subprocess.run(["cp", "-a", str(corpus) + "/.", m.mnt], check=True,
                   timeout=600)
    before = tree_hashes(m.mnt)
    top = "source"    # text: every block compresses
    r = squeezefs("recompress", "--codec", "lz4", m.path(top))
    assert r.returncode == 0, r.stderr
    assert re.search(r"recompress: [0-9.]+ of [0-9.]+ MiB \(100%\)",
                     r.stderr), r.stderr
    x = xstats(m.path(top))
    # raw blocks stay raw (lz4 saved nothing), every other is lz4
    assert set(x["blocks"]) <= {"lz4:1", "none:0"}, x
    assert x["blocks"].get("lz4:1"), x
    assert tree_hashes(m.mnt) == before
    # the settle loop does not undo it: it is settled
    s = stats(m)
    assert s["totals"]["damaged_files"] == 0
    # and it survives a remount
    m.stop()
    m.start()
    assert tree_hashes(m.mnt) == before
    assert set(xstats(m.path(top))["blocks"]) <= {"lz4:1", "none:0"}


def test_settle_command(make_mount):
    m = make_mount(opts=["nopack"])
    text = words_text(1 << 20, 3, WORDS)
    with open(m.path("t.txt"), "wb") as f:
        f.write(text)
    assert set(xstats(m.path("t.txt"))["blocks"]) == {"zstd:1"}
    r = squeezefs("settle", m.path("t.txt"))
    assert r.returncode == 0, r.stderr
    x = xstats(m.path("t.txt"))
    assert set(x["blocks"]) == {"brotli:11"}, x
    assert x["state"] == "settled"
    with open(m.path("t.txt"), "rb") as f:
        assert f.read() == text
    # a file open for writing is left for later, and said so
    f = open(m.path("t.txt"), "ab")
    try:
        assert command(m, "settle t.txt") == errno.EBUSY
    finally:
        f.close()


# ---- 4. bad commands and other users ---------------------------------------

def test_bad_commands(make_mount, tmp_path):
    m = make_mount()
    outside = str(tmp_path / "outside")
    os.mkdir(outside)
    with open(m.path("f"), "wb") as f:
        f.write(b"data " * 1000)
    os.mkdir(m.path("d"))
    os.symlink(outside, m.path("d", "out"))
    os.symlink("/etc/passwd", m.path("abs-link"))
    policy0 = stats(m)["policy"]
    bx = subprocess.run(["find", m.backing, "-printf", "%p %s %T@\n"],
                        capture_output=True, text=True).stdout
    cases = [
        (b"frobnicate now", "unknown command"),
        (b"\n", "empty command"),
        (b"   ", "empty command"),
        (b"settle", "no path"),
        (b"recompress f", "want: recompress"),
        (b"settle ../../etc/passwd", "out of the mount"),
        (b"settle /etc/passwd", "absolute path"),
        (b"settle d/out", "out of the mount"),
        (b"settle abs-link", "out of the mount"),
        (b"settle .squeezefs/stats", "control directory"),
        (b"recompress f zstd:42", "unknown codec"),
        (b"policy turbo", "unknown policy"),
        (b"flush now", "no argument"),
        (b"settle f\nflush", "one command per write"),
        (b"settle f\0x", "NUL byte"),
        (os.urandom(1 << 20), "too long"),
    ]
    for cmd, why in cases:
        assert command(m, cmd) == errno.EINVAL, cmd[:40]
        err = read_ctl(m, "last_error").decode()
        assert err.endswith("\n") and err.count("\n") == 1, err
        assert why in err, (cmd[:40], err)
    # a name that is not there: ENOENT, said the same way
    assert command(m, "settle nosuchfile") == errno.ENOENT
    assert "no such file" in read_ctl(m, "last_error").decode()
    assert stats(m)["policy"] == policy0
    after = subprocess.run(["find", m.backing, "-printf", "%p %s %T@\n"],
                           capture_output=True, text=True).stdout
    strip = lambda t: sorted(ln for ln in t.splitlines()
                             if "/.squeezefs" not in ln)
    assert strip(after) == strip(bx)
    # the argument is taken as it is: a name may start with a blank
    with open(m.path(" f"), "wb") as f:
        f.write(b"blank " * 1000)
    assert command(m, "recompress  f lz4") == 0
    assert set(xstats(m.path(" f"))["blocks"]) == {"lz4:1"}
    assert "lz4:1" not in xstats(m.path("f"))["blocks"]
    os.unlink(m.path(" f"))
    # good ones still work, and change what they say
    assert command(m, "policy max\n") == 0
    assert stats(m)["policy"]["name"] == "max"
    assert stats(m)["policy"]["foreground"]["text"] == "brotli:11"
    assert command(m, "flush") == 0


def test_other_users_may_read_not_steer(make_mount, request):
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv")
    top = tempfile.mkdtemp(prefix="sq-ctl-", dir="/tmp")
    os.chmod(top, 0o755)
    m = make_mount(opts=["allow_other"], backing=os.path.join(top, "b"),
                   mnt=os.path.join(top, "m"))
    request.addfinalizer(lambda: shutil.rmtree(top, ignore_errors=True))
    as_nobody = ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY,
                 "--clear-groups"]
    probe = r"""
import errno, json, os, sys
c = os.path.join(sys.argv[1], ".squeezefs")
json.load(open(os.path.join(c, "stats")))
assert open(os.path.join(c, "metrics")).read().startswith("# HELP")
try:
    fd = os.open(os.path.join(c, "control"), os.O_WRONLY)
    os.write(fd, b"policy max")
    sys.exit("nobody wrote control")
except OSError as e:
    assert e.errno in (errno.EACCES, errno.EPERM), e
print("OK")
"""
    r = subprocess.run(as_nobody + [sys.executable, "-c", probe, m.mnt],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "OK", r
    assert stats(m)["policy"]["name"] != "max"
    r = subprocess.run(as_nobody + [ADMIN, "settle", m.mnt],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "control" in r.stderr, r


def test_commands_say_why_they_are_refused(make_mount, tmp_path):
    m = make_mount(opts=["settle=off"])
    with open(m.path("f.txt"), "wb") as f:
        f.write(words_text(300000, 5, WORDS))
    r = squeezefs("recompress", "--codec", "zstd:42", m.path("f.txt"))
    assert r.returncode == 1 and "unknown codec" in r.stderr, r
    r = squeezefs("settle", m.path("f.txt"))
    assert r.returncode == 1 and "settle loop is off" in r.stderr, r
    r = squeezefs("settle", str(tmp_path))
    assert r.returncode == 2 and "not in a squeezefs mount" in r.stderr, r
    r = squeezefs("recompress", m.path("f.txt"))
    assert r.returncode == 2 and "usage" in r.stderr, r
    r = squeezefs("stats")
    assert r.returncode == 2 and "usage" in r.stderr, r
    assert set(xstats(m.path("f.txt"))["blocks"]) != {"zstd:42"}


def test_progress_bar_on_a_terminal(make_mount):
    """On a terminal the progress line is redrawn in place (\\r), with the
    bytes done of the total, the rate and the ETA."""
    if shutil.which("script") is None:
        pytest.skip("needs script(1) (util-linux)")
    m = make_mount(opts=["nopack"])
    os.mkdir(m.path("d"))
    for i in range(20):
        with open(m.path("d", "f%d.txt" % i), "wb") as f:
            f.write(words_text(200000, i, WORDS))
    r = subprocess.run(["script", "-qec", "%s recompress --codec zstd:3 %s"
                        % (BIN, m.path("d")), "/dev/null"],
                       capture_output=True, timeout=300)
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, out
    assert "\r" in out, out
    assert re.search(r"recompress: [0-9.]+ of 3\.8 MiB \(100%\), "
                     r"[0-9.]+ MiB/s, ETA [0-9]+:[0-9]{2}:[0-9]{2}", out), out
    assert set(xstats(m.path("d"))["blocks"]) == {"zstd:3"}
