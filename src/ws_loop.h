/*
 * ws_loop.h - the event loops (event MPM): a few threads per child that own WebSocket
 * sessions once the handshake is done.  The handler returns SUSPENDED, the MPM forgets
 * the connection, and a loop takes it in the suspend_connection hook; from then on the
 * loop alone reads and writes it (epoll on the socket, one eventfd for wake-ups), runs
 * the plugin's callbacks and the session's timers, and at the end closes the connection
 * as ap_lingering_close would and destroys its pool (which gives the MPM back its count).
 */
#ifndef WS_LOOP_H
#define WS_LOOP_H

#include "ws_session.h"

/* child_init: start n loops if the MPM is event (async).  Their stop is registered as
 * a pre-cleanup of pchild. */
void ws_loop_child_init(apr_pool_t *pchild, int n);

/* 1 if this child runs loops (the handler may hand sessions to them). */
int ws_loop_available(void);

/* Handler thread, after the 101 and on_open's output: the session goes to a loop when
 * the MPM lets go of the connection (the handler then returns SUSPENDED; the loop frees
 * r's pool once the MPM is done with it).  Returns 0, or -1 (the caller ends the
 * session). */
int ws_loop_prepare(ws_conn *s, request_rec *r);

/* suspend_connection hook (worker thread): hand a prepared session to its loop. */
void ws_loop_suspend_connection(conn_rec *c, request_rec *r);

/* child_stopping: a graceful stop lets sessions finish their close handshake; an
 * ungraceful one stops destroying connection pools at once. */
void ws_loop_child_stopping(int graceful);

/* 1 once the child is stopping (sessions shorten their drain deadlines). */
int ws_loop_stopping(void);

#endif
