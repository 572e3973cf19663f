#!/usr/bin/python3
"""An independent reader for squeezefs containers, written from
docs/FORMAT.md alone (not from meta/*.c), so that the document stays exact
and users can get their data out without squeezefs.

    read_container.py FILE            logical content to stdout
    read_container.py --check FILE... verify every block, report damage
    read_container.py --info FILE     JSON: header, size records, per block
                                      slot states and the current record

FILE is a regular file in a backing directory.  A packed one (section 13:
a 1-byte stub, or empty, with the xattr trusted.squeezefs.packed) is read
from its pack in
BACKING/.squeezefs/packs/; BACKING is --backing DIR, else the nearest
parent directory holding .squeezefs/packs/, else .squeezefs/.  Only root
sees trusted.* xattrs: run as anyone else, a packed file reads as damaged
(a stub) or empty (packed by version 3).

Exit status: 0 fine, 1 damage found, 2 usage or I/O error.  Importable:
Container(path).read_all(), .check(), .info(); Container.from_image(bytes)
for a container image held in memory."""

import argparse
import errno
import json
import os
import stat
import struct
import sys
import zlib

import brotli
import lz4.block
import msgpack
import xxhash
import zstandard

# FORMAT.md section 3
MAGIC = b"\x89SQZ\r\n\x1a\n"
FMT_VERSION_MIN = 1
FMT_VERSION = 4
HDR_SIZE = 128
SHIFT_MIN, SHIFT_MAX = 12, 20
OFF_HEADER_SUM = 48
OFF_SIZE_A, OFF_SIZE_B = 56, 80
SIZE_REC_LEN = 24
# FORMAT.md sections 5 and 6
SLOT_PAD = 4096
REC_MAGIC = b"SQBK"
REC_PREFIX = 16
HDR_LEN_MAX = 256
CODEC_NONE, CODEC_LZ4, CODEC_ZSTD, CODEC_ZLIB, CODEC_BROTLI = 0, 1, 2, 3, 4
CODEC_ZERO = 255
CODEC_NAMES = {0: "none", 1: "lz4", 2: "zstd", 3: "zlib", 4: "brotli",
               255: "zero"}
KEYS = ("b", "g", "c", "l", "r", "s", "x")
U64_MAX = (1 << 64) - 1
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1

# FORMAT.md section 13
PACK_XATTR = "trusted.squeezefs.packed"
PACK_XATTR_USER = "user.squeezefs.packed"  # an unprivileged mount's
PACK_STUB_LEN = 1  # a packed file's backing file from format 4 on
PACK_REF_LEN = 40
PACK_REF_MAGIC = b"SQPK"
PACK_REF_VERSION = 1
PACK_MAGIC = b"SQZPACK\n"
PACK_HDR_LEN = 16
PACK_VERSION = 1
PACK_PAGE = 4096
PACK_ID_MAX = 0xFFFFFF
PACK_IMAGE_MAX = 3072
RESERVED_DIR = ".squeezefs"
PACK_DIR = "packs"

EMPTY, VALID, INVALID = "empty", "valid", "invalid"


class Damaged(Exception):
    """The container, or one block of it, is damaged (-EBADMSG / EIO)."""


def xxh3(data):
    return xxhash.xxh3_64(data).intdigest()


def slot_offset(shift, i, k):
    return HDR_SIZE + (2 * i + k) * ((1 << shift) + SLOT_PAD)


def _is_uint(v):
    # msgpack bools and floats are not integers, whatever Python thinks.
    return type(v) is int


def _known_key(kraw):
    """The known key that the msgpack bytes `kraw` of a map key encode, or
    None: a 1-byte str in any str encoding (fixstr, str 8/16/32)."""
    for enc in (b"\xa1", b"\xd9\x01", b"\xda\x00\x01",
                b"\xdb\x00\x00\x00\x01"):
        if len(kraw) == len(enc) + 1 and kraw.startswith(enc):
            k = chr(kraw[-1])
            return k if k in KEYS else None
    return None


def parse_record_header(raw, bs, block):
    """Decodes and validates the msgpack header of a record (6.2).  Returns
    the dict of the seven known keys, or raises ValueError."""
    # Unknown keys and their values are skipped, never built: they may be
    # of any type (maps as keys, ext types of any length), and skipping
    # still checks that they are well-formed.
    up = msgpack.Unpacker(raw=False, strict_map_key=False,
                          unicode_errors="surrogateescape")
    up.feed(raw)
    h = {}
    try:
        try:
            n = up.read_map_header()
        except ValueError:
            raise ValueError("header is not a msgpack map")
        for _ in range(n):
            start = up.tell()
            up.skip()
            k = _known_key(raw[start:up.tell()])
            if k is None:
                up.skip()
                continue
            if k in h:
                raise ValueError("key %r twice" % k)
            h[k] = up.unpack()
    except ValueError:
        raise
    except Exception as e:  # OutOfData, FormatError, StackError...
        raise ValueError("msgpack: %s" % (e.__class__.__name__,))
    if up.tell() != len(raw):
        raise ValueError("%d bytes after the map" % (len(raw) - up.tell()))
    for k in KEYS:
        if k not in h:
            raise ValueError("key %r missing" % k)
    for k in ("b", "g", "c", "r", "s", "x"):
        v = h[k]
        if not _is_uint(v) or v < 0 or v > U64_MAX:
            raise ValueError("%r is not a uint: %r" % (k, v))
    lv = h["l"]
    if not _is_uint(lv) or lv < INT32_MIN or lv > INT32_MAX:
        raise ValueError("'l' out of range: %r" % (lv,))
    if h["b"] != block:
        raise ValueError("block %d != %d" % (h["b"], block))
    if h["g"] < 1:
        raise ValueError("generation 0")
    if h["c"] > 255:
        raise ValueError("codec %d > 255" % h["c"])
    if not 1 <= h["r"] <= bs:
        raise ValueError("raw length %d outside 1..%d" % (h["r"], bs))
    if h["c"] == CODEC_ZERO:
        if h["s"] != 0:
            raise ValueError("zero record with stored length %d" % h["s"])
    else:
        if not 1 <= h["s"] <= bs:
            raise ValueError("stored length %d outside 1..%d" % (h["s"], bs))
        if h["c"] == CODEC_NONE and h["s"] != h["r"]:
            raise ValueError("codec none with s %d != r %d"
                             % (h["s"], h["r"]))
    return h


# Input is fed to the stream decoders in small pieces so that a hostile
# payload cannot expand far past r before we notice.
FEED = 256


def _zstd(payload, rawlen):
    """One or more zstd frames (skippable ones included), one after the
    other, as ZSTD_decompress() takes them."""
    out = bytearray()
    data = payload
    while data:
        d = zstandard.ZstdDecompressor().decompressobj()
        pos = 0
        while not d.eof and pos < len(data):
            out += d.decompress(data[pos:pos + FEED])
            pos += FEED
            if len(out) > rawlen:
                return out
        if not d.eof:
            raise Damaged("zstd: frame cut short")
        data = d.unused_data + data[pos:]
    return out


def _brotli(payload, rawlen):
    d = brotli.Decompressor()
    out = bytearray()
    for pos in range(0, len(payload), FEED):
        if d.is_finished():
            raise Damaged("brotli: bytes after the end of the stream")
        out += d.process(payload[pos:pos + FEED])
        if len(out) > rawlen:
            return out
    if not d.is_finished():
        raise Damaged("brotli: stream cut short")
    return out


def decompress(codec, payload, rawlen):
    """Returns exactly `rawlen` bytes or raises Damaged (6.3)."""
    try:
        if codec == CODEC_NONE:
            out = payload
        elif codec == CODEC_LZ4:
            out = lz4.block.decompress(payload, uncompressed_size=rawlen)
        elif codec == CODEC_ZSTD:
            out = _zstd(payload, rawlen)
        elif codec == CODEC_ZLIB:
            d = zlib.decompressobj()
            out = d.decompress(payload, rawlen + 1)
            if not d.eof or d.unused_data or d.unconsumed_tail:
                raise Damaged("zlib: not exactly one complete stream")
        elif codec == CODEC_BROTLI:
            out = _brotli(payload, rawlen)
        else:
            raise Damaged("unknown codec %d" % codec)
    except Damaged:
        raise
    except Exception as e:
        raise Damaged("%s: %s" % (CODEC_NAMES[codec], e))
    if len(out) != rawlen:
        raise Damaged("%s: decompressed to %d bytes, want %d"
                      % (CODEC_NAMES[codec], len(out), rawlen))
    return bytes(out)


def parse_pack_ref(raw):
    """The reference (a dict) that the xattr value `raw` holds, or raises
    Damaged (13.1)."""
    if len(raw) != PACK_REF_LEN:
        raise Damaged("pack reference of %d bytes, not %d"
                      % (len(raw), PACK_REF_LEN))
    magic, version, pack, ln, off, size, s = struct.unpack("<4sIIIQQQ", raw)
    if magic != PACK_REF_MAGIC:
        raise Damaged("bad pack reference magic %s" % magic.hex())
    if version != PACK_REF_VERSION:
        raise Damaged("pack reference version %d" % version)
    if pack == 0 or pack > PACK_ID_MAX:
        raise Damaged("pack id %d outside 1..%d" % (pack, PACK_ID_MAX))
    if not 1 <= ln <= PACK_IMAGE_MAX:
        raise Damaged("image length %d outside 1..%d" % (ln, PACK_IMAGE_MAX))
    if off < PACK_HDR_LEN:
        raise Damaged("image offset %d inside the pack header" % off)
    if off // PACK_PAGE != (off + ln - 1) // PACK_PAGE:
        raise Damaged("image [%d, %d) crosses a %d-byte page"
                      % (off, off + ln, PACK_PAGE))
    return {"pack": pack, "len": ln, "off": off, "size": size, "sum": s}


def pack_path(backing, pack):
    return os.path.join(backing, RESERVED_DIR, PACK_DIR, "%08x.sqp" % pack)


def find_backing(path):
    """BACKING for the file at `path`: the nearest parent directory holding
    .squeezefs/packs/, else the nearest holding .squeezefs/.  (.squeezefs
    is reserved at the top of BACKING only, so a user directory of that
    name may sit lower down; the packs/ test skips most such.)"""
    found = None
    d = os.path.dirname(os.path.realpath(path))
    while True:
        res = os.path.join(d, RESERVED_DIR)
        if os.path.isdir(os.path.join(res, PACK_DIR)):
            return d
        if found is None and os.path.isdir(res):
            found = d
        up = os.path.dirname(d)
        if up == d:
            break
        d = up
    if found is None:
        raise OSError(errno.ENOENT, "packed file, but no %s/ in any parent "
                      "directory (give --backing)" % RESERVED_DIR, path)
    return found


def read_packed(ref, backing):
    """The image that `ref` points to in BACKING's packs, checked against
    the pack header and the reference's sum (13.2, 13.3); raises Damaged."""
    pp = pack_path(backing, ref["pack"])
    try:
        fd = os.open(pp, os.O_RDONLY)
    except FileNotFoundError:
        raise Damaged("pack %s missing" % pp)
    try:
        hdr = _pread_fd(fd, PACK_HDR_LEN, 0)
        image = _pread_fd(fd, ref["len"], ref["off"])
    finally:
        os.close(fd)
    if len(hdr) != PACK_HDR_LEN:
        raise Damaged("pack %s: %d-byte header" % (pp, len(hdr)))
    magic, version, pid = struct.unpack("<8sII", hdr)
    if magic != PACK_MAGIC:
        raise Damaged("pack %s: bad magic %s" % (pp, magic.hex()))
    if version != PACK_VERSION:
        raise Damaged("pack %s: version %d" % (pp, version))
    if pid != ref["pack"]:
        raise Damaged("pack %s: header of pack %d" % (pp, pid))
    if len(image) != ref["len"]:
        raise Damaged("pack %s: image [%d, %d) past the end"
                      % (pp, ref["off"], ref["off"] + ref["len"]))
    got = xxh3(image)
    if got != ref["sum"]:
        raise Damaged("pack %s: image at %d: checksum 0x%016x != 0x%016x"
                      % (pp, ref["off"], got, ref["sum"]))
    return image


def _pread_fd(fd, n, off):
    out = b""
    while len(out) < n:
        chunk = os.pread(fd, n - len(out), off + len(out))
        if not chunk:
            break
        out += chunk
    return out


class _FileSource:
    """Container bytes in a file."""

    def __init__(self, fd):
        self.fd = fd
        self.length = os.fstat(fd).st_size

    def pread(self, n, off):
        return _pread_fd(self.fd, n, off)

    def next_data(self, off):
        """First offset >= off that may hold data, or None: only holes
        from off to the end."""
        try:
            return os.lseek(self.fd, off, os.SEEK_DATA)
        except OSError:
            return None  # ENXIO

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _BytesSource:
    """Container bytes in memory (a packed image): no holes."""

    def __init__(self, data):
        self.data = bytes(data)
        self.length = len(self.data)

    def pread(self, n, off):
        return self.data[off:off + n]

    def next_data(self, off):
        return off if off < self.length else None

    def close(self):
        pass


class Container:
    """One container, opened read-only: the file at `path`, or, when that is
    a packed file (13), its image in the pack (BACKING found from `path`
    unless `backing` is given).  Raises Damaged from the constructor when
    the file header or the size records are damaged, or the packed
    reference, pack or image is.  For a packed file, `packed` is the
    reference (a dict) and offsets in info() are within the image."""

    def __init__(self, path, backing=None, _image=None):
        self.path = path
        self.packed = None
        if _image is not None:
            self.src = _BytesSource(_image)
        else:
            fd = os.open(path, os.O_RDONLY)
            self.src = _FileSource(fd)
            try:
                self._unpack(backing)
            except BaseException:
                self.src.close()
                raise
        try:
            self._open()
        except BaseException:
            self.src.close()
            raise

    @classmethod
    def from_image(cls, data, name="<image>"):
        """A container whose bytes are `data` (an unpacked container file's
        whole content, or a packed image)."""
        return cls(name, _image=data)

    def _unpack(self, backing):
        """Switches to the pack image when the file is packed (13.3)."""
        if self.src.length > PACK_STUB_LEN or \
                not stat.S_ISREG(os.fstat(self.src.fd).st_mode):
            return  # rule 1: a container, any packed xattr on it stale
        raw = None
        for name in (PACK_XATTR, PACK_XATTR_USER):
            try:
                raw = os.getxattr(self.src.fd, name)
                break
            except OSError as e:
                if e.errno not in (errno.ENODATA, errno.ENOTSUP,
                                   errno.EOPNOTSUPP, errno.EPERM):
                    raise
        if raw is None:
            if self.src.length == 0:
                return  # rule 2: an empty file
            # rule 3: a stub whose reference is gone
            raise Damaged("packed file without its pack reference "
                          "(copied without xattrs?)")
        ref = parse_pack_ref(raw)  # rule 3 from here on
        if backing is None:
            backing = find_backing(self.path)
        image = read_packed(ref, backing)
        self.src.close()
        self.src = _BytesSource(image)
        self.packed = dict(ref, pack_path=pack_path(backing, ref["pack"]))

    @property
    def fd(self):
        return getattr(self.src, "fd", -1)

    def close(self):
        self.src.close()

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def _pread(self, n, off):
        return self.src.pread(n, off)

    def _open(self):
        self.flen = self.src.length
        self.size_records = [None, None]
        if self.flen == 0:
            # section 2: an empty, valid container with no blocks.
            self.version = None
            self.shift = 17
            self.bs = 1 << self.shift
            self.size = 0
            self.cur_size_rec = None
            return
        if self.flen < HDR_SIZE:
            raise Damaged("file of %d bytes, shorter than the %d-byte header"
                          % (self.flen, HDR_SIZE))
        h = self._pread(HDR_SIZE, 0)
        if len(h) != HDR_SIZE:
            raise Damaged("short read of the header")
        if h[:8] != MAGIC:
            raise Damaged("bad magic %s" % h[:8].hex())
        want = struct.unpack_from("<Q", h, OFF_HEADER_SUM)[0]
        got = xxh3(h[:OFF_HEADER_SUM])
        if want != got:
            raise Damaged("header checksum 0x%016x != 0x%016x" % (got, want))
        version, hsize, shift, flags = struct.unpack_from("<HHBB", h, 8)
        if not FMT_VERSION_MIN <= version <= FMT_VERSION:
            raise Damaged("format version %d" % version)
        if hsize != HDR_SIZE:
            raise Damaged("header size %d" % hsize)
        if not SHIFT_MIN <= shift <= SHIFT_MAX:
            raise Damaged("block shift %d" % shift)
        if flags != 0:
            raise Damaged("flags 0x%02x" % flags)
        self.version = version
        self.shift = shift
        self.bs = 1 << shift
        # section 4: the valid size record with the higher seq.
        cur = None
        for n, off in enumerate((OFF_SIZE_A, OFF_SIZE_B)):
            seq, size, s = struct.unpack_from("<QQQ", h, off)
            ok = s == xxh3(h[off:off + 16]) and seq >= 1
            self.size_records[n] = {"seq": seq, "size": size, "valid": ok}
            if not ok:
                continue
            if cur is not None and cur["seq"] == seq:
                raise Damaged("both size records have seq %d" % seq)
            if cur is None or seq > cur["seq"]:
                cur = self.size_records[n]
        if cur is None:
            raise Damaged("no valid size record")
        slot_size = self.bs + SLOT_PAD
        if (cur["size"] >> shift) >= ((1 << 63) - 1 - HDR_SIZE) // \
                (2 * slot_size):
            raise Damaged("size %d too large" % cur["size"])
        self.cur_size_rec = cur
        self.size = cur["size"]
        if self.packed is not None and self.size != self.packed["size"]:
            raise Damaged("packed image of size %d, reference says %d"
                          % (self.size, self.packed["size"]))

    @property
    def nblocks(self):
        return (self.size + self.bs - 1) >> self.shift

    def _classify(self, i, k):
        """(state, header dict or None, reason) of slot k of block i (7.2)."""
        off = slot_offset(self.shift, i, k)
        if off >= self.flen:
            return EMPTY, None, None
        # A slot whose first page is a hole reads as zeros: skip the read.
        d = self.src.next_data(off)
        if d is None or d >= off + REC_PREFIX:
            return EMPTY, None, None
        raw = self._pread(REC_PREFIX + HDR_LEN_MAX, off)
        prefix = raw[:REC_PREFIX]
        if prefix == bytes(len(prefix)):
            return EMPTY, None, None
        if len(prefix) < REC_PREFIX:
            return INVALID, None, "truncated prefix"
        if prefix[:4] != REC_MAGIC:
            return INVALID, None, "bad record magic %s" % prefix[:4].hex()
        hdr_len, zero, hsum = struct.unpack_from("<HHQ", prefix, 4)
        if not 1 <= hdr_len <= HDR_LEN_MAX:
            return INVALID, None, "hdr_len %d" % hdr_len
        if zero != 0:
            return INVALID, None, "zero field %d" % zero
        hraw = raw[REC_PREFIX:REC_PREFIX + hdr_len]
        if len(hraw) != hdr_len:
            return INVALID, None, "truncated header"
        got = xxh3(hraw)
        if got != hsum:
            return INVALID, None, "header checksum 0x%016x != 0x%016x" % (
                got, hsum)
        try:
            hdr = parse_record_header(hraw, self.bs, i)
        except ValueError as e:
            return INVALID, None, str(e)
        hdr["hdr_len"] = hdr_len
        hdr["payload_offset"] = off + REC_PREFIX + hdr_len
        return VALID, hdr, None

    def current(self, i):
        """('hole'|'record', slot, header) of block i, or raises Damaged
        (7.3)."""
        st = [self._classify(i, k) for k in (0, 1)]
        valid = [k for k in (0, 1) if st[k][0] == VALID]
        if len(valid) == 2:
            g0, g1 = st[0][1]["g"], st[1][1]["g"]
            if g0 == g1:
                raise Damaged("block %d: both slots hold generation %d"
                              % (i, g0))
            k = 0 if g0 > g1 else 1
            return "record", k, st[k][1]
        if len(valid) == 1:
            k = valid[0]
            return "record", k, st[k][1]
        if st[0][0] == EMPTY and st[1][0] == EMPTY:
            return "hole", None, None
        why = "; ".join("slot %d: %s" % (k, st[k][2]) for k in (0, 1)
                        if st[k][0] == INVALID)
        raise Damaged("block %d: no valid record (%s)" % (i, why))

    def read_block(self, i):
        """The bs bytes of block i (7), or raises Damaged."""
        if i >= self.nblocks:
            return bytes(self.bs)
        kind, k, h = self.current(i)
        if kind == "hole":
            return bytes(self.bs)
        if h["c"] == CODEC_ZERO:
            return bytes(self.bs)
        payload = self._pread(h["s"], h["payload_offset"])
        if len(payload) != h["s"]:
            raise Damaged("block %d: payload truncated (%d of %d bytes)"
                          % (i, len(payload), h["s"]))
        got = xxh3(payload)
        if got != h["x"]:
            raise Damaged("block %d: checksum 0x%016x != 0x%016x"
                          % (i, got, h["x"]))
        if h["c"] not in CODEC_NAMES:
            raise Damaged("block %d: unknown codec %d" % (i, h["c"]))
        try:
            raw = decompress(h["c"], payload, h["r"])
        except Damaged as e:
            raise Damaged("block %d: %s" % (i, e))
        return raw + bytes(self.bs - h["r"])

    def iter_content(self):
        """Yields the logical content block by block."""
        left = self.size
        for i in range(self.nblocks):
            b = self.read_block(i)
            yield b[:left] if left < self.bs else b
            left -= self.bs

    def read_all(self):
        return b"".join(self.iter_content())

    def _next_present(self, i):
        """First block >= i whose slots may hold data: the blocks between
        are holes (SEEK_DATA, so huge sparse files are quick)."""
        off = slot_offset(self.shift, i, 0)
        if off >= self.flen:
            return self.nblocks
        d = self.src.next_data(off)
        if d is None:
            return self.nblocks  # nothing but a hole to the end
        j = (d - HDR_SIZE) // (2 * (self.bs + SLOT_PAD))
        return min(max(i, j), self.nblocks)

    def check(self):
        """List of problems ([] when clean); every block that is not a
        hole is read."""
        problems = []
        i = self._next_present(0)
        while i < self.nblocks:
            try:
                self.read_block(i)
            except Damaged as e:
                problems.append(str(e))
            i = self._next_present(i + 1)
        return problems

    def info(self):
        blocks = []
        for i in range(self.nblocks):
            b = {"block": i, "slots": []}
            for k in (0, 1):
                state, h, why = self._classify(i, k)
                s = {"state": state}
                if h:
                    s.update({key: h[key] for key in KEYS})
                if why:
                    s["why"] = why
                b["slots"].append(s)
            try:
                kind, k, h = self.current(i)
                b["current"] = k
                b["kind"] = kind if kind == "hole" else (
                    "zero" if h["c"] == CODEC_ZERO else "data")
            except Damaged as e:
                b["damaged"] = str(e)
            blocks.append(b)
        out = {"path": self.path, "file_length": self.flen,
               "version": self.version, "block_shift": self.shift,
               "block_size": self.bs, "size": self.size,
               "size_records": self.size_records, "blocks": blocks}
        if self.packed is not None:
            out["packed"] = self.packed
        return out


def read_file(path, backing=None):
    """Logical content of the file at `path` (a container, or packed);
    raises Damaged."""
    with Container(path, backing) as c:
        return c.read_all()


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Read a squeezefs container or packed file "
        "(docs/FORMAT.md, versions %d..%d)." % (FMT_VERSION_MIN, FMT_VERSION))
    ap.add_argument("--check", action="store_true",
                    help="verify every block of every FILE; print problems")
    ap.add_argument("--info", action="store_true",
                    help="print the header, size records and slots as JSON")
    ap.add_argument("--backing", metavar="DIR",
                    help="backing directory holding the packs of packed "
                    "FILEs (default: the nearest parent with .squeezefs/)")
    ap.add_argument("files", nargs="+", metavar="FILE")
    a = ap.parse_args(argv)
    if not a.check and len(a.files) != 1:
        ap.error("one FILE, unless --check")
    status = 0
    for path in a.files:
        try:
            with Container(path, a.backing) as c:
                if a.info:
                    json.dump(c.info(), sys.stdout, indent=1)
                    sys.stdout.write("\n")
                elif a.check:
                    for p in c.check():
                        print("%s: %s" % (path, p), file=sys.stderr)
                        status = 1
                else:
                    out = sys.stdout.buffer
                    for chunk in c.iter_content():
                        out.write(chunk)
                    out.flush()
        except Damaged as e:
            print("%s: damaged: %s" % (path, e), file=sys.stderr)
            status = 1
        except OSError as e:
            print("%s: %s" % (path, e.strerror or e), file=sys.stderr)
            return 2
    return status


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:
        sys.exit(1)
