"""Packed containers (format version 3, docs/FORMAT.md section 13) through
a real mount: small files go into shared packs and take far less space;
unmount packs what is queued; writing a packed file unpacks it, keeping its
mtime; unlink, rename and rewrite free images; hard links, rename and
RENAME_EXCHANGE keep contents; a damaged image, a short or missing pack
make only their files fail with EIO (and fsck names them); a stale
reference on a non-empty container is ignored; -o nopack and -o ro; the
mount hides and refuses trusted.squeezefs.packed; threads racing the
packer; kill -9 of the daemon while it packs.

What lies in BACKING is read directly: a packed file's backing object is
empty and carries the 40-byte reference in trusted.squeezefs.packed, its
image lies in BACKING/.squeezefs/packs/%08x.sqp.  Packing happens a
moment (about a second) after the last close of a writable handle, so tests
poll for it."""

import ctypes
import errno
import glob
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sqfs_util import (EXIT_DAEMON_GONE, PACK_WAIT, STUB_LEN,  # noqa: E402
                       files_alloc, words_text,
                       faultinj_env, flip_byte, fsck_clean, read_file,
                       run_fsck, skip_under, start_writer_script,
                       stop_writer, wait_for, wait_packed, write_fault_ctl,
                       write_file)

XATTR = "trusted.squeezefs.packed"
REF = struct.Struct("<4sIIIQQQ")  # magic, version, pack, len, off, size, sum
IMAGE_MAX = 3072
PAGE = 4096
FREE_WAIT = 3.0
# Why a test skips itself under make test-matrix's nopack pass: it packs
# files, and no mount option of its own undoes nopack.
PACKS = "this test checks packing"

WORDS = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do "
         "eiusmod tempor incididunt ut labore et dolore magna aliqua pack "
         "squeeze container image page hole punch reference").split()


def text(n, seed):
    """n bytes of compressible, non-repeating text."""
    return words_text(n, seed, WORDS)


def ref_of(bpath):
    """The packed reference on a backing object, as a dict, or None."""
    try:
        raw = os.getxattr(bpath, XATTR)
    except OSError as e:
        if e.errno == errno.ENODATA:
            return None
        raise
    assert len(raw) == REF.size, "%s: reference of %d bytes" % (bpath,
                                                                 len(raw))
    magic, ver, pack, length, off, size, csum = REF.unpack(raw)
    assert magic == b"SQPK" and ver == 1, "%s: bad reference %r" % (bpath, raw)
    return {"raw": raw, "pack": pack, "len": length, "off": off,
            "size": size, "sum": csum}


def packed(bpath):
    """Whether the backing object is a packed file (empty + reference)."""
    try:
        return os.stat(bpath).st_size <= STUB_LEN and \
            ref_of(bpath) is not None
    except FileNotFoundError:
        return False


def unpacked(bpath):
    """A container of its own: non-empty and no reference at all."""
    return os.stat(bpath).st_size > STUB_LEN and ref_of(bpath) is None


def pack_path(m, pack_id):
    return m.bpath(".squeezefs", "packs", "%08x.sqp" % pack_id)


def pack_paths(m):
    return sorted(glob.glob(m.bpath(".squeezefs", "packs", "*.sqp")))


def pack_alloc(m):
    """Bytes allocated to all packs (st_blocks)."""
    return sum(os.stat(p).st_blocks * 512 for p in pack_paths(m))


def backing_alloc(m):
    """Bytes allocated to every file of BACKING: containers and packs."""
    return files_alloc(m.backing) + pack_alloc(m)


def image_bytes(m, ref):
    """What the pack holds where `ref` says the image lies."""
    with open(pack_path(m, ref["pack"]), "rb") as f:
        f.seek(ref["off"])
        return f.read(ref["len"])


def image_live(m, ref):
    b = image_bytes(m, ref)
    return len(b) == ref["len"] and any(b)


def image_freed(m, ref):
    """A freed image reads as zeros (hole-punched)."""
    b = image_bytes(m, ref)
    return not any(b)


def assert_freed(m, refs, what):
    """The images of `refs` are punched out of their pack (soon: a free
    may be left to the packer thread)."""
    ok = wait_for(lambda: all(image_freed(m, r) for r in refs), FREE_WAIT,
                  step=0.05)
    assert ok, "%s: image still in the pack after %.0f s" % (what, FREE_WAIT)


def assert_packs_at_most(m, limit, what):
    ok = wait_for(lambda: pack_alloc(m) <= limit, FREE_WAIT, step=0.05)
    assert ok, "%s: packs take %d bytes, want at most %d" % (
        what, pack_alloc(m), limit)


def assert_eio(path):
    """Opening or reading `path` fails with EIO (either is fine: a packed
    file's image is loaded at open)."""
    with pytest.raises(OSError) as ei:
        with open(path, "rb") as f:
            f.read()
    assert ei.value.errno == errno.EIO, "%s: %r" % (path, ei.value)


def check_files(m, files, where=""):
    for name, data in files.items():
        got = read_file(m.path(name))
        assert got == data, "%s%s: %d bytes read, want %d%s" % (
            where, name, len(got), len(data),
            "" if len(got) != len(data) else " (content differs)")
        assert os.stat(m.path(name)).st_size == len(data), where + name


def write_packed(m, files):
    for name, data in files.items():
        d = os.path.dirname(m.path(name))
        os.makedirs(d, exist_ok=True)
        write_file(m.path(name), data)
    wait_packed(m, list(files), packed=packed)
    return {name: ref_of(m.bpath(name)) for name in files}


# ---- space ------------------------------------------------------------------

def test_small_files_packed_exactly_and_smaller(make_mount):
    skip_under("nopack", reason=PACKS)
    rnd = random.Random(1)
    files = {"d%d/f%03d.txt" % (i % 5, i): text(rnd.randint(100, 8192), i)
             for i in range(300)}
    # text up to 8 KB in one block, compressed to fit a pack (the
    # defaults, over make test-matrix's codec=none and block_size=4K)
    m = make_mount(name="pack", opts=["codec=auto", "block_size=128K"])
    n = make_mount(name="nopack",
                   opts=["nopack", "codec=auto", "block_size=128K"])
    for mm in (m, n):
        for name, data in files.items():
            os.makedirs(os.path.dirname(mm.path(name)), exist_ok=True)
            write_file(mm.path(name), data)

    # Every container that fits is packed; the others stay as they are.
    def settled():
        return all(packed(m.bpath(k)) or
                   os.stat(m.bpath(k)).st_size > IMAGE_MAX for k in files)
    assert wait_for(settled, PACK_WAIT, step=0.1), \
        "small containers left unpacked: %s" % [
            (k, os.stat(m.bpath(k)).st_size) for k in files
            if not packed(m.bpath(k)) and
            os.stat(m.bpath(k)).st_size <= IMAGE_MAX][:10]
    npacked = sum(packed(m.bpath(k)) for k in files)
    assert npacked >= 0.8 * len(files), \
        "only %d of %d small text files packed" % (npacked, len(files))
    for k in files:
        r = ref_of(m.bpath(k))
        if r is not None:
            assert r["size"] == len(files[k]), k
            assert 1 <= r["len"] <= IMAGE_MAX and r["off"] >= 16, (k, r)
            assert r["off"] // PAGE == (r["off"] + r["len"] - 1) // PAGE, \
                "image of %s crosses a page: %r" % (k, r)
    assert not any(packed(n.bpath(k)) for k in files), "-o nopack packed"
    assert pack_paths(n) == []
    check_files(m, files)
    check_files(n, files)

    m.stop()
    n.stop()
    fsck_clean(m, "packed")
    a_pack, a_nopack = backing_alloc(m), backing_alloc(n)
    assert a_pack < 0.5 * a_nopack, \
        "packed BACKING takes %d bytes, -o nopack %d" % (a_pack, a_nopack)
    print("allocated: packed %d, nopack %d bytes, %d of %d files packed"
          % (a_pack, a_nopack, npacked, len(files)))
    m.start()
    # st_blocks of a packed file: its image, in 512-byte units; also once
    # the file was opened and read
    blocks = {k: (ref_of(m.bpath(k))["len"] + 511) // 512 for k in files
              if packed(m.bpath(k))}
    for k, want in blocks.items():
        got = os.stat(m.path(k)).st_blocks
        assert got == want, "%s: st_blocks %d, image %d" % (k, got, want)
    check_files(m, files, "after remount: ")
    wrong = {k: (os.stat(m.path(k)).st_blocks, want)
             for k, want in blocks.items()
             if os.stat(m.path(k)).st_blocks != want}
    assert not wrong, "after a read, st_blocks (got, want) of %d packed " \
        "files: %s" % (len(wrong), sorted(wrong.items())[:5])


def test_unmount_packs_what_is_queued(sqfs):
    skip_under("nopack", reason=PACKS)
    m = sqfs
    files = {"f%03d" % i: text(200 + 17 * i, 100 + i) for i in range(100)}
    for name, data in files.items():
        write_file(m.path(name), data)
    closed = time.monotonic()
    last_was_packed = packed(m.bpath("f099"))
    young = time.monotonic() - closed < 0.3
    m.stop()
    if young:
        assert not last_was_packed, "packed before its delay was up"
    left = [k for k in files if not packed(m.bpath(k))]
    assert not left, "unmount left queued files unpacked: %s" % left[:10]
    fsck_clean(m, "after unmount")
    m.start()
    check_files(m, files, "after remount: ")


def resident_pages(path):
    """The pages of `path` in the page cache (mincore of a mapping)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                          ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t,
                             ctypes.c_void_p]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    size = os.path.getsize(path)
    npages = (size + PAGE - 1) // PAGE
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
        assert addr not in (None, ctypes.c_void_p(-1).value), \
            os.strerror(ctypes.get_errno())
        vec = (ctypes.c_ubyte * npages)()
        r = libc.mincore(addr, size, vec)
        libc.munmap(addr, size)
        assert r == 0, os.strerror(ctypes.get_errno())
    finally:
        os.close(fd)
    return {i for i in range(npages) if vec[i] & 1}


def test_listing_reads_packed_images_ahead(make_mount):
    """Listing a directory starts reading the packed images of its files
    without waiting (tar, cp and rsync read them next): after a listing,
    the pack's pages holding them are in the page cache, though nothing
    read a file."""
    skip_under("nopack", reason=PACKS)
    # up to 5.8 KB of text in one block: packed when compressed (the
    # defaults, over make test-matrix's codec=none and block_size=4K)
    m = make_mount(opts=["codec=auto", "block_size=128K"])
    files = {"ra/f%03d" % i: text(300 + 37 * i, 700 + i) for i in range(150)}
    refs = write_packed(m, files)
    m.stop()
    packs = {pack_path(m, r["pack"]) for r in refs.values()}
    assert len(packs) == 1, packs
    pack = packs.pop()
    want = set()
    for r in refs.values():
        want.update(range(r["off"] // PAGE,
                          (r["off"] + r["len"] - 1) // PAGE + 1))
    fd = os.open(pack, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
    if resident_pages(pack) & want:
        pytest.skip("the page cache kept the pack's pages")
    m.start()
    names = sorted(e.name for e in os.scandir(m.path("ra")))
    assert names == sorted(os.path.basename(k) for k in files)
    ok = wait_for(lambda: want <= resident_pages(pack), 5.0, step=0.05)
    assert ok, "after the listing, %d of the %d pages of the images are " \
        "in the page cache" % (len(want & resident_pages(pack)), len(want))
    check_files(m, files, "after the listing: ")


# ---- unpacking --------------------------------------------------------------

MTIME = 1500000000123456789


def test_writing_unpacks_and_mtime_is_kept(sqfs):
    skip_under("nopack", reason=PACKS)
    m = sqfs
    names = ["append", "overwrite", "truncate", "openrw", "otrunc"]
    files = {k: text(1500 + 100 * i, 200 + i) for i, k in enumerate(names)}
    for i, (k, data) in enumerate(files.items()):
        write_file(m.path(k), data)
        os.utime(m.path(k), ns=(MTIME, MTIME + i))
    wait_packed(m, names, packed=packed)
    old = {k: ref_of(m.bpath(k)) for k in names}

    def check_mtimes(where, which=names):
        for i, k in enumerate(names):
            if k in which:
                got = os.stat(m.path(k)).st_mtime_ns
                assert got == MTIME + i, "%s: mtime of %s %d, want %d" % (
                    where, k, got, MTIME + i)

    check_mtimes("packed")
    m.remount()
    check_mtimes("packed, remounted")
    assert all(packed(m.bpath(k)) for k in names)
    check_files(m, files)

    # Opening for writing leaves the file packed; its first change
    # unpacks it (with the writeback cache, the kernel sends the write at
    # close at the latest).
    with open(m.path("append"), "ab") as f:
        assert packed(m.bpath("append")), "opening for append unpacked it"
        f.write(b"appended line\n")
    assert unpacked(m.bpath("append")), "appending did not unpack"
    files["append"] += b"appended line\n"
    assert read_file(m.path("append")) == files["append"]

    with open(m.path("overwrite"), "r+b") as f:
        assert packed(m.bpath("overwrite"))
        assert f.read(50) == files["overwrite"][:50]
        f.seek(100)
        f.write(b"OVERWRITTEN")
        f.flush()
        os.fsync(f.fileno())
        assert unpacked(m.bpath("overwrite"))
        f.seek(0)
        assert f.read() == files["overwrite"][:100] + b"OVERWRITTEN" + \
            files["overwrite"][111:]
    files["overwrite"] = files["overwrite"][:100] + b"OVERWRITTEN" + \
        files["overwrite"][111:]

    # A read-only handle reads the image from memory; a truncate by path
    # then unpacks under it, and the handle sees the new size.
    fd = os.open(m.path("truncate"), os.O_RDONLY)
    try:
        assert os.pread(fd, 10, 0) == files["truncate"][:10]
        assert packed(m.bpath("truncate")), "a read unpacked the file"
        os.truncate(m.path("truncate"), 700)
        assert unpacked(m.bpath("truncate")), "truncate did not unpack"
        assert os.pread(fd, 5000, 0) == files["truncate"][:700]
    finally:
        os.close(fd)
    files["truncate"] = files["truncate"][:700]

    # Opened for writing and closed unchanged (as SQLite does): nothing
    # written, still packed with the same image and mtime.
    fd = os.open(m.path("openrw"), os.O_RDWR)
    try:
        assert os.pread(fd, 5000, 0) == files["openrw"]
        os.fsync(fd)
        assert packed(m.bpath("openrw")), "O_RDWR without a write unpacked"
    finally:
        os.close(fd)
    assert packed(m.bpath("openrw"))
    assert ref_of(m.bpath("openrw")) == old["openrw"]
    check_mtimes("opened O_RDWR, no write", ["openrw"])
    # touch opens for writing and sets the times through the handle.
    subprocess.run(["touch", "-m", "-d", "@1600000000", m.path("openrw")],
                   check=True)
    assert os.stat(m.path("openrw")).st_mtime_ns == 1600000000 * 10**9
    assert ref_of(m.bpath("openrw")) == old["openrw"], "touch unpacked"
    os.utime(m.path("openrw"), ns=(MTIME, MTIME + 3))

    with open(m.path("otrunc"), "wb") as f:
        f.write(b"short now\n")
    files["otrunc"] = b"short now\n"

    check_files(m, files, "after unpacking: ")
    # Each old image went out of the pack at the unpack.
    for k in names:
        if k != "openrw":
            assert_freed(m, [old[k]], "unpacked " + k)
    # Those whose container is small again pack again, with new images
    # (a block written in place goes to the container's second slot, far
    # past IMAGE_MAX: see test_small_file_changed_in_place_packs_again).
    again = ["truncate", "otrunc"]
    wait_packed(m, again, packed=packed)
    check_files(m, files, "packed again: ")
    check_mtimes("packed again", ["openrw"])
    for k in again:
        assert ref_of(m.bpath(k))["raw"] != old[k]["raw"], k
    assert ref_of(m.bpath("openrw")) == old["openrw"]
    m.remount()
    check_files(m, files, "packed again, remounted: ")
    check_mtimes("packed again, remounted", ["openrw"])
    fsck_clean(m, "end")


def test_failed_unpack_leaves_the_file_packed(make_mount, tmp_path):
    """The first write to a packed file opened for writing unpacks it; when
    that fails (backing disk full), the write reports ENOSPC and the file
    stays packed with its contents and mtime, ready for a later write."""
    skip_under("nopack", reason=PACKS)
    ctl = tmp_path / "fault.ctl"
    m = make_mount(env=faultinj_env(ctl))
    data = text(1800, 77)
    refs = write_packed(m, {"victim": data})
    os.utime(m.path("victim"), ns=(MTIME, MTIME))
    fd = os.open(m.path("victim"), os.O_RDWR)
    try:
        assert os.pread(fd, 100, 0) == data[:100]
        write_fault_ctl(ctl, op="pwrite,pwritev,fdatasync", errno="ENOSPC",
                        mode="sticky", path_substr="victim")
        seen = None
        try:
            os.pwrite(fd, b"NEW", 0)
            os.fsync(fd)  # the writeback cache sends the write here
        except OSError as e:
            seen = e.errno
        assert seen == errno.ENOSPC, seen
        write_fault_ctl(ctl)
    finally:
        try:
            os.close(fd)
        except OSError as e:  # the writeback cache may retry at close
            assert e.errno == errno.ENOSPC, e
    # with the writeback cache the kernel may still hold the page: only
    # what squeezefs stored counts
    m.remount()
    got = read_file(m.path("victim"))
    assert got in (data, b"NEW" + data[3:]), got[:20]
    if got == data:
        assert ref_of(m.bpath("victim")) == refs["victim"]
        # (with the writeback cache the write() itself succeeded, into
        # the page cache, and the kernel sets the mtime it made)
        if not m.writeback():
            assert os.stat(m.path("victim")).st_mtime_ns == MTIME, \
                "a failed unpack changed the mtime"
    with open(m.path("victim"), "r+b") as f:
        f.write(b"NEW")
    assert read_file(m.path("victim")) == b"NEW" + data[3:]
    m.remount()
    assert read_file(m.path("victim")) == b"NEW" + data[3:]
    fsck_clean(m, "after a failed unpack")


@pytest.mark.skipif(shutil.which("chattr") is None, reason="no chattr")
def test_open_for_writing_checks_the_container(make_mount):
    """An open for writing of a packed file fails as the backing file
    refuses it (immutable here), also while a reader has it open (its image
    in memory): not only at the first write."""
    skip_under("nopack", reason=PACKS)
    m = make_mount()
    refs = write_packed(m, {"frozen": text(1500, 78)})
    assert refs["frozen"]
    if subprocess.run(["chattr", "+i", m.bpath("frozen")],
                      stderr=subprocess.DEVNULL).returncode:
        pytest.skip("backing filesystem has no immutable flag")
    try:
        for reader in (False, True):
            rfd = os.open(m.path("frozen"), os.O_RDONLY) if reader else None
            try:
                with pytest.raises(OSError) as ei:
                    os.close(os.open(m.path("frozen"), os.O_RDWR))
                assert ei.value.errno == errno.EPERM, (reader, ei.value)
            finally:
                if rfd is not None:
                    os.close(rfd)
    finally:
        subprocess.run(["chattr", "-i", m.bpath("frozen")], check=True)


def test_sqlite_reader_leaves_a_small_database_packed(make_mount):
    """SQLite opens its database O_RDWR even to query it: a query leaves a
    small packed database packed with the same image; an insert unpacks
    it, and it packs again with the new row."""
    skip_under("nopack", reason=PACKS)
    import sqlite3
    # an 8 KiB database in one block packs when compressed (the defaults,
    # over make test-matrix's codec=none and block_size=4K)
    m = make_mount(opts=["codec=auto", "block_size=128K"])
    db = m.path("small.db")
    con = sqlite3.connect(db)
    con.execute("create table t(x)")
    con.execute("insert into t values ('hello')")
    con.commit()
    con.close()
    wait_packed(m, ["small.db"], packed=packed)
    ref = ref_of(m.bpath("small.db"))

    con = sqlite3.connect(db)
    try:
        assert con.execute("select x from t").fetchall() == [("hello",)]
        assert packed(m.bpath("small.db")), "a query unpacked the database"
    finally:
        con.close()
    assert ref_of(m.bpath("small.db")) == ref

    con = sqlite3.connect(db)
    con.execute("insert into t values ('world')")
    con.commit()
    con.close()
    assert wait_for(lambda: packed(m.bpath("small.db")) and
                    ref_of(m.bpath("small.db"))["raw"] != ref["raw"],
                    PACK_WAIT), "the changed database was not packed again"
    assert_freed(m, [ref], "the database's old image")
    m.remount()
    con = sqlite3.connect(db)
    try:
        assert con.execute("select x from t order by rowid").fetchall() == \
            [("hello",), ("world",)]
        assert con.execute("pragma integrity_check").fetchall() == [("ok",)]
    finally:
        con.close()
    fsck_clean(m, "after SQLite")


def test_small_file_changed_in_place_packs_again(sqfs):
    """A small file appended to or patched in place is still a small
    file: it should go back into a pack like one rewritten whole."""
    skip_under("nopack", reason=PACKS)
    m = sqfs
    files = {"log": text(600, 251), "conf": text(900, 252),
             "whole": text(700, 253)}
    write_packed(m, files)
    with open(m.path("log"), "ab") as f:
        f.write(b"one more line\n")
    files["log"] += b"one more line\n"
    with open(m.path("conf"), "r+b") as f:
        f.seek(10)
        f.write(b"patched")
    files["conf"] = files["conf"][:10] + b"patched" + files["conf"][17:]
    write_file(m.path("whole"), text(700, 254))
    files["whole"] = text(700, 254)
    check_files(m, files)
    wait_packed(m, ["whole"], packed=packed)
    ok = wait_for(lambda: packed(m.bpath("log")) and
                  packed(m.bpath("conf")), PACK_WAIT, step=0.05)
    st = {k: (os.stat(m.bpath(k)).st_size, os.stat(m.bpath(k)).st_blocks)
          for k in ("log", "conf")}
    assert ok, "changed in place, not packed again: (container st_size, " \
        "st_blocks) %s" % st
    check_files(m, files, "packed again: ")


def test_delete_and_rewrite_free_pack_space(sqfs):
    skip_under("nopack", reason=PACKS)
    m = sqfs
    os.mkdir(m.path("d"))
    files = {"d/f%03d" % i: text(1200 + 7 * i, 300 + i) for i in range(200)}
    write_packed(m, files)
    full = pack_alloc(m)
    assert full >= 8 * PAGE, "200 files took only %d bytes of packs" % full
    for k in files:
        os.unlink(m.path(k))
    assert_packs_at_most(m, 2 * PAGE, "all %d packed files deleted (packs "
                         "took %d bytes before)" % (len(files), full))

    # Rewriting every file: each unpack frees its image, so the packs do
    # not grow by the old images.
    old = write_packed(m, files)
    first = pack_alloc(m)
    files = {k: text(len(v), 900 + i) for i, (k, v) in
             enumerate(files.items())}
    for k, data in files.items():
        write_file(m.path(k), data)
    wait_packed(m, list(files), packed=packed)
    check_files(m, files)
    assert_freed(m, old.values(), "rewritten files")
    second = pack_alloc(m)
    assert second <= first * 1.25 + 2 * PAGE, \
        "rewriting all files grew the packs from %d to %d bytes" % (
            first, second)
    for k in files:
        os.unlink(m.path(k))
    assert_packs_at_most(m, 2 * PAGE, "rewritten then deleted")
    m.remount()
    assert os.listdir(m.path("d")) == []
    fsck_clean(m, "end")


# ---- names ------------------------------------------------------------------

from test_tools import (AT_FDCWD, RENAME_EXCHANGE, _libc,  # noqa: E402
                        renameat2)


def test_links_and_renames(sqfs):
    skip_under("nopack", reason=PACKS)
    m = sqfs
    names = ["h1", "src", "dst", "mv", "x", "y", "keep1", "over"]
    files = {k: text(800 + 150 * i, 400 + i) for i, k in enumerate(names)}
    refs = write_packed(m, files)

    # Two names: the image lives while one is left.
    os.link(m.path("h1"), m.path("h2"))
    assert os.stat(m.path("h2")).st_nlink == 2
    assert packed(m.bpath("h2"))
    os.unlink(m.path("h1"))
    assert read_file(m.path("h2")) == files["h1"]
    assert image_live(m, refs["h1"]), "image freed with a link left"
    os.unlink(m.path("h2"))
    assert_freed(m, [refs["h1"]], "last link gone")

    # rename over a packed target frees the target's image only
    os.rename(m.path("src"), m.path("dst"))
    assert read_file(m.path("dst")) == files["src"]
    assert not os.path.exists(m.path("src"))
    assert_freed(m, [refs["dst"]], "renamed over")
    assert image_live(m, refs["src"])
    assert ref_of(m.bpath("dst"))["raw"] == refs["src"]["raw"]

    # rename of a packed file keeps it packed, same image
    os.mkdir(m.path("sub"))
    os.rename(m.path("mv"), m.path("sub", "moved"))
    assert read_file(m.path("sub", "moved")) == files["mv"]
    assert ref_of(m.bpath("sub", "moved"))["raw"] == refs["mv"]["raw"]
    assert image_live(m, refs["mv"])

    # exchange removes nothing
    renameat2(m.path("x"), m.path("y"), RENAME_EXCHANGE)
    assert read_file(m.path("x")) == files["y"]
    assert read_file(m.path("y")) == files["x"]
    assert image_live(m, refs["x"]) and image_live(m, refs["y"])

    # rename over one name of a file that has another keeps the image
    os.link(m.path("keep1"), m.path("keep2"))
    os.rename(m.path("over"), m.path("keep1"))
    assert read_file(m.path("keep1")) == files["over"]
    assert read_file(m.path("keep2")) == files["keep1"]
    assert image_live(m, refs["keep1"])

    want = {"dst": files["src"], "sub/moved": files["mv"], "x": files["y"],
            "y": files["x"], "keep1": files["over"], "keep2": files["keep1"]}
    check_files(m, want)
    m.remount()
    check_files(m, want, "after remount: ")
    for k in ("src", "mv", "x", "y", "keep1"):
        assert image_live(m, refs[k]), "image of %s freed" % k
    fsck_clean(m, "end")


def test_deleting_frees_whether_or_not_the_file_was_read(sqfs):
    """unlink and rename over free a packed file's image also when the
    file was opened and read (or stat'ed) through the mount before."""
    skip_under("nopack", reason=PACKS)
    m = sqfs
    names = ["untouched", "stated", "read", "read_stated", "target"]
    files = {k: text(800 + 100 * i, 450 + i) for i, k in enumerate(names)}
    write_file(m.path("source"), b"replaces target\n")
    refs = write_packed(m, files)
    m.remount()  # nothing cached in the daemon
    os.stat(m.path("stated"))
    for k in ("read", "read_stated", "target"):
        assert read_file(m.path(k)) == files[k]
    os.stat(m.path("read_stated"))
    for k in names[:-1]:
        os.unlink(m.path(k))
    os.rename(m.path("source"), m.path("target"))
    wait_for(lambda: all(image_freed(m, refs[k]) for k in names),
             FREE_WAIT, step=0.05)
    left = [k for k in names if not image_freed(m, refs[k])]
    assert not left, "images left in the pack after unlink or rename " \
        "over: %s (of %s)" % (left, names)


def test_packed_file_opened_after_its_last_name_went(sqfs):
    """A file looked up but not open yet when its last name goes (what an
    open() racing an unlink or a rename over the file meets; an O_PATH
    descriptor makes it deterministic): opening it gives the old content,
    as on any Linux file system, not EIO."""
    skip_under("nopack", reason=PACKS)
    m = sqfs
    files = {"gone": text(900, 503), "over": text(950, 504),
             "new": text(300, 505)}
    refs = write_packed(m, files)
    pfd = os.open(m.path("gone"), os.O_PATH)
    qfd = os.open(m.path("over"), os.O_PATH)
    try:
        os.unlink(m.path("gone"))
        os.rename(m.path("new"), m.path("over"))
        for fd, k in ((pfd, "gone"), (qfd, "over")):
            with open("/proc/self/fd/%d" % fd, "rb") as f:
                assert f.read() == files[k], k
    finally:
        os.close(pfd)
        os.close(qfd)
    assert read_file(m.path("over")) == files["new"]
    # freed once the kernel lets go of them (release, forget: async)
    assert_freed(m, [refs["gone"], refs["over"]], "unlinked, renamed over")


def test_packed_file_unlinked_while_open(sqfs):
    skip_under("nopack", reason=PACKS)
    m = sqfs
    files = {"ro": text(1000, 501), "rw": text(1100, 502)}
    refs = write_packed(m, files)

    # Open for writing first (still packed), then unlinked, then written:
    # the write unpacks the unlinked file, and its image is freed once,
    # at the unpack (not again when the inode goes).
    fd = os.open(m.path("rw"), os.O_RDWR)
    try:
        os.unlink(m.path("rw"))
        os.pwrite(fd, b"after unlink", 0)
        assert os.pread(fd, 5000, 0) == b"after unlink" + files["rw"][12:]
    finally:
        os.close(fd)
    assert_freed(m, [refs["rw"]], "unlinked while open")

    # Open read-only (image in memory), unlinked, then the open file is
    # reopened for writing through /proc.
    fd = os.open(m.path("ro"), os.O_RDONLY)
    try:
        os.unlink(m.path("ro"))
        assert os.pread(fd, 5000, 0) == files["ro"]
        wfd = os.open("/proc/self/fd/%d" % fd, os.O_RDWR)
        try:
            os.pwrite(wfd, b"REOPENED", 0)
            assert os.pread(wfd, 5000, 0) == b"REOPENED" + files["ro"][8:]
        finally:
            os.close(wfd)
        assert os.pread(fd, 5000, 0) == b"REOPENED" + files["ro"][8:]
    finally:
        os.close(fd)
    assert os.listdir(m.mnt) == []
    assert m.proc.poll() is None


# ---- damage -----------------------------------------------------------------

def fsck_names(m, want_bad, all_names):
    """fsck exits 1 and names exactly the files in `want_bad`."""
    r = run_fsck(m.backing)
    out = r.stdout + r.stderr
    assert r.returncode == 1, "fsck must find the damage: rc %d\n%s" % (
        r.returncode, out[-3000:])
    named = {k for k in all_names if re.search(r"(^|/)%s\b" % re.escape(k),
                                                out, re.M)}
    assert named == set(want_bad), \
        "fsck named %s, want %s:\n%s" % (sorted(named), sorted(want_bad),
                                         out[-3000:])


def test_damaged_image(make_mount):
    skip_under("nopack", reason=PACKS)
    m = make_mount()
    files = {"f%02d" % i: text(300 + 60 * i, 600 + i) for i in range(20)}
    refs = write_packed(m, files)
    big = text(200000, 699)
    write_file(m.path("big"), big)
    m.stop()
    fsck_clean(m, "before damage")
    victim = "f07"
    r = refs[victim]
    flip_byte(pack_path(m, r["pack"]), r["off"] + r["len"] // 2, 0x10)
    fsck_names(m, [victim], list(files) + ["big"])

    m.start()
    assert os.stat(m.path(victim)).st_size == len(files[victim])
    assert_eio(m.path(victim))
    assert_eio(m.path(victim))  # again: the error is not cached away
    others = {k: v for k, v in files.items() if k != victim}
    check_files(m, others)
    assert read_file(m.path("big")) == big
    assert m.proc.poll() is None, "daemon died on a damaged image"
    assert victim in m.read_log(), "the log does not name %s" % victim
    # the damaged file can still be deleted; that frees nobody else's image
    os.unlink(m.path(victim))
    check_files(m, others, "after deleting the damaged file: ")
    m.stop()
    fsck_clean(m, "damaged file deleted")


def test_short_or_missing_pack(make_mount):
    skip_under("nopack", reason=PACKS)
    m = make_mount()
    files = {"f%02d" % i: text(1200 + 40 * i, 700 + i) for i in range(40)}
    refs = write_packed(m, files)
    big = text(100000, 799)
    write_file(m.path("big"), big)
    m.stop()
    ids = {r["pack"] for r in refs.values()}
    assert ids == {1}, ids
    pack = pack_path(m, 1)
    os.truncate(pack, PAGE)
    short = sorted(k for k, r in refs.items() if r["off"] + r["len"] > PAGE)
    whole = sorted(k for k in files if k not in short)
    assert short and whole, "all images on one side of %d" % PAGE
    fsck_names(m, short, list(files) + ["big"])

    m.start()
    for k in short:
        assert_eio(m.path(k))
    check_files(m, {k: files[k] for k in whole})
    assert read_file(m.path("big")) == big
    assert m.proc.poll() is None
    m.stop()

    os.unlink(pack)
    fsck_names(m, list(files), list(files) + ["big"])
    m.start()
    for k in files:
        assert os.stat(m.path(k)).st_size == len(files[k])
        assert_eio(m.path(k))
    assert read_file(m.path("big")) == big
    # Packing goes on in a new pack (the id is free again); the old
    # references do not match it.
    write_file(m.path("new"), b"a new small file\n")
    wait_packed(m, ["new"], packed=packed)
    assert read_file(m.path("new")) == b"a new small file\n"
    for k in files:
        assert_eio(m.path(k))
    assert m.proc.poll() is None
    m.stop()
    fsck_names(m, list(files), list(files) + ["big", "new"])


def test_stale_reference_on_a_container_is_ignored(make_mount):
    skip_under("nopack", reason=PACKS)
    m = make_mount()
    files = {"a": text(1000, 801)}
    refs = write_packed(m, files)
    m.stop()
    m.opts = ["nopack"]
    m.start()
    stale = {"b": text(900, 802), "c": text(1300, 803)}
    for k, data in stale.items():
        write_file(m.path(k), data)
    m.stop()
    # As if a crash came between setxattr and truncate (or before the
    # xattr of an unpack was removed): a's reference on b and c.
    for k in stale:
        assert unpacked(m.bpath(k))
        os.setxattr(m.bpath(k), XATTR, refs["a"]["raw"])
    fsck_clean(m, "stale references")
    m.opts = []
    m.start()
    check_files(m, stale)
    check_files(m, files)
    # deleting b must not free a's image, which b's stale xattr names
    os.unlink(m.path("b"))
    assert image_live(m, refs["a"]), "a's image freed by deleting b"
    # rewriting c: c packs with a reference of its own
    write_file(m.path("c"), b"c rewritten\n")
    stale["c"] = b"c rewritten\n"
    wait_packed(m, ["c"], packed=packed)
    assert ref_of(m.bpath("c"))["raw"] != refs["a"]["raw"]
    assert image_live(m, refs["a"])
    m.remount()
    check_files(m, {"a": files["a"], "c": stale["c"]}, "after remount: ")
    assert image_live(m, refs["a"])
    fsck_clean(m, "end")


# ---- options ----------------------------------------------------------------

ORPHANS = re.compile(r"^packs: (\d+) orphaned bytes, (\d+) pages", re.M)


def orphan_report(r):
    """(orphaned bytes, pages with nothing else) from fsck's output."""
    found = ORPHANS.search(r.stdout)
    return (int(found.group(1)), int(found.group(2))) if found else (0, 0)


def test_fsck_reclaims_orphaned_images(make_mount):
    """A crash between an unpack and the pack letting go of the image
    leaves an orphan (FORMAT.md 13.5).  fsck counts orphaned bytes, and
    fsck --reclaim punches them out, freeing pages that hold nothing else;
    every file still reads.  Refused while mounted, and when a reference
    cannot be read."""
    skip_under("nopack", reason=PACKS)
    m = make_mount()
    files = {"f%03d" % i: text(900 + 7 * i, 1300 + i) for i in range(60)}
    refs = write_packed(m, files)
    m.stop()
    r = run_fsck(m.backing)
    assert r.returncode == 0 and orphan_report(r) == (0, 0), r.stdout
    pages = {}
    for name, ref in refs.items():
        pages.setdefault((ref["pack"], ref["off"] // PAGE), []).append(name)
    whole = max((k for k in pages if k[1] > 0), key=lambda k: len(pages[k]))
    shared = next(k for k in pages if k != whole and len(pages[k]) > 1)
    orphans = pages[whole] + pages[shared][:1]
    # what an unpack interrupted before its free leaves: the container
    # holds the image again, no reference, the image still in the pack
    for name in orphans:
        bpath = m.bpath(name)
        write_file(bpath, image_bytes(m, refs[name]), "r+b")
        os.removexattr(bpath, XATTR)
    live = [n for n in files if n not in orphans]
    want_max = sum(refs[n]["len"] for n in orphans)
    before = pack_alloc(m)
    r = run_fsck(m.backing)
    got, freeable = orphan_report(r)
    assert r.returncode == 0, r.stdout + r.stderr
    assert 0 < got <= want_max and freeable == 1, r.stdout

    m.start()
    r = run_fsck(m.backing, "--reclaim")
    assert r.returncode == 2 and "mounted" in r.stderr, (r.stdout, r.stderr)
    m.stop()
    assert all(image_live(m, refs[n]) for n in orphans)

    # an unreadable reference may point anywhere: nothing is reclaimed
    bad = m.bpath("bad-ref")
    open(bad, "wb").close()
    os.setxattr(bad, XATTR, b"not a reference")
    r = run_fsck(m.backing, "--reclaim")
    assert r.returncode == 1 and "nothing reclaimed" in r.stderr, (
        r.stdout, r.stderr)
    assert all(image_live(m, refs[n]) for n in orphans)
    os.unlink(bad)

    r = run_fsck(m.backing, "--reclaim")
    assert r.returncode == 0 and "punched out, 1 pages freed" in r.stdout, (
        r.stdout, r.stderr)
    assert orphan_report(r)[0] == got
    assert all(image_freed(m, refs[n]) for n in orphans)
    assert all(image_live(m, refs[n]) for n in live)
    assert pack_alloc(m) <= before - PAGE, (pack_alloc(m), before)
    r = run_fsck(m.backing)
    assert r.returncode == 0 and orphan_report(r) == (0, 0), r.stdout
    m.start()
    check_files(m, files, "after reclaim: ")
    m.stop()


def test_nopack_reads_and_unpacks_but_packs_nothing(make_mount):
    skip_under("nopack", reason=PACKS)
    m = make_mount()
    old = {"p%d" % i: text(900 + 100 * i, 900 + i) for i in range(5)}
    write_packed(m, old)
    m.stop()
    m.opts = ["nopack"]
    m.start()
    check_files(m, old)
    new = {"n%d" % i: text(500 + 100 * i, 950 + i) for i in range(5)}
    for k, data in new.items():
        write_file(m.path(k), data)
    write_file(m.path("p0"), b"more\n", "ab")
    old["p0"] += b"more\n"
    assert unpacked(m.bpath("p0"))
    time.sleep(2.5)  # well past the packing delay
    for k in list(new) + ["p0"]:
        assert unpacked(m.bpath(k)), "%s packed under -o nopack" % k
    for k in ["p1", "p2", "p3", "p4"]:
        assert packed(m.bpath(k))
    m.stop()  # and nothing is packed at unmount either
    for k in list(new) + ["p0"]:
        assert unpacked(m.bpath(k)), "%s packed at unmount" % k
    fsck_clean(m, "after -o nopack")
    m.start()
    check_files(m, dict(old, **new), "after remount: ")


def test_nopack_still_frees_images(make_mount):
    skip_under("nopack", reason=PACKS)
    m = make_mount()
    files = {"p%d" % i: text(900 + 100 * i, 1000 + i) for i in range(3)}
    refs = write_packed(m, files)
    m.stop()
    m.opts = ["nopack"]
    m.start()
    os.unlink(m.path("p0"))
    write_file(m.path("p1"), b"appended\n", "ab")
    os.rename(m.path("p2"), m.path("gone"))
    os.unlink(m.path("gone"))
    assert_freed(m, [refs["p0"]], "-o nopack, deleted file")
    assert_freed(m, [refs["p1"]], "-o nopack, unpacked file")
    assert_freed(m, [refs["p2"]], "-o nopack, renamed then deleted file")


def test_ro_mount_reads_packed_files(make_mount):
    skip_under("nopack", reason=PACKS)
    m = make_mount()
    files = {"f%d" % i: text(700 + 200 * i, 1100 + i) for i in range(8)}
    refs = write_packed(m, files)
    m.stop()
    m.opts = ["ro"]
    m.start()
    for k, r in refs.items():
        assert os.stat(m.path(k)).st_blocks == (r["len"] + 511) // 512
    check_files(m, files)
    with pytest.raises(OSError) as ei:
        open(m.path("f0"), "ab")
    assert ei.value.errno == errno.EROFS
    m.stop()
    for k, r in refs.items():
        assert packed(m.bpath(k)) and ref_of(m.bpath(k)) == r
    fsck_clean(m, "after -o ro")


def test_ro_mount_packs_nothing(make_mount):
    """Files only read, on a read-only mount, must stay as they are in
    BACKING."""
    m = make_mount(opts=["nopack"])
    files = {"f%d" % i: text(700 + 200 * i, 1200 + i) for i in range(4)}
    for k, data in files.items():
        write_file(m.path(k), data)
    m.stop()
    before = {k: (os.stat(m.bpath(k)).st_size, ref_of(m.bpath(k)))
              for k in files}
    m.opts = ["ro"]
    m.start()
    check_files(m, files)
    time.sleep(2.5)  # well past the packing delay
    m.stop()
    after = {k: (os.stat(m.bpath(k)).st_size, ref_of(m.bpath(k)))
             for k in files}
    assert after == before, "a -o ro mount changed BACKING: %s -> %s" % (
        before, after)


def test_reference_xattr_hidden_and_refused(sqfs):
    skip_under("nopack", reason=PACKS)
    m = sqfs
    files = {"f": text(1000, 1301), "g": text(1000, 1302)}
    os.makedirs(m.path("d"))
    write_file(m.path("f"), files["f"])
    os.setxattr(m.path("f"), "user.color", b"blue")
    refs = write_packed(m, files)
    for k in files:
        names = os.listxattr(m.path(k))
        assert XATTR not in names, names
        assert not any(n.startswith("trusted.squeezefs.") for n in names)
    assert os.listxattr(m.path("f")) == ["user.color"]
    assert os.getxattr(m.path("f"), "user.color") == b"blue"
    with pytest.raises(OSError) as ei:
        os.getxattr(m.path("f"), XATTR)
    assert ei.value.errno == errno.ENODATA
    for k in ("f", "d"):
        with pytest.raises(OSError) as ei:
            os.setxattr(m.path(k), XATTR, refs["g"]["raw"])
        assert ei.value.errno == errno.EPERM, (k, ei.value)
        with pytest.raises(OSError) as ei:
            os.removexattr(m.path(k), XATTR)
        assert ei.value.errno == errno.EPERM, (k, ei.value)
    for k in files:
        assert ref_of(m.bpath(k)) == refs[k]
    check_files(m, files)
    m.remount()
    check_files(m, files, "after remount: ")
    assert os.listxattr(m.path("f")) == ["user.color"]


# ---- concurrency ------------------------------------------------------------

def conc_line(name, v, k):
    filler = " ".join(WORDS[(v * 7 + k * 3 + j) % len(WORDS)]
                      for j in range(3 + (v + k) % 6))
    return b"%s v%d l%d %s\n" % (name.encode(), v, k, filler.encode())


def conc_content(name, v, nlines):
    return b"".join(conc_line(name, v, k) for k in range(nlines))


def test_readers_writers_and_packer_race(make_mount):
    skip_under("nopack", reason=PACKS)
    m = make_mount()
    nmut, per = 3, 8
    names = ["c%02d" % i for i in range(nmut * per)]
    model = {k: conc_content(k, 0, 10 + i) for i, k in enumerate(names)}
    write_packed(m, model)
    stop = threading.Event()
    errors = []
    eio = []  # opens that failed with EIO: asserted last
    hits = {"packed_at_op": 0, "reads": 0}
    hit_lock = threading.Lock()
    valid = {k: re.compile(rb"%s v\d+ l\d+ [a-z ]+" % k.encode())
             for k in names}

    def check_read(k, data):
        lines = data.split(b"\n")
        for ln in lines[:-1]:
            if not valid[k].fullmatch(ln):
                raise AssertionError("%s: foreign or garbled line %r in %r"
                                     % (k, ln, data[:200]))
        last = lines[-1]
        if last and not (k.encode() + b" v").startswith(last[:len(k) + 2]):
            raise AssertionError("%s: garbled tail %r" % (k, last))

    def guard(fn, *a):
        try:
            fn(*a)
        except BaseException:  # noqa: BLE001 - reported below
            import traceback
            errors.append(traceback.format_exc())
            stop.set()

    def reader(seed):
        r = random.Random(seed)
        while not stop.is_set():
            k = r.choice(names)
            try:
                fd = os.open(m.path(k), os.O_RDONLY)
            except FileNotFoundError:
                continue  # between delete and recreate
            except OSError as e:
                if e.errno != errno.EIO:
                    raise
                eio.append(k)
                continue
            try:
                # one read: every version is shorter than a page
                data = os.pread(fd, 65536, 0)
            finally:
                os.close(fd)
            check_read(k, data)
            with hit_lock:
                hits["reads"] += 1

    def mutator(t):
        r = random.Random(7000 + t)
        mine = names[t * per:(t + 1) * per]
        ver = {k: 0 for k in mine}
        hot, switch = [], 0.0
        while not stop.is_set():
            if time.monotonic() >= switch:
                # a few files at a time: the others idle long enough
                # to be packed, and the next op on them unpacks
                hot = r.sample(mine, 3)
                switch = time.monotonic() + r.uniform(0.8, 1.6)
            k = r.choice(hot)
            p = m.path(k)
            if packed(m.bpath(k)):
                with hit_lock:
                    hits["packed_at_op"] += 1
            ver[k] += 1
            v = ver[k]
            op = r.random()
            if op < 0.4 and len(model[k]) < 2000:
                add = b"".join(conc_line(k, v, j)
                               for j in range(r.randint(1, 3)))
                with open(p, "ab") as f:
                    f.write(add)
                model[k] += add
            elif op < 0.65:
                data = conc_content(k, v, r.randint(1, 25))
                with open(p, "wb") as f:
                    f.write(data)
                model[k] = data
            elif op < 0.85:
                os.unlink(p)
                data = conc_content(k, v, r.randint(1, 25))
                with open(p, "xb") as f:
                    f.write(data)
                model[k] = data
            else:
                data = conc_content(k, v, r.randint(1, 25))
                write_file(p + ".tmp", data)
                os.rename(p + ".tmp", p)
                model[k] = data
            time.sleep(r.uniform(0, 0.02))

    ts = [threading.Thread(target=guard, args=(reader, 100 + i))
          for i in range(3)]
    ts += [threading.Thread(target=guard, args=(mutator, t))
           for t in range(nmut)]
    for t in ts:
        t.start()
    time.sleep(5.0)
    stop.set()
    for t in ts:
        t.join(60)
    assert not any(t.is_alive() for t in ts), "threads hung"
    assert not errors, "\n".join(errors)
    assert m.proc.poll() is None
    assert hits["packed_at_op"] >= 10, \
        "only %d ops met a packed file: the race was not run" % \
        hits["packed_at_op"]
    assert hits["reads"] >= 100, hits
    check_files(m, model, "right after: ")
    # all that are small enough pack (see
    # test_small_file_changed_in_place_packs_again for the others)
    assert wait_for(lambda: all(packed(m.bpath(k)) or os.stat(
        m.bpath(k)).st_size > IMAGE_MAX for k in names), PACK_WAIT, 0.05)
    assert any(packed(m.bpath(k)) for k in names)
    check_files(m, model, "settled: ")
    m.remount()
    check_files(m, model, "after remount: ")
    assert sorted(os.listdir(m.mnt)) == names
    fsck_clean(m, "end")
    # every image of every version is gone once the files are
    for k in names:
        os.unlink(m.path(k))
    assert_packs_at_most(m, 2 * PAGE, "all files deleted")
    print("race: %r" % hits)
    # An open() racing the unlink or rename over a packed file finds the
    # old file or no file, never EIO (see
    # test_packed_file_opened_after_its_last_name_went).
    assert not eio, "%d opens failed with EIO: %s" % (len(eio), eio[:10])


# ---- crash ------------------------------------------------------------------

def crash_content(name, gen):
    crc = zlib.crc32(name.encode())
    return text(100 + crc % 2400, crc * 1000 + gen)


def writer_main(argv):
    """writer MNT JOURNAL SEED DIR: creates small files DIR/fNNNNN (each
    written, fsync'd and closed) and rewrites some in place, journalling
    "I name gen" before and "D name gen" after each, until the daemon is
    gone (exit 3) or it is killed."""
    mnt, journal, seed, d = argv[0], argv[1], int(argv[2]), argv[3]
    r = random.Random(seed)
    jfd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    done, i = {}, 0
    print("ready", flush=True)
    try:
        while True:
            old = [k for k, (g, t) in done.items()
                   if time.monotonic() - t > 1.5]
            if old and r.random() < 0.25:
                name = r.choice(old)
                gen = done[name][0] + 1
                flags = os.O_RDWR
            else:
                name = "%s/f%05d" % (d, i)
                i += 1
                gen = 0
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
            data = crash_content(name, gen)
            os.write(jfd, b"I %s %d\n" % (name.encode(), gen))
            fd = os.open(os.path.join(mnt, name), flags, 0o644)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
            os.close(fd)
            os.write(jfd, b"D %s %d\n" % (name.encode(), gen))
            done[name] = (gen, time.monotonic())
    except OSError:
        sys.exit(EXIT_DAEMON_GONE)


def journal_state(path):
    """name -> (last gen whose close returned or None, gen in flight or
    None)."""
    st = {}
    with open(path, "rb") as f:
        for line in f.read().decode().splitlines():
            kind, name, gen = line.split()
            gen = int(gen)
            done, _ = st.get(name, (None, None))
            st[name] = (gen, None) if kind == "D" else (done, gen)
    return st


def check_crashed(m, journal, where):
    st = journal_state(journal)
    for name, (done, flying) in st.items():
        p = m.path(name)
        ok = []
        if done is not None:
            ok.append(crash_content(name, done))
        if flying is not None:
            ok.append(crash_content(name, flying))
        if done is None:  # its creation was cut short
            if not os.path.exists(p):
                continue
            ok.append(b"")
        try:
            got = read_file(p)
        except OSError as e:
            raise AssertionError("%s: %s (done gen %s, in flight %s): %s"
                                 % (where, name, done, flying, e))
        assert got in ok, \
            "%s: %s (done gen %s, in flight %s): %d bytes, none of the " \
            "versions (%s bytes)" % (where, name, done, flying, len(got),
                                     [len(x) for x in ok])
    return st


def test_kill_while_packing(make_mount, tmp_path):
    skip_under("nopack", reason=PACKS)
    m = make_mount()
    journal = str(tmp_path / "journal")
    rng = random.Random(4343)
    packed_total = 0
    rounds = 3
    for rnd in range(rounds):
        d = "r%d" % rnd
        os.mkdir(m.path(d))
        w = start_writer_script([sys.executable, os.path.abspath(__file__),
                                 "writer", m.mnt, journal, str(rnd), d])
        try:
            def some_packed():
                try:
                    return sum(e.stat().st_size <= STUB_LEN and
                               ref_of(e.path) is not None
                               for e in os.scandir(m.bpath(d))) >= 30
                except OSError:
                    return False
            assert wait_for(some_packed, PACK_WAIT, step=0.1), \
                "round %d: nothing packed while writing" % rnd
            assert w.poll() is None, "writer stopped: %r" % (
                w.communicate(timeout=10),)
            time.sleep(rng.uniform(0, 0.5))
            m.kill()
        finally:
            if w.poll() is None:
                time.sleep(0.5)
            if w.poll() is None:
                w.kill()
        stop_writer(w)
        m.check_log()
        where = "round %d" % rnd
        fsck_clean(m, where + ", right after kill -9")
        n = sum(packed(e.path) for e in os.scandir(m.bpath(d)))
        packed_total += n
        m.start()
        st = check_crashed(m, journal, where)
    m.stop()
    fsck_clean(m, "after a clean unmount")
    m.start()
    check_crashed(m, journal, "clean remount")
    assert packed_total >= 30 * rounds
    print("crash: %d files journalled, %d packed at the kills"
          % (len(st), packed_total))


# ---- attributes while packing -----------------------------------------------

AT_EMPTY_PATH = 0x1000
AT_STATX_FORCE_SYNC = 0x2000
STATX_SIZE = 0x200
STATX_BUF_LEN = 256  # struct statx
STATX_SIZE_OFF = 40  # stx_size, u64
_libc.statx.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int,
                        ctypes.c_uint, ctypes.c_void_p]


def statx_size(path, fd=AT_FDCWD):
    """st_size by statx(AT_STATX_FORCE_SYNC): the kernel asks the daemon
    every time (os.stat may be answered from its attribute cache).  With
    path None, of the open `fd` (a GETATTR, never a LOOKUP)."""
    buf = ctypes.create_string_buffer(STATX_BUF_LEN)
    flags = AT_STATX_FORCE_SYNC | (AT_EMPTY_PATH if path is None else 0)
    if _libc.statx(fd, (path or "").encode(), flags, STATX_SIZE, buf) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e), path)
    return struct.unpack_from("<Q", buf.raw, STATX_SIZE_OFF)[0]


def take_read_lease(path, timeout=2.0):
    """An fd of `path` holding a read lease (fcntl F_SETLEASE): whoever
    opens the file for writing blocks until the lease is dropped
    (drop_lease()) or lease-break-time (45 s) passes."""
    import fcntl
    fd = os.open(path, os.O_RDONLY)
    end = time.monotonic() + timeout
    while True:
        try:
            fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
            return fd
        except OSError as e:
            # EAGAIN while a writer still has it open (the daemon's
            # release after close() is asynchronous)
            if e.errno != errno.EAGAIN or time.monotonic() > end:
                os.close(fd)
                raise
            time.sleep(0.002)


def lease_broken(fd):
    import fcntl
    return fcntl.fcntl(fd, fcntl.F_GETLEASE) != fcntl.F_RDLCK


def drop_lease(fd):
    import fcntl
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    finally:
        os.close(fd)


def test_stat_while_packing_sees_the_size(make_mount):
    """A stat of a closed file that the packer switches over meanwhile
    (container truncated, reference set) shows the file's size, never 0,
    and a read right after gets the whole file.

    Thousands of files are written while threads stat (and some read) the
    files just past the last one switched: the packer switches a batch in
    the order the files were closed.  That race is narrow (some 20 us a
    file), so a few files are also made to hold the packer: a read lease
    on the backing object blocks the packer's open for writing, with the
    file's inode lock held, until the test drops it; meanwhile every
    thread stats that file through an O_PATH fd (a GETATTR; a LOOKUP's
    answer would be replaced by the GETATTR after it)."""
    skip_under("nopack", reason=PACKS)
    m = make_mount()
    n, size = 2000, 1000
    held_at = (250, 750, 1250, 1750)
    os.mkdir(m.path("d"))
    names = ["d/f%04d" % k for k in range(n)]
    files = {k: text(size, 5000 + i) for i, k in enumerate(names)}
    stop = threading.Event()
    errors = []
    bad = []  # (name, size the stat showed, bytes read right after)
    counts = {"stats": 0, "reads": 0, "held": 0, "held_stats": 0}
    lock = threading.Lock()
    written = [0]  # files closed so far
    front = [0]  # about the next file the packer switches
    leases = {}  # index -> fd with a read lease on the backing object
    pfds = {}  # index -> O_PATH fd in the mount
    focus = [None]  # index of the file the packer is held at

    def switched(k):
        try:
            return os.stat(m.bpath(names[k])).st_size <= STUB_LEN
        except FileNotFoundError:
            return False

    def next_front():
        """Past the last switched file among the next few (one the
        packer skipped, because a reader had it open, stays behind)."""
        f = front[0]
        while True:
            last = max((k for k in range(f, min(f + 8, written[0]))
                        if switched(k)), default=None)
            if last is None:
                break
            f = last + 1
        front[0] = max(front[0], f)
        return f

    def stat_loop(seed, read_after):
        r = random.Random(seed)
        while not stop.is_set():
            held = focus[0]
            if held is not None:
                k = names[held]
                with lock:
                    counts["held_stats"] += 1
                got = statx_size(None, pfds[held])
            else:
                f = next_front()
                if f >= written[0]:
                    time.sleep(0.001)
                    continue
                k = names[min(f + r.randrange(4), written[0] - 1)]
                got = statx_size(m.path(k))
            data = None
            if got != size or read_after:
                data = read_file(m.path(k))
                if got != size or data != files[k]:
                    bad.append((k, got, len(data)))
            with lock:
                counts["stats"] += 1
                counts["reads"] += data is not None

    def holder():
        """Lets the packer go on from a held file once the threads are
        waiting on it too."""
        while not stop.is_set():
            broken = [k for k, fd in list(leases.items())
                      if lease_broken(fd)]
            if not broken:
                time.sleep(0.001)
                continue
            k = broken[0]
            with lock:
                before = counts["held_stats"]
            focus[0] = k
            wait_for(lambda: counts["held_stats"] >= before + 6 or
                     stop.is_set(), 1.0, step=0.002)
            time.sleep(0.02)
            focus[0] = None
            drop_lease(leases.pop(k))
            with lock:
                counts["held"] += 1

    def guard(fn, *a):
        try:
            fn(*a)
        except BaseException:  # noqa: BLE001 - reported below
            import traceback
            errors.append(traceback.format_exc())
            stop.set()

    # a lease break signals the holder: SIGIO, which would kill pytest
    old_sigio = signal.signal(signal.SIGIO, signal.SIG_IGN)
    ts = [threading.Thread(target=guard, args=(stat_loop, 9000 + t, t % 2))
          for t in range(6)]
    ts.append(threading.Thread(target=guard, args=(holder,)))
    for t in ts:
        t.start()
    t0 = time.monotonic()
    try:
        for i, k in enumerate(names):
            write_file(m.path(k), files[k])
            if i in held_at:
                pfds[i] = os.open(m.path(k), os.O_PATH)
                leases[i] = take_read_lease(m.bpath(k))
            written[0] = i + 1
        t1 = time.monotonic()
        # all but a few (a file a reader keeps busy may be left behind)
        done = wait_for(lambda: (not leases and sum(
            switched(k) for k in range(n)) >= n - 10) or stop.is_set(),
            PACK_WAIT, step=0.05)
    finally:
        stop.set()
        for t in ts:
            t.join(30)
        for fd in leases.values():
            drop_lease(fd)
        for fd in pfds.values():
            os.close(fd)
        signal.signal(signal.SIGIO, old_sigio)
    t2 = time.monotonic()
    assert not any(t.is_alive() for t in ts), "threads hung"
    assert not errors, "\n".join(errors)
    npacked = sum(packed(m.bpath(k)) for k in names)
    print("stat race: %d files written in %.1f s, %d packed by %.1f s; %r; "
          "%d bad in %d files" % (n, t1 - t0, npacked, t2 - t0, counts,
                                   len(bad), len({b[0] for b in bad})))
    assert not bad, "%d stats (of %d) showed a size other than %d, or the " \
        "read right after got other bytes: (file, size, bytes read) %s" % (
            len(bad), counts["stats"], size, bad[:10])
    assert done and npacked >= 0.9 * n, \
        "only %d of %d files packed: the race was not run" % (npacked, n)
    assert counts["held"] == len(held_at), \
        "the packer was held at %d files of %d: the race was not run" % (
            counts["held"], len(held_at))
    assert counts["stats"] >= 1000 and counts["reads"] >= 300, counts
    assert m.proc.poll() is None
    check_files(m, {k: files[k] for k in names[::10]}, "settled: ")


# ---- bad references and packs ----------------------------------------------

PACK_ID_MAX = 0xFFFFFF  # docs/FORMAT.md 13.1


def patch_ref(m, name, **fields):
    """Rewrites fields of the reference of the packed file `name` in
    BACKING (the daemon stopped): keys of ref_of()."""
    r = ref_of(m.bpath(name))
    r.update(fields)
    os.setxattr(m.bpath(name), XATTR,
                REF.pack(b"SQPK", 1, r["pack"], r["len"], r["off"],
                         r["size"], r["sum"]))


def test_pack_id_out_of_bounds(make_mount):
    """A pack id past 0xFFFFFF, in a reference or in a pack's name, is
    damage: that file reads EIO and fsck names it; nothing crashes, and
    packing goes on in the packs of sane ids."""
    skip_under("nopack", reason=PACKS)
    m = make_mount()
    files = {"f%02d" % i: text(400 + 50 * i, 1400 + i) for i in range(10)}
    refs = write_packed(m, files)
    assert {r["pack"] for r in refs.values()} == {1}
    big = text(100000, 1499)
    write_file(m.path("big"), big)
    m.stop()
    victim = "f04"
    patch_ref(m, victim, pack=0xFFFFFFF8)
    others = {k: v for k, v in files.items() if k != victim}
    all_names = list(files) + ["big"]
    fsck_names(m, [victim], all_names)

    m.start()
    assert victim in os.listdir(m.mnt)
    assert_eio(m.path(victim))
    assert_eio(m.path(victim))  # again: the error is not cached away
    assert m.proc.poll() is None, "daemon died on pack id 0xfffffff8"
    check_files(m, others)
    assert read_file(m.path("big")) == big
    m.stop()

    # A pack named by an id out of bounds (empty, as a crash would leave
    # it) is no pack: not the newest, not one to append to.
    write_file(pack_path(m, 0xFFFFFFF9), b"")
    fsck_names(m, [victim], all_names)
    m.start()
    assert_eio(m.path(victim))
    check_files(m, others)
    write_file(m.path("new"), b"a new small file\n")
    wait_packed(m, ["new"], packed=packed)
    assert 1 <= ref_of(m.bpath("new"))["pack"] <= PACK_ID_MAX
    assert read_file(m.path("new")) == b"a new small file\n"
    assert_eio(m.path(victim))
    assert m.proc.poll() is None
    m.stop()
    fsck_names(m, [victim], all_names + ["new"])


def test_damaged_newest_pack(make_mount):
    """A newest pack without its header (a crash while creating it) takes
    no images: new files go into a new pack, and deleting a packed file
    still frees its image."""
    skip_under("nopack", reason=PACKS)
    m = make_mount()
    files = {"f%02d" % i: text(500 + 60 * i, 1500 + i) for i in range(10)}
    refs = write_packed(m, files)
    assert {r["pack"] for r in refs.values()} == {1}
    m.stop()
    write_file(pack_path(m, 2), b"")
    m.start()
    check_files(m, files)
    os.unlink(m.path("f03"))
    assert_freed(m, [refs["f03"]], "deleted with a damaged newest pack")
    del files["f03"]
    new = {"n%d" % i: text(300 + 100 * i, 1550 + i) for i in range(5)}
    for k, data in new.items():
        write_file(m.path(k), data)
    wait_packed(m, list(new), packed=packed)
    ids = {ref_of(m.bpath(k))["pack"] for k in new}
    assert ids.isdisjoint({1, 2}) and max(ids) <= PACK_ID_MAX, \
        "new images went into packs %s, next to the packs 1 (good) and 2 " \
        "(damaged)" % sorted(ids)
    check_files(m, new)
    m.remount()
    check_files(m, dict(files, **new), "after remount: ")
    write_file(m.path("later"), b"packed after the remount\n")
    wait_packed(m, ["later"], packed=packed)
    m.stop()
    fsck_clean(m, "end")


def test_reference_size_disagrees_with_image(make_mount):
    """A reference whose size is not its image's logical size is damage:
    EIO, not the file cut (or padded) to the reference's size."""
    skip_under("nopack", reason=PACKS)
    m = make_mount()
    files = {"short": b"hello world\n", "other": text(900, 1601)}
    refs = write_packed(m, files)
    assert refs["short"]["size"] == 12
    m.stop()
    patch_ref(m, "short", size=5)
    fsck_names(m, ["short"], list(files))
    m.start()
    assert_eio(m.path("short"))
    check_files(m, {"other": files["other"]})
    assert m.proc.poll() is None
    m.stop()
    patch_ref(m, "short", size=4000)
    fsck_names(m, ["short"], list(files))
    m.start()
    assert_eio(m.path("short"))
    check_files(m, {"other": files["other"]})


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "writer":
        writer_main(sys.argv[2:])
    else:
        sys.exit("usage: test_pack.py writer MNT JOURNAL SEED DIR")
