#!/usr/bin/python3
"""squeezefs benchmark (issue 4): runs squeezefs side by side with a plain
directory, a bindfs passthrough and kernel btrfs compress=zstd:3, on the
home-cloud corpus of scripts/make-corpus, and writes a markdown table, JSON
and a PNG chart under bench/results/.

    scripts/bench/bench.py [--quick] [--squeezefs build/squeezefs] ...

Every workload runs each system once per repetition, interleaved
(A B C A B C), on fresh backing and mount directories under $BENCH_DIR
(default /var/tmp/squeezefs-bench), which is on the same disk for all.
Whatever it mounts it unmounts again, also on errors and signals.
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
MiB = 1 << 20
GiB = 1 << 30
CLK = os.sysconf("SC_CLK_TCK")

# bindfs as the FUSE passthrough reference (issue 4: the options that made
# it fastest here).  Each option is tried once at start-up and dropped when
# this bindfs refuses it; the result records which were used.
BINDFS_OPTS = ["big_writes", "kernel_cache", "attr_timeout=60",
               "entry_timeout=60", "negative_timeout=60"]

LIVE = []  # systems with something mounted or attached, for cleanup


def raise_nofile():
    """A FUSE daemon that keeps a descriptor per inode the kernel remembers
    runs out (EMFILE) during a 39k-file copy at a soft limit of 1024 or
    even 20000; libfuse's passthrough_hp raises its own limit.  Raise ours
    (inherited by every daemon) to fs.nr_open, or at least to the hard
    limit without CAP_SYS_RESOURCE, and return what we got."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        with open("/proc/sys/fs/nr_open") as f:
            want = int(f.read())
    except OSError:
        want = hard
    for lim in ((want, want), (hard, hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, lim)
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def log(*a):
    print("[bench %s]" % time.strftime("%H:%M:%S"), *a, flush=True)


def run(cmd, check=True, **kw):
    return subprocess.run(cmd, check=check, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, **kw)


def timed(cmd, shell=False, cwd=None):
    """Run cmd to completion; return (wall seconds, CPU seconds of it and
    its children).  wait4 gives the rusage of exactly this process tree."""
    t0 = time.monotonic()
    err = tempfile.TemporaryFile()
    p = subprocess.Popen(cmd, shell=shell, cwd=cwd,
                         stdout=subprocess.DEVNULL, stderr=err)
    try:
        _, status, ru = os.wait4(p.pid, 0)
    except BaseException:  # a signal: do not leave cp writing on
        p.kill()
        p.wait()
        raise
    p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    if p.returncode != 0:
        err.seek(0)
        lines = err.read().decode(errors="replace").splitlines()
        raise RuntimeError("%s exited with %d after %d error lines: %s" % (
            cmd if shell else cmd[0], p.returncode, len(lines),
            " / ".join(lines[:2])))
    return wall, ru.ru_utime + ru.ru_stime


def proc_cpu(pid):
    """utime+stime of all threads of pid, in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def proc_hwm(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == path:
                return True
    return False


DROP_OK = None


def drop_caches():
    global DROP_OK
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        DROP_OK = True
    except OSError:
        DROP_OK = False


def du_bytes(path, apparent=True):
    out = run(["du", "-s", "-b" if apparent else "-B1", path]).stdout
    return int(out.split()[0])


# --------------------------------------------------------------------------
# Systems.  mount() returns the directory to work in; unmount() makes the
# data durable and takes the file system away (plain: sync).


class System:
    fuse = False

    def __init__(self, name, label):
        self.name = name
        self.label = label
        self.pid = None
        self.peak_rss = 0
        self.notes = []

    def setup(self, rundir):
        self.rundir = rundir
        os.makedirs(rundir)
        LIVE.append(self)

    def teardown(self):
        try:
            self.unmount()
        finally:
            if self in LIVE:
                LIVE.remove(self)
            shutil.rmtree(self.rundir, ignore_errors=True)

    def daemon_cpu(self):
        return proc_cpu(self.pid) if self.pid else None

    def stored(self):
        return {}


class Plain(System):
    def setup(self, rundir):
        super().setup(rundir)
        self.dir = os.path.join(rundir, "data")
        os.makedirs(self.dir)

    def mount(self):
        return self.dir

    def unmount(self):
        os.sync()
        return {}

    def stored(self):
        return {"bytes": du_bytes(self.dir), "alloc": backing_alloc(self)}

    def category_bytes(self, apparent=True):
        return {c: du_bytes(os.path.join(self.dir, c), apparent)
                for c in sorted(os.listdir(self.dir))
                if os.path.isdir(os.path.join(self.dir, c))}


class Fuse(Plain):
    """A FUSE daemon run with -f so that we know its pid and can collect
    its CPU time and peak RSS with wait4 when it exits."""
    fuse = True

    def __init__(self, name, label, argv):
        super().__init__(name, label)
        self.argv = argv
        self.proc = None

    def setup(self, rundir):
        System.setup(self, rundir)
        self.dir = os.path.join(rundir, "backing")
        self.mnt = os.path.join(rundir, "mnt")
        os.makedirs(self.dir)
        os.makedirs(self.mnt)

    def mount(self):
        logf = open(os.path.join(self.rundir, "daemon.log"), "ab")
        self.proc = subprocess.Popen(self.argv + [self.dir, self.mnt],
                                     stdout=logf, stderr=logf)
        logf.close()
        self.pid = self.proc.pid
        for _ in range(200):
            if mounted(self.mnt):
                return self.mnt
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self._kill()
        with open(os.path.join(self.rundir, "daemon.log")) as f:
            raise RuntimeError("%s did not mount: %s" % (self.name,
                                                         f.read()[-800:]))

    def _kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self.pid = None

    def unmount(self):
        """Unmount and wait for the daemon; returns its CPU seconds over
        its whole life and its peak RSS."""
        if not self.proc:
            return {}
        hwm = proc_hwm(self.pid)
        for cmd in (["fusermount3", "-u", self.mnt],
                    ["fusermount", "-u", self.mnt], ["umount", self.mnt]):
            if not mounted(self.mnt):
                break
            run(cmd, check=False)
        if mounted(self.mnt):
            run(["umount", "-l", self.mnt], check=False)
        res = {}
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            pid, status, ru = os.wait4(self.pid, os.WNOHANG)
            if pid:
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                res = {"cpu": ru.ru_utime + ru.ru_stime,
                       "rss": max(hwm, ru.ru_maxrss * 1024)}
                self.peak_rss = max(self.peak_rss, res["rss"])
                self.proc = None
                self.pid = None
                return res
            time.sleep(0.02)
        self.notes.append("daemon did not exit after unmount; killed")
        self._kill()
        return res


class Btrfs(System):
    """Kernel btrfs with compress=zstd:3 on a loop device backed by a file
    on the same disk.  Metadata is 'single' like the data, so df counts
    every stored byte once (the default DUP would count metadata twice)."""

    def __init__(self, name, label, img_size):
        super().__init__(name, label)
        self.img_size = img_size // MiB * MiB
        self.dev = None

    def setup(self, rundir):
        super().setup(rundir)
        self.img = os.path.join(rundir, "btrfs.img")
        self.mnt = os.path.join(rundir, "mnt")
        os.makedirs(self.mnt)
        with open(self.img, "wb") as f:
            f.truncate(self.img_size)
        run(["mkfs.btrfs", "-q", "-m", "single", "-d", "single", self.img])
        self.dev = subprocess.run(
            ["losetup", "-f", "--show", self.img], check=True, text=True,
            stdout=subprocess.PIPE).stdout.strip()

    def mount(self):
        run(["mount", "-o", "compress=zstd:3", self.dev, self.mnt])
        return self.mnt

    def used(self):
        st = os.statvfs(self.mnt)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def unmount(self):
        if mounted(self.mnt):
            os.sync()
            run(["umount", self.mnt])
        return {}

    def teardown(self):
        try:
            self.unmount()
        finally:
            if self.dev:
                run(["losetup", "-d", self.dev], check=False)
                self.dev = None
            if self in LIVE:
                LIVE.remove(self)
            shutil.rmtree(self.rundir, ignore_errors=True)

    def compsize(self, path):
        if not shutil.which("compsize"):
            return None
        out = run(["compsize", "-b", path], check=False).stdout
        m = re.search(r"^TOTAL\s+\d+%\s+(\d+)\s+(\d+)\s+(\d+)", out, re.M)
        return int(m.group(1)) if m else None


def cleanup_all():
    for s in list(LIVE):
        try:
            s.teardown()
        except Exception as e:  # keep cleaning the others
            log("cleanup of %s: %s" % (s.name, e))


# --------------------------------------------------------------------------
# Detection.


def bindfs_options(workdir):
    """Which of BINDFS_OPTS this bindfs accepts (trial mounts)."""
    ok = []
    src = tempfile.mkdtemp(dir=workdir, prefix="probe-src-")
    mnt = tempfile.mkdtemp(dir=workdir, prefix="probe-mnt-")
    try:
        for o in BINDFS_OPTS:
            r = run(["bindfs", "--multithreaded", "-o", o, src, mnt],
                    check=False)
            if r.returncode == 0 and mounted(mnt):
                ok.append(o)
            for cmd in (["fusermount3", "-u", mnt], ["fusermount", "-u",
                                                     mnt]):
                if mounted(mnt):
                    run(cmd, check=False)
    finally:
        if mounted(mnt):
            run(["umount", "-l", mnt], check=False)
        os.rmdir(src)
        os.rmdir(mnt)
    return ok


def squeezefs_policies(binary, workdir):
    """(supported, default policy).  Trusts a trial mount, not --help."""
    h = run([binary, "--help"], check=False).stdout
    default = "balanced"
    # The option's help may wrap: up to its "(default X".
    m = re.search(r"policy=\S*[^(]*\(default[:= ]+(fast|balanced|max)", h)
    if m:
        default = m.group(1)
    if "policy" not in h:
        return False, default
    s = Fuse("probe", "probe", [binary, "-f", "-o", "policy=fast"])
    try:
        s.setup(tempfile.mkdtemp(dir=workdir, prefix="probe-sq-") + "/x")
        s.mount()
        ok = True
    except RuntimeError:
        ok = False
    finally:
        s.teardown()
        shutil.rmtree(os.path.dirname(s.rundir), ignore_errors=True)
    return ok, default


def loop_ok(workdir):
    if not (shutil.which("mkfs.btrfs") and shutil.which("losetup")):
        return "mkfs.btrfs or losetup not installed"
    if "btrfs" not in open("/proc/filesystems").read():
        run(["modprobe", "btrfs"], check=False)
    b = Btrfs("probe", "probe", 256 * MiB)
    try:
        b.setup(tempfile.mkdtemp(dir=workdir, prefix="probe-btrfs-") + "/x")
        b.mount()
        return None
    except Exception as e:
        return "loop-mounted btrfs failed: %s" % str(e).strip()[-200:]
    finally:
        b.teardown()
        shutil.rmtree(os.path.dirname(b.rundir), ignore_errors=True)


def machine(workdir):
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    fm = run(["findmnt", "-n", "-o", "SOURCE,FSTYPE", "-T", workdir],
             check=False).stdout.split()
    git = run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
              check=False).stdout.strip()
    dirty = run(["git", "-C", REPO, "status", "--porcelain", "--", "fs",
                 "meta", "codec", "analyzer"], check=False).stdout.strip()
    return {"nproc": os.cpu_count(), "mem_bytes": mem, "cpu": cpu,
            "kernel": platform.release(),
            "disk": " ".join(fm) if fm else "?",
            "git": git + ("+dirty" if dirty else ""),
            "fio": run(["fio", "--version"], check=False).stdout.strip(),
            "bindfs": run(["bindfs", "--version"],
                          check=False).stdout.strip().splitlines()[0]}


# --------------------------------------------------------------------------
# Workloads.  Each takes a set-up system and returns a dict of figures.


def corpus_info(corpus):
    n = size = 0
    for d, _, files in os.walk(corpus):
        for f in files:
            n += 1
            size += os.lstat(os.path.join(d, f)).st_size
    return n, size


def wl_copyread(sysm, corpus, logical, perf_out=None):
    res = {}
    btrfs0 = None
    dst = sysm.mount()
    if isinstance(sysm, Btrfs):
        os.sync()
        btrfs0 = sysm.used()
    perf = None
    if perf_out and sysm.pid:
        perf = subprocess.Popen(["perf", "record", "-g", "-o", perf_out,
                                 "-p", str(sysm.pid), "--", "sleep", "10"],
                                stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    _, cpu_cp = timed(["cp", "-a", corpus + "/.", dst])
    os.sync()
    if isinstance(sysm, Btrfs):
        res["stored_df"] = sysm.used() - btrfs0
        res["stored_compsize"] = sysm.compsize(dst)
        res["cat_compsize"] = {
            c: sysm.compsize(os.path.join(dst, c))
            for c in sorted(os.listdir(dst))
            if os.path.isdir(os.path.join(dst, c))}
    d = sysm.unmount()
    res["copy_s"] = time.monotonic() - t0
    if perf:
        perf.wait()
    res["copy_mibs"] = logical / MiB / res["copy_s"]
    res["copy_client_cpu"] = cpu_cp
    res["copy_daemon_cpu"] = d.get("cpu")
    if isinstance(sysm, Btrfs):
        res["stored"] = res["stored_df"]
    else:
        st = sysm.stored()
        res["stored"] = st["bytes"]
        res["stored_alloc"] = st["alloc"]
        res["cat"] = sysm.category_bytes()
        res["cat_alloc"] = sysm.category_bytes(False)
    dst = sysm.mount()
    drop_caches()
    c0 = sysm.daemon_cpu()
    wall, cpu_rd = timed("tar -cf - . | cat > /dev/null", shell=True,
                         cwd=dst)
    res["read_s"] = wall
    res["read_mibs"] = logical / MiB / wall
    res["read_client_cpu"] = cpu_rd
    if c0 is not None:
        res["read_daemon_cpu"] = sysm.daemon_cpu() - c0
    d = sysm.unmount()
    if d.get("rss"):
        res["rss"] = d["rss"]
    return res


def fio(args, name):
    out = run(["fio", "--output-format=json", "--name=" + name] + args).stdout
    j = json.loads(out[out.index("{"):])
    job = j["jobs"][0]
    return job


def wl_fio(sysm, fio_size, runtime):
    dst = sysm.mount()
    f = os.path.join(dst, "fio.dat")
    common = ["--filename=" + f, "--size=%d" % fio_size, "--ioengine=psync",
              "--iodepth=1", "--fallocate=none",
              "--buffer_compress_percentage=60", "--refill_buffers"]
    res = {}

    def phase(key, extra, rw):
        c0 = sysm.daemon_cpu()
        t0 = time.monotonic()
        job = fio(common + extra, key)
        wall = time.monotonic() - t0
        res[key + "_mibs"] = job[rw]["bw_bytes"] / MiB
        res[key + "_iops"] = job[rw]["iops"]
        if c0 is not None:
            res[key + "_daemon_cpu"] = sysm.daemon_cpu() - c0
        res[key + "_wall"] = wall

    phase("seqwrite", ["--rw=write", "--bs=1M", "--end_fsync=1"], "write")
    drop_caches()
    phase("seqread", ["--rw=read", "--bs=1M"], "read")
    drop_caches()
    phase("randread", ["--rw=randread", "--bs=4k", "--time_based",
                       "--runtime=%d" % runtime], "read")
    phase("randwrite", ["--rw=randwrite", "--bs=4k", "--time_based",
                        "--runtime=%d" % runtime, "--end_fsync=1"], "write")
    d = sysm.unmount()
    if d.get("rss"):
        res["rss"] = d["rss"]
    return res


def backing_alloc(sysm):
    """Allocated bytes of a squeezefs backing dir, without its statistics
    database (packs count: they hold small files)."""
    total = du_bytes(sysm.dir, False)
    sq = os.path.join(sysm.dir, ".squeezefs")
    if os.path.isdir(sq):
        for n in os.listdir(sq):
            if n.startswith("stats.db"):
                total -= os.lstat(os.path.join(sq, n)).st_blocks * 512
    return total


def settle_state(sysm):
    """(files still hot, settle decisions so far) from the mount's
    stats.db; (None, 0) while it cannot be read."""
    db = os.path.join(sysm.dir, ".squeezefs", "stats.db")
    try:
        con = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=10)
    except sqlite3.Error:
        return None, 0
    try:
        hot = con.execute("SELECT count(*) FROM files WHERE state IN "
                          "('hot', 'settling')"
                          ).fetchone()[0]
        done = con.execute("SELECT count(*) FROM log WHERE action = "
                           "'settle'").fetchone()[0]
        return hot, done
    except sqlite3.Error:
        return None, 0
    finally:
        con.close()


def wl_settle(sysm, corpus, logical, timeout):
    """Copy-in with the default options, then wait until every file has
    settled: the allocated size after settling and how long it took
    (from the end of the copy, settle_after included)."""
    dst = sysm.mount()
    t0 = time.monotonic()
    timed(["cp", "-a", corpus + "/.", dst])
    os.sync()
    t1 = time.monotonic()
    res = {"settle_copy_mibs": logical / MiB / (t1 - t0),
           "alloc_before_settle": backing_alloc(sysm)}
    while time.monotonic() - t1 < timeout:
        hot, done = settle_state(sysm)
        if hot == 0 and done:
            break
        time.sleep(2)
    else:
        sysm.notes.append("settling did not finish in %d s" % timeout)
    res["settle_s"] = time.monotonic() - t1
    res["alloc_settled"] = backing_alloc(sysm)
    sysm.unmount()
    return res


def wl_busy(sysm, corpus, logical, fio_size, timeout):
    """The foreground while a previous tree settles: copy-in of the corpus,
    a cold read of the settling tree and fio sequential reads, to set
    against the idle figures of copyread and fio."""
    dst = sysm.mount()
    os.makedirs(os.path.join(dst, "old"))
    timed(["cp", "-a", corpus + "/.", os.path.join(dst, "old")])
    # Beside the tree, not in it: the cold read reads the corpus alone,
    # as copyread's does.
    os.makedirs(os.path.join(dst, "fio"))
    f = os.path.join(dst, "fio", "fio.dat")
    fio(["--filename=" + f, "--size=%d" % fio_size, "--ioengine=psync",
         "--rw=write", "--bs=1M", "--buffer_compress_percentage=60",
         "--refill_buffers", "--end_fsync=1"], "prep")
    os.sync()
    # A remount empties the daemon's block cache, so the reads below are
    # cold; the rows stay hot, and once settle_after has passed since
    # the copy, settling starts at once.
    sysm.unmount()
    dst = sysm.mount()
    t1 = time.monotonic()
    res = {}
    while time.monotonic() - t1 < timeout:
        hot, done = settle_state(sysm)
        if done:
            break
        time.sleep(1)
    else:
        sysm.notes.append("settling did not start in %d s" % timeout)
    t0 = time.monotonic()
    timed(["cp", "-a", corpus + "/.", os.path.join(dst, "new")])
    os.sync()
    res["busy_copy_mibs"] = logical / MiB / (time.monotonic() - t0)
    drop_caches()
    wall, _ = timed("tar -cf - old | cat > /dev/null", shell=True, cwd=dst)
    res["busy_read_mibs"] = logical / MiB / wall
    drop_caches()
    job = fio(["--filename=" + f, "--size=%d" % fio_size,
               "--ioengine=psync", "--rw=read", "--bs=1M"], "busyread")
    res["busy_seqread_mibs"] = job["read"]["bw_bytes"] / MiB
    hot, _ = settle_state(sysm)
    # Measured while settling ran throughout (else the figures are idle
    # ones, and say so).
    res["busy_settling"] = 1 if hot else 0
    if not hot:
        sysm.notes.append("settling ended before the busy measures did")
    sysm.unmount()
    return res


# The second corpus of issue 19: real files of this machine, which no rule
# of the analyzer was tuned on.  (directory, share of the total)
MACHINE_SOURCES = [("/usr/include", 0.3), ("/usr/share/doc", 0.2),
                   ("/usr/lib/x86_64-linux-gnu", 0.3)]


def machine_corpus(workdir, total):
    """Copies of this machine's files (headers, docs, libraries, a clone
    of this repository), about `total` bytes, made once per size."""
    dst = os.path.join(workdir, "machine-%d" % total)
    stamp = os.path.join(dst, ".done")
    if os.path.exists(stamp):
        return dst
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst)
    for src, share in MACHINE_SOURCES:
        budget = int(total * share)
        for root, dirs, files in os.walk(src):
            dirs.sort()
            for n in sorted(files):
                p = os.path.join(root, n)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if not os.path.isfile(p) or os.path.islink(p) or \
                        st.st_size > 16 * MiB or st.st_size > budget:
                    continue
                out = os.path.join(dst, p.lstrip("/"))
                os.makedirs(os.path.dirname(out), exist_ok=True)
                try:
                    shutil.copyfile(p, out)
                except OSError:
                    continue
                budget -= st.st_size
            if budget <= 0:
                break
    run(["git", "clone", "-q", "--no-hardlinks", REPO,
         os.path.join(dst, "git")])
    open(stamp, "w").close()
    return dst


def wl_machine(binary, workdir, corpus, timeout):
    """Allocated bytes of the machine corpus: the default mount after
    settling, against every block with one fixed codec (with the raw
    fallback: min_saving applies as always)."""
    res = {}
    for key, opts in (("default", []), ("zstd19", ["-o", "codec=zstd:19"]),
                      ("brotli9", ["-o", "codec=brotli:9"])):
        s = Fuse("machine-" + key, key, [binary, "-f"] + opts)
        s.setup(os.path.join(workdir, "machine-run-" + key))
        try:
            dst = s.mount()
            t0 = time.monotonic()
            timed(["cp", "-a", corpus + "/.", dst])
            os.sync()
            res[key + "_copy_s"] = time.monotonic() - t0
            if key == "default":
                t1 = time.monotonic()
                while time.monotonic() - t1 < timeout:
                    hot, done = settle_state(s)
                    if hot == 0 and done:
                        break
                    time.sleep(2)
                res["default_settle_s"] = time.monotonic() - t1
            res[key + "_alloc"] = backing_alloc(s)
            s.unmount()
        finally:
            s.teardown()
    best = min(res["zstd19_alloc"], res["brotli9_alloc"])
    res["default_vs_best"] = res["default_alloc"] / best
    return res


def wl_meta(sysm, nfiles):
    dst = sysm.mount()
    top = os.path.join(dst, "meta")
    os.mkdir(top)
    per = 1000
    dirs = [os.path.join(top, "d%03d" % i) for i in range(
        (nfiles + per - 1) // per)]
    paths = [os.path.join(dirs[i // per], "f%05d" % i) for i in range(nfiles)]
    payload = b"x" * 100
    t0 = time.monotonic()
    for d in dirs:
        os.mkdir(d)
    for p in paths:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.write(fd, payload)
        os.close(fd)
    t1 = time.monotonic()
    for p in paths:
        os.stat(p)
    t2 = time.monotonic()
    for p in paths:
        os.unlink(p)
    for d in dirs:
        os.rmdir(d)
    t3 = time.monotonic()
    res = {"create_ops": nfiles / (t1 - t0), "stat_ops": nfiles / (t2 - t1),
           "delete_ops": nfiles / (t3 - t2),
           "meta_ops": 3 * nfiles / (t3 - t0), "meta_s": t3 - t0}
    d = sysm.unmount()
    if d.get("rss"):
        res["rss"] = d["rss"]
    return res


def zstd_estimate(corpus, cache):
    """Target 1's fallback: each file's 128 KiB blocks compressed with
    zstd level 3 separately (kept raw when that is smaller), each file
    rounded up to 4 KiB."""
    if os.path.exists(cache):
        with open(cache) as f:
            return json.load(f)
    try:
        import zstandard
    except ImportError:
        return None
    c = zstandard.ZstdCompressor(level=3)
    total = 0
    cats = {}
    for d, _, files in os.walk(corpus):
        for fn in files:
            p = os.path.join(d, fn)
            n = 0
            with open(p, "rb") as f:
                while True:
                    b = f.read(128 << 10)
                    if not b:
                        break
                    n += min(len(c.compress(b)), len(b))
            n = (n + 4095) // 4096 * 4096
            total += n
            cat = os.path.relpath(p, corpus).split(os.sep)[0]
            cats[cat] = cats.get(cat, 0) + n
    res = {"total": total, "cat": cats}
    with open(cache, "w") as f:
        json.dump(res, f)
    return res


# --------------------------------------------------------------------------
# Reporting.


def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def fmt(x, nd=1):
    if x is None:
        return "n/a"
    if isinstance(x, str):
        return x
    if abs(x) >= 1000:
        return "{:,.0f}".format(x)
    return "%.*f" % (nd, x)


def summarize(systems, samples, logical):
    """Mean per system of each figure over the repetitions."""
    summ = {}
    for s in systems:
        rows = samples.get(s.name, {})
        out = {}
        for wl, runs in rows.items():
            keys = set()
            for r in runs:
                keys.update(k for k, v in r.items()
                            if isinstance(v, (int, float)))
            for k in keys:
                out[k] = mean([r.get(k) for r in runs])
        # Disk blocks really allocated (btrfs: its df delta already is).
        # squeezefs containers are sparse (two slots per block, see
        # docs/FORMAT.md), so du -sb counts holes; the ratio uses this.
        out["alloc"] = out.get("stored_alloc") or out.get("stored_df")
        if out.get("alloc"):
            out["ratio"] = logical / out["alloc"]
        gib = logical / GiB
        if s.fuse:
            if out.get("copy_daemon_cpu") is not None:
                out["cpu_w"] = out["copy_daemon_cpu"] / gib
            if out.get("read_daemon_cpu") is not None:
                out["cpu_r"] = out["read_daemon_cpu"] / gib
            out["cpu_src"] = "daemon"
        else:
            if out.get("copy_client_cpu") is not None:
                out["cpu_w"] = out["copy_client_cpu"] / gib
            if out.get("read_client_cpu") is not None:
                out["cpu_r"] = out["read_client_cpu"] / gib
            out["cpu_src"] = "cp/tar"
        out["peak_rss"] = s.peak_rss or None
        cats = [r.get("cat") or r.get("cat_compsize") for r in
                rows.get("copyread", [])]
        if cats and cats[0]:
            out["cat"] = cats[0]
        cats = [r.get("cat_alloc") or r.get("cat_compsize") for r in
                rows.get("copyread", [])]
        if cats and cats[0]:
            out["cat_alloc"] = cats[0]
        summ[s.name] = out
    return summ


COLS = [("copy_mibs", "copy-in MiB/s", 1), ("read_mibs", "cold read MiB/s", 1),
        ("stored", "du -sb MiB", None), ("alloc", "allocated MiB", None),
        ("ratio", "ratio", 2),
        ("seqwrite_mibs", "fio seq write MiB/s", 1),
        ("seqread_mibs", "fio seq read MiB/s", 1),
        ("randread_iops", "fio 4K randread IOPS", 0),
        ("randwrite_iops", "fio 4K randwrite IOPS", 0),
        ("meta_ops", "metadata ops/s", 0),
        ("cpu_w", "CPU s/GiB written", 2), ("cpu_r", "CPU s/GiB read", 2),
        ("peak_rss", "peak RSS MiB", None)]


def cell(k, v, nd):
    if v is None:
        return "n/a"
    if k in ("stored", "alloc", "peak_rss"):
        return fmt(v / MiB, 1)
    return fmt(v, nd)


def targets(summ, ref, sq, btrfs, zest, cache_mib):
    """Issue 4's targets 1-5 for the default policy."""
    a, p = summ.get(sq, {}), summ.get(ref, {})
    out = []

    def ratio(k):
        if a.get(k) and p.get(k):
            return a[k] / p[k]
        return None

    def add(n, what, need, got, ok, how):
        out.append({"target": n, "what": what, "need": need,
                    "measured": got,
                    "result": "n/a" if ok is None else (
                        "PASS" if ok else "FAIL"),
                    "how": how})

    if btrfs and summ.get(btrfs, {}).get("alloc"):
        lim, how = summ[btrfs]["alloc"], "btrfs zstd:3 df delta"
    elif zest:
        lim, how = zest["total"], "zstd:3 per 128 KiB block estimate"
    else:
        lim, how = None, "no reference"
    st = a.get("alloc")
    add(1, "stored size (allocated, du -B1)", "<= %s MiB" % fmt(
        lim / MiB if lim else None), "%s MiB" % fmt(st / MiB if st else None),
        None if not (st and lim) else st <= lim, how)
    st = a.get("stored")
    add(1, "stored size (du -sb, counts container holes)", "<= %s MiB" % fmt(
        lim / MiB if lim else None), "%s MiB" % fmt(st / MiB if st else None),
        None if not (st and lim) else st <= lim, how)
    for n, k, what, need in ((2, "copy_mibs", "copy-in", 1.5),
                             (2, "read_mibs", "cold read", 1.5),
                             (3, "seqwrite_mibs", "fio seq write 1M", 1.0),
                             (3, "seqread_mibs", "fio seq read 1M", 1.0),
                             (3, "randread_iops", "fio 4K randread", 0.5),
                             (3, "randwrite_iops", "fio 4K randwrite", 0.5),
                             (4, "meta_ops", "metadata create/stat/delete",
                              1.0)):
        r = ratio(k)
        add(n, what + " vs passthrough", ">= %.1fx" % need,
            "%sx" % fmt(r, 2), None if r is None else r >= need,
            "%s / %s" % (fmt(a.get(k)), fmt(p.get(k))))
    w = summ.get("wb", {})
    for k, what, need in (("copy_mibs", "copy-in", 1.5),
                          ("read_mibs", "cold read", 1.5),
                          ("seqwrite_mibs", "fio seq write 1M", 1.0),
                          ("seqread_mibs", "fio seq read 1M", 1.0),
                          ("randread_iops", "fio 4K randread", 0.5),
                          ("randwrite_iops", "fio 4K randwrite", 0.5)):
        if not (w.get(k) and p.get(k)):
            continue
        r = w[k] / p[k]
        add("(opt-in)", what + " vs passthrough, -o writeback_cache",
            ">= %.1fx" % need, "%sx" % fmt(r, 2), r >= need,
            "%s / %s" % (fmt(w.get(k)), fmt(p.get(k))))
    rss = a.get("peak_rss")
    lim = (64 + cache_mib) * MiB
    add(5, "daemon peak RSS", "<= %d MiB" % (lim / MiB),
        "%s MiB" % fmt(rss / MiB if rss else None),
        None if not rss else rss <= lim, "max VmHWM over all mounts")
    return out


def markdown(meta, systems, summ, tgts, zest, logical):
    L = []
    m = meta["machine"]
    L.append("### squeezefs benchmark, %s%s" % (
        meta["date"], " (QUICK)" if meta["quick"] else ""))
    L.append("")
    L.append("Machine: %d CPUs (%s), %.1f GiB RAM, Linux %s, disk %s; "
             "squeezefs %s; %s; %s." % (
                 m["nproc"], m["cpu"], m["mem_bytes"] / GiB, m["kernel"],
                 m["disk"], m["git"], m["fio"], m["bindfs"]))
    L.append("Corpus: %d files, %.1f MiB (`make-corpus --size %s "
             "--seed %d`); fio file %d MiB, random phases %d s; metadata "
             "%d files; %d repetitions interleaved, means shown." % (
                 meta["corpus_files"], logical / MiB, meta["corpus_size"],
                 meta["seed"], meta["fio_size"] / MiB, meta["fio_runtime"],
                 meta["meta_files"], meta["reps"]))
    L.append("")
    L.append("| system | " + " | ".join(c[1] for c in COLS) + " |")
    L.append("|---" * (len(COLS) + 1) + "|")
    for s in systems:
        r = summ[s.name]
        L.append("| %s | " % s.label + " | ".join(
            cell(k, r.get(k), nd) for k, _, nd in COLS) + " |")
    ref = summ.get("bindfs")
    if ref:
        L.append("")
        L.append("Relative to the passthrough (bindfs = 1.00; stored: "
                 "smaller is better, the rest: larger is better):")
        L.append("")
        L.append("| system | " + " | ".join(c[1] for c in COLS[:-3]) +
                 " |")
        L.append("|---" * (len(COLS) - 2) + "|")
        for s in systems:
            r = summ[s.name]
            cells = []
            for k, _, _ in COLS[:-3]:
                a, b = r.get(k), ref.get(k)
                cells.append(fmt(a / b, 2) if a and b else "n/a")
            L.append("| %s | %s |" % (s.label, " | ".join(cells)))
    L.append("")
    L.append("Targets of issue 4 (default policy `%s` vs the "
             "passthrough):" % meta["default_policy"])
    L.append("")
    L.append("| # | figure | target | measured | result | from |")
    L.append("|---|---|---|---|---|---|")
    for t in tgts:
        L.append("| %s | %s | %s | %s | **%s** | %s |" % (
            t["target"], t["what"], t["need"], t["measured"], t["result"],
            t["how"]))
    # Where the bytes go.
    cats = sorted({c for s in systems for c in summ[s.name].get("cat", {})})
    if cats:
        L.append("")
        L.append("Stored MiB per category, `du -sb` / allocated (`du "
                 "-B1`) of the backing dir (btrfs: compsize disk usage; "
                 "first repetition):")
        L.append("")
        cols = [s for s in systems if summ[s.name].get("cat")]
        hdr = ["category"] + [s.label for s in cols]
        if zest:
            hdr.append("zstd:3/128K est.")
        L.append("| " + " | ".join(hdr) + " |")
        L.append("|---" * len(hdr) + "|")
        for c in cats:
            row = [c]
            for s in cols:
                sb = summ[s.name]["cat"].get(c) or 0
                al = summ[s.name].get("cat_alloc", {}).get(c)
                row.append(fmt(sb / MiB) if al is None or s.name == "btrfs"
                           else "%s / %s" % (fmt(sb / MiB), fmt(al / MiB)))
            if zest:
                row.append(fmt(zest["cat"].get(c, 0) / MiB))
            L.append("| " + " | ".join(row) + " |")
    # Settling (issue 19): what the default mount ends up storing, and
    # what the foreground keeps while it runs.
    srows = [s for s in systems if summ[s.name].get("alloc_settled")]
    if srows:
        L.append("")
        L.append("Settling (default options: the foreground writes with "
                 "`fast`, quiet files are recompressed in the background):")
        L.append("")
        L.append("| system | copy-in MiB/s | allocated MiB after copy | "
                 "after settling MiB | time to settle s | after settling "
                 "/ btrfs | busy copy-in / idle | busy cold read / idle | "
                 "busy fio seq read / idle |")
        L.append("|---" * 9 + "|")
        bt = summ.get("btrfs", {}).get("alloc")
        for s in srows:
            r = summ[s.name]

            def rel(a, b):
                return fmt(r[a] / r[b], 2) if r.get(a) and r.get(b) \
                    else "n/a"
            L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                s.label, fmt(r.get("settle_copy_mibs")),
                fmt(r["alloc_before_settle"] / MiB),
                fmt(r["alloc_settled"] / MiB), fmt(r.get("settle_s"), 0),
                fmt(r["alloc_settled"] / bt, 3) if bt else "n/a",
                rel("busy_copy_mibs", "copy_mibs"),
                rel("busy_read_mibs", "read_mibs"),
                rel("busy_seqread_mibs", "seqread_mibs")))
        L.append("")
        L.append("Time to settle counts from the end of the copy, the "
                 "default settle_after (60 s) included.  Busy figures: "
                 "measured while the tree copied before them settles "
                 "(the cold read reads that tree).")
    L.append("")
    L.append("Notes:")
    for n in meta["notes"]:
        L.append("- " + n)
    return "\n".join(L) + "\n"


def chart(path_png, systems, summ):
    if not shutil.which("gnuplot"):
        return "gnuplot not installed: no chart"
    dat = path_png[:-4] + ".dat"
    with open(dat, "w") as f:
        f.write('system "copy-in" "cold read" "fio seq write" '
                '"fio seq read" "ratio"\n')
        for s in systems:
            r = summ[s.name]
            f.write('"%s" %s\n' % (s.label.replace('"', ""), " ".join(
                "%.3f" % (r.get(k) or 0) for k in (
                    "copy_mibs", "read_mibs", "seqwrite_mibs",
                    "seqread_mibs", "ratio"))))
    r = run(["gnuplot", "-e", "datafile='%s'; outfile='%s'" % (
        dat, path_png), os.path.join(HERE, "chart.gp")], check=False)
    if r.returncode != 0:
        return "gnuplot failed: " + r.stdout.strip()[-300:]
    return None


# --------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="64 MiB corpus, 256 MiB fio file, 8 s random "
                    "phases, 5,000 metadata files")
    ap.add_argument("--squeezefs", default=os.path.join(REPO, "build",
                                                        "squeezefs"))
    ap.add_argument("--workdir", default=os.environ.get(
        "BENCH_DIR", "/var/tmp/squeezefs-bench"))
    ap.add_argument("--results", default=os.path.join(REPO, "bench",
                                                       "results"))
    ap.add_argument("--size", help="corpus size (default 512M, quick 64M)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--systems", help="comma list of plain,bindfs,fast,"
                    "balanced,max,wb,btrfs (default all) and none "
                    "(squeezefs -o codec=none, only when listed)")
    ap.add_argument("--workloads", default="copyread,fio,meta,settle,busy",
                    help="settle: copy-in, then the time until every file "
                    "settled and the allocated size after; busy: "
                    "copy-in, cold read and fio seq read while another "
                    "tree settles (both only for the default squeezefs); "
                    "machine (opt-in): this machine's files, settled vs "
                    "codec=zstd:19 and codec=brotli:9")
    ap.add_argument("--settle-timeout", type=int, default=3600,
                    help="seconds to wait for settling (default 3600)")
    ap.add_argument("--baseline", help="another squeezefs binary (an older "
                    "build) run with the default options beside the others, "
                    "as system `base`: a change's effect measured in one "
                    "run, interleaved")
    ap.add_argument("--perf", action="store_true", help="after the runs, "
                    "perf-record the default policy's daemon for 10 s of "
                    "an extra copy-in and save the report")
    a = ap.parse_args()

    size = a.size or ("64M" if a.quick else "512M")
    fio_size = (256 if a.quick else 1024) * MiB
    runtime = 8 if a.quick else 20
    nmeta = 5000 if a.quick else 20000
    if os.geteuid() != 0:
        sys.exit("bench: needs root (mounts, loop devices, drop_caches)")
    if not os.access(a.squeezefs, os.X_OK):
        sys.exit("bench: %s not built (make)" % a.squeezefs)
    os.makedirs(a.workdir, exist_ok=True)
    os.makedirs(a.results, exist_ok=True)
    for tool in ("fio", "bindfs"):
        if not shutil.which(tool):
            sys.exit("bench: %s missing: scripts/install-deps.sh" % tool)

    def on_signal(sig, _frame):
        raise SystemExit("bench: signal %d, cleaning up" % sig)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    nofile = raise_nofile()
    notes = ["every process here, daemons included, runs with "
             "RLIMIT_NOFILE = %d (raised as far as allowed)." % nofile]
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    meta = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
            "quick": a.quick, "corpus_size": size, "seed": a.seed,
            "fio_size": fio_size, "fio_runtime": runtime,
            "meta_files": nmeta, "reps": a.reps, "nofile": nofile,
            "machine": machine(a.workdir), "notes": notes}

    corpus = os.path.join(a.workdir, "corpus-%s-s%d" % (size, a.seed))
    log("corpus", corpus)
    subprocess.run([os.path.join(REPO, "scripts", "make-corpus"), "--size",
                    size, "--seed", str(a.seed), corpus], check=True)
    nfiles, logical = corpus_info(corpus)
    meta["corpus_files"] = nfiles
    meta["corpus_bytes"] = logical
    log("corpus: %d files, %.1f MiB" % (nfiles, logical / MiB))
    zest = zstd_estimate(corpus, corpus + ".zstd3-estimate.json")

    bopts = bindfs_options(a.workdir)
    dropped = [o for o in BINDFS_OPTS if o not in bopts]
    meta["bindfs_argv"] = ["bindfs", "--multithreaded"] + (
        ["-o", ",".join(bopts)] if bopts else [])
    notes.append("passthrough: `%s SRC MNT`%s." % (
        " ".join(meta["bindfs_argv"]),
        "; refused by this bindfs: " + ", ".join(dropped) if dropped
        else " (this bindfs accepts all of them; it is built on libfuse 2)"))

    has_pol, defpol = squeezefs_policies(a.squeezefs, a.workdir)
    meta["default_policy"] = defpol
    meta["policy_supported"] = has_pol
    if not has_pol:
        notes.append("this squeezefs does not accept `-o policy=` yet: the "
                     "three squeezefs rows all ran with the default options "
                     "(labelled `default*`).")
    why_no_btrfs = loop_ok(a.workdir)
    if why_no_btrfs:
        notes.append("btrfs skipped: " + why_no_btrfs)

    img = max(4 * GiB, int(logical * 2 + fio_size * 2 + GiB))
    systems = [Plain("plain", "plain dir"),
               Fuse("bindfs", "bindfs passthrough", meta["bindfs_argv"] +
                    ["-f"])]
    for pol in ("fast", "balanced", "max"):
        argv = [a.squeezefs, "-f"]
        if has_pol:
            argv += ["-o", "policy=" + pol]
            label = "squeezefs %s" % pol
        else:
            label = "squeezefs default* (%s)" % pol
        if pol == defpol:
            label += " (default)"
        systems.append(Fuse(pol, label, argv))
    # Opt-in reference (--systems ...,none): squeezefs storing every block
    # raw: its own per-file and per-request cost without any compression,
    # so a policy's figure can be split into that cost, what compression
    # costs in CPU and what fewer bytes save in I/O.
    if a.systems and "none" in a.systems.split(","):
        systems.append(Fuse("none", "squeezefs codec=none (reference)",
                            [a.squeezefs, "-f", "-o", "codec=none"]))
    # The default policy again with the opt-in writeback cache (README:
    # what it trades).  Its figures are shown apart from the targets.
    argv = [a.squeezefs, "-f", "-o", "writeback_cache"]
    systems.append(Fuse("wb", "squeezefs %s + writeback_cache (opt-in)"
                        % defpol, argv))
    if a.baseline:
        systems.append(Fuse("base", "squeezefs %s, baseline build" % defpol,
                            [a.baseline, "-f"]))
    if not why_no_btrfs:
        systems.append(Btrfs("btrfs", "btrfs zstd:3", img))
    if a.systems:
        want = a.systems.split(",")
        systems = [s for s in systems if s.name in want]

    samples = {s.name: {} for s in systems}
    runroot = os.path.join(a.workdir, "run-%d" % os.getpid())
    os.makedirs(runroot)
    # Run a private copy: a rebuild of build/ during the run must not mix
    # two versions into one table.
    sqbin = os.path.join(runroot, "squeezefs")
    shutil.copy2(a.squeezefs, sqbin)
    basebin = os.path.join(runroot, "squeezefs-baseline")
    if a.baseline:
        shutil.copy2(a.baseline, basebin)
    for s in systems:
        if isinstance(s, Fuse) and s.argv[0] == a.squeezefs:
            s.argv[0] = sqbin
        elif isinstance(s, Fuse) and s.argv[0] == a.baseline:
            s.argv[0] = basebin
    machine_res = None
    try:
        wls = a.workloads.split(",")
        if "machine" in wls:
            wls.remove("machine")
            mc = machine_corpus(a.workdir, (48 if a.quick else 256) * MiB)
            n, lg = corpus_info(mc)
            log("machine corpus: %d files, %.1f MiB" % (n, lg / MiB))
            machine_res = wl_machine(sqbin, runroot, mc, a.settle_timeout)
            machine_res["files"] = n
            machine_res["bytes"] = lg
            log("  " + ", ".join("%s=%s" % (k, fmt(v, 3)) for k, v in
                                 sorted(machine_res.items())))
        for wl in wls:
            for rep in range(a.reps):
                for s in systems:
                    # Settling is the default squeezefs's (and the
                    # baseline's, when it has it): the others skip it.
                    if wl in ("settle", "busy") and \
                            s.name not in (defpol, "base"):
                        continue
                    log("%s rep %d: %s" % (wl, rep + 1, s.label))
                    s.setup(os.path.join(runroot, "%s-%s-%d" % (
                        s.name, wl, rep)))
                    try:
                        if wl == "copyread":
                            r = wl_copyread(s, corpus, logical)
                        elif wl == "fio":
                            r = wl_fio(s, fio_size, runtime)
                        elif wl == "meta":
                            r = wl_meta(s, nmeta)
                        elif wl == "settle":
                            r = wl_settle(s, corpus, logical,
                                          a.settle_timeout)
                        elif wl == "busy":
                            r = wl_busy(s, corpus, logical, fio_size,
                                        a.settle_timeout)
                        else:
                            raise SystemExit("unknown workload " + wl)
                    except (RuntimeError, OSError,
                            subprocess.CalledProcessError) as e:
                        msg = "%s %s rep %d failed: %s" % (
                            s.name, wl, rep + 1, str(e)[-300:])
                        log(msg)
                        notes.append(msg)
                        r = {"error": str(e)[-300:]}
                    finally:
                        s.teardown()
                    samples[s.name].setdefault(wl, []).append(r)
                    log("  " + ", ".join(
                        "%s=%s" % (k, fmt(v, 2)) for k, v in sorted(
                            r.items()) if isinstance(v, (int, float))))
        if a.perf:
            sq = [s for s in systems if s.name == defpol]
            if sq:
                s = sq[0]
                s.setup(os.path.join(runroot, "perf"))
                pdata = os.path.join(runroot, "perf.data")
                try:
                    wl_copyread(s, corpus, logical, perf_out=pdata)
                except (RuntimeError, OSError,
                        subprocess.CalledProcessError) as e:
                    notes.append("the profiled copy-in failed (the profile"
                                 " of its first 10 s stands): %s" %
                                 str(e)[-200:])
                finally:
                    s.teardown()
                rep = ""
                for sort in ("dso", "dso,sym"):
                    rep += run(["perf", "report", "--stdio", "-i", pdata,
                                "--no-children", "-g", "none", "--sort",
                                sort, "--percent-limit", "0.5"],
                               check=False).stdout
                ppath = os.path.join(a.results, stamp + "-perf.txt")
                with open(ppath, "w") as f:
                    f.write(rep)
                notes.append("perf profile of the default policy's copy-in:"
                             " %s" % os.path.relpath(ppath, REPO))
    finally:
        cleanup_all()
        shutil.rmtree(runroot, ignore_errors=True)

    if DROP_OK is False:
        notes.append("could not write /proc/sys/vm/drop_caches: cold reads "
                     "may be warm")
    for s in systems:
        notes.extend("%s: %s" % (s.label, n) for n in s.notes)
    notes.append("CPU s/GiB: for FUSE systems the daemon's utime+stime "
                 "(copy-in: its whole mount life incl. the flush at "
                 "unmount; read: during tar); for plain and btrfs the cp/tar"
                 " process tree (btrfs compresses in kernel workers, not "
                 "counted).")
    notes.append("copy-in = `cp -a` + sync + unmount (daemon exit); cold "
                 "read = `tar -cf - . | cat >/dev/null` after remount and "
                 "drop_caches; MiB/s of logical bytes.")
    notes.append("stored: `du -sb` (apparent bytes, incl. 4 KiB per "
                 "directory) and allocated = `du -B1` of the backing dir; "
                 "btrfs: df delta of a loop-mounted btrfs (`-m single -d "
                 "single`, `compress=zstd:3`) after cp+sync (data, inline "
                 "files and metadata).  ratio = logical bytes / allocated. "
                 "squeezefs containers are sparse files with two slots per "
                 "block (docs/FORMAT.md), so their `du -sb` counts holes; "
                 "target 1 is judged on allocated bytes.")
    if zest:
        notes.append("zstd:3 per-128-KiB-block estimate of the corpus "
                     "(target 1 fallback): %.1f MiB." % (
                         zest["total"] / MiB))

    summ = summarize(systems, samples, logical)
    cache_mib = 64
    tgts = targets(summ, "bindfs", defpol,
                   "btrfs" if "btrfs" in summ else None, zest, cache_mib)
    tag = stamp + ("-quick" if a.quick else "")
    base = os.path.join(a.results, tag)
    why = chart(base + ".png", systems, summ)
    if why:
        notes.append(why)
    else:
        notes.append("chart: %s" % os.path.relpath(base + ".png", REPO))
    md = markdown(meta, systems, summ, tgts, zest, logical)
    if machine_res:
        r = machine_res
        md += ("\nSecond corpus (issue 19): %d files, %.1f MiB of this "
               "machine's headers, docs and libraries and a clone of this "
               "repository.  Allocated MiB: default mount after settling "
               "%.1f (settled in %.0f s after the copy), every block "
               "zstd:19 %.1f, every block brotli:9 %.1f: the default is "
               "**%.3f** of the better fixed codec (target <= 1.02).\n" % (
                   r["files"], r["bytes"] / MiB, r["default_alloc"] / MiB,
                   r["default_settle_s"], r["zstd19_alloc"] / MiB,
                   r["brotli9_alloc"] / MiB, r["default_vs_best"]))
    with open(base + ".md", "w") as f:
        f.write(md)
    with open(base + ".json", "w") as f:
        json.dump({"meta": meta, "machine": machine_res, "systems": [
            {"name": s.name, "label": s.label} for s in systems],
            "samples": samples, "summary": summ, "targets": tgts,
            "zstd3_estimate": zest}, f, indent=1, default=str)
    for ext in (".md", ".json", ".png"):
        lk = os.path.join(a.results, "latest%s%s" % (
            "-quick" if a.quick else "", ext))
        if os.path.exists(base + ext):
            shutil.copyfile(base + ext, lk)
    print()
    print(md)
    log("results: %s.{md,json,png}" % base)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        cleanup_all()
