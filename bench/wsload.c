/*
 * wsload - a WebSocket load generator for mod_websocket's benchmarks.
 *
 *   wsload MODE URL [options]        (wsload --help for the options)
 *
 * MODE
 *   echo       N connections keep M messages of S bytes in flight each; every echoed
 *              byte is checked; msgs/s, MB/s and round-trip latency p50/p99/max.
 *   connect    each of N slots loops: connect, handshake, one echo, closing handshake;
 *              connections/s.
 *   idle       open N connections, hold them, ping each every P seconds, a final ping
 *              that all must answer; server memory per connection and threads (from
 *              --pidfile/--pid), optionally probe clients that connect and echo meanwhile.
 *   broadcast  N subscribers count pushed messages; each is a JSON text whose first
 *              member is "ts" (send time, microseconds since the Unix epoch): deliveries/s
 *              and delivery delay.
 * URL: ws://HOST:PORT/PATH, wss://... (TLS, OpenSSL), or tcp://HOST:PORT (raw: no
 * handshake; the same masked frames go to a byte echo server and come back masked).
 *
 * Design: T threads, each with its own epoll set and its own share of the connections;
 * level-triggered, non-blocking sockets, one read buffer per thread and an incremental
 * frame parser per connection, so 10,000 idle connections cost a few hundred bytes each.
 * Client frames are masked with a fresh random key per frame (RFC 6455 5.3).  The main
 * thread only moves the global phase (setup, warm-up, run, stop) and samples the server.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>

#include "loadutil.h"
#include "srvstat.h"

/* ---- options and global state ------------------------------------------------------ */

enum { M_ECHO, M_CONNECT, M_IDLE, M_BROADCAST };
static const char *const mode_names[] = {"echo", "connect", "idle", "broadcast"};

enum { PH_SETUP, PH_WARMUP, PH_RUN, PH_STOP, PH_EXIT };

static struct {
    int mode;
    int raw, tls;
    char host[64];
    int port;
    char path[512];
    struct sockaddr_in dst;
    int conns, inflight, threads;
    size_t size;
    int binary;
    double duration, warmup;
    int nsrc;                  /* source addresses 127.0.0.1 .. 127.0.0.nsrc (0: any) */
    int burst;                 /* concurrent connection attempts (all threads) */
    int open_first;            /* echo: no message until every connection is open */
    const char *json;
    const char *pidfile;
    int pid;
    double hold, ping_interval, probe_every, final_timeout, open_timeout;
    const char *cafile;
    const char *send_on_open;
    int resume;                /* wss: offer the last session (ticket) of this thread */
    int quiet;
} opt = {
    .mode = M_ECHO, .conns = 100, .inflight = 1, .threads = 1, .size = 32,
    .duration = 5, .warmup = 1, .burst = 256, .hold = 10, .ping_interval = 10,
    .probe_every = 0, .final_timeout = 15, .open_timeout = 60,
};

static int g_phase;                 /* PH_*, written by main */
static int g_ping_round;            /* idle: bumped by main for each ping round */
static int g_probe_req;             /* idle: bumped by main to start a probe */
static int g_final_round;           /* idle: the round whose pongs count as survivors */
static SSL_CTX *g_ssl;
static __thread SSL_SESSION *t_session; /* --resume: the newest resumable session */
static uint8_t *g_pattern;          /* expected payload bytes */
static size_t g_pattern_len;
#define PATTERN_SLACK 4093

static int ld(int *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static void st(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static uint64_t ld64(uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static void add64(uint64_t *p, uint64_t v) { __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("wsload: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

/* SIGINT/SIGTERM in the measured phase of echo, connect and broadcast: end it early and
 * report what was measured so far (bench/run.py's pages-under-load stops its load so). */
static volatile sig_atomic_t g_stop_req;

static void on_stop_signal(int sig)
{
    (void)sig;
    g_stop_req = 1;
}

/* Sleep s seconds, or less when a stop was requested. */
static void sleep_run(double s)
{
    uint64_t end = now_ns() + (uint64_t)(s * 1e9);
    while (!g_stop_req && now_ns() < end)
        sleep_s(0.02);
}

/* ---- connections ------------------------------------------------------------------- */

enum {
    CS_FREE = 0,      /* no socket */
    CS_CONNECTING,    /* TCP connect in progress */
    CS_TLS,           /* TLS handshake */
    CS_HS,            /* upgrade request sent, reading the 101 */
    CS_OPEN,
    CS_CLOSING,       /* close frame sent (or received and answered), waiting */
    CS_DEAD           /* finished for good (failed, or not restarted) */
};

typedef struct conn {
    int fd;
    int id;
    int state;
    int probe;                 /* idle mode: a probe connection (connect, echo, close) */
    int started;               /* echo: its messages have been queued */
    unsigned ev;               /* events registered with epoll */
    SSL *ssl;
    int ssl_want_write;
    /* output */
    uint8_t *out;
    size_t out_len, out_off, out_cap;
    /* handshake */
    char *hs;
    size_t hs_len;
    char accept[32];
    /* frame parser */
    uint8_t hdr[14];
    uint8_t hdr_have, hdr_need;
    uint8_t opcode, fin, masked, msg_op, in_msg, in_payload;
    uint8_t mkey[4];
    uint64_t plen, pdone, msg_off;
    uint8_t ctl[128];
    uint8_t ctl_len;
    uint8_t close_sent, close_recv;
    /* echo bookkeeping */
    uint64_t sent_seq, recv_seq;
    uint64_t *ts;              /* send times of the messages in flight (ring) */
    /* idle */
    int pong_round;
    int counted_final;
    /* times */
    uint64_t t_start, t_open, t_deadline;
} conn;

typedef struct stats {
    uint64_t msgs, bytes, cycles;
    uint64_t opened, open_failed, connect_errors, hs_errors;
    uint64_t verify_errors, proto_errors, io_errors, server_closed;
    uint64_t pings, pongs, final_answers, after_close;
    uint64_t probes, probe_fail;
    uint64_t tls_full, tls_resumed;   /* TLS handshakes done: full, resumed */
    hist lat;                  /* echo: round trip; connect: cycle; broadcast: delay */
    hist probe_open, probe_echo, probe_total;
} stats;

typedef struct worker {
    int tid;
    pthread_t th;
    int ep;
    conn *conns;
    int nconns;
    int next_start;            /* next conn index not started yet (setup) */
    int pending;               /* connection attempts in progress */
    int max_pending;
    uint8_t *rbuf;
    size_t rbuf_len;
    uint64_t rng;
    int stopping;
    int ping_round;
    int probe_seen;
    int released;              /* echo --open-first: messages queued after opening */
    conn probe;
    stats s;
} worker;

static worker *g_workers;
static char g_first_error[512];

static void note_error(const char *fmt, ...)
{
    static int once;
    if (__atomic_exchange_n(&once, 1, __ATOMIC_ACQ_REL))
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_first_error, sizeof g_first_error, fmt, ap);
    va_end(ap);
    if (!opt.quiet)
        fprintf(stderr, "wsload: first error: %s\n", g_first_error);
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* Offset into g_pattern of message seq on connection id. */
static size_t pat_off(const conn *c, uint64_t seq)
{
    return (size_t)((seq * 61u + (uint64_t)c->id * 17u) % PATTERN_SLACK);
}

static void make_pattern(void)
{
    static const char alnum[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    g_pattern_len = opt.size + PATTERN_SLACK + 16;
    g_pattern = malloc(g_pattern_len);
    if (!g_pattern)
        die("out of memory");
    uint64_t r = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < g_pattern_len; i++) {
        uint64_t x = rng_next(&r);
        g_pattern[i] = opt.binary ? (uint8_t)(x >> 24) : (uint8_t)alnum[(x >> 24) % 62];
    }
}

/* ---- output ------------------------------------------------------------------------ */

static void out_reserve(conn *c, size_t need)
{
    if (c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (c->out_len + need <= c->out_cap)
        return;
    if (c->out_off > 0) {
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
        if (c->out_len + need <= c->out_cap)
            return;
    }
    size_t cap = c->out_cap ? c->out_cap : 256;
    while (cap < c->out_len + need)
        cap *= 2;
    uint8_t *p = realloc(c->out, cap);
    if (!p)
        die("out of memory");
    c->out = p;
    c->out_cap = cap;
}

/* dst = src XOR key (key rotated by nothing: payload offset 0), a word at a time. */
static void mask_copy(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t key[4])
{
    uint32_t k32;
    memcpy(&k32, key, 4);
    uint64_t k64 = ((uint64_t)k32 << 32) | k32;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, src + i, 8);
        w ^= k64;
        memcpy(dst + i, &w, 8);
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ key[i & 3];
}

/* Queue one client frame (masked with a random key), final, no RSV. */
static void queue_frame(worker *w, conn *c, unsigned opcode, const uint8_t *data, size_t len)
{
    out_reserve(c, len + 14);
    uint8_t *h = c->out + c->out_len;
    size_t n = 0;
    h[n++] = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        h[n++] = (uint8_t)(0x80 | len);
    } else if (len < 65536) {
        h[n++] = 0x80 | 126;
        h[n++] = (uint8_t)(len >> 8);
        h[n++] = (uint8_t)len;
    } else {
        h[n++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            h[n++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    /* Raw mode: a byte echo sends the frames back still masked; a zero key keeps the
     * client's receive path (memcmp, no unmasking) the same as against a server. */
    uint64_t r = opt.raw ? 0 : rng_next(&w->rng);
    uint8_t key[4] = {(uint8_t)r, (uint8_t)(r >> 8), (uint8_t)(r >> 16), (uint8_t)(r >> 24)};
    memcpy(h + n, key, 4);
    n += 4;
    mask_copy(h + n, data, len, key);
    c->out_len += n + len;
}

static void queue_message(worker *w, conn *c)
{
    c->ts[c->sent_seq % (uint64_t)opt.inflight] = now_ns();
    queue_frame(w, c, opt.binary ? 2 : 1, g_pattern + pat_off(c, c->sent_seq), opt.size);
    c->sent_seq++;
}

static void queue_close(worker *w, conn *c, unsigned code)
{
    uint8_t p[2] = {(uint8_t)(code >> 8), (uint8_t)code};
    if (c->close_sent)
        return;
    c->close_sent = 1;
    if (opt.raw)
        return;
    queue_frame(w, c, 8, p, code ? 2 : 0);
}

/* ---- socket I/O (plain or TLS) ------------------------------------------------------ */

/* > 0 bytes, 0 EOF, -1 would block, -2 error */
static ssize_t io_read(conn *c, uint8_t *buf, size_t n)
{
    if (c->ssl) {
        int r = SSL_read(c->ssl, buf, (int)(n > INT32_MAX ? INT32_MAX : n));
        if (r > 0)
            return r;
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ)
            return -1;
        if (e == SSL_ERROR_WANT_WRITE) {
            c->ssl_want_write = 1;
            return -1;
        }
        if (e == SSL_ERROR_ZERO_RETURN)
            return 0;
        if (e == SSL_ERROR_SYSCALL && r == 0)
            return 0;
        return -2;
    }
    ssize_t r = read(c->fd, buf, n);
    if (r >= 0)
        return r;
    if (errno == EAGAIN || errno == EINTR)
        return -1;
    return -2;
}

static ssize_t io_write(conn *c, const uint8_t *buf, size_t n)
{
    if (c->ssl) {
        if (n > 16384)
            n = 16384;   /* a retry after WANT_WRITE is then never shorter */
        int r = SSL_write(c->ssl, buf, (int)n);
        if (r > 0) {
            c->ssl_want_write = 0;
            return r;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
            c->ssl_want_write = (e == SSL_ERROR_WANT_WRITE);
            return -1;
        }
        return -2;
    }
    ssize_t r = send(c->fd, buf, n, MSG_NOSIGNAL);
    if (r >= 0)
        return r;
    if (errno == EAGAIN || errno == EINTR)
        return -1;
    return -2;
}

static void set_events(worker *w, conn *c, unsigned ev)
{
    if (c->ev == ev)
        return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    if (epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &e) != 0)
        die("epoll_ctl: %s", strerror(errno));
    c->ev = ev;
}

static void update_events(worker *w, conn *c)
{
    unsigned ev = EPOLLIN;
    if (c->state == CS_CONNECTING)
        ev = EPOLLOUT;
    else if (c->out_off < c->out_len || c->ssl_want_write)
        ev |= EPOLLOUT;
    set_events(w, c, ev);
}

static void conn_finish(worker *w, conn *c, int failed);

/* Write what is queued; returns -1 if the connection was finished. */
static int flush_out(worker *w, conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = io_write(c, c->out + c->out_off, c->out_len - c->out_off);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n == -1)
            break;
        w->s.io_errors++;
        note_error("write: %s", strerror(errno));
        conn_finish(w, c, 1);
        return -1;
    }
    if (c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    update_events(w, c);
    return 0;
}

/* ---- connection life cycle ---------------------------------------------------------- */

static void conn_start(worker *w, conn *c);

/* --resume: OpenSSL hands over each new session (TLS 1.3: each ticket the server sends
 * after the handshake) as it arrives, on the thread that reads it; keep the newest for
 * that thread's next connection.  A copy, taken when it arrives: a connection that ends
 * without close_notify marks its own session object not resumable. */
static int new_session_cb(SSL *ssl, SSL_SESSION *s)
{
    (void)ssl;
    SSL_SESSION *copy = SSL_SESSION_is_resumable(s) ? SSL_SESSION_dup(s) : NULL;
    if (copy) {
        if (t_session)
            SSL_SESSION_free(t_session);
        t_session = copy;
    }
    return 0;
}

static void free_conn_io(conn *c)
{
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    free(c->hs);
    c->hs = NULL;
    c->out_off = c->out_len = 0;
    if (c->out_cap > 65536) {   /* do not keep big buffers on idle connections */
        free(c->out);
        c->out = NULL;
        c->out_cap = 0;
    }
}

static int restartable(worker *w, conn *c)
{
    (void)w;
    return opt.mode == M_CONNECT && !c->probe && ld(&g_phase) < PH_STOP;
}

/* The connection is over (cleanly or not). */
static void conn_finish(worker *w, conn *c, int failed)
{
    int was = c->state;
    if (was == CS_FREE || was == CS_DEAD)
        return;
    if (was < CS_OPEN && w->pending > 0)
        w->pending--;
    uint64_t now = now_ns();
    if (c->probe) {
        if (failed || !c->t_open || c->recv_seq == 0)
            w->s.probe_fail++;
        else {
            w->s.probes++;
            h_add(&w->s.probe_total, now - c->t_start);
        }
    } else if (opt.mode == M_CONNECT && !failed && c->recv_seq > 0) {
        if (ld(&g_phase) == PH_RUN) {
            w->s.cycles++;
            h_add(&w->s.lat, now - c->t_start);
        }
    } else if (was < CS_OPEN) {
        w->s.open_failed++;
    } else if (was == CS_OPEN && ld(&g_phase) < PH_STOP && !c->close_sent) {
        w->s.server_closed++;
        note_error("connection %d closed by the server", c->id);
    }
    free_conn_io(c);
    c->state = CS_DEAD;
    if (restartable(w, c))
        conn_start(w, c);
}

static void fail_open(worker *w, conn *c, uint64_t *counter, const char *what)
{
    (*counter)++;
    note_error("connection %d: %s", c->id, what);
    conn_finish(w, c, 1);
}

static void base64(char *out, const uint8_t *in, int n)
{
    EVP_EncodeBlock((unsigned char *)out, in, n);
}

static void on_open(worker *w, conn *c);

static void send_upgrade(worker *w, conn *c)
{
    uint8_t rnd[16];
    char key[32];
    for (int i = 0; i < 16; i += 8) {
        uint64_t r = rng_next(&w->rng);
        memcpy(rnd + i, &r, 8);
    }
    base64(key, rnd, 16);
    char cat[80];
    int n = snprintf(cat, sizeof cat, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
    uint8_t dig[SHA_DIGEST_LENGTH];
    SHA1((const unsigned char *)cat, (size_t)n, dig);
    base64(c->accept, dig, SHA_DIGEST_LENGTH);
    char req[1024];
    n = snprintf(req, sizeof req,
                 "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n",
                 opt.path, opt.host, opt.port, key);
    out_reserve(c, (size_t)n);
    memcpy(c->out + c->out_len, req, (size_t)n);
    c->out_len += (size_t)n;
    c->state = CS_HS;
    c->hs = malloc(4096);
    c->hs_len = 0;
    if (!c->hs)
        die("out of memory");
    flush_out(w, c);
}

static void tcp_connected(worker *w, conn *c)
{
    if (opt.tls) {
        c->ssl = SSL_new(g_ssl);
        if (!c->ssl)
            die("SSL_new failed");
        SSL_set_fd(c->ssl, c->fd);
        SSL_set_tlsext_host_name(c->ssl, opt.host);
        if (opt.resume && t_session) {
            SSL_SESSION *offer = SSL_SESSION_dup(t_session);
            if (offer) {
                SSL_set_session(c->ssl, offer);
                SSL_SESSION_free(offer);
            }
        }
        SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                 SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
        c->state = CS_TLS;
        set_events(w, c, EPOLLIN | EPOLLOUT);
        return;
    }
    if (opt.raw) {
        on_open(w, c);
        return;
    }
    send_upgrade(w, c);
}

static void tls_step(worker *w, conn *c)
{
    int r = SSL_connect(c->ssl);
    if (r == 1) {
        if (SSL_session_reused(c->ssl))
            w->s.tls_resumed++;
        else
            w->s.tls_full++;
        send_upgrade(w, c);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ)
        set_events(w, c, EPOLLIN);
    else if (e == SSL_ERROR_WANT_WRITE)
        set_events(w, c, EPOLLOUT);
    else {
        unsigned long ee = ERR_get_error();
        char buf[256];
        ERR_error_string_n(ee, buf, sizeof buf);
        ERR_clear_error();
        fail_open(w, c, &w->s.hs_errors, buf);
    }
}

static void conn_start(worker *w, conn *c)
{
    c->state = CS_CONNECTING;
    c->hdr_have = 0;
    c->hdr_need = 2;
    c->in_msg = 0;
    c->in_payload = 0;
    c->msg_off = 0;
    c->close_sent = c->close_recv = 0;
    c->sent_seq = c->recv_seq = 0;
    c->pong_round = 0;
    c->t_start = now_ns();
    c->t_open = 0;
    c->t_deadline = c->t_start + (uint64_t)(opt.open_timeout * 1e9);
    c->ssl_want_write = 0;
    w->pending++;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        c->fd = -1;
        fail_open(w, c, &w->s.connect_errors, strerror(errno));
        return;
    }
    c->fd = fd;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (opt.nsrc > 0) {
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(c->id % opt.nsrc));
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) != 0) {
            fail_open(w, c, &w->s.connect_errors, strerror(errno));
            return;
        }
    }
    c->ev = EPOLLOUT;
    struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(w->ep, EPOLL_CTL_ADD, fd, &e) != 0)
        die("epoll_ctl add: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&opt.dst, sizeof opt.dst) == 0) {
        tcp_connected(w, c);
    } else if (errno != EINPROGRESS) {
        char what[128];
        snprintf(what, sizeof what, "connect: %s", strerror(errno));
        fail_open(w, c, &w->s.connect_errors, what);
    }
}

static void on_open(worker *w, conn *c)
{
    c->state = CS_OPEN;
    c->t_open = now_ns();
    if (w->pending > 0)
        w->pending--;
    if (c->probe) {
        h_add(&w->s.probe_open, c->t_open - c->t_start);
        queue_message(w, c);
    } else {
        w->s.opened++;
        switch (opt.mode) {
        case M_ECHO:
            if (opt.open_first && ld(&g_phase) == PH_SETUP)
                break;          /* tick() starts it once all are open */
            c->started = 1;
            for (int i = 0; i < opt.inflight; i++)
                queue_message(w, c);
            break;
        case M_CONNECT:
            queue_message(w, c);
            break;
        case M_IDLE:
            c->pong_round = ld(&g_ping_round);
            break;
        case M_BROADCAST:
            if (opt.send_on_open)
                queue_frame(w, c, 1, (const uint8_t *)opt.send_on_open,
                            strlen(opt.send_on_open));
            break;
        }
    }
    flush_out(w, c);
}

/* ---- incoming frames ----------------------------------------------------------------- */

static void proto_fail(worker *w, conn *c, const char *what)
{
    w->s.proto_errors++;
    note_error("connection %d: protocol: %s", c->id, what);
    conn_finish(w, c, 1);
}

static int on_data(worker *w, conn *c, const uint8_t *p, size_t n)
{
    if (opt.mode == M_BROADCAST) {
        if (c->msg_off < 48) {
            size_t k = n < 48 - c->msg_off ? n : 48 - (size_t)c->msg_off;
            memcpy(c->ctl + c->msg_off, p, k);
        }
        c->msg_off += n;
        return 0;
    }
    if (c->close_sent && c->recv_seq >= c->sent_seq)
        return 0;   /* after our close: ignore (mod_lua echoes the close payload as text) */
    if (c->recv_seq >= c->sent_seq) {
        proto_fail(w, c, "a message that was not sent");
        return -1;
    }
    if (c->msg_off + n > opt.size) {
        w->s.verify_errors++;
        note_error("connection %d: message %llu longer than %zu", c->id,
                   (unsigned long long)c->recv_seq, opt.size);
        conn_finish(w, c, 1);
        return -1;
    }
    if (memcmp(p, g_pattern + pat_off(c, c->recv_seq) + c->msg_off, n) != 0) {
        w->s.verify_errors++;
        note_error("connection %d: message %llu: wrong bytes at offset %llu", c->id,
                   (unsigned long long)c->recv_seq, (unsigned long long)c->msg_off);
        conn_finish(w, c, 1);
        return -1;
    }
    c->msg_off += n;
    return 0;
}

static int on_message(worker *w, conn *c)
{
    uint64_t now = now_ns();
    if (opt.mode == M_BROADCAST) {
        /* {"ts":1700000000000000, ... */
        const char *s = (const char *)c->ctl;
        size_t have = c->msg_off < 48 ? (size_t)c->msg_off : 48;
        size_t i = 0;
        while (i < have && isspace((unsigned char)s[i]))
            i++;
        if (have - i < 6 || memcmp(s + i, "{\"ts\":", 6) != 0 || c->msg_op != 1) {
            proto_fail(w, c, "pushed message does not start with {\"ts\":");
            return -1;
        }
        i += 6;
        while (i < have && s[i] == ' ')
            i++;
        uint64_t ts = 0;
        int digits = 0;
        while (i < have && s[i] >= '0' && s[i] <= '9') {
            ts = ts * 10 + (uint64_t)(s[i] - '0');
            i++;
            digits++;
        }
        if (digits == 0) {
            proto_fail(w, c, "no timestamp in pushed message");
            return -1;
        }
        if (ld(&g_phase) == PH_RUN) {
            uint64_t wu = wall_us();
            w->s.msgs++;
            w->s.bytes += c->msg_off;
            h_add(&w->s.lat, (wu > ts ? wu - ts : 0) * 1000u);
        }
        return 0;
    }
    if (c->close_sent && c->recv_seq >= c->sent_seq) {
        w->s.after_close++;
        return 0;
    }
    if (c->msg_off != opt.size || c->msg_op != (opt.binary ? 2 : 1)) {
        w->s.verify_errors++;
        note_error("connection %d: message %llu: %llu bytes of type %u, expected %zu of %u",
                   c->id, (unsigned long long)c->recv_seq, (unsigned long long)c->msg_off,
                   c->msg_op, opt.size, opt.binary ? 2u : 1u);
        conn_finish(w, c, 1);
        return -1;
    }
    uint64_t sent = c->ts[c->recv_seq % (uint64_t)opt.inflight];
    c->recv_seq++;
    if (c->probe) {
        h_add(&w->s.probe_echo, now - sent);
        queue_close(w, c, 1000);
        c->state = CS_CLOSING;
        c->t_deadline = now + 5000000000ull;
        return 0;
    }
    switch (opt.mode) {
    case M_ECHO:
        if (ld(&g_phase) == PH_RUN) {
            w->s.msgs++;
            w->s.bytes += opt.size;
            h_add(&w->s.lat, now - sent);
        }
        if (!w->stopping)
            queue_message(w, c);
        break;
    case M_CONNECT:
        queue_close(w, c, 1000);
        c->state = CS_CLOSING;
        c->t_deadline = now + 5000000000ull;
        if (opt.raw)
            shutdown(c->fd, SHUT_WR);
        break;
    default:
        break;
    }
    return 0;
}

static int on_control(worker *w, conn *c)
{
    switch (c->opcode) {
    case 9: /* ping */
        if (!c->close_sent)
            queue_frame(w, c, 10, c->ctl, c->ctl_len);
        return 0;
    case 10: /* pong */
        if (c->ctl_len == 8) {
            int round;
            uint32_t r32;
            memcpy(&r32, c->ctl, 4);
            round = (int)r32;
            if (round > c->pong_round) {
                c->pong_round = round;
                w->s.pongs++;
                if (round == ld(&g_final_round) && !c->counted_final) {
                    c->counted_final = 1;
                    add64(&w->s.final_answers, 1);
                }
            }
        }
        return 0;
    case 8: /* close */
        c->close_recv = 1;
        if (!c->close_sent) {
            if (ld(&g_phase) < PH_STOP && !c->probe && opt.mode != M_CONNECT) {
                unsigned code = c->ctl_len >= 2 ? (unsigned)(c->ctl[0] << 8 | c->ctl[1]) : 1005;
                w->s.server_closed++;
                note_error("connection %d: server sent close %u", c->id, code);
            }
            queue_close(w, c, 1000);
        }
        c->state = CS_CLOSING;
        c->t_deadline = now_ns() + 2000000000ull;
        return 0;
    default:
        return 0;
    }
}

/* Feed received frame bytes (unmasks in place in raw mode). */
static int parse(worker *w, conn *c, uint8_t *p, size_t n)
{
    while (n > 0) {
        if (!c->in_payload) {
            size_t k = c->hdr_need - c->hdr_have;
            if (k > n)
                k = n;
            memcpy(c->hdr + c->hdr_have, p, k);
            c->hdr_have = (uint8_t)(c->hdr_have + k);
            p += k;
            n -= k;
            if (c->hdr_have < c->hdr_need)
                return 0;
            if (c->hdr_need == 2) {
                unsigned l7 = c->hdr[1] & 0x7f;
                unsigned need = 2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0) +
                                ((c->hdr[1] & 0x80) ? 4 : 0);
                if (need > 2) {
                    c->hdr_need = (uint8_t)need;
                    continue;
                }
            }
            /* whole header */
            uint8_t b0 = c->hdr[0], b1 = c->hdr[1];
            c->fin = b0 >> 7;
            c->opcode = b0 & 0x0f;
            c->masked = b1 >> 7;
            unsigned l7 = b1 & 0x7f, pos = 2;
            uint64_t len = l7;
            if (l7 == 126) {
                len = (uint64_t)c->hdr[2] << 8 | c->hdr[3];
                pos = 4;
            } else if (l7 == 127) {
                len = 0;
                for (int i = 0; i < 8; i++)
                    len = len << 8 | c->hdr[2 + i];
                pos = 10;
            }
            if (c->masked)
                memcpy(c->mkey, c->hdr + pos, 4);
            c->plen = len;
            c->pdone = 0;
            c->hdr_have = 0;
            c->hdr_need = 2;
            c->in_payload = 1;
            if (b0 & 0x70)
                return proto_fail(w, c, "RSV bits set"), -1;
            if (c->masked && !opt.raw)
                return proto_fail(w, c, "masked server frame"), -1;
            if (c->opcode >= 8) {
                if (c->opcode > 10 || !c->fin || len > 125)
                    return proto_fail(w, c, "bad control frame"), -1;
                c->ctl_len = 0;
            } else if (c->opcode == 1 || c->opcode == 2) {
                if (c->in_msg)
                    return proto_fail(w, c, "data frame inside a fragmented message"), -1;
                c->in_msg = 1;
                c->msg_op = c->opcode;
                c->msg_off = 0;
            } else if (c->opcode == 0) {
                if (!c->in_msg)
                    return proto_fail(w, c, "continuation without a message"), -1;
            } else {
                return proto_fail(w, c, "reserved opcode"), -1;
            }
        } else {
            uint64_t left = c->plen - c->pdone;
            size_t k = left < n ? (size_t)left : n;
            if (c->masked && (c->mkey[0] | c->mkey[1] | c->mkey[2] | c->mkey[3])) {
                uint8_t rot[4];
                for (unsigned i = 0; i < 4; i++)
                    rot[i] = c->mkey[(c->pdone + i) & 3];
                mask_copy(p, p, k, rot);
            }
            if (c->opcode >= 8) {
                memcpy(c->ctl + c->ctl_len, p, k);
                c->ctl_len = (uint8_t)(c->ctl_len + k);
            } else if (on_data(w, c, p, k) != 0) {
                return -1;
            }
            c->pdone += k;
            p += k;
            n -= k;
        }
        if (c->in_payload && c->pdone == c->plen) {
            /* frame complete (also reached right after a header with length 0) */
            c->in_payload = 0;
            c->pdone = c->plen = 0;
            c->hdr_need = 2;
            if (c->opcode >= 8) {
                if (on_control(w, c) != 0)
                    return -1;
                c->opcode = 0xff;
            } else if (c->opcode != 0xff && c->fin) {
                c->in_msg = 0;
                c->opcode = 0xff;
                if (on_message(w, c) != 0)
                    return -1;
            } else {
                c->opcode = 0xff;
            }
        }
    }
    return 0;
}

/* Read the 101 response; returns the number of leftover bytes moved to buf, -1 on end. */
static int handshake_read(worker *w, conn *c)
{
    for (;;) {
        size_t room = 4095 - c->hs_len;
        if (room == 0)
            return fail_open(w, c, &w->s.hs_errors, "response headers too long"), -1;
        ssize_t n = io_read(c, (uint8_t *)c->hs + c->hs_len, room);
        if (n == -1)
            return 0;
        if (n <= 0)
            return fail_open(w, c, &w->s.hs_errors, "connection closed during handshake"), -1;
        c->hs_len += (size_t)n;
        c->hs[c->hs_len] = 0;
        char *end = strstr(c->hs, "\r\n\r\n");
        if (!end)
            continue;
        size_t hlen = (size_t)(end - c->hs) + 4;
        if (strncmp(c->hs, "HTTP/1.1 101", 12) != 0) {
            char what[128];
            char *eol = strstr(c->hs, "\r\n");
            snprintf(what, sizeof what, "handshake refused: %.*s", (int)(eol - c->hs), c->hs);
            return fail_open(w, c, &w->s.hs_errors, what), -1;
        }
        int ok = 0;
        for (char *line = strstr(c->hs, "\r\n") + 2; line < end;) {
            char *eol = strstr(line, "\r\n");
            if (strncasecmp(line, "Sec-WebSocket-Accept:", 21) == 0) {
                char *v = line + 21;
                while (*v == ' ')
                    v++;
                size_t vl = (size_t)(eol - v);
                while (vl > 0 && v[vl - 1] == ' ')
                    vl--;
                ok = vl == strlen(c->accept) && memcmp(v, c->accept, vl) == 0;
            }
            line = eol + 2;
        }
        if (!ok)
            return fail_open(w, c, &w->s.hs_errors, "bad Sec-WebSocket-Accept"), -1;
        size_t extra = c->hs_len - hlen;
        memcpy(w->rbuf, c->hs + hlen, extra);
        free(c->hs);
        c->hs = NULL;
        on_open(w, c);
        if (c->state != CS_OPEN)
            return -1;
        return (int)extra;
    }
}

static void conn_readable(worker *w, conn *c)
{
    if (c->state == CS_HS) {
        int extra = handshake_read(w, c);
        if (extra < 0)
            return;
        if (c->state != CS_OPEN)
            return;
        if (extra > 0 && parse(w, c, w->rbuf, (size_t)extra) != 0)
            return;
    }
    for (int rounds = 0; rounds < 16; rounds++) {
        ssize_t n = io_read(c, w->rbuf, w->rbuf_len);
        if (n == -1)
            break;
        if (n == 0) {
            /* EOF: normal after a closing handshake (or in raw connect mode) */
            int clean = c->close_recv || (opt.raw && c->close_sent) ||
                        (opt.raw && opt.mode == M_CONNECT && c->recv_seq > 0);
            if (!clean && c->state == CS_OPEN && ld(&g_phase) < PH_STOP && !c->close_sent) {
                w->s.server_closed++;
                note_error("connection %d: EOF without close", c->id);
            }
            conn_finish(w, c, !clean && !(c->close_sent && ld(&g_phase) >= PH_STOP));
            return;
        }
        if (n < 0) {
            if (!(c->close_sent || c->close_recv)) {
                w->s.io_errors++;
                note_error("connection %d: read error: %s", c->id, strerror(errno));
            }
            conn_finish(w, c, 1);
            return;
        }
        if (parse(w, c, w->rbuf, (size_t)n) != 0)
            return;
        if ((size_t)n < w->rbuf_len && !c->ssl)
            break;
    }
    flush_out(w, c);
}

static void conn_event(worker *w, conn *c, unsigned ev)
{
    switch (c->state) {
    case CS_CONNECTING: {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            char what[128];
            snprintf(what, sizeof what, "connect: %s", strerror(err));
            fail_open(w, c, &w->s.connect_errors, what);
            return;
        }
        tcp_connected(w, c);
        return;
    }
    case CS_TLS:
        tls_step(w, c);
        return;
    case CS_HS:
    case CS_OPEN:
    case CS_CLOSING:
        if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
            conn_readable(w, c);
            if (c->state == CS_DEAD || c->state == CS_FREE)
                return;
        }
        if (ev & EPOLLOUT)
            flush_out(w, c);
        return;
    default:
        return;
    }
}

/* ---- worker thread ------------------------------------------------------------------ */

static void begin_stop(worker *w)
{
    w->stopping = 1;
    uint64_t dl = now_ns() + 3000000000ull;
    for (int i = 0; i < w->nconns; i++) {
        conn *c = &w->conns[i];
        if (c->state == CS_OPEN) {
            queue_close(w, c, 1000);
            c->state = CS_CLOSING;
            c->t_deadline = dl;
            if (opt.raw)
                shutdown(c->fd, SHUT_WR);
            flush_out(w, c);
        } else if (c->state >= CS_CONNECTING && c->state < CS_OPEN) {
            c->state = CS_CLOSING;   /* not counted as a failure */
            free_conn_io(c);
            c->state = CS_DEAD;
        }
    }
}

static void send_pings(worker *w, int round)
{
    uint8_t p[8] = {0};
    uint32_t r32 = (uint32_t)round;
    memcpy(p, &r32, 4);
    for (int i = 0; i < w->nconns; i++) {
        conn *c = &w->conns[i];
        if (c->state != CS_OPEN)
            continue;
        if (opt.raw) {   /* a raw echo server returns the ping frame itself */
            queue_frame(w, c, 10, p, 8);
        } else {
            queue_frame(w, c, 9, p, 8);
        }
        w->s.pings++;
        flush_out(w, c);
    }
}

static void check_deadlines(worker *w, uint64_t now)
{
    for (int i = -1; i < w->nconns; i++) {
        conn *c = i < 0 ? &w->probe : &w->conns[i];
        if (c->state == CS_FREE || c->state == CS_DEAD || c->state == CS_OPEN)
            continue;
        if (now < c->t_deadline)
            continue;
        if (c->state < CS_OPEN)
            fail_open(w, c, &w->s.connect_errors, "timed out opening");
        else
            conn_finish(w, c, 0);   /* no close reply in time: give up quietly */
    }
}

static void tick(worker *w)
{
    int phase = ld(&g_phase);
    if (phase >= PH_STOP && !w->stopping)
        begin_stop(w);
    if (opt.mode == M_IDLE && !w->stopping) {
        int r = ld(&g_ping_round);
        if (r != w->ping_round) {
            w->ping_round = r;
            send_pings(w, r);
        }
        int pr = ld(&g_probe_req);
        if (w->tid == 0 && pr != w->probe_seen &&
            (w->probe.state == CS_FREE || w->probe.state == CS_DEAD)) {
            w->probe_seen = pr;
            conn_start(w, &w->probe);
        }
    }
    if (opt.mode == M_ECHO && opt.open_first && !w->released && phase > PH_SETUP
        && !w->stopping) {
        w->released = 1;
        for (int i = 0; i < w->nconns; i++) {
            conn *c = &w->conns[i];
            if (c->state != CS_OPEN || c->started)
                continue;
            c->started = 1;
            for (int k = 0; k < opt.inflight; k++)
                queue_message(w, c);
            flush_out(w, c);
        }
    }
    while (!w->stopping && w->next_start < w->nconns && w->pending < w->max_pending)
        conn_start(w, &w->conns[w->next_start++]);
}

static int worker_done(worker *w)
{
    if (ld(&g_phase) == PH_EXIT)
        return 1;
    if (!w->stopping)
        return 0;
    if (w->probe.state != CS_FREE && w->probe.state != CS_DEAD)
        return 0;
    for (int i = 0; i < w->nconns; i++)
        if (w->conns[i].state != CS_FREE && w->conns[i].state != CS_DEAD)
            return 0;
    return 1;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    struct epoll_event evs[512];
    uint64_t last_dl = now_ns();
    for (;;) {
        int n = epoll_wait(w->ep, evs, 512, 5);
        for (int i = 0; i < n; i++)
            conn_event(w, evs[i].data.ptr, evs[i].events);
        uint64_t now = now_ns();
        tick(w);
        if (now - last_dl > 200000000ull) {
            last_dl = now;
            check_deadlines(w, now);
            if (worker_done(w))
                break;
        }
    }
    for (int i = -1; i < w->nconns; i++) {
        conn *c = i < 0 ? &w->probe : &w->conns[i];
        free_conn_io(c);
    }
    if (t_session) {
        SSL_SESSION_free(t_session);
        t_session = NULL;
    }
    return NULL;
}

/* ---- server process tree: RSS, processes, threads (srvstat.h) --------------------- */

static int server_pid(void)
{
    if (opt.pid)
        return opt.pid;
    if (!opt.pidfile)
        return 0;
    FILE *f = fopen(opt.pidfile, "r");
    if (!f)
        return 0;
    int pid = 0;
    if (fscanf(f, "%d", &pid) != 1)
        pid = 0;
    fclose(f);
    return pid;
}

static srvstat server_stat(void)
{
    return srvstat_read(server_pid());
}

/* ---- main ------------------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f,
"usage: wsload MODE URL [options]\n"
"  MODE       echo | connect | idle | broadcast\n"
"  URL        ws://HOST:PORT/PATH, wss://HOST:PORT/PATH, or tcp://HOST:PORT (raw frames\n"
"             to a byte echo server: no handshake, frames come back masked)\n"
"options:\n"
"  -c N       connections (echo, idle, broadcast) or concurrent slots (connect) [100]\n"
"  -m M       messages in flight per connection (echo) [1]\n"
"  -s BYTES   message size (k, m suffixes: KiB, MiB) [32]\n"
"  -b         binary messages (default text)\n"
"  -d SEC     measured duration (echo, connect, broadcast) [5]\n"
"  -w SEC     warm-up before measuring [1]\n"
"  -t N       threads [1]\n"
"  -S K       spread connections over source addresses 127.0.0.1 .. 127.0.0.K\n"
"  -B N       concurrent connection attempts while opening [256]\n"
"  --open-first      echo: send nothing until every connection is open\n"
"  --hold SEC        idle: how long to hold the connections [10]\n"
"  --ping SEC        idle: client ping interval [10]\n"
"  --probe SEC       idle: every SEC seconds a new client connects, echoes, closes [off]\n"
"  --final-timeout SEC  idle: how long the final ping may take to be answered [15]\n"
"  --open-timeout SEC   give up opening a connection after this long [60]\n"
"  --pidfile FILE    server pid file: sample the RSS and threads of it and its children\n"
"  --pid PID         the same, by pid\n"
"  --send TEXT       broadcast: text message each subscriber sends after opening\n"
"  --cafile FILE     wss: verify the server certificate against FILE (default: no check)\n"
"  --resume          wss: resume TLS sessions (each thread offers the newest session\n"
"                    ticket it got; default: a full handshake every time)\n"
"  --json FILE       also write the result as JSON (- for stdout)\n"
"  -q         quiet: only the result lines\n"
"SIGINT or SIGTERM during the warm-up or the measured time (echo, connect, broadcast)\n"
"ends it early: the result covers the time measured until then.\n");
}

static double parse_size(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (*end == 'k' || *end == 'K')
        v *= 1024;
    else if (*end == 'm' || *end == 'M')
        v *= 1024 * 1024;
    return v;
}

static void parse_url(const char *url)
{
    const char *p;
    if (strncmp(url, "ws://", 5) == 0)
        p = url + 5;
    else if (strncmp(url, "wss://", 6) == 0) {
        p = url + 6;
        opt.tls = 1;
    } else if (strncmp(url, "tcp://", 6) == 0) {
        p = url + 6;
        opt.raw = 1;
    } else
        die("URL must start with ws://, wss:// or tcp://: %s", url);
    const char *colon = strchr(p, ':'), *slash = strchr(p, '/');
    if (!slash)
        slash = p + strlen(p);
    const char *hend = colon && colon < slash ? colon : slash;
    if ((size_t)(hend - p) >= sizeof opt.host)
        die("host too long");
    memcpy(opt.host, p, (size_t)(hend - p));
    opt.host[hend - p] = 0;
    opt.port = colon && colon < slash ? atoi(colon + 1) : (opt.tls ? 443 : 80);
    snprintf(opt.path, sizeof opt.path, "%s", *slash ? slash : "/");
    opt.dst.sin_family = AF_INET;
    opt.dst.sin_port = htons((uint16_t)opt.port);
    const char *h = strcmp(opt.host, "localhost") == 0 ? "127.0.0.1" : opt.host;
    if (inet_pton(AF_INET, h, &opt.dst.sin_addr) != 1)
        die("host must be an IPv4 address: %s", opt.host);
}

static void sum_stats(stats *t)
{
    memset(t, 0, sizeof *t);
    for (int i = 0; i < opt.threads; i++) {
        stats *s = &g_workers[i].s;
        t->msgs += ld64(&s->msgs);
        t->bytes += ld64(&s->bytes);
        t->cycles += ld64(&s->cycles);
        t->opened += ld64(&s->opened);
        t->open_failed += ld64(&s->open_failed);
        t->connect_errors += ld64(&s->connect_errors);
        t->hs_errors += ld64(&s->hs_errors);
        t->verify_errors += ld64(&s->verify_errors);
        t->proto_errors += ld64(&s->proto_errors);
        t->io_errors += ld64(&s->io_errors);
        t->server_closed += ld64(&s->server_closed);
        t->pings += ld64(&s->pings);
        t->pongs += ld64(&s->pongs);
        t->final_answers += ld64(&s->final_answers);
        t->probes += ld64(&s->probes);
        t->probe_fail += ld64(&s->probe_fail);
        t->tls_full += ld64(&s->tls_full);
        t->tls_resumed += ld64(&s->tls_resumed);
    }
}

static void merge_hists(stats *t)
{
    for (int i = 0; i < opt.threads; i++) {
        h_merge(&t->lat, &g_workers[i].s.lat);
        h_merge(&t->probe_open, &g_workers[i].s.probe_open);
        h_merge(&t->probe_echo, &g_workers[i].s.probe_echo);
        h_merge(&t->probe_total, &g_workers[i].s.probe_total);
    }
}

static double us(uint64_t ns) { return (double)ns / 1000.0; }

int main(int argc, char **argv)
{
    static const struct option lo[] = {
        {"hold", 1, 0, 1}, {"ping", 1, 0, 2}, {"probe", 1, 0, 3},
        {"final-timeout", 1, 0, 4}, {"open-timeout", 1, 0, 5}, {"pidfile", 1, 0, 6},
        {"pid", 1, 0, 7}, {"send", 1, 0, 8}, {"cafile", 1, 0, 9}, {"json", 1, 0, 10}, {"open-first", 0, 0, 11},
        {"resume", 0, 0, 12},
        {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    if (argc < 3) {
        usage(argc > 1 && strcmp(argv[1], "--help") == 0 ? stdout : stderr);
        return argc > 1 && strcmp(argv[1], "--help") == 0 ? 0 : 2;
    }
    int m;
    for (m = 0; m < 4; m++)
        if (strcmp(argv[1], mode_names[m]) == 0)
            break;
    if (m == 4)
        die("unknown mode %s (echo, connect, idle, broadcast)", argv[1]);
    opt.mode = m;
    parse_url(argv[2]);
    optind = 3;
    int ch;
    while ((ch = getopt_long(argc, argv, "c:m:s:bd:w:t:S:B:qh", lo, NULL)) != -1) {
        switch (ch) {
        case 'c': opt.conns = atoi(optarg); break;
        case 'm': opt.inflight = atoi(optarg); break;
        case 's': opt.size = (size_t)parse_size(optarg); break;
        case 'b': opt.binary = 1; break;
        case 'd': opt.duration = atof(optarg); break;
        case 'w': opt.warmup = atof(optarg); break;
        case 't': opt.threads = atoi(optarg); break;
        case 'S': opt.nsrc = atoi(optarg); break;
        case 'B': opt.burst = atoi(optarg); break;
        case 'q': opt.quiet = 1; break;
        case 1: opt.hold = atof(optarg); break;
        case 2: opt.ping_interval = atof(optarg); break;
        case 3: opt.probe_every = atof(optarg); break;
        case 4: opt.final_timeout = atof(optarg); break;
        case 5: opt.open_timeout = atof(optarg); break;
        case 6: opt.pidfile = optarg; break;
        case 7: opt.pid = atoi(optarg); break;
        case 8: opt.send_on_open = optarg; break;
        case 9: opt.cafile = optarg; break;
        case 10: opt.json = optarg; break;
        case 11: opt.open_first = 1; break;
        case 12: opt.resume = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (opt.conns < 1 || opt.inflight < 1 || opt.threads < 1 || opt.burst < 1)
        die("-c, -m, -t and -B must be positive");
    if (opt.threads > opt.conns)
        opt.threads = opt.conns;
    if (opt.nsrc < 0 || opt.nsrc > 254)
        die("-S wants 1..254");
    if (opt.raw && opt.mode == M_BROADCAST)
        die("broadcast needs ws:// or wss://");

    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    if ((rlim_t)opt.conns + 64 > rl.rlim_cur)
        die("%d connections need more file descriptors than the limit %llu: split the "
            "load over several wsload processes", opt.conns,
            (unsigned long long)rl.rlim_cur);

    if (opt.tls) {
        g_ssl = SSL_CTX_new(TLS_client_method());
        if (!g_ssl)
            die("SSL_CTX_new failed");
        if (opt.cafile) {
            if (SSL_CTX_load_verify_locations(g_ssl, opt.cafile, NULL) != 1)
                die("cannot load %s", opt.cafile);
            SSL_CTX_set_verify(g_ssl, SSL_VERIFY_PEER, NULL);
        } else {
            SSL_CTX_set_verify(g_ssl, SSL_VERIFY_NONE, NULL);
        }
        if (opt.resume) {
            SSL_CTX_set_session_cache_mode(g_ssl, SSL_SESS_CACHE_CLIENT |
                                                      SSL_SESS_CACHE_NO_INTERNAL_STORE);
            SSL_CTX_sess_set_new_cb(g_ssl, new_session_cb);
        } else {
            SSL_CTX_set_session_cache_mode(g_ssl, SSL_SESS_CACHE_OFF);
        }
    }
    make_pattern();

    srvstat base = server_stat();
    g_workers = calloc((size_t)opt.threads, sizeof *g_workers);
    if (!g_workers)
        die("out of memory");
    uint64_t seed = now_ns() ^ ((uint64_t)getpid() << 32);
    for (int t = 0; t < opt.threads; t++) {
        worker *w = &g_workers[t];
        w->tid = t;
        w->ep = epoll_create1(EPOLL_CLOEXEC);
        w->nconns = opt.conns / opt.threads + (t < opt.conns % opt.threads);
        w->conns = calloc((size_t)w->nconns, sizeof(conn));
        w->rbuf_len = 256 * 1024;
        w->rbuf = malloc(w->rbuf_len);
        w->max_pending = opt.burst / opt.threads > 0 ? opt.burst / opt.threads : 1;
        w->rng = seed + (uint64_t)t * 0x9E3779B97F4A7C15ull + 1;
        if (w->ep < 0 || !w->conns || !w->rbuf)
            die("out of memory");
        for (int i = 0; i < w->nconns; i++) {
            conn *c = &w->conns[i];
            c->fd = -1;
            c->id = t + i * opt.threads;
            c->ts = calloc((size_t)opt.inflight, sizeof(uint64_t));
            if (!c->ts)
                die("out of memory");
        }
        w->probe.fd = -1;
        w->probe.id = 999999;
        w->probe.probe = 1;
        w->probe.ts = calloc(1, sizeof(uint64_t));
    }
    if (opt.mode == M_IDLE)
        opt.inflight = 1;   /* probes send one message at a time */

    st(&g_phase, PH_SETUP);
    for (int t = 0; t < opt.threads; t++)
        if (pthread_create(&g_workers[t].th, NULL, worker_main, &g_workers[t]) != 0)
            die("pthread_create failed");

    stats tot;
    uint64_t t_begin = now_ns();
    double open_s = 0, elapsed = 0;
    srvstat open_stat = {0, 0, 0, 0}, hold_stat = {0, 0, 0, 0};
    uint64_t survivors = 0, expected_final = 0;
    if (opt.mode != M_CONNECT) {
        for (;;) {
            sum_stats(&tot);
            if (tot.opened + tot.open_failed >= (uint64_t)opt.conns)
                break;
            if ((double)(now_ns() - t_begin) / 1e9 > opt.open_timeout + 5)
                break;
            sleep_s(0.01);
        }
        open_s = (double)(now_ns() - t_begin) / 1e9;
        if (!opt.quiet)
            fprintf(stderr, "wsload: %llu of %d connections open in %.2f s\n",
                    (unsigned long long)tot.opened, opt.conns, open_s);
    }
    if (opt.mode == M_IDLE) {
        st(&g_phase, PH_RUN);
        sleep_s(1.0);
        open_stat = server_stat();
        uint64_t h0 = now_ns();
        double next_ping = opt.ping_interval, next_probe = opt.probe_every > 0 ? opt.probe_every / 2 : -1;
        for (;;) {
            double t = (double)(now_ns() - h0) / 1e9;
            if (t >= opt.hold)
                break;
            if (opt.ping_interval > 0 && t >= next_ping) {
                __atomic_add_fetch(&g_ping_round, 1, __ATOMIC_ACQ_REL);
                next_ping += opt.ping_interval;
            }
            if (next_probe >= 0 && t >= next_probe) {
                __atomic_add_fetch(&g_probe_req, 1, __ATOMIC_ACQ_REL);
                next_probe += opt.probe_every;
            }
            sleep_s(0.02);
        }
        hold_stat = server_stat();
        sum_stats(&tot);
        expected_final = tot.opened - tot.server_closed;
        int fr = ld(&g_ping_round) + 1;
        st(&g_final_round, fr);
        st(&g_ping_round, fr);
        uint64_t f0 = now_ns();
        for (;;) {
            sum_stats(&tot);
            uint64_t alive = tot.opened - tot.server_closed - tot.io_errors - tot.proto_errors;
            if (tot.final_answers >= alive ||
                (double)(now_ns() - f0) / 1e9 > opt.final_timeout)
                break;
            sleep_s(0.02);
        }
        survivors = tot.final_answers;
        elapsed = (double)(now_ns() - h0) / 1e9;
        /* let a probe in progress finish */
        for (int i = 0; i < 250 && g_workers[0].probe.state != CS_FREE &&
                        g_workers[0].probe.state != CS_DEAD; i++)
            sleep_s(0.02);
    } else {
        struct sigaction sa = {.sa_handler = on_stop_signal};
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        st(&g_phase, PH_WARMUP);
        sleep_run(opt.warmup);
        uint64_t r0 = now_ns();
        st(&g_phase, PH_RUN);
        sleep_run(opt.duration);
        st(&g_phase, PH_STOP);
        elapsed = (double)(now_ns() - r0) / 1e9;
        open_stat = server_stat();
    }
    st(&g_phase, PH_STOP);
    uint64_t s0 = now_ns();
    for (;;) {
        int done = 1;
        for (int t = 0; t < opt.threads; t++)
            if (!g_workers[t].th)
                continue;           /* joined already */
            else if (pthread_tryjoin_np(g_workers[t].th, NULL) == EBUSY)
                done = 0;
            else
                g_workers[t].th = 0;
        if (done)
            break;
        if ((double)(now_ns() - s0) / 1e9 > 6) {
            st(&g_phase, PH_EXIT);
            for (int t = 0; t < opt.threads; t++)
                if (g_workers[t].th)
                    pthread_join(g_workers[t].th, NULL);
            break;
        }
        sleep_s(0.01);
    }
    sum_stats(&tot);
    merge_hists(&tot);
    (void)expected_final;

    uint64_t errors = tot.verify_errors + tot.proto_errors + tot.io_errors + tot.hs_errors +
                      tot.connect_errors + tot.server_closed;
    const char *type = opt.binary ? "binary" : "text";
    const char *url = argv[2];
    int status = 0;
    FILE *jf = NULL;
    if (opt.json) {
        jf = strcmp(opt.json, "-") == 0 ? stdout : fopen(opt.json, "w");
        if (!jf)
            die("cannot write %s", opt.json);
    }
    char common[1024];
    snprintf(common, sizeof common,
             "\"mode\":\"%s\",\"url\":\"%s\",\"raw\":%s,\"tls\":%s,\"conns\":%d,\"threads\":%d,"
             "\"opened\":%llu,\"open_failed\":%llu,\"open_s\":%.3f,\"errors\":%llu,"
             "\"verify_errors\":%llu,\"protocol_errors\":%llu,\"io_errors\":%llu,"
             "\"handshake_errors\":%llu,\"connect_errors\":%llu,\"server_closed\":%llu,"
             "\"tls_resume\":%s,\"tls_full\":%llu,\"tls_resumed\":%llu,"
             "\"first_error\":\"",
             mode_names[opt.mode], url, opt.raw ? "true" : "false", opt.tls ? "true" : "false",
             opt.conns, opt.threads, (unsigned long long)tot.opened,
             (unsigned long long)tot.open_failed, open_s, (unsigned long long)errors,
             (unsigned long long)tot.verify_errors, (unsigned long long)tot.proto_errors,
             (unsigned long long)tot.io_errors, (unsigned long long)tot.hs_errors,
             (unsigned long long)tot.connect_errors, (unsigned long long)tot.server_closed,
             opt.resume ? "true" : "false", (unsigned long long)tot.tls_full,
             (unsigned long long)tot.tls_resumed);
    /* escape the first error for JSON */
    char esc[1100];
    size_t ei = 0;
    for (const char *p = g_first_error; *p && ei < sizeof esc - 8; p++) {
        if (*p == '"' || *p == '\\')
            esc[ei++] = '\\';
        esc[ei++] = (*p >= 0 && *p < 32) ? ' ' : *p;
    }
    esc[ei] = 0;

    switch (opt.mode) {
    case M_ECHO: {
        double mps = (double)tot.msgs / elapsed, mbs = (double)tot.bytes / elapsed / 1e6;
        printf("echo %s: %d conns x %d in flight, %zu B %s, %.2f s\n", url, opt.conns,
               opt.inflight, opt.size, type, elapsed);
        printf("  %.0f msgs/s  %.2f MB/s  latency us p50 %.0f p99 %.0f max %.0f\n", mps, mbs,
               us(h_pct(&tot.lat, 50)), us(h_pct(&tot.lat, 99)), us(tot.lat.max));
        printf("  opened %llu/%d  errors %llu\n", (unsigned long long)tot.opened, opt.conns,
               (unsigned long long)errors);
        if (jf)
            fprintf(jf, "{%s%s\",\"inflight\":%d,\"size\":%zu,\"type\":\"%s\",\"duration_s\":%.3f,"
                    "\"msgs\":%llu,\"msgs_per_s\":%.1f,\"mb_per_s\":%.3f,"
                    "\"lat_us\":{\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f,\"mean\":%.1f}}\n",
                    common, esc, opt.inflight, opt.size, type, elapsed,
                    (unsigned long long)tot.msgs, mps, mbs, us(h_pct(&tot.lat, 50)),
                    us(h_pct(&tot.lat, 99)), us(tot.lat.max),
                    tot.lat.n ? us(tot.lat.sum / tot.lat.n) : 0.0);
        if (errors || tot.opened < (uint64_t)opt.conns || tot.msgs == 0)
            status = 1;
        break;
    }
    case M_CONNECT: {
        double cps = (double)tot.cycles / elapsed;
        printf("connect %s: %d slots, %zu B %s echo per connection, %.2f s\n", url, opt.conns,
               opt.size, type, elapsed);
        printf("  %.0f connections/s  cycle us p50 %.0f p99 %.0f max %.0f\n", cps,
               us(h_pct(&tot.lat, 50)), us(h_pct(&tot.lat, 99)), us(tot.lat.max));
        if (opt.tls)
            printf("  TLS handshakes: %llu full, %llu resumed (--resume %s)\n",
                   (unsigned long long)tot.tls_full, (unsigned long long)tot.tls_resumed,
                   opt.resume ? "on" : "off");
        printf("  errors %llu\n", (unsigned long long)errors);
        if (jf)
            fprintf(jf, "{%s%s\",\"size\":%zu,\"type\":\"%s\",\"duration_s\":%.3f,"
                    "\"cycles\":%llu,\"conns_per_s\":%.1f,"
                    "\"cycle_us\":{\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f}}\n",
                    common, esc, opt.size, type, elapsed, (unsigned long long)tot.cycles, cps,
                    us(h_pct(&tot.lat, 50)), us(h_pct(&tot.lat, 99)), us(tot.lat.max));
        if (tot.cycles == 0 || errors > tot.cycles / 100)
            status = 1;
        break;
    }
    case M_IDLE: {
        srvstat end = hold_stat.ok ? hold_stat : open_stat;
        long growth = end.ok && base.ok ? end.rss_kb - base.rss_kb : 0;
        double per = tot.opened ? (double)growth * 1024.0 / (double)tot.opened : 0;
        printf("idle %s: %d conns, held %.1f s, ping every %.0f s\n", url, opt.conns,
               elapsed, opt.ping_interval);
        printf("  opened %llu/%d in %.2f s  survivors %llu (answered the final ping)\n",
               (unsigned long long)tot.opened, opt.conns, open_s,
               (unsigned long long)survivors);
        if (end.ok)
            printf("  server: %d processes, %d threads, RSS %ld -> %ld KiB: %.1f KiB per "
                   "connection\n", end.procs, end.threads, base.rss_kb, end.rss_kb,
                   per / 1024.0);
        if (tot.probes + tot.probe_fail)
            printf("  probes %llu ok %llu failed: connect+handshake ms max %.2f, echo ms "
                   "max %.2f, total ms p50 %.2f max %.2f\n",
                   (unsigned long long)tot.probes, (unsigned long long)tot.probe_fail,
                   us(tot.probe_open.max) / 1000, us(tot.probe_echo.max) / 1000,
                   us(h_pct(&tot.probe_total, 50)) / 1000, us(tot.probe_total.max) / 1000);
        printf("  pings %llu pongs %llu errors %llu\n", (unsigned long long)tot.pings,
               (unsigned long long)tot.pongs, (unsigned long long)errors);
        if (jf)
            fprintf(jf, "{%s%s\",\"hold_s\":%.2f,\"ping_interval_s\":%.1f,\"survivors\":%llu,"
                    "\"pings\":%llu,\"pongs\":%llu,"
                    "\"server\":{\"ok\":%s,\"rss_base_kb\":%ld,\"rss_open_kb\":%ld,"
                    "\"rss_kb\":%ld,\"rss_growth_kb\":%ld,\"per_conn_kb\":%.2f,\"procs\":%d,"
                    "\"threads\":%d},"
                    "\"probe\":{\"ok\":%llu,\"failed\":%llu,\"open_ms_max\":%.3f,"
                    "\"echo_ms_max\":%.3f,\"total_ms_p50\":%.3f,\"total_ms_max\":%.3f}}\n",
                    common, esc, elapsed, opt.ping_interval, (unsigned long long)survivors,
                    (unsigned long long)tot.pings, (unsigned long long)tot.pongs,
                    end.ok ? "true" : "false", base.rss_kb, open_stat.rss_kb, end.rss_kb,
                    growth, per / 1024.0, end.procs, end.threads,
                    (unsigned long long)tot.probes, (unsigned long long)tot.probe_fail,
                    us(tot.probe_open.max) / 1000, us(tot.probe_echo.max) / 1000,
                    us(h_pct(&tot.probe_total, 50)) / 1000, us(tot.probe_total.max) / 1000);
        if (survivors < (uint64_t)opt.conns || tot.probe_fail)
            status = 1;
        break;
    }
    case M_BROADCAST: {
        double dps = (double)tot.msgs / elapsed;
        printf("broadcast %s: %d subscribers, %.2f s\n", url, opt.conns, elapsed);
        printf("  %.0f deliveries/s (%.1f per subscriber)  %.2f MB/s  delay us p50 %.0f p99 "
               "%.0f max %.0f\n", dps, dps / (double)(tot.opened ? tot.opened : 1),
               (double)tot.bytes / elapsed / 1e6, us(h_pct(&tot.lat, 50)),
               us(h_pct(&tot.lat, 99)), us(tot.lat.max));
        printf("  opened %llu/%d  errors %llu\n", (unsigned long long)tot.opened, opt.conns,
               (unsigned long long)errors);
        if (jf)
            fprintf(jf, "{%s%s\",\"duration_s\":%.3f,\"deliveries\":%llu,"
                    "\"deliveries_per_s\":%.1f,\"per_subscriber_per_s\":%.2f,\"mb_per_s\":%.3f,"
                    "\"delay_us\":{\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f}}\n",
                    common, esc, elapsed, (unsigned long long)tot.msgs, dps,
                    dps / (double)(tot.opened ? tot.opened : 1),
                    (double)tot.bytes / elapsed / 1e6, us(h_pct(&tot.lat, 50)),
                    us(h_pct(&tot.lat, 99)), us(tot.lat.max));
        if (errors || tot.msgs == 0)
            status = 1;
        break;
    }
    }
    if (jf && jf != stdout)
        fclose(jf);
    fflush(stdout);
    return status;
}
