/* WebSockets on HTTP/2 streams: the per-child cap (see ws_h2.h). */
#include "ws_h2.h"

#include "apr_atomic.h"
#include "apr_strings.h"
#include "ap_mpm.h"
#include "http_log.h"
#include "http_protocol.h"
#include "util_cfgtree.h"

APLOG_USE_MODULE(websocket);

static int ws_h2_conf_max = -1;     /* WebSocketH2MaxSessions; -1: auto */
static int ws_h2_max = 1;           /* the cap in force */
static int ws_h2_workers = 0;       /* H2MaxWorkers as mod_http2 will compute it */
static apr_uint32_t ws_h2_open;     /* this child's h2 WebSocket sessions */

const char *ws_h2_cmd_max_sessions(cmd_parms *cmd, void *dconf, const char *arg)
{
    char *end;
    long n;
    (void)dconf;
    if (strcasecmp(arg, "auto") == 0) {
        ws_h2_conf_max = -1;
        return NULL;
    }
    n = strtol(arg, &end, 10);
    if (*end || n < 1 || n > 1000000) {
        return apr_psprintf(cmd->pool, "%s: a number of sessions (1 or more) or auto, "
                            "not '%s'", cmd->cmd->name, arg);
    }
    ws_h2_conf_max = (int)n;
    return NULL;
}

/* The last value of a server-level directive, or 0: at the top level or inside
 * conditional sections (<IfModule http2_module> and the like, whose conditions are not
 * evaluated here), not in <VirtualHost> (mod_http2 reads its workers from the main
 * server). */
static int ws_h2_directive(const ap_directive_t *d, const char *name, int v)
{
    for (; d; d = d->next) {
        if (strcasecmp(d->directive, name) == 0 && d->args) {
            v = atoi(d->args);
        }
        else if (strncasecmp(d->directive, "<If", 3) == 0 && d->first_child) {
            v = ws_h2_directive(d->first_child, name, v);
        }
    }
    return v;
}

static int ws_h2_pre_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp)
{
    (void)pconf; (void)plog; (void)ptemp;
    ws_h2_conf_max = -1;
    return OK;
}

/* mod_http2 (h2_config.c): min = H2MinWorkers or ThreadsPerChild, max = H2MaxWorkers
 * or max(4, 3/2 min).  A quarter of it (at least 1) stays for other requests. */
static int ws_h2_post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                             server_rec *s)
{
    int threads = 0, minw, maxw;
    (void)pconf; (void)plog; (void)ptemp;
    ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads);
    minw = ws_h2_directive(ap_conftree, "H2MinWorkers", 0);
    maxw = ws_h2_directive(ap_conftree, "H2MaxWorkers", 0);
    if (minw <= 0) {
        minw = threads > 0 ? threads : 1;
    }
    if (maxw <= 0) {
        maxw = 3 * minw / 2 > 4 ? 3 * minw / 2 : 4;
    }
    ws_h2_workers = maxw;
    ws_h2_max = ws_h2_conf_max > 0 ? ws_h2_conf_max
                : maxw - (maxw / 4 > 1 ? maxw / 4 : 1);
    if (ws_h2_max < 1) {
        ws_h2_max = 1;
    }
    ap_log_error(APLOG_MARK, APLOG_DEBUG, 0, s, "WS00082: WebSockets on HTTP/2 streams: "
                 "at most %d per child (H2MaxWorkers %d)", ws_h2_max, ws_h2_workers);
    if (ws_h2_conf_max >= ws_h2_workers) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, s, "WS00081: WebSocketH2MaxSessions "
                     "%d is not below H2MaxWorkers (%d): h2 WebSockets can take every "
                     "h2 worker, and new h2 streams then wait with no answer",
                     ws_h2_conf_max, ws_h2_workers);
    }
    return OK;
}

static apr_status_t ws_h2_release(void *data)
{
    (void)data;
    apr_atomic_dec32(&ws_h2_open);
    return APR_SUCCESS;
}

int ws_h2_admit(request_rec *r)
{
    if (apr_atomic_inc32(&ws_h2_open) >= (apr_uint32_t)ws_h2_max) {
        apr_atomic_dec32(&ws_h2_open);
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, "WS00080: handshake refused: "
                      "%d WebSockets on HTTP/2 streams already hold h2 workers in this "
                      "child (WebSocketH2MaxSessions; H2MaxWorkers %d)", ws_h2_max,
                      ws_h2_workers);
        apr_table_setn(r->err_headers_out, "Retry-After", "5");
        return 0;
    }
    apr_pool_cleanup_register(r->pool, NULL, ws_h2_release, apr_pool_cleanup_null);
    return 1;
}

void ws_h2_register_hooks(void)
{
    ap_hook_pre_config(ws_h2_pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(ws_h2_post_config, NULL, NULL, APR_HOOK_MIDDLE);
}
