"""The man page squeezefs(8), docs/squeezefs.8.

It renders with man(1) without a message on stderr, and groff finds
nothing to warn about in it (-ww); its text names every mount option that
usage() in fs/main.c prints (parsed from the source, so that an option
added without documentation fails here), every subcommand main() hands
to squeezefs-admin, the four files of the control directory and the two
virtual xattrs, each in its own section; and `make install` puts it in
$(PREFIX)/share/man/man8, where man(1) renders it too.  Nothing is
mounted."""

import os
import re
import shutil
import subprocess

import pytest

from sqfs_util import ROOT

PAGE = os.path.join(ROOT, "docs", "squeezefs.8")
MAIN_C = os.path.join(ROOT, "fs", "main.c")

SECTIONS = ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "CONTROL DIRECTORY",
            "EXTENDED ATTRIBUTES", "COMMANDS", "FILES", "EXIT STATUS",
            "EXAMPLES", "SEE ALSO"]
CONTROL_FILES = ["stats", "metrics", "control", "last_error"]
XATTRS = ["user.squeezefs.stats", "user.squeezefs.codec"]

needs_man = pytest.mark.skipif(
    shutil.which("man") is None or shutil.which("groff") is None,
    reason="man or groff not installed (Debian packages man-db and "
           "groff-base: scripts/install-deps.sh)")


def man_env():
    env = dict(os.environ)
    env.pop("MAN_KEEP_FORMATTING", None)
    env.update(MANWIDTH="80", LC_ALL="C.UTF-8", MANPAGER="cat", PAGER="cat")
    return env


def render(path):
    """The page at @path as man(1) shows it: its text; stderr empty."""
    r = subprocess.run(["man", "-l", path], env=man_env(), capture_output=True,
                       timeout=60)
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 0, "man -l %s: exit %d: %s" % (path, r.returncode,
                                                          err)
    assert err == "", "man -l %s wrote on stderr:\n%s" % (path, err)
    # man-db leaves no overstriking when stdout is not a terminal; the
    # hyphen and minus characters of a UTF-8 locale read as ASCII here.
    text = r.stdout.decode()
    return text.replace("\u2010", "-").replace("\u2212", "-")


def sections(text):
    """{heading: its text} of the rendered page (headings at column 0)."""
    out, name = {}, None
    for line in text.splitlines():
        if re.match(r"^[A-Z][A-Z ]*[A-Z]$", line):
            name = line
            out[name] = []
        elif name is not None:
            out[name].append(line)
    return {k: "\n".join(v) for k, v in out.items()}


def usage_options():
    """The -o options usage() prints: [(name, takes a value)]."""
    src = open(MAIN_C).read()
    m = re.search(r"^static void usage\(.*?^}", src, re.S | re.M)
    assert m, "no usage() in fs/main.c"
    opts = re.findall(r"-o ([a-z_]+)(=?)", m.group(0))
    assert len(opts) >= 10, "parsed too few options from usage(): %r" % opts
    return [(name, eq == "=") for name, eq in opts]


def subcommands():
    """The commands main() hands to squeezefs-admin."""
    src = open(MAIN_C).read()
    m = re.search(r"^int main\(.*?run_admin\(argv\)", src, re.S | re.M)
    assert m, "no hand-over to run_admin() in main()"
    cmds = re.findall(r'strcmp\(argv\[1\], "([a-z]+)"\)', m.group(0))
    assert {"fsck", "export"} <= set(cmds), cmds
    return cmds


@needs_man
def test_renders_without_warnings():
    render(PAGE)
    r = subprocess.run(["groff", "-man", "-ww", "-z", PAGE], env=man_env(),
                       capture_output=True, timeout=60)
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 0 and err == "", \
        "groff -man -ww -z: exit %d:\n%s" % (r.returncode, err)
    r = subprocess.run(["man", "--warnings", "-l", PAGE], env=man_env(),
                       capture_output=True, timeout=60)
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 0 and err == "", \
        "man --warnings -l: exit %d:\n%s" % (r.returncode, err)


@needs_man
def test_documents_everything():
    text = render(PAGE)
    sec = sections(text)
    missing = [s for s in SECTIONS if s not in sec]
    assert not missing, "sections missing: %s" % missing
    assert re.search(r"squeezefs \[-o OPTIONS\] BACKING MOUNTPOINT",
                     sec["SYNOPSIS"])
    assert "mount -t fuse.squeezefs BACKING MOUNTPOINT -o OPTIONS" in \
        sec["SYNOPSIS"]

    # Every option as a tag of its own in OPTIONS: "name=" or the bare
    # word at the start of a line.
    undocumented = []
    for name, value in usage_options():
        pat = (r"^\s+%s=" if value else r"^\s+%s(\s|$)") % re.escape(name)
        if not re.search(pat, sec["OPTIONS"], re.M):
            undocumented.append(name + ("=" if value else ""))
    assert not undocumented, \
        "mount options of usage() not in OPTIONS: %s" % undocumented

    for cmd in subcommands():
        assert re.search(r"^\s+squeezefs %s\b" % cmd, sec["SYNOPSIS"], re.M), \
            "subcommand %s not in SYNOPSIS" % cmd
        assert re.search(r"^\s+%s\b" % cmd, sec["COMMANDS"], re.M), \
            "subcommand %s not in COMMANDS" % cmd

    for f in CONTROL_FILES:
        assert re.search(r"^\s+%s(\s|$)" % f, sec["CONTROL DIRECTORY"],
                         re.M), "control file %s not described" % f
    assert ".squeezefs" in sec["CONTROL DIRECTORY"]
    for x in XATTRS:
        assert re.search(r"^\s+%s\s*$" % re.escape(x),
                         sec["EXTENDED ATTRIBUTES"], re.M), \
            "xattr %s not described" % x

    for f in ["stats.db", "lock", "packs"]:
        assert "BACKING/.squeezefs/" + f in sec["FILES"], f
    for ref in ["mount.fuse3(8)", "fusermount3(1)", "compsize(8)"]:
        assert ref in sec["SEE ALSO"], ref
    assert "fuse.squeezefs" in sec["EXAMPLES"]


@needs_man
def test_make_install(tmp_path):
    bins = [os.path.join(ROOT, "build", b)
            for b in ("squeezefs", "squeezefs-admin")]
    if not all(os.path.exists(b) for b in bins):
        pytest.skip("binaries not built (build/squeezefs, "
                    "build/squeezefs-admin): run make")
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    dest = tmp_path / "dest"
    # -o: install the binaries as they are, never relink them here.
    r = subprocess.run(["make", "-s", "-o", "build/squeezefs",
                        "-o", "build/squeezefs-admin", "install",
                        "DESTDIR=%s" % dest, "PREFIX=/usr/local"],
                       cwd=ROOT, capture_output=True, timeout=300)
    assert r.returncode == 0, "make install: exit %d:\n%s%s" % (
        r.returncode, r.stdout.decode(errors="replace"),
        r.stderr.decode(errors="replace"))
    page = dest / "usr/local/share/man/man8/squeezefs.8"
    assert page.is_file(), "make install did not install %s" % page
    assert page.stat().st_mode & 0o777 == 0o644
    assert page.read_bytes() == open(PAGE, "rb").read()
    assert (dest / "usr/local/bin/squeezefs").is_file()
    assert "squeezefs - " in render(str(page))
