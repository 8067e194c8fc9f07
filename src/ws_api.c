/*
 * ws_api.c - the function table plugins call (include/mod_websocket.h): sends and
 * closes on the session's owner thread, handles from any thread, channels.
 */
#include <stdarg.h>
#include <string.h>

#include "httpd.h"
#include "http_log.h"
#include "http_main.h"
#include "apr_strings.h"

#include "ws_api.h"
#include "ws_channel.h"
#include "ws_plugin.h"
#include "ws_session.h"
#include "ws_status.h"

APLOG_USE_MODULE(websocket);

static int ws_api_handle_close(ws_handle *h, int code, const char *reason)
{
    if (!h || !ws_close_code_valid((unsigned)code)
        || (reason && !ws_utf8_valid((const uint8_t *)reason, strlen(reason)))) {
        return WS_EINVAL;
    }
    return ws_handle_request_close(h, code, reason);
}

/* Subscribe the session (on its owner thread) while it is open. */
static int ws_api_sub(ws_conn *s, const char *key, size_t len)
{
    if (s->state != WS_ST_OPENING && s->state != WS_ST_OPEN) {
        return WS_ECLOSED;
    }
    return ws_pubsub_subscribe(&s->subs, s->h, key, len);
}

static int ws_api_send(ws_conn *s, int type, const void *data, size_t len, int flags)
{
    if (!s || !ws_valid_send_args(type, data, len)) {
        return WS_EINVAL;
    }
    if (s->state != WS_ST_OPENING && s->state != WS_ST_OPEN) {
        return WS_ECLOSED;
    }
    if (len > s->h->max_queue) {
        return WS_ETOOBIG;          /* never fits WebSocketMaxQueue: the plugin's error */
    }
    if ((apr_size_t)s->out_buffered + len > s->h->max_queue) {
        ws_status_queue_drop();
        ws_fail(s, WS_CLOSE_POLICY, "send queue overflow");
        return WS_EFULL;
    }
    ws_out_message(s, type == WS_TEXT ? WS_OP_TEXT : WS_OP_BINARY, data, len,
                   flags & WS_SEND_FLAGS);
    s->msgs_out++;
    /* The blocking driver writes as it goes; an event loop never blocks here. */
    if (!s->async && s->state == WS_ST_OPEN && s->out_buffered >= WS_FLUSH_AT) {
        if (ws_flush(s) != APR_SUCCESS) {
            s->state = WS_ST_DONE;
        }
    }
    return WS_SUCCESS;
}

static int ws_api_close(ws_conn *s, int code, const char *reason)
{
    if (!s || !ws_close_code_valid((unsigned)code)
        || (reason && !ws_utf8_valid((const uint8_t *)reason, strlen(reason)))) {
        return WS_EINVAL;
    }
    if (s->state != WS_ST_OPENING && s->state != WS_ST_OPEN) {
        return WS_ECLOSED;
    }
    ws_send_close(s, (unsigned)code, reason);
    return WS_SUCCESS;
}

static void ws_api_set_user_data(ws_conn *s, void *data) { s->user_data = data; }
static void *ws_api_get_user_data(ws_conn *s) { return s->user_data; }
static void *ws_api_plugin_data(ws_conn *s) { return s->inst->plugin_data; }

static int ws_api_set_protocol(ws_conn *s, const char *protocol)
{
    const char *const *o;
    if (s->state != WS_ST_OPENING || !protocol) {
        return WS_EINVAL;
    }
    /* RFC 6455 4.2.2: the server picks one of the values the client offered */
    for (o = s->offered; *o; o++) {
        if (strcmp(*o, protocol) == 0) {
            s->protocol = *o;
            return WS_SUCCESS;
        }
    }
    return WS_EINVAL;
}

static const char *ws_api_request_header(ws_conn *s, const char *name)
{
    if (!s->r || !name) {
        return NULL;
    }
    return apr_table_get(s->r->headers_in, name);
}

static ws_handle *ws_api_handle_get(ws_conn *s)
{
    ws_handle_retain(s->h);
    return s->h;
}

static void ws_api_log(ws_conn *s, int level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    apr_vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (level < APLOG_EMERG || level > APLOG_DEBUG) {
        level = APLOG_INFO;
    }
    if (s) {
        ap_log_cerror(APLOG_MARK, level, 0, s->c, "WS00020: [%s] %s", s->inst->p.name, msg);
    }
    else {
        ap_log_error(APLOG_MARK, level, 0, ap_server_conf, "WS00021: %s", msg);
    }
}

static int ws_api_subscribe(ws_conn *s, const char *channel)
{
    char key[WS_CHANNEL_KEY_MAX + 1];
    size_t len = s ? ws_channel_key(key, NULL, channel) : 0;
    return len ? ws_api_sub(s, key, len) : WS_EINVAL;
}

static int ws_api_unsubscribe(ws_conn *s, const char *channel)
{
    char key[WS_CHANNEL_KEY_MAX + 1];
    size_t len = s ? ws_channel_key(key, NULL, channel) : 0;
    return len ? ws_pubsub_unsubscribe(&s->subs, key, len) : WS_EINVAL;
}

/* The same in the namespace of the connection's location. */
static int ws_api_ns_subscribe(ws_conn *s, const char *channel)
{
    char key[WS_CHANNEL_KEY_MAX + 1];
    size_t len = s ? ws_channel_key(key, s->inst->ns, channel) : 0;
    return len ? ws_api_sub(s, key, len) : WS_EINVAL;
}

static int ws_api_ns_unsubscribe(ws_conn *s, const char *channel)
{
    char key[WS_CHANNEL_KEY_MAX + 1];
    size_t len = s ? ws_channel_key(key, s->inst->ns, channel) : 0;
    return len ? ws_pubsub_unsubscribe(&s->subs, key, len) : WS_EINVAL;
}

static int ws_api_publish(const char *channel, int type, const void *data, size_t len,
                          int flags)
{
    char key[WS_CHANNEL_KEY_MAX + 1];
    return ws_pubsub_publish(key, ws_channel_key(key, NULL, channel), type, data, len, flags);
}

static int ws_api_ns_publish(void *plugin_data, const char *channel, int type,
                             const void *data, size_t len, int flags)
{
    char key[WS_CHANNEL_KEY_MAX + 1];
    const char *ns = ws_plugin_ns_of(plugin_data);
    return ws_pubsub_publish(key, ns ? ws_channel_key(key, ns, channel) : 0, type, data, len,
                          flags);
}

/* On the I/O thread bbout is current (backlog is its size at the last write). */
static size_t ws_api_buffered_amount(ws_conn *s)
{
    size_t n;
    if (!s || s->state == WS_ST_DONE) {
        return 0;
    }
    n = (size_t)ws_handle_queued(s->h);
    return n + (size_t)s->out_buffered;
}

const ws_api ws_the_api = {
    WS_ABI_VERSION,
    sizeof(ws_api),
    ws_api_send,
    ws_api_close,
    ws_api_set_user_data,
    ws_api_get_user_data,
    ws_api_plugin_data,
    ws_api_set_protocol,
    ws_api_request_header,
    ws_api_handle_get,
    ws_handle_retain,
    ws_handle_release,
    ws_handle_send,
    ws_api_handle_close,
    ws_api_subscribe,
    ws_api_unsubscribe,
    ws_api_publish,
    ws_api_log,
    ws_api_ns_subscribe,
    ws_api_ns_unsubscribe,
    ws_api_ns_publish,
    ws_api_buffered_amount,
    ws_handle_buffered,
};
