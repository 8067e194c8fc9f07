/*
 * ws_pubsub.h - channels: per child, channel name -> subscribers (handles), and
 * publishing through the backplane (every child, or every server sharing a Redis).
 * Keys are namespaced channel names made by ws_channel_key (ws_channel.h).
 */
#ifndef WS_PUBSUB_H
#define WS_PUBSUB_H

#include <stddef.h>

#include "ws_backplane.h"
#include "ws_handle.h"

/* One subscription of one session; a session keeps its own list (conn_next). */
typedef struct ws_sub ws_sub;

/* Config time: the backplane of this generation (NULL: off, this child only). */
void ws_pubsub_set_backplane(ws_bp *bp);
ws_bp *ws_pubsub_backplane(void);

/* The session's owner thread: subscribe h to key (no-op if *subs has it already),
 * unsubscribe, or drop every subscription of the list. */
int ws_pubsub_subscribe(ws_sub **subs, ws_handle *h, const char *key, size_t len);
int ws_pubsub_unsubscribe(ws_sub **subs, const char *key, size_t len);
void ws_pubsub_unsubscribe_all(ws_sub **subs);

/* Any thread: publish to every subscriber of key on every child (or this child only
 * with WS_PUBLISH_LOCAL).  WS_* status. */
int ws_pubsub_publish(const char *key, size_t klen, int type, const void *data,
                      size_t len, int flags);
/* The same with what travels with it: meta->ctl (a message, or the end of the channel)
 * in, meta->id out (seq 0 if not known; meta->wait_id waits for Redis's). */
int ws_pubsub_publish_meta(const char *key, size_t klen, int type, const void *data,
                           size_t len, int flags, ws_bp_meta *meta);

/* The backplane's delivery callback: store a published message in the channel's history
 * (ws_chanstore.h) and queue it to this child's subscribers; the end of a channel drops
 * its history and closes its channel subscribers (backplane threads, or the publisher
 * for WS_PUBLISH_LOCAL). */
void ws_pubsub_deliver(void *baton, const char *channel, size_t channel_len, int opcode,
                       const unsigned char *data, size_t len, const ws_bp_meta *meta);

/* Subscribers of key in every child (this child's if not counted) (any thread). */
size_t ws_pubsub_count(const char *key, size_t klen);

#endif
