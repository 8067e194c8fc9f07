/*
 * ws_status.h - mod_websocket's counters and its section of /server-status.
 *
 * One slot per child process in anonymous shared memory made by the parent for each
 * configuration generation (mod_status does not see parked connections as busy
 * workers).  A child claims a free slot at start and clears it at exit; the status page
 * sums the slots of the live children.  `/server-status?auto` (AP_STATUS_SHORT) gets
 * `Key: value` lines for monitoring (docs/packaging.md lists them), the HTML page a
 * short summary.
 *
 * Every function is a no-op when the slots could not be made or this child has none.
 */
#ifndef WS_STATUS_H
#define WS_STATUS_H

#include "apr_pools.h"
#include "apr_time.h"

/* post_config, in the parent: make the slots.  backplane names the backplane mode
 * ("embedded", "redis", "off") for the status page. */
void ws_status_create(apr_pool_t *pconf, const char *backplane);

/* child_init: claim this child's slot (released by a pchild cleanup). */
void ws_status_child_init(apr_pool_t *pchild);

/* register_hooks: the mod_status hook. */
void ws_status_register_hooks(void);

/* A session was accepted (101 sent or about to be); async: which driver runs it. */
void ws_status_session_open(int async);

/* An accepted session ended with this close code (as given to on_close); its message
 * and wire byte counts. */
void ws_status_session_end(int async, unsigned code, apr_uint64_t msgs_in,
                           apr_uint64_t bytes_in, apr_uint64_t msgs_out,
                           apr_uint64_t bytes_out);

/* A send was refused because the connection's outbound queue was full (it is then
 * closed with 1008). */
void ws_status_queue_drop(void);

/* The backplane: a child's ring reader fell a whole ring behind (messages lost);
 * a Redis connection of this child (publisher or subscriber) went up or down. */
void ws_status_bp_overrun(void);
void ws_status_bp_redis(int subscriber, int up);

#endif
