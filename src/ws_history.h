/*
 * ws_history.h - message ids and a channel's history (protocol core: no httpd include).
 *
 * A published channel message gets an id "EPOCH-SEQ" (both decimal): SEQ is one counter
 * per server (every channel, every child; with Redis, every server sharing the prefix),
 * strictly increasing in publish order; EPOCH changes whenever that counter starts over
 * (a server start, a new Redis).  docs/channels.md has the wire protocol.
 *
 * A history is a ring of the last messages of one channel, bounded by a count, an age
 * and bytes.  Entries hold an opaque item (the host's shared payload) that the history
 * releases through a callback when it drops the entry.  The history remembers the
 * highest id it ever dropped, which is how a resume point is found to be too old
 * ("messages were lost").  Not thread safe: the caller locks.
 */
#ifndef WS_HISTORY_H
#define WS_HISTORY_H

#include <stddef.h>
#include <stdint.h>

typedef struct ws_msgid {
    uint64_t epoch;
    uint64_t seq;                 /* 0: no id */
} ws_msgid;

#define WS_MSGID_LEN 42           /* "E-S" with two 20-digit numbers, and a NUL */

/* Write "EPOCH-SEQ" and a NUL into out (WS_MSGID_LEN bytes).  Returns its length. */
size_t ws_msgid_format(char *out, const ws_msgid *id);
/* Parse exactly "EPOCH-SEQ" (decimal digits, no sign, no spaces, each at most 20 digits
 * and within 64 bits) of len bytes.  Returns 1 and sets *id, or 0. */
int ws_msgid_parse(const char *s, size_t len, ws_msgid *id);
/* 1 if a comes before b (same epoch, lower seq). */
int ws_msgid_before(const ws_msgid *a, const ws_msgid *b);

typedef void (*ws_hist_release_fn)(void *item);

typedef struct ws_hist_entry {
    ws_msgid id;
    int64_t time;                 /* when it was stored, in the caller's unit */
    size_t bytes;                 /* what it counts against the byte bound */
    void *item;
} ws_hist_entry;

typedef struct ws_hist {
    ws_hist_entry *e;             /* cap entries, a ring */
    size_t cap, head, n;          /* head: the oldest */
    size_t bytes;
    ws_msgid dropped;             /* the highest id dropped (seq 0: none) */
    ws_hist_release_fn release;
} ws_hist;

/* A history of at most cap entries (cap >= 1).  Returns 0, or -1 out of memory. */
int ws_hist_init(ws_hist *h, size_t cap, ws_hist_release_fn release);
/* Drop every entry (released) and free the ring. */
void ws_hist_free(ws_hist *h);
/* Drop every entry, remembering the highest id as dropped. */
void ws_hist_clear(ws_hist *h);
/* Append (the history owns item from now on); the oldest entry goes if full. */
void ws_hist_push(ws_hist *h, const ws_msgid *id, int64_t time, void *item, size_t bytes);
/* Drop the oldest entries stored before `before` (0: no age bound), then while the
 * history holds more than max_bytes.  Returns the bytes dropped. */
size_t ws_hist_trim(ws_hist *h, int64_t before, size_t max_bytes);
/* The i-th stored entry, oldest first (i < h->n). */
const ws_hist_entry *ws_hist_at(const ws_hist *h, size_t i);
/* Index of the first entry after `after` (h->n if none).  *lost is set when entries
 * after `after` were dropped, or `after` is of another epoch than the newest entry
 * (then every entry counts as after it). */
size_t ws_hist_after(const ws_hist *h, const ws_msgid *after, int *lost);

#endif
