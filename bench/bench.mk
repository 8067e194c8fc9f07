# Benchmarks (see docs/BENCHMARKS.md).  Included by the top Makefile.
#   make bench         every server, every workload, 3 runs each -> docs/BENCHMARKS.md,
#                      then the channels benchmark (make bench-sse)
#   make bench-sse     channels over plain HTTP against nginx + nchan: 10,000 EventSource
#                      subscribers, POST publishes/s (bench/sse.py) -> its section of
#                      docs/BENCHMARKS.md and docs/bench/channels.svg
#   make bench-quick   a few-minute subset (results in build/bench/quick.md)
#   make bench-report  rewrite docs/BENCHMARKS.md and docs/bench/*.svg from
#                      build/bench/results.json without measuring (QUICK=1: quick.md)
#   make hold10k       10,000 idle connections against a running `make demo` (PORT=8080)
BENCH_BIN := $(BUILD)/bench
BENCH_CFLAGS := -std=c99 -O2 -g $(WARN) -D_GNU_SOURCE

.PHONY: bench bench-quick bench-report bench-tools bench-deps hold10k bench-profile \
        bench-sse bench-sse-quick

bench-deps:
	bash bench/deps.sh

bench-tools: $(BENCH_BIN)/wsload $(BENCH_BIN)/sseload $(BENCH_BIN)/rawecho \
             $(BENCH_BIN)/lwsecho $(BENCH_BIN)/epollws

$(BENCH_BIN):
	mkdir -p $@

$(BENCH_BIN)/wsload: bench/wsload.c bench/srvstat.h bench/loadutil.h | $(BENCH_BIN)
	$(CC) $(BENCH_CFLAGS) -o $@ $< -lssl -lcrypto -lpthread

$(BENCH_BIN)/sseload: bench/sseload.c bench/srvstat.h bench/loadutil.h | $(BENCH_BIN)
	$(CC) $(BENCH_CFLAGS) -o $@ $< -lpthread

$(BENCH_BIN)/rawecho: bench/rawecho.c bench/echo_listen.h | $(BENCH_BIN)
	$(CC) $(BENCH_CFLAGS) -o $@ $<

$(BENCH_BIN)/epollws: bench/epollws.c bench/echo_listen.h | $(BENCH_BIN)
	$(CC) $(BENCH_CFLAGS) -o $@ $< -lcrypto

$(BENCH_BIN)/lwsecho: bench/lwsecho.c | $(BENCH_BIN)
	$(CC) $(BENCH_CFLAGS) -o $@ $< $$(pkg-config --cflags --libs libwebsockets)

BENCH_PY := /usr/bin/python3

bench: bench-deps all bench-tools
	$(BENCH_PY) bench/run.py bench
	$(BENCH_PY) bench/sse.py bench

bench-sse: bench-deps all bench-tools
	$(BENCH_PY) bench/sse.py bench

bench-sse-quick: bench-deps all bench-tools
	$(BENCH_PY) bench/sse.py bench --quick

bench-quick: bench-deps all bench-tools
	$(BENCH_PY) bench/run.py bench --quick
	$(BENCH_PY) bench/sse.py bench --quick

bench-report: bench-tools
	$(BENCH_PY) bench/run.py report $(if $(QUICK),--quick)
	$(BENCH_PY) bench/sse.py report $(if $(QUICK),--quick)

# Against a running `make demo PORT=...`: 10,000 idle connections for 60 s, on ws (PORT)
# and wss (PORT+1).
hold10k: bench-tools
	$(BENCH_PY) bench/run.py hold10k --port $(PORT)

bench-profile: bench-deps all bench-tools
	$(BENCH_PY) bench/run.py profile

# A graceful stop and an ungraceful one (SIGTERM) under echo load, 20 rounds each, with
# the error log searched for crashed children after each (bench/stop_rounds.py).
.PHONY: stop-rounds
stop-rounds: all bench-tools
	$(BENCH_PY) bench/stop_rounds.py --rounds 20
