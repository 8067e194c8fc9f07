/*
 * ws_redis_tls.h - rediss:// for a hiredis without TLS (Debian's 0.14 has none): the
 * module connects over TLS itself (OpenSSL; the server's certificate verified against
 * CAFILE or the system store, and its name or IP checked) and hands hiredis one end of a
 * socketpair; a small thread per connection pumps bytes between the two.  hiredis sees
 * a plain stream, so the rest of the backplane is unchanged; freeing the context closes
 * the pair and ends the thread.
 */
#ifndef WS_REDIS_TLS_H
#define WS_REDIS_TLS_H

#include <stddef.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>

/* Connect to host:port over TLS within tv.  cafile: PEM file of trusted CAs, or NULL
 * for the system's.  Returns a context, or NULL with the reason in why. */
redisContext *ws_redis_tls_connect(const char *host, int port, const char *cafile,
                                   struct timeval tv, char *why, size_t whylen);

#endif
