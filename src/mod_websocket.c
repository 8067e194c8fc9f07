/*
 * mod_websocket.c - the module record and its hooks: WebSocket (RFC 6455, RFC 7692,
 * RFC 8441) endpoints served by plugins, and channels.
 *
 * The glue, one responsibility per file (README.md, "Source layout"):
 *   ws_config.c     directives and configuration hooks     (config time)
 *   ws_plugin.c     loading plugins, their life cycle       (config time, child init)
 *   ws_handshake.c  the opening handshake and hand-over      (handler thread)
 *   ws_session.c    a session: input, callbacks, timers, end (owner thread)
 *   ws_output.c     a session's frames out and the close     (owner thread)
 *   ws_loop.c       the event loops (event MPM)              (loop threads)
 *   ws_blocking.c   a thread per session (other MPMs, h2)    (handler thread)
 *   ws_handle.c     queues other threads send through        (any thread)
 *   ws_pubsub.c     channels and the backplane's delivery    (any thread)
 *   ws_api.c        the function table plugins call
 *   ws_push.c       channels over plain HTTP: publish, SSE and long-poll subscribers
 *                   (ws_push_out.c: their framing; ws_push_conf.c: directives;
 *                   ws_chanstore.c: channel history; docs/channels.md)
 *   ws_status.c, ws_h2.c, ws_backplane.c, ws_ring.c, ws_redis_tls.c, ws_hostcheck.c
 * The protocol core (ws_frame.c, ws_utf8.c, ws_close.c, ws_deflate.c, ws_channel.c,
 * ws_timer.c, ws_history.c) has no httpd include.
 */
#include <malloc.h>
#include <signal.h>

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "http_main.h"
#include "mpm_common.h"
#include "mod_status.h"

#include "ws_chanstore.h"
#include "ws_conf.h"
#include "ws_h2.h"
#include "ws_handshake.h"
#include "ws_loop.h"
#include "ws_plugin.h"
#include "ws_pubsub.h"
#include "ws_push.h"
#include "ws_status.h"

APLOG_USE_MODULE(websocket);

static void ws_child_init(apr_pool_t *pchild, server_rec *s)
{
    sigset_t all, old;
    ws_bp *bp = ws_pubsub_backplane();
    (void)s;
    /* A fixed mmap threshold: glibc's adaptive one rises to the largest block freed
     * (16 MiB messages, inflate buffers), after which such blocks stay in the threads'
     * arenas: children grew to 1.1 GB under repeated 16 MiB compressed messages. */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    /* (This also fixes glibc's trim threshold at 128 KB; the event loops raise it.) */
    ws_status_child_init(pchild);
    if (bp) {
        ws_msgid now;
        ws_bp_current(bp, &now);
        ws_chanstore_child_init(pchild, &now);
        ws_bp_child_init(bp, pchild, ws_pubsub_deliver, NULL);
    }
    /* Threads that plugins start here inherit a mask with every signal blocked: the
     * MPMs run their exit paths from signal handlers, which must not land on them. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    ws_plugin_child_init(pchild);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    ws_loop_child_init(pchild, ws_config_loops());
}

/* Graceful restart or stop: every session gets a close 1001, so that clients reconnect
 * to the new generation and the old child can exit instead of lingering until Timeout. */
static void ws_child_stopping(apr_pool_t *pchild, int graceful)
{
    (void)pchild;
    ap_log_error(APLOG_MARK, APLOG_TRACE1, 0, ap_server_conf, "child stopping (graceful=%d)",
                 graceful);
    ws_loop_child_stopping(graceful);
    ws_registry_close_all(WS_CLOSE_GOING_AWAY, "server shutting down");
}

/* The backplane's part of /server-status (after ws_status's section): ring skips, Redis
 * input.  Any worker thread. */
static int ws_bp_status_hook(request_rec *r, int flags)
{
    ws_bp *bp = ws_pubsub_backplane();
    if (bp) {
        ws_bp_status(bp, r, flags & AP_STATUS_SHORT);
    }
    return OK;
}

static void ws_register_hooks(apr_pool_t *p)
{
    (void)p;
    ap_hook_pre_config(ws_pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(ws_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_test_config(ws_test_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(ws_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_stopping(ws_child_stopping, NULL, NULL, APR_HOOK_MIDDLE);
    ws_h2_register_hooks();
    /* First: a WebSocket location answers before mod_dir or the default handler. */
    ap_hook_handler(ws_push_handler, NULL, NULL, APR_HOOK_FIRST - 1);   /* channels */
    ap_hook_handler(ws_handler, NULL, NULL, APR_HOOK_FIRST);
    /* Where the MPM lets go of a suspended session: its loop takes it. */
    ap_hook_suspend_connection(ws_loop_suspend_connection, NULL, NULL, APR_HOOK_LAST);
    ws_status_register_hooks();
    APR_OPTIONAL_HOOK(ap, status_hook, ws_bp_status_hook, NULL, NULL, APR_HOOK_MIDDLE);
}

module AP_MODULE_DECLARE_DATA websocket_module = {
    STANDARD20_MODULE_STUFF,
    ws_create_dir_conf,   /* per-directory config */
    ws_merge_dir_conf,    /* merge per-directory (nested Locations) */
    NULL,                 /* per-server config */
    NULL,                 /* merge per-server */
    ws_cmds,              /* directives */
    ws_register_hooks,
    AP_MODULE_FLAG_NONE
};
