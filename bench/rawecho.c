/*
 * rawecho - the raw TCP peer of the benchmarks: an epoll server that writes back every
 * byte it reads, on one thread.  wsload's tcp:// mode sends it the same masked frames
 * it sends a WebSocket server, so the byte traffic is the same and this is the limit
 * for it: no handshake, no parsing, no unmasking.
 *
 *   rawecho PORT [ADDR]          (ADDR default 127.0.0.1)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "echo_listen.h"

typedef struct client {
    int fd;
    unsigned ev;
    char *pend;          /* bytes read but not yet written back */
    size_t len, off, cap;
} client;

static int ep;

static void set_ev(client *c, unsigned ev)
{
    echo_set_ev(ep, c->fd, c, &c->ev, ev);
}

static void drop(client *c)
{
    close(c->fd);
    free(c->pend);
    free(c);
}

/* Write pending bytes; 0 ok, -1 closed. */
static int flush_pending(client *c)
{
    while (c->off < c->len) {
        ssize_t n = send(c->fd, c->pend + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (n > 0) {
            c->off += (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            set_ev(c, EPOLLOUT);      /* stop reading until the peer reads */
            return 0;
        } else {
            drop(c);
            return -1;
        }
    }
    c->off = c->len = 0;
    if (c->cap > 1 << 20) {
        free(c->pend);
        c->pend = NULL;
        c->cap = 0;
    }
    set_ev(c, EPOLLIN);
    return 0;
}

static void readable(client *c, char *buf, size_t bufsz)
{
    for (int rounds = 0; rounds < 8; rounds++) {
        ssize_t n = read(c->fd, buf, bufsz);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            drop(c);
            return;
        }
        if (n < 0)
            return;
        size_t done = 0;
        while (done < (size_t)n) {
            ssize_t w = send(c->fd, buf + done, (size_t)n - done, MSG_NOSIGNAL);
            if (w > 0) {
                done += (size_t)w;
                continue;
            }
            if (w < 0 && (errno == EAGAIN || errno == EINTR))
                break;
            drop(c);
            return;
        }
        if (done < (size_t)n) {
            size_t rest = (size_t)n - done;
            if (c->cap < rest) {
                char *p = realloc(c->pend, rest);
                if (!p) {
                    drop(c);
                    return;
                }
                c->pend = p;
                c->cap = rest;
            }
            memcpy(c->pend, buf + done, rest);
            c->len = rest;
            c->off = 0;
            set_ev(c, EPOLLOUT);
            return;
        }
        if ((size_t)n < bufsz)
            return;
    }
}

/* A new connection's client. */
static void *new_client(int fd)
{
    client *c = calloc(1, sizeof *c);
    if (c) {
        c->fd = fd;
        c->ev = EPOLLIN;
    }
    return c;
}

static void on_event(void *p, unsigned ev)
{
    static char buf[256 * 1024];
    client *c = p;
    if (c->len <= c->off)
        readable(c, buf, sizeof buf);
    else if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))
        flush_pending(c);
}

int main(int argc, char **argv)
{
    return echo_run(argc, argv, "rawecho", &ep, new_client, on_event);
}
