/*
 * ws_history.c - see ws_history.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ws_history.h"

size_t ws_msgid_format(char *out, const ws_msgid *id)
{
    int n = snprintf(out, WS_MSGID_LEN, "%llu-%llu", (unsigned long long)id->epoch,
                     (unsigned long long)id->seq);
    return n < 0 ? 0 : (size_t)n;
}

/* Decimal digits of s[0..len) into *v: 1-20 digits, within 64 bits. */
static int ws_parse_u64(const char *s, size_t len, uint64_t *v)
{
    uint64_t x = 0;
    size_t i;
    if (len < 1 || len > 20) {
        return 0;
    }
    for (i = 0; i < len; i++) {
        unsigned d;
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
        d = (unsigned)(s[i] - '0');
        if (x > (UINT64_MAX - d) / 10) {
            return 0;
        }
        x = x * 10 + d;
    }
    *v = x;
    return 1;
}

int ws_msgid_parse(const char *s, size_t len, ws_msgid *id)
{
    const char *dash = s ? memchr(s, '-', len) : NULL;
    ws_msgid v;
    if (!dash || !ws_parse_u64(s, (size_t)(dash - s), &v.epoch)
        || !ws_parse_u64(dash + 1, len - (size_t)(dash - s) - 1, &v.seq)) {
        return 0;
    }
    *id = v;
    return 1;
}

int ws_msgid_before(const ws_msgid *a, const ws_msgid *b)
{
    return a->epoch == b->epoch && a->seq < b->seq;
}

int ws_hist_init(ws_hist *h, size_t cap, ws_hist_release_fn release)
{
    memset(h, 0, sizeof(*h));
    h->e = calloc(cap ? cap : 1, sizeof(*h->e));
    if (!h->e) {
        return -1;
    }
    h->cap = cap ? cap : 1;
    h->release = release;
    return 0;
}

static void ws_hist_drop_oldest(ws_hist *h)
{
    ws_hist_entry *e = &h->e[h->head];
    if (e->id.epoch != h->dropped.epoch || e->id.seq > h->dropped.seq) {
        h->dropped = e->id;
    }
    h->bytes -= e->bytes;
    if (h->release) {
        h->release(e->item);
    }
    e->item = NULL;
    h->head = (h->head + 1) % h->cap;
    h->n--;
}

void ws_hist_clear(ws_hist *h)
{
    while (h->n) {
        ws_hist_drop_oldest(h);
    }
}

void ws_hist_free(ws_hist *h)
{
    ws_hist_clear(h);
    free(h->e);
    h->e = NULL;
}

void ws_hist_push(ws_hist *h, const ws_msgid *id, int64_t time, void *item, size_t bytes)
{
    ws_hist_entry *e;
    if (h->n == h->cap) {
        ws_hist_drop_oldest(h);
    }
    e = &h->e[(h->head + h->n) % h->cap];
    e->id = *id;
    e->time = time;
    e->item = item;
    e->bytes = bytes;
    h->bytes += bytes;
    h->n++;
}

size_t ws_hist_trim(ws_hist *h, int64_t before, size_t max_bytes)
{
    size_t was = h->bytes;
    while (h->n && before && h->e[h->head].time < before) {
        ws_hist_drop_oldest(h);
    }
    while (h->n && h->bytes > max_bytes) {
        ws_hist_drop_oldest(h);
    }
    return was - h->bytes;
}

const ws_hist_entry *ws_hist_at(const ws_hist *h, size_t i)
{
    return &h->e[(h->head + i) % h->cap];
}

size_t ws_hist_after(const ws_hist *h, const ws_msgid *after, int *lost)
{
    size_t i;
    *lost = 0;
    if (h->dropped.seq && ws_msgid_before(after, &h->dropped)) {
        *lost = 1;
    }
    if (h->n && ws_hist_at(h, h->n - 1)->id.epoch != after->epoch) {
        *lost = 1;
        return 0;
    }
    for (i = 0; i < h->n; i++) {
        const ws_hist_entry *e = ws_hist_at(h, i);
        if (e->id.epoch == after->epoch && e->id.seq > after->seq) {
            break;
        }
    }
    return i;
}
