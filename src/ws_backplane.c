/*
 * ws_backplane.c - see ws_backplane.h.
 *
 * Embedded backplane: one ring buffer in anonymous shared memory, made by the parent
 * for each configuration generation and inherited by its children (the ring itself:
 * src/ws_ring.c).  A publisher reserves, writes and commits an entry under a
 * process-shared robust mutex, bumps a futex word and wakes the readers.  Each child
 * has one reader thread that follows the ring with its own offset, copies each committed
 * and valid entry out and hands it to the delivery function; what it skips (lapped,
 * invalid, torn by a dead publisher) is counted in shared memory and logged.  Readers
 * never block publishers: a reader that falls more than a ring behind loses the
 * overwritten entries and jumps ahead; that is the documented price of a stalled child.  All children see all
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
#include <sched.h>
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
#include "http_protocol.h"
#include "apr_shm.h"
#include "apr_strings.h"
#include "apr_thread_proc.h"
#include "apr_uri.h"

#include "ws_backplane.h"
#include "ws_status.h"
#include "ws_channel.h"
#include "ws_redis_tls.h"
#include "ws_ring.h"

APLOG_USE_MODULE(websocket);

/* A publisher waiting for the id Redis gives its message (ws_bp_meta.wait_id); freed by
 * whichever of the two lets go last. */
typedef struct ws_bp_ticket {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, refs;
    ws_msgid id;
} ws_bp_ticket;

typedef struct ws_bp_msg {
    struct ws_bp_msg *next;
    size_t channel_len, len;
    int opcode;
    int ctl;                      /* WS_BP_MESSAGE or WS_BP_DELETE */
    ws_bp_ticket *ticket;         /* or NULL */
    char buf[];                   /* channel, then payload */
} ws_bp_msg;

struct ws_bp {
    apr_shm_t *shm;
    ws_ring *ring;
    struct ws_bp_shared *shared;  /* counters, before the ring in the same memory */
    /* Redis */
    const char *redis_host;
    int redis_port;
    const char *redis_user;       /* AUTH [user] password, from the URL */
    const char *redis_pass;
    int redis_tls;                /* rediss:// */
    const char *redis_cafile;     /* rediss://...?cacert=FILE, or NULL: the system's */
    int tls_warned;               /* a TLS failure was logged at warning level */
    const char *prefix;
    long history;                 /* messages a channel's stream keeps (0: none) */
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

/* Counters over every child, in the shared memory before the ring (server-status). */
struct ws_bp_shared {
    uint64_t ring_lost_bytes, ring_overruns, ring_invalid, ring_torn;
    uint64_t redis_in, redis_dropped;
    uint64_t epoch, seq;          /* message ids of this server (ws_history.h) */
    uint64_t ring_seq;            /* the id of the last message into the ring */
};

/* In the ring, a message's channel field is this header and then the channel key:
 * epoch and seq (8 bytes each, big endian) and the ctl byte. */
#define WS_BP_HDR 17

static void ws_bp_hdr_put(unsigned char *out, const ws_bp_meta *m)
{
    int i;
    for (i = 0; i < 8; i++) {
        out[i] = (unsigned char)(m->id.epoch >> (56 - 8 * i));
        out[8 + i] = (unsigned char)(m->id.seq >> (56 - 8 * i));
    }
    out[16] = (unsigned char)m->ctl;
}

static int ws_bp_hdr_get(const char *ch, size_t len, ws_bp_meta *m)
{
    const unsigned char *u = (const unsigned char *)ch;
    int i;
    if (len <= WS_BP_HDR || u[16] > WS_BP_DELETE) {
        return 0;
    }
    memset(m, 0, sizeof(*m));
    for (i = 0; i < 8; i++) {
        m->id.epoch = (m->id.epoch << 8) | u[i];
        m->id.seq = (m->id.seq << 8) | u[8 + i];
    }
    m->ctl = u[16];
    return 1;
}

static void ws_count(uint64_t *c, uint64_t n)
{
    if (n) {
        __atomic_add_fetch(c, n, __ATOMIC_RELAXED);
    }
}

/* Move what the reader skipped since last time into the shared counters, and log it. */
static void ws_ring_note_skips(ws_bp *bp, ws_ring_reader *rd, ws_ring_reader *seen)
{
    if (rd->overruns != seen->overruns) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, ap_server_conf, "WS00050: backplane "
                     "reader fell behind the ring: %" APR_UINT64_T_FMT " bytes of messages "
                     "lost in this child", rd->lost_bytes - seen->lost_bytes);
        ws_status_bp_overrun();
    }
    if (rd->invalid != seen->invalid || rd->torn != seen->torn) {
        ap_log_error(APLOG_MARK, APLOG_WARNING, 0, ap_server_conf, "WS00053: backplane "
                     "ring: skipped %" APR_UINT64_T_FMT " invalid and %" APR_UINT64_T_FMT
                     " torn entries (a child died while publishing?)",
                     rd->invalid - seen->invalid, rd->torn - seen->torn);
    }
    ws_count(&bp->shared->ring_lost_bytes, rd->lost_bytes - seen->lost_bytes);
    ws_count(&bp->shared->ring_overruns, rd->overruns - seen->overruns);
    ws_count(&bp->shared->ring_invalid, rd->invalid - seen->invalid);
    ws_count(&bp->shared->ring_torn, rd->torn - seen->torn);
    seen->lost_bytes = rd->lost_bytes;
    seen->overruns = rd->overruns;
    seen->invalid = rd->invalid;
    seen->torn = rd->torn;
}

/* The reader thread of one child: follow the ring, deliver each valid message. */
static void *APR_THREAD_FUNC ws_ring_reader_thread(apr_thread_t *t, void *data)
{
    ws_bp *bp = data;
    ws_ring *r = bp->ring;
    ws_ring_reader rd, seen;
    int busy = 0;

    ws_ring_reader_init(&rd, r);
    rd.off = bp->start;           /* taken in child_init: nothing published after the
                                   * child could serve a connection is missed */
    seen = rd;
    while (!bp->stop) {
        uint32_t f = __atomic_load_n(&r->futex, __ATOMIC_ACQUIRE);
        ws_ring_msg m;
        int rv = ws_ring_read(r, &rd, &m);
        ws_ring_note_skips(bp, &rd, &seen);
        if (rv == WS_RING_MSG) {
            ws_bp_meta meta;
            busy = 0;
            if (ws_bp_hdr_get(m.channel, m.channel_len, &meta)) {
                bp->deliver(bp->baton, m.channel + WS_BP_HDR, m.channel_len - WS_BP_HDR,
                            m.opcode, m.data, m.len, &meta);
            }
        }
        else if (rv == WS_RING_BUSY) {
            /* A publisher is copying; after a while, wait for its lock (which also
             * repairs the entry if that publisher died). */
            if (++busy < 200) {
                sched_yield();
            }
            else {
                ws_ring_unstick(r);
                busy = 0;
            }
        }
        else {
            struct timespec ts = { 0, 200 * 1000 * 1000 };   /* to notice bp->stop */
            ws_futex(&r->futex, FUTEX_WAIT, f, &ts);
        }
    }
    ws_ring_reader_free(&rd);
    apr_thread_exit(t, APR_SUCCESS);
    return NULL;
}

/* Append to the ring; the id is taken under the ring's lock, so ids follow ring order. */
static int ws_ring_send(ws_bp *bp, const char *channel, size_t channel_len, int opcode,
                        const void *data, size_t len, ws_bp_meta *meta)
{
    unsigned char key[WS_BP_HDR + WS_RING_CHANNEL_MAX];
    ws_ring_wr w;
    if (channel_len + WS_BP_HDR > WS_RING_CHANNEL_MAX
        || ws_ring_reserve(bp->ring, channel_len + WS_BP_HDR, opcode, len, &w) != 0) {
        return -1;
    }
    meta->id.epoch = bp->shared->epoch;
    meta->id.seq = __atomic_add_fetch(&bp->shared->seq, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&bp->shared->ring_seq, meta->id.seq, __ATOMIC_RELEASE);
    ws_bp_hdr_put(key, meta);
    memcpy(key + WS_BP_HDR, channel, channel_len);
    ws_ring_write(bp->ring, &w, (const char *)key, data);
    ws_ring_commit(bp->ring, &w);
    ws_futex(&bp->ring->futex, FUTEX_WAKE, INT_MAX, NULL);
    return 0;
}

void ws_bp_set_history(ws_bp *bp, long n)
{
    bp->history = n;
}

const char *ws_bp_redis_prefix(ws_bp *bp)
{
    return bp->prefix;
}

void *ws_bp_counts_mem(ws_bp *bp)
{
    return (char *)bp->ring + ws_ring_bytes(WS_BP_RING_SIZE);
}

void ws_bp_current(ws_bp *bp, ws_msgid *id)
{
    id->epoch = bp->shared->epoch;
    id->seq = bp->redis_host ? 0 : __atomic_load_n(&bp->shared->ring_seq, __ATOMIC_ACQUIRE);
}

void ws_bp_local_id(ws_bp *bp, ws_msgid *id)
{
    id->epoch = bp->shared->epoch;
    id->seq = __atomic_add_fetch(&bp->shared->seq, 1, __ATOMIC_RELAXED);
}

static void ws_ticket_release(ws_bp_ticket *t)
{
    int last;
    pthread_mutex_lock(&t->mu);
    last = --t->refs == 0;
    pthread_mutex_unlock(&t->mu);
    if (last) {
        pthread_mutex_destroy(&t->mu);
        pthread_cond_destroy(&t->cv);
        free(t);
    }
}

static void ws_ticket_done(ws_bp_ticket *t, const ws_msgid *id)
{
    if (!t) {
        return;
    }
    pthread_mutex_lock(&t->mu);
    t->id = *id;
    t->done = 1;
    pthread_cond_signal(&t->cv);
    pthread_mutex_unlock(&t->mu);
    ws_ticket_release(t);
}

/* Wait up to 5 s for the publisher thread to learn the id (seq 0 if it did not). */
static void ws_ticket_wait(ws_bp_ticket *t, ws_msgid *id)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    pthread_mutex_lock(&t->mu);
    while (!t->done) {
        if (pthread_cond_timedwait(&t->cv, &t->mu, &until) == ETIMEDOUT) {
            break;
        }
    }
    *id = t->id;
    pthread_mutex_unlock(&t->mu);
    ws_ticket_release(t);
}

/* ---- Redis ------------------------------------------------------------------------ */

static redisContext *ws_redis_connect(ws_bp *bp, int sub)
{
    struct timeval tv = { 2, 0 };
    char why[200];
    redisContext *c = bp->redis_tls
        ? ws_redis_tls_connect(bp->redis_host, bp->redis_port, bp->redis_cafile, tv, why,
                               sizeof(why))
        : redisConnectWithTimeout(bp->redis_host, bp->redis_port, tv);
    if (!c || c->err) {
        if (c) {
            redisFree(c);
        }
        else if (bp->redis_tls) {
            /* Why, once at warning level (then at debug: retries come every 5 s). */
            int first = !__atomic_exchange_n(&bp->tls_warned, 1, __ATOMIC_RELAXED);
            ap_log_error(APLOG_MARK, first ? APLOG_WARNING : APLOG_DEBUG, 0,
                         ap_server_conf, "WS00056: redis backplane: rediss://%s:%d: %s",
                         bp->redis_host, bp->redis_port, why);
        }
        return NULL;
    }
    /* No command may wait for Redis forever: a child's stop joins this thread. */
    redisSetTimeout(c, tv);
    if (bp->redis_pass) {
        redisReply *reply = bp->redis_user
            ? redisCommand(c, "AUTH %s %s", bp->redis_user, bp->redis_pass)
            : redisCommand(c, "AUTH %s", bp->redis_pass);
        int ok = reply && reply->type != REDIS_REPLY_ERROR;
        if (!ok) {
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, ap_server_conf, "WS00054: redis "
                         "backplane: AUTH at %s:%d failed: %s", bp->redis_host,
                         bp->redis_port, reply ? reply->str : c->errstr);
        }
        if (reply) {
            freeReplyObject(reply);
        }
        if (!ok) {
            redisFree(c);
            return NULL;
        }
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

/* A message from Redis is checked like a client's frame before anyone sees it:
 * ["pmessage", pattern, PREFIX + channel key, opcode byte + payload]; the key valid
 * (ws_channel.h), the opcode text or binary, text UTF-8, the size within the ring's
 * limit.  Anything else is dropped and counted. */
/* The value of a message with an id (ws_redis_publish_script): the opcode byte with
 * 0x80 set, 'm' (message) or 'd' (delete), "EPOCH-SEQ", LF, the payload.  Older values
 * (the opcode byte and the payload) carry no id.  Returns the payload's offset, or 0. */
static size_t ws_redis_value_meta(const char *v, size_t len, ws_bp_meta *meta)
{
    const char *lf;
    memset(meta, 0, sizeof(*meta));
    if (len < 1 || !((unsigned char)v[0] & 0x80)) {
        return len >= 1 ? 1 : 0;
    }
    if (len < 3 || (v[1] != 'm' && v[1] != 'd')
        || !(lf = memchr(v + 2, '\n', len - 2))
        || !ws_msgid_parse(v + 2, (size_t)(lf - v - 2), &meta->id)) {
        return 0;
    }
    meta->ctl = v[1] == 'd' ? WS_BP_DELETE : WS_BP_MESSAGE;
    return (size_t)(lf - v) + 1;
}

static void ws_redis_incoming(ws_bp *bp, redisReply *reply)
{
    size_t plen = strlen(bp->prefix), off = 0;
    redisReply *ch, *pl;
    ws_bp_meta meta;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 4
        || reply->element[0]->type != REDIS_REPLY_STRING
        || strcmp(reply->element[0]->str, "pmessage") != 0) {
        return;                   /* not a message (a subscribe confirmation) */
    }
    ch = reply->element[2];
    pl = reply->element[3];
    ws_count(&bp->shared->redis_in, 1);
    if (ch->type != REDIS_REPLY_STRING || pl->type != REDIS_REPLY_STRING
        || ch->len < plen || pl->len < 1
        || !(off = ws_redis_value_meta(pl->str, pl->len, &meta))
        || !ws_channel_key_valid(ch->str + plen, ch->len - plen)
        || !ws_channel_message_valid((unsigned char)pl->str[0] & 0x7f,
                                     (const unsigned char *)pl->str + off, pl->len - off,
                                     ws_ring_max_message(bp->ring))) {
        ws_count(&bp->shared->redis_dropped, 1);
        ap_log_error(APLOG_MARK, APLOG_INFO, 0, ap_server_conf, "WS00055: redis "
                     "backplane: dropped an invalid message (%lu bytes) on channel "
                     "'%.*s': bad channel name, opcode, UTF-8 or size", (unsigned long)
                     (pl->type == REDIS_REPLY_STRING ? pl->len : 0),
                     ch->type == REDIS_REPLY_STRING && ch->len < 300 ? (int)ch->len : 0,
                     ch->type == REDIS_REPLY_STRING ? ch->str : "");
        return;
    }
    bp->deliver(bp->baton, ch->str + plen, ch->len - plen, (unsigned char)pl->str[0] & 0x7f,
                (const unsigned char *)pl->str + off, pl->len - off, &meta);
}

static void *APR_THREAD_FUNC ws_redis_subscriber(apr_thread_t *t, void *data)
{
    ws_bp *bp = data;
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
            ws_redis_incoming(bp, reply);
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

/* INCR the server's counter (a new epoch when Redis lost it) and PUBLISH in one step,
 * so that ids follow Redis's publish order over every server; keep the message in the
 * channel's history stream (its id is the stream entry's: "E-S" is a valid stream id,
 * increasing), or drop the stream when the channel ends; returns the id.
 * KEYS: epoch, seq, channel, history stream; ARGV: a new epoch, the value's header,
 * the payload, the history length (0: none). */
static const char ws_redis_publish_script[] =
    "local e = redis.call('GET', KEYS[1]) "
    "if not e then e = ARGV[1] redis.call('SET', KEYS[1], e) "
    "redis.call('SET', KEYS[2], 0) end "
    "local id = e .. '-' .. string.format('%d', redis.call('INCR', KEYS[2])) "
    "redis.call('PUBLISH', KEYS[3], ARGV[2] .. id .. '\\n' .. ARGV[3]) "
    "if string.sub(ARGV[2], 2, 2) == 'd' then redis.call('DEL', KEYS[4]) "
    "elseif tonumber(ARGV[4]) > 0 then redis.pcall('XADD', KEYS[4], 'MAXLEN', '~', "
    "ARGV[4], id, 'v', ARGV[2] .. ARGV[3]) end "
    "return id";

static redisReply *ws_redis_eval(ws_bp *bp, redisContext *c, const ws_bp_msg *m)
{
    char *key = malloc(strlen(bp->prefix) + m->channel_len);
    char epoch[24], hdr[2] = { (char)(0x80 | m->opcode), m->ctl == WS_BP_DELETE ? 'd' : 'm' };
    size_t plen = strlen(bp->prefix);
    redisReply *reply;
    if (!key) {
        return NULL;
    }
    memcpy(key, bp->prefix, plen);
    memcpy(key + plen, m->buf, m->channel_len);
    snprintf(epoch, sizeof(epoch), "%" APR_UINT64_T_FMT, (apr_uint64_t)apr_time_as_msec(apr_time_now()));
    reply = redisCommand(c, "EVAL %s 4 %s!epoch %s!seq %b %s!h:%b %s %b %b %ld",
                         ws_redis_publish_script, bp->prefix, bp->prefix, key,
                         plen + m->channel_len, bp->prefix, m->buf, m->channel_len, epoch,
                         hdr, (size_t)2, m->buf + m->channel_len, m->len, bp->history);
    free(key);
    return reply;
}

/* Publish m through Redis (one reconnect and retry), else through the ring (this
 * server only); tell a waiting publisher the id. */
static void ws_redis_send(ws_bp *bp, redisContext **cp, ws_bp_msg *m)
{
    redisContext *c = *cp;
    redisReply *reply = ws_redis_eval(bp, c, m);
    ws_bp_meta meta;
    memset(&meta, 0, sizeof(meta));
    meta.ctl = m->ctl;
    if (!reply) {
        /* The connection may have died while idle (a Redis restart): one fresh
         * connection and one retry before falling back. */
        ws_redis_state(bp, &bp->redis_pub_up, 0, "publisher", c->errstr);
        redisFree(c);
        c = ws_redis_connect(bp, 0);
        if (c) {
            ws_redis_state(bp, &bp->redis_pub_up, 1, "publisher", NULL);
            reply = ws_redis_eval(bp, c, m);
        }
    }
    if (reply && reply->type == REDIS_REPLY_STRING) {
        ws_msgid_parse(reply->str, reply->len, &meta.id);
    }
    else if (reply) {
        ap_log_error(APLOG_MARK, APLOG_ERR, 0, ap_server_conf, "WS00057: redis backplane: "
                     "publish refused: %s", reply->type == REDIS_REPLY_ERROR ? reply->str
                     : "unexpected reply");
    }
    if (!reply) {
        /* Lost: this message goes to this server's children at least. */
        ws_redis_state(bp, &bp->redis_pub_up, 0, "publisher",
                       c ? c->errstr : "connect failed");
        if (c) {
            redisFree(c);
        }
        c = NULL;
        ws_ring_send(bp, m->buf, m->channel_len, m->opcode, m->buf + m->channel_len,
                     m->len, &meta);
    }
    else {
        freeReplyObject(reply);
    }
    ws_ticket_done(m->ticket, &meta.id);
    *cp = c;
}

static void *APR_THREAD_FUNC ws_redis_publisher(apr_thread_t *t, void *data)
{
    ws_bp *bp = data;
    apr_interval_time_t delay = apr_time_from_msec(100);
    redisContext *c = NULL;

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
        ws_redis_send(bp, &c, m);
        free(m);
    }
    if (c) {
        redisFree(c);
    }
    apr_thread_exit(t, APR_SUCCESS);
    return NULL;
}

/* ---- public ----------------------------------------------------------------------- */

/* redis://[[USER]:PASSWORD@]HOST[:PORT][/PREFIX] into bp.  Returns an error or NULL. */
static const char *ws_redis_url(ws_bp *bp, apr_pool_t *pconf, const char *redis_url)
{
    apr_uri_t u;
    if (apr_uri_parse(pconf, redis_url, &u) != APR_SUCCESS || !u.scheme || !u.hostname) {
        return apr_psprintf(pconf, "WebSocketBackplane: '%s' is not "
                            "redis://[[USER]:PASSWORD@]HOST[:PORT][/PREFIX]", redis_url);
    }
    bp->redis_tls = strcasecmp(u.scheme, "rediss") == 0;
    if (u.query) {
        if (!bp->redis_tls || strncmp(u.query, "cacert=", 7) != 0 || !u.query[7]) {
            return "WebSocketBackplane: the only URL parameter is rediss://...?cacert=FILE";
        }
        bp->redis_cafile = ap_server_root_relative(pconf, u.query + 7);
    }
    if (!bp->redis_tls && strcasecmp(u.scheme, "redis") != 0) {
        return apr_psprintf(pconf, "WebSocketBackplane: '%s' is not a redis:// URL",
                            redis_url);
    }
    bp->redis_host = u.hostname;
    bp->redis_port = u.port ? u.port : bp->redis_tls ? 6380 : 6379;
    bp->prefix = (u.path && u.path[0] == '/' && u.path[1])
                 ? apr_pstrcat(pconf, u.path + 1, ":", NULL) : "ws:";
    if (u.password) {
        char *pass = apr_pstrdup(pconf, u.password), *user = apr_pstrdup(pconf, u.user);
        if (ap_unescape_url(pass) != OK || (user && ap_unescape_url(user) != OK)) {
            return "WebSocketBackplane: bad percent-encoding in the Redis user or password";
        }
        bp->redis_pass = pass;
        bp->redis_user = user && *user ? user : NULL;   /* redis://:PASSWORD@HOST */
    }
    else if (u.user && *u.user) {
        return "WebSocketBackplane: a Redis user needs a password (redis://USER:PASSWORD@HOST)";
    }
    return NULL;
}

ws_bp *ws_bp_create(apr_pool_t *pconf, const char *redis_url, const char **err)
{
    ws_bp *bp = apr_pcalloc(pconf, sizeof(*bp));
    size_t head = (sizeof(struct ws_bp_shared) + 63) & ~(size_t)63;

    if (redis_url && (*err = ws_redis_url(bp, pconf, redis_url)) != NULL) {
        return NULL;
    }
    if (apr_shm_create(&bp->shm, head + ws_ring_bytes(WS_BP_RING_SIZE) + WS_BP_COUNTS_BYTES,
                       NULL, pconf) != APR_SUCCESS) {
        *err = "WebSocketBackplane: cannot create the shared memory ring";
        return NULL;
    }
    bp->shared = apr_shm_baseaddr_get(bp->shm);
    memset(bp->shared, 0, sizeof(*bp->shared));
    bp->shared->epoch = (uint64_t)apr_time_as_msec(apr_time_now());
    bp->ring = (ws_ring *)(void *)((char *)bp->shared + head);
    if (ws_ring_init(bp->ring, WS_BP_RING_SIZE, 1) != 0) {
        *err = "WebSocketBackplane: cannot initialize the shared memory ring";
        return NULL;
    }
    return bp;
}

void ws_bp_status(ws_bp *bp, request_rec *r, int short_form)
{
    struct ws_bp_shared *sh = bp->shared;
    uint64_t v[6];
    v[0] = __atomic_load_n(&sh->ring_overruns, __ATOMIC_RELAXED);
    v[1] = __atomic_load_n(&sh->ring_lost_bytes, __ATOMIC_RELAXED);
    v[2] = __atomic_load_n(&sh->ring_invalid, __ATOMIC_RELAXED);
    v[3] = __atomic_load_n(&sh->ring_torn, __ATOMIC_RELAXED);
    v[4] = __atomic_load_n(&sh->redis_in, __ATOMIC_RELAXED);
    v[5] = __atomic_load_n(&sh->redis_dropped, __ATOMIC_RELAXED);
    if (short_form) {
        ap_rprintf(r, "WebSocketBackplaneRingOverruns: %" APR_UINT64_T_FMT "\n"
                   "WebSocketBackplaneRingLostBytes: %" APR_UINT64_T_FMT "\n"
                   "WebSocketBackplaneRingInvalid: %" APR_UINT64_T_FMT "\n"
                   "WebSocketBackplaneRingTorn: %" APR_UINT64_T_FMT "\n"
                   "WebSocketBackplaneRedisIn: %" APR_UINT64_T_FMT "\n"
                   "WebSocketBackplaneRedisDropped: %" APR_UINT64_T_FMT "\n",
                   v[0], v[1], v[2], v[3], v[4], v[5]);
    }
    else {
        ap_rprintf(r, "<dl><dt>backplane ring: %" APR_UINT64_T_FMT " overruns (%"
                   APR_UINT64_T_FMT " bytes of messages lost), %" APR_UINT64_T_FMT
                   " invalid and %" APR_UINT64_T_FMT " torn entries skipped</dt>\n"
                   "<dt>redis: %" APR_UINT64_T_FMT " messages in, %" APR_UINT64_T_FMT
                   " invalid ones dropped</dt></dl>\n", v[0], v[1], v[2], v[3], v[4], v[5]);
    }
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
        ws_msgid none = { 0, 0 };
        bp->qhead = m->next;
        ws_ticket_done(m->ticket, &none);
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
    apr_thread_create(&bp->reader, NULL, ws_ring_reader_thread, bp, pchild);
    if (bp->redis_host) {
        apr_thread_create(&bp->redis_sub, NULL, ws_redis_subscriber, bp, pchild);
        apr_thread_create(&bp->redis_pub, NULL, ws_redis_publisher, bp, pchild);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    /* A pre-cleanup: the threads live in sub-pools of pchild, gone by plain cleanups. */
    apr_pool_pre_cleanup_register(pchild, bp, ws_bp_child_stop);
}

int ws_bp_publish(ws_bp *bp, const char *channel, size_t channel_len, int opcode,
                  const void *data, size_t len, ws_bp_meta *meta)
{
    ws_bp_msg *m;
    ws_bp_ticket *t = NULL;
    meta->id.epoch = meta->id.seq = 0;
    if (channel_len + WS_BP_HDR + len > ws_ring_max_message(bp->ring)) {
        return -1;                /* one limit whichever way it travels */
    }
    if (!bp->redis_host || !bp->redis_pub_up || !bp->redis_sub_up) {
        return ws_ring_send(bp, channel, channel_len, opcode, data, len, meta);
    }
    m = malloc(sizeof(*m) + channel_len + len);
    if (meta->wait_id && m && (t = calloc(1, sizeof(*t))) != NULL) {
        pthread_mutex_init(&t->mu, NULL);
        pthread_cond_init(&t->cv, NULL);
        t->refs = 2;
    }
    if (!m || (meta->wait_id && !t)) {
        free(m);
        return -1;
    }
    m->next = NULL;
    m->channel_len = channel_len;
    m->len = len;
    m->opcode = opcode;
    m->ctl = meta->ctl;
    m->ticket = t;
    memcpy(m->buf, channel, channel_len);
    memcpy(m->buf + channel_len, data, len);
    pthread_mutex_lock(&bp->qmu);
    if (bp->qbytes + len > WS_BP_QUEUE_MAX) {
        pthread_mutex_unlock(&bp->qmu);
        free(m);
        if (t) {
            ws_ticket_release(t);
            ws_ticket_release(t);
        }
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
    if (t) {
        ws_ticket_wait(t, &meta->id);
    }
    return 0;
}

redisContext *ws_bp_redis_connect(ws_bp *bp)
{
    return bp->redis_host ? ws_redis_connect(bp, 0) : NULL;
}
