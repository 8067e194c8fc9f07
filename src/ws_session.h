/*
 * ws_session.h - one WebSocket session (struct ws_conn, as plugins see it in the ABI),
 * owned by exactly one thread at a time: the handler thread until the 101 is sent, then
 * its driver's thread (an event loop, or the blocking driver).  Only the owner touches
 * the connection's filters (mod_ssl lives there: two threads in one SSL object is how
 * older Apache WebSocket modules crashed); other threads go through the handle.
 *
 * ws_session.c: state, input, the plugin's callbacks, timers, the end of a session.
 * ws_output.c: frames out, blocking and non-blocking writes, the close handshake.
 */
#ifndef WS_SESSION_H
#define WS_SESSION_H

#include "httpd.h"
#include "apr_buckets.h"

#include "ws_conf.h"
#include "ws_deflate.h"
#include "ws_handle.h"
#include "ws_proto.h"
#include "ws_pubsub.h"
#include "ws_push.h"

#define WS_FLUSH_AT 65536                     /* flush in-callback sends past this */
#define WS_CLOSE_WAIT apr_time_from_sec(5)    /* wait for the peer's close reply */

typedef enum { WS_ST_OPENING, WS_ST_OPEN, WS_ST_CLOSING, WS_ST_DONE } ws_state;

struct ws_conn {
    conn_rec *c;
    request_rec *r;               /* valid during on_open only */
    ws_instance *inst;
    const ws_dir_conf *conf;      /* a copy in c->pool of the request's merged config */
    ws_handle *h;
    apr_bucket_brigade *bbin;
    apr_bucket_brigade *bbout;    /* frames not yet passed to the filters */
    apr_bucket_brigade *bbtmp;
    apr_off_t out_buffered;       /* bytes in bbout */
    ws_parser parser;
    ws_pmd *pmd;                  /* permessage-deflate state, if negotiated */
    ws_state state;
    int async;                    /* owned by an event loop (never blocks) */
    int input_pending;            /* the last read stopped before the filters ran dry */
    int plain_input;              /* no TLS, not an h2 stream: a short read drains */
    int detached;                 /* ws_session_end ran */
    void *user_data;
    ws_sub *subs;                 /* this session's channel subscriptions */
    const char *protocol;
    const char *const *offered;
    int opened;                   /* on_open accepted: on_close is owed */
    int close_sent;
    int close_received;
    int closed_by_server;
    unsigned close_code;          /* for on_close and the log */
    const char *close_reason;
    apr_time_t close_deadline;
    apr_time_t last_input;
    apr_time_t prev_input;        /* the input before last_input: is traffic steady? */
    apr_allocator_t *alloc;       /* the connection's allocator, while kept warm */
    apr_size_t write_chunk;       /* most bytes handed to the filters at once */
    apr_time_t ping_sent;         /* 0 when no ping is outstanding */
    apr_time_t start;
    const char *slow_cb;          /* the callback that took longest, for the log */
    apr_interval_time_t slow_time;
    apr_uint64_t msgs_in, msgs_out, bytes_in, bytes_out;
    int kind;                     /* WS_KIND_*: a plugin's session, or a channel
                                   * subscriber's (ws_push.h) */
    ws_push_sess *push;           /* the subscriber's state, or NULL */
};

/* ---- ws_session.c (owner thread) ---- */

/* A new session for the upgrade request r (in c->pool, with a registered handle), or
 * NULL out of memory.  Handler thread. */
ws_conn *ws_session_create(request_rec *r, ws_dir_conf *conf, int async);

/* One round of work: read what the filters have (at most read_budget bytes; 0: until
 * they run dry or output backs up), act on other threads' requests, run the timers.
 * Does not write.  Returns when the session next wants its timers run (0: never). */
apr_time_t ws_session_round(ws_conn *s, int read_input, apr_size_t read_budget);

/* An idle session keeps no parser or deflate buffers. */
void ws_session_idle(ws_conn *s);

/* Loop thread, once the MPM has let go of the connection: destroy the upgrade
 * request's pool; its memory goes back to the system once the session is quiet
 * (whatever MaxMemFree allows the connection's allocator to keep). */
void ws_session_drop_request(ws_conn *s, apr_pool_t *rpool);

/* End the session: on_close, the log line, status counters, subscriptions, the handle.
 * Idempotent. */
void ws_session_end(ws_conn *s);

/* Time a plugin callback (for the session log's slowest callback). */
void ws_session_timed(ws_conn *s, const char *cb, apr_time_t started);

/* ---- ws_output.c (owner thread) ---- */

void ws_out_frame(ws_conn *s, unsigned opcode, const void *data, size_t len);
/* Bytes as they are (an HTTP subscriber's stream: ws_push_out.c). */
void ws_out_raw(ws_conn *s, const void *data, size_t len);
void ws_out_message(ws_conn *s, unsigned opcode, const void *data, size_t len, int flags);
/* Blocking write of everything buffered (blocking driver, on_open's output). */
apr_status_t ws_flush(ws_conn *s);
/* Non-blocking write of at most budget bytes (0: no bound).  Returns 1 if output is
 * still pending. */
int ws_write_nonblocking(ws_conn *s, apr_size_t budget);
/* Most bytes handed to c's filters at once (FlushMaxThreshold, less for TLS). */
apr_size_t ws_write_chunk(conn_rec *c);
/* Send a close frame (once) and move to CLOSING (DONE if the peer's came first). */
void ws_send_close(ws_conn *s, unsigned code, const char *reason);
/* RFC 6455 7.1.7: fail the connection: send the close code if we can, then end. */
void ws_fail(ws_conn *s, unsigned code, const char *reason);

#endif
