/*
 * ws_blocking.h - the blocking driver (ws_blocking.c): a thread per session.
 */
#ifndef WS_BLOCKING_H
#define WS_BLOCKING_H

#include "ws_session.h"

/* Run the open session s on this thread until it is over (the caller ends it). */
void ws_blocking_run(ws_conn *s);

#endif
