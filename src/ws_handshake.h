/*
 * ws_handshake.h - the handler of WebSocket locations (ws_handshake.c).
 */
#ifndef WS_HANDSHAKE_H
#define WS_HANDSHAKE_H

#include "httpd.h"

#include "ws_conf.h"

/* The handler hook: DECLINED outside WebSocket locations. */
int ws_handler(request_rec *r);

/* After the answer's head the connection is a byte stream this module writes (the 101,
 * or an HTTP subscriber's stream): request timeouts off, no keep-alive. */
void ws_prepare_connection(request_rec *r);

/* 1 if r's session goes to an event loop (event MPM, HTTP/1.1, not WebSocketDriver
 * blocking), else it runs on the handler thread. */
int ws_wants_loop(request_rec *r, const ws_dir_conf *conf);

#endif
