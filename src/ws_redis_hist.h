/*
 * ws_redis_hist.h - channel histories kept in Redis (WebSocketBackplane redis://): the
 * publish script (ws_backplane.c) appends each message to the stream PREFIX!h:KEY
 * (MAXLEN ~ WebSocketChannelHistory, the entry id is the message id); a subscriber
 * that catches up on any server reads it here, so another server serves what it never
 * received.  Handler thread: one short-lived connection per catch-up.
 */
#ifndef WS_REDIS_HIST_H
#define WS_REDIS_HIST_H

#include <stddef.h>

#include "ws_backplane.h"
#include "ws_history.h"

typedef void (*ws_redis_hist_fn)(void *baton, const ws_msgid *id, int opcode,
                                 const unsigned char *data, size_t len);

/* The stored messages of key after `after` (NULL: the last `count`), oldest first,
 * through fn; *lost when messages after `after` are gone (another epoch, or trimmed).
 * Returns the number of messages, or -1 (no Redis, no stream, or an error: the caller
 * uses this child's history). */
int ws_redis_history(ws_bp *bp, const char *key, size_t klen, const ws_msgid *after,
                     long count, int *lost, ws_redis_hist_fn fn, void *baton);

#endif
