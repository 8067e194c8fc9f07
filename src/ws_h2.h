/* WebSockets on HTTP/2 streams (RFC 8441 through mod_http2): what they may hold.
 *
 * Every WebSocket on an h2 stream keeps one of mod_http2's workers (H2MaxWorkers per
 * child) for its whole life.  When all of them are taken, mod_http2 queues new streams
 * (WebSocket or not) until one frees: the client waits with no answer.  So the module
 * caps the h2 WebSockets of a child below H2MaxWorkers and refuses the next ones with
 * 503, leaving workers for ordinary requests and for the refusals themselves.
 */
#ifndef WS_H2_H
#define WS_H2_H

#include "httpd.h"
#include "http_config.h"

/* The directive, for the module's command table. */
#define WS_H2_CMDS \
    AP_INIT_TAKE1("WebSocketH2MaxSessions", ws_h2_cmd_max_sessions, NULL, RSRC_CONF, \
                  "most WebSockets on HTTP/2 streams per child, each holding an h2 " \
                  "worker (default auto: H2MaxWorkers less a quarter); past it: 503")

const char *ws_h2_cmd_max_sessions(cmd_parms *cmd, void *dconf, const char *arg);

/* Hooks of its own (pre_config resets the directive, post_config works out the cap). */
void ws_h2_register_hooks(void);

/* For a request on an h2 stream: 1 if it may become a WebSocket session (counted until
 * r->pool is gone, which for the blocking driver is the session's end), 0 if the cap
 * is reached (logged; the caller answers 503). */
int ws_h2_admit(request_rec *r);

#endif
