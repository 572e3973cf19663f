#!/bin/bash
# Install the Debian packages that building, testing and the demo of
# squeezefs need.  Idempotent: asks dpkg what is missing and only then runs
# apt-get (update first).  Uses sudo when not run as root.
set -euo pipefail

PACKAGES=(
	# build
	build-essential pkg-config clang
	libfuse3-dev fuse3
	zlib1g-dev liblz4-dev libzstd-dev libbrotli-dev libxxhash-dev
	libmsgpack-dev libsqlite3-dev
	# tests
	libcmocka-dev
	python3 python3-pytest python3-hypothesis python3-msgpack
	python3-xxhash python3-lz4 python3-zstandard python3-brotli
	man-db groff-base
	# tools the tests, the demo and the benchmark drive
	sqlite3 git rsync attr acl util-linux tar coreutils e2fsprogs fio bindfs
	btrfs-progs btrfs-compsize gnuplot-nox python3-pil
)

installed() {
	[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = \
		"install ok installed" ]
}

if ! command -v dpkg-query >/dev/null 2>&1; then
	echo "install-deps: dpkg-query not found; this script needs Debian" \
		"or Ubuntu (packages: ${PACKAGES[*]})" >&2
	exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
	installed "$p" || missing+=("$p")
done

if [ "${#missing[@]}" -eq 0 ]; then
	echo "install-deps: all dependencies present"
else
	SUDO=
	if [ "$(id -u)" -ne 0 ]; then
		if command -v sudo >/dev/null 2>&1; then
			SUDO=sudo
		else
			echo "install-deps: missing packages: ${missing[*]}" >&2
			echo "install-deps: not root and no sudo; install" \
				"them as root" >&2
			exit 1
		fi
	fi
	echo "install-deps: installing: ${missing[*]}"
	$SUDO apt-get update
	$SUDO env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y --no-install-recommends "${missing[@]}"
	echo "install-deps: installed: ${missing[*]}"
fi

# Mounting needs the FUSE device.  Load the module when we can; otherwise
# say what is wrong, but do not fail: building and unit tests work without.
if [ ! -c /dev/fuse ] && [ "$(id -u)" -eq 0 ] &&
	command -v modprobe >/dev/null 2>&1; then
	modprobe fuse 2>/dev/null || true
fi
if [ ! -c /dev/fuse ]; then
	echo "install-deps: WARNING: /dev/fuse does not exist, so nothing" \
		"can be mounted (demo, integration tests)." >&2
	echo "install-deps: load the module ('modprobe fuse' as root) or," \
		"in a container, pass the device (docker run --device" \
		"/dev/fuse --cap-add SYS_ADMIN ...)." >&2
fi
