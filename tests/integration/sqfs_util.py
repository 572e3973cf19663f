"""Helpers shared by the integration tests: start, stop, kill and remount a
real squeezefs instance on a temporary backing directory."""

import ctypes
import hashlib
import os
import select
import signal
import struct
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("SQUEEZEFS_BIN") or os.path.join(ROOT, "build", "squeezefs")
TOOLS = os.environ.get("SQ_TOOLS") or os.path.join(ROOT, "build", "tests", "tools")
LONG = os.environ.get("SQ_LONG") == "1"
FAULTINJ = os.environ.get("SQ_FAULTINJ") or os.path.join(TOOLS, "libfaultinj.so")
# Options every mount of the run gets on top of its own (make test-wb runs
# the suite again with writeback_cache).
EXTRA_OPTS = [o for o in os.environ.get("SQ_MOUNT_OPTS", "").split(",") if o]

# The options `make test-matrix` runs the suite under, one per pass, as
# they are written in SQ_MOUNT_OPTS (the Makefile's MATRIX).
MATRIX_OPTS = ("nopack", "codec=none", "block_size=4K", "block_size=1M")


def opt_value(opts, name):
    """The value of mount option `name` in the list `opts`, as written
    there ("4K" for block_size=4K); True for a flag such as nopack; None
    when `opts` does not give it.  The last one wins, as in the daemon."""
    val = None
    for o in opts:
        k, eq, v = o.partition("=")
        if k == name:
            val = v if eq else True
    return val


def matrix_opt(name):
    """The value of mount option `name` in the run's options (EXTRA_OPTS,
    from SQ_MOUNT_OPTS), as opt_value(): matrix_opt("block_size") -> "4K"
    in make test-matrix's block_size=4K pass, None in the default pass.  A
    test's own options still override it on its mounts (Mount.opt())."""
    return opt_value(EXTRA_OPTS, name)


def parse_size(text):
    """Bytes of a size as the daemon's options take it: "4096", "4K",
    "1M"."""
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:].upper())
    return int(text[:-1]) * mult if mult else int(text)


def skip_under(*opts, reason):
    """Skips the calling test (pytest.skip) when the run's options
    (SQ_MOUNT_OPTS) hold any of `opts`: "nopack", "block_size=4K" match
    the option as written; a bare name such as "block_size" matches it with
    any value.  The skip says which option and why, e.g.
    skip_under("nopack", reason="this test checks packing") ->
    "nopack: this test checks packing".  For tests whose point holds only
    under the default of an option the test cannot set itself."""
    import pytest
    __tracebackhide__ = True  # the skip is reported at the test's line
    for want in opts:
        for o in EXTRA_OPTS:
            if o == want or ("=" not in want and o.partition("=")[0] == want):
                pytest.skip("%s: %s" % (o, reason))

# Sanitizer reports in the daemon's log fail the test that owns the mount.
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "runtime error:", "ThreadSanitizer")


def wait_for(pred, timeout=15.0, step=0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


class Mount:
    """One squeezefs daemon run in the foreground (-f) so the test owns its
    pid; stderr goes to `log` so tests can read what it logged."""

    def __init__(self, backing, mnt, opts=None, log=None, env=None):
        self.backing = str(backing)
        self.mnt = str(mnt)
        self.opts = list(opts or [])
        # extra environment of the daemon (e.g. faultinj_env()); a test may
        # change it between stop() and start()
        self.env = dict(env or {})
        self.log = str(log or (os.path.dirname(self.mnt) + "/daemon.log"))
        self.proc = None
        os.makedirs(self.backing, exist_ok=True)
        os.makedirs(self.mnt, exist_ok=True)

    def writeback(self):
        """True when the kernel's writeback cache is on for this mount."""
        return "writeback_cache" in EXTRA_OPTS + self.opts

    def opt(self, name):
        """The value of option `name` on this mount: its own, else the
        run's (opt_value() of the options argv() passes)."""
        return opt_value(EXTRA_OPTS + self.opts, name)

    def packs(self):
        """True when this mount packs small files (no nopack among the
        run's options or its own)."""
        return not self.opt("nopack")

    def compresses(self):
        """False when this mount stores every block raw (codec=none)."""
        return self.opt("codec") != "none"

    def block_size(self):
        """The block size of files this mount creates (default 128K)."""
        return parse_size(self.opt("block_size") or "128K")

    def argv(self):
        a = [BIN, "-f"]
        opts = EXTRA_OPTS + self.opts
        if opts:
            a += ["-o", ",".join(opts)]
        return a + [self.backing, self.mnt]

    def start(self):
        assert self.proc is None
        logf = open(self.log, "ab")
        env = None
        if self.env:
            env = dict(os.environ)
            env.update(self.env)
        self.proc = subprocess.Popen(self.argv(), stdout=logf, stderr=logf,
                                     stdin=subprocess.DEVNULL, env=env)
        logf.close()
        ok = wait_for(lambda: os.path.ismount(self.mnt) or
                      self.proc.poll() is not None)
        if not os.path.ismount(self.mnt):
            rc = self.proc.poll()
            self.proc = None
            raise RuntimeError("squeezefs did not mount (rc=%s, ok=%s): %s"
                               % (rc, ok, self.read_log()[-2000:]))
        return self

    def read_log(self):
        try:
            with open(self.log, "r", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def check_log(self):
        text = self.read_log()
        for mark in SANITIZER_MARKS:
            assert mark not in text, "sanitizer finding in daemon log:\n" + text[-4000:]

    def stop(self):
        """Clean unmount; asserts the daemon exits 0."""
        if self.proc is None:
            return
        subprocess.run(["fusermount3", "-u", self.mnt], check=False)
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            subprocess.run(["fusermount3", "-u", "-z", self.mnt], check=False)
            self.proc = None
            raise AssertionError("squeezefs did not exit after unmount")
        self.proc = None
        self.check_log()
        assert rc == 0, "squeezefs exited %d:\n%s" % (rc, self.read_log()[-3000:])

    def kill(self):
        """kill -9 the daemon, then clear the dead mount point."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None
        subprocess.run(["fusermount3", "-u", "-z", self.mnt], check=False,
                       stderr=subprocess.DEVNULL)
        wait_for(lambda: not os.path.ismount(self.mnt), timeout=5)

    def remount(self):
        self.stop()
        return self.start()

    def cleanup(self):
        if self.proc is not None:
            try:
                self.stop()
            except Exception:
                self.kill()
                raise

    def path(self, *parts):
        return os.path.join(self.mnt, *parts)

    def bpath(self, *parts):
        return os.path.join(self.backing, *parts)


def sanitizer_runtimes(binary=None):
    """Shared sanitizer runtimes (libasan, libtsan) that `binary` links
    dynamically: an LD_PRELOAD list must name them first."""
    out = subprocess.run(["ldd", binary or BIN], capture_output=True,
                         text=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0].startswith(("libasan.", "libtsan.")) and \
                len(parts) >= 3 and parts[1] == "=>":
            libs.append(parts[2])
    return libs


def faultinj_env(ctl=None, **cfg):
    """Environment that runs the daemon under tests/tools/faultinj.c.  `ctl`
    is the control file (armed later with write_fault_ctl()); `cfg` keys are
    the SQ_FAULT_* names without the prefix, e.g. op="pwrite", nth=3."""
    assert os.path.exists(FAULTINJ), "fault shim not built: %s" % FAULTINJ
    env = {"LD_PRELOAD": ":".join(sanitizer_runtimes() + [FAULTINJ])}
    if ctl is not None:
        env["SQ_FAULT_CTL"] = str(ctl)
    for k, v in cfg.items():
        env["SQ_FAULT_" + k.upper()] = str(v)
    return env


def write_fault_ctl(ctl, **cfg):
    """Arms (or with no `cfg`, disarms) the shim of a running daemon: writes
    the control file under a new inode, so the shim sees the change even
    within one mtime tick.  Keys as for faultinj_env()."""
    tmp = str(ctl) + ".tmp"
    with open(tmp, "w") as f:
        for k, v in cfg.items():
            f.write("SQ_FAULT_%s=%s\n" % (k.upper(), v))
    os.replace(tmp, str(ctl))


def run_fsck(backing, *opts):
    """Runs `squeezefs fsck [OPTS] BACKING`; returns CompletedProcess."""
    return subprocess.run([BIN, "fsck"] + list(opts) + [str(backing)],
                          capture_output=True, text=True)


def fsck_clean(m, where):
    """Runs `squeezefs fsck` on the backing directory of the Mount `m` (not
    mounted) and asserts that it finds nothing (exit 0); `where` starts the
    failure message, fsck's output ends it."""
    r = run_fsck(m.backing)
    assert r.returncode == 0, "%s: fsck exited %d:\n%s%s" % (
        where, r.returncode, r.stdout[-3000:], r.stderr[-3000:])


# ---- reading containers directly (docs/FORMAT.md, meta/format.h) ----------
# Only what the tests need to find and damage blocks and to check that the
# options took effect; not a full reader.

CTR_MAGIC = b"\x89SQZ\r\n\x1a\n"
CTR_HDR_SIZE = 128
CTR_OFF_BLOCK_SHIFT = 12
CTR_SLOT_PAD = 4096
REC_MAGIC = b"SQBK"
REC_PREFIX = 16
CODEC_IDS = {"none": 0, "lz4": 1, "zstd": 2, "zlib": 3, "brotli": 4,
             "zero": 255}


# A packed file's backing file is a stub of this many bytes (a hole) from
# format 4 on, empty before (docs/FORMAT.md section 13).
STUB_LEN = 1


def ctr_image(path):
    """The container bytes of the backing file `path`: the file's own, or
    for a packed file (docs/FORMAT.md section 13) its image in the pack."""
    import sys
    if os.stat(path).st_size <= STUB_LEN:
        try:
            ref = os.getxattr(path, "trusted.squeezefs.packed")
        except OSError:
            return b""
        sys.path.insert(0, os.path.join(ROOT, "tests", "tools"))
        import read_container as rc
        return rc.read_packed(rc.parse_pack_ref(ref), rc.find_backing(path))
    with open(path, "rb") as f:
        return f.read()


def is_packed(path):
    """Whether the backing file `path` is a packed container (its reference
    under trusted.*, or user.* on an unprivileged user's mount)."""
    try:
        if os.stat(path).st_size > STUB_LEN:
            return False
    except OSError:
        return False
    for name in ("trusted.squeezefs.packed", "user.squeezefs.packed"):
        try:
            if len(os.getxattr(path, name)) > 0:
                return True
        except OSError:
            pass
    return False


def ctr_header(path):
    """Returns {'magic_ok', 'version', 'hdr_size', 'block_shift',
    'block_size'} of the container at `path` (a backing file, packed or
    not)."""
    import struct
    raw = ctr_image(path)[:CTR_HDR_SIZE]
    assert len(raw) == CTR_HDR_SIZE, "container %s shorter than its header" % path
    version, hdr_size, shift = struct.unpack_from("<HHB", raw, 8)
    return {"magic_ok": raw[:8] == CTR_MAGIC, "version": version,
            "hdr_size": hdr_size, "block_shift": shift,
            "block_size": 1 << shift}


def ctr_slot_offset(block_size, idx, slot):
    """File offset of slot `slot` (0 or 1) of block `idx` in a container of
    `block_size` blocks (docs/FORMAT.md section 5): the header, then two
    slots per block, each a block plus CTR_SLOT_PAD bytes long."""
    return CTR_HDR_SIZE + (2 * idx + slot) * (block_size + CTR_SLOT_PAD)


def ctr_block_count(path, block_size=None):
    """How many blocks to look at in the container at `path` (packed or
    not): every block whose slot pair starts at or before the container's
    end, so at least every block that has a record."""
    if block_size is None:
        block_size = ctr_header(path)["block_size"]
    # block i's slot pair starts at CTR_HDR_SIZE + i * pair
    pair = ctr_slot_offset(block_size, 1, 0) - CTR_HDR_SIZE
    return (len(ctr_image(path)) - CTR_HDR_SIZE) // pair + 1


def ctr_record(path, idx, slot, block_size=None):
    """Parses the record in slot `slot` of block `idx`.  Returns None when the
    slot does not start with the record magic, else a dict with 'offset'
    (of the slot), 'hdr_len', 'sum', 'hdr' (the decoded msgpack map, keys as
    str), 'hdr_offset' and 'payload_offset' (absolute file offsets) and
    'hdr_ok' (False when the msgpack header does not decode)."""
    import struct
    import msgpack
    if block_size is None:
        block_size = ctr_header(path)["block_size"]
    off = ctr_slot_offset(block_size, idx, slot)
    if is_packed(path):
        img = ctr_image(path)
    else:
        with open(path, "rb") as f:
            f.seek(off)
            img = b"\0" * off + f.read(REC_PREFIX + 65536)
    prefix = img[off:off + REC_PREFIX]
    if len(prefix) < REC_PREFIX or prefix[:4] != REC_MAGIC:
        return None
    hdr_len, _zero, csum = struct.unpack_from("<HHQ", prefix, 4)
    hdr_raw = img[off + REC_PREFIX:off + REC_PREFIX + hdr_len]
    rec = {"offset": off, "hdr_len": hdr_len, "sum": csum,
           "hdr_offset": off + REC_PREFIX,
           "payload_offset": off + REC_PREFIX + hdr_len, "hdr": {},
           "hdr_ok": True}
    try:
        up = msgpack.Unpacker(raw=False, strict_map_key=False)
        up.feed(hdr_raw)
        hdr = next(up)
        rec["hdr"] = {(k.decode() if isinstance(k, bytes) else k): v
                      for k, v in hdr.items()}
    except Exception:
        rec["hdr_ok"] = False
    return rec


def ctr_current_record(path, idx, block_size=None):
    """The record of block `idx` with the highest generation ('g') among the
    two slots (None when both are empty); a tuple (slot, record)."""
    if block_size is None:
        block_size = ctr_header(path)["block_size"]
    best = None
    for slot in (0, 1):
        rec = ctr_record(path, idx, slot, block_size)
        if rec is None or not rec["hdr_ok"]:
            continue
        if best is None or rec["hdr"].get("g", 0) > best[1]["hdr"].get("g", 0):
            best = (slot, rec)
    return best


def flip_byte(path, offset, mask=0xFF):
    """XORs one byte of `path` at `offset` with `mask` (keeps the mtime, so a
    test can tell the daemon did not rewrite the file)."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        assert len(b) == 1, "offset %d past the end of %s" % (offset, path)
        f.seek(offset)
        f.write(bytes([b[0] ^ mask]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def tree_paths(root, skip_reserved=True):
    """Relative paths of everything under `root` (not root itself); skips the
    top-level .squeezefs when `skip_reserved`."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel == "." and skip_reserved and ".squeezefs" in dirnames:
            dirnames.remove(".squeezefs")
        for n in dirnames + filenames:
            out.append(os.path.normpath(os.path.join(rel, n)))
    return sorted(out)


def files_alloc(root):
    """Bytes allocated (st_blocks) to the files under `root`, the
    top-level .squeezefs left out."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == str(root) and ".squeezefs" in dirnames:
            dirnames.remove(".squeezefs")
        for n in filenames:
            total += os.lstat(os.path.join(dirpath, n)).st_blocks * 512
    return total


def words_text(n, seed, words):
    """n bytes of compressible, non-repeating text: numbered lines of 3 to
    12 of `words` (bytes strings or str) drawn at random."""
    import random
    rnd = random.Random(seed)
    words = [w if isinstance(w, str) else w.decode() for w in words]
    out = bytearray()
    i = 0
    while len(out) < n:
        out += b"%d %s\n" % (i, " ".join(rnd.choice(words) for _ in
                                         range(rnd.randint(3, 12))).encode())
        i += 1
    return bytes(out[:n])


WRITE_CHUNK = 1 << 20


def write_and_sync(path, content):
    """Returns None when all of it was written, fsync'd and closed, else
    (where, errno) of the first failure."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    where = "write"
    try:
        for off in range(0, len(content), WRITE_CHUNK):
            n = os.write(fd, content[off:off + WRITE_CHUNK])
            assert n == len(content[off:off + WRITE_CHUNK]), "short write %d" % n
        where = "fsync"
        os.fsync(fd)
    except OSError as e:
        try:
            os.close(fd)
        except OSError:
            pass
        return where, e.errno
    try:
        os.close(fd)
    except OSError as e:
        return "close", e.errno
    return None


def read_file(path):
    """The whole content of `path`."""
    with open(path, "rb") as f:
        return f.read()


def write_file(path, data, mode="wb"):
    """Writes `data` to `path` through a Python file object opened with
    `mode` ("wb", or "ab" to append); no fsync."""
    with open(path, mode) as f:
        f.write(data)


def write_unbuffered(path, data, sync=False):
    """Creates or truncates `path` (mode 0644) and writes `data` with one
    os.write() (a short write goes unnoticed); fsyncs before the close when
    `sync`.  Unlike write_file, the error of each system call shows where
    it happened (nothing is buffered)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path):
    """The SHA-256 of the content of `path`, in hex."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def check_contents(m, files, where, what=""):
    """Asserts that every file of `files` (name under the Mount `m` ->
    bytes) reads back as its bytes; the failure message starts with `where`
    and names the file with `what` ("fsync'd ") in front."""
    for name, want in sorted(files.items()):
        try:
            got = read_file(m.path(name))
        except OSError as e:
            raise AssertionError("%s: reading %s%s: %s"
                                 % (where, what, name, e))
        assert got == want, "%s: %s%s changed (%d bytes, want %d)" % (
            where, what, name, len(got), len(want))


FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64,
                            ctypes.c_int64]
_libc.fallocate.restype = ctypes.c_int


def fallocate(fd, mode, off, length):
    """fallocate(2) through libc; raises OSError like the os module does."""
    if _libc.fallocate(fd, mode, off, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def punch_hole(fd, off, length):
    """fallocate(PUNCH_HOLE | KEEP_SIZE): zeroes [off, off+length) of `fd`."""
    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, length)


# ---- packing (docs/FORMAT.md section 13) --------------------------------

# packing is due about a second after the last close (slow under ASan)
PACK_WAIT = 30.0


def wait_packed(m, names, timeout=PACK_WAIT, packed=is_packed):
    """Waits until every file of `names` (relative to the Mount `m`) is
    packed, by `packed(backing path)`; fails naming the ones that are not
    and their backing sizes."""
    ok = wait_for(lambda: all(packed(m.bpath(n)) for n in names), timeout,
                  step=0.05)
    left = [n for n in names if not packed(m.bpath(n))]

    def size(n):
        try:
            return os.stat(m.bpath(n)).st_size
        except OSError as e:
            return e.strerror
    assert ok and not left, "not packed after %.0f s: %s (sizes %s)" % (
        timeout, left[:10], [size(n) for n in left[:10]])


# ---- the crash tests' writers and their journal ------------------------
# A writer is the test file run as a script ("writer ARGS..."): it prints
# "ready", then loops until it is killed or the daemon goes away.  The
# journal (test_crash.py, test_crash_matrix.py), per file NAME in a state
# directory on the plain filesystem:
#   NAME.base  8-byte little-endian op sequence number + the file's content
#              at its last successful fsync (replaced atomically after it)
#   NAME.log   every op issued since, appended *before* the op is issued:
#              JOURNAL_REC (seq, kind, a, b, data length) + data.

# what a writer exits with when a system call on the mount failed
EXIT_DAEMON_GONE = 3

JOURNAL_REC = struct.Struct("<QBQQI")
OP_WRITE, OP_TRUNC, OP_PUNCH, OP_RENAME, OP_REPLACE = 1, 2, 3, 4, 5


def start_writer_script(argv, what="writer"):
    """Starts `argv` (a writer) with stdout and stderr piped and waits up to
    30 s for its "ready" line; otherwise kills it and fails with its stderr,
    the message starting with `what`.  Returns the Popen."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ready, _, _ = select.select([p.stdout], [], [], 30)
    line = p.stdout.readline() if ready else b""
    if line.strip() != b"ready":
        p.kill()
        _, err = p.communicate()
        raise AssertionError("%s did not start: %r %s"
                             % (what, line, err.decode(errors="replace")))
    return p


def stop_writer(p, what="writer"):
    """Kills the writer `p` if it still runs; fails (message starting with
    `what`) on any end but being killed or noticing that the daemon is
    gone."""
    if p.poll() is None:
        p.send_signal(signal.SIGKILL)
    _, err = p.communicate(timeout=30)
    assert p.returncode in (-signal.SIGKILL, EXIT_DAEMON_GONE), \
        "%s failed (rc %s):\n%s" % (what, p.returncode,
                                    err.decode(errors="replace"))


def journal_key(name):
    """The journal files' name for the file `name` (may have a /)."""
    return name.replace("/", "_")


def journal_apply(buf, kind, a, b, data):
    """Applies one journalled op to bytearray `buf` in place: OP_WRITE data
    at a, OP_TRUNC to a, OP_PUNCH [a, a+b), OP_REPLACE all by data;
    OP_RENAME leaves the content alone."""
    if kind == OP_WRITE:
        if len(buf) < a:
            buf.extend(bytes(a - len(buf)))
        buf[a:a + len(data)] = data
    elif kind == OP_TRUNC:
        if a < len(buf):
            del buf[a:]
        else:
            buf.extend(bytes(a - len(buf)))
    elif kind == OP_PUNCH:
        end = min(a + b, len(buf))
        if a < end:
            buf[a:end] = bytes(end - a)
    elif kind == OP_REPLACE:
        buf[:] = data
    elif kind != OP_RENAME:
        raise ValueError("bad op kind %d" % kind)


def journal_read_base(state_dir, name):
    """(sequence number, content as a bytearray) of NAME.base."""
    with open(os.path.join(state_dir, journal_key(name) + ".base"), "rb") as f:
        raw = f.read()
    return struct.unpack_from("<Q", raw)[0], bytearray(raw[8:])


def journal_write_base(state_dir, name, seq, content):
    """Replaces NAME.base atomically."""
    p = os.path.join(state_dir, journal_key(name) + ".base")
    with open(p + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", seq) + bytes(content))
    os.replace(p + ".tmp", p)


def journal_read_log(state_dir, name):
    """Complete records of NAME.log as (seq, kind, a, b, data), in order (a
    torn last one is dropped: the writer died before issuing that op)."""
    p = os.path.join(state_dir, journal_key(name) + ".log")
    try:
        with open(p, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return []
    recs, pos = [], 0
    while pos + JOURNAL_REC.size <= len(raw):
        seq, kind, a, b, dlen = JOURNAL_REC.unpack_from(raw, pos)
        end = pos + JOURNAL_REC.size + dlen
        if end > len(raw):
            break
        recs.append((seq, kind, a, b, raw[pos + JOURNAL_REC.size:end]))
        pos = end
    return recs


def read_blockwise(path, bs):
    """(st_size, content) of `path`, read with one pread per `bs` bytes;
    a failing or short read fails naming the block."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        out = bytearray()
        for off in range(0, size, bs):
            try:
                chunk = os.pread(fd, bs, off)
            except OSError as e:
                raise AssertionError("%s: reading block %d (offset %d): %s"
                                     % (path, off // bs, off, e))
            out += chunk
            if len(chunk) < min(bs, size - off):
                raise AssertionError("%s: short read at %d: %d bytes, size %d"
                                     % (path, off, len(chunk), size))
        return size, out
    finally:
        os.close(fd)


def ctl_command(m, text):
    """Writes one command to MOUNT/.squeezefs/control (docs/squeezefs.8):
    0, or the errno the write failed with."""
    fd = os.open(m.path(".squeezefs", "control"), os.O_WRONLY)
    try:
        data = text if isinstance(text, bytes) else text.encode()
        assert os.write(fd, data) == len(data)
        return 0
    except OSError as e:
        return e.errno
    finally:
        os.close(fd)
