/*
 * ws_ring.c - see ws_ring.h for the scheme.
 *
 * Memory order: the writer stores the invalid commit word, then (release fence) the new
 * head, then (release fence) the bytes, then the commit word with release.  A reader
 * that sees the new head therefore sees the invalid commit word (never an old lap's
 * bytes taken for a commit); a reader that sees the commit sees the bytes; and a reader
 * that copied any byte of a later writer's entry sees that writer's head after its
 * acquire fence, so the re-check after the copy catches every overwrite.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ws_ring.h"

typedef struct ws_ring_hdr {
    uint64_t commit;              /* 1 + the entry's absolute position once committed */
    uint32_t total;               /* header + channel + payload, padded to 8 */
    uint32_t channel_len;
    uint32_t len;
    uint32_t opcode;
} ws_ring_hdr;

#define WS_HDR ((uint32_t)sizeof(ws_ring_hdr))
#define WS_AGAIN 2                        /* ws_read_one: skipped, look again */
#define WS_SHRINK_AT (1024 * 1024)        /* a reader buffer above this is given back */

#ifdef WS_RING_TEST
void (*ws_ring_test_hook)(void *arg);
void *ws_ring_test_arg;
#endif

size_t ws_ring_bytes(uint32_t size)
{
    return sizeof(ws_ring) + size;
}

int ws_ring_init(void *mem, uint32_t size, int shared)
{
    ws_ring *r = mem;
    pthread_mutexattr_t attr;
    if (size < 256 || (size & (size - 1)) != 0) {
        return -1;
    }
    memset(r, 0, sizeof(*r));
    r->size = size;
    pthread_mutexattr_init(&attr);
    if (shared) {
        pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    }
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    if (pthread_mutex_init(&r->mu, &attr) != 0) {
        pthread_mutexattr_destroy(&attr);
        return -1;
    }
    pthread_mutexattr_destroy(&attr);
    return 0;
}

size_t ws_ring_max_message(const ws_ring *r)
{
    return r->size / 2 - WS_HDR;
}

/* ---- raw access ------------------------------------------------------------------ */

static void ws_copy_in(ws_ring *r, uint64_t at, const void *src, size_t n)
{
    size_t off = (size_t)(at & (r->size - 1)), first = r->size - off;
    if (first > n) {
        first = n;
    }
    memcpy(r->data + off, src, first);
    memcpy(r->data, (const char *)src + first, n - first);
}

static void ws_copy_out(const ws_ring *r, uint64_t at, void *dst, size_t n)
{
    size_t off = (size_t)(at & (r->size - 1)), first = r->size - off;
    if (first > n) {
        first = n;
    }
    memcpy(dst, r->data + off, first);
    memcpy((char *)dst + first, r->data, n - first);
}

/* The commit word of the entry at `at` (8-aligned, so it never wraps). */
static uint64_t *ws_commit_word(ws_ring *r, uint64_t at)
{
    return (uint64_t *)(void *)(r->data + (size_t)(at & (r->size - 1)));
}

static uint64_t ws_head(ws_ring *r)
{
    return __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
}

/* ---- writer ---------------------------------------------------------------------- */

/* Commit a dead writer's reservation [wip - 1, head) as padding (mutex held). */
static void ws_ring_repair(ws_ring *r)
{
    ws_ring_hdr h;
    uint64_t at;
    if (!r->wip) {
        return;
    }
    at = r->wip - 1;
    if (r->head > at && r->head - at <= r->size / 2) {
        memset(&h, 0, sizeof(h));
        h.total = (uint32_t)(r->head - at);
        h.opcode = WS_RING_PAD;
        ws_copy_in(r, at + sizeof(h.commit), &h.total, WS_HDR - sizeof(h.commit));
        __atomic_store_n(ws_commit_word(r, at), at + 1, __ATOMIC_RELEASE);
    }
    r->wip = 0;
}

static int ws_ring_lock(ws_ring *r)
{
    int rv = pthread_mutex_lock(&r->mu);
    if (rv == EOWNERDEAD) {
        /* A process died holding the lock, maybe between reserving and committing. */
        ws_ring_repair(r);
        pthread_mutex_consistent(&r->mu);
        rv = 0;
    }
    return rv;
}

void ws_ring_unstick(ws_ring *r)
{
    if (ws_ring_lock(r) == 0) {
        pthread_mutex_unlock(&r->mu);
    }
}

int ws_ring_reserve(ws_ring *r, size_t channel_len, int opcode, size_t len,
                    ws_ring_wr *w)
{
    size_t total;
    if (channel_len < 1 || channel_len > WS_RING_CHANNEL_MAX || (opcode != 1 && opcode != 2)
        || len > r->size) {
        return -1;
    }
    total = (WS_HDR + channel_len + len + 7) & ~(size_t)7;
    if (total > r->size / 2 || ws_ring_lock(r) != 0) {
        return -1;
    }
    w->at = r->head;
    w->total = (uint32_t)total;
    w->channel_len = (uint32_t)channel_len;
    w->len = (uint32_t)len;
    w->opcode = (uint32_t)opcode;
    r->wip = w->at + 1;
    __atomic_store_n(ws_commit_word(r, w->at), 0, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    __atomic_store_n(&r->head, w->at + total, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    return 0;
}

void ws_ring_write(ws_ring *r, const ws_ring_wr *w, const char *channel, const void *data)
{
    ws_copy_in(r, w->at + sizeof(uint64_t), &w->total, WS_HDR - sizeof(uint64_t));
    ws_copy_in(r, w->at + WS_HDR, channel, w->channel_len);
    if (w->len) {
        ws_copy_in(r, w->at + WS_HDR + w->channel_len, data, w->len);
    }
}

void ws_ring_commit(ws_ring *r, const ws_ring_wr *w)
{
    __atomic_store_n(ws_commit_word(r, w->at), w->at + 1, __ATOMIC_RELEASE);
    r->wip = 0;
    __atomic_add_fetch(&r->futex, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&r->mu);
}

int ws_ring_publish(ws_ring *r, const char *channel, size_t channel_len, int opcode,
                    const void *data, size_t len)
{
    ws_ring_wr w;
    if (ws_ring_reserve(r, channel_len, opcode, len, &w) != 0) {
        return -1;
    }
    ws_ring_write(r, &w, channel, data);
    ws_ring_commit(r, &w);
    return 0;
}

/* ---- reader ---------------------------------------------------------------------- */

void ws_ring_reader_init(ws_ring_reader *rd, const ws_ring *r)
{
    memset(rd, 0, sizeof(*rd));
    rd->off = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
}

void ws_ring_reader_free(ws_ring_reader *rd)
{
    free(rd->buf);
    rd->buf = NULL;
    rd->cap = 0;
}

/* Lapped: everything up to head is lost; head is an entry boundary. */
static void ws_overrun(ws_ring_reader *rd, uint64_t head)
{
    rd->lost_bytes += head - rd->off;
    rd->overruns++;
    rd->off = head;
}

/* 1 if h describes an entry the reader may deliver or skip by its total. */
static int ws_total_ok(const ws_ring *r, const ws_ring_hdr *h, uint64_t avail)
{
    return h->total >= WS_HDR && (h->total & 7) == 0 && h->total <= r->size / 2
           && h->total <= avail;
}

static int ws_msg_ok(const ws_ring_hdr *h)
{
    uint64_t used = (uint64_t)WS_HDR + h->channel_len + h->len;
    return (h->opcode == 1 || h->opcode == 2) && h->channel_len >= 1
           && h->channel_len <= WS_RING_CHANNEL_MAX && used <= h->total
           && h->total - used < 8;
}

static int ws_reader_room(ws_ring_reader *rd, size_t n)
{
    unsigned char *b;
    if (rd->cap >= n && rd->cap <= WS_SHRINK_AT) {
        return 0;
    }
    b = realloc(rd->buf, n < 4096 ? 4096 : n);
    if (!b) {
        return -1;
    }
    rd->buf = b;
    rd->cap = n < 4096 ? 4096 : n;
    return 0;
}

/* Examine the entry at rd->off once: WS_RING_MSG, WS_AGAIN (skipped or lapped),
 * WS_RING_EMPTY or WS_RING_BUSY. */
static int ws_read_one(ws_ring *r, ws_ring_reader *rd, ws_ring_msg *msg)
{
    uint64_t head = ws_head(r), off = rd->off;
    ws_ring_hdr h;

    if (head == off) {
        return WS_RING_EMPTY;
    }
    if (head - off > r->size || (off & 7) != 0) {
        ws_overrun(rd, head);
        return WS_AGAIN;
    }
    if (__atomic_load_n(ws_commit_word(r, off), __ATOMIC_ACQUIRE) != off + 1) {
        return WS_RING_BUSY;          /* reserved, not committed yet */
    }
    ws_copy_out(r, off, &h, sizeof(h));
    if (!ws_total_ok(r, &h, head - off) || (h.opcode != WS_RING_PAD && !ws_msg_ok(&h))
        || ws_reader_room(rd, h.total) != 0) {
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (ws_head(r) - off > r->size) {
            ws_overrun(rd, ws_head(r));       /* overwritten while we looked */
        }
        else if (ws_total_ok(r, &h, head - off)) {
            rd->invalid++;
            rd->off = off + h.total;
        }
        else {
            rd->invalid++;
            ws_overrun(rd, head);
        }
        return WS_AGAIN;
    }
    if (h.opcode == WS_RING_PAD) {
        rd->torn++;
        rd->off = off + h.total;
        return WS_AGAIN;
    }
    ws_copy_out(r, off + WS_HDR, rd->buf, h.channel_len + h.len);
#ifdef WS_RING_TEST
    if (ws_ring_test_hook) {
        ws_ring_test_hook(ws_ring_test_arg);
    }
#endif
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (ws_head(r) - off > r->size) {
        ws_overrun(rd, ws_head(r));           /* a writer lapped us during the copy */
        return WS_AGAIN;
    }
    rd->off = off + h.total;
    msg->channel = (const char *)rd->buf;
    msg->channel_len = h.channel_len;
    msg->opcode = (int)h.opcode;
    msg->data = rd->buf + h.channel_len;
    msg->len = h.len;
    return WS_RING_MSG;
}

int ws_ring_read(ws_ring *r, ws_ring_reader *rd, ws_ring_msg *msg)
{
    for (;;) {
        int rv = ws_read_one(r, rd, msg);
        if (rv != WS_AGAIN) {
            return rv;
        }
    }
}
