/*
 * ws_backplane.c - see ws_backplane.h.
 *
 * Embedded backplane: one ring buffer in anonymous shared memory, made by the parent
 * for each configuration generation and inherited by its children.  A publisher appends
 * an entry under a process-shared robust mutex (a child that dies holding it cannot
 * wedge the others), advances `head`, bumps a futex word and wakes the readers.  Each
 * child has one reader thread that follows `head` with its own offset, copies each
 * entry out and hands it to the delivery function.  Readers never block publishers: a
 * reader that falls more than a ring behind loses the overwritten entries (logged) and
 * jumps ahead; that is the documented price of a stalled child.  All children see all
 * messages in one global order, so per-publisher order holds.
 *
 * Redis backplane: with a URL, each child keeps one connection that PUBLISHes (fed by a
 * queue, on its own thread, so publishers never wait for Redis) and one that
 * PSUBSCRIBEs to PREFIX*.  Redis then reaches every child of every server, and the ring
 * is not used.  When either connection is lost, publishing falls back to the ring (this
 * server only, logged) and both reconnect with exponential backoff.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "httpd.h"
#include "http_log.h"
#include "http_main.h"
#include "apr_shm.h"
#include "apr_strings.h"
#include "apr_thread_proc.h"
#include "apr_uri.h"

#include "ws_backplane.h"
#include "ws_status.h"

APLOG_USE_MODULE(websocket);

typedef struct ws_ring {
    pthread_mutex_t mu;           /* process-shared, robust */
    volatile uint64_t head;       /* bytes ever written; entries end here */
    volatile uint32_t futex;      /* bumped after each publish */
    uint32_t size;                /* of data[], a power of two */
    unsigned char data[];
} ws_ring;

/* Entry header in the ring; channel and payload follow, the whole padded to 8. */
typedef struct ws_ring_entry {
    uint32_t total;
    uint32_t channel_len;
    uint32_t len;
    uint32_t opcode;
} ws_ring_entry;

typedef struct ws_bp_msg {
    struct ws_bp_msg *next;
    size_t channel_len, len;
    int opcode;
    char buf[];                   /* channel, then payload */
} ws_bp_msg;

struct ws_bp {
    apr_shm_t *shm;
    ws_ring *ring;
    /* Redis */
    const char *redis_host;
    int redis_port;
    const char *prefix;
    /* per child */
    ws_bp_deliver_fn deliver;
    void *baton;
    volatile int stop;
    uint64_t start;               /* ring offset this child starts reading at */
    apr_thread_t *reader, *redis_pub, *redis_sub;
    volatile int redis_pub_up, redis_sub_up;
    pthread_mutex_t qmu;          /* the Redis publish queue */
    pthread_cond_t qcv;
    ws_bp_msg *qhead, *qtail;
    size_t qbytes;
};

#define WS_BP_QUEUE_MAX (64 * 1024 * 1024)

static long ws_futex(volatile uint32_t *addr, int op, uint32_t val, const struct timespec *t)
{
    return syscall(SYS_futex, addr, op, val, t, NULL, 0);
}

static int ws_ring_lock(ws_ring *r)
{
    int rv = pthread_mutex_lock(&r->mu);
    if (rv == EOWNERDEAD) {
        /* A child died holding the lock: head was not advanced, so the ring is whole. */
        pthread_mutex_consistent(&r->mu);
        rv = 0;
    }
    return rv;
}

static void ws_ring_copy_in(ws_ring *r, uint64_t at, const void *src, size_t n)
{
    size_t off = (size_t)(at & (r->size - 1)), first = r->size - off;
    if (first > n) {
        first = n;
    }
    memcpy(r->data + off, src, first);
    memcpy(r->data, (const char *)src + first, n - first);
}

static void ws_ring_copy_out(const ws_ring *r, uint64_t at, void *dst, size_t n)
{
    size_t off = (size_t)(at & (r->size - 1)), first = r->size - off;
    if (first > n) {
        first = n;
    }
    memcpy(dst, r->data + off, first);
    memcpy((char *)dst + first, r->data, n - first);
}

static int ws_ring_publish(ws_ring *r, const char *channel, size_t channel_len, int opcode,
                           const void *data, size_t len)
{
    ws_ring_entry e;
    size_t total = (sizeof(e) + channel_len + len + 7) & ~(size_t)7;
    uint64_t at;

    if (total > r->size / 2) {
        return -1;
    }
    e.total = (uint32_t)total;
    e.channel_len = (uint32_t)channel_len;
    e.len = (uint32_t)len;
    e.opcode = (uint32_t)opcode;
    if (ws_ring_lock(r) != 0) {
        return -1;
    }
    at = r->head;
    ws_ring_copy_in(r, at, &e, sizeof(e));
    ws_ring_copy_in(r, at + sizeof(e), channel, channel_len);
    ws_ring_copy_in(r, at + sizeof(e) + channel_len, data, len);
    __atomic_store_n(&r->head, at + total, __ATOMIC_RELEASE);
    __atomic_add_fetch(&r->futex, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&r->mu);
    ws_futex(&r->futex, FUTEX_WAKE, INT_MAX, NULL);
    return 0;
}

/* The reader thread of one child: follow head, copy entries out, deliver. */
static void *APR_THREAD_FUNC ws_ring_reader(apr_thread_t *t, void *data)
{
    ws_bp *bp = data;
    ws_ring *r = bp->ring;
    uint64_t off = bp->start;     /* taken in child_init: nothing published after the
                                   * child could serve a connection is missed */
    size_t cap = 64 * 1024;
    unsigned char *buf = malloc(cap);

    while (!bp->stop && buf) {
        uint32_t f = __atomic_load_n(&r->futex, __ATOMIC_ACQUIRE);
        uint64_t head = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
        ws_ring_entry e;

        if (off == head) {
            struct timespec ts = { 0, 200 * 1000 * 1000 };   /* to notice bp->stop */
            ws_futex(&r->futex, FUTEX_WAIT, f, &ts);
            continue;
        }
        if (head - off > r->size) {
            ap_log_error(APLOG_MARK, APLOG_WARNING, 0, ap_server_conf, "WS00050: backplane "
                         "reader fell %" APR_UINT64_T_FMT " bytes behind the ring: messages "
                         "lost in this child", head - off - r->size);
            ws_status_bp_overrun();
            off = head;
            continue;
        }
        ws_ring_copy_out(r, off, &e, sizeof(e));
        if (e.total > cap) {
            unsigned char *bigger = realloc(buf, e.total);
            if (!bigger) {
                off += e.total;
                continue;
            }
            buf = bigger;
            cap = e.total;
        }
        ws_ring_copy_out(r, off + sizeof(e), buf, e.channel_len + e.len);
        /* Overwritten while we copied?  Then what we have is garbage: skip ahead. */
        if (__atomic_load_n(&r->head, __ATOMIC_ACQUIRE) - off > r->size) {
            continue;
        }
        off += e.total;
        bp->deliver(bp->baton, (const char *)buf, e.channel_len, (int)e.opcode,
                    buf + e.channel_len, e.len);
        if (cap > 1024 * 1024) {
            free(buf);
            cap = 64 * 1024;
            buf = malloc(cap);
        }
    }
    free(buf);
    apr_thread_exit(t, APR_SUCCESS);
    return NULL;
}

/* ---- Redis ------------------------------------------------------------------------ */

static redisContext *ws_redis_connect(ws_bp *bp, int sub)
{
    struct timeval tv = { 2, 0 };
    redisContext *c = redisConnectWithTimeout(bp->redis_host, bp->redis_port, tv);
    if (!c || c->err) {
        if (c) {
            redisFree(c);
        }
        return NULL;
    }
    if (sub) {
        /* Wake up every second to notice bp->stop. */
        struct timeval rt = { 1, 0 };
        redisReply *reply = redisCommand(c, "PSUBSCRIBE %s*", bp->prefix);
        if (!reply || reply->type == REDIS_REPLY_ERROR) {
            if (reply) {
                freeReplyObject(reply);
            }
            redisFree(c);
            return NULL;
        }
        freeReplyObject(reply);
        redisSetTimeout(c, rt);
    }
    return c;
}

static void ws_redis_state(ws_bp *bp, volatile int *flag, int up, const char *what,
                           const char *why)
{
    if (*flag == up) {
        return;
    }
    *flag = up;
    ws_status_bp_redis(flag == &bp->redis_sub_up, up);
    if (up) {
        ap_log_error(APLOG_MARK, APLOG_NOTICE, 0, ap_server_conf, "WS00051: redis backplane "
                     "%s connection to %s:%d (re)established", what, bp->redis_host,
                     bp->redis_port);
    }
    else {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, ap_server_conf, "WS00052: redis backplane "
                     "%s connection to %s:%d lost (%s): publishing on this server only "
                     "until it is back", what, bp->redis_host, bp->redis_port,
                     why ? why : "no connection");
    }
}

static void ws_backoff_sleep(ws_bp *bp, apr_interval_time_t *delay)
{
    apr_interval_time_t left = *delay;
    while (left > 0 && !bp->stop) {
        apr_interval_time_t step = left > 100000 ? 100000 : left;
        apr_sleep(step);
        left -= step;
    }
    *delay = *delay * 2 > apr_time_from_sec(5) ? apr_time_from_sec(5) : *delay * 2;
}

static void *APR_THREAD_FUNC ws_redis_subscriber(apr_thread_t *t, void *data)
{
    ws_bp *bp = data;
    size_t plen = strlen(bp->prefix);
    apr_interval_time_t delay = apr_time_from_msec(100);

    while (!bp->stop) {
        redisContext *c = ws_redis_connect(bp, 1);
        if (!c) {
            ws_redis_state(bp, &bp->redis_sub_up, 0, "subscriber", "connect failed");
            ws_backoff_sleep(bp, &delay);
            continue;
        }
        ws_redis_state(bp, &bp->redis_sub_up, 1, "subscriber", NULL);
        delay = apr_time_from_msec(100);
        while (!bp->stop) {
            redisReply *reply = NULL;
            if (redisGetReply(c, (void **)&reply) != REDIS_OK) {
                if (c->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EINTR)) {
                    c->err = 0;          /* our 1 s timeout: check bp->stop, go on */
                    continue;
                }
                break;
            }
            /* ["pmessage", pattern, channel, payload]; payload: opcode byte + data */
            if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 4
                && reply->element[2]->len >= plen && reply->element[3]->len >= 1) {
                redisReply *ch = reply->element[2], *pl = reply->element[3];
                bp->deliver(bp->baton, ch->str + plen, ch->len - plen,
                            (unsigned char)pl->str[0], (const unsigned char *)pl->str + 1,
                            pl->len - 1);
            }
            if (reply) {
                freeReplyObject(reply);
            }
        }
        if (!bp->stop) {
            ws_redis_state(bp, &bp->redis_sub_up, 0, "subscriber", c->errstr);
        }
        redisFree(c);
    }
    apr_thread_exit(t, APR_SUCCESS);
    return NULL;
}

static void *APR_THREAD_FUNC ws_redis_publisher(apr_thread_t *t, void *data)
{
    ws_bp *bp = data;
    apr_interval_time_t delay = apr_time_from_msec(100);
    redisContext *c = NULL;
    size_t plen = strlen(bp->prefix);

    while (!bp->stop) {
        ws_bp_msg *m;
        if (!c) {
            c = ws_redis_connect(bp, 0);
            if (!c) {
                ws_redis_state(bp, &bp->redis_pub_up, 0, "publisher", "connect failed");
                ws_backoff_sleep(bp, &delay);
                continue;
            }
            ws_redis_state(bp, &bp->redis_pub_up, 1, "publisher", NULL);
            delay = apr_time_from_msec(100);
        }
        pthread_mutex_lock(&bp->qmu);
        while (!bp->qhead && !bp->stop) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += 1;
            pthread_cond_timedwait(&bp->qcv, &bp->qmu, &until);
        }
        m = bp->qhead;
        if (m) {
            bp->qhead = m->next;
            if (!bp->qhead) {
                bp->qtail = NULL;
            }
            bp->qbytes -= m->len;
        }
        pthread_mutex_unlock(&bp->qmu);
        if (!m) {
            continue;
        }
        {
            /* key = prefix + channel; value = opcode byte + payload */
            char *key = malloc(plen + m->channel_len), *val = malloc(m->len + 1);
            redisReply *reply = NULL;
            if (key && val) {
                memcpy(key, bp->prefix, plen);
                memcpy(key + plen, m->buf, m->channel_len);
                val[0] = (char)m->opcode;
                memcpy(val + 1, m->buf + m->channel_len, m->len);
                reply = redisCommand(c, "PUBLISH %b %b", key, plen + m->channel_len,
                                     val, m->len + 1);
                if (!reply) {
                    /* The connection may have died while idle (a Redis restart):
                     * one fresh connection and one retry before falling back. */
                    ws_redis_state(bp, &bp->redis_pub_up, 0, "publisher", c->errstr);
                    redisFree(c);
                    c = ws_redis_connect(bp, 0);
                    if (c) {
                        ws_redis_state(bp, &bp->redis_pub_up, 1, "publisher", NULL);
                        reply = redisCommand(c, "PUBLISH %b %b", key,
                                             plen + m->channel_len, val, m->len + 1);
                    }
                }
            }
            free(key);
            free(val);
            if (!reply) {
                /* Lost: this message goes to this server's children at least. */
                ws_redis_state(bp, &bp->redis_pub_up, 0, "publisher",
                               c ? c->errstr : "connect failed");
                if (c) {
                    redisFree(c);
                }
                c = NULL;
                ws_ring_publish(bp->ring, m->buf, m->channel_len, m->opcode,
                                m->buf + m->channel_len, m->len);
            }
            else {
                freeReplyObject(reply);
            }
        }
        free(m);
    }
    if (c) {
        redisFree(c);
    }
    apr_thread_exit(t, APR_SUCCESS);
    return NULL;
}

/* ---- public ----------------------------------------------------------------------- */

ws_bp *ws_bp_create(apr_pool_t *pconf, const char *redis_url, const char **err)
{
    ws_bp *bp = apr_pcalloc(pconf, sizeof(*bp));
    pthread_mutexattr_t attr;

    if (redis_url) {
        apr_uri_t u;
        if (apr_uri_parse(pconf, redis_url, &u) != APR_SUCCESS || !u.scheme
            || strcasecmp(u.scheme, "redis") != 0 || !u.hostname) {
            *err = apr_psprintf(pconf, "WebSocketBackplane: '%s' is not "
                                "redis://HOST[:PORT][/PREFIX]", redis_url);
            return NULL;
        }
        bp->redis_host = u.hostname;
        bp->redis_port = u.port ? u.port : 6379;
        bp->prefix = (u.path && u.path[0] == '/' && u.path[1])
                     ? apr_pstrcat(pconf, u.path + 1, ":", NULL) : "ws:";
    }
    if (apr_shm_create(&bp->shm, sizeof(ws_ring) + WS_BP_RING_SIZE, NULL, pconf)
        != APR_SUCCESS) {
        *err = "WebSocketBackplane: cannot create the shared memory ring";
        return NULL;
    }
    bp->ring = apr_shm_baseaddr_get(bp->shm);
    memset(bp->ring, 0, sizeof(ws_ring));
    bp->ring->size = WS_BP_RING_SIZE;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&bp->ring->mu, &attr);
    pthread_mutexattr_destroy(&attr);
    return bp;
}

static apr_status_t ws_bp_child_stop(void *data)
{
    ws_bp *bp = data;
    apr_status_t rv;
    bp->stop = 1;
    pthread_mutex_lock(&bp->qmu);
    pthread_cond_broadcast(&bp->qcv);
    pthread_mutex_unlock(&bp->qmu);
    ws_futex(&bp->ring->futex, FUTEX_WAKE, INT_MAX, NULL);
    if (bp->reader) {
        apr_thread_join(&rv, bp->reader);
    }
    if (bp->redis_pub) {
        apr_thread_join(&rv, bp->redis_pub);
    }
    if (bp->redis_sub) {
        apr_thread_join(&rv, bp->redis_sub);
    }
    while (bp->qhead) {
        ws_bp_msg *m = bp->qhead;
        bp->qhead = m->next;
        free(m);
    }
    return APR_SUCCESS;
}

void ws_bp_child_init(ws_bp *bp, apr_pool_t *pchild, ws_bp_deliver_fn fn, void *baton)
{
    sigset_t all, old;
    bp->deliver = fn;
    bp->baton = baton;
    bp->stop = 0;
    bp->start = __atomic_load_n(&bp->ring->head, __ATOMIC_ACQUIRE);
    pthread_mutex_init(&bp->qmu, NULL);
    pthread_cond_init(&bp->qcv, NULL);
    /* Signals belong to the MPM's threads (see the housekeeper in mod_websocket.c). */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    apr_thread_create(&bp->reader, NULL, ws_ring_reader, bp, pchild);
    if (bp->redis_host) {
        apr_thread_create(&bp->redis_sub, NULL, ws_redis_subscriber, bp, pchild);
        apr_thread_create(&bp->redis_pub, NULL, ws_redis_publisher, bp, pchild);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    /* A pre-cleanup: the threads live in sub-pools of pchild, gone by plain cleanups. */
    apr_pool_pre_cleanup_register(pchild, bp, ws_bp_child_stop);
}

int ws_bp_publish(ws_bp *bp, const char *channel, size_t channel_len, int opcode,
                  const void *data, size_t len)
{
    ws_bp_msg *m;
    if (!bp->redis_host || !bp->redis_pub_up || !bp->redis_sub_up) {
        return ws_ring_publish(bp->ring, channel, channel_len, opcode, data, len);
    }
    m = malloc(sizeof(*m) + channel_len + len);
    if (!m) {
        return -1;
    }
    m->next = NULL;
    m->channel_len = channel_len;
    m->len = len;
    m->opcode = opcode;
    memcpy(m->buf, channel, channel_len);
    memcpy(m->buf + channel_len, data, len);
    pthread_mutex_lock(&bp->qmu);
    if (bp->qbytes + len > WS_BP_QUEUE_MAX) {
        pthread_mutex_unlock(&bp->qmu);
        free(m);
        return -1;
    }
    if (bp->qtail) {
        bp->qtail->next = m;
    }
    else {
        bp->qhead = m;
    }
    bp->qtail = m;
    bp->qbytes += len;
    pthread_cond_signal(&bp->qcv);
    pthread_mutex_unlock(&bp->qmu);
    return 0;
}
