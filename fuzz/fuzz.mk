# Fuzzing and sanitizer runs (see docs/security.md).  Included by the top Makefile.
#
#   make fuzz              every target for FUZZ_SECONDS (600) each, FUZZ_JOBS (2) at once
#   make fuzz-quick        CI: every target replays its committed seeds, then runs
#                          FUZZ_QUICK_RUNS (200000) inputs from the fixed FUZZ_SEED (1):
#                          deterministic, so a failure is a regression, not a new find
#   make fuzz-build        build the libFuzzer targets into $(BUILD)/fuzz/
#   make fuzz-corpus       regenerate the seed corpora fuzz/corpus/<target>/
#   make check-asan        module + plugins with ASan+UBSan in build/asan, then the
#                          integration suite against them; fails on any sanitizer report
#   make check-asan-quick  the same for ASAN_SUBSET on the event MPM (part of make
#                          check): every driver, plugin threads and handles, queues,
#                          the backplane (shared memory and Redis), deflate, restarts,
#                          channels over HTTP (SSE and long-poll sessions)
#   make valgrind-httpd    httpd -X under valgrind over echo and fault scenarios
#                          (VALGRIND_MPM=prefork|event, VALGRIND_ROUNDS=2)
#
# A target is fuzz/fuzz_<name>.c linked with the protocol core (clang -fsanitize=
# fuzzer,address,undefined).  Runs grow a scratch corpus in $(BUILD)/fuzz/corpus/<name>
# from the committed seeds and write crashes to $(BUILD)/fuzz/artifacts/; the summary of
# a run (execs, cov, ft per target) is $(BUILD)/fuzz/summary.txt.  Reproduce a crash:
#   $(BUILD)/fuzz/fuzz_frame $(BUILD)/fuzz/artifacts/frame-crash-<sha1>

FUZZ_CC            ?= clang
FUZZ_SECONDS       ?= 600
FUZZ_QUICK_RUNS    ?= 200000
FUZZ_SEED          ?= 1
FUZZ_JOBS          ?= 2
FUZZ_TARGETS       := frame utf8 close handshake inflate ring
FUZZ_DIR           := $(BUILD)/fuzz
FUZZ_CFLAGS        := -std=c99 -g -O1 $(WARN) -D_GNU_SOURCE \
                      -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
                      -Isrc -Ifuzz
FUZZ_CORE          := $(CORE_SRC) src/ws_ring.c
FUZZ_BINS          := $(addprefix $(FUZZ_DIR)/fuzz_,$(FUZZ_TARGETS))

ASAN_BUILD         ?= build/asan
ASAN_FLAGS         ?= -fsanitize=address,undefined -fno-omit-frame-pointer

# What make check runs under the sanitizers (2 min 16 s here): framing and protocol
# errors, the async and the blocking driver, plugin threads and handles (probe), queues
# and full queues, plugin errors, restarts under load, abrupt and never-reading clients,
# the channel backplane across children and through Redis, permessage-deflate (without
# its long interoperability matrix and its prefork case: not this MPM).  Timing bounds
# are scaled by 3 (ASan is slower).
ASAN_SUBSET        := $(addprefix tests/integration/test_ws_,140_probe.py 200_framing.py \
                      300_async.py 305_idle_threads.py 320_graceful.py 600_lifecycle.py \
                      610_abrupt_clients.py 640_hostile_frames.py \
                      630_slow_reader.py 650_plugin_error.py 660_graceful_under_load.py \
                      800_pubsub.py 810_redis.py 830_deflate.py 970_channels.py)
ASAN_SUBSET_ARGS   ?= -k "not python_offers and not prefork"

.PHONY: fuzz fuzz-quick fuzz-build fuzz-corpus check-asan check-asan-quick valgrind-httpd

fuzz-build: $(FUZZ_BINS)

$(FUZZ_DIR)/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz_ref.h $(FUZZ_CORE) $(CORE_HDR) src/ws_deflate.h src/ws_ring.h
	@mkdir -p $(FUZZ_DIR)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ $< $(FUZZ_CORE) -lz

fuzz: fuzz-build
	bash fuzz/run-fuzz.sh $(FUZZ_DIR) $(FUZZ_SECONDS) $(FUZZ_JOBS) $(FUZZ_TARGETS)

fuzz-quick: fuzz-build
	FUZZ_RUNS=$(FUZZ_QUICK_RUNS) FUZZ_SEED=$(FUZZ_SEED) \
	    bash fuzz/run-fuzz.sh $(FUZZ_DIR) 0 $(FUZZ_JOBS) $(FUZZ_TARGETS)

fuzz-corpus:
	$(PYTHON) fuzz/gen_corpus.py

# The module is built with gcc (the default CC) so that it uses gcc's shared ASan
# runtime, which httpd gets through LD_PRELOAD (fuzz/check-asan.sh); clang's static
# runtime cannot live in a shared object loaded into an uninstrumented httpd.
check-asan:
	$(MAKE) BUILD=$(ASAN_BUILD) SANITIZE="$(ASAN_FLAGS)" OPT="-O1 -g" all
	bash fuzz/check-asan.sh $(ASAN_BUILD) $(PYTEST_CHECKS) $(PYTEST_ARGS)

check-asan-quick:
	$(MAKE) BUILD=$(ASAN_BUILD) SANITIZE="$(ASAN_FLAGS)" OPT="-O1 -g" all
	WS_TEST_MPMS=event WS_TEST_TIME_FACTOR=3 bash fuzz/check-asan.sh $(ASAN_BUILD) \
	    $(PYTEST_CHECKS) $(ASAN_SUBSET) $(ASAN_SUBSET_ARGS) $(PYTEST_ARGS)

VALGRIND_ROUNDS ?= 2
VALGRIND_MPM    ?= prefork
valgrind-httpd: all
	bash fuzz/valgrind-httpd.sh $(VALGRIND_ROUNDS) $(VALGRIND_MPM)
