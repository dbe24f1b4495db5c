# Makefile - builds libraftkv, the CUnit test runner, sanitizer builds, fuzzers and benchmarks.

ifeq ($(origin CC),default)
CC := gcc
endif
CSTD     := -std=c11 -D_POSIX_C_SOURCE=200809L
WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
OPT      ?= -O2 -g
CFLAGS_ALL = $(CSTD) $(WARN) $(OPT) -Iinclude -Isrc -fPIC $(EXTRA_CFLAGS)
LDLIBS   := -lsqlite3 -lpthread -lm
# Parallel inner builds (unless make was given -j); the runs themselves stay sequential.
NPROC    := $(shell nproc 2>/dev/null || echo 2)
JOBS     ?= $(if $(findstring -j,$(MAKEFLAGS)),,-j$(NPROC))

BUILD    ?= build
LIB_SRC  := $(wildcard src/*/*.c)
TEST_SRC := $(wildcard tests/*.c)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)
HEADERS  := $(wildcard include/*.h src/*/*.h tests/*.h)

.PHONY: bench-store all test asan tsan repeat soak fuzz bench format format-check clean deps

all: $(BUILD)/libraftkv.a $(BUILD)/libraftkv.so $(BUILD)/test_raftkv $(BUILD)/raft-microbench \
     $(BUILD)/example-ready-loop $(BUILD)/example-embed $(BUILD)/store-bench \
     $(BUILD)/snapshot-rss

$(BUILD)/%.o: %.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c $< -o $@

$(BUILD)/libraftkv.a: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/libraftkv.so: $(LIB_OBJ)
	$(CC) -shared -o $@ $^ $(LDFLAGS) $(LDLIBS)

$(BUILD)/test_raftkv: $(TEST_OBJ) $(BUILD)/libraftkv.a
	$(CC) $(CFLAGS_ALL) -o $@ $(TEST_OBJ) $(BUILD)/libraftkv.a $(LDFLAGS) -lcunit $(LDLIBS)

$(BUILD)/raft-microbench: $(BUILD)/bench/raft_microbench.o $(BUILD)/libraftkv.a
	$(CC) $(CFLAGS_ALL) -o $@ $^ $(LDFLAGS) $(LDLIBS)

# Single-node store: Ready persistence and apply, against plain SQLite loops in the same run.
$(BUILD)/store-bench: $(BUILD)/bench/store_bench.o $(BUILD)/libraftkv.a
	$(CC) $(CFLAGS_ALL) -o $@ $^ $(LDFLAGS) $(LDLIBS)

# The README's Ready-loop example, compiled and run by `make test` so it cannot rot.
$(BUILD)/example-ready-loop: $(BUILD)/bench/example_ready_loop.o $(BUILD)/libraftkv.a
	$(CC) $(CFLAGS_ALL) -o $@ $^ $(LDFLAGS) $(LDLIBS)

# Peak RSS while a lagging node catches up on a large snapshot (run by hand: see the file).
$(BUILD)/snapshot-rss: $(BUILD)/bench/snapshot_rss.o $(BUILD)/libraftkv.a
	$(CC) $(CFLAGS_ALL) -o $@ $^ $(LDFLAGS) $(LDLIBS)

# The README's embedding example, likewise.
$(BUILD)/example-embed: $(BUILD)/bench/example_embed.o $(BUILD)/libraftkv.a
	$(CC) $(CFLAGS_ALL) -o $@ $^ $(LDFLAGS) $(LDLIBS)

# The README's test command. Installs missing Debian packages first (see scripts/deps.sh).
test: deps
	$(MAKE) $(JOBS) $(BUILD)/test_raftkv $(BUILD)/example-ready-loop $(BUILD)/example-embed
	$(BUILD)/example-ready-loop >$(BUILD)/example.log || { cat $(BUILD)/example.log; exit 1; }
	$(BUILD)/example-embed >$(BUILD)/example-embed.log || { cat $(BUILD)/example-embed.log; exit 1; }
	$(BUILD)/test_raftkv

deps:
	@sh scripts/deps.sh build

# Sanitizer builds use their own build directories and fewer simulation seeds.
ASAN_CFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all
asan: deps
	$(MAKE) $(JOBS) BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer" \
	  EXTRA_CFLAGS="$(ASAN_CFLAGS)" LDFLAGS="-fsanitize=address,undefined" \
	  build-asan/test_raftkv build-asan/example-ready-loop
	ASAN_OPTIONS=detect_leaks=1 build-asan/example-ready-loop >build-asan/example.log || \
	  { cat build-asan/example.log; exit 1; }
	RAFT_SIM_SEEDS=$${RAFT_SIM_SEEDS:-200} RAFTKV_CRASH_SEEDS=$${RAFTKV_CRASH_SEEDS:-1} \
	  ASAN_OPTIONS=detect_leaks=1 build-asan/test_raftkv

tsan: deps
	$(MAKE) $(JOBS) BUILD=build-tsan OPT="-O1 -g" EXTRA_CFLAGS="-fsanitize=thread" \
	  LDFLAGS="-fsanitize=thread" build-tsan/test_raftkv
	RAFT_SIM_SEEDS=$${RAFT_SIM_SEEDS:-100} RAFTKV_CRASH_SEEDS=$${RAFTKV_CRASH_SEEDS:-1} \
	  TSAN_OPTIONS=halt_on_error=1 build-tsan/test_raftkv

# Runs the threaded suites over and over (default 20 times, each with a new seed); they must
# pass every time. REPEAT_SUITES picks the suites.
REPEAT ?= 20
REPEAT_SUITES ?= mailbox router node snapxfer cluster scenarios snapshots
repeat: deps
	$(MAKE) $(JOBS) $(BUILD)/test_raftkv
	@for i in $$(seq 1 $(REPEAT)); do for s in $(REPEAT_SUITES); do \
	  echo "== run $$i/$(REPEAT): $$s"; \
	  RAFTKV_TEST_SEED=$$((i * 7919)) $(BUILD)/test_raftkv $$s >$(BUILD)/repeat.log 2>&1 || \
	  { cat $(BUILD)/repeat.log; echo "repeat: suite $$s failed on run $$i"; exit 1; }; \
	  done; done

# Long runs: the randomized simulation, the crash loop and the scenario matrix.
soak: deps
	$(MAKE) $(JOBS) $(BUILD)/test_raftkv
	RAFT_SIM_SEEDS=$${RAFT_SIM_SEEDS:-50000} RAFT_SIM_EVENTS=$${RAFT_SIM_EVENTS:-8000} \
	  $(BUILD)/test_raftkv sim
	RAFTKV_CRASH_STEPS=$${RAFTKV_CRASH_STEPS:-60} RAFTKV_CRASH_SEEDS=$${RAFTKV_CRASH_SEEDS:-3} \
	  $(BUILD)/test_raftkv store_crash
	RAFTKV_SCENARIO_ROUNDS=$${RAFTKV_SCENARIO_ROUNDS:-10} RAFTKV_SCENARIO_MS=$${RAFTKV_SCENARIO_MS:-5000} \
	  $(BUILD)/test_raftkv scenarios
	RAFTKV_SCENARIO_ROUNDS=$${RAFTKV_SCENARIO_ROUNDS:-10} RAFTKV_SCENARIO_MS=$${RAFTKV_SCENARIO_MS:-5000} \
	  $(BUILD)/test_raftkv snapshots

# libFuzzer targets (clang). Built here, run by hand (see README).
FUZZ_CC    ?= clang
FUZZ_FLAGS := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
              -Wall -Wextra -Iinclude -Isrc $(CSTD)
# Both targets exercise the core only, so they link src/raft alone.
FUZZ_SRC   := $(wildcard src/raft/*.c)
fuzz:
	@sh scripts/deps.sh build fuzz
	@mkdir -p build-fuzz
	$(FUZZ_CC) $(FUZZ_FLAGS) -o build-fuzz/fuzz_decode tests/fuzz/fuzz_decode.c $(FUZZ_SRC) -lm
	$(FUZZ_CC) $(FUZZ_FLAGS) -o build-fuzz/fuzz_step tests/fuzz/fuzz_step.c $(FUZZ_SRC) -lm
	@echo "run: build-fuzz/fuzz_decode -max_total_time=60  and  build-fuzz/fuzz_step -max_total_time=60"

# Until the store's benchmark exists, the main job is the core micro-benchmark.
# Pass options with BENCH_ARGS, e.g. make bench BENCH_ARGS="--seconds 30 --seed 7".
BENCH_ARGS ?=
bench: deps
	$(MAKE) $(JOBS) $(BUILD)/raft-microbench
	$(BUILD)/raft-microbench $(BENCH_ARGS)

# The store benchmark (about 45 s; runs in build/, on the real disk, not tmpfs).
bench-store: deps
	$(MAKE) $(JOBS) $(BUILD)/store-bench
	$(BUILD)/store-bench $(STORE_BENCH_ARGS)

# The clang-format version is pinned: CI installs clang-format-14 and uses it; elsewhere it is
# preferred when present.
FORMAT_FILES = $(wildcard include/*.h src/*/*.c src/*/*.h tests/*.c tests/*.h tests/fuzz/*.c \
                          bench/*.c)
ifeq ($(CI),true)
CLANG_FORMAT ?= clang-format-14
else
CLANG_FORMAT ?= $(shell command -v clang-format-14 >/dev/null 2>&1 && echo clang-format-14 || \
                        echo clang-format)
endif
format:
	$(CLANG_FORMAT) -i $(FORMAT_FILES)
format-check:
	@$(CLANG_FORMAT) --version
	$(CLANG_FORMAT) --dry-run --Werror $(FORMAT_FILES)

clean:
	rm -rf build build-asan build-tsan build-fuzz
