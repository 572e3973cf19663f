#!/usr/bin/python3
"""An independent reader for squeezefs containers, written from
docs/FORMAT.md alone (not from meta/*.c), so that the document stays exact
and users can get their data out without squeezefs.

    read_container.py FILE            logical content to stdout
    read_container.py --check FILE... verify every block, report damage
    read_container.py --info FILE     JSON: header, size records, per block
                                      slot states and the current record
    read_container.py --what FILE...  what each FILE is (section 2.1):
                                      container, packed, empty, stub or
                                      plain

FILE is a regular file in a backing directory.  A packed one (section 13:
a 1-byte stub, or empty, with the xattr trusted.squeezefs.packed) is read
from its pack in
BACKING/.squeezefs/packs/; BACKING is --backing DIR, else the nearest
parent directory holding .squeezefs/packs/, else .squeezefs/.  Only root
sees trusted.* xattrs: run as anyone else, a packed file reads as damaged
(a stub) or empty (packed by version 3).

Which files are containers depends on the volume (sections 2.1 and 12.1):
that of --backing DIR (its .squeezefs/volume, or, without one, LEGACY when
DIR/.squeezefs/ exists and no volume id), else that of the nearest parent
directory holding .squeezefs/volume.  A plain file (12.2) reads as its own
bytes.  When no volume is known (no --backing and no volume file above
FILE), every file is read by the rules of version 4, as in a LEGACY
volume: a file of 2 bytes or more is a container.  --container reads FILE
as a container whatever its volume says (a container of another BACKING,
or one whose volume ids are both damaged).

Exit status: 0 fine, 1 damage found, 2 usage or I/O error.  Importable:
Container(path).read_all(), .check(), .info(); Container.from_image(bytes)
for a container image held in memory; read_file(path) for the content of
any regular backing file; classify(path, backing) for what it is;
Volume.load(backing) for a BACKING's volume."""

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
FMT_VERSION = 5
HDR_SIZE = 128
SHIFT_MIN, SHIFT_MAX = 12, 20
OFF_HEADER_SUM = 48
OFF_SIZE_A, OFF_SIZE_B = 56, 80
SIZE_REC_LEN = 24
OFF_VOLUME_ID, OFF_VOLUME_ID2 = 104, 112  # version 5
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

# FORMAT.md section 12.1
VOLUME_FILE = "volume"
VOLUME_MAGIC = b"\x89SQV\r\n\x1a\n"
VOLUME_LEN = 32
VOLUME_VERSION = 1
VOLUME_OFF_SUM = 24
VOLUME_LEGACY = 0x0001

# FORMAT.md section 2.1: what a regular backing file is.
KIND_EMPTY = "empty"          # length 0, no pack reference
KIND_PACKED = "packed"        # length 0 or 1 with a pack reference (13)
KIND_STUB = "stub"            # length 1 without one: lost it, damaged
KIND_CONTAINER = "container"  # a container (of this BACKING)
KIND_PLAIN = "plain"          # a plain file: its bytes as they are (12.2)
KINDS = (KIND_EMPTY, KIND_PACKED, KIND_STUB, KIND_CONTAINER, KIND_PLAIN)

EMPTY, VALID, INVALID = "empty", "valid", "invalid"


class Damaged(Exception):
    """The container, or one block of it, is damaged (-EBADMSG / EIO)."""


class PlainFile(Exception):
    """The file is a plain file of its volume (2.1, 12.2), not a container:
    its content is its own bytes.  This is no damage."""

    def __init__(self, path, length):
        super().__init__("%s: a plain file of %d bytes, not a container"
                         % (path, length))
        self.path = path
        self.length = length


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


def volume_path(backing):
    return os.path.join(backing, RESERVED_DIR, VOLUME_FILE)


class Volume:
    """What a reader knows of a BACKING's volume (12.1): `legacy`, and
    `volume_id`, None when there is no volume file (nothing matches it).
    `path` is the volume file's, or None."""

    def __init__(self, legacy, volume_id=None, path=None):
        self.legacy = bool(legacy)
        self.volume_id = volume_id
        self.path = path

    def __repr__(self):
        return "Volume(legacy=%r, volume_id=%s, path=%r)" % (
            self.legacy, "None" if self.volume_id is None
            else "0x%016x" % self.volume_id, self.path)

    @classmethod
    def parse(cls, raw, path="<volume>"):
        """The volume that the bytes `raw` of a volume file hold; raises
        Damaged (the mount refuses to start)."""
        if len(raw) != VOLUME_LEN:
            raise Damaged("volume file %s: %d bytes, not %d"
                          % (path, len(raw), VOLUME_LEN))
        magic, version, flags, _reserved, vid, want = struct.unpack(
            "<8sHHIQQ", raw)
        if magic != VOLUME_MAGIC:
            raise Damaged("volume file %s: bad magic %s" % (path, magic.hex()))
        if version != VOLUME_VERSION:
            raise Damaged("volume file %s: version %d" % (path, version))
        got = xxh3(raw[:VOLUME_OFF_SUM])
        if got != want:
            raise Damaged("volume file %s: checksum 0x%016x != 0x%016x"
                          % (path, got, want))
        # The other flag bits and the reserved field are written as zero
        # and not looked at; an id of 0 matches nothing.
        return cls(flags & VOLUME_LEGACY, vid or None, path)

    @classmethod
    def load(cls, backing):
        """BACKING's volume: its volume file, or without one, LEGACY when
        BACKING/.squeezefs/ exists, and no id (12.1).  Raises Damaged when
        the volume file is damaged."""
        p = volume_path(backing)
        try:
            with open(p, "rb") as f:
                raw = f.read(VOLUME_LEN + 1)
        except FileNotFoundError:
            return cls(os.path.isdir(os.path.join(backing, RESERVED_DIR)))
        return cls.parse(raw, p)

    def owns(self, head):
        """Whether the file whose first bytes are `head` carries this
        volume's id at byte 104 or 112 (and is at least 128 bytes long)."""
        if self.volume_id is None or len(head) < HDR_SIZE:
            return False
        ids = struct.unpack_from("<QQ", head, OFF_VOLUME_ID)
        return self.volume_id in ids

    def as_dict(self):
        return {"path": self.path, "legacy": self.legacy,
                "volume_id": self.volume_id}


def find_volume(path):
    """The nearest parent directory of `path` holding .squeezefs/volume, or
    None.  (As with find_backing(), a user directory named .squeezefs
    below BACKING's top could hold such a file; that is the price of not
    being told --backing.)"""
    d = os.path.dirname(os.path.realpath(path))
    while True:
        if os.path.isfile(volume_path(d)):
            return d
        up = os.path.dirname(d)
        if up == d:
            return None
        d = up


def resolve_volume(path, backing=None, volume=None):
    """The volume that decides what the file at `path` is: `volume` when
    given (a Volume; False for none), else Volume.load(backing) when
    `backing` is given, else that of find_volume(path).  None: no volume
    is known, and files are read by the rules of version 4 (a LEGACY
    volume's).  Raises Damaged for a damaged volume file."""
    if volume is False:
        return None
    if volume is not None:
        return volume
    if backing is not None:
        return Volume.load(backing)
    found = find_volume(path)
    return Volume.load(found) if found is not None else None


def _pack_xattr(fd):
    """The value of the file's pack reference xattr, or None."""
    for name in (PACK_XATTR, PACK_XATTR_USER):
        try:
            return os.getxattr(fd, name)
        except OSError as e:
            if e.errno not in (errno.ENODATA, errno.ENOTSUP,
                               errno.EOPNOTSUPP, errno.EPERM):
                raise
    return None


def _kind_of_fd(fd, volume):
    """(kind, pack reference bytes or None) of the regular file open as
    `fd` in `volume` (None: read by the rules of version 4); 2.1."""
    length = os.fstat(fd).st_size
    if length <= PACK_STUB_LEN:
        raw = _pack_xattr(fd)
        if raw is not None:
            return KIND_PACKED, raw  # rule 1 of 2.1
        if length == 0:
            return KIND_EMPTY, None
        if volume is None or volume.legacy:
            return KIND_STUB, None
        if _pread_fd(fd, 1, 0) == b"\0":
            return KIND_STUB, None
        return KIND_PLAIN, None
    if volume is None or volume.legacy:
        return KIND_CONTAINER, None  # rule 3: any id, any version
    if length >= HDR_SIZE and volume.owns(_pread_fd(fd, HDR_SIZE, 0)):
        return KIND_CONTAINER, None
    return KIND_PLAIN, None


def classify(path, backing=None, volume=None):
    """What the regular backing file at `path` is (2.1): KIND_EMPTY,
    KIND_PACKED, KIND_STUB (a stub that lost its pack reference: damaged),
    KIND_CONTAINER or KIND_PLAIN.  The volume is found as by
    resolve_volume(); with none known, a file of 2 bytes or more is a
    container.  Only the length, the pack reference and the volume ids
    count: a container may still be damaged.  Raises Damaged for a
    damaged volume file, OSError for anything but a regular file."""
    vol = resolve_volume(path, backing, volume)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        return _kind_of_fd(fd, vol)[0]
    finally:
        os.close(fd)


def starts_with_magic(path):
    """Whether the file at `path` starts with the container magic: a plain
    file that does is a container of another BACKING, or one of this
    BACKING whose ids are both damaged (2.1, "The limit")."""
    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


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
    reference (a dict) and offsets in info() are within the image.

    Which files are containers depends on the volume (2.1): `volume` (a
    Volume, or False to read every file as version 4 did), else that of
    `backing`, else the one find_volume() finds above `path`, else none
    (version 4's rules).  A plain file raises PlainFile; a damaged volume
    file raises Damaged.  `kind` is KIND_CONTAINER, KIND_EMPTY or
    KIND_PACKED; `volume` the Volume used, or None."""

    def __init__(self, path, backing=None, _image=None, volume=None):
        self.path = path
        self.packed = None
        self.kind = KIND_CONTAINER
        self.volume = None
        if _image is not None:
            self.src = _BytesSource(_image)
        else:
            self.volume = resolve_volume(path, backing, volume)
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
        """Tells what the file is (2.1) and switches to the pack image when
        the file is packed (13.3)."""
        if not stat.S_ISREG(os.fstat(self.src.fd).st_mode):
            return  # read as a container: fails as one
        kind, raw = _kind_of_fd(self.src.fd, self.volume)
        self.kind = kind
        if kind == KIND_PLAIN:
            raise PlainFile(self.path, self.src.length)
        if kind == KIND_STUB:
            raise Damaged("packed file without its pack reference "
                          "(copied without xattrs?)")
        if kind != KIND_PACKED:
            return  # a container (any stale pack xattr ignored), or empty
        ref = parse_pack_ref(raw)  # rule 3 of 13.3 from here on
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
        self.volume_ids = None
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
        if version >= 5:
            # Section 3: looked at only to tell what the file is (2.1).
            self.volume_ids = list(struct.unpack_from("<QQ", h,
                                                      OFF_VOLUME_ID))
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
        out = {"path": self.path, "kind": self.kind,
               "file_length": self.flen,
               "version": self.version, "block_shift": self.shift,
               "block_size": self.bs, "size": self.size,
               "size_records": self.size_records, "blocks": blocks}
        if self.volume_ids is not None:
            out["volume_ids"] = self.volume_ids
        if self.volume is not None:
            out["volume"] = self.volume.as_dict()
        if self.packed is not None:
            out["packed"] = self.packed
        return out


def read_file(path, backing=None, volume=None):
    """Logical content of the regular backing file at `path`: a container,
    packed, or a plain file (its bytes); the volume as for Container.
    Raises Damaged."""
    try:
        with Container(path, backing, volume=volume) as c:
            return c.read_all()
    except PlainFile:
        with open(path, "rb") as f:
            return f.read()


def plain_info(path, volume):
    """--info of a plain file."""
    st = os.stat(path)
    return {"path": path, "kind": KIND_PLAIN, "file_length": st.st_size,
            "size": st.st_size, "container_magic": starts_with_magic(path),
            "volume": volume.as_dict() if volume is not None else None}


def main(argv=None):
    ap = argparse.ArgumentParser(
        description="Read a squeezefs container or packed file "
        "(docs/FORMAT.md, versions %d..%d)." % (FMT_VERSION_MIN, FMT_VERSION))
    ap.add_argument("--check", action="store_true",
                    help="verify every block of every FILE; print problems")
    ap.add_argument("--info", action="store_true",
                    help="print the header, size records and slots as JSON")
    ap.add_argument("--what", action="store_true",
                    help="print what each FILE is: container, packed, "
                    "empty, stub (lost its pack reference) or plain")
    ap.add_argument("--container", action="store_true",
                    help="read FILE as a container whatever its volume "
                    "says (version 4's rules)")
    ap.add_argument("--backing", metavar="DIR",
                    help="backing directory holding the packs of packed "
                    "FILEs and the volume file (default: the nearest "
                    "parent with .squeezefs/volume for the volume, with "
                    ".squeezefs/ for the packs)")
    ap.add_argument("files", nargs="+", metavar="FILE")
    a = ap.parse_args(argv)
    if not (a.check or a.what) and len(a.files) != 1:
        ap.error("one FILE, unless --check or --what")
    status = 0
    for path in a.files:
        try:
            vol = resolve_volume(path, a.backing,
                                 False if a.container else None)
            if a.what:
                kind = classify(path, volume=vol or False)
                if kind == KIND_PLAIN and starts_with_magic(path):
                    kind += " (starts with the container magic: a " \
                        "container of another backing directory?)"
                print("%s: %s" % (path, kind))
                continue
            try:
                c = Container(path, a.backing, volume=vol or False)
            except PlainFile:
                if a.info:
                    json.dump(plain_info(path, vol), sys.stdout, indent=1)
                    sys.stdout.write("\n")
                elif not a.check:  # nothing to check in a plain file
                    out = sys.stdout.buffer
                    with open(path, "rb") as f:
                        while True:
                            chunk = f.read(1 << 20)
                            if not chunk:
                                break
                            out.write(chunk)
                    out.flush()
                continue
            with c:
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
