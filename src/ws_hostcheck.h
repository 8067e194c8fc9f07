/*
 * ws_hostcheck.h - is the Host of a request one this virtual host answers to?  Part of
 * the same-origin check (WebSocketCheckHost, default on): an Origin equal to the Host
 * proves nothing when the Host is a name an attacker points at this server (DNS
 * rebinding), so the Host must also be the vhost's own.
 */
#ifndef WS_HOSTCHECK_H
#define WS_HOSTCHECK_H

#include "httpd.h"

/* 1 if hostname (from the Host header, without port or brackets) is the ServerName or a
 * ServerAlias (wildcards as httpd matches them) of r's virtual host, the address the
 * connection arrived at (users who type the IP), or "localhost" on a loopback
 * connection. */
int ws_host_known(request_rec *r, const char *hostname);

/* s in lower case (ASCII), in p. */
const char *ws_lower(apr_pool_t *p, const char *s);

/* An Origin header as "scheme://host:port" in lower case with the default port made
 * explicit, or NULL if it is not an origin. */
const char *ws_origin_normalize(apr_pool_t *p, const char *origin);

#endif
