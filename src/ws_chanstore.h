/*
 * ws_chanstore.h - per child: each channel's history (the last messages, bounded by
 * count, age and memory: WebSocketChannelHistory*), fed by the backplane's delivery.
 * Every child sees every publish in the same order, so every child holds the same
 * history; a new subscriber's catch-up (a resume point, or the first-message policy)
 * is served from it.  Any thread; one mutex.  The ring itself: ws_history.h.
 */
#ifndef WS_CHANSTORE_H
#define WS_CHANSTORE_H

#include "apr_pools.h"
#include "apr_time.h"

#include "ws_handle.h"

typedef struct ws_chanstore_limits {
    long max_msgs;                /* per channel (0: none kept) */
    apr_interval_time_t max_age;  /* 0: no age bound */
    apr_size_t max_bytes;         /* every channel's messages together */
    long max_channels;            /* channels with a history; the least recently
                                   * published one goes first */
} ws_chanstore_limits;

#define WS_CHANSTORE_DEFAULT_MSGS 100
#define WS_CHANSTORE_DEFAULT_BYTES (64 * 1024 * 1024)
#define WS_CHANSTORE_DEFAULT_CHANNELS 10000

/* Config time (post_config): the limits of this generation. */
void ws_chanstore_configure(const ws_chanstore_limits *l);
/* child_init: the server's counter now (messages before it are not in this child's
 * history: a resume point before it is told that messages were lost). */
void ws_chanstore_child_init(apr_pool_t *pchild, const ws_msgid *now);

/* Store a delivered message (takes a reference to p, which has a key and an id). */
void ws_chanstore_add(ws_payload *p);
/* The channel ended: forget its history. */
void ws_chanstore_delete(const char *key, size_t klen);
/* 1 if key has a history here (it was published to and not deleted), with the number
 * of messages stored and the last id (seq 0: none). */
int ws_chanstore_info(const char *key, size_t klen, apr_size_t *messages, ws_msgid *last);

/* A new subscriber's catch-up: stored messages of the keys, in id order, each with a
 * reference the caller releases (ws_catchup_release). */
typedef struct ws_catchup {
    ws_payload **p;
    apr_size_t n;
    int lost;                     /* messages after the resume point are gone */
} ws_catchup;

/* after: the resume point, or NULL: then `first` says what to send (0: nothing, only
 * what comes next; -1: everything stored; N > 0: the last N).  current: the server's
 * latest id if known (seq 0 otherwise): a resume point of another epoch is lost. */
void ws_chanstore_catchup(const char *const *keys, const apr_size_t *klens, int nkeys,
                          const ws_msgid *after, long first, const ws_msgid *current,
                          apr_pool_t *pool, ws_catchup *out);
void ws_catchup_release(ws_catchup *c);
/* Put a catch-up in id order; without a resume point keep the last `first` (> 0). */
void ws_catchup_order(ws_catchup *c, const ws_msgid *after, long first);

/* The newest id stored (or dropped) on any of the keys, else *dflt. */
ws_msgid ws_chanstore_latest(const char *const *keys, const apr_size_t *klens, int nkeys,
                             const ws_msgid *dflt);
/* Subscriber counts over every child (shared memory the parent made, zeroed; NULL:
 * none, then ws_chanstore_subs returns -1).  Config time. */
void ws_chanstore_set_counts(void *mem, apr_size_t bytes);
/* A subscription to key came (delta 1) or went (-1) in this child. */
void ws_chanstore_subs_add(const char *key, size_t klen, int delta);
/* Subscribers of key in every child of this server, or -1 if not counted. */
long ws_chanstore_subs(const char *key, size_t klen);

/* A message of the backplane reached this child (delivery order). */
void ws_chanstore_seen(const ws_msgid *id);
/* 1 while this child has not yet seen the message with id upto (same epoch). */
int ws_chanstore_behind(const ws_msgid *upto);

#endif
