/*
 * ws_push_out.c - what a channel subscriber's session writes (ws_push.h): each message
 * as a JSON text frame (WebSocket), an SSE event (EventSource) or an object of the
 * long-poll's answer; keep-alive comments; the poll's answer and timeout; the end.
 * The session's owner thread.
 */
#include <string.h>

#include "httpd.h"
#include "http_protocol.h"
#include "apr_base64.h"
#include "apr_strings.h"

#include "ws_channel.h"
#include "ws_push.h"
#include "ws_session.h"

/* The channel name of a key (after the namespace). */
static const char *ws_key_name(const ws_payload *p, size_t *len)
{
    const char *sep = p->key ? memrchr(p->key, WS_CHANNEL_SEP, p->klen) : NULL;
    const char *name = sep ? sep + 1 : p->key ? p->key : "";
    *len = p->key ? p->klen - (size_t)(name - p->key) : 0;
    return name;
}

/* s (len bytes of UTF-8) as a JSON string, quotes included. */
char *ws_json_string(apr_pool_t *pool, const char *s, size_t len)
{
    char *out = apr_palloc(pool, len * 6 + 3), *o = out;
    size_t i;
    *o++ = '"';
    for (i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            *o++ = '\\';
            *o++ = (char)ch;
        }
        else if (ch < 0x20) {
            o += sprintf(o, "\\u%04x", ch);
        }
        else {
            *o++ = (char)ch;
        }
    }
    *o++ = '"';
    *o = '\0';
    return out;
}

static char *ws_base64(apr_pool_t *pool, const unsigned char *data, size_t len)
{
    char *out = apr_palloc(pool, (size_t)apr_base64_encode_len((int)len));
    apr_base64_encode_binary(out, data, (int)len);
    return out;
}

/* {"id":"E-S","channel":"NAME","data":"..."} (binary: base64 and "binary":true). */
static char *ws_push_json(apr_pool_t *pool, const ws_payload *p)
{
    char id[WS_MSGID_LEN];
    size_t nlen;
    const char *name = ws_key_name(p, &nlen);
    int binary = p->opcode == WS_OP_BINARY;
    ws_msgid_format(id, &p->id);
    return apr_pstrcat(pool, "{\"id\":\"", id, "\",\"channel\":",
                       ws_json_string(pool, name, nlen), ",\"data\":",
                       binary ? apr_pstrcat(pool, "\"", ws_base64(pool, p->data, p->len),
                                            "\"", NULL)
                              : ws_json_string(pool, (const char *)p->data, p->len),
                       binary ? ",\"binary\":true}" : "}", NULL);
}

/* A message's framing for one kind of subscriber, shared by all of them. */
typedef struct ws_fmt {
    size_t len;
    char data[];
} ws_fmt;

enum { WS_FMT_JSON = 0, WS_FMT_SSE = 1, WS_FMT_SSE_NAMED = 2 };

/* One SSE event: id, event (binary, or the channel when named), one data line per line
 * of the message (CR, LF and CRLF end lines). */
static const char *ws_push_sse(apr_pool_t *pool, const ws_payload *p, int named)
{
    char id[WS_MSGID_LEN];
    const char *data = (const char *)p->data, *end = data + p->len;
    size_t nlen;
    const char *name = ws_key_name(p, &nlen);
    apr_array_header_t *parts = apr_array_make(pool, 8, sizeof(const char *));
    ws_msgid_format(id, &p->id);
    if (p->opcode == WS_OP_BINARY) {
        return apr_pstrcat(pool, "id: ", id, "\nevent: binary\ndata: ",
                           ws_base64(pool, p->data, p->len), "\n\n", NULL);
    }
    APR_ARRAY_PUSH(parts, const char *) = apr_pstrcat(pool, "id: ", id, named ?
        "\nevent: " : "", named ? apr_pstrmemdup(pool, name, nlen) : "", "\n", NULL);
    for (;;) {
        const char *eol = data;
        while (eol < end && *eol != '\r' && *eol != '\n') {
            eol++;
        }
        APR_ARRAY_PUSH(parts, const char *) = apr_pstrcat(pool, "data: ",
            apr_pstrmemdup(pool, data, (size_t)(eol - data)), "\n", NULL);
        if (eol == end) {
            break;
        }
        data = eol + (eol[0] == '\r' && eol + 1 < end && eol[1] == '\n' ? 2 : 1);
    }
    APR_ARRAY_PUSH(parts, const char *) = "\n";
    return apr_array_pstrcat(pool, parts, 0);
}

/* The framing `which` of p, made by the first subscriber that needs it (any of the
 * loops' threads: the first to store it wins). */
static const ws_fmt *ws_push_fmt(const ws_payload *cp, int which)
{
    ws_payload *p = (ws_payload *)cp;     /* the cache is its one mutable part */
    ws_fmt *f = __atomic_load_n((ws_fmt **)&p->fmt[which], __ATOMIC_ACQUIRE), *none = NULL;
    apr_pool_t *pool;
    const char *text;
    if (f || apr_pool_create(&pool, NULL) != APR_SUCCESS) {
        return f;
    }
    text = which == WS_FMT_JSON ? ws_push_json(pool, p)
           : ws_push_sse(pool, p, which == WS_FMT_SSE_NAMED);
    f = malloc(sizeof(*f) + strlen(text));
    if (f) {
        f->len = strlen(text);
        memcpy(f->data, text, f->len);
        if (!__atomic_compare_exchange_n((ws_fmt **)&p->fmt[which], &none, f, 0,
                                         __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            free(f);
            f = none;
        }
    }
    apr_pool_destroy(pool);
    return f;
}

void ws_push_message(ws_conn *s, const ws_payload *p)
{
    ws_push_sess *ps = s->push;
    const ws_fmt *f;
    if (!ps || ps->ended) {
        return;
    }
    if (p->id.seq && p->id.epoch == ps->last.epoch && p->id.seq <= ps->last.seq) {
        return;                 /* sent already: catch-up and live delivery overlap */
    }
    if (p->id.seq) {
        ps->last = p->id;
    }
    f = ws_push_fmt(p, s->kind != WS_KIND_SSE ? WS_FMT_JSON
                       : ps->multi ? WS_FMT_SSE_NAMED : WS_FMT_SSE);
    if (!f) {
        s->c->aborted = 1;      /* out of memory */
    }
    else if (s->kind == WS_KIND_POLL) {
        APR_ARRAY_PUSH(ps->batch, const char *) = apr_pstrmemdup(s->c->pool, f->data, f->len);
    }
    else if (s->kind == WS_KIND_SSE) {
        ws_out_raw(s, f->data, f->len);
    }
    else {
        ws_out_message(s, WS_OP_TEXT, f->data, f->len, 0);
    }
}

void ws_push_lost(ws_conn *s, const ws_msgid *from)
{
    char id[WS_MSGID_LEN], buf[WS_MSGID_LEN + 40];
    int n;
    ws_msgid_format(id, from);
    if (s->kind == WS_KIND_POLL) {
        s->push->lost = 1;
        return;
    }
    n = s->kind == WS_KIND_SSE ? snprintf(buf, sizeof(buf), "event: lost\ndata: %s\n\n", id)
        : snprintf(buf, sizeof(buf), "{\"lost\":true,\"id\":\"%s\"}", id);
    if (s->kind == WS_KIND_SSE) {
        ws_out_raw(s, buf, (size_t)n);
    }
    else {
        ws_out_message(s, WS_OP_TEXT, buf, (size_t)n, 0);
    }
}

/* The long-poll's answer: status, and the body (NULL: none).  Raw: this module's own
 * HTTP head (the connection closes after it); else through the request. */
static void ws_push_answer(ws_conn *s, int status, const char *body)
{
    ws_push_sess *ps = s->push;
    char id[WS_MSGID_LEN] = "";
    size_t blen = body ? strlen(body) : 0;
    if (ps->last.seq) {
        ws_msgid_format(id, &ps->last);
    }
    if (ps->raw) {
        const char *head = apr_psprintf(s->c->pool, "HTTP/1.1 %s\r\nCache-Control: no-store"
            "\r\nConnection: close\r\n%s%s%s%s\r\n", ap_get_status_line(status),
            *id ? "X-Last-Event-ID: " : "", id, *id ? "\r\n" : "",
            body ? apr_psprintf(s->c->pool, "Content-Type: application/json\r\n"
                                "Content-Length: %lu\r\n", (unsigned long)blen) : "");
        ws_out_raw(s, head, strlen(head));
    }
    else {
        ps->r->status = status;
        apr_table_setn(ps->r->headers_out, "Cache-Control", "no-store");
        if (*id) {
            apr_table_set(ps->r->headers_out, "X-Last-Event-ID", id);
        }
        if (body) {
            ap_set_content_type(ps->r, "application/json");
            ap_set_content_length(ps->r, (apr_off_t)blen);
        }
    }
    if (body) {
        ws_out_raw(s, body, blen);
    }
    ps->ended = 1;
    s->state = WS_ST_DONE;
    if (s->close_code == WS_CLOSE_ABNORMAL) {
        s->close_code = WS_CLOSE_NORMAL;    /* for the session log: answered */
        s->closed_by_server = 1;
    }
}

void ws_push_poll_answer(ws_conn *s)
{
    ws_push_sess *ps = s->push;
    char id[WS_MSGID_LEN];
    const char *body;
    if (!ps->batch->nelts && !ps->lost) {
        return;
    }
    ws_msgid_format(id, &ps->last);
    body = apr_pstrcat(s->c->pool, "{\"messages\":[", apr_array_pstrcat(s->c->pool,
                       ps->batch, ','), "],\"last_id\":",
                       ps->last.seq ? apr_pstrcat(s->c->pool, "\"", id, "\"", NULL) : "null",
                       ",\"lost\":", ps->lost ? "true" : "false", "}", NULL);
    ws_push_answer(s, HTTP_OK, body);
}

apr_time_t ws_push_timers(ws_conn *s, apr_time_t now)
{
    ws_push_sess *ps = s->push;
    apr_interval_time_t interval = s->conf->ping_interval;
    if (s->state != WS_ST_OPEN || ps->ended) {
        return 0;
    }
    if (s->kind == WS_KIND_POLL) {
        ws_push_poll_answer(s);
        if (!ps->ended && now >= ps->deadline) {
            ws_push_answer(s, HTTP_NO_CONTENT, NULL);
        }
        return ps->ended ? 0 : ps->deadline;
    }
    if (interval <= 0) {
        return 0;
    }
    if (now >= ps->next_keepalive) {
        ws_out_raw(s, ": \n", 3);
        ps->next_keepalive = now + interval;
    }
    return ps->next_keepalive;
}

void ws_push_end(ws_conn *s, int code, const char *reason)
{
    ws_push_sess *ps = s->push;
    int deleted = code == WS_CLOSE_NORMAL && reason && !strcmp(reason, "channel deleted");
    s->close_code = (unsigned)code;
    s->closed_by_server = 1;
    if (s->kind == WS_KIND_POLL && !ps->ended && code != WS_CLOSE_POLICY) {
        ws_push_answer(s, deleted ? HTTP_GONE : HTTP_NO_CONTENT, NULL);
    }
    if (code == WS_CLOSE_POLICY) {
        s->c->aborted = 1;      /* a reader too slow for its queue: cut, no draining */
    }
    ps->ended = 1;
    s->state = WS_ST_DONE;
    ws_pubsub_unsubscribe_all(&s->subs);    /* now, not when the output has drained */
}
