/*
 * ws_ring.h - the embedded backplane's ring of published messages, in memory shared by
 * every child process (the caller provides the memory: anonymous shared memory in httpd,
 * plain or mmap'd memory in the unit test and the fuzz target).  No httpd include.
 *
 * Writers append under a process-shared robust mutex; readers never lock in the normal
 * case and never block writers.  Each entry is published seqlock style:
 *
 *   writer: mark the entry's commit word invalid, advance `head` past the entry (the
 *           reservation), copy the header, channel and payload, then store the commit
 *           word (= the entry's absolute position) with release order.
 *   reader: at its offset, with `head` beyond it: load the commit word (acquire); it
 *           must equal the offset (an old lap's bytes or an unfinished entry never do),
 *           bounds-check every header field, copy the entry out, then re-read `head`:
 *           if a writer has reserved over the bytes it copied, the copy is discarded.
 *
 * A reader that lags by more than the ring loses the overwritten entries and resumes at
 * `head` (always an entry boundary).  An entry whose header fails a check is skipped by
 * its length when that is trustworthy, else the reader resumes at `head`; nothing that
 * failed a check is ever delivered.  A writer that dies holding the mutex leaves its
 * reservation uncommitted: the next locker (a writer, or a reader that found the entry
 * unfinished) gets EOWNERDEAD and commits the reservation as padding, which readers skip
 * and count.
 */
#ifndef WS_RING_H
#define WS_RING_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ws_ring {
    pthread_mutex_t mu;           /* process-shared, robust (see ws_ring_init) */
    uint64_t head;                /* bytes ever reserved; entries end here */
    uint64_t wip;                 /* 1 + position of the entry being written, or 0 */
    uint32_t futex;               /* bumped after each commit (the caller waits on it) */
    uint32_t size;                /* of data[]: a power of two, at least 256 */
    unsigned char data[];
} ws_ring;

/* Entry opcodes besides the WebSocket ones (1 text, 2 binary). */
#define WS_RING_PAD 0             /* a dead writer's reservation, committed as padding */

/* Per reader (one per child): position and what it skipped. */
typedef struct ws_ring_reader {
    uint64_t off;                 /* absolute position of the next entry */
    unsigned char *buf;           /* malloc'd copy of the last entry */
    size_t cap;
    uint64_t lost_bytes;          /* overwritten before this reader got to them */
    uint64_t overruns;            /* times the reader was lapped (jumped to head) */
    uint64_t invalid;             /* entries that failed a check (skipped) */
    uint64_t torn;                /* dead writers' reservations (skipped) */
} ws_ring_reader;

/* One delivered message; channel and data point into the reader's buffer. */
typedef struct ws_ring_msg {
    const char *channel;
    size_t channel_len;
    int opcode;
    const unsigned char *data;
    size_t len;
} ws_ring_msg;

/* A reservation between ws_ring_reserve and ws_ring_commit. */
typedef struct ws_ring_wr {
    uint64_t at;
    uint32_t total, channel_len, len, opcode;
} ws_ring_wr;

enum {
    WS_RING_MSG = 1,              /* *msg holds a message */
    WS_RING_EMPTY = 0,            /* nothing new */
    WS_RING_BUSY = -1             /* the next entry is being written: wait or unstick */
};

#define WS_RING_CHANNEL_MAX 1024  /* no channel name in the ring is longer */

/* Bytes of memory a ring of `size` data bytes needs. */
size_t ws_ring_bytes(uint32_t size);
/* Initialize a ring in mem (ws_ring_bytes(size) bytes, zeroed or not).  size: a power of
 * two >= 256.  shared: the mutex is process-shared.  Returns 0 or -1. */
int ws_ring_init(void *mem, uint32_t size, int shared);
/* The largest channel_len + len a message may have. */
size_t ws_ring_max_message(const ws_ring *r);

/* Append one message (reserve, write, commit).  Returns 0, or -1 if it is too large,
 * the opcode is not 1 or 2, or the lock failed.  The caller wakes waiters on r->futex. */
int ws_ring_publish(ws_ring *r, const char *channel, size_t channel_len, int opcode,
                    const void *data, size_t len);
/* The three steps of ws_ring_publish, for tests: reserve locks the ring and claims the
 * bytes (readers see them as busy), write copies, commit publishes and unlocks. */
int ws_ring_reserve(ws_ring *r, size_t channel_len, int opcode, size_t len,
                    ws_ring_wr *w);
void ws_ring_write(ws_ring *r, const ws_ring_wr *w, const char *channel, const void *data);
void ws_ring_commit(ws_ring *r, const ws_ring_wr *w);

/* A reader positioned at the current head (nothing older is delivered). */
void ws_ring_reader_init(ws_ring_reader *rd, const ws_ring *r);
void ws_ring_reader_free(ws_ring_reader *rd);
/* Next message: WS_RING_MSG (valid until the next call), WS_RING_EMPTY, or WS_RING_BUSY
 * (an unfinished entry: call again later, or ws_ring_unstick first). */
int ws_ring_read(ws_ring *r, ws_ring_reader *rd, ws_ring_msg *msg);
/* Wait for a writer holding the lock, and repair a dead writer's reservation. */
void ws_ring_unstick(ws_ring *r);

#ifdef WS_RING_TEST
/* Called by ws_ring_read between copying an entry and re-validating it (tests only). */
extern void (*ws_ring_test_hook)(void *arg);
extern void *ws_ring_test_arg;
#endif

#endif
