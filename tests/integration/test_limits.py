"""The daemon holds one O_PATH fd per inode the kernel remembers, and the
kernel forgets inodes only under memory pressure.  Under a low open-file
limit squeezefs asks the kernel to forget the least recently used inodes
(fs/prune.c) instead of failing lookups with EMFILE: a tree of several
times more files than the limit stays usable."""

import os
import resource
import time

LIMIT = 512
NFILES = 3000


def nfds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def content(k):
    return ("file %d of the limits test\n" % k) * (1 + k % 7)


def test_more_files_than_fds(make_mount):
    m = make_mount()
    pid = m.proc.pid
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (LIMIT, LIMIT))
    time.sleep(1.5)  # the daemon reads its limit again every second
    top = m.path("many")
    os.mkdir(top)
    peak = 0
    for k in range(NFILES):
        sub = os.path.join(top, "d%02d" % (k % 10))
        if k < 10:
            os.mkdir(sub)
        with open(os.path.join(sub, "f%05d" % k), "w") as f:
            f.write(content(k))
        if k % 250 == 0:
            peak = max(peak, nfds(pid))
    # Every name looked up again (ls -lR does the same), then read.
    for rnd in range(2):
        for k in range(NFILES):
            st = os.stat(os.path.join(top, "d%02d" % (k % 10), "f%05d" % k))
            assert st.st_size == len(content(k))
            if k % 250 == 0:
                peak = max(peak, nfds(pid))
    for k in range(NFILES):
        with open(os.path.join(top, "d%02d" % (k % 10), "f%05d" % k)) as f:
            assert f.read() == content(k), "file %d" % k
    peak = max(peak, nfds(pid))
    assert peak < LIMIT, "daemon used %d fds, limit %d" % (peak, LIMIT)
    log = m.read_log()
    assert "out of file descriptors" not in log, log[-2000:]
    m.remount()
    for k in range(0, NFILES, 97):
        with open(os.path.join(top, "d%02d" % (k % 10), "f%05d" % k)) as f:
            assert f.read() == content(k)
