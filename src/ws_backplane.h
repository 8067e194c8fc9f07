/*
 * ws_backplane.h - carries published channel messages to every child process of this
 * httpd (embedded: a ring in shared memory made by the parent, src/ws_ring.c) and, with
 * `WebSocketBackplane redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/PREFIX]`, to every
 * server sharing a Redis (rediss: TLS, src/ws_redis_tls.c).  What comes from Redis is
 * validated like a client's frame (and the channel key like a plugin's, src/ws_channel.h)
 * before delivery; bad messages are dropped and counted.
 *
 * The backplane knows nothing of connections: each child hands it a delivery function,
 * which its reader threads call for every message, in order, on one thread per source
 * (the ring reader; the Redis subscriber).  mod_websocket.c maps channels to subscribers.
 */
#ifndef WS_BACKPLANE_H
#define WS_BACKPLANE_H

#include "httpd.h"
#include "apr_pools.h"

#include "ws_history.h"

typedef struct ws_bp ws_bp;

/* What travels with a message besides channel and payload: its id (ws_history.h),
 * assigned at publish (embedded: a counter in the shared memory, under the ring's lock;
 * Redis: INCR in the same script that PUBLISHes), and whether it is a message or the
 * end of the channel (DELETE on a publisher location, docs/channels.md). */
enum { WS_BP_MESSAGE = 0, WS_BP_DELETE = 1 };
typedef struct ws_bp_meta {
    ws_msgid id;                  /* out of ws_bp_publish (seq 0: not known) */
    int ctl;                      /* WS_BP_MESSAGE or WS_BP_DELETE */
    int wait_id;                  /* in: Redis: wait (up to 5 s) until the id is known */
    int local;                    /* delivered in this child only (WS_PUBLISH_LOCAL) */
} ws_bp_meta;

/* Called on a backplane thread for every message; data is valid during the call. */
typedef void (*ws_bp_deliver_fn)(void *baton, const char *channel, size_t channel_len,
                                 int opcode, const unsigned char *data, size_t len,
                                 const ws_bp_meta *meta);

#define WS_BP_RING_SIZE (8 * 1024 * 1024)   /* embedded ring; a message may use half */

/* In the parent (post_config): make the ring for this configuration generation.
 * redis_url is NULL for the embedded backplane alone.  Returns NULL with *err set on
 * failure. */
ws_bp *ws_bp_create(apr_pool_t *pconf, const char *redis_url, const char **err);

/* In each child: start the reader thread (and the Redis threads); stopped and joined
 * by a pchild cleanup. */
void ws_bp_child_init(ws_bp *bp, apr_pool_t *pchild, ws_bp_deliver_fn fn, void *baton);

/* A part of /server-status: the skip and drop counters over every child. */
void ws_bp_status(ws_bp *bp, request_rec *r, int short_form);

/* Any thread: publish to every child (and every server with Redis).  Returns 0, or -1
 * if the message is too large for the ring or memory ran out. */
int ws_bp_publish(ws_bp *bp, const char *channel, size_t channel_len, int opcode,
                  const void *data, size_t len, ws_bp_meta *meta);

/* Any thread: an id from this server's counter for a message that does not travel
 * (WS_PUBLISH_LOCAL). */
void ws_bp_local_id(ws_bp *bp, ws_msgid *id);
/* The id of the last message that went through the ring (embedded: every child gets
 * it); seq 0 with Redis (Redis keeps the counter). */
void ws_bp_current(ws_bp *bp, ws_msgid *id);

/* Config time: messages each channel's history keeps (the Redis stream's MAXLEN). */
void ws_bp_set_history(ws_bp *bp, long n);
/* A new connection to the backplane's Redis (NULL: none, or it failed) and the key
 * prefix ("PREFIX:"), for reading channel histories (ws_redis_hist.c). */
struct redisContext *ws_bp_redis_connect(ws_bp *bp);
const char *ws_bp_redis_prefix(ws_bp *bp);

/* Zeroed shared memory of WS_BP_COUNTS_BYTES for the subscriber counts of every child
 * (ws_chanstore.c). */
#define WS_BP_COUNTS_BYTES (64 * 1024)
void *ws_bp_counts_mem(ws_bp *bp);

#endif
