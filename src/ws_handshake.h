/*
 * ws_handshake.h - the handler of WebSocket locations (ws_handshake.c).
 */
#ifndef WS_HANDSHAKE_H
#define WS_HANDSHAKE_H

#include "httpd.h"

/* The handler hook: DECLINED outside WebSocket locations. */
int ws_handler(request_rec *r);

#endif
