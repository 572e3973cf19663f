#!/bin/bash
# Soak test (make soak): 1,000,000 random operations in total through a real
# mount, split over four configurations (4K and 128K blocks, with and
# without a shared writable mapping), each compared with a model file and
# remounted every 10,000 operations.  Prints a line per run and exits non-zero
# on the first mismatch, with the reproduction recipe fsx_model.py prints.
#
#   SQ_SOAK_OPS (default 1000000)  total operations
#   SQ_SOAK_SEED (default 1)       base seed; each run adds its index
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-/usr/bin/python3}
TOTAL=${SQ_SOAK_OPS:-1000000}
SEED=${SQ_SOAK_SEED:-1}
export SQUEEZEFS_BIN=${SQUEEZEFS_BIN:-$PWD/build/squeezefs}

CONFIGS=("4K" "4K --mmap" "128K" "128K --mmap")
per=$(( (TOTAL + ${#CONFIGS[@]} - 1) / ${#CONFIGS[@]} ))
start=$(date +%s)
done_ops=0
for i in "${!CONFIGS[@]}"; do
	read -r bs extra <<<"${CONFIGS[$i]}"
	echo "soak: run $((i + 1))/${#CONFIGS[@]}: block size $bs" \
		"${extra:-(pread/pwrite)}, $per ops, seed $((SEED + i))"
	# shellcheck disable=SC2086 # $extra is an optional flag
	if ! "$PYTHON" tests/integration/fsx_model.py --seed $((SEED + i)) \
		--ops "$per" --block-size "$bs" $extra --remount-every 10000; then
		echo "soak: FAILED after $done_ops operations" >&2
		exit 1
	fi
	done_ops=$((done_ops + per))
done
echo "soak: $done_ops operations, 0 mismatches, $(( $(date +%s) - start ))s"
