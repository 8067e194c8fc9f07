/*
 * epollws - the minimal epoll WebSocket echo server of the benchmarks: one thread, one
 * epoll set, non-blocking sockets, no framework.  It does what any WebSocket echo must:
 * the upgrade (Sec-WebSocket-Accept), frame parsing, unmasking, and echoes every data
 * frame back unmasked with its opcode and FIN bit (so fragmented messages come back
 * fragmented alike); pings get pongs, a close is answered and the connection ends.  No
 * UTF-8 check, no extensions, no limits beyond memory: the yardstick for what an event
 * loop costs per message, not a server to deploy.
 *
 *   epollws PORT [ADDR]          (ADDR default 127.0.0.1)
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "echo_listen.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

typedef struct buf {
    uint8_t *p;
    size_t len, off, cap;
} buf;

typedef struct client {
    int fd;
    unsigned ev;
    int open;            /* handshake done */
    int closing;         /* close answered: end once the output is written */
    buf in, out;
} client;

static int ep;

static int reserve(buf *b, size_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static void set_ev(client *c, unsigned ev)
{
    echo_set_ev(ep, c->fd, c, &c->ev, ev);
}

static void drop(client *c)
{
    close(c->fd);
    free(c->in.p);
    free(c->out.p);
    free(c);
}

/* The 101 for a complete request head; -1 if it is no WebSocket upgrade. */
static int handshake(client *c, size_t head_len)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    const char *h = (const char *)c->in.p, *end = h + head_len, *key = NULL;
    size_t klen = 0;
    for (const char *l = h; l < end;) {
        const char *eol = memmem(l, (size_t)(end - l), "\r\n", 2);
        if (!eol)
            break;
        if ((size_t)(eol - l) > 18 && strncasecmp(l, "Sec-WebSocket-Key:", 18) == 0) {
            key = l + 18;
            while (*key == ' ')
                key++;
            klen = (size_t)(eol - key);
            while (klen && key[klen - 1] == ' ')
                klen--;
        }
        l = eol + 2;
    }
    if (!key || klen > 64)
        return -1;
    char cat[128];
    memcpy(cat, key, klen);
    memcpy(cat + klen, guid, sizeof guid - 1);
    uint8_t dig[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)cat, klen + sizeof guid - 1, dig);
    char acc[64];
    EVP_EncodeBlock((unsigned char *)acc, dig, SHA_DIGEST_LENGTH);
    char resp[256];
    int n = snprintf(resp, sizeof resp, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: "
                     "websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
                     acc);
    if (reserve(&c->out, (size_t)n) != 0)
        return -1;
    memcpy(c->out.p + c->out.len, resp, (size_t)n);
    c->out.len += (size_t)n;
    c->open = 1;
    return 0;
}

/* dst = src ^ mask, eight bytes at a time. */
static void unmask(uint8_t *dst, const uint8_t *src, uint64_t n, const uint8_t *mask)
{
    uint8_t m8[8];
    for (int i = 0; i < 8; i++)
        m8[i] = mask[i & 3];
    uint64_t m, w, i = 0;
    memcpy(&m, m8, 8);
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, src + i, 8);
        w ^= m;
        memcpy(dst + i, &w, 8);
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ mask[i & 3];
}

/* Echo one complete frame at `f` (header hl bytes, payload n); pings get pongs. */
static int echo_frame(client *c, const uint8_t *f, size_t hl, uint64_t n)
{
    uint8_t op = f[0] & 0x0F, b0 = f[0];
    if (op == 0xA)                       /* pong: nothing to do */
        return 0;
    if (op == 0x9)
        b0 = 0x80 | 0xA;
    if (op == 0x8) {
        c->closing = 1;
        if (n > 125)
            n = 125;
    }
    if (reserve(&c->out, 10 + n) != 0)
        return -1;
    uint8_t *o = c->out.p + c->out.len;
    size_t oh = 2;
    o[0] = b0;
    if (n < 126) {
        o[1] = (uint8_t)n;
    } else if (n < 65536) {
        o[1] = 126;
        o[2] = (uint8_t)(n >> 8);
        o[3] = (uint8_t)n;
        oh = 4;
    } else {
        o[1] = 127;
        for (int i = 0; i < 8; i++)
            o[2 + i] = (uint8_t)(n >> (56 - 8 * i));
        oh = 10;
    }
    unmask(o + oh, f + hl, n, f + hl - 4);
    c->out.len += oh + n;
    return 0;
}

/* Handle what the input holds; -1: drop the client. */
static int process(client *c)
{
    buf *in = &c->in;
    if (!c->open) {
        uint8_t *e = memmem(in->p, in->len, "\r\n\r\n", 4);
        if (!e)
            return in->len > 8192 ? -1 : 0;
        size_t hl = (size_t)(e - in->p) + 4;
        if (handshake(c, hl) != 0)
            return -1;
        in->off = hl;
    }
    while (!c->closing && in->len - in->off >= 2) {
        const uint8_t *f = in->p + in->off;
        size_t avail = in->len - in->off, hl = 2;
        uint64_t n = f[1] & 0x7F;
        if (!(f[1] & 0x80))
            return -1;                   /* client frames are masked */
        if (n == 126) {
            if (avail < 4)
                break;
            n = (uint64_t)f[2] << 8 | f[3];
            hl = 4;
        } else if (n == 127) {
            if (avail < 10)
                break;
            n = 0;
            for (int i = 0; i < 8; i++)
                n = n << 8 | f[2 + i];
            hl = 10;
        }
        hl += 4;
        if (avail < hl || avail - hl < n)
            break;
        if (echo_frame(c, f, hl, n) != 0)
            return -1;
        in->off += hl + (size_t)n;
    }
    memmove(in->p, in->p + in->off, in->len - in->off);
    in->len -= in->off;
    in->off = 0;
    return 0;
}

/* Write the output; -1: dropped.  Reads only while nothing is left to write. */
static int flush_out(client *c)
{
    buf *o = &c->out;
    while (o->off < o->len) {
        ssize_t n = send(c->fd, o->p + o->off, o->len - o->off, MSG_NOSIGNAL);
        if (n > 0) {
            o->off += (size_t)n;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            set_ev(c, EPOLLOUT);
            return 0;
        } else {
            drop(c);
            return -1;
        }
    }
    o->off = o->len = 0;
    if (c->closing) {
        drop(c);
        return -1;
    }
    set_ev(c, EPOLLIN);
    return 0;
}

static void readable(client *c)
{
    for (int rounds = 0; rounds < 8; rounds++) {
        if (reserve(&c->in, 65536) != 0) {
            drop(c);
            return;
        }
        ssize_t n = read(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            drop(c);
            return;
        }
        if (n < 0)
            break;
        c->in.len += (size_t)n;
        if (c->in.len < c->in.cap)
            break;
    }
    if (process(c) != 0) {
        drop(c);
        return;
    }
    flush_out(c);
}

/* A new connection's client, waiting for its upgrade request. */
static void *new_client(int fd)
{
    client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->fd = fd;
    c->ev = EPOLLIN;
    return c;
}

static void on_event(void *p, unsigned ev)
{
    client *c = p;
    (void)ev;
    if (c->out.len == c->out.off)
        readable(c);
    else if (flush_out(c) == 0)  /* written out: read what came meanwhile */
        readable(c);
}

int main(int argc, char **argv)
{
    return echo_run(argc, argv, "epollws", &ep, new_client, on_event);
}
