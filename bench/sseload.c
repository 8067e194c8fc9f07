/*
 * sseload - a load generator for channels over plain HTTP: EventSource subscribers and
 * HTTP POST publishers (bench/sse.py drives it against mod_websocket and nginx + nchan).
 *
 *   sseload SUB_URL PUB_URL [options]        (sseload --help for the options)
 *
 * N subscribers GET SUB_URL (http://HOST:PORT/PATH) with Accept: text/event-stream and
 * read the stream, chunked or not.  P publishers POST to PUB_URL on keep-alive
 * connections, one request in flight each: every --interval ms (on one schedule shared by
 * the publishers), or back to back (--interval 0).  Each body is a JSON text
 * {"ts":WALL_US,"seq":K,...} padded to --size bytes; K counts publishes (all publishers).
 *
 * Phases: open every subscriber (server memory and threads are read before and after),
 * warm-up publishes, the measured publishes, then a grace period for late deliveries.
 * A delivery counts when its seq is one of the measured publishes: delivered against
 * expected (subscribers x measured publishes), delivery delay (receive time - ts) p50/p99,
 * publishes/s and the POST round trip.  With one publisher each subscriber also checks
 * that seqs arrive in order without gaps.
 *
 * Design: T subscriber threads, each with its own epoll set and its share of the
 * subscribers (level-triggered, non-blocking, a few hundred bytes each); one blocking
 * thread per publisher; main moves the phases and samples the server.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
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

#include "loadutil.h"
#include "srvstat.h"

/* ---- options and shared state -------------------------------------------------------- */

static struct {
    int subs, pubs, threads, interval_ms, pid, quiet;
    double duration, warmup, grace, open_timeout;
    size_t size;
    const char *json;
} opt = {.subs = 1000, .pubs = 1, .threads = 1, .interval_ms = 100, .duration = 10,
         .warmup = 2, .grace = 5, .open_timeout = 120, .size = 64};

typedef struct target {
    struct sockaddr_in addr;
    char host[128];            /* Host header */
    char path[512];
} target;

static target g_sub, g_pub;

enum { PH_SETUP, PH_WARM, PH_RUN, PH_GRACE, PH_END };
static int g_phase = PH_SETUP;
static uint64_t g_seq;                      /* next publish seq (all publishers) */
static uint64_t g_first = UINT64_MAX;       /* first measured seq */
static uint64_t g_pub_next_ns;              /* interval mode: next scheduled publish */
static pthread_mutex_t g_pub_lock = PTHREAD_MUTEX_INITIALIZER;

static int ld(int *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static void st(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static uint64_t ld64(uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("sseload: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

static char g_first_error[256];
static pthread_mutex_t g_err_lock = PTHREAD_MUTEX_INITIALIZER;

static void note_error(const char *fmt, ...)
{
    pthread_mutex_lock(&g_err_lock);
    if (!g_first_error[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(g_first_error, sizeof g_first_error, fmt, ap);
        va_end(ap);
        if (!opt.quiet)
            fprintf(stderr, "sseload: %s\n", g_first_error);
    }
    pthread_mutex_unlock(&g_err_lock);
}

/* ---- subscribers ----------------------------------------------------------------------- */

enum { SS_FREE, SS_CONNECTING, SS_HEAD, SS_BODY, SS_DONE };
enum { CH_SIZE, CH_EXT, CH_DATA, CH_DATA_END };
#define HEAD_MAX 2048
#define LINE_MAX 120

typedef struct sub {
    int fd, state;
    char *head;                /* the response head while it arrives */
    unsigned hlen, llen;
    int chunked, ch_state, cr;
    uint64_t ch_left;
    uint64_t ev_ts, ev_seq, last_seq;
    int ev_has;
    char line[LINE_MAX];
} sub;

typedef struct sworker {
    pthread_t th;
    int ep, n, opened, pending;
    sub *subs;
    /* read by main while running */
    int subscribed, closed, errors;
    uint64_t delivered;
    /* merged at the end */
    uint64_t out_of_order, gaps, events;
    hist delay;
} sworker;

static sworker *g_sw;

/* A subscriber ends: refused or failed before its stream (an error), or its stream ended
 * before the run did (closed: it lost messages). */
static void sub_fail(sworker *w, sub *c, const char *what)
{
    if (c->state == SS_CONNECTING || c->state == SS_HEAD) {
        w->pending--;
        __atomic_fetch_add(&w->errors, 1, __ATOMIC_RELAXED);
        note_error("subscriber: %s", what);
    } else if (c->state == SS_BODY && ld(&g_phase) != PH_END) {
        __atomic_fetch_add(&w->closed, 1, __ATOMIC_RELAXED);
        note_error("subscriber: %s", what);
    }
    free(c->head);
    c->head = NULL;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->state = SS_DONE;
}

static void sub_start(sworker *w, sub *c)
{
    w->opened++;
    w->pending++;
    c->state = SS_CONNECTING;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die("socket: %s", strerror(errno));
    if (connect(c->fd, (struct sockaddr *)&g_sub.addr, sizeof g_sub.addr) < 0 &&
        errno != EINPROGRESS) {
        sub_fail(w, c, strerror(errno));
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
}

/* The socket connected: send the request (small: it fits the socket buffer). */
static void sub_send(sworker *w, sub *c)
{
    char req[1024];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s\r\n"
                     "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n",
                     g_sub.path, g_sub.host);
    if (write(c->fd, req, (size_t)n) != n) {
        sub_fail(w, c, "could not send the request");
        return;
    }
    c->head = malloc(HEAD_MAX + 1);
    if (!c->head)
        die("out of memory");
    c->hlen = 0;
    c->state = SS_HEAD;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* A number after `key` in s (up to n bytes); 0 when absent. */
static uint64_t json_u64(const char *s, size_t n, const char *key)
{
    size_t kl = strlen(key);
    for (size_t i = 0; i + kl < n; i++)
        if (memcmp(s + i, key, kl) == 0) {
            uint64_t v = 0;
            for (i += kl; i < n && s[i] >= '0' && s[i] <= '9'; i++)
                v = v * 10 + (uint64_t)(s[i] - '0');
            return v;
        }
    return 0;
}

/* One event ended (blank line): a delivery when it had our data. */
static void sub_event(sworker *w, sub *c)
{
    if (!c->ev_has)
        return;
    c->ev_has = 0;
    w->events++;
    if (opt.pubs == 1 && c->last_seq) {
        if (c->ev_seq <= c->last_seq)
            w->out_of_order++;
        else if (c->ev_seq != c->last_seq + 1)
            w->gaps += c->ev_seq - c->last_seq - 1;
    }
    if (c->ev_seq > c->last_seq)
        c->last_seq = c->ev_seq;
    if (c->ev_seq >= ld64(&g_first)) {
        uint64_t now = wall_us();
        h_add(&w->delay, (now > c->ev_ts ? now - c->ev_ts : 0) * 1000u);
        __atomic_fetch_add(&w->delivered, 1, __ATOMIC_RELAXED);
    }
}

static void sub_line(sworker *w, sub *c)
{
    unsigned n = c->llen < LINE_MAX ? c->llen : LINE_MAX;
    if (c->llen == 0) {
        sub_event(w, c);
    } else if (n >= 5 && memcmp(c->line, "data:", 5) == 0) {
        c->ev_ts = json_u64(c->line, n, "\"ts\":");
        c->ev_seq = json_u64(c->line, n, "\"seq\":");
        c->ev_has = c->ev_ts != 0;
    }
    c->llen = 0;
}

/* Event-stream bytes (after any de-chunking). */
static void sub_sse(sworker *w, sub *c, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (c->cr && ch == '\n') {
            c->cr = 0;
            continue;
        }
        c->cr = ch == '\r';
        if (ch == '\n' || ch == '\r') {
            sub_line(w, c);
        } else {
            if (c->llen < LINE_MAX)
                c->line[c->llen] = ch;
            c->llen++;
        }
    }
}

/* Body bytes: through the chunked decoder when the head said so. */
static int sub_body(sworker *w, sub *c, const char *p, size_t n)
{
    if (!c->chunked) {
        sub_sse(w, c, p, n);
        return 0;
    }
    size_t i = 0;
    while (i < n) {
        char ch = p[i];
        switch (c->ch_state) {
        case CH_SIZE:
            if (ch >= '0' && ch <= '9')
                c->ch_left = c->ch_left * 16 + (uint64_t)(ch - '0');
            else if ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'f')
                c->ch_left = c->ch_left * 16 + (uint64_t)((ch | 0x20) - 'a' + 10);
            else
                c->ch_state = CH_EXT;
            if (c->ch_state != CH_EXT) {
                i++;
                break;
            }
            /* fall through */
        case CH_EXT:
            if (p[i++] == '\n') {
                if (c->ch_left == 0)
                    return -1;              /* the last chunk: the stream ended */
                c->ch_state = CH_DATA;
            }
            break;
        case CH_DATA: {
            size_t k = n - i < c->ch_left ? n - i : (size_t)c->ch_left;
            sub_sse(w, c, p + i, k);
            i += k;
            c->ch_left -= k;
            if (c->ch_left == 0)
                c->ch_state = CH_DATA_END;
            break;
        }
        case CH_DATA_END:
            if (p[i++] == '\n')
                c->ch_state = CH_SIZE;
            break;
        }
    }
    return 0;
}

/* Response head bytes; the rest goes to the body.  Returns -1 on a refused subscribe. */
static int sub_head(sworker *w, sub *c, const char *p, size_t n)
{
    size_t k = n < HEAD_MAX - c->hlen ? n : HEAD_MAX - c->hlen;
    memcpy(c->head + c->hlen, p, k);
    c->hlen += (unsigned)k;
    c->head[c->hlen] = 0;
    char *end = strstr(c->head, "\r\n\r\n");
    if (!end) {
        if (c->hlen == HEAD_MAX) {
            sub_fail(w, c, "response head too long");
            return -1;
        }
        return 0;
    }
    int status = 0;
    if (sscanf(c->head, "HTTP/1.%*d %d", &status) != 1 || status != 200 ||
        !strcasestr(c->head, "text/event-stream")) {
        char what[96];
        snprintf(what, sizeof what, "subscribe answered %.60s", c->head);
        for (char *q = what; *q; q++)
            if (*q == '\r' || *q == '\n')
                *q = ' ';
        sub_fail(w, c, what);
        return -1;
    }
    c->chunked = strcasestr(c->head, "transfer-encoding: chunked") != NULL;
    size_t used = (size_t)(end + 4 - c->head) - (c->hlen - k);
    free(c->head);
    c->head = NULL;
    c->state = SS_BODY;
    w->pending--;
    __atomic_fetch_add(&w->subscribed, 1, __ATOMIC_RELAXED);
    return sub_body(w, c, p + used, n - used);
}

static void sub_readable(sworker *w, sub *c, char *buf, size_t cap)
{
    for (int round = 0; round < 4; round++) {
        ssize_t n = read(c->fd, buf, cap);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            sub_fail(w, c, n == 0 ? "the server closed the connection" : strerror(errno));
            return;
        }
        if (n < 0)
            return;
        int rc = c->state == SS_HEAD ? sub_head(w, c, buf, (size_t)n)
                                     : sub_body(w, c, buf, (size_t)n);
        if (rc < 0) {
            if (c->state != SS_DONE)
                sub_fail(w, c, "the server ended the stream");
            return;
        }
        if ((size_t)n < cap)
            return;
    }
}

static void *sworker_main(void *arg)
{
    sworker *w = arg;
    static __thread char buf[65536];
    struct epoll_event evs[256];
    while (ld(&g_phase) != PH_END) {
        while (w->opened < w->n && w->pending < 64)
            sub_start(w, &w->subs[w->opened]);
        int k = epoll_wait(w->ep, evs, 256, 50);
        for (int i = 0; i < k; i++) {
            sub *c = evs[i].data.ptr;
            if (c->state == SS_CONNECTING) {
                if (evs[i].events & (EPOLLERR | EPOLLHUP))
                    sub_fail(w, c, "connect failed");
                else
                    sub_send(w, c);
            } else if (c->state == SS_HEAD || c->state == SS_BODY) {
                sub_readable(w, c, buf, sizeof buf);
            }
        }
    }
    for (int i = 0; i < w->n; i++)
        if (w->subs[i].fd >= 0)
            close(w->subs[i].fd);
    return NULL;
}

/* ---- publishers ------------------------------------------------------------------------ */

typedef struct pworker {
    pthread_t th;
    int fd;
    uint64_t ok, failed, late, reconnects;
    hist rtt;
    char resp[16384];
} pworker;

static int pub_connect(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0)
        die("socket: %s", strerror(errno));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&g_pub.addr, sizeof g_pub.addr) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Read one response; its status, or -1.  *keep says whether the connection stays. */
static int pub_response(pworker *p, int *keep)
{
    size_t have = 0;
    char *end = NULL;
    while (!end) {
        if (have == sizeof p->resp - 1)
            return -1;
        ssize_t n = read(p->fd, p->resp + have, sizeof p->resp - 1 - have);
        if (n <= 0)
            return -1;
        have += (size_t)n;
        p->resp[have] = 0;
        end = strstr(p->resp, "\r\n\r\n");
    }
    int status = 0;
    if (sscanf(p->resp, "HTTP/1.%*d %d", &status) != 1)
        return -1;
    *keep = !strcasestr(p->resp, "connection: close");
    const char *cl = strcasestr(p->resp, "content-length:");
    size_t body = (size_t)(p->resp + have - (end + 4));
    if (cl && cl < end) {
        size_t want = (size_t)strtoul(cl + 15, NULL, 10);
        while (body < want) {
            ssize_t n = read(p->fd, p->resp, sizeof p->resp - 1);
            if (n <= 0)
                return -1;
            body += (size_t)n;
        }
    } else if (strcasestr(p->resp, "transfer-encoding: chunked")) {
        while (!memmem(end + 4, body, "0\r\n\r\n", 5)) {   /* bodies here are small */
            ssize_t n = read(p->fd, p->resp + have, sizeof p->resp - 1 - have);
            if (n <= 0)
                return -1;
            have += (size_t)n;
            body += (size_t)n;
        }
    } else if (status != 204 && status != 304) {
        *keep = 0;                               /* the body ends with the connection */
    }
    return status;
}

/* Interval mode: wait for the next slot of the shared schedule; 1 when it was missed. */
static int pub_wait_slot(void)
{
    pthread_mutex_lock(&g_pub_lock);
    uint64_t now = now_ns(), at = g_pub_next_ns;
    int late = at + (uint64_t)opt.interval_ms * 1000000u < now;
    if (at < now)
        at = now;
    g_pub_next_ns = at + (uint64_t)opt.interval_ms * 1000000u;
    pthread_mutex_unlock(&g_pub_lock);
    struct timespec ts = {(time_t)(at / 1000000000u), (long)(at % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
    return late;
}

static void pub_one(pworker *p, char *req, size_t hdr_max)
{
    uint64_t seq = __atomic_fetch_add(&g_seq, 1, __ATOMIC_ACQ_REL) + 1;
    char body[4096];
    int bl = snprintf(body, sizeof body, "{\"ts\":%llu,\"seq\":%llu,\"pad\":\"",
                      (unsigned long long)wall_us(), (unsigned long long)seq);
    while ((size_t)bl + 2 < opt.size && (size_t)bl + 2 < sizeof body)
        body[bl++] = 'x';
    bl += snprintf(body + bl, sizeof body - (size_t)bl, "\"}");
    int hl = snprintf(req, hdr_max, "POST %s HTTP/1.1\r\nHost: %s\r\n"
                      "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n",
                      g_pub.path, g_pub.host, bl);
    memcpy(req + hl, body, (size_t)bl);
    uint64_t t0 = now_ns();
    for (int attempt = 0; attempt < 2; attempt++) {
        if (p->fd < 0 && (p->fd = pub_connect()) < 0)
            break;
        int keep = 0, status = -1;
        if (write(p->fd, req, (size_t)(hl + bl)) == hl + bl)
            status = pub_response(p, &keep);
        if (!keep || status < 0) {
            close(p->fd);
            p->fd = -1;
            p->reconnects++;
        }
        if (status < 0)
            continue;                 /* a kept-alive connection closed by the server */
        if (status / 100 == 2) {
            p->ok++;
            if (seq >= ld64(&g_first))
                h_add(&p->rtt, now_ns() - t0);
            return;
        }
        note_error("publish answered %d", status);
        break;
    }
    if (p->failed++ == 0 && !g_first_error[0])
        note_error("a publish failed");
}

static void *pworker_main(void *arg)
{
    pworker *p = arg;
    char *req = malloc(8192);
    if (!req)
        die("out of memory");
    p->fd = -1;
    while (ld(&g_phase) < PH_WARM)
        sleep_s(0.005);
    while (ld(&g_phase) < PH_GRACE) {
        if (opt.interval_ms > 0)
            p->late += (uint64_t)pub_wait_slot();
        if (ld(&g_phase) >= PH_GRACE)
            break;
        pub_one(p, req, 4096);
    }
    if (p->fd >= 0)
        close(p->fd);
    free(req);
    return NULL;
}

/* ---- main ------------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
"usage: sseload SUB_URL PUB_URL [options]      (URLs: http://HOST:PORT/PATH)\n"
"  -c N        EventSource subscribers [1000]\n"
"  -P N        publishers (keep-alive connections, one POST in flight each) [1]\n"
"  -i MS       one publish every MS ms over all publishers; 0: back to back [100]\n"
"  -s BYTES    published body size [64]\n"
"  -d SEC      measured time [10]      -w SEC  warm-up publishes [2]\n"
"  -g SEC      longest wait for late deliveries after the run [5]\n"
"  -T N        subscriber threads [1]\n"
"  --open-timeout SEC  longest wait for every subscriber's stream to open [120]\n"
"  --pid PID   the server's main process: memory and threads of it and its children\n"
"  --json FILE results as JSON         -q  quiet\n"
"Exit status 0 when every subscriber opened, none was closed, every publish was\n"
"answered 2xx and every measured publish reached every subscriber; else 1.\n");
}

static void parse_url(const char *url, target *t)
{
    char host[128] = "";
    int port = 80, n = 0;
    if (sscanf(url, "http://%127[^:/]%n", host, &n) != 1)
        die("not an http:// URL: %s", url);
    const char *p = url + n;
    if (*p == ':')
        port = (int)strtol(p + 1, (char **)&p, 10);
    snprintf(t->path, sizeof t->path, "%s", *p ? p : "/");
    snprintf(t->host, sizeof t->host, "%s:%d", host, port);
    t->addr.sin_family = AF_INET;
    t->addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, strcmp(host, "localhost") == 0 ? "127.0.0.1" : host,
                  &t->addr.sin_addr) != 1)
        die("need a numeric IPv4 host: %s", host);
}

static void parse_args(int argc, char **argv)
{
    static const struct option lo[] = {{"open-timeout", 1, 0, 1}, {"pid", 1, 0, 2},
                                       {"json", 1, 0, 3}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "c:P:i:s:d:w:g:T:qh", lo, NULL)) != -1) {
        switch (ch) {
        case 'c': opt.subs = atoi(optarg); break;
        case 'P': opt.pubs = atoi(optarg); break;
        case 'i': opt.interval_ms = atoi(optarg); break;
        case 's': opt.size = (size_t)atol(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'w': opt.warmup = atof(optarg); break;
        case 'g': opt.grace = atof(optarg); break;
        case 'T': opt.threads = atoi(optarg); break;
        case 'q': opt.quiet = 1; break;
        case 1: opt.open_timeout = atof(optarg); break;
        case 2: opt.pid = atoi(optarg); break;
        case 3: opt.json = optarg; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (argc - optind != 2)
        die("need SUB_URL and PUB_URL (--help)");
    if (opt.subs < 0 || opt.pubs < 1 || opt.threads < 1 || opt.size > 4000)
        die("bad -c, -P, -T or -s");
    parse_url(argv[optind], &g_sub);
    parse_url(argv[optind + 1], &g_pub);
}

typedef struct totals {
    int subscribed, closed, errors;
    uint64_t delivered, out_of_order, gaps, events;
    uint64_t pub_ok, pub_failed, late, reconnects;
    hist delay, rtt;
} totals;

static int sum_open(int *errors, int *closed)
{
    int s = 0;
    *errors = *closed = 0;
    for (int t = 0; t < opt.threads; t++) {
        s += __atomic_load_n(&g_sw[t].subscribed, __ATOMIC_RELAXED);
        *errors += __atomic_load_n(&g_sw[t].errors, __ATOMIC_RELAXED);
        *closed += __atomic_load_n(&g_sw[t].closed, __ATOMIC_RELAXED);
    }
    return s;
}

static uint64_t sum_delivered(void)
{
    uint64_t d = 0;
    for (int t = 0; t < opt.threads; t++)
        d += __atomic_load_n(&g_sw[t].delivered, __ATOMIC_RELAXED);
    return d;
}

static void start_subscribers(void)
{
    g_sw = calloc((size_t)opt.threads, sizeof *g_sw);
    if (!g_sw)
        die("out of memory");
    for (int t = 0; t < opt.threads; t++) {
        sworker *w = &g_sw[t];
        w->n = opt.subs / opt.threads + (t < opt.subs % opt.threads);
        w->subs = calloc((size_t)w->n + 1, sizeof *w->subs);
        w->ep = epoll_create1(EPOLL_CLOEXEC);
        if (!w->subs || w->ep < 0)
            die("out of memory or epoll");
        for (int i = 0; i < w->n; i++)
            w->subs[i].fd = -1;
        if (pthread_create(&w->th, NULL, sworker_main, w) != 0)
            die("pthread_create failed");
    }
}

/* Wait until every subscriber has its stream (or failed); 0 when all opened. */
static int wait_open(void)
{
    uint64_t end = now_ns() + (uint64_t)(opt.open_timeout * 1e9);
    int errors, closed;
    while (sum_open(&errors, &closed) + errors < opt.subs && now_ns() < end)
        sleep_s(0.02);
    return sum_open(&errors, &closed) == opt.subs ? 0 : -1;
}

static void collect(totals *t, pworker *pw)
{
    memset(t, 0, sizeof *t);
    t->subscribed = sum_open(&t->errors, &t->closed);
    for (int i = 0; i < opt.threads; i++) {
        t->delivered += g_sw[i].delivered;
        t->out_of_order += g_sw[i].out_of_order;
        t->gaps += g_sw[i].gaps;
        t->events += g_sw[i].events;
        h_merge(&t->delay, &g_sw[i].delay);
    }
    for (int i = 0; i < opt.pubs; i++) {
        t->pub_ok += pw[i].ok;
        t->pub_failed += pw[i].failed;
        t->late += pw[i].late;
        t->reconnects += pw[i].reconnects;
        h_merge(&t->rtt, &pw[i].rtt);
    }
}

static double ms(uint64_t ns) { return (double)ns / 1e6; }

static void report(const totals *t, uint64_t measured, uint64_t expected, double run_s,
                   srvstat base, srvstat open, srvstat end, int ok)
{
    double per_sub = open.ok && base.ok && opt.subs ?
        (double)(open.rss_kb - base.rss_kb) / opt.subs : 0;
    for (char *q = g_first_error; *q; q++)
        if (*q == '"' || *q == '\\' || (unsigned char)*q < 0x20)
            *q = '\'';
    char js[4096];
    snprintf(js, sizeof js,
        "{\"subscribers\":%d,\"subscribed\":%d,\"subscribe_errors\":%d,\"closed\":%d,"
        "\"publishers\":%d,\"interval_ms\":%d,\"size\":%zu,\"duration_s\":%.3f,"
        "\"publishes\":%llu,\"publish_failed\":%llu,\"publishes_per_s\":%.1f,"
        "\"late_slots\":%llu,\"reconnects\":%llu,"
        "\"publish_rtt_ms\":{\"p50\":%.3f,\"p99\":%.3f,\"max\":%.3f},"
        "\"delivered\":%llu,\"expected\":%llu,\"deliveries_per_s\":%.1f,"
        "\"delay_ms\":{\"p50\":%.3f,\"p99\":%.3f,\"max\":%.3f},"
        "\"gaps\":%llu,\"out_of_order\":%llu,"
        "\"server\":{\"ok\":%s,\"rss_base_kb\":%ld,\"rss_open_kb\":%ld,\"rss_end_kb\":%ld,"
        "\"per_sub_kb\":%.2f,\"procs\":%d,\"threads\":%d},\"ok\":%s,\"first_error\":\"%s\"}\n",
        opt.subs, t->subscribed, t->errors, t->closed, opt.pubs, opt.interval_ms, opt.size,
        run_s, (unsigned long long)measured, (unsigned long long)t->pub_failed,
        (double)measured / run_s, (unsigned long long)t->late,
        (unsigned long long)t->reconnects, ms(h_pct(&t->rtt, 50)), ms(h_pct(&t->rtt, 99)),
        ms(t->rtt.max), (unsigned long long)t->delivered, (unsigned long long)expected,
        (double)t->delivered / run_s, ms(h_pct(&t->delay, 50)), ms(h_pct(&t->delay, 99)),
        ms(t->delay.max), (unsigned long long)t->gaps, (unsigned long long)t->out_of_order,
        open.ok ? "true" : "false", base.rss_kb, open.rss_kb, end.rss_kb, per_sub, open.procs,
        open.threads, ok ? "true" : "false", g_first_error);
    if (opt.json) {
        FILE *f = fopen(opt.json, "w");
        if (!f || fputs(js, f) < 0 || fclose(f) != 0)
            die("cannot write %s", opt.json);
    }
    if (!opt.quiet || !opt.json)
        fputs(js, stdout);
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    srvstat base = srvstat_read(opt.pid);
    start_subscribers();
    int opened = wait_open() == 0;
    srvstat open = srvstat_read(opt.pid);
    pworker *pw = calloc((size_t)opt.pubs, sizeof *pw);
    if (!pw)
        die("out of memory");
    for (int i = 0; i < opt.pubs; i++)
        if (pthread_create(&pw[i].th, NULL, pworker_main, &pw[i]) != 0)
            die("pthread_create failed");
    g_pub_next_ns = now_ns();
    st(&g_phase, PH_WARM);
    sleep_s(opt.warmup);
    __atomic_store_n(&g_first, ld64(&g_seq) + 1, __ATOMIC_RELEASE);
    uint64_t t0 = now_ns();
    st(&g_phase, PH_RUN);
    sleep_s(opt.duration);
    st(&g_phase, PH_GRACE);
    for (int i = 0; i < opt.pubs; i++)
        pthread_join(pw[i].th, NULL);
    double run_s = (double)(now_ns() - t0) / 1e9;
    uint64_t last = ld64(&g_seq), first = ld64(&g_first);
    uint64_t measured = last >= first ? last - first + 1 : 0;
    int errors, closed;
    uint64_t live = (uint64_t)sum_open(&errors, &closed) - (uint64_t)closed;
    uint64_t end_wait = now_ns() + (uint64_t)(opt.grace * 1e9);
    while (sum_delivered() < live * measured && now_ns() < end_wait)
        sleep_s(0.01);
    srvstat end = srvstat_read(opt.pid);
    st(&g_phase, PH_END);
    for (int t = 0; t < opt.threads; t++)
        pthread_join(g_sw[t].th, NULL);
    totals t;
    collect(&t, pw);
    uint64_t expected = (uint64_t)opt.subs * measured;
    int ok = opened && t.closed == 0 && t.errors == 0 && t.pub_failed == 0 &&
             t.delivered == expected && t.gaps == 0 && t.out_of_order == 0;
    report(&t, measured, expected, run_s, base, open, end, ok);
    return ok ? 0 : 1;
}
