/*
 * ws_chanstore.c - see ws_chanstore.h.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "apr_atomic.h"

#include "ws_chanstore.h"

#define WS_STORE_BUCKETS 1024

typedef struct ws_schan {
    struct ws_schan *next;                /* hash chain */
    struct ws_schan *lru_prev, *lru_next; /* least recently published first */
    ws_hist h;
    size_t klen;
    char key[];
} ws_schan;

static pthread_mutex_t ws_store_mu = PTHREAD_MUTEX_INITIALIZER;
static ws_schan *ws_store_table[WS_STORE_BUCKETS];
static ws_schan *ws_lru_head, *ws_lru_tail;
static long ws_store_channels;
static apr_size_t ws_store_bytes;
static ws_chanstore_limits ws_limits = {
    WS_CHANSTORE_DEFAULT_MSGS, 0, WS_CHANSTORE_DEFAULT_BYTES, WS_CHANSTORE_DEFAULT_CHANNELS
};
static ws_msgid ws_store_floor;           /* the counter when this child started */
static ws_msgid ws_store_seen;            /* the last id delivered to this child */

void ws_chanstore_configure(const ws_chanstore_limits *l)
{
    ws_limits = *l;
}

static void ws_store_release_item(void *item)
{
    ws_payload_release(item);
}

static ws_schan **ws_store_slot(const char *key, size_t klen)
{
    uint32_t hv = 2166136261u;            /* FNV-1a */
    ws_schan **pp;
    size_t i;
    for (i = 0; i < klen; i++) {
        hv = (hv ^ (unsigned char)key[i]) * 16777619u;
    }
    pp = &ws_store_table[hv % WS_STORE_BUCKETS];
    while (*pp && !((*pp)->klen == klen && memcmp((*pp)->key, key, klen) == 0)) {
        pp = &(*pp)->next;
    }
    return pp;
}

static void ws_lru_unlink(ws_schan *c)
{
    *(c->lru_prev ? &c->lru_prev->lru_next : &ws_lru_head) = c->lru_next;
    *(c->lru_next ? &c->lru_next->lru_prev : &ws_lru_tail) = c->lru_prev;
    c->lru_prev = c->lru_next = NULL;
}

static void ws_lru_append(ws_schan *c)
{
    c->lru_prev = ws_lru_tail;
    c->lru_next = NULL;
    *(ws_lru_tail ? &ws_lru_tail->lru_next : &ws_lru_head) = c;
    ws_lru_tail = c;
}

/* Remove and free channel c (the lock held). */
static void ws_store_free(ws_schan *c)
{
    ws_schan **slot = ws_store_slot(c->key, c->klen);
    *slot = c->next;
    ws_lru_unlink(c);
    ws_store_bytes -= c->h.bytes;
    ws_hist_free(&c->h);
    free(c);
    ws_store_channels--;
}

/* Drop what is too old in c, then keep every channel within the byte bound, taking
 * from the least recently published channels first (the lock held). */
static void ws_store_trim(ws_schan *c, apr_time_t now)
{
    apr_time_t before = ws_limits.max_age > 0 ? now - ws_limits.max_age : 0;
    ws_schan *v;
    if (c) {
        ws_store_bytes -= ws_hist_trim(&c->h, before, (size_t)-1);
    }
    for (v = ws_lru_head; v && ws_store_bytes > ws_limits.max_bytes; v = v->lru_next) {
        size_t over = ws_store_bytes - ws_limits.max_bytes;
        size_t keep = v->h.bytes > over ? v->h.bytes - over : 0;
        ws_store_bytes -= ws_hist_trim(&v->h, before, keep);
    }
}

static ws_schan *ws_store_create(const char *key, size_t klen)
{
    ws_schan *c;
    size_t cap = ws_limits.max_msgs > 0 ? (size_t)ws_limits.max_msgs : 1;
    if (ws_store_channels >= ws_limits.max_channels && ws_lru_head) {
        ws_store_free(ws_lru_head);
    }
    c = calloc(1, sizeof(*c) + klen + 1);
    if (!c || ws_hist_init(&c->h, cap, ws_store_release_item) != 0) {
        free(c);
        return NULL;
    }
    c->klen = klen;
    memcpy(c->key, key, klen);
    *ws_store_slot(key, klen) = c;
    ws_lru_append(c);
    ws_store_channels++;
    return c;
}

void ws_chanstore_add(ws_payload *p)
{
    ws_schan *c;
    apr_time_t now = apr_time_now();
    if (!p->key) {
        return;
    }
    if (ws_limits.max_channels <= 0) {
        return;
    }
    pthread_mutex_lock(&ws_store_mu);
    c = *ws_store_slot(p->key, p->klen);
    if (!c) {
        c = ws_store_create(p->key, p->klen);
    }
    if (c) {
        apr_atomic_inc32(&p->refs);
        ws_hist_push(&c->h, &p->id, now, p, p->len + sizeof(*p));
        ws_store_bytes += p->len + sizeof(*p);
        if (ws_limits.max_msgs <= 0) {
            ws_store_bytes -= c->h.bytes;
            ws_hist_clear(&c->h);         /* no history: only the dropped id is kept */
        }
        ws_lru_unlink(c);
        ws_lru_append(c);
        ws_store_trim(c, now);
    }
    pthread_mutex_unlock(&ws_store_mu);
}

void ws_chanstore_delete(const char *key, size_t klen)
{
    ws_schan *c;
    pthread_mutex_lock(&ws_store_mu);
    if ((c = *ws_store_slot(key, klen)) != NULL) {
        ws_store_free(c);
    }
    pthread_mutex_unlock(&ws_store_mu);
}

int ws_chanstore_info(const char *key, size_t klen, apr_size_t *messages, ws_msgid *last)
{
    ws_schan *c;
    pthread_mutex_lock(&ws_store_mu);
    c = *ws_store_slot(key, klen);
    if (c) {
        ws_store_trim(c, apr_time_now());
        *messages = c->h.n;
        *last = c->h.n ? ws_hist_at(&c->h, c->h.n - 1)->id : c->h.dropped;
    }
    pthread_mutex_unlock(&ws_store_mu);
    return c != NULL;
}

void ws_chanstore_child_init(apr_pool_t *pchild, const ws_msgid *now)
{
    (void)pchild;
    ws_store_floor = *now;
}

static int ws_payload_cmp(const void *a, const void *b)
{
    const ws_payload *x = *(ws_payload *const *)a, *y = *(ws_payload *const *)b;
    if (x->id.epoch != y->id.epoch) {
        return x->id.epoch < y->id.epoch ? -1 : 1;
    }
    return x->id.seq < y->id.seq ? -1 : x->id.seq > y->id.seq;
}

/* Append channel c's entries from index `from` to out (the lock held). */
static void ws_catchup_take(ws_schan *c, size_t from, ws_catchup *out, apr_size_t cap)
{
    size_t i;
    for (i = from; i < c->h.n && out->n < cap; i++) {
        ws_payload *p = ws_hist_at(&c->h, i)->item;
        apr_atomic_inc32(&p->refs);
        out->p[out->n++] = p;
    }
}

void ws_chanstore_catchup(const char *const *keys, const apr_size_t *klens, int nkeys,
                          const ws_msgid *after, long first, const ws_msgid *current,
                          apr_pool_t *pool, ws_catchup *out)
{
    apr_size_t cap = 0;
    int i;
    memset(out, 0, sizeof(*out));
    if (!after && first == 0) {
        return;
    }
    if (after && ((current->seq && current->epoch != after->epoch)
                  || (ws_store_floor.seq && ws_store_floor.epoch == after->epoch
                      && after->seq < ws_store_floor.seq))) {
        out->lost = 1;                    /* another epoch, or before this child */
    }
    pthread_mutex_lock(&ws_store_mu);
    for (i = 0; i < nkeys; i++) {
        ws_schan *c = *ws_store_slot(keys[i], klens[i]);
        if (c) {
            ws_store_trim(c, apr_time_now());
            cap += c->h.n;
        }
    }
    out->p = apr_palloc(pool, sizeof(ws_payload *) * (cap ? cap : 1));
    for (i = 0; i < nkeys; i++) {
        ws_schan *c = *ws_store_slot(keys[i], klens[i]);
        size_t from = 0;
        int lost = 0;
        if (c && after) {
            from = ws_hist_after(&c->h, after, &lost);
            out->lost |= lost;
        }
        if (c) {
            ws_catchup_take(c, from, out, cap);
        }
    }
    pthread_mutex_unlock(&ws_store_mu);
    ws_catchup_order(out, after, first);
}

void ws_catchup_order(ws_catchup *out, const ws_msgid *after, long first)
{
    qsort(out->p, out->n, sizeof(ws_payload *), ws_payload_cmp);
    if (!after && first > 0 && out->n > (apr_size_t)first) {
        apr_size_t drop = out->n - (apr_size_t)first, j;
        for (j = 0; j < drop; j++) {
            ws_payload_release(out->p[j]);
        }
        memmove(out->p, out->p + drop, (size_t)first * sizeof(ws_payload *));
        out->n = (apr_size_t)first;
    }
}

ws_msgid ws_chanstore_latest(const char *const *keys, const apr_size_t *klens, int nkeys,
                             const ws_msgid *dflt)
{
    ws_msgid best = *dflt;
    int i;
    pthread_mutex_lock(&ws_store_mu);
    for (i = 0; i < nkeys; i++) {
        ws_schan *c = *ws_store_slot(keys[i], klens[i]);
        ws_msgid id;
        if (!c) {
            continue;
        }
        id = c->h.n ? ws_hist_at(&c->h, c->h.n - 1)->id : c->h.dropped;
        if (id.seq && (!best.seq || id.epoch != best.epoch || id.seq > best.seq)) {
            best = id;
        }
    }
    pthread_mutex_unlock(&ws_store_mu);
    return best;
}

void ws_chanstore_seen(const ws_msgid *id)
{
    pthread_mutex_lock(&ws_store_mu);
    ws_store_seen = *id;
    pthread_mutex_unlock(&ws_store_mu);
}

int ws_chanstore_behind(const ws_msgid *upto)
{
    int behind;
    pthread_mutex_lock(&ws_store_mu);
    behind = ws_store_seen.epoch != upto->epoch || ws_store_seen.seq < upto->seq;
    pthread_mutex_unlock(&ws_store_mu);
    return behind;
}

void ws_catchup_release(ws_catchup *c)
{
    apr_size_t i;
    for (i = 0; i < c->n; i++) {
        ws_payload_release(c->p[i]);
    }
    c->n = 0;
}

/* Subscriber counts: an open-addressing table of (64-bit key hash, count) in shared
 * memory; a slot, once claimed by a key, stays its (a count of 0 is no subscriber). */
typedef struct ws_subslot {
    uint64_t hash;
    int64_t count;
} ws_subslot;

#define WS_SUBS_PROBE 64

static ws_subslot *ws_subs_tab;
static apr_size_t ws_subs_n;

void ws_chanstore_set_counts(void *mem, apr_size_t bytes)
{
    ws_subs_tab = mem;
    ws_subs_n = mem ? bytes / sizeof(ws_subslot) : 0;
    if (mem) {
        memset(mem, 0, bytes);
    }
}

static ws_subslot *ws_subs_slot(const char *key, size_t klen, int claim)
{
    uint64_t h = 14695981039346656037ULL;     /* FNV-1a, never 0 */
    size_t i;
    for (i = 0; i < klen; i++) {
        h = (h ^ (unsigned char)key[i]) * 1099511628211ULL;
    }
    h |= 1;
    for (i = 0; ws_subs_tab && i < WS_SUBS_PROBE; i++) {
        ws_subslot *sl = &ws_subs_tab[(h + i) % ws_subs_n];
        uint64_t cur = __atomic_load_n(&sl->hash, __ATOMIC_ACQUIRE), zero = 0;
        if (cur == h) {
            return sl;
        }
        if (cur == 0) {
            if (!claim) {
                return NULL;
            }
            if (__atomic_compare_exchange_n(&sl->hash, &zero, h, 0, __ATOMIC_ACQ_REL,
                                            __ATOMIC_ACQUIRE) || zero == h) {
                return sl;
            }
        }
    }
    return NULL;
}

void ws_chanstore_subs_add(const char *key, size_t klen, int delta)
{
    ws_subslot *sl = ws_subs_slot(key, klen, 1);
    if (sl) {
        __atomic_add_fetch(&sl->count, delta, __ATOMIC_RELAXED);
    }
}

long ws_chanstore_subs(const char *key, size_t klen)
{
    ws_subslot *sl;
    if (!ws_subs_tab) {
        return -1;
    }
    sl = ws_subs_slot(key, klen, 0);
    return sl ? (long)__atomic_load_n(&sl->count, __ATOMIC_RELAXED) : 0;
}
