/*
 * echo_listen.h - the start-up the benchmarks' small echo servers (rawecho, epollws)
 * share: SIGPIPE ignored, the open-file limit raised to the hard limit, a non-blocking
 * listening socket on ADDR:PORT (ADDR default 127.0.0.1) in a new epoll set; accepting.
 */
#ifndef ECHO_LISTEN_H
#define ECHO_LISTEN_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

/* argv: PORT [ADDR].  Returns the listening socket, registered in *ep with a NULL data
 * pointer; -1 after printing why (prefixed with `who`). */
static inline int echo_listen(int argc, char **argv, const char *who, int *ep)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT [ADDR]\n", who);
        return -1;
    }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    inet_pton(AF_INET, argc > 2 ? argv[2] : "127.0.0.1", &a.sin_addr);
    if (bind(ls, (struct sockaddr *)&a, sizeof a) != 0 || listen(ls, 4096) != 0) {
        fprintf(stderr, "%s: bind/listen: ", who);
        perror(NULL);
        return -1;
    }
    *ep = epoll_create1(0);
    struct epoll_event le = {.events = EPOLLIN, .data.ptr = NULL};
    epoll_ctl(*ep, EPOLL_CTL_ADD, ls, &le);
    return ls;
}

/* Accept every pending connection (TCP_NODELAY) and register it for EPOLLIN with the
 * pointer make(fd) returns (the server's client; NULL: the connection is closed). */
static inline void echo_accept_all(int ls, int ep, void *(*make)(int fd))
{
    int one = 1;
    for (;;) {
        int fd = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
        if (fd < 0)
            return;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        void *c = make(fd);
        if (!c) {
            close(fd);
            continue;
        }
        struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
    }
}

/* Change what epoll waits for on fd (registered with data pointer ptr); *cur tracks it. */
static inline void echo_set_ev(int ep, int fd, void *ptr, unsigned *cur, unsigned ev)
{
    if (*cur == ev)
        return;
    struct epoll_event e = {.events = ev, .data.ptr = ptr};
    epoll_ctl(ep, EPOLL_CTL_MOD, fd, &e);
    *cur = ev;
}

/* The whole server: listen (argv: PORT [ADDR]), accept, and hand every event on a
 * client to on_event(client, epoll events).  Returns only on a start-up error. */
static inline int echo_run(int argc, char **argv, const char *who, int *ep,
                           void *(*make)(int fd), void (*on_event)(void *c, unsigned ev))
{
    int ls = echo_listen(argc, argv, who, ep);
    if (ls < 0)
        return argc < 2 ? 2 : 1;
    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(*ep, evs, 256, -1);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr)
                on_event(evs[i].data.ptr, evs[i].events);
            else
                echo_accept_all(ls, *ep, make);
        }
    }
}

#endif
