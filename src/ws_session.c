/*
 * ws_session.c - a session's life on its owner thread: input through the connection's
 * filters into the protocol core, events into plugin callbacks, other threads' queued
 * messages and close requests, timers (pings, dead peers, the close deadline), and the
 * end of the session.  See ws_session.h.
 */
#include <stdlib.h>
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_connection.h"
#include "http_core.h"
#include "http_log.h"
#include "http_ssl.h"
#include "mpm_common.h"
#include "apr_strings.h"

#include "ws_session.h"
#include "ws_status.h"

APLOG_USE_MODULE(websocket);

#define WS_READ_SIZE 65536                /* per-thread flatten buffer */
#define WS_WARM_FREE (32 * 1024)          /* allocator nodes a busy session keeps */
#define WS_WARM_NODES 4                   /* ... at most this many (8 KB or more) */
#define WS_COOL_AFTER apr_time_from_sec(1)  /* quiet this long: give them back */
#define WS_TLS_CHURN (64 * 1024)          /* a TLS handshake counts as this much churn */
#define WS_SLOW_CALLBACK apr_time_from_msec(10)   /* logged with the session */
#define WS_WARN_CALLBACK apr_time_from_msec(100)  /* ... and warned about on a loop */

/* The read buffer is per thread, not per session: the parser keeps what it needs of a
 * partial frame, so an idle session holds no read buffer. */
static __thread unsigned char ws_rbuf[WS_READ_SIZE];

void ws_session_timed(ws_conn *s, const char *cb, apr_time_t started)
{
    apr_interval_time_t took = apr_time_now() - started;
    if (took < WS_SLOW_CALLBACK || took <= s->slow_time) {
        return;
    }
    s->slow_cb = cb;
    s->slow_time = took;
    if (s->async && took >= WS_WARN_CALLBACK) {
        ap_log_cerror(APLOG_MARK, APLOG_WARNING, 0, s->c, "WS00041: plugin %s: %s took "
                      "%.1f ms on an event-loop thread (every session of that loop "
                      "waited): callbacks must not block (docs/plugins.md)",
                      s->inst->p.name, cb, (double)took / 1000);
    }
}

static void ws_on_event(ws_conn *s, const ws_event *ev)
{
    switch (ev->type) {
    case WS_EV_MESSAGE: {
        const uint8_t *data = ev->data;
        size_t len = ev->len;
        s->msgs_in++;
        if (s->state != WS_ST_OPEN) {
            return;     /* RFC 6455 1.4: after our close, data may still arrive; drop it */
        }
        if (!ev->compressed && (apr_off_t)len > s->conf->max_message) {
            ws_fail(s, WS_CLOSE_TOO_BIG, ws_error_text(WS_ERR_TOO_BIG));
            return;
        }
        if (ev->compressed) {
            /* RFC 7692 7.2.2; the size limit applies to what comes out (a small bomb
             * never costs more than WebSocketMaxMessageSize), text is checked as it
             * comes out (RFC 6455 8.1). */
            int rv = ws_pmd_decompress(s->pmd, ev->data, ev->len,
                                       (size_t)s->conf->max_message,
                                       ev->opcode == WS_OP_TEXT, &data, &len);
            if (rv != WS_OK) {
                ws_fail(s, ws_error_close_code(rv), ws_error_text(rv));
                return;
            }
        }
        if (s->inst->p.on_message) {
            apr_time_t t0 = apr_time_now();
            int rv = s->inst->p.on_message(s, ev->opcode == WS_OP_TEXT ? WS_TEXT : WS_BINARY,
                                           data, len);
            ws_session_timed(s, "on_message", t0);
            if (rv != 0) {
                ws_fail(s, WS_CLOSE_INTERNAL, "plugin error");
            }
        }
        break;
    }
    case WS_EV_PING:
        /* RFC 6455 5.5.2: answer with a pong carrying the same data, unless closing */
        if (!s->close_sent) {
            ws_out_frame(s, WS_OP_PONG, ev->data, ev->len);
        }
        break;
    case WS_EV_PONG:
        break;      /* any input proves the peer is alive: see ws_consume */
    case WS_EV_CLOSE:
        s->close_received = 1;
        if (!s->close_sent) {
            /* RFC 6455 5.5.1: echo the status code we received, and its reason (the
             * parser checked it is UTF-8 and at most 123 bytes), as browsers and
             * other servers expect */
            s->close_code = ev->close_code;
            s->close_reason = apr_pstrmemdup(s->c->pool, (const char *)ev->data, ev->len);
            ws_send_close(s, ev->close_code == WS_CLOSE_NO_STATUS ? 0 : ev->close_code,
                          s->close_reason);
        }
        s->state = WS_ST_DONE;
        break;
    default:
        break;
    }
}

/*
 * Allocator warmth.  The event MPM gives every connection an APR allocator of its own
 * that keeps up to MaxMemFree of freed memory (2 MB by default): what idle sessions
 * keep there is their largest cost (25.7 KiB each, against 12.0 without).  A small
 * MaxMemFree instead maps and unmaps each socket read's 8 KB buffer (three quarters of
 * a busy echo's throughput) and every node of httpd's own requests (POSTs: 11,000/s
 * against 33,000/s).  So a session sets its own limit, whatever MaxMemFree says: with
 * steady traffic it keeps up to WS_WARM_FREE of nodes, and once quiet for
 * WS_COOL_AFTER it gives them back, the upgrade request's memory included.
 */
static void ws_alloc_warm(ws_conn *s)
{
    /* (An HTTP/2 stream's allocator is mod_http2's, with its own limit.) */
    if (s->alloc || s->c->master) {
        return;
    }
    s->alloc = apr_pool_allocator_get(s->c->pool);
    if (s->alloc) {
        apr_allocator_max_free_set(s->alloc, WS_WARM_FREE);
    }
}

static void ws_alloc_cool(ws_conn *s, int drain)
{
    apr_memnode_t *nodes[WS_WARM_NODES];
    int i, n = 0;
    if (!s->alloc) {
        return;
    }
    if (drain) {
        /* APR has no call that releases an allocator's free nodes.  With the limit
         * lowered, take out as many as it may hold (the smallest request is served by
         * any free node), then free them past the limit. */
        apr_allocator_max_free_set(s->alloc, 1);
        for (i = 0; i < WS_WARM_NODES; i++) {
            if ((nodes[n] = apr_allocator_alloc(s->alloc, 1)) != NULL) {
                n++;
            }
        }
        for (i = 0; i < n; i++) {
            apr_allocator_free(s->alloc, nodes[i]);
        }
    }
    apr_allocator_max_free_set(s->alloc, ap_max_mem_free);
    s->alloc = NULL;
}

void ws_session_drop_request(ws_conn *s, apr_pool_t *rpool)
{
    /* The request's nodes stay with the connection for WS_COOL_AFTER, as if the
     * handshake were steady traffic: a short session (connect, a message, close)
     * leaves them to the next connection on this pool instead of unmapping them and
     * having it map them again (a fifth of the connection rate). */
    ws_alloc_warm(s);
    apr_pool_destroy(rpool);
    if (s->alloc) {
        s->prev_input = s->last_input = apr_time_now();
    }
}

/* Steady traffic (this input came soon after the one before) keeps the nodes until
 * the session has been quiet for WS_COOL_AFTER; sporadic input (pings, a chat line
 * now and then) gives them back as soon as the session waits again. */
static apr_time_t ws_alloc_cool_at(const ws_conn *s)
{
    if (!s->alloc) {
        return 0;
    }
    if (!s->prev_input || s->last_input - s->prev_input >= WS_COOL_AFTER) {
        return s->last_input;
    }
    return s->last_input + WS_COOL_AFTER;
}

/* Feed n bytes of buf to the parser and act on every event. */
static void ws_consume(ws_conn *s, uint8_t *p, size_t n)
{
    s->bytes_in += n;
    s->prev_input = s->last_input;
    s->last_input = apr_time_now();
    s->ping_sent = 0;
    if (s->kind >= WS_KIND_SSE) {
        return;         /* an HTTP subscriber: what the client sends next is ignored */
    }
    while (n > 0 && s->state != WS_ST_DONE) {
        ws_event ev;
        size_t used = 0;
        int rv = ws_parser_feed(&s->parser, p, n, &used, &ev);
        p += used;
        n -= used;
        if (rv == WS_NEED_MORE) {
            break;
        }
        if (rv < 0) {
            ws_fail(s, ws_error_close_code(rv), ws_error_text(rv));
            break;
        }
        ws_on_event(s, &ev);
    }
}

/* Read what the input filters have without blocking.  Returns APR_SUCCESS if bytes
 * were consumed, APR_EAGAIN if none were there, APR_EOF or an error otherwise.
 * *drained is set when the read shows that nothing more is waiting: without TLS (the
 * core's input filter reads until it has what was asked or the socket says EAGAIN, and
 * no filter above it keeps bytes back) a read that returned less than asked took all
 * there was; mod_ssl may hold decrypted bytes, so TLS reads until EAGAIN.
 * Reads are asked in batches of two of the core's 8000-byte buffers, so that a busy
 * session needs few allocator nodes at a time (see ws_alloc_warm). */
#define WS_READ_BATCH (2 * APR_BUCKET_BUFF_SIZE)
static apr_status_t ws_read_available(ws_conn *s, int *drained)
{
    apr_status_t rv;
    apr_size_t len;
    int eos = 0;
    apr_bucket *b;

    *drained = 0;
    rv = ap_get_brigade(s->c->input_filters, s->bbin, AP_MODE_READBYTES,
                        APR_NONBLOCK_READ, WS_READ_BATCH);
    if (APR_STATUS_IS_EAGAIN(rv)) {
        return APR_EAGAIN;
    }
    if (rv != APR_SUCCESS) {
        apr_brigade_cleanup(s->bbin);
        return rv;
    }
    for (b = APR_BRIGADE_FIRST(s->bbin); b != APR_BRIGADE_SENTINEL(s->bbin);
         b = APR_BUCKET_NEXT(b)) {
        if (APR_BUCKET_IS_EOS(b)) {
            eos = 1;
        }
    }
    len = sizeof(ws_rbuf);
    rv = apr_brigade_flatten(s->bbin, (char *)ws_rbuf, &len);
    apr_brigade_cleanup(s->bbin);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    if (len) {
        *drained = len < WS_READ_BATCH && s->plain_input;
        ws_consume(s, ws_rbuf, len);
        return APR_SUCCESS;
    }
    if (eos && s->c->master && !s->bytes_in) {
        /* An HTTP/2 stream (RFC 8441): mod_http2 ends the upgrade request's body with
         * an EOS on the first read (h2_c2.c), before any of the client's bytes.  Not
         * the end of the stream: that comes as APR_EOF (or an abort) on a later read. */
        return APR_SUCCESS;
    }
    return eos ? APR_EOF : APR_EAGAIN;
}

/* Move what other threads queued into bbout, and act on their close or overflow. */
static void ws_drain_handle(ws_conn *s)
{
    ws_handle_work w;
    ws_qmsg *m;

    ws_handle_take(s->h, &w);
    for (m = w.list; m; m = m->next) {
        if (s->state == WS_ST_OPEN) {
            if (s->kind) {
                ws_push_message(s, m->p);   /* a channel subscriber's framing */
            }
            else {
                ws_out_message(s, (unsigned)m->p->opcode, m->p->data, m->p->len,
                               m->p->flags);
            }
            s->msgs_out++;
            /* (An HTTP subscriber's blocking driver writes through the request.) */
            if (!s->async && s->kind < WS_KIND_SSE && s->out_buffered >= WS_FLUSH_AT
                && ws_flush(s) != APR_SUCCESS) {
                s->state = WS_ST_DONE;
            }
        }
    }
    ws_qmsg_free_list(w.list);
    if (s->state == WS_ST_OPEN && s->kind >= WS_KIND_SSE && (w.overflow || w.close_code)) {
        ws_push_end(s, w.overflow ? WS_CLOSE_POLICY : w.close_code, w.close_reason);
    }
    else if (s->state == WS_ST_OPEN) {
        if (w.overflow) {
            ws_fail(s, WS_CLOSE_POLICY, "send queue overflow");
        }
        else if (w.close_code) {
            ws_send_close(s, (unsigned)w.close_code, w.close_reason);
        }
    }
}

/* Pings, the dead-peer timeout and the close-handshake deadline.  Returns when the
 * session next wants to run (0: never). */
static apr_time_t ws_timers(ws_conn *s, apr_time_t now)
{
    apr_interval_time_t interval = s->conf->ping_interval;
    apr_time_t next = 0;

    if (s->kind >= WS_KIND_SSE) {
        return ws_push_timers(s, now);      /* keep-alive comments, the poll's end */
    }
    if (s->state == WS_ST_CLOSING) {
        if (now >= s->close_deadline) {
            s->state = WS_ST_DONE;      /* the peer never answered our close */
            return 0;
        }
        return s->close_deadline;
    }
    if (s->state != WS_ST_OPEN || interval <= 0) {
        return 0;
    }
    if (s->ping_sent && now - s->ping_sent >= interval) {
        if (s->out_buffered > 0 || s->c->data_in_output_filters) {
            /* Our ping may still sit behind data the peer has not taken yet: that is
             * a slow reader, bounded by Timeout on the pending write, not a dead one.
             * Give it another interval once the output has drained. */
            s->ping_sent = now;
        }
        else {
            /* Documented: a peer that sends no frame for a whole interval after our
             * ping reached the socket is closed with 1001 "ping timeout". */
            ws_send_close(s, WS_CLOSE_GOING_AWAY, "ping timeout");
            return s->close_deadline;
        }
    }
    if (!s->ping_sent && now - s->last_input >= interval) {
        ws_out_frame(s, WS_OP_PING, NULL, 0);
        s->ping_sent = now;
    }
    next = s->ping_sent ? s->ping_sent + interval : s->last_input + interval;
    return next;
}

apr_time_t ws_session_round(ws_conn *s, int read_input, apr_size_t read_budget)
{
    apr_status_t rv = APR_SUCCESS;
    apr_time_t now, next, cool;
    apr_uint64_t start_in = s->bytes_in;
    int drained = 0;
    if (read_input) {
        ws_alloc_warm(s);
        /* Drain everything the filters already have: bytes mod_ssl decrypted, or a
         * frame that came in the same segment as the handshake, are invisible to poll. */
        do {
            rv = ws_read_available(s, &drained);
        } while (rv == APR_SUCCESS && !drained && s->state != WS_ST_DONE
                 && s->out_buffered < WS_FLUSH_AT
                 && (!read_budget || s->bytes_in - start_in < read_budget));
        /* Stopped to write first (backpressure) or to let other sessions have their
         * turn: more input may sit in the filters, where poll cannot see it; the
         * caller must read again before waiting. */
        s->input_pending = rv == APR_SUCCESS && !drained;
        if (rv != APR_SUCCESS && !APR_STATUS_IS_EAGAIN(rv)) {
            s->state = WS_ST_DONE;      /* EOF or error: TCP went away */
        }
    }
    ws_drain_handle(s);
    now = apr_time_now();
    next = ws_timers(s, now);
    cool = ws_alloc_cool_at(s);
    if (cool && cool <= now) {
        ws_alloc_cool(s, 1);
    }
    else if (cool && (!next || cool < next)) {
        next = cool;
    }
    return next;
}

void ws_session_idle(ws_conn *s)
{
    if (s->pmd) {
        ws_pmd_release(s->pmd);   /* an idle session keeps no output buffers */
    }
    ws_parser_release(&s->parser);  /* ... and no reassembly buffer between messages */
}

void ws_session_end(ws_conn *s)
{
    ws_handle *h = s->h;
    if (s->detached) {
        return;
    }
    s->detached = 1;
    if (s->opened && s->inst->p.on_close) {
        apr_time_t t0 = apr_time_now();
        s->inst->p.on_close(s, (int)s->close_code, s->close_reason ? s->close_reason : "");
        ws_session_timed(s, "on_close", t0);
    }
    ap_log_cerror(APLOG_MARK, APLOG_INFO, 0, s->c,
                  "WS00040: session end: plugin=%s driver=%s duration=%.3fs in=%"
                  APR_UINT64_T_FMT "msg/%" APR_UINT64_T_FMT "B out=%" APR_UINT64_T_FMT
                  "msg/%" APR_UINT64_T_FMT "B close=%u closed_by=%s proto=%s%s%s",
                  s->inst->p.name, s->async ? "async" : "blocking",
                  (double)(apr_time_now() - s->start) / APR_USEC_PER_SEC,
                  s->msgs_in, s->bytes_in, s->msgs_out, s->bytes_out, s->close_code,
                  s->closed_by_server ? "server"
                  : s->close_received ? "client" : "network",
                  !s->c->master ? "http/1.1"          /* RFC 8441: a stream of an h2 */
                  : ap_ssl_conn_is_ssl(s->c->master) ? "h2" : "h2c",
                  s->slow_cb ? " slowest_callback=" : "",
                  s->slow_cb ? apr_psprintf(s->c->pool, "%s:%.1fms", s->slow_cb,
                                            (double)s->slow_time / 1000) : "");
    if (s->opened) {
        ws_status_session_end(s->async, s->close_code, s->msgs_in, s->bytes_in,
                              s->msgs_out, s->bytes_out);
    }
    ws_pubsub_unsubscribe_all(&s->subs);
    /* Only the limit: the connection's pool is about to be recycled (the event MPM
     * keeps a few, ThreadsPerChild * 3/4 with MaxMemFree set) or destroyed, and the
     * next connection on it reuses what is left. */
    ws_alloc_cool(s, 0);
    ws_parser_free(&s->parser);
    ws_pmd_destroy(s->pmd);
    s->pmd = NULL;
    ws_handle_detach(h);
    s->h = NULL;
}

/* c->pool pre-cleanup: the last chance to tell the plugin and unlink the handle. */
static apr_status_t ws_session_cleanup(void *data)
{
    ws_session_end(data);
    return APR_SUCCESS;
}

ws_conn *ws_session_create(request_rec *r, ws_dir_conf *conf, int async)
{
    conn_rec *c = r->connection;
    ws_conn *s;

    s = apr_pcalloc(c->pool, sizeof(*s));
    s->c = c;
    s->r = r;
    s->inst = conf->inst;
    /* The merged per-directory config lives in r->pool, which dies at the handoff. */
    s->conf = apr_pmemdup(c->pool, conf, sizeof(*conf));
    s->state = WS_ST_OPENING;
    s->start = s->last_input = apr_time_now();
    s->bbin = apr_brigade_create(c->pool, c->bucket_alloc);
    s->bbout = apr_brigade_create(c->pool, c->bucket_alloc);
    s->bbtmp = apr_brigade_create(c->pool, c->bucket_alloc);
    s->close_code = WS_CLOSE_ABNORMAL;
    s->async = async;
    s->plain_input = !c->master && !ap_ssl_conn_is_ssl(c);
    ws_parser_init(&s->parser, (uint64_t)conf->max_message, 1);
    s->h = ws_handle_create(s, (apr_size_t)conf->max_queue);
    if (!s->h) {
        ws_parser_free(&s->parser);
        return NULL;
    }
    /* A pre-cleanup: sub-pools and buckets of c->pool are still there when it runs. */
    apr_pool_pre_cleanup_register(c->pool, s, ws_session_cleanup);
    /* A TLS handshake leaves tens of KB of freed OpenSSL memory in glibc's arenas:
     * a storm of new wss connections is traffic worth a trim too. */
    if (ap_ssl_conn_is_ssl(c)) {
        ws_heap_churn_add(WS_TLS_CHURN);
    }

    return s;
}
