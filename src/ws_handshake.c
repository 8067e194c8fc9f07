/*
 * ws_handshake.c - the opening handshake (RFC 6455 4.2, RFC 7692 5): the checks, the
 * plugin's on_open, the 101, and the hand-over of the session to its driver (an event
 * loop, or the blocking driver on this thread).  Handler thread.
 */
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "http_protocol.h"
#include "http_request.h"
#include "http_ssl.h"
#include "apr_strings.h"

#include "ws_accept.h"
#include "ws_blocking.h"
#include "ws_h2.h"
#include "ws_handshake.h"
#include "ws_hostcheck.h"
#include "ws_loop.h"
#include "ws_session.h"
#include "ws_status.h"

APLOG_USE_MODULE(websocket);

static int ws_origin_allowed(request_rec *r, const ws_dir_conf *conf, const char *origin)
{
    const char *norm, *host, *self;
    apr_port_t port;
    char *hostname = NULL, *scope = NULL;
    int i;

    if (!origin || conf->origins_any) {
        return 1;   /* no Origin: not a browser, CSWSH does not apply */
    }
    norm = strcmp(origin, "null") == 0 ? "null" : ws_origin_normalize(r->pool, origin);
    if (!norm) {
        return 0;
    }
    for (i = 0; conf->origins && i < conf->origins->nelts; i++) {
        if (strcmp(APR_ARRAY_IDX(conf->origins, i, const char *), norm) == 0) {
            return 1;
        }
    }
    if (strcmp(norm, "null") == 0) {
        return 0;
    }
    host = apr_table_get(r->headers_in, "Host");
    if (!host || apr_parse_addr_port(&hostname, &scope, &port, host, r->pool) != APR_SUCCESS
        || !hostname) {
        return 0;
    }
    if (!port) {
        port = ap_ssl_conn_is_ssl(r->connection) ? 443 : 80;
    }
    /* RFC 6454: an origin is scheme, host and port.  The page of a same-origin
     * ws:// connection was served over http, of a wss:// one over https.  (Behind a
     * TLS-terminating proxy, list the public origin in WebSocketAllowedOrigins.) */
    self = apr_psprintf(r->pool, "%s://%s:%u",
                        ap_ssl_conn_is_ssl(r->connection) ? "https" : "http",
                        ws_lower(r->pool, hostname), (unsigned)port);
    if (strcmp(norm, self) != 0) {
        return 0;
    }
    /* DNS rebinding: attacker.example resolved to this server gives Host and Origin
     * attacker.example, equal but not ours (docs/security.md). */
    if (conf->check_host && !ws_host_known(r, hostname)) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "WS00037: Host '%s' is not a name "
                      "of this virtual host (WebSocketCheckHost)", hostname);
        return 0;
    }
    return 1;
}

/* 1 if the comma-separated list holds tok, compared without case.  (ap_find_token
 * also accepts a prefix of tok: "Upgrad" would pass for "upgrade".) */
static int ws_has_token(const char *list, const char *tok)
{
    const char *pos = list, *t;
    size_t len, toklen = strlen(tok);
    while (pos && ws_next_token(&pos, &t, &len)) {
        if (len == toklen && strncasecmp(t, tok, len) == 0) {
            return 1;
        }
    }
    return 0;
}

/* The subprotocols the client offered, NULL-terminated. */
static const char *const *ws_offered_protocols(request_rec *r)
{
    apr_array_header_t *arr = apr_array_make(r->pool, 4, sizeof(const char *));
    const char *list = apr_table_get(r->headers_in, "Sec-WebSocket-Protocol");
    const char *pos = list, *tok;
    size_t toklen;
    while (pos && ws_next_token(&pos, &tok, &toklen)) {
        APR_ARRAY_PUSH(arr, const char *) = apr_pstrmemdup(r->pool, tok, toklen);
    }
    APR_ARRAY_PUSH(arr, const char *) = NULL;
    return (const char *const *)arr->elts;
}

static int ws_handshake_status(request_rec *r, const ws_dir_conf *conf)
{
    const char *upgrade = apr_table_get(r->headers_in, "Upgrade");
    const char *connection = apr_table_get(r->headers_in, "Connection");
    const char *version = apr_table_get(r->headers_in, "Sec-WebSocket-Version");
    const char *key = apr_table_get(r->headers_in, "Sec-WebSocket-Key");
    const char *origin = apr_table_get(r->headers_in, "Origin");

    /* RFC 6455 4.1: the handshake is an HTTP/1.1 GET */
    if (r->method_number != M_GET || r->header_only) {
        r->allowed = AP_METHOD_BIT << M_GET;
        return HTTP_METHOD_NOT_ALLOWED;
    }
    if (r->proto_num < HTTP_VERSION(1, 1)) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "WS00030: handshake refused: %s",
                      r->protocol);
        return HTTP_BAD_REQUEST;
    }
    /* RFC 6455 4.2.1 (3): Upgrade contains "websocket"; otherwise this is a plain HTTP
     * request to a WebSocket endpoint: say what it takes (RFC 7231 6.5.15). */
    if (!upgrade || !ws_has_token(upgrade, "websocket")) {
        apr_table_setn(r->err_headers_out, "Upgrade", "websocket");
        apr_table_setn(r->err_headers_out, "Connection", "Upgrade");
        return HTTP_UPGRADE_REQUIRED;
    }
    /* RFC 6455 4.2.1 (4): Connection contains the "Upgrade" token */
    if (!connection || !ws_has_token(connection, "upgrade")) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "WS00031: handshake refused: "
                      "Connection has no upgrade token");
        return HTTP_BAD_REQUEST;
    }
    /* RFC 6455 4.2.1 (6) and 4.4: version 13, else 426 naming the versions we speak */
    if (!version || strcmp(version, "13") != 0) {
        apr_table_setn(r->err_headers_out, "Sec-WebSocket-Version", "13");
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "WS00032: handshake refused: "
                      "Sec-WebSocket-Version %s", version ? version : "missing");
        return HTTP_UPGRADE_REQUIRED;
    }
    /* RFC 6455 4.2.1 (5): base64 of 16 bytes */
    if (!key || !ws_key_valid(key)) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "WS00033: handshake refused: "
                      "bad Sec-WebSocket-Key");
        return HTTP_BAD_REQUEST;
    }
    /* RFC 6455 10.2: the origin is the browser's word on who is asking */
    if (!ws_origin_allowed(r, conf, origin)) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, "WS00034: handshake refused: "
                      "origin '%s' is not allowed for host '%s'", origin,
                      apr_table_get(r->headers_in, "Host"));
        return HTTP_FORBIDDEN;
    }
    return OK;
}

/* After the 101 the connection is a bidirectional byte stream: set it up as
 * ap_proxy_tunnel_create does. */
void ws_prepare_connection(request_rec *r)
{
    conn_rec *c = r->connection;
    ap_remove_output_filter_byhandle(c->output_filters, "SSL/TLS Coalescing Filter");
    ap_remove_input_filter_byhandle(c->input_filters, "reqtimeout");
    ap_remove_output_filter_byhandle(c->output_filters, "reqtimeout_eor");
    r->input_filters = r->proto_input_filters = c->input_filters;
    r->output_filters = r->proto_output_filters = c->output_filters;
    c->keepalive = AP_CONN_CLOSE;
}

/* RFC 7692 5: accept the first acceptable permessage-deflate offer of r, if any, and set
 * the response header and the parser's limits for s.  Handler thread, before the 101. */
static void ws_negotiate_deflate(request_rec *r, ws_conn *s, const ws_dir_conf *conf)
{
    /* The server never keeps a deflate stream per connection (server_no_context_takeover);
     * clients may keep theirs unless WebSocketCompressionContextTakeover is off. */
    ws_pmd_policy policy;
    ws_pmd_params agreed;
    char response[WS_PMD_RESPONSE_MAX];
    ws_pmd_policy_default(&policy);
    policy.max_window_bits = conf->comp_window_bits;
    /* zlib cannot deflate with an 8-bit window: never ask a client for less than 9
     * (we inflate with 9 or more anyway). */
    policy.client_max_window_bits = conf->comp_window_bits < 9 ? 9 : conf->comp_window_bits;
    /* By default a client keeps its context only if it can be held to a small
     * window (it offered client_max_window_bits): some clients ignore a
     * client_no_context_takeover they cannot parse (docs/clients.md). */
    if (conf->comp_takeover < 0 && policy.client_max_window_bits > WS_DEFAULT_CLIENT_WINDOW) {
        policy.client_max_window_bits = WS_DEFAULT_CLIENT_WINDOW;
    }
    policy.mem_level = conf->comp_mem_level;
    policy.level = conf->comp_level;
    policy.server_no_context_takeover = 1;
    policy.client_no_context_takeover = conf->comp_takeover == 0;
    if (ws_pmd_negotiate(apr_table_get(r->headers_in, "Sec-WebSocket-Extensions"),
                         &policy, &agreed, response, sizeof(response))
        && (s->pmd = ws_pmd_create(&agreed, &policy)) != NULL) {
        apr_table_set(r->headers_out, "Sec-WebSocket-Extensions", response);
        s->parser.allowed_rsv = WS_RSV1;
        /* Incompressible data grows a little when deflated: the parser bounds wire
         * bytes with some slack, the real limit is checked after inflating (and
         * for uncompressed messages in ws_on_event). */
        s->parser.max_message = (uint64_t)conf->max_message
                                + (uint64_t)conf->max_message / 16 + 1024;
    }
}

/* The plugin's on_open for the upgrade request r: OK, or the HTTP error status it
 * refuses with (a status outside 4xx/5xx becomes 500).  Handler thread. */
static int ws_call_on_open(request_rec *r, ws_conn *s)
{
    ws_request req;
    int status;

    if (!s->inst->p.on_open) {
        return OK;
    }
    memset(&req, 0, sizeof(req));
    req.size = sizeof(req);
    req.uri = r->uri;
    req.query = r->args;
    req.remote_ip = r->useragent_ip;
    req.user = r->user;
    req.origin = apr_table_get(r->headers_in, "Origin");
    req.protocols = s->offered;
    req.secure = ap_ssl_conn_is_ssl(r->connection);
    status = s->inst->p.on_open(s, &req);
    if (status != 0 && (status < 400 || status > 599)) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "WS00035: plugin %s on_open "
                      "returned %d, not an HTTP error status", s->inst->p.name, status);
        status = HTTP_INTERNAL_SERVER_ERROR;
    }
    return status == 0 ? OK : status;
}

/* Answer 101 (RFC 6455 4.2.2) for the accepted session s and set the connection up as
 * a byte stream.  Handler thread. */
static void ws_switch(request_rec *r, ws_conn *s, const ws_dir_conf *conf)
{
    conn_rec *c = r->connection;
    char accept[WS_ACCEPT_LEN + 1];

    ws_accept_key(apr_table_get(r->headers_in, "Sec-WebSocket-Key"), accept);
    apr_table_clear(r->headers_out);
    if (conf->compression) {
        ws_negotiate_deflate(r, s, conf);
    }
    apr_table_setn(r->headers_out, "Upgrade", "websocket");
    apr_table_setn(r->headers_out, "Connection", "Upgrade");
    apr_table_set(r->headers_out, "Sec-WebSocket-Accept", accept);
    if (s->protocol) {
        apr_table_setn(r->headers_out, "Sec-WebSocket-Protocol", s->protocol);
    }
    r->status = HTTP_SWITCHING_PROTOCOLS;
    r->status_line = NULL;
    ws_prepare_connection(r);
    s->write_chunk = ws_write_chunk(c);
    /* To the connection's filters: mod_deflate, mod_headers and chunking never see it. */
    ap_send_interim_response(r, 1);
    s->r = NULL;
    if (s->state == WS_ST_OPENING) {
        s->state = WS_ST_OPEN;
    }
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, "WS00036: upgraded %s to plugin %s "
                  "(%s driver)%s%s", r->uri, s->inst->p.name, s->async ? "async (event loop)" : "blocking",
                  s->protocol ? ", protocol " : "", s->protocol ? s->protocol : "");
    if (c->aborted) {
        s->state = WS_ST_DONE;
    }
}

/* Event loops where this child has them, for an HTTP/1.1 connection (an HTTP/2
 * stream's c->cs is its primary connection's), unless the location wants a thread. */
int ws_wants_loop(request_rec *r, const ws_dir_conf *conf)
{
    conn_rec *c = r->connection;
    return ws_loop_available() && !c->master && c->cs
           && conf->driver != WS_DRIVER_BLOCKING;
}

int ws_handler(request_rec *r)
{
    ws_dir_conf *conf = ap_get_module_config(r->per_dir_config, &websocket_module);
    conn_rec *c = r->connection;
    ws_conn *s;
    int status;

    if (!conf->inst || r->main) {
        return DECLINED;
    }
    status = ws_handshake_status(r, conf);
    if (status != OK) {
        return status;
    }
    /* An HTTP/2 stream holds an h2 worker for the session's life: within a cap. */
    if (c->master && !ws_h2_admit(r)) {
        return HTTP_SERVICE_UNAVAILABLE;
    }
    s = ws_session_create(r, conf, ws_wants_loop(r, conf));
    if (!s) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    s->offered = ws_offered_protocols(r);
    status = ws_call_on_open(r, s);
    if (status != OK) {
        apr_brigade_cleanup(s->bbout);
        ws_session_end(s);
        return status;
    }
    s->opened = 1;
    ws_status_session_open(s->async);
    ws_switch(r, s, conf);

    if (!s->async) {
        ws_blocking_run(s);
        ws_session_end(s);
        return OK;
    }
    /* What on_open sent goes out now, from this thread; then the session leaves the
     * MPM for a loop (ws_loop.h).  SUSPENDED skips the access log: log the 101 now. */
    if (s->state == WS_ST_DONE || ws_flush(s) != APR_SUCCESS || c->aborted
        || ws_loop_prepare(s, r) != 0) {
        ws_flush(s);
        ws_session_end(s);
        return OK;
    }
    ap_run_log_transaction(r);
    return SUSPENDED;
}
