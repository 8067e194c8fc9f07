/*
 * ws_redis_tls.c - see ws_redis_tls.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "ws_redis_tls.h"

typedef struct ws_tls_pump {
    SSL *ssl;
    int tcp, local;               /* the TLS socket; our end of the socketpair */
} ws_tls_pump;

/* TCP connect to host:port within ms milliseconds; a blocking fd or -1. */
static int ws_tcp_connect(const char *host, int port, int ms)
{
    struct addrinfo hints, *res = NULL, *ai;
    char portstr[16];
    int fd = -1;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    snprintf(portstr, sizeof(portstr), "%d", port);
    if (getaddrinfo(host, portstr, &hints, &res) != 0) {
        return -1;
    }
    for (ai = res; ai && fd < 0; ai = ai->ai_next) {
        struct pollfd p;
        int err = 0;
        socklen_t elen = sizeof(err);
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            continue;
        }
        fcntl(fd, F_SETFL, O_NONBLOCK);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
            err = errno;
        }
        else {
            p.fd = fd;
            p.events = POLLOUT;
            if (poll(&p, 1, ms) != 1
                || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0) {
                err = ETIMEDOUT;
            }
        }
        if (err) {
            close(fd);
            fd = -1;
            continue;
        }
        fcntl(fd, F_SETFL, 0);
    }
    freeaddrinfo(res);
    return fd;
}

/* The TCP socket is non-blocking once the handshake is done: a TLS 1.3 server's
 * session tickets make the socket readable with no application data behind them, and a
 * blocking SSL_read would then wait for the server while the server waits for the
 * command hiredis has queued for us (a deadlock).  Wait for what OpenSSL wants after a
 * call that returned rv: 0, or -1 for a real error. */
static int ws_ssl_wait(SSL *ssl, int fd, int rv)
{
    struct pollfd p = { fd, 0, 0 };
    switch (SSL_get_error(ssl, rv)) {
    case SSL_ERROR_WANT_READ:
        p.events = POLLIN;
        break;
    case SSL_ERROR_WANT_WRITE:
        p.events = POLLOUT;
        break;
    default:
        return -1;
    }
    return poll(&p, 1, -1) < 0 && errno != EINTR ? -1 : 0;
}

/* Write all of buf through ssl (fd: its socket); 0 or -1. */
static int ws_ssl_write_all(SSL *ssl, int fd, const char *buf, int n)
{
    while (n > 0) {
        int w = SSL_write(ssl, buf, n);
        if (w > 0) {
            buf += w;
            n -= w;
        }
        else if (ws_ssl_wait(ssl, fd, w) != 0) {
            return -1;
        }
    }
    return 0;
}

static int ws_write_all(int fd, const char *buf, ssize_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, buf, (size_t)n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return -1;
        }
        buf += w;
        n -= w;
    }
    return 0;
}

/* Bytes both ways until either side ends; then everything is closed. */
static void *ws_tls_pump_main(void *arg)
{
    ws_tls_pump *p = arg;
    char buf[16384];
    for (;;) {
        struct pollfd fds[2] = { { p->local, POLLIN, 0 }, { p->tcp, POLLIN, 0 } };
        int ready = SSL_pending(p->ssl) > 0 ? 0 : poll(fds, 2, -1);
        if (ready < 0 && errno != EINTR) {
            break;
        }
        if (ready > 0 && (fds[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            ssize_t n = read(p->local, buf, sizeof(buf));
            if (n <= 0 || ws_ssl_write_all(p->ssl, p->tcp, buf, (int)n) != 0) {
                break;            /* hiredis freed its context, or TLS failed */
            }
        }
        if (ready == 0 || (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            int n = SSL_read(p->ssl, buf, sizeof(buf));
            if (n <= 0) {
                if (SSL_get_error(p->ssl, n) == SSL_ERROR_WANT_READ) {
                    continue;     /* a record without application data (a ticket) */
                }
                if (ws_ssl_wait(p->ssl, p->tcp, n) != 0) {
                    break;        /* the server closed, or TLS failed */
                }
            }
            else if (ws_write_all(p->local, buf, n) != 0) {
                break;            /* hiredis is gone */
            }
        }
    }
    SSL_shutdown(p->ssl);
    SSL_free(p->ssl);
    close(p->tcp);
    close(p->local);
    free(p);
    return NULL;
}

static SSL *ws_tls_handshake(int fd, const char *host, const char *cafile, char *why,
                             size_t whylen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = NULL;
    struct in6_addr ip;
    int is_ip = inet_pton(AF_INET, host, &ip) == 1 || inet_pton(AF_INET6, host, &ip) == 1;
    if (!ctx) {
        snprintf(why, whylen, "no TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (cafile ? SSL_CTX_load_verify_locations(ctx, cafile, NULL) != 1
               : SSL_CTX_set_default_verify_paths(ctx) != 1) {
        snprintf(why, whylen, "cannot load CA certificates %s", cafile ? cafile : "");
        SSL_CTX_free(ctx);
        return NULL;
    }
    ssl = SSL_new(ctx);
    SSL_CTX_free(ctx);            /* the SSL keeps a reference */
    if (!ssl) {
        snprintf(why, whylen, "no TLS session");
        return NULL;
    }
    if (is_ip) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host);
    }
    else {
        SSL_set_tlsext_host_name(ssl, host);
        SSL_set1_host(ssl, host);
    }
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) {
        long v = SSL_get_verify_result(ssl);
        snprintf(why, whylen, "TLS handshake failed: %s", v != X509_V_OK
                 ? X509_verify_cert_error_string(v)
                 : ERR_reason_error_string(ERR_peek_last_error()));
        ERR_clear_error();
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

redisContext *ws_redis_tls_connect(const char *host, int port, const char *cafile,
                                   struct timeval tv, char *why, size_t whylen)
{
    int ms = (int)(tv.tv_sec * 1000 + tv.tv_usec / 1000), sv[2] = { -1, -1 };
    int fd = ws_tcp_connect(host, port, ms);
    ws_tls_pump *p = NULL;
    redisContext *c;
    pthread_t tid;
    SSL *ssl;

    snprintf(why, whylen, "connect failed");
    if (fd < 0) {
        return NULL;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));   /* the handshake only */
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    ssl = ws_tls_handshake(fd, host, cafile, why, whylen);
    if (!ssl || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0
        || !(p = malloc(sizeof(*p)))) {
        goto fail;
    }
    {
        struct timeval none = { 0, 0 };
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof(none));
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);     /* see ws_ssl_wait */
    }
    p->ssl = ssl;
    p->tcp = fd;
    p->local = sv[1];
    if (pthread_create(&tid, NULL, ws_tls_pump_main, p) != 0) {
        goto fail;
    }
    pthread_detach(tid);
    c = redisConnectFd(sv[0]);    /* closes sv[0] in redisFree */
    if (!c || c->err) {
        snprintf(why, whylen, "hiredis: %s", c ? c->errstr : "out of memory");
        if (c) {
            redisFree(c);
        }
        else {
            close(sv[0]);
        }
        return NULL;              /* the pump sees EOF and cleans up */
    }
    return c;
fail:
    free(p);
    if (ssl) {
        SSL_free(ssl);
    }
    if (sv[0] >= 0) {
        close(sv[0]);
        close(sv[1]);
    }
    close(fd);
    return NULL;
}
