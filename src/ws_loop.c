/*
 * ws_loop.c - the event loops.  See ws_loop.h.
 *
 * Threads: a loop's own thread runs everything here except ws_loop_wake (any thread,
 * a handle's mutex held), ws_loop_suspend_connection (the MPM worker that ran the
 * handshake) and the child init/stop functions.  Lock order: a handle's mutex, then a
 * loop's mutex.
 *
 * Fairness: per round a session reads at most WS_LOOP_READ_BUDGET bytes and hands at
 * most WS_LOOP_WRITE_BUDGET bytes to its filters; a session with more to do goes on
 * the loop's "again" list and runs after the others had their turn.
 */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "httpd.h"
#include "http_config.h"
#include "http_connection.h"
#include "http_core.h"
#include "http_log.h"
#include "http_main.h"
#include "scoreboard.h"
#include "ap_mpm.h"
#include "apr_atomic.h"
#include "apr_portable.h"
#include "apr_thread_proc.h"

#include "ws_loop.h"
#include "ws_timer.h"

APLOG_USE_MODULE(websocket);

#define WS_LOOP_READ_BUDGET (256 * 1024)
#define WS_LOOP_WRITE_BUDGET (512 * 1024)
#define WS_LOOP_EVENTS 256
#define WS_LOOP_TICK 1000                       /* ms: housekeeping at least this often */
#define WS_LINGER apr_time_from_sec(2)          /* as ap_lingering_close's */
#define WS_RETIRE_AFTER apr_time_from_msec(100) /* see ws_loop_retire */
#define WS_MPM_RECHECK apr_time_from_msec(1)    /* has the MPM let go yet? */

typedef enum { WS_LC_NEW, WS_LC_LIVE, WS_LC_LINGER, WS_LC_CLOSED } ws_lc_phase;

struct ws_loop;

/* A session as its loop sees it (in c->pool). */
typedef struct ws_lconn {
    ws_conn *s;
    struct ws_loop *loop;
    request_rec *r;               /* the upgrade request, until its pool is freed */
    apr_socket_t *sock;
    int fd;
    ws_lc_phase phase;
    uint32_t events;              /* registered with epoll (0: not yet) */
    ws_timer timer;
    apr_time_t adopted;           /* when the MPM handed it over */
    int mpm_done;                 /* the MPM has surely let go (see ws_loop_mpm_done) */
    int started;                  /* ws_loop_run ran once after that */
    apr_time_t drain_deadline;    /* a finished session's output must go by then */
    apr_time_t linger_until;
    int in_again;
    struct ws_lconn *again_next;
    struct ws_lconn *prev, *next; /* the loop's sessions */
    struct ws_lconn *incoming_next;
    struct ws_lconn *retire_next;
    apr_time_t retire_at;
} ws_lconn;

typedef struct ws_loop {
    int index;
    int epfd, evfd;
    apr_thread_t *thread;
    pthread_mutex_t mu;           /* protects incoming, ready, signaled */
    ws_lconn *incoming;           /* handed over, not yet taken */
    ws_handle *ready;             /* woken handles (each holds a reference) */
    int signaled;                 /* evfd written and not yet read */
    apr_uint32_t count;           /* its sessions (any thread reads it) */
    /* loop thread only */
    ws_timer_heap timers;
    ws_lconn *all;
    ws_lconn *again;
    ws_lconn *retiring;           /* closed, oldest first: c->pool still to destroy */
    ws_lconn *retiring_tail;
    apr_time_t next_tick;
    apr_uint32_t churn_seen;            /* ws_heap_churn() at the last tick */
} ws_loop;

static ws_loop *ws_loops;
static int ws_nloops;
static ap_sb_handle_t *ws_loop_sbh;     /* a scoreboard handle of no slot (child -1) */
static volatile int ws_loops_stop;      /* pchild is going: leave */
static volatile int ws_loops_hard;      /* ungraceful: never destroy a pool again */
static volatile int ws_loops_stopping;  /* any stop: short drain deadlines */

int ws_loop_available(void)
{
    return ws_nloops > 0;
}

int ws_loop_stopping(void)
{
    return ws_loops_stopping;
}

/* ---- wake-ups (any thread) ---- */

static void ws_loop_signal_locked(ws_loop *L)
{
    if (!L->signaled) {
        uint64_t one = 1;
        ssize_t n;
        L->signaled = 1;
        do {
            n = write(L->evfd, &one, sizeof(one));
        } while (n < 0 && errno == EINTR);
    }
}

/* The waker of loop sessions (h->mu held): queue h for its loop. */
static void ws_loop_wake(ws_handle *h, void *baton)
{
    ws_loop *L = ((ws_lconn *)baton)->loop;
    if (h->in_ready) {
        return;                 /* on the list already: the loop will look */
    }
    h->in_ready = 1;
    ws_handle_retain(h);
    pthread_mutex_lock(&L->mu);
    h->ready_next = L->ready;
    L->ready = h;
    ws_loop_signal_locked(L);
    pthread_mutex_unlock(&L->mu);
}

/* ---- handing sessions over (handler thread, then the MPM's worker) ---- */

int ws_loop_prepare(ws_conn *s, request_rec *r)
{
    conn_rec *c = s->c;
    ws_lconn *lc = apr_pcalloc(c->pool, sizeof(*lc));
    ws_loop *L = &ws_loops[0];
    int i;
    for (i = 1; i < ws_nloops; i++) {
        if (apr_atomic_read32(&ws_loops[i].count) < apr_atomic_read32(&L->count)) {
            L = &ws_loops[i];
        }
    }
    lc->s = s;
    lc->r = r;
    lc->loop = L;
    lc->sock = ap_get_conn_socket(c);
    if (!lc->sock || apr_os_sock_get(&lc->fd, lc->sock) != APR_SUCCESS) {
        return -1;
    }
    apr_atomic_inc32(&L->count);
    ap_set_module_config(c->conn_config, &websocket_module, lc);
    return 0;
}

void ws_loop_suspend_connection(conn_rec *c, request_rec *r)
{
    ws_lconn *lc = ap_get_module_config(c->conn_config, &websocket_module);
    (void)r;
    if (!lc || lc->phase != WS_LC_NEW || lc->adopted) {
        return;
    }
    /* From here the MPM only clears c->sbh and marks its state as suspended. */
    lc->adopted = apr_time_now();
    pthread_mutex_lock(&lc->loop->mu);
    lc->incoming_next = lc->loop->incoming;
    lc->loop->incoming = lc;
    ws_loop_signal_locked(lc->loop);
    pthread_mutex_unlock(&lc->loop->mu);
}

/* ---- the loop thread ---- */

static void ws_loop_again(ws_lconn *lc)
{
    if (!lc->in_again) {
        lc->in_again = 1;
        lc->again_next = lc->loop->again;
        lc->loop->again = lc;
    }
}

static void ws_loop_interest(ws_lconn *lc, uint32_t events)
{
    struct epoll_event ev;
    if (lc->events == events) {
        return;
    }
    memset(&ev, 0, sizeof(ev));
    ev.events = events;
    ev.data.ptr = lc;
    if (epoll_ctl(lc->loop->epfd, lc->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, lc->fd,
                  &ev) != 0) {
        ap_log_cerror(APLOG_MARK, APLOG_ERR, errno, lc->s->c, "WS00042: epoll_ctl failed");
        lc->s->c->aborted = 1;
        lc->s->state = WS_ST_DONE;
        ws_loop_again(lc);
        return;
    }
    lc->events = events;
}

static void ws_loop_timer(ws_lconn *lc, apr_time_t at)
{
    if (!at) {
        ws_timer_cancel(&lc->loop->timers, &lc->timer);
    }
    else if (ws_timer_set(&lc->loop->timers, &lc->timer, at) != 0) {
        ws_loop_again(lc);      /* out of memory: poll it instead */
    }
}

/* The MPM's last writes after the suspend_connection hook are c->sbh = NULL and its
 * own "suspended" flag.  Once c->sbh is seen NULL the connection gets a scoreboard
 * handle of no slot: status updates (ap_prep_lingering_close) then touch no worker's
 * entry, and the error log names the peer as [client ...] as for any connection. */
static int ws_loop_mpm_done(ws_lconn *lc)
{
    conn_rec *c = lc->s->c;
    if (!lc->mpm_done && __atomic_load_n(&c->sbh, __ATOMIC_ACQUIRE) == NULL) {
        lc->mpm_done = 1;
        c->sbh = ws_loop_sbh;
        /* The request's pool (several KB per idle session) is not needed any more:
         * the 101 is logged, the session's state lives in c->pool.  Its cleanup
         * clears the MPM's pointer to r, which the MPM no longer reads. */
        if (lc->r) {
            ws_session_drop_request(lc->s, lc->r->pool);
            lc->r = NULL;
        }
    }
    return lc->mpm_done;
}

/* Destroying c->pool gives the MPM back its connection count.  Only once the MPM is
 * surely done with the connection: its last writes after the suspend_connection hook
 * are c->sbh = NULL and its own "suspended" flag, so wait until c->sbh was seen NULL
 * and at least WS_RETIRE_AFTER after the hand-over.  Never after an ungraceful stop
 * began (the pool's cleanups would wake the MPM's pollset, gone by then). */
static void ws_loop_retire(ws_loop *L, ws_lconn *lc)
{
    /* Counted from the close, which is after the hand-over: the list stays in order
     * of retire_at, and a reap looks at its head only. */
    lc->retire_at = apr_time_now() + WS_RETIRE_AFTER;
    lc->retire_next = NULL;
    if (L->retiring) {
        L->retiring_tail->retire_next = lc;
    }
    else {
        L->retiring = lc;
    }
    L->retiring_tail = lc;
}

static void ws_loop_reap(ws_loop *L, apr_time_t now)
{
    ws_lconn *lc;
    while ((lc = L->retiring) != NULL && !ws_loops_hard && now >= lc->retire_at
           && ws_loop_mpm_done(lc)) {
        L->retiring = lc->retire_next;
        apr_atomic_dec32(&L->count);
        apr_pool_destroy(lc->s->c->pool);
    }
}

static void ws_loop_unlink(ws_lconn *lc)
{
    ws_loop *L = lc->loop;
    if (lc->prev) {
        lc->prev->next = lc->next;
    }
    else if (L->all == lc) {
        L->all = lc->next;
    }
    if (lc->next) {
        lc->next->prev = lc->prev;
    }
    lc->prev = lc->next = NULL;
}

/* The socket is done with: close it and retire the connection. */
static void ws_loop_close(ws_lconn *lc)
{
    if (lc->events) {
        epoll_ctl(lc->loop->epfd, EPOLL_CTL_DEL, lc->fd, NULL);
        lc->events = 0;
    }
    ws_timer_cancel(&lc->loop->timers, &lc->timer);
    ws_loop_unlink(lc);
    apr_socket_close(lc->sock);
    lc->phase = WS_LC_CLOSED;
    ws_loop_retire(lc->loop, lc);
}

/* The session is over: tell the plugin, then close as ap_lingering_close does (the
 * pre_close hooks, mod_ssl's close_notify, a FIN), reading what the peer still sends
 * for up to two seconds without blocking the loop. */
static void ws_loop_finish(ws_lconn *lc, int pending)
{
    conn_rec *c = lc->s->c;
    ws_session_end(lc->s);
    if (pending) {
        c->aborted = 1;         /* what could not go by the deadline never will */
    }
    if (ws_loops_hard || ap_start_lingering_close(c)) {
        ws_loop_close(lc);
        return;
    }
    apr_socket_timeout_set(lc->sock, 0);
    lc->phase = WS_LC_LINGER;
    lc->linger_until = apr_time_now() + WS_LINGER;
    ws_loop_interest(lc, EPOLLIN);
    ws_loop_timer(lc, lc->linger_until);
}

static void ws_loop_linger_read(ws_lconn *lc)
{
    char buf[512];
    for (;;) {
        apr_size_t n = sizeof(buf);
        apr_status_t rv = apr_socket_recv(lc->sock, buf, &n);
        if (APR_STATUS_IS_EAGAIN(rv) && apr_time_now() < lc->linger_until) {
            return;
        }
        if (rv != APR_SUCCESS || n == 0) {
            ws_loop_close(lc);
            return;
        }
    }
}

/* A finished session's output may still go (queued messages, the close frame) until
 * the drain deadline: Timeout, shortened when the child is stopping. */
static int ws_loop_drained(ws_lconn *lc, int pending, apr_time_t now)
{
    ws_conn *s = lc->s;
    ws_handle_work w;
    ws_handle_take(s->h, &w);   /* messages queued meanwhile are dropped */
    ws_qmsg_free_list(w.list);
    if (!lc->drain_deadline) {
        apr_interval_time_t t = s->c->base_server->timeout;
        lc->drain_deadline = now + (t > WS_CLOSE_WAIT ? t : WS_CLOSE_WAIT);
    }
    if (ws_loops_stopping && lc->drain_deadline > now + WS_CLOSE_WAIT) {
        lc->drain_deadline = now + WS_CLOSE_WAIT;
    }
    return !pending || s->c->aborted || now >= lc->drain_deadline;
}

/* One turn of a live session: read (if readable), queued work, timers, write. */
static void ws_loop_run(ws_lconn *lc, int readable)
{
    ws_conn *s = lc->s;
    conn_rec *c = s->c;
    apr_time_t next = 0, now;
    int pending, blocked;

    if (!ws_loop_mpm_done(lc)) {
        /* The MPM is still on its way out of the hook: start once it is done. */
        ws_loop_timer(lc, apr_time_now() + WS_MPM_RECHECK);
        return;
    }
    if (!lc->started) {
        lc->started = 1;
        readable = 1;   /* frames that came with the handshake may sit in the filters */
    }
    if (s->state != WS_ST_DONE) {
        next = ws_session_round(s, readable, WS_LOOP_READ_BUDGET);
    }
    pending = ws_write_nonblocking(s, WS_LOOP_WRITE_BUDGET);
    blocked = pending && c->data_in_output_filters;
    now = apr_time_now();
    if (s->state == WS_ST_DONE) {
        if (ws_loop_drained(lc, pending, now)) {
            ws_loop_finish(lc, pending);
            return;
        }
        next = lc->drain_deadline;
    }
    if ((pending && !blocked) || (!pending && s->input_pending)) {
        ws_loop_again(lc);
    }
    else if (!pending) {
        ws_session_idle(s);
    }
    /* While the peer does not take our output, take no more input from it. */
    ws_loop_interest(lc, blocked ? EPOLLOUT : EPOLLIN);
    ws_loop_timer(lc, next);
}

static void ws_loop_event(ws_lconn *lc, uint32_t events)
{
    if (lc->phase == WS_LC_LIVE) {
        ws_loop_run(lc, (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) != 0);
    }
    else if (lc->phase == WS_LC_LINGER) {
        ws_loop_linger_read(lc);
    }
}

/* Take over a session the MPM has let go of. */
static void ws_loop_adopt(ws_loop *L, ws_lconn *lc)
{
    lc->phase = WS_LC_LIVE;
    lc->next = L->all;
    if (L->all) {
        L->all->prev = lc;
    }
    L->all = lc;
    ws_handle_set_waker(lc->s->h, ws_loop_wake, lc);
    ws_loop_run(lc, 1);
}

static void ws_loop_take(ws_loop *L)
{
    ws_lconn *in;
    ws_handle *ready;
    uint64_t v;
    pthread_mutex_lock(&L->mu);
    in = L->incoming;
    ready = L->ready;
    L->incoming = NULL;
    L->ready = NULL;
    if (L->signaled) {
        L->signaled = 0;
        while (read(L->evfd, &v, sizeof(v)) > 0) {
        }
    }
    pthread_mutex_unlock(&L->mu);
    while (in) {
        ws_lconn *next = in->incoming_next;
        ws_loop_adopt(L, in);
        in = next;
    }
    while (ready) {
        ws_handle *h = ready, *next = h->ready_next;   /* read before in_ready goes */
        ws_lconn *lc = NULL;
        pthread_mutex_lock(&h->mu);
        h->in_ready = 0;
        if (h->owner) {
            lc = h->wake_baton;   /* alive: only this thread ends its sessions */
        }
        pthread_mutex_unlock(&h->mu);
        if (lc && lc->phase == WS_LC_LIVE) {
            ws_loop_run(lc, 0);
        }
        ws_handle_release(h);
        ready = next;
    }
}

static void ws_loop_run_again(ws_loop *L)
{
    ws_lconn *lc = L->again;
    L->again = NULL;
    while (lc) {
        ws_lconn *next = lc->again_next;
        lc->in_again = 0;
        if (lc->phase == WS_LC_LIVE) {
            ws_loop_run(lc, 1);
        }
        lc = next;
    }
}

static void ws_loop_timers(ws_loop *L, apr_time_t now)
{
    ws_timer *t;
    while ((t = ws_timer_pop_due(&L->timers, now)) != NULL) {
        ws_lconn *lc = (ws_lconn *)((char *)t - offsetof(ws_lconn, timer));
        if (lc->phase == WS_LC_LIVE) {
            ws_loop_run(lc, 0);
        }
        else if (lc->phase == WS_LC_LINGER) {
            ws_loop_close(lc);
        }
    }
}

static int ws_loop_timeout(ws_loop *L, apr_time_t now)
{
    ws_timer *t = ws_timer_first(&L->timers);
    apr_interval_time_t wait = L->next_tick - now;
    if (L->again) {
        return 0;
    }
    if (t && t->at - now < wait) {
        wait = t->at - now;
    }
    if (L->retiring && !ws_loops_hard) {
        /* (at least WS_MPM_RECHECK: the MPM may not have let go of it yet) */
        apr_interval_time_t r = L->retiring->retire_at - now;
        wait = r < wait ? (r < WS_MPM_RECHECK ? WS_MPM_RECHECK : r) : wait;
    }
    return wait <= 0 ? 0 : (int)((wait + 999) / 1000);
}

/* Once a tick: give freed heap back after heavy traffic, or after a burst once a
 * tick went by without traffic. */
static void ws_loop_tick(ws_loop *L, apr_time_t now)
{
    L->next_tick = now + apr_time_from_msec(WS_LOOP_TICK);
    if (L->index == 0) {
        int quiet = ws_heap_churn() == L->churn_seen;
        ws_heap_trim_maybe(quiet ? WS_TRIM_CHURN_QUIET : WS_TRIM_CHURN_LOOP);
        L->churn_seen = ws_heap_churn();
    }
}

/* The child is going away for good: end what is left without touching the pools. */
static void ws_loop_abandon(ws_loop *L)
{
    while (L->all) {
        ws_lconn *lc = L->all;
        ws_loop_unlink(lc);
        ws_session_end(lc->s);
        apr_socket_shutdown(lc->sock, APR_SHUTDOWN_READWRITE);
        lc->phase = WS_LC_CLOSED;
    }
}

static void *APR_THREAD_FUNC ws_loop_main(apr_thread_t *thread, void *data)
{
    ws_loop *L = data;
    struct epoll_event ev[WS_LOOP_EVENTS];
    L->next_tick = apr_time_now();
    for (;;) {
        apr_time_t now = apr_time_now();
        int i, n;
        if (ws_loops_stop) {
            break;
        }
        n = epoll_wait(L->epfd, ev, WS_LOOP_EVENTS, ws_loop_timeout(L, now));
        for (i = 0; i < n; i++) {
            if (ev[i].data.ptr) {
                ws_loop_event(ev[i].data.ptr, ev[i].events);
            }
        }
        ws_loop_take(L);
        ws_loop_run_again(L);
        now = apr_time_now();
        ws_loop_timers(L, now);
        ws_loop_reap(L, now);
        if (now >= L->next_tick) {
            ws_loop_tick(L, now);
        }
    }
    ws_loop_take(L);
    ws_loop_abandon(L);
    ws_timer_heap_free(&L->timers);
    apr_thread_exit(thread, APR_SUCCESS);
    return NULL;
}

/* pchild pre-cleanup: stop and join the loops before the MPM's own structures go. */
static apr_status_t ws_loop_join(void *data)
{
    int i;
    (void)data;
    /* The MPM has waited for its connection count (which our sessions hold) as long
     * as it will: what is left is abandoned, its pools untouched. */
    ws_loops_hard = 1;
    ws_loops_stop = 1;
    for (i = 0; i < ws_nloops; i++) {
        apr_status_t rv;
        pthread_mutex_lock(&ws_loops[i].mu);
        ws_loop_signal_locked(&ws_loops[i]);
        pthread_mutex_unlock(&ws_loops[i].mu);
        apr_thread_join(&rv, ws_loops[i].thread);
    }
    ws_nloops = 0;
    return APR_SUCCESS;
}

static int ws_loop_start(ws_loop *L, int index, apr_pool_t *pchild)
{
    struct epoll_event ev;
    L->index = index;
    L->epfd = epoll_create1(EPOLL_CLOEXEC);
    L->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (L->epfd < 0 || L->evfd < 0 || pthread_mutex_init(&L->mu, NULL) != 0) {
        return -1;
    }
    ws_timer_heap_init(&L->timers);
    memset(&ev, 0, sizeof(ev));
    ev.events = EPOLLIN;
    ev.data.ptr = NULL;
    if (epoll_ctl(L->epfd, EPOLL_CTL_ADD, L->evfd, &ev) != 0) {
        return -1;
    }
    return apr_thread_create(&L->thread, NULL, ws_loop_main, L, pchild) == APR_SUCCESS
           ? 0 : -1;
}

void ws_loop_child_init(apr_pool_t *pchild, int n)
{
    int async = 0, i;
    sigset_t all, old;
    ws_nloops = 0;
    ws_loops_stop = ws_loops_hard = ws_loops_stopping = 0;
    if (ap_mpm_query(AP_MPMQ_IS_ASYNC, &async) != APR_SUCCESS || !async) {
        return;
    }
    ws_loops = apr_pcalloc(pchild, sizeof(*ws_loops) * (size_t)n);
    ap_create_sb_handle(&ws_loop_sbh, pchild, -1, -1);
    /* Signals stay with the MPM's threads: the MPMs run their exit paths from signal
     * handlers, which must not land on a loop. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (i = 0; i < n; i++) {
        if (ws_loop_start(&ws_loops[i], i, pchild) != 0) {
            ap_log_error(APLOG_MARK, APLOG_ERR, errno, ap_server_conf, "WS00003: cannot "
                         "start event loop %d: sessions use the blocking driver", i);
            break;
        }
        ws_nloops = i + 1;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (ws_nloops > 0) {
        /* Each freed 64 KiB message at the top of a loop's arena was handed back with
         * madvise and faulted in again for the next one (a fifth of the CPU of a
         * 64 KiB echo): keep up to 4 MB per arena, and trim after heavy traffic
         * (ws_loop_tick).  Only here: under the worker MPM every worker thread's
         * arena would keep its 4 MB (+12 MB over 4 children in test_ws_650). */
        mallopt(M_TRIM_THRESHOLD, 4 * 1024 * 1024);
    }
    apr_pool_pre_cleanup_register(pchild, NULL, ws_loop_join);
}

void ws_loop_child_stopping(int graceful)
{
    ws_loops_stopping = 1;
    if (!graceful) {
        ws_loops_hard = 1;
    }
}
