/*
 * ws_output.c - a session's output: frames into its outbound brigade, blocking and
 * non-blocking writes through the connection's output filters, and the closing
 * handshake.  Owner thread only.  See ws_session.h.
 */
#include <stdlib.h>
#include <string.h>

#include "httpd.h"
#include "http_core.h"
#include "http_connection.h"
#include "http_log.h"
#include "util_filter.h"
#include "apr_strings.h"

#include "ws_session.h"

APLOG_USE_MODULE(websocket);

#define WS_WRITE_CHUNK 65536          /* most bytes handed to the filters at once */
#define WS_OUT_BUF 8192               /* output bucket size for small frames */

/* Append bytes to bbout (copied).  Small frames share malloc'd heap buckets of
 * WS_OUT_BUF (one writev for many messages); a large payload gets one of its own.
 * Not apr_brigade_write: its buffers come from the connection's allocator, which
 * with a small MaxMemFree maps and unmaps a node for every message. */
static void ws_out_bytes(ws_conn *s, const void *data, size_t len)
{
    apr_bucket *e;
    char *buf;
    size_t cap;

    if (!APR_BRIGADE_EMPTY(s->bbout)) {
        e = APR_BRIGADE_LAST(s->bbout);
        if (APR_BUCKET_IS_HEAP(e)) {
            apr_bucket_heap *hb = e->data;
            size_t end = (size_t)e->start + e->length;
            if (hb->free_func == free && hb->refcount.refcount == 1
                && end == (size_t)e->length && hb->alloc_len - end >= len) {
                memcpy(hb->base + end, data, len);
                e->length += len;
                return;
            }
        }
    }
    cap = len > WS_OUT_BUF / 2 ? len : WS_OUT_BUF;
    if (cap > WS_OUT_BUF) {
        ws_heap_churn_add(cap);     /* large buffers: worth a trim after a while */
    }
    buf = malloc(cap);
    if (!buf) {
        s->c->aborted = 1;      /* out of memory: drop the connection */
        return;
    }
    memcpy(buf, data, len);
    e = apr_bucket_heap_create(buf, cap, free, s->c->bucket_alloc);
    e->length = len;
    APR_BRIGADE_INSERT_TAIL(s->bbout, e);
}

/* Append one frame to bbout (the data is copied). */
static void ws_out_frame_rsv(ws_conn *s, unsigned rsv, unsigned opcode, const void *data,
                             size_t len)
{
    uint8_t hdr[WS_FRAME_HEADER_MAX];
    size_t hlen = ws_frame_header(hdr, 1, rsv, opcode, len, NULL);
    ws_out_bytes(s, hdr, hlen);
    if (len) {
        ws_out_bytes(s, data, len);
    }
    s->out_buffered += (apr_off_t)(hlen + len);
    s->bytes_out += hlen + len;
}

void ws_out_raw(ws_conn *s, const void *data, size_t len)
{
    ws_out_bytes(s, data, len);
    s->out_buffered += (apr_off_t)len;
    s->bytes_out += len;
}

void ws_out_frame(ws_conn *s, unsigned opcode, const void *data, size_t len)
{
    ws_out_frame_rsv(s, 0, opcode, data, len);
}

/* A data message, compressed when permessage-deflate was agreed, the message is worth
 * it and the sender did not say otherwise (RFC 7692 6: RSV1 on the first frame). */
void ws_out_message(ws_conn *s, unsigned opcode, const void *data, size_t len,
                           int flags)
{
    const uint8_t *z;
    size_t zlen;
    if (s->pmd && !(flags & WS_SEND_NO_COMPRESS)
        && len >= (size_t)s->conf->comp_threshold
        && ws_pmd_compress(s->pmd, data, len, &z, &zlen) == WS_OK) {
        ws_out_frame_rsv(s, WS_RSV1, opcode, z, zlen);
        return;
    }
    ws_out_frame(s, opcode, data, len);
}

/* Blocking write of everything in bbout (blocking driver, and the last close frame). */
apr_status_t ws_flush(ws_conn *s)
{
    apr_status_t rv;
    if (APR_BRIGADE_EMPTY(s->bbout) && !s->c->data_in_output_filters) {
        return APR_SUCCESS;
    }
    APR_BRIGADE_INSERT_TAIL(s->bbout, apr_bucket_flush_create(s->c->bucket_alloc));
    rv = ap_pass_brigade(s->c->output_filters, s->bbout);
    apr_brigade_cleanup(s->bbout);
    s->out_buffered = 0;
    ws_handle_set_backlog(s->h, 0);
    if (rv != APR_SUCCESS || s->c->aborted) {
        s->c->aborted = 1;
        return rv != APR_SUCCESS ? rv : APR_ECONNABORTED;
    }
    return APR_SUCCESS;
}

/* Stay at or under FlushMaxThreshold, past which the core writes blocking; through
 * another filter (mod_ssl adds record overhead) keep half of it in reserve.  The
 * connection's filters are settled once the handshake is done. */
apr_size_t ws_write_chunk(conn_rec *c)
{
    core_server_config *cconf = ap_get_core_module_config(c->base_server->module_config);
    apr_size_t chunk = cconf->flush_max_threshold;
    if (c->output_filters->frec != ap_core_output_filter_handle) {
        chunk /= 2;
    }
    return chunk > WS_WRITE_CHUNK ? WS_WRITE_CHUNK : chunk < 1024 ? 1024 : chunk;
}

/* Non-blocking write for the event loop: hand bbout to the filters in bounded
 * chunks (the core output filter blocks past FlushMaxThreshold) while the socket
 * takes them, then push the core's remainder without a FLUSH bucket (which would
 * block).  Returns 1 if output is still pending (park for write), 0 if all went. */
int ws_write_nonblocking(ws_conn *s, apr_size_t budget)
{
    conn_rec *c = s->c;
    ap_filter_t *core = c->output_filters;
    apr_status_t rv = APR_SUCCESS;
    apr_size_t chunk = s->write_chunk ? s->write_chunk : ws_write_chunk(c);
    apr_size_t written = 0;

    while (core->next) {
        core = core->next;
    }
    while (!APR_BRIGADE_EMPTY(s->bbout) && !c->aborted && (!budget || written < budget)) {
        apr_bucket *after;
        if (c->data_in_output_filters) {
            rv = core->frec->filter_func.out_func(core, NULL);
            if (rv != APR_SUCCESS || c->data_in_output_filters) {
                break;
            }
        }
        apr_brigade_partition(s->bbout, (apr_off_t)chunk, &after);
        while (APR_BRIGADE_FIRST(s->bbout) != after) {
            apr_bucket *b = APR_BRIGADE_FIRST(s->bbout);
            APR_BUCKET_REMOVE(b);
            APR_BRIGADE_INSERT_TAIL(s->bbtmp, b);
        }
        rv = ap_pass_brigade(c->output_filters, s->bbtmp);
        apr_brigade_cleanup(s->bbtmp);
        written += chunk;
        if (rv != APR_SUCCESS) {
            break;
        }
    }
    if (rv == APR_SUCCESS && c->data_in_output_filters && !c->aborted) {
        rv = core->frec->filter_func.out_func(core, NULL);
    }
    if (rv != APR_SUCCESS || c->aborted) {
        c->aborted = 1;
        apr_brigade_cleanup(s->bbout);
        s->out_buffered = 0;
        s->state = WS_ST_DONE;
        return 0;
    }
    apr_brigade_length(s->bbout, 0, &s->out_buffered);
    ws_handle_set_backlog(s->h, (apr_size_t)s->out_buffered);
    return !APR_BRIGADE_EMPTY(s->bbout) || c->data_in_output_filters;
}

/* Send a close frame (once) and move to CLOSING. */
void ws_send_close(ws_conn *s, unsigned code, const char *reason)
{
    uint8_t payload[125];
    size_t n;
    if (s->close_sent) {
        return;
    }
    n = ws_close_build(payload, code, reason, reason ? strlen(reason) : 0);
    ws_out_frame(s, WS_OP_CLOSE, payload, n);
    s->close_sent = 1;
    if (!s->close_received) {
        s->closed_by_server = 1;
        s->close_code = code;
        s->close_reason = apr_pstrmemdup(s->c->pool, reason ? reason : "",
                                         n > 2 ? n - 2 : 0);   /* as sent */
        s->close_deadline = apr_time_now() + WS_CLOSE_WAIT;
    }
    s->state = s->close_received ? WS_ST_DONE : WS_ST_CLOSING;
}

/* RFC 6455 7.1.7: fail the connection: send the close code if we still can, then end. */
void ws_fail(ws_conn *s, unsigned code, const char *reason)
{
    ap_log_cerror(APLOG_MARK, APLOG_DEBUG, 0, s->c, "WS00010: failing connection: %u %s",
                  code, reason);
    ws_send_close(s, code, reason);
    s->state = WS_ST_DONE;
}
