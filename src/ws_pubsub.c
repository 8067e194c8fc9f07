/*
 * ws_pubsub.c - channels: subscriptions, delivery to this child's subscribers, and
 * publishing through the backplane.  See ws_pubsub.h.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "apr_time.h"

#include "mod_websocket.h"
#include "ws_channel.h"
#include "ws_chanstore.h"
#include "ws_proto.h"
#include "ws_pubsub.h"

static ws_bp *ws_backplane;            /* this generation's backplane, or NULL (off) */

void ws_pubsub_set_backplane(ws_bp *bp)
{
    ws_backplane = bp;
}

ws_bp *ws_pubsub_backplane(void)
{
    return ws_backplane;
}

/*
 * Per child: channel name -> subscribers, in a hash table under one read-write lock.
 * Subscribing and unsubscribing (I/O threads) write; delivery (the backplane's reader
 * threads) reads, and queues one shared payload to every subscriber's handle.  The
 * backplane carries every publish to every child, this child included, so local and
 * remote subscribers see one order.
 */
#define WS_CHANNEL_BUCKETS 1024

struct ws_sub {
    struct ws_sub *prev, *next;   /* in the channel's subscriber list */
    struct ws_sub *conn_next;     /* in the connection's list */
    struct ws_channel *ch;
    ws_handle *h;                 /* a reference */
};

typedef struct ws_channel {
    struct ws_channel *next;      /* hash chain */
    ws_sub *subs;
    size_t len;
    char name[];
} ws_channel;

static pthread_rwlock_t ws_chan_lock = PTHREAD_RWLOCK_INITIALIZER;
static ws_channel *ws_chan_table[WS_CHANNEL_BUCKETS];

static unsigned ws_chan_hash(const char *name, size_t len)
{
    uint32_t h = 2166136261u;          /* FNV-1a */
    size_t i;
    for (i = 0; i < len; i++) {
        h = (h ^ (unsigned char)name[i]) * 16777619u;
    }
    return h % WS_CHANNEL_BUCKETS;
}

static ws_channel **ws_chan_slot(const char *name, size_t len)
{
    ws_channel **pp = &ws_chan_table[ws_chan_hash(name, len)];
    while (*pp && !((*pp)->len == len && memcmp((*pp)->name, name, len) == 0)) {
        pp = &(*pp)->next;
    }
    return pp;
}

int ws_pubsub_subscribe(ws_sub **subs, ws_handle *h, const char *channel, size_t len)
{
    ws_channel **slot, *ch;
    ws_sub *sub;
    for (sub = *subs; sub; sub = sub->conn_next) {
        if (sub->ch->len == len && memcmp(sub->ch->name, channel, len) == 0) {
            return WS_SUCCESS;          /* already */
        }
    }
    sub = calloc(1, sizeof(*sub));
    if (!sub) {
        return WS_ENOMEM;
    }
    pthread_rwlock_wrlock(&ws_chan_lock);
    slot = ws_chan_slot(channel, len);
    ch = *slot;
    if (!ch) {
        ch = calloc(1, sizeof(*ch) + len + 1);
        if (!ch) {
            pthread_rwlock_unlock(&ws_chan_lock);
            free(sub);
            return WS_ENOMEM;
        }
        ch->len = len;
        memcpy(ch->name, channel, len);
        *slot = ch;
    }
    sub->ch = ch;
    sub->h = h;
    ws_handle_retain(h);
    sub->next = ch->subs;
    if (ch->subs) {
        ch->subs->prev = sub;
    }
    ch->subs = sub;
    pthread_rwlock_unlock(&ws_chan_lock);
    sub->conn_next = *subs;
    *subs = sub;
    ws_chanstore_subs_add(channel, len, 1);
    return WS_SUCCESS;
}

/* Unlink sub (with the write lock held); frees the channel when it empties. */
static void ws_sub_unlink_locked(ws_sub *sub)
{
    ws_channel *ch = sub->ch;
    ws_chanstore_subs_add(ch->name, ch->len, -1);
    if (sub->prev) {
        sub->prev->next = sub->next;
    }
    else {
        ch->subs = sub->next;
    }
    if (sub->next) {
        sub->next->prev = sub->prev;
    }
    if (!ch->subs) {
        ws_channel **slot = ws_chan_slot(ch->name, ch->len);
        *slot = ch->next;
        free(ch);
    }
}

int ws_pubsub_unsubscribe(ws_sub **subs, const char *channel, size_t len)
{
    ws_sub **pp;
    for (pp = subs; *pp; pp = &(*pp)->conn_next) {
        ws_sub *sub = *pp;
        if (sub->ch->len == len && memcmp(sub->ch->name, channel, len) == 0) {
            *pp = sub->conn_next;
            pthread_rwlock_wrlock(&ws_chan_lock);
            ws_sub_unlink_locked(sub);
            pthread_rwlock_unlock(&ws_chan_lock);
            ws_handle_release(sub->h);
            free(sub);
            return WS_SUCCESS;
        }
    }
    return WS_SUCCESS;
}

void ws_pubsub_unsubscribe_all(ws_sub **subs)
{
    ws_sub *sub = *subs;
    if (!sub) {
        return;
    }
    pthread_rwlock_wrlock(&ws_chan_lock);
    for (; sub; sub = sub->conn_next) {
        ws_sub_unlink_locked(sub);
    }
    pthread_rwlock_unlock(&ws_chan_lock);
    while ((sub = *subs) != NULL) {
        *subs = sub->conn_next;
        ws_handle_release(sub->h);
        free(sub);
    }
}

size_t ws_pubsub_count(const char *key, size_t klen)
{
    ws_channel *ch;
    size_t n = 0;
    long all = ws_chanstore_subs(key, klen);
    if (all >= 0) {
        return (size_t)all;         /* every child's */
    }
    pthread_rwlock_rdlock(&ws_chan_lock);
    ch = *ws_chan_slot(key, klen);
    for (ws_sub *sub = ch ? ch->subs : NULL; sub; sub = sub->next) {
        n++;
    }
    pthread_rwlock_unlock(&ws_chan_lock);
    return n;
}

void ws_pubsub_deliver(void *baton, const char *channel, size_t channel_len, int opcode,
                       const unsigned char *data, size_t len, const ws_bp_meta *meta)
{
    ws_channel *ch;
    ws_payload *p = NULL;
    (void)baton;
    if (!meta->local) {
        ws_chanstore_seen(&meta->id);   /* this child has caught up to here */
    }
    if (meta->ctl == WS_BP_DELETE) {
        ws_chanstore_delete(channel, channel_len);
    }
    else if ((p = ws_payload_create_keyed(opcode, data, len, channel, channel_len,
                                          &meta->id)) != NULL) {
        /* Stored before it is queued: a new subscriber that misses the queue finds it
         * in the history (ws_push.c). */
        ws_chanstore_add(p);
    }
    pthread_rwlock_rdlock(&ws_chan_lock);
    ch = *ws_chan_slot(channel, channel_len);
    for (ws_sub *sub = ch ? ch->subs : NULL; sub; sub = sub->next) {
        if (meta->ctl == WS_BP_DELETE) {
            if (sub->h->push_kind) {
                ws_handle_request_close(sub->h, WS_CLOSE_NORMAL, "channel deleted");
            }
        }
        else if (p) {
            /* A full queue closes that subscriber with 1008; the others go on. */
            ws_handle_enqueue(sub->h, p);
        }
    }
    pthread_rwlock_unlock(&ws_chan_lock);
    ws_payload_release(p);
}

/* A message that does not travel: an id from the server's counter, or this child's. */
static void ws_pubsub_local_id(ws_msgid *id)
{
    static apr_uint64_t epoch, seq;
    if (ws_backplane) {
        ws_bp_local_id(ws_backplane, id);
        return;
    }
    if (!__atomic_load_n(&epoch, __ATOMIC_ACQUIRE)) {
        apr_uint64_t zero = 0, now = (apr_uint64_t)apr_time_as_msec(apr_time_now());
        __atomic_compare_exchange_n(&epoch, &zero, now, 0, __ATOMIC_ACQ_REL,
                                    __ATOMIC_ACQUIRE);
    }
    id->epoch = __atomic_load_n(&epoch, __ATOMIC_ACQUIRE);
    id->seq = __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED);
}

int ws_pubsub_publish_meta(const char *key, size_t klen, int type, const void *data,
                           size_t len, int flags, ws_bp_meta *meta)
{
    int opcode = type == WS_TEXT ? WS_OP_TEXT : WS_OP_BINARY;
    if (!klen || !ws_valid_send_args(type, data, len)) {
        return WS_EINVAL;
    }
    if (len > WS_PUBLISH_MAX - klen) {
        return WS_ETOOBIG;          /* the backplane ring takes no more */
    }
    if ((flags & WS_PUBLISH_LOCAL) || !ws_backplane) {
        ws_pubsub_local_id(&meta->id);
        meta->local = 1;
        ws_pubsub_deliver(NULL, key, klen, opcode, data, len, meta);
        return WS_SUCCESS;
    }
    return ws_bp_publish(ws_backplane, key, klen, opcode, data, len, meta) == 0
           ? WS_SUCCESS : WS_ENOMEM;
}

int ws_pubsub_publish(const char *key, size_t klen, int type, const void *data,
                      size_t len, int flags)
{
    ws_bp_meta meta;
    memset(&meta, 0, sizeof(meta));
    return ws_pubsub_publish_meta(key, klen, type, data, len, flags, &meta);
}
