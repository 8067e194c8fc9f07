/*
 * ws_timer.h - a binary min-heap of timers for an event loop (protocol core: no httpd
 * include, unit-tested alone).  Each timer is embedded in the object it times and knows
 * its own slot, so re-arming and cancelling are O(log n).  Not thread-safe: one loop
 * thread owns a heap.
 */
#ifndef WS_TIMER_H
#define WS_TIMER_H

#include <stddef.h>
#include <stdint.h>

typedef struct ws_timer {
    int64_t at;            /* when it is due (the loop's clock, e.g. microseconds) */
    size_t slot;           /* index in the heap + 1; 0 when not armed */
} ws_timer;

typedef struct ws_timer_heap {
    ws_timer **v;
    size_t n, cap;
} ws_timer_heap;

void ws_timer_heap_init(ws_timer_heap *hp);
void ws_timer_heap_free(ws_timer_heap *hp);
/* Arm t at `at` (re-arm if armed).  Returns 0, or -1 out of memory (t unarmed). */
int ws_timer_set(ws_timer_heap *hp, ws_timer *t, int64_t at);
/* Disarm t (no-op if it is not armed). */
void ws_timer_cancel(ws_timer_heap *hp, ws_timer *t);
/* The earliest timer, or NULL. */
ws_timer *ws_timer_first(const ws_timer_heap *hp);
/* Disarm and return the earliest timer due at or before now, or NULL. */
ws_timer *ws_timer_pop_due(ws_timer_heap *hp, int64_t now);

#endif
