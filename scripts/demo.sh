#!/bin/bash
# Install what is missing, build, and mount a demo squeezefs: demo/backing
# (the compressed containers) mounted at demo/mnt, with a little sample
# data copied in.  Re-running replaces a previous demo mount.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

BACKING=$ROOT/demo/backing
MNT=$ROOT/demo/mnt
BIN=$ROOT/build/squeezefs

die() {
	echo "demo: $*" >&2
	exit 1
}

# The kernel's mount table, not stat(): a dead daemon leaves a mount whose
# stat fails with ENOTCONN, and that one must be unmounted too.
is_mounted() {
	findmnt -rn --mountpoint "$1" >/dev/null 2>&1
}

./scripts/install-deps.sh
make -j2

mkdir -p "$BACKING"

if is_mounted "$MNT"; then
	echo "demo: unmounting the previous demo mount at $MNT"
	fusermount3 -u "$MNT" 2>/dev/null ||
		{ [ "$(id -u)" -eq 0 ] && umount "$MNT"; } ||
		fusermount3 -uz "$MNT" ||
		die "cannot unmount the previous demo mount at $MNT"
	for _ in $(seq 50); do
		is_mounted "$MNT" || break
		sleep 0.1
	done
	if is_mounted "$MNT"; then
		die "$MNT is still mounted"
	fi
fi

# The old daemon may still be finishing (writing back) after the unmount;
# it holds BACKING/.squeezefs/lock until it exits.
LOCK=$BACKING/.squeezefs/lock
if [ -f "$LOCK" ] && ! flock -w 30 "$LOCK" true; then
	die "an earlier squeezefs still holds $BACKING ($LOCK)"
fi

mkdir -p "$MNT"
[ -c /dev/fuse ] || die "/dev/fuse does not exist; cannot mount (see" \
	"the warning from scripts/install-deps.sh)"

# Without -f the daemon forks once the kernel has the mount and the
# foreground process returns, so the mount is up when this returns.
"$BIN" "$BACKING" "$MNT" || die "$BIN $BACKING $MNT failed (exit $?)"
for _ in $(seq 50); do
	is_mounted "$MNT" && break
	sleep 0.1
done
is_mounted "$MNT" || die "squeezefs exited but $MNT is not mounted"
stat "$MNT" >/dev/null || die "$MNT is mounted but does not answer"

if [ ! -e "$MNT/sample" ]; then
	echo "demo: copying sample data into $MNT/sample"
	mkdir -p "$MNT/sample/include" "$MNT/sample/copyright"
	cp -p /usr/include/*.h "$MNT/sample/include/"
	for f in /usr/share/doc/*/copyright; do
		[ -f "$f" ] || continue
		pkg=${f%/copyright}
		cp -p "$f" "$MNT/sample/copyright/${pkg##*/}"
	done
	sync
fi

cat <<MSG

squeezefs is mounted:  demo/mnt  (backed by demo/backing)

Use it like any directory:
    ls -l demo/mnt/sample/include | head
    cp -a /usr/share/common-licenses demo/mnt/
    du -sh --apparent-size demo/mnt    # logical size of the files
    du -sh demo/backing                # what is actually stored
    ls -lR demo/backing | head         # one container per file, same tree

Unmount:
    fusermount3 -u demo/mnt
MSG
