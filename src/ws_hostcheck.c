/*
 * ws_hostcheck.c - see ws_hostcheck.h.
 */
#include <string.h>

#include "httpd.h"
#include "apr_network_io.h"
#include "apr_strings.h"
#include "apr_uri.h"

#include "ws_hostcheck.h"

static int ws_in_names(const apr_array_header_t *names, const char *host, int wild)
{
    int i;
    for (i = 0; names && i < names->nelts; i++) {
        const char *name = APR_ARRAY_IDX(names, i, const char *);
        if (wild ? ap_strcasecmp_match(host, name) == 0 : strcasecmp(host, name) == 0) {
            return 1;
        }
    }
    return 0;
}

static int ws_is_loopback(const conn_rec *c)
{
    const apr_sockaddr_t *a = c->local_addr;
    if (!a) {
        return 0;
    }
    if (a->family == APR_INET) {
        return (ntohl(a->sa.sin.sin_addr.s_addr) >> 24) == 127;
    }
#if APR_HAVE_IPV6
    if (a->family == APR_INET6) {
        const struct in6_addr *in6 = &a->sa.sin6.sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(in6)
               || (IN6_IS_ADDR_V4MAPPED(in6) && in6->s6_addr[12] == 127);
    }
#endif
    return 0;
}

int ws_host_known(request_rec *r, const char *hostname)
{
    const server_rec *s = r->server;
    const conn_rec *c = r->connection;
    if (!hostname || !*hostname) {
        return 0;
    }
    if ((s->server_hostname && strcasecmp(hostname, s->server_hostname) == 0)
        || ws_in_names(s->names, hostname, 0) || ws_in_names(s->wild_names, hostname, 1)) {
        return 1;
    }
    if (c->local_ip && strcasecmp(hostname, c->local_ip) == 0) {
        return 1;
    }
    return strcasecmp(hostname, "localhost") == 0 && ws_is_loopback(c);
}

const char *ws_lower(apr_pool_t *p, const char *s)
{
    char *copy = apr_pstrdup(p, s);
    ap_str_tolower(copy);
    return copy;
}

/* Normalize an origin "scheme://host[:port]" to lower case with an explicit port.
 * Returns NULL if it is not of that form. */
const char *ws_origin_normalize(apr_pool_t *p, const char *origin)
{
    apr_uri_t u;
    apr_port_t port;
    if (apr_uri_parse(p, origin, &u) != APR_SUCCESS || !u.scheme || !u.hostname
        || (u.path && *u.path && strcmp(u.path, "/") != 0) || u.query || u.user) {
        return NULL;
    }
    port = u.port ? u.port : apr_uri_port_of_scheme(u.scheme);
    if (!port) {
        return NULL;
    }
    return apr_psprintf(p, "%s://%s:%u", ws_lower(p, u.scheme), ws_lower(p, u.hostname),
                        (unsigned)port);
}
