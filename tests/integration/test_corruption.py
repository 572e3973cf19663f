"""Acceptance 5: a damaged stored block makes reads of that block fail with
EIO, while the file's other blocks and other files read exactly; the log and
`squeezefs fsck` name the file and block.  Files in BACKING that are not
containers give EIO, never crash the daemon and are never modified."""

import errno
import os
import random
import shutil

import pytest

from sqfs_util import (ctr_current_record, ctr_header, ctr_record, flip_byte,
                       run_fsck, skip_under)

BS = 128 * 1024
NBLOCKS = 8


def make_text(n, seed):
    rnd = random.Random(seed)
    words = [b"alpha", b"bravo", b"charlie", b"delta", b"echo", b"foxtrot",
             b"golf", b"hotel", b"india", b"juliet", b"kilo", b"lima"]
    out = bytearray()
    i = 0
    while len(out) < n:
        out += b"%08d " % i + b" ".join(rnd.choice(words) for _ in range(9)) + b"\n"
        i += 1
    return bytes(out[:n])


def pread_exact(path, off, n):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, n, off)
    finally:
        os.close(fd)


def assert_eio(path, off, n):
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as ei:
            os.pread(fd, n, off)
        assert ei.value.errno == errno.EIO, ei.value
    finally:
        os.close(fd)


def assert_stops_before(path, off, n, bad_off, good):
    """A read from `off` that runs into a damaged block at `bad_off` either
    fails with EIO or returns only the good bytes before it (a short read,
    as POSIX allows); it never returns bytes of the damaged block."""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            got = os.pread(fd, n, off)
        except OSError as e:
            assert e.errno == errno.EIO, e
            return
        assert len(got) <= bad_off - off, \
            "read returned %d bytes, %d past the damaged block's start" % (
                len(got), len(got) - (bad_off - off))
        assert got == good[off:off + len(got)]
    finally:
        os.close(fd)


def backing_state(path):
    st = os.stat(path)
    with open(path, "rb") as f:
        return f.read(), st.st_mtime_ns, st.st_size


@pytest.fixture
def three_files(make_mount):
    """A mount (bs=128K) with text.txt (1 MiB text), rand.bin (1 MiB random)
    and other.txt, unmounted again.  Returns (mount, {name: data})."""
    m = make_mount(opts=["block_size=128K"])
    files = {
        "text.txt": make_text(NBLOCKS * BS, 1),
        "rand.bin": random.Random(2).randbytes(NBLOCKS * BS),
        "other.txt": make_text(3 * BS + 777, 3),
    }
    for name, data in files.items():
        with open(m.path(name), "wb") as f:
            f.write(data)
    m.stop()
    for name in files:
        assert ctr_header(m.bpath(name))["block_shift"] == 17
    r = run_fsck(m.backing)
    assert r.returncode == 0, "fsck of an undamaged BACKING: %r" % (r,)
    return m, files


def check_all_but(m, files, bad_name, bad_blocks):
    for name, data in files.items():
        for i in range((len(data) + BS - 1) // BS):
            if name == bad_name and i in bad_blocks:
                continue
            got = pread_exact(m.path(name), i * BS, BS)
            assert got == data[i * BS:(i + 1) * BS], "%s block %d" % (name, i)


def only_slot(path, idx):
    """The single record of block idx; asserts the other slot is empty."""
    recs = [ctr_record(path, idx, k, BS) for k in (0, 1)]
    present = [(k, r) for k, r in enumerate(recs) if r is not None]
    assert len(present) == 1, \
        "expected exactly one record for block %d, got slots %r" % (
            idx, [k for k, _ in present])
    return present[0]


@pytest.mark.parametrize("name", ["text.txt", "rand.bin"])
def test_flipped_payload_byte(three_files, name):
    if name == "text.txt":
        skip_under("codec=none", reason="text.txt: this test damages a "
                   "compressed block (rand.bin's case damages a raw one)")
    m, files = three_files
    path = m.bpath(name)
    slot, rec = ctr_current_record(path, 2, BS)
    hdr = rec["hdr"]
    assert hdr.get("b") == 2 and hdr.get("s", 0) > 0, hdr
    if name == "text.txt":
        assert hdr["s"] < BS // 2, "text not compressed: %r" % hdr
    flip_byte(path, rec["payload_offset"] + hdr["s"] // 2, 0x01)

    r = run_fsck(m.backing)
    assert r.returncode == 1, "fsck must find the damage: %r" % (r,)
    out = r.stdout + r.stderr
    lines = [ln for ln in out.splitlines() if name in ln]
    assert lines, "fsck does not name %s: %r" % (name, out)
    assert any("block 2" in ln for ln in lines), \
        "fsck does not name block 2 of %s: %r" % (name, out)
    assert not any(other in out for other in files if other != name), out

    damaged = backing_state(path)
    m.start()
    # any read touching block 2 fails, also unaligned and straddling ones
    assert_eio(m.path(name), 2 * BS, BS)
    assert_eio(m.path(name), 2 * BS + 100, 10)
    assert_stops_before(m.path(name), 2 * BS - 10, 20, 2 * BS, files[name])
    assert_eio(m.path(name), 3 * BS - 1, 1)
    # the rest of that file and every other file read exactly
    check_all_but(m, files, name, {2})
    assert m.proc.poll() is None
    log = m.read_log()
    hits = [ln for ln in log.splitlines() if name in ln and "block 2" in ln]
    assert hits, "daemon log should name %s and block 2:\n%s" % (name, log[-3000:])
    # a whole-file read fails too, and again (the error is not cached away)
    with pytest.raises(OSError) as ei:
        with open(m.path(name), "rb") as f:
            f.read()
    assert ei.value.errno == errno.EIO
    assert_eio(m.path(name), 2 * BS, 4096)
    m.stop()
    # reading did not "repair" or otherwise rewrite the container
    assert backing_state(path) == damaged


def test_overwriting_damaged_block_heals_it(three_files):
    """Writing a whole new block 2 replaces the damaged version."""
    m, files = three_files
    path = m.bpath("text.txt")
    slot, rec = ctr_current_record(path, 2, BS)
    flip_byte(path, rec["payload_offset"] + 5)
    m.start()
    assert_eio(m.path("text.txt"), 2 * BS, BS)
    new = make_text(BS, 9)
    fd = os.open(m.path("text.txt"), os.O_WRONLY)
    try:
        os.pwrite(fd, new, 2 * BS)
        os.fsync(fd)
    finally:
        os.close(fd)
    m.remount()
    assert pread_exact(m.path("text.txt"), 2 * BS, BS) == new
    data = files["text.txt"]
    assert pread_exact(m.path("text.txt"), 0, 2 * BS) == data[:2 * BS]
    assert pread_exact(m.path("text.txt"), 3 * BS, 5 * BS) == data[3 * BS:]
    m.stop()
    assert run_fsck(m.backing).returncode == 0


@pytest.mark.parametrize("where", ["prefix_sum", "msgpack", "hdr_len"])
def test_flipped_record_header(three_files, where):
    m, files = three_files
    path = m.bpath("other.txt")
    slot, rec = only_slot(path, 1)
    if where == "prefix_sum":
        off = rec["offset"] + 8 + 3        # inside the u64 checksum
    elif where == "msgpack":
        off = rec["hdr_offset"] + rec["hdr_len"] - 1  # last header byte
    else:
        off = rec["offset"] + 4            # low byte of hdr_len
    flip_byte(path, off, 0x04)

    r = run_fsck(m.backing)
    assert r.returncode == 1, r
    out = r.stdout + r.stderr
    assert any("other.txt" in ln and "block 1" in ln
               for ln in out.splitlines()), out

    m.start()
    assert_eio(m.path("other.txt"), 1 * BS, BS)
    assert_eio(m.path("other.txt"), 1 * BS + 4000, 100)
    check_all_but(m, files, "other.txt", {1})
    log = m.read_log()
    assert any("other.txt" in ln and "block 1" in ln
               for ln in log.splitlines()), log[-3000:]
    assert m.proc.poll() is None


def test_flipped_file_header(three_files):
    """Damage in the 128-byte file header (covered by its checksum): the
    whole file gives EIO, other files are fine."""
    m, files = three_files
    path = m.bpath("rand.bin")
    flip_byte(path, 20)   # reserved bytes, covered by the header checksum
    before = backing_state(path)
    r = run_fsck(m.backing)
    assert r.returncode == 1, r
    assert "rand.bin" in r.stdout + r.stderr
    m.start()
    with pytest.raises(OSError) as ei:
        with open(m.path("rand.bin"), "rb") as f:
            f.read(4096)
    assert ei.value.errno == errno.EIO
    check_all_but(m, files, "rand.bin", set(range(NBLOCKS)))
    assert "rand.bin" in m.read_log()
    m.stop()
    assert backing_state(path) == before


def _try_read(path):
    """open + read; returns the errno of the first failure, or None."""
    try:
        with open(path, "rb") as f:
            f.read()
    except OSError as e:
        return e.errno
    return None


def _try_write(path):
    """open for writing + write + fsync; errno of the first failure."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as e:
        return e.errno
    try:
        os.pwrite(fd, b"OVERWRITE", 0)
        os.fsync(fd)
    except OSError as e:
        return e.errno
    finally:
        try:
            os.close(fd)
        except OSError as e:
            return e.errno
    return None


def put_non_containers(m):
    """Files put into BACKING by hand, beside the mount's containers:
    {name: path}."""
    junk = m.bpath("junk.txt")
    with open(junk, "wb") as f:
        f.write(b"this was put here by hand and is not a container\n" * 200)
    short = m.bpath("short.bin")
    shutil.copyfile(m.bpath("text.txt"), short)
    os.truncate(short, 50)
    magic_only = m.bpath("magic.bin")    # right magic, nothing else
    with open(magic_only, "wb") as f:
        f.write(b"\x89SQZ\r\n\x1a\n" + b"\0" * 200)
    os.makedirs(m.bpath("sub"))
    nested = m.bpath("sub", "notes.md")
    with open(nested, "wb") as f:
        f.write(b"# not a container either\n")
    return {"junk.txt": junk, "short.bin": short, "magic.bin": magic_only,
            "sub/notes.md": nested}


def test_non_containers_are_plain_files(three_files):
    """Format 5 (docs/FORMAT.md 2.1): in a BACKING whose volume is not
    LEGACY, a file without the volume id is a plain file, served as it is,
    even one that begins with the container magic or is a container cut
    short; fsck counts them and names the one that looks like a container,
    and the mount says so in its log."""
    m, files = three_files
    victims = put_non_containers(m)
    data = {n: open(p, "rb").read() for n, p in victims.items()}
    r = run_fsck(m.backing)
    assert r.returncode == 0, r
    assert "4 plain files" in r.stdout, r.stdout
    assert "magic.bin" in r.stdout and "junk.txt" not in r.stdout, r.stdout
    m.start()
    for n, want in data.items():
        with open(m.path(n), "rb") as f:
            assert f.read() == want, n
        assert os.stat(m.path(n)).st_size == len(want), n
    check_all_but(m, files, None, set())
    with open(m.path("junk.txt"), "r+b") as f:
        f.seek(10)
        f.write(b"CHANGED")
    data["junk.txt"] = data["junk.txt"][:10] + b"CHANGED" + \
        data["junk.txt"][17:]
    os.truncate(m.path("sub/notes.md"), 5)
    data["sub/notes.md"] = data["sub/notes.md"][:5]
    assert "looks like a squeezefs container" in m.read_log()
    m.remount()
    for n, want in data.items():
        with open(m.path(n), "rb") as f:
            assert f.read() == want, n
    check_all_but(m, files, None, set())


def test_non_containers_give_eio_in_a_legacy_backing(three_files):
    """A BACKING of a release before volumes (.squeezefs/ without a volume
    file: here the file is removed, which is also how a damaged one is got
    past) keeps format 4's rule: every file is a container, and one that is
    not reads as EIO, is named by fsck and the log, and is never
    changed."""
    m, files = three_files
    os.remove(m.bpath(".squeezefs", "volume"))
    victims = put_non_containers(m)
    for p in victims.values():
        os.utime(p, (1000000000, 1000000000))
    before = {n: backing_state(p) for n, p in victims.items()}

    r = run_fsck(m.backing)
    assert r.returncode == 1, r
    out = r.stdout + r.stderr
    for n in victims:
        assert os.path.basename(n) in out, "fsck does not name %s: %r" % (n, out)

    m.start()
    names = set(os.listdir(m.mnt))
    assert {"junk.txt", "short.bin", "magic.bin", "sub", "text.txt"} <= names
    for n in victims:
        assert _try_read(m.path(n)) == errno.EIO, n
        assert m.proc.poll() is None, "daemon died reading %s" % n
        check_all_but(m, files, None, set())
    for n in victims:
        err = _try_write(m.path(n))
        assert err is not None, "writing into non-container %s succeeded" % n
        assert m.proc.poll() is None
    # truncating / appending must not touch them either
    for n in victims:
        try:
            with open(m.path(n), "ab") as f:
                f.write(b"appended")
        except OSError:
            pass
        try:
            os.truncate(m.path(n), 3)
        except OSError:
            pass
    log = m.read_log()
    for n in victims:
        assert os.path.basename(n) in log, "log does not name %s" % n
    check_all_but(m, files, None, set())
    # the files still read EIO after the kernel forgot them
    m.remount()
    for n in victims:
        assert _try_read(m.path(n)) == errno.EIO, n
    m.stop()
    after = {n: backing_state(p) for n, p in victims.items()}
    for n in victims:
        assert after[n] == before[n], "%s was modified in BACKING" % n
    with open(m.bpath(".squeezefs", "volume"), "rb") as f:
        assert f.read()[10] & 1, "the mount did not make a LEGACY volume"


def test_empty_backing_file_is_an_empty_file(sqfs):
    """A 0-byte regular file is a valid empty container (FORMAT): it reads
    as empty, and writing to it works."""
    sqfs.stop()
    open(sqfs.bpath("empty"), "wb").close()
    sqfs.start()
    with open(sqfs.path("empty"), "rb") as f:
        assert f.read() == b""
    with open(sqfs.path("empty"), "ab") as f:
        f.write(b"now it has data")
    sqfs.remount()
    with open(sqfs.path("empty"), "rb") as f:
        assert f.read() == b"now it has data"


def test_fsck_usage_and_clean(tmp_path, sqfs):
    import subprocess
    from sqfs_util import BIN
    r = subprocess.run([BIN, "fsck"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, r
    r = subprocess.run([BIN, "fsck", str(tmp_path / "missing")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0, r
    with open(sqfs.path("a"), "wb") as f:
        f.write(make_text(500000, 4))
    os.mkdir(sqfs.path("d"))
    os.symlink("a", sqfs.path("d", "link"))
    sqfs.stop()
    r = run_fsck(sqfs.backing)
    assert r.returncode == 0, r
