# mod_websocket - build, demo and tests.
#
#   make            build build/mod_websocket.so and the plugins
#   make demo       install what is missing, build, run httpd in the foreground
#                   (PORT=8080: ws/http on PORT, wss/https on PORT+1)
#   make check      install what is missing, build, run every test: unit, the whole
#                   integration suite, a named subset of it against the ASan+UBSan build
#                   (make check-asan-quick), deterministic fuzzing (make fuzz-quick); a
#                   failing step does not stop the later ones (make -k), the exit status
#                   says whether any failed
#   make unit       C unit tests of the protocol core (ASan+UBSan)
#   make install    into httpd's directories (DESTDIR, PREFIX; see conf/install.mk)
#   make deb        Debian packages in build/deb/ (docs/packaging.md)
#
# CPPFLAGS, CFLAGS and LDFLAGS from the environment are added (dpkg-buildflags).
#
# Flags come from apxs (Debian's apache2-dev), so the module is built exactly as httpd's
# own modules are; the protocol core has no httpd include and is also built alone.

APXS      ?= apxs
CC        ?= cc
PORT      ?= 8080
BUILD     ?= build
SANITIZE  ?=

HTTPD_INC := $(shell $(APXS) -q INCLUDEDIR) $(shell $(APXS) -q APR_INCLUDEDIR) $(shell $(APXS) -q APU_INCLUDEDIR)
HTTPD_DEF := $(shell $(APXS) -q EXTRA_CPPFLAGS)
WARN      := -Wall -Wextra -Werror
OPT       ?= -O2 -g
CFLAGS_M  := -std=c99 $(OPT) -fPIC $(WARN) $(SANITIZE) -D_GNU_SOURCE $(HTTPD_DEF) \
             -Iinclude -Isrc $(addprefix -I,$(sort $(HTTPD_INC)))
CFLAGS_P  := -std=c99 $(OPT) -fPIC $(WARN) $(SANITIZE) -D_GNU_SOURCE -Iinclude

CORE_SRC  := src/ws_frame.c src/ws_utf8.c src/ws_close.c src/ws_channel.c src/ws_deflate.c \
             src/ws_pmd_negotiate.c src/ws_timer.c src/ws_history.c
CORE_HDR  := src/ws_proto.h src/ws_channel.h src/ws_deflate.h src/ws_timer.h src/ws_history.h
GLUE_SRC  := src/mod_websocket.c src/ws_config.c src/ws_plugin.c src/ws_handshake.c \
             src/ws_session.c src/ws_output.c src/ws_loop.c src/ws_blocking.c src/ws_handle.c \
             src/ws_pubsub.c src/ws_api.c src/ws_accept.c src/ws_backplane.c src/ws_ring.c \
             src/ws_hostcheck.c src/ws_redis_tls.c src/ws_status.c src/ws_h2.c \
             src/ws_chanstore.c src/ws_push.c src/ws_push_out.c src/ws_push_conf.c \
             src/ws_redis_hist.c
MOD_SRC   := $(GLUE_SRC) $(CORE_SRC)
MOD_HDR   := $(CORE_HDR) $(wildcard src/ws_*.h) include/mod_websocket.h
PLUGINS   := echo chat ticker probe badabi
PLUGIN_SO := $(addprefix $(BUILD)/plugins/,$(addsuffix .so,$(PLUGINS)))

PYTHON    := /usr/bin/python3
# pytest for every integration run: a summary of every non-pass (-ra), and a deadline per
# test (python3-pytest-timeout) so that a hung test fails instead of stalling CI;
# conftest.py makes exceptions in helper threads errors.
PYTEST_TIMEOUT ?= 600
PYTEST_CHECKS  := -ra --timeout=$(PYTEST_TIMEOUT)
PYTEST_FLAGS   := -q -p no:cacheprovider $(PYTEST_CHECKS)

.PHONY: all deps demo check unit integration clean

all: $(BUILD)/mod_websocket.so $(PLUGIN_SO)

$(BUILD)/mod_websocket.so: $(MOD_SRC) $(MOD_HDR) | $(BUILD)
	$(CC) $(CFLAGS_M) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -shared -o $@ $(MOD_SRC) \
	    -lhiredis -lssl -lcrypto -lz -laprutil-1 -lapr-1 -lpthread

$(BUILD)/plugins/%.so: plugins/%.c include/mod_websocket.h | $(BUILD)/plugins
	$(CC) $(CFLAGS_P) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -shared -o $@ $< -lpthread

$(BUILD) $(BUILD)/plugins:
	mkdir -p $@

deps:
	bash scripts/deps.sh

demo: deps all
	bash scripts/demo.sh $(PORT)

$(BUILD)/test_proto: $(CORE_SRC) $(CORE_HDR) tests/unit/test_proto.c | $(BUILD)
	$(CC) -std=c99 -O1 -g $(WARN) -fsanitize=address,undefined -fno-sanitize-recover=all \
	    -Isrc $(CORE_SRC) tests/unit/test_proto.c -lz -o $@

$(BUILD)/test_deflate: $(CORE_SRC) $(CORE_HDR) tests/unit/test_deflate.c | $(BUILD)
	$(CC) -std=c99 -O1 -g $(WARN) -fsanitize=address,undefined -fno-sanitize-recover=all \
	    -Isrc $(CORE_SRC) tests/unit/test_deflate.c -lz -o $@

$(BUILD)/test_timer: $(CORE_SRC) $(CORE_HDR) tests/unit/test_timer.c | $(BUILD)
	$(CC) -std=c99 -O1 -g $(WARN) -fsanitize=address,undefined -fno-sanitize-recover=all \
	    -Isrc $(CORE_SRC) tests/unit/test_timer.c -lz -o $@

$(BUILD)/test_history: $(CORE_SRC) $(CORE_HDR) tests/unit/test_history.c | $(BUILD)
	$(CC) -std=c99 -O1 -g $(WARN) -fsanitize=address,undefined -fno-sanitize-recover=all \
	    -Isrc $(CORE_SRC) tests/unit/test_history.c -lz -o $@

$(BUILD)/test_accept: src/ws_accept.c src/ws_accept.h tests/unit/test_accept.c | $(BUILD)
	$(CC) -std=c99 -O1 -g $(WARN) -fsanitize=address,undefined -fno-sanitize-recover=all \
	    -D_GNU_SOURCE $(HTTPD_DEF) -Isrc $(addprefix -I,$(sort $(HTTPD_INC))) src/ws_accept.c tests/unit/test_accept.c \
	    -laprutil-1 -lapr-1 -o $@

$(BUILD)/test_ring: src/ws_ring.c src/ws_ring.h tests/unit/test_ring.c | $(BUILD)
	$(CC) -std=c99 -O1 -g $(WARN) -fsanitize=address,undefined -fno-sanitize-recover=all \
	    -D_GNU_SOURCE -DWS_RING_TEST -Isrc src/ws_ring.c tests/unit/test_ring.c -lpthread -o $@

# The handle queue and the channel table, without httpd (backplane and status stubbed).
$(BUILD)/test_handle: src/ws_handle.c src/ws_pubsub.c src/ws_chanstore.c src/ws_handle.h src/ws_pubsub.h src/ws_chanstore.h $(CORE_SRC) tests/unit/test_handle.c | $(BUILD)
	$(CC) -std=c99 -O1 -g $(WARN) -fsanitize=address,undefined -fno-sanitize-recover=all \
	    -D_GNU_SOURCE $(HTTPD_DEF) -Iinclude -Isrc $(addprefix -I,$(sort $(HTTPD_INC))) \
	    src/ws_handle.c src/ws_pubsub.c src/ws_chanstore.c $(CORE_SRC) tests/unit/test_handle.c \
	    -lapr-1 -lz -lpthread -o $@

unit: $(BUILD)/test_proto $(BUILD)/test_deflate $(BUILD)/test_accept $(BUILD)/test_ring \
      $(BUILD)/test_timer $(BUILD)/test_handle $(BUILD)/test_history
	$(BUILD)/test_timer
	$(BUILD)/test_handle
	$(BUILD)/test_history
	$(BUILD)/test_ring
	$(BUILD)/test_proto
	$(BUILD)/test_deflate
	$(BUILD)/test_accept

integration: all
	$(PYTHON) -m pytest $(PYTEST_FLAGS) tests/integration $(PYTEST_ARGS)

check: deps
	$(MAKE) all
	$(MAKE) -k unit integration check-asan-quick fuzz-quick

clean:
	rm -rf $(BUILD)

# Benchmarks (bench/bench.mk) and fuzzing / sanitizer runs (fuzz/fuzz.mk) keep their
# targets beside their sources.
-include bench/bench.mk
include conf/install.mk
-include fuzz/fuzz.mk
