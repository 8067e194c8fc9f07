/*
 * ws_push.c - the handler of channel locations (ws_push.h, docs/channels.md):
 * publishers (POST/PUT publish, GET shows, DELETE ends a channel) and subscribers by
 * EventSource or long-poll; WebSocket subscribers are upgraded by ws_handler with the
 * built-in instance whose on_open (here) subscribes them.  Handler thread.
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "util_script.h"
#include "apr_strings.h"

#include "ws_channel.h"
#include "ws_chanstore.h"
#include "ws_h2.h"
#include "ws_handshake.h"
#include "ws_loop.h"
#include "ws_push.h"
#include "ws_redis_hist.h"
#include "ws_session.h"
#include "ws_status.h"

APLOG_USE_MODULE(websocket);

/* The channel keys of r (in pool: a session's outlive r, whose pool the event loop frees
 * early): the location's channels, or the last path segment (a comma separated list on
 * a subscriber).  OK, or 400 for a bad or missing name. */
static int ws_push_keys(request_rec *r, const ws_dir_conf *conf, ws_push_sess *ps,
                        apr_pool_t *pool)
{
    const char *list = conf->push->channels, *slash;
    char *copy, *last = NULL, *name;
    int many = conf->push->role == WS_PUSH_SUBSCRIBER;
    if (!list) {
        slash = strrchr(r->uri, '/');
        list = slash ? slash + 1 : r->uri;
    }
    ps->keys = apr_pcalloc(pool, WS_PUSH_MAX_CHANNELS * sizeof(*ps->keys));
    ps->klens = apr_pcalloc(pool, WS_PUSH_MAX_CHANNELS * sizeof(*ps->klens));
    copy = apr_pstrdup(r->pool, list);
    for (name = apr_strtok(copy, ",", &last); name; name = apr_strtok(NULL, ",", &last)) {
        char *key = apr_palloc(pool, WS_CHANNEL_KEY_MAX + 1);
        size_t klen = ws_channel_key(key, conf->ns, name);
        if (!klen || ps->nkeys == WS_PUSH_MAX_CHANNELS || (ps->nkeys && !many)) {
            ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "WS00060: bad channel name(s) "
                          "'%.200s'", list);
            return HTTP_BAD_REQUEST;
        }
        ps->keys[ps->nkeys] = key;
        ps->klens[ps->nkeys++] = klen;
    }
    ps->multi = ps->nkeys > 1;
    return ps->nkeys ? OK : HTTP_BAD_REQUEST;
}

/* The server's latest id (embedded backplane; seq 0 if unknown), after this child's
 * delivery caught up with it (read your writes across children, up to 200 ms). */
static void ws_push_current(ws_msgid *cur)
{
    ws_bp *bp = ws_pubsub_backplane();
    int i;
    cur->epoch = cur->seq = 0;
    if (bp) {
        ws_bp_current(bp, cur);
    }
    for (i = 0; cur->seq && i < 200 && ws_chanstore_behind(cur); i++) {
        apr_sleep(apr_time_from_msec(1));
    }
}

/* The (first) channel's name as a JSON string. */
static const char *ws_push_quote(apr_pool_t *p, const ws_push_sess *ps)
{
    const char *sep = memchr(ps->keys[0], WS_CHANNEL_SEP, ps->klens[0]);
    const char *name = sep ? sep + 1 : ps->keys[0];
    return ws_json_string(p, name, ps->klens[0] - (size_t)(name - ps->keys[0]));
}

static char *ws_push_idjson(apr_pool_t *p, const ws_msgid *id)
{
    char buf[WS_MSGID_LEN];
    if (!id->seq) {
        return "null";
    }
    ws_msgid_format(buf, id);
    return apr_pstrcat(p, "\"", buf, "\"", NULL);
}

static int ws_push_json_answer(request_rec *r, int status, const char *body)
{
    r->status = status;
    ap_set_content_type(r, "application/json");
    apr_table_setn(r->headers_out, "Cache-Control", "no-store");
    ap_set_content_length(r, (apr_off_t)strlen(body));
    if (!r->header_only) {
        ap_rputs(body, r);
    }
    return OK;
}

/* Read the request body: OK, 413 past max, or 400. */
static int ws_push_body(request_rec *r, apr_size_t max, char **data, apr_size_t *len)
{
    const char *cl = apr_table_get(r->headers_in, "Content-Length");
    apr_size_t cap = 8192, n = 0;
    char *buf;
    long got;
    int rv = ap_setup_client_block(r, REQUEST_CHUNKED_DECHUNK);
    if (rv != OK) {
        return rv;
    }
    if (cl && apr_atoi64(cl) > (apr_int64_t)max) {
        return HTTP_REQUEST_ENTITY_TOO_LARGE;
    }
    buf = malloc(cap);
    while (buf && (got = ap_get_client_block(r, buf + n, cap - n)) > 0) {
        n += (apr_size_t)got;
        if (n > max) {
            free(buf);
            return HTTP_REQUEST_ENTITY_TOO_LARGE;
        }
        if (n == cap) {
            char *more = realloc(buf, cap * 2);
            if (!more) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = more;
            cap *= 2;
        }
    }
    if (!buf) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (got < 0) {
        free(buf);
        return HTTP_BAD_REQUEST;
    }
    *data = buf;
    *len = n;
    return OK;
}

/* Text (UTF-8) for text/\*, application/json, no Content-Type, or a form (what
 * `curl -d` sends: the body is taken as it is, not decoded); binary otherwise. */
static int ws_push_type(request_rec *r)
{
    const char *ct = apr_table_get(r->headers_in, "Content-Type");
    return !ct || !strncasecmp(ct, "text/", 5) || !strncasecmp(ct, "application/json", 16)
           || !strncasecmp(ct, "application/x-www-form-urlencoded", 33)
           ? WS_TEXT : WS_BINARY;
}

static int ws_push_publish(request_rec *r, const ws_dir_conf *conf, ws_push_sess *ps)
{
    apr_size_t max = WS_PUBLISH_MAX - ps->klens[0], len = 0;
    char *data = NULL;
    ws_bp_meta meta;
    int type = ws_push_type(r), rv;
    if ((apr_off_t)max > conf->max_message) {
        max = (apr_size_t)conf->max_message;
    }
    if ((rv = ws_push_body(r, max, &data, &len)) != OK) {
        return rv;
    }
    memset(&meta, 0, sizeof(meta));
    meta.wait_id = 1;
    rv = ws_pubsub_publish_meta(ps->keys[0], ps->klens[0], type, data, len, 0, &meta);
    free(data);
    if (rv == WS_EINVAL) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "WS00061: publish refused: the "
                      "message is text but not UTF-8");
        return HTTP_BAD_REQUEST;
    }
    if (rv != WS_SUCCESS) {
        return rv == WS_ETOOBIG ? HTTP_REQUEST_ENTITY_TOO_LARGE : HTTP_SERVICE_UNAVAILABLE;
    }
    return ws_push_json_answer(r, HTTP_OK, apr_psprintf(r->pool,
        "{\"id\":%s,\"channel\":%s,\"subscribers\":%lu}", ws_push_idjson(r->pool, &meta.id),
        ws_push_quote(r->pool, ps),
        (unsigned long)ws_pubsub_count(ps->keys[0], ps->klens[0])));
}

/* GET: the channel's state; DELETE: its end (every child, every server). */
static int ws_push_info(request_rec *r, ws_push_sess *ps)
{
    apr_size_t n = 0, subs;
    ws_msgid last = { 0, 0 }, cur;
    ws_bp_meta meta;
    const char *name = ws_push_quote(r->pool, ps);
    ws_push_current(&cur);
    subs = ws_pubsub_count(ps->keys[0], ps->klens[0]);
    if (!ws_chanstore_info(ps->keys[0], ps->klens[0], &n, &last) && !subs) {
        return HTTP_NOT_FOUND;
    }
    if (r->method_number == M_GET) {
        return ws_push_json_answer(r, HTTP_OK, apr_psprintf(r->pool, "{\"channel\":%s,"
            "\"subscribers\":%lu,\"messages\":%lu,\"last_id\":%s}", name,
            (unsigned long)subs, (unsigned long)n, ws_push_idjson(r->pool, &last)));
    }
    memset(&meta, 0, sizeof(meta));
    meta.ctl = WS_BP_DELETE;
    meta.wait_id = 1;
    if (ws_pubsub_publish_meta(ps->keys[0], ps->klens[0], WS_TEXT, "", 0, 0, &meta)
        != WS_SUCCESS) {
        return HTTP_SERVICE_UNAVAILABLE;
    }
    return ws_push_json_answer(r, HTTP_OK, apr_psprintf(r->pool, "{\"channel\":%s,"
                               "\"deleted\":true,\"subscribers\":%lu}", name,
                               (unsigned long)subs));
}

/* The resume point: Last-Event-ID, else ?last_event_id=.  OK (*has: there is one) or
 * 400 for a malformed one. */
static int ws_push_resume(request_rec *r, ws_msgid *resume, int *has)
{
    const char *v = apr_table_get(r->headers_in, "Last-Event-ID");
    *has = 0;
    if (!v && r->args) {
        apr_table_t *args = NULL;
        ap_args_to_table(r, &args);
        v = args ? apr_table_get(args, "last_event_id") : NULL;
    }
    if (!v || !*v) {
        return OK;
    }
    if (!ws_msgid_parse(v, strlen(v), resume)) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "WS00062: bad resume id '%.60s'", v);
        return HTTP_BAD_REQUEST;
    }
    *has = 1;
    return OK;
}

/* A message of a channel's Redis history, for the catch-up being built. */
typedef struct ws_push_rh {
    apr_array_header_t *list;     /* ws_payload * */
    const char *key;
    apr_size_t klen;
} ws_push_rh;

static void ws_push_rh_add(void *baton, const ws_msgid *id, int opcode,
                           const unsigned char *data, size_t len)
{
    ws_push_rh *b = baton;
    ws_payload *p = ws_payload_create_keyed(opcode, data, len, b->key, b->klen, id);
    if (p) {
        APR_ARRAY_PUSH(b->list, ws_payload *) = p;
    }
}

/* With a Redis backplane the catch-up comes from the channels' streams in Redis, which
 * every server shares (ws_redis_hist.h).  0, or -1: use this child's history. */
static int ws_push_redis_catchup(const ws_push_sess *ps, const ws_msgid *after,
                                 long first, apr_pool_t *pool, ws_catchup *out)
{
    ws_bp *bp = ws_pubsub_backplane();
    ws_push_rh b;
    int k, lost = 0;
    memset(out, 0, sizeof(*out));
    if (!bp || (!after && first == 0)) {
        return -1;
    }
    b.list = apr_array_make(pool, 16, sizeof(ws_payload *));
    for (k = 0; k < ps->nkeys; k++) {
        int l = 0;
        b.key = ps->keys[k];
        b.klen = ps->klens[k];
        if (ws_redis_history(bp, b.key, b.klen, after, after || first < 0 ? 100000 : first,
                             &l, ws_push_rh_add, &b) < 0) {
            out->p = (ws_payload **)b.list->elts;
            out->n = (apr_size_t)b.list->nelts;
            ws_catchup_release(out);
            return -1;
        }
        lost |= l;
    }
    out->p = (ws_payload **)b.list->elts;
    out->n = (apr_size_t)b.list->nelts;
    out->lost = lost;
    ws_catchup_order(out, after, first);
    return 0;
}

/* Subscribe s to its channels, then send what it missed or what the first-message
 * policy gives (catch-up and live delivery may overlap: ws_push_message skips ids it
 * sent).  A long-poll without messages remembers the newest id it knows, for its
 * X-Last-Event-ID.  OK, or 500. */
static int ws_push_subscribe(ws_conn *s, request_rec *r, int has_resume)
{
    ws_push_sess *ps = s->push;
    const ws_dir_conf *conf = s->conf;
    ws_msgid cur;
    ws_catchup cu;
    apr_size_t i;
    int k;
    s->h->push_kind = s->kind;
    for (k = 0; k < ps->nkeys; k++) {
        if (ws_pubsub_subscribe(&s->subs, s->h, ps->keys[k], ps->klens[k]) != WS_SUCCESS) {
            return HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    ws_push_current(&cur);
    if (ws_push_redis_catchup(ps, has_resume ? &ps->resume : NULL, conf->push->first_set
                              ? conf->push->first : 0, r->pool, &cu) != 0) {
        ws_chanstore_catchup(ps->keys, ps->klens, ps->nkeys, has_resume ? &ps->resume : NULL,
                             conf->push->first_set ? conf->push->first : 0, &cur, r->pool,
                             &cu);
    }
    ps->last = has_resume ? ps->resume : cur;
    if (!has_resume || cu.lost) {
        ps->last.seq = 0;
    }
    if (cu.lost) {
        ws_push_lost(s, &ps->resume);
    }
    for (i = 0; i < cu.n; i++) {
        ws_push_message(s, cu.p[i]);
        s->msgs_out++;
    }
    ws_catchup_release(&cu);
    if (!ps->last.seq) {
        ps->last = ws_chanstore_latest(ps->keys, ps->klens, ps->nkeys, &cur);
    }
    return OK;
}

/* OK, or 503 when a channel has WebSocketChannelMaxSubscribers already. */
static int ws_push_admit(request_rec *r, const ws_dir_conf *conf, const ws_push_sess *ps)
{
    int k;
    for (k = 0; conf->push->max_subs > 0 && k < ps->nkeys; k++) {
        if (ws_pubsub_count(ps->keys[k], ps->klens[k]) >= (size_t)conf->push->max_subs) {
            ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "WS00063: subscriber refused: "
                          "the channel has WebSocketChannelMaxSubscribers (%ld)",
                          conf->push->max_subs);
            return HTTP_SERVICE_UNAVAILABLE;
        }
    }
    return OK;
}

/* The built-in instance's on_open: a WebSocket subscriber (s->r is the request). */
static int ws_push_ws_open(ws_conn *s, const ws_request *req)
{
    request_rec *r = s->r;
    ws_push_sess *ps = apr_pcalloc(s->c->pool, sizeof(*ps));
    int has, rv;
    (void)req;
    if ((rv = ws_push_keys(r, s->conf, ps, s->c->pool)) != OK
        || (rv = ws_push_admit(r, s->conf, ps)) != OK
        || (rv = ws_push_resume(r, &ps->resume, &has)) != OK) {
        return rv;
    }
    s->kind = WS_KIND_CHANNEL;
    s->push = ps;
    return ws_push_subscribe(s, r, has);
}

static ws_instance ws_push_inst;

ws_instance *ws_push_instance(void)
{
    if (!ws_push_inst.p.name) {
        ws_push_inst.p.magic = WS_PLUGIN_MAGIC;
        ws_push_inst.p.abi_version = WS_ABI_VERSION;
        ws_push_inst.p.size = sizeof(ws_push_inst.p);
        ws_push_inst.p.name = "channels";
        ws_push_inst.p.on_open = ws_push_ws_open;
        ws_push_inst.path = ws_push_inst.where = "(built in)";
    }
    return &ws_push_inst;
}

/* The waker of a subscriber on the handler thread: an eventfd per session. */
static void ws_push_wake(ws_handle *h, void *baton)
{
    uint64_t one = 1;
    ssize_t n;
    (void)h;
    do {
        n = write((int)(intptr_t)baton, &one, sizeof(one));
    } while (n < 0 && errno == EINTR);
}

/* The blocking driver of an HTTP subscriber (prefork, worker, HTTP/2): its output goes
 * through the request's filters (chunked, or HTTP/2 DATA frames); it waits on its
 * eventfd and, on HTTP/1.1, the socket (the client's EOF). */
static void ws_push_run_blocking(ws_conn *s, request_rec *r)
{
    conn_rec *c = s->c;
    apr_socket_t *sock = c->master ? NULL : ap_get_conn_socket(c);
    apr_os_sock_t fd = -1;
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (efd < 0) {
        return;
    }
    if (sock) {
        apr_os_sock_get(&fd, sock);
    }
    ws_handle_set_waker(s->h, ws_push_wake, (void *)(intptr_t)efd);
    while (s->state == WS_ST_OPEN) {
        struct pollfd fds[2] = { { efd, POLLIN, 0 }, { fd, POLLIN, 0 } };
        apr_time_t next = ws_session_round(s, fd >= 0, 0), left;
        apr_bucket_brigade *bb = s->bbout;
        if (s->kind == WS_KIND_POLL && s->state != WS_ST_OPEN) {
            break;                /* the answer goes out with the request */
        }
        if (s->kind == WS_KIND_SSE) {
            APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_flush_create(c->bucket_alloc));
            if (ap_pass_brigade(r->output_filters, bb) != APR_SUCCESS || c->aborted) {
                s->state = WS_ST_DONE;
            }
            apr_brigade_cleanup(bb);
            s->out_buffered = 0;
        }
        if (s->state != WS_ST_OPEN || s->input_pending) {
            continue;
        }
        left = next ? next - apr_time_now() : apr_time_from_sec(1);
        poll(fds, fd >= 0 ? 2 : 1, left <= 0 ? 0 : (int)(left / 1000) + 1);
        if (fds[0].revents) {
            uint64_t v;
            while (read(efd, &v, sizeof(v)) > 0) {
            }
        }
    }
    ws_handle_set_waker(s->h, NULL, NULL);
    ws_session_end(s);
    close(efd);
}

#define WS_SSE_HEAD "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n" \
                    "Cache-Control: no-store\r\nX-Accel-Buffering: no\r\nConnection: close\r\n\r\n"

/* An EventSource or long-poll subscriber: a session of kind `kind`.  On the event MPM
 * it leaves the MPM for a loop (the handler returns SUSPENDED; this module writes the
 * HTTP head, and the connection closes after the stream or the answer); otherwise it
 * runs here with the request's filters. */
/* The keys of a request's ws_push_sess copied into the session's pool. */
static void ws_push_keep_keys(ws_push_sess *ps, apr_pool_t *pool)
{
    const char **keys = apr_pcalloc(pool, WS_PUSH_MAX_CHANNELS * sizeof(*keys));
    apr_size_t *klens = apr_pmemdup(pool, ps->klens, WS_PUSH_MAX_CHANNELS * sizeof(*klens));
    int i;
    for (i = 0; i < ps->nkeys; i++) {
        keys[i] = apr_pmemdup(pool, ps->keys[i], ps->klens[i] + 1);
    }
    ps->keys = keys;
    ps->klens = klens;
}

static int ws_push_http_subscriber(request_rec *r, ws_dir_conf *conf, ws_push_sess *ps,
                                   int kind, int has_resume)
{
    int async = ws_wants_loop(r, conf), rv;
    ws_conn *s;
    /* On an HTTP/2 stream it holds an h2 worker while it waits: within the cap. */
    if (r->connection->master && !ws_h2_admit(r)) {
        return HTTP_SERVICE_UNAVAILABLE;
    }
    s = ws_session_create(r, conf, async);
    if (!s) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    s->kind = kind;
    s->push = apr_pmemdup(s->c->pool, ps, sizeof(*ps));
    ws_push_keep_keys(s->push, s->c->pool);
    s->push->r = r;
    s->push->batch = apr_array_make(s->c->pool, 8, sizeof(const char *));
    s->push->deadline = apr_time_now() + (conf->push->poll_timeout_set
                                          ? conf->push->poll_timeout : WS_PUSH_POLL_TIMEOUT);
    s->push->next_keepalive = apr_time_now() + conf->ping_interval;
    s->state = WS_ST_OPEN;
    if (kind == WS_KIND_SSE) {
        if (async) {
            ws_out_raw(s, WS_SSE_HEAD, sizeof(WS_SSE_HEAD) - 1);
        }
        else {
            ap_set_content_type(r, "text/event-stream; charset=utf-8");
            apr_table_setn(r->headers_out, "Cache-Control", "no-store");
            apr_table_setn(r->headers_out, "X-Accel-Buffering", "no");
        }
        ws_out_raw(s, "retry: 2000\n\n", 13);
    }
    if ((rv = ws_push_subscribe(s, r, has_resume)) != OK) {
        ws_session_end(s);
        return rv;
    }
    s->opened = 1;
    ws_status_session_open(async);
    if (kind == WS_KIND_POLL) {
        ws_push_poll_answer(s);               /* something to say at once */
    }
    if (s->state != WS_ST_OPEN || !async) {
        if (s->state == WS_ST_OPEN) {
            ws_push_run_blocking(s, r);
        }
        ws_session_end(s);
        rv = ap_pass_brigade(r->output_filters, s->bbout);
        apr_brigade_cleanup(s->bbout);
        return OK;
    }
    s->push->raw = 1;
    s->push->r = NULL;
    s->r = NULL;
    ws_prepare_connection(r);
    if (ws_flush(s) != APR_SUCCESS || r->connection->aborted || ws_loop_prepare(s, r) != 0) {
        ws_session_end(s);
        return OK;
    }
    r->status = HTTP_OK;
    ap_run_log_transaction(r);
    return SUSPENDED;
}

static int ws_push_subscriber(request_rec *r, ws_dir_conf *conf, ws_push_sess *ps)
{
    const char *upgrade = apr_table_get(r->headers_in, "Upgrade");
    const char *accept = apr_table_get(r->headers_in, "Accept");
    int has, rv;
    if (upgrade && ap_find_token(r->pool, upgrade, "websocket")) {
        return DECLINED;                      /* ws_handler, with ws_push_instance() */
    }
    if (r->method_number != M_GET) {
        ap_allow_methods(r, 1, "GET", "HEAD", NULL);
        return HTTP_METHOD_NOT_ALLOWED;
    }
    if ((rv = ws_push_resume(r, &ps->resume, &has)) != OK
        || (rv = ws_push_admit(r, conf, ps)) != OK) {
        return rv;
    }
    if (r->header_only) {
        return ws_push_json_answer(r, HTTP_OK, "{}");
    }
    return ws_push_http_subscriber(r, conf, ps, accept && ap_strstr_c(accept,
                                   "text/event-stream") ? WS_KIND_SSE : WS_KIND_POLL, has);
}

int ws_push_handler(request_rec *r)
{
    ws_dir_conf *conf = ap_get_module_config(r->per_dir_config, &websocket_module);
    ws_push_sess ps;
    int rv;
    if (!conf->push || !conf->push->role || r->main) {
        return DECLINED;
    }
    memset(&ps, 0, sizeof(ps));
    if ((rv = ws_push_keys(r, conf, &ps, r->pool)) != OK) {
        return rv;
    }
    if (conf->push->role == WS_PUSH_SUBSCRIBER) {
        return ws_push_subscriber(r, conf, &ps);
    }
    ap_allow_methods(r, 1, "GET", "HEAD", "POST", "PUT", "DELETE", NULL);
    switch (r->method_number) {
    case M_POST:
    case M_PUT:
        return ws_push_publish(r, conf, &ps);
    case M_GET:
    case M_DELETE:
        return ws_push_info(r, &ps);
    default:
        return HTTP_METHOD_NOT_ALLOWED;
    }
}
