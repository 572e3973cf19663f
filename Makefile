# squeezefs - build, test and benchmark.
#
#   make            build ./build/squeezefs, ./build/squeezefs-admin (and
#                   the libraries they share)
#   make test       unit tests (cmocka) + integration tests (pytest, real mounts)
#   make asan       the same tests against an ASan+UBSan build (build-asan/)
#   make test-long  longer randomized / crash runs
#   make install    install to $(PREFIX)/bin (PREFIX=/usr/local)

PREFIX  ?= /usr/local
BUILD   ?= build
CC      ?= cc
PYTHON  ?= /usr/bin/python3
PYTEST_ARGS ?=

# Everything but libfuse: the core, the engine and squeezefs-admin.
CORE_PKGS := zlib liblz4 libzstd libbrotlienc libbrotlidec libxxhash \
	msgpack sqlite3
PKGS := fuse3 $(CORE_PKGS)

WARN := -Wall -Wextra -Werror -Wstrict-prototypes -Wmissing-prototypes \
	-Wwrite-strings -Wvla -Wshadow -Wformat=2
OPT  ?= -O2 -g
SAN  ?=
CPPFLAGS += -D_GNU_SOURCE -D_FILE_OFFSET_BITS=64 -I.
CFLAGS_ALL = -std=c11 $(OPT) $(WARN) $(SAN) -pthread -MMD -MP \
	$(shell pkg-config --cflags $(PKGS)) $(CFLAGS)
LDLIBS_CORE = $(shell pkg-config --libs $(CORE_PKGS)) -pthread $(SAN) $(LDLIBS)
LDLIBS_ALL = $(shell pkg-config --libs fuse3) $(LDLIBS_CORE)

# The layers, bottom up (README "Layout"): codec/ <- meta/, analyzer/
# (libsqcore.a) <- engine/ (libsqengine.a, no FUSE) <- fs/ (the FUSE
# front end: squeezefs) and admin/ (squeezefs-admin, no FUSE).
CORE_SRC := $(wildcard codec/*.c) $(wildcard meta/*.c) $(wildcard analyzer/*.c)
ENGINE_SRC := $(wildcard engine/*.c)
FS_SRC   := $(wildcard fs/*.c)
ADMIN_SRC := $(wildcard admin/*.c)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
# faultinj.c is an LD_PRELOAD shim (a shared object), not a tool program.
TOOL_SRC := $(filter-out tests/tools/faultinj.c,$(wildcard tests/tools/*.c))

CORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/%.o)
ENGINE_OBJ := $(ENGINE_SRC:%.c=$(BUILD)/%.o)
FS_OBJ   := $(FS_SRC:%.c=$(BUILD)/%.o)
ADMIN_OBJ := $(ADMIN_SRC:%.c=$(BUILD)/%.o)
UNIT_BIN := $(UNIT_SRC:%.c=$(BUILD)/%)
TOOL_BIN := $(TOOL_SRC:%.c=$(BUILD)/%)
CORE_LIB := $(BUILD)/libsqcore.a
ENGINE_LIB := $(BUILD)/libsqengine.a
BIN      := $(BUILD)/squeezefs
ADMIN    := $(BUILD)/squeezefs-admin
FAULTINJ := $(BUILD)/tests/tools/libfaultinj.so

.PHONY: all test unit integration integration-wb asan test-long test-matrix \
	soak install clean bench format check-deps fuzz fuzz-regress fuzz-run \
	tsan check-layers

all: $(BIN) $(ADMIN) $(UNIT_BIN) $(TOOL_BIN) $(FAULTINJ)

check-deps:
	@pkg-config --exists $(PKGS) || { echo "missing build dependencies:" \
	  "run scripts/install-deps.sh" >&2; \
	  pkg-config --print-errors --exists $(PKGS); exit 1; }

$(BUILD)/%.o: %.c | check-deps
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS_ALL) -c -o $@ $<

$(CORE_LIB): $(CORE_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(ENGINE_LIB): $(ENGINE_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

$(BIN): $(FS_OBJ) $(ENGINE_LIB) $(CORE_LIB)
	$(CC) -o $@ $^ $(LDLIBS_ALL)

# No libfuse on this link line: fsck and export run where FUSE does not.
$(ADMIN): $(ADMIN_OBJ) $(ENGINE_LIB) $(CORE_LIB)
	$(CC) -o $@ $^ $(LDLIBS_CORE)

$(BUILD)/tests/unit/%: $(BUILD)/tests/unit/%.o $(ENGINE_LIB) $(CORE_LIB)
	$(CC) -o $@ $^ $(LDLIBS_CORE) -lcmocka

$(BUILD)/tests/tools/%: $(BUILD)/tests/tools/%.o $(CORE_LIB)
	$(CC) -o $@ $^ $(LDLIBS_CORE)

# Never sanitized (it only forwards calls) and built without
# _FILE_OFFSET_BITS, so it can define both pwrite and pwrite64 and so on.
$(FAULTINJ): tests/tools/faultinj.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) -shared -fPIC -o $@ $< \
	  -ldl -pthread

# Unit tests first (fast, no mount), the fuzz targets over their regression
# inputs and then for FUZZ_SECONDS each (FUZZ_IN_TEST=0 skips that part),
# then the integration suite, which mounts real squeezefs instances and
# needs root (or fuse access).
FUZZ_IN_TEST ?= 1
# Seconds per fuzz target within `make test` (a smoke run on top of the
# regression inputs; `make fuzz-run` alone fuzzes FUZZ_SECONDS).
TEST_FUZZ_SECONDS ?= 20
test: all
	$(MAKE) --no-print-directory check-layers unit fuzz-regress \
	  $(if $(filter 1,$(FUZZ_IN_TEST)),fuzz-run \
	    FUZZ_SECONDS=$(TEST_FUZZ_SECONDS)) integration integration-wb

# The include graph runs one way, there is no call cycle between files,
# and squeezefs-admin does not link libfuse (scripts/check-layers.py).
check-layers: $(BIN) $(ADMIN)
	$(PYTHON) scripts/check-layers.py --build $(BUILD)

unit: $(UNIT_BIN)
	@set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

integration: $(BIN) $(ADMIN) $(TOOL_BIN) $(FAULTINJ)
	SQUEEZEFS_BIN=$(abspath $(BIN)) SQ_TOOLS=$(abspath $(BUILD)/tests/tools) \
	  $(PYTHON) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) tests/integration

# The same suite with -o writeback_cache on every mount: the kernel then
# sends writes when it writes pages back, in other sizes and orders.  Not
# the files whose code paths it does not change: the golden and damaged
# directories (read only), the command line and its options, the
# analyzer's choices, mount(8), fstab and unprivileged mounts (their
# mounts take no extra options), fsck on copies of BACKING, and settling
# and its statistics (they work on closed files, after the kernel's
# writeback is done), the control directory and the man page.
WB_SKIP := test_golden.py test_movein.py test_cli.py test_analyzer_eval.py \
	test_mounting.py test_backup_copies.py test_unprivileged.py \
	test_settle.py test_stats_db.py test_control.py test_manpage.py
integration-wb: $(BIN) $(ADMIN) $(TOOL_BIN) $(FAULTINJ)
	SQ_MOUNT_OPTS=writeback_cache $(MAKE) --no-print-directory integration \
	  PYTEST_ARGS="$(PYTEST_ARGS) $(WB_SKIP:%=--ignore=tests/integration/%)"

# The longer randomized and crash runs, then the matrix.
test-long: all
	SQUEEZEFS_BIN=$(abspath $(BIN)) SQ_TOOLS=$(abspath $(BUILD)/tests/tools) \
	  SQ_LONG=1 $(PYTHON) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) \
	  tests/integration
	$(MAKE) --no-print-directory test-matrix

# The integration suite once per mount option that changes code paths (as
# gocryptfs's tests/matrix): every mount of a pass gets the option before
# its own (a test's own options win); a test that cannot hold under one
# skips itself, saying why (sqfs_util.skip_under()).  The default and the
# writeback_cache passes are part of `make test`.
MATRIX := nopack codec=none block_size=4K block_size=1M
test-matrix: $(BIN) $(ADMIN) $(TOOL_BIN) $(FAULTINJ)
	@set -e; for o in $(MATRIX); do echo "== matrix: -o $$o"; \
	  SQ_MOUNT_OPTS=$$o $(MAKE) --no-print-directory integration \
	    PYTEST_ARGS="$(PYTEST_ARGS) $(WB_SKIP:%=--ignore=tests/integration/%)"; \
	done

# ASan + UBSan: a separate build tree, then the same unit and integration
# tests.  halt_on_error makes any finding fail the run.
ASAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer \
	-fno-sanitize-recover=all
asan:
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(MAKE) --no-print-directory BUILD=build-asan OPT="-O1 -g" \
	  SAN="$(ASAN_FLAGS)" FUZZ_IN_TEST=0 test

# libFuzzer targets (tests/fuzz/fuzz_*.c), built with clang into their own
# tree.  fuzz-regress (part of `make test`) runs each target once over its
# seed corpus and the crash inputs kept under tests/fuzz/regress/;
# fuzz-run fuzzes each target for FUZZ_SECONDS (part of `make test`).
FUZZ_BUILD   := build-fuzz
FUZZ_SECONDS ?= 60
FUZZ_SAN     := -fsanitize=fuzzer-no-link,address,undefined \
	-fno-omit-frame-pointer -fno-sanitize-recover=all
FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_ENV     := ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

fuzz:
	$(MAKE) --no-print-directory BUILD=$(FUZZ_BUILD) CC=clang \
	  OPT="-O1 -g" SAN="$(FUZZ_SAN)" \
	  $(FUZZ_TARGETS:%=$(FUZZ_BUILD)/tests/fuzz/%)

.PRECIOUS: $(BUILD)/tests/fuzz/%.o
$(BUILD)/tests/fuzz/%: $(BUILD)/tests/fuzz/%.o $(CORE_LIB)
	$(CC) -fsanitize=fuzzer -o $@ $^ $(LDLIBS_ALL)

fuzz-regress: fuzz
	@set -e; for t in $(FUZZ_TARGETS); do \
	  in=$$(ls -d tests/fuzz/corpus/$$t/* tests/fuzz/regress/$$t/* \
	    2>/dev/null || true); \
	  [ -n "$$in" ] || continue; echo "== $$t (regression)"; \
	  $(FUZZ_ENV) $(FUZZ_BUILD)/tests/fuzz/$$t -runs=1 $$in \
	    >$(FUZZ_BUILD)/$$t.log 2>&1 || \
	    { tail -50 $(FUZZ_BUILD)/$$t.log; exit 1; }; done

fuzz-run: fuzz
	@set -e; for t in $(FUZZ_TARGETS); do \
	  echo "== $$t: $(FUZZ_SECONDS)s"; \
	  mkdir -p $(FUZZ_BUILD)/corpus/$$t $(FUZZ_BUILD)/crash/$$t; \
	  $(FUZZ_ENV) $(FUZZ_BUILD)/tests/fuzz/$$t \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=20 -rss_limit_mb=2048 \
	    -max_len=65536 -print_final_stats=1 \
	    -artifact_prefix=$(FUZZ_BUILD)/crash/$$t/ \
	    $(FUZZ_BUILD)/corpus/$$t tests/fuzz/corpus/$$t; done

# ThreadSanitizer: the daemon built in build-tsan/, then the concurrency
# tests, a bounded part of the random-operation tests and the conversion
# of plain files (moving in) through it; any
# report in a daemon log fails its test (sqfs_util.Mount.check_log).
TSAN_BUILD := build-tsan
TSAN_ENV   := TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
	SQ_TSAN=1 SQUEEZEFS_BIN=$(abspath $(TSAN_BUILD)/squeezefs) \
	SQ_TOOLS=$(abspath $(TSAN_BUILD)/tests/tools)
tsan:
	$(MAKE) --no-print-directory BUILD=$(TSAN_BUILD) OPT="-O1 -g" \
	  SAN="-fsanitize=thread" $(TSAN_BUILD)/squeezefs \
	  $(TSAN_BUILD)/squeezefs-admin \
	  $(TSAN_BUILD)/tests/tools/libfaultinj.so
	$(TSAN_ENV) $(PYTHON) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) \
	  tests/integration/test_concurrency.py tests/integration/test_limits.py \
	  tests/integration/test_control.py
	$(TSAN_ENV) $(PYTHON) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) \
	  tests/integration/test_random_ops.py -k "codecs or many_files"
	$(TSAN_ENV) $(PYTHON) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) \
	  tests/integration/test_settle.py -k "writer or reads or mtime"
	$(TSAN_ENV) $(PYTHON) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) \
	  tests/integration/test_movein.py tests/integration/test_random_ops.py \
	  -k "background or kill or settle_command or writes or plain or import"

# 1,000,000 random operations with remounts (long; not part of CI).
soak: $(BIN)
	SQUEEZEFS_BIN=$(abspath $(BIN)) PYTHON=$(PYTHON) scripts/soak.sh

install: $(BIN) $(ADMIN)
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/squeezefs
	install -m 0755 $(ADMIN) $(DESTDIR)$(PREFIX)/bin/squeezefs-admin
	install -d $(DESTDIR)$(PREFIX)/share/man/man8
	install -m 0644 docs/squeezefs.8 $(DESTDIR)$(PREFIX)/share/man/man8/squeezefs.8

# The benchmark of issue 4 (scripts/bench/): squeezefs side by side with a
# plain directory, bindfs and btrfs zstd:3; results in bench/results/.
# Needs root.  QUICK=1: 64 MiB corpus, short fio.  BENCH_ARGS passes more.
BENCH_ARGS ?=
bench: $(BIN)
	$(PYTHON) scripts/bench/bench.py --squeezefs $(abspath $(BIN)) \
	  $(if $(filter-out 0,$(QUICK)),--quick) $(BENCH_ARGS)

format:
	clang-format -i $(CORE_SRC) $(ENGINE_SRC) $(FS_SRC) $(ADMIN_SRC) \
	  $(UNIT_SRC) $(TOOL_SRC) \
	  $(wildcard */*.h)

clean:
	rm -rf build build-asan build-fuzz $(TSAN_BUILD)

-include $(CORE_OBJ:.o=.d) $(ENGINE_OBJ:.o=.d) $(FS_OBJ:.o=.d) \
	$(ADMIN_OBJ:.o=.d) $(UNIT_SRC:%.c=$(BUILD)/%.d) \
	$(wildcard $(BUILD)/tests/fuzz/*.d) \
	$(TOOL_SRC:%.c=$(BUILD)/%.d)
