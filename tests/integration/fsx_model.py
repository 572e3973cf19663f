"""fsx-style random-operation tester: applies the same random pwrite, pread,
ftruncate, punch-hole, fsync, reopen, remount and mmap operations to a file in
a squeezefs mount and to a model file on the plain filesystem, and compares
every read.  A run is fully determined by its seed and parameters, so a
failure report (seed, op index, recent ops) is a reproduction recipe.

Standalone use (mounts a fresh instance in a temporary directory):
  /usr/bin/python3 tests/integration/fsx_model.py --seed 7 --ops 20000 \\
      --block-size 4K [--mmap] [--remount-every 5000] [--codec zstd]
"""

import collections
import mmap
import os
import random
import sys

from sqfs_util import punch_hole


def parse_size(s):
    s = str(s).strip().upper()
    mult = 1
    for suf, m in (("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30)):
        if s.endswith(suf):
            s, mult = s[:-1], m
    return int(s) * mult


_WORDS = ("the quick brown fox jumps over lazy dog squeezefs block codec "
          "compress checksum container header fsync truncate punch hole "
          "mmap model file offset lorem ipsum dolor sit amet consectetur "
          "adipiscing elit sed do eiusmod tempor incididunt ut labore et "
          "dolore magna aliqua 0 1 2 3 42 1024 {} () ; = + - * / \n").split(" ")


def _make_text(size=1 << 20, seed=12345):
    r = random.Random(seed)
    parts, n = [], 0
    while n < size:
        w = r.choice(_WORDS) + (" " if r.random() < 0.9 else "\n")
        parts.append(w)
        n += len(w)
    t = "".join(parts).encode()[:size]
    return t + t  # doubled so any slice of up to `size` bytes is one copy


TEXT = _make_text()
TEXT_LEN = len(TEXT) // 2


class FsxFailure(AssertionError):
    """A read, size or error mismatch between the mount and the model."""


def first_diff(a, b):
    n = min(len(a), len(b))
    lo, hi = 0, n
    if a[:n] == b[:n]:
        return n
    # binary search on prefix equality keeps this fast for MiB buffers
    while hi - lo > 64:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    for i in range(lo, hi):
        if a[i] != b[i]:
            return i
    return hi


class Fsx:
    """One random-operation run on `name` inside `mount` (a sqfs_util.Mount;
    used for remounts) against a model file at `model_path`."""

    def __init__(self, mount, name, model_path, seed, block_size,
                 use_mmap=False, remount_every=0, max_size=None,
                 log_path=None, history=60, initial=None):
        self.mount = mount
        self.name = name
        self.model_path = str(model_path)
        self.seed = seed
        self.bs = block_size
        self.use_mmap = use_mmap
        self.remount_every = remount_every
        if max_size is None:
            max_size = min((64 if block_size <= 16384 else 16) * block_size,
                           8 << 20)
        self.max_size = max_size
        self.rng = random.Random(seed)
        self.history = collections.deque(maxlen=history)
        self.log_path = str(log_path) if log_path else None
        # line-buffered: the log must show the last op even if this process
        # is killed while the daemon hangs
        self.logf = open(self.log_path, "w", buffering=1) \
            if self.log_path else None
        self.fd = -1
        self.mfd = -1
        self.map = None
        self.map_len = 0
        self.size = 0
        self.opno = -1
        self.total_ops = 0
        self.counts = collections.Counter()
        # The file's bytes at the start when it exists already (a plain
        # file moved in), else None: the run creates it empty.
        self.initial = initial

    # ---- bookkeeping -----------------------------------------------------

    def params(self):
        return ("seed=%d block_size=%d mmap=%s remount_every=%d max_size=%d"
                % (self.seed, self.bs, self.use_mmap, self.remount_every,
                   self.max_size))

    def note(self, desc):
        line = "#%d %s" % (self.opno, desc)
        self.history.append(line)
        if self.logf:
            self.logf.write(line + "\n")

    def fail(self, what):
        if self.logf:
            self.logf.flush()
        msg = ["fsx FAILURE at op #%d of %d: %s" % (self.opno, self.total_ops,
                                                    what),
               "parameters: " + self.params(),
               "reproduce: /usr/bin/python3 tests/integration/fsx_model.py "
               "--seed %d --ops %d --block-size %d%s --remount-every %d "
               "--max-size %d" % (self.seed, self.opno + 1, self.bs,
                                  " --mmap" if self.use_mmap else "",
                                  self.remount_every, self.max_size)]
        if self.log_path:
            msg.append("full op log: " + self.log_path)
        msg.append("last ops:")
        msg.extend("  " + h for h in self.history)
        raise FsxFailure("\n".join(msg))

    def compare(self, where, off, got, want):
        if got == want:
            return
        if len(got) != len(want) and got == want[:len(got)]:
            self.fail("%s: short read at %d: got %d bytes, model has %d"
                      % (where, off, len(got), len(want)))
        i = first_diff(got, want)
        pos = off + i
        self.fail("%s: data mismatch at file offset %d (block %d, +%d): "
                  "got %d bytes, want %d; got[%d:]=%s want[%d:]=%s"
                  % (where, pos, pos // self.bs, pos % self.bs, len(got),
                     len(want), i, bytes(got[i:i + 16]).hex(), i,
                     bytes(want[i:i + 16]).hex()))

    # ---- file handling ---------------------------------------------------

    def path(self):
        return self.mount.path(self.name)

    def open(self, create=False):
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        try:
            self.fd = os.open(self.path(), flags, 0o644)
        except OSError as e:
            self.fail("open(%s): %s" % (self.path(), e))
        if self.mfd < 0:
            self.mfd = os.open(self.model_path, flags | os.O_TRUNC * create,
                               0o644)

    def unmap(self):
        if self.map is not None:
            self.map.close()
            self.map = None
            self.map_len = 0

    def ensure_map(self):
        """Maps the whole file (MAP_SHARED) unless already mapped at its
        current size.  Checks the mount's size first: touching a mapping
        past the kernel's i_size would SIGBUS the test process."""
        if self.map is not None and self.map_len == self.size:
            return self.size > 0
        self.unmap()
        if self.size == 0:
            return False
        st = os.fstat(self.fd).st_size
        if st != self.size:
            self.fail("size before mmap: mount %d, model %d" % (st, self.size))
        self.map = mmap.mmap(self.fd, self.size, flags=mmap.MAP_SHARED,
                             prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self.map_len = self.size
        return True

    def close(self):
        self.unmap()
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            try:
                os.close(fd)
            except OSError as e:
                self.fail("close: %s" % e)

    def close_all(self):
        self.close()
        if self.mfd >= 0:
            os.close(self.mfd)
            self.mfd = -1
        if self.logf:
            self.logf.close()
            self.logf = None

    def check_whole(self, where):
        try:
            st = os.fstat(self.fd).st_size
        except OSError as e:
            self.fail("%s: fstat: %s" % (where, e))
        if st != self.size:
            self.fail("%s: size mismatch: mount %d, model %d"
                      % (where, st, self.size))
        off, chunk = 0, 1 << 20
        while off < self.size:
            try:
                got = os.pread(self.fd, chunk, off)
            except OSError as e:
                self.fail("%s: pread(%d, %d): %s" % (where, off, chunk, e))
            want = os.pread(self.mfd, chunk, off)
            self.compare(where + " (whole-file compare)", off, got, want)
            off += chunk

    # ---- random choices --------------------------------------------------

    def gen_data(self, n):
        """Random bytes, zeros, compressible text and byte runs mixed, so
        every codec path (raw, compressed, all-zero) is taken."""
        r = self.rng
        out = bytearray()
        while len(out) < n:
            k = n - len(out)
            seg = k if r.random() < 0.5 else r.randint(1, k)
            x = r.random()
            if x < 0.35:
                out += r.randbytes(seg)
            elif x < 0.55:
                out += bytes(seg)
            elif x < 0.85:
                o = r.randrange(TEXT_LEN)
                out += TEXT[o:o + seg]
            else:
                out += bytes([r.randrange(256)]) * seg
        return bytes(out)

    def pick_off(self, limit):
        r, bs = self.rng, self.bs
        limit = max(limit, 0)
        x = r.random()
        if x < 0.35:  # just around a block boundary
            b = r.randint(0, limit // bs + 1) * bs
            off = b + r.randint(-64, 64)
        elif x < 0.45:  # exactly on one
            off = r.randint(0, limit // bs) * bs
        else:
            off = r.randint(0, limit)
        return min(max(off, 0), limit)

    def pick_len(self):
        r, bs = self.rng, self.bs
        x = r.random()
        if x < 0.3:
            return r.randint(1, 64)
        if x < 0.55:
            return r.randint(1, min(4096, bs))
        if x < 0.85:
            return r.randint(1, bs)
        if x < 0.95:
            return r.randint(bs, 2 * bs)
        return r.randint(2 * bs, 3 * bs)

    # ---- operations ------------------------------------------------------

    def op_write(self, append=False, aligned=False):
        r, bs = self.rng, self.bs
        if aligned:
            n = bs * r.randint(1, 3)
            off = r.randint(0, max(self.max_size - n, 0) // bs) * bs
        else:
            n = self.pick_len()
            off = self.size if append else \
                self.pick_off(min(self.max_size - 1, self.size + 2 * bs))
        off = min(off, self.max_size - 1)
        n = max(1, min(n, self.max_size - off))
        data = self.gen_data(n)
        via_map = self.use_mmap and r.random() < 0.5
        self.note("%s off=%d len=%d -> size %d" % (
            "mapwrite" if via_map else "pwrite", off, n,
            max(self.size, off + n)))
        if via_map:
            if off + n > self.size:
                self.unmap()
                self.do_truncate(off + n)
            self.ensure_map()
            self.map[off:off + n] = data
            if r.random() < 0.2:
                try:
                    self.map.flush()
                except OSError as e:
                    self.fail("msync: %s" % e)
        else:
            try:
                w = os.pwrite(self.fd, data, off)
            except OSError as e:
                self.fail("pwrite(off=%d, len=%d): %s" % (off, n, e))
            if w != n:
                self.fail("short pwrite: %d of %d at %d" % (w, n, off))
        os.pwrite(self.mfd, data, off)
        self.size = max(self.size, off + n)
        self.counts["write"] += 1

    def op_read(self):
        r = self.rng
        via_map = self.use_mmap and r.random() < 0.5 and self.size > 0
        n = self.pick_len()
        if via_map:
            off = self.pick_off(self.size - 1)
            n = min(n, self.size - off)
            self.note("mapread off=%d len=%d" % (off, n))
            self.ensure_map()
            got = self.map[off:off + n]
        else:
            off = self.pick_off(self.size + self.bs)
            self.note("pread off=%d len=%d" % (off, n))
            try:
                got = os.pread(self.fd, n, off)
            except OSError as e:
                self.fail("pread(off=%d, len=%d): %s" % (off, n, e))
        want = os.pread(self.mfd, n, off)
        self.compare("mapread" if via_map else "pread", off, got, want)
        self.counts["read"] += 1

    def do_truncate(self, new):
        try:
            os.ftruncate(self.fd, new)
        except OSError as e:
            self.fail("ftruncate(%d): %s" % (new, e))
        os.ftruncate(self.mfd, new)
        self.size = new

    def op_truncate(self):
        r = self.rng
        x = r.random()
        if x < 0.35:
            new = r.randint(0, self.size)
        elif x < 0.55:
            new = self.pick_off(self.max_size)
        elif x < 0.6:
            new = 0
        else:
            new = r.randint(min(self.size, self.max_size), self.max_size)
        self.note("ftruncate %d -> %d" % (self.size, new))
        self.unmap()
        self.do_truncate(new)
        self.counts["truncate"] += 1

    def op_punch(self):
        off = self.pick_off(self.size)
        n = self.pick_len()
        self.note("punch off=%d len=%d (size %d)" % (off, n, self.size))
        try:
            punch_hole(self.fd, off, n)
        except OSError as e:
            self.fail("fallocate(PUNCH_HOLE|KEEP_SIZE, %d, %d): %s"
                      % (off, n, e))
        punch_hole(self.mfd, off, n)
        self.counts["punch"] += 1

    def op_fsync(self):
        data_only = self.rng.random() < 0.3
        self.note("fdatasync" if data_only else "fsync")
        try:
            if self.map is not None and self.rng.random() < 0.5:
                self.map.flush()
            (os.fdatasync if data_only else os.fsync)(self.fd)
        except OSError as e:
            self.fail("fsync: %s" % e)
        self.counts["fsync"] += 1

    def op_stat(self):
        self.note("stat")
        try:
            st = os.fstat(self.fd).st_size
            st2 = os.stat(self.path()).st_size
        except OSError as e:
            self.fail("stat: %s" % e)
        if st != self.size or st2 != self.size:
            self.fail("size mismatch: fstat %d, stat %d, model %d"
                      % (st, st2, self.size))
        self.counts["stat"] += 1

    def op_dropcache(self):
        """Drops the file's clean pages from the kernel page cache (dirty
        mapped pages are written back first), so the next reads are
        served by the daemon rather than by the kernel's copy."""
        self.note("fadvise DONTNEED")
        try:
            os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)
        except OSError as e:
            self.fail("posix_fadvise(DONTNEED): %s" % e)
        self.counts["dropcache"] += 1

    def op_reopen(self):
        self.note("close+reopen")
        self.close()
        self.open()
        self.counts["reopen"] += 1

    def remount(self):
        self.note("remount")
        self.close()
        try:
            self.mount.remount()
        except Exception as e:  # noqa: BLE001 - reported with the op log
            self.fail("remount: %s" % e)
        self.open()
        self.check_whole("after remount")
        self.counts["remount"] += 1

    OPS = (("write", 28), ("append", 5), ("aligned", 5), ("read", 32),
           ("truncate", 6), ("punch", 8), ("fsync", 4), ("stat", 6),
           ("dropcache", 4), ("reopen", 2))

    def step(self, skip=()):
        """Picks and performs one random operation (never a remount)."""
        names = [n for n, _ in self.OPS if n not in skip]
        weights = [w for n, w in self.OPS if n not in skip]
        op = self.rng.choices(names, weights)[0]
        if op == "write":
            self.op_write()
        elif op == "append":
            self.op_write(append=True)
        elif op == "aligned":
            self.op_write(aligned=True)
        else:
            getattr(self, "op_" + op)()

    def run(self, nops):
        self.total_ops = nops
        self.opno = -1
        self.note("start: " + self.params())
        if self.initial is None:
            self.open(create=True)
            self.size = 0
            self.do_truncate(0)
        else:
            with open(self.model_path, "wb") as f:
                f.write(self.initial)
            self.open()
            self.size = len(self.initial)
            self.check_whole("at the start")
        for i in range(nops):
            self.opno = i
            if self.remount_every and i and i % self.remount_every == 0:
                self.remount()
            self.step()
        self.opno = nops
        self.note("final check")
        self.check_whole("at the end")
        if self.mount is not None:
            self.remount()
        self.close_all()
        return self.counts


def main(argv=None):
    import argparse
    import shutil
    import tempfile
    import time
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from sqfs_util import Mount

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ops", type=int, default=10000)
    ap.add_argument("--block-size", default="128K")
    ap.add_argument("--mmap", action="store_true")
    ap.add_argument("--remount-every", type=int, default=5000)
    ap.add_argument("--max-size", default=None)
    ap.add_argument("--codec", default=None)
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary directory (backing, logs)")
    a = ap.parse_args(argv)
    bs = parse_size(a.block_size)
    tmp = tempfile.mkdtemp(prefix="sqfsx-")
    opts = ["block_size=%d" % bs] + (["codec=" + a.codec] if a.codec else [])
    m = Mount(os.path.join(tmp, "backing"), os.path.join(tmp, "mnt"),
              opts=opts, log=os.path.join(tmp, "daemon.log"))
    m.start()
    t0 = time.monotonic()
    rc = 0
    try:
        fx = Fsx(m, "fsx.dat", os.path.join(tmp, "model.dat"), a.seed, bs,
                 use_mmap=a.mmap, remount_every=a.remount_every,
                 max_size=parse_size(a.max_size) if a.max_size else None,
                 log_path=os.path.join(tmp, "ops.log"))
        try:
            counts = fx.run(a.ops)
            print("ok: %d ops in %.1fs %s" % (a.ops, time.monotonic() - t0,
                                             dict(counts)))
        except FsxFailure as e:
            print(e)
            rc = 1
        finally:
            fx.close_all()
    finally:
        m.cleanup()
        if a.keep or rc:
            print("kept", tmp)
        else:
            shutil.rmtree(tmp)
    return rc


if __name__ == "__main__":
    sys.exit(main())
