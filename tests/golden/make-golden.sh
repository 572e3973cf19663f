#!/bin/bash
# tests/golden/make-golden.sh - writes tests/golden/vN/, a small backing
# directory written by the squeezefs that introduces container format N,
# and tests/golden/vN.json, the logical contents it must show forever
# (docs/FORMAT.md section 10; tests/integration/test_golden.py checks it).
#
#   tests/golden/make-golden.sh [-b SQUEEZEFS_BIN] N
#
# Run it ONLY when a new format version is released, with the binary of
# that release, and commit the result.  NEVER regenerate an existing
# version's directory: the point is that the bytes an old release wrote
# keep reading identically, so the old bytes must stay.  The script refuses
# to overwrite an existing vN.
#
# Git keeps file bytes, symlinks and the executable bit only: not holes
# (the containers are checked out dense, which changes nothing a reader
# sees), hard links (the two names are checked out as two equal files),
# modes, times or xattrs.  The manifest records only what survives git.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin="$root/build/squeezefs"
if [ "${1:-}" = -b ]; then
	bin=$2
	shift 2
fi
if [ $# -ne 1 ] || ! [[ $1 =~ ^[1-9][0-9]*$ ]]; then
	echo "usage: $0 [-b SQUEEZEFS_BIN] FORMAT_VERSION" >&2
	exit 2
fi
ver=$1
out="$here/v$ver"
manifest="$here/v$ver.json"
if [ -e "$out" ] || [ -e "$manifest" ]; then
	echo "$0: $out or $manifest exists; golden directories of a released" \
		"format version are never regenerated" >&2
	exit 1
fi
if ! "$bin" --version | grep -q "container format $ver\b"; then
	echo "$0: $bin does not write container format $ver:" \
		"$("$bin" --version)" >&2
	exit 1
fi

tmp=$(mktemp -d)
backing="$tmp/backing"
mnt="$tmp/mnt"
mkdir -p "$backing" "$mnt"
pid=
cleanup() {
	if [ -n "$pid" ]; then
		fusermount3 -u "$mnt" 2>/dev/null || true
		wait "$pid" || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

# Mounts with the given -o options, runs "$@" in the mount, unmounts.
with_mount() {
	local opts=$1
	shift
	"$bin" -f -o "$opts" "$backing" "$mnt" &
	pid=$!
	for _ in $(seq 500); do
		mountpoint -q "$mnt" && break
		sleep 0.02
	done
	mountpoint -q "$mnt"
	(cd "$mnt" && "$@")
	fusermount3 -u "$mnt"
	wait "$pid"
	pid=
}

text=/usr/share/common-licenses/GPL-3	# 35 KiB of English, in every Debian

# From version 5 on, BACKING may hold plain files (docs/FORMAT.md 2.1):
# put there before the first mount, as someone moving in would, they stay
# plain while the mounts below are too short to convert them.
if [ "$ver" -ge 5 ]; then
	mkdir -p "$backing/plain"
	head -c 9000 "$text" > "$backing/plain/notes.txt"
	printf 'x' > "$backing/plain/one-x"
	head -c 60 "$text" > "$backing/plain/short"
	{ printf '\x89SQZ\r\n\x1a\n'; head -c 3000 "$text"; } \
		> "$backing/plain/looks-like-a-container"
fi

# Deterministic bytes: seeded, so a rerun for the same N is comparable.
pyrand() {
	/usr/bin/python3 -c "import random,sys; r=random.Random($1);
sys.stdout.buffer.write(r.randbytes($2))"
}

# 4 KiB blocks keep the checked-out (dense) containers small.
for c in none lz4 lz4:12 zstd zstd:19 zlib:9 brotli:11; do
	name=text-${c/:/-}
	with_mount "block_size=4K,codec=$c" \
		sh -c "head -c 14000 $text > $name"
done

write_misc() {
	: > empty
	printf 'a' > one
	mkdir -p dir/sub
	head -c 3000 "$text" > dir/sub/nested.txt
	ln -s text-zstd link-to-text
	ln -s dir/sub dir-link
	ln text-zstd hardlink-text-zstd
	# Sparse: holes at blocks 0, 2..5; data in blocks 1 and 6; 8 blocks.
	truncate -s $((8 * 4096 + 100)) sparse
	head -c 2000 "$text" | dd of=sparse bs=1 seek=$((4096 + 7)) \
		conv=notrunc status=none
	pyrand 1 500 | dd of=sparse bs=1 seek=$((6 * 4096)) \
		conv=notrunc status=none
	# A zero record: block 1 had data, then was overwritten with zeros.
	head -c 12288 "$text" > zeroed
	sync zeroed
	dd if=/dev/zero of=zeroed bs=4096 seek=1 count=1 conv=notrunc,fsync \
		status=none
	# Block 1 stored twice (generation 2, slot 1), block 2 three times
	# (generation 3, slot 0 again).
	head -c 12288 "$text" > rewritten
	sync rewritten
	printf 'second version' | dd of=rewritten bs=1 seek=4200 \
		conv=notrunc,fsync status=none
	printf 'second version' | dd of=rewritten bs=1 seek=8300 \
		conv=notrunc,fsync status=none
	printf 'third version' | dd of=rewritten bs=1 seek=8400 \
		conv=notrunc,fsync status=none
	# Truncated down into block 1, then up: the cut bytes read as zeros.
	pyrand 2 12000 > truncated
	sync truncated
	truncate -s 5000 truncated
	truncate -s 9000 truncated
	# Random data: stored raw by codec=auto (it does not compress).
	pyrand 3 6000 > random
}
with_mount "block_size=4K,codec=auto" write_misc

# Larger block sizes, one block each (a dense checkout of a second block
# would cost a whole slot of zeros).
with_mount "block_size=128K,codec=zstd" sh -c "head -c 20000 $text > bs128k"
with_mount "block_size=1M,codec=lz4" sh -c "head -c 5000 $text > bs1m"

# Small files of every codec: from version 3 on, their containers are
# packed (docs/FORMAT.md section 13) when the daemon can pack.
write_small() {
	mkdir -p small
	for n in 1 100 700 2500 3100; do
		head -c $n "$text" > small/text-$n
	done
	pyrand 4 900 > small/random-900
}
for c in none lz4 zstd:19 zlib:9 brotli:11; do
	with_mount "block_size=128K,codec=$c" sh -c \
		"mkdir -p small-${c/:/-} && cd small-${c/:/-} && \
		 head -c 1500 $text > text && printf 'tiny' > tiny"
done
with_mount "block_size=128K,codec=auto" write_small

rm -f "$backing/.squeezefs/lock"	# the mount lock, not part of the format

# The manifest: what the mount shows, read back through a fresh mount.
with_mount "ro" /usr/bin/python3 -c '
import hashlib, json, os, stat, sys
out = {}
for dirpath, dirs, files in os.walk("."):
    dirs.sort()
    for n in sorted(dirs + files):
        p = os.path.normpath(os.path.join(dirpath, n))
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            out[p] = {"type": "symlink", "target": os.readlink(p)}
        elif stat.S_ISDIR(st.st_mode):
            out[p] = {"type": "dir"}
        else:
            data = open(p, "rb").read()
            assert len(data) == st.st_size, p
            out[p] = {"type": "file", "size": st.st_size,
                      "sha256": hashlib.sha256(data).hexdigest()}
json.dump({"format_version": int(sys.argv[1]), "files": out},
          open(sys.argv[2], "w"), indent=1, sort_keys=True)
open(sys.argv[2], "a").write("\n")
' "$ver" "$tmp/manifest.json"

rm -f "$backing/.squeezefs/lock"
# Not part of the format: the statistics and conversions' scratch space.
rm -rf "$backing/.squeezefs/stats.db" "$backing/.squeezefs/stats.db-wal" \
	"$backing/.squeezefs/stats.db-shm" "$backing/.squeezefs/stats.clean" \
	"$backing/.squeezefs/tmp"
# Git keeps no xattrs: the packed references go to vN.xattrs.json, and the
# tests set them again on their copy (as root).
/usr/bin/python3 -c '
import json, os, sys
out = {}
for dirpath, dirs, files in os.walk(sys.argv[1]):
    for n in files:
        p = os.path.join(dirpath, n)
        try:
            v = os.getxattr(p, "trusted.squeezefs.packed",
                            follow_symlinks=False)
        except OSError:
            continue
        out[os.path.relpath(p, sys.argv[1])] = {
            "trusted.squeezefs.packed": v.hex()}
if out:
    json.dump(out, open(sys.argv[2], "w"), indent=1, sort_keys=True)
    open(sys.argv[2], "a").write("\n")
' "$backing" "$tmp/xattrs.json"
rmdir "$backing/.squeezefs" 2>/dev/null || true
cp -a "$backing" "$out"
cp "$tmp/manifest.json" "$manifest"
if [ -f "$tmp/xattrs.json" ]; then
	cp "$tmp/xattrs.json" "$here/v$ver.xattrs.json"
fi
echo "wrote $out ($(du -sb --apparent-size "$out" | cut -f1) bytes) and" \
	"$manifest"
