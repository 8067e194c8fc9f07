/*
 * ws_accept.h - Sec-WebSocket-Accept (RFC 6455 4.2.2 step 5.4), computed with
 * apr-util's SHA-1 and base64.  Kept apart from the protocol core because it needs
 * apr-util, and apart from mod_websocket.c so the RFC's example is unit-testable.
 */
#ifndef WS_ACCEPT_H
#define WS_ACCEPT_H

#define WS_ACCEPT_LEN 28   /* base64 of a 20-byte SHA-1, without the NUL */

/* Write base64(SHA-1(key + GUID)) and a NUL into out (at least WS_ACCEPT_LEN + 1
 * bytes).  key is the client's Sec-WebSocket-Key as sent (already validated). */
void ws_accept_key(const char *key, char *out);

#endif
