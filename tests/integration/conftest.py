"""pytest fixtures: every test that takes `sqfs` gets a fresh backing
directory mounted at a fresh mount point, always unmounted afterwards."""

import os
import signal
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sqfs_util import BIN, EXTRA_OPTS, Mount  # noqa: E402

# A suite started in the background of a non-interactive shell (`make test
# &`) inherits SIGINT ignored, and so would every daemon it starts: libfuse
# leaves an ignored signal ignored (as nohup wants for SIGHUP), and the
# tests that end a daemon with SIGINT would wait for nothing.  Daemons get
# the default disposition (a handler here becomes the default across
# exec).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
# The same for SIGHUP under nohup; this process keeps ignoring it (a
# handler that does nothing), its daemons do not.
if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:
    signal.signal(signal.SIGHUP, lambda *_: None)


@pytest.hookimpl(trylast=True)  # after the terminal reporter is set up
def pytest_configure(config):
    if not os.path.exists(BIN):
        pytest.exit("squeezefs binary not built: %s (run make)" % BIN, 2)
    # A pass with SQ_MOUNT_OPTS (make test-matrix, make integration-wb)
    # lists each skip with its reason (-rs), so a test that cannot hold
    # under the pass's option says so in the output.
    tr = config.pluginmanager.getplugin("terminalreporter")
    if EXTRA_OPTS and tr is not None and not set("sSaA") & set(tr.reportchars):
        tr.reportchars += "s"


@pytest.fixture
def make_mount(tmp_path):
    """Factory: make_mount(opts=[...], name='a', env={...}) -> started
    Mount; `backing` and `mnt` override where the backing directory and
    the mount point are."""
    mounts = []

    def factory(opts=None, name="fs", start=True, env=None, backing=None,
                mnt=None):
        m = Mount(backing or tmp_path / (name + "-backing"),
                  mnt or tmp_path / (name + "-mnt"), opts=opts,
                  log=tmp_path / (name + "-daemon.log"), env=env)
        mounts.append(m)
        return m.start() if start else m

    yield factory
    errors = []
    for m in mounts:
        try:
            m.cleanup()
        except Exception as e:  # keep unmounting the others
            errors.append(e)
    if errors:
        raise errors[0]


@pytest.fixture
def sqfs(make_mount):
    """A fresh squeezefs mount with default options."""
    return make_mount()


@pytest.fixture(params=["4K", "128K"])
def sqfs_bs(request, make_mount):
    """A fresh mount for each of the block sizes that matter most."""
    return make_mount(opts=["block_size=" + request.param])


# The size of the small_tmpfs fixture's filesystem.
SMALL_TMPFS_MB = 64


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 64 MiB tmpfs to put BACKING on, to fill the disk; unmounted
    afterwards, also when a squeezefs mount at tmp_path/fs-mnt on it is
    still alive (the test's own cleanup normally stops that first)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    d = tmp_path / "tmpfs"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o",
                        "size=%dm,mode=0755" % SMALL_TMPFS_MB, "tmpfs",
                        str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs: " + r.stderr.strip())
    try:
        yield d
    finally:
        fuse_mnt = str(tmp_path / "fs-mnt")
        if os.path.ismount(fuse_mnt):
            subprocess.run(["fusermount3", "-u", "-z", fuse_mnt],
                           check=False)
        if subprocess.run(["umount", str(d)],
                          capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(d)], check=False)
