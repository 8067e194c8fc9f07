/*
 * ws_handle.c - handles, their outbound queues and the per-child registry of live
 * sessions.  See ws_handle.h.
 */
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

#include "apr_atomic.h"
#include "apr_strings.h"

#include "ws_handle.h"
#include "ws_proto.h"
#include "ws_status.h"

/* Bytes malloc'd for queued messages (freed on other threads than their senders')
 * since the last malloc_trim check. */
static apr_uint32_t ws_heap_churned;

/* Per-child registry of live sessions: for graceful stop. */
static pthread_mutex_t ws_reg_mu = PTHREAD_MUTEX_INITIALIZER;
static ws_handle *ws_reg_head;
static int ws_reg_closing;              /* close_all ran: later sessions close at once */
static char ws_reg_reason[124];

void ws_heap_churn_add(size_t len)
{
    apr_atomic_add32(&ws_heap_churned, len > 0x7fffffff ? 0x7fffffff : (apr_uint32_t)len);
}

apr_uint32_t ws_heap_churn(void)
{
    return apr_atomic_read32(&ws_heap_churned);
}

/* Any thread: once `threshold` bytes of traffic went through, give freed heap back.
 * Messages are allocated on their senders' threads and freed on others; glibc keeps
 * what is free in the middle of each arena until malloc_trim. */
void ws_heap_trim_maybe(apr_uint32_t threshold)
{
    if (apr_atomic_read32(&ws_heap_churned) >= threshold
        && apr_atomic_xchg32(&ws_heap_churned, 0) >= threshold) {
        malloc_trim(0);
    }
}

ws_payload *ws_payload_create(int opcode, const void *data, size_t len)
{
    static const ws_msgid none = { 0, 0 };
    return ws_payload_create_keyed(opcode, data, len, NULL, 0, &none);
}

ws_payload *ws_payload_create_keyed(int opcode, const void *data, size_t len,
                                    const char *key, size_t klen, const ws_msgid *id)
{
    ws_payload *p = malloc(sizeof(*p) + len + klen + (key ? 1 : 0));
    ws_heap_churn_add(len);
    if (p) {
        p->refs = 1;
        p->flags = 0;
        p->opcode = opcode;
        p->len = len;
        p->id = *id;
        p->key = NULL;
        p->klen = klen;
        p->fmt[0] = p->fmt[1] = p->fmt[2] = NULL;
        if (len) {
            memcpy(p->data, data, len);
        }
        if (key) {
            memcpy(p->data + len, key, klen);
            p->data[len + klen] = '\0';
            p->key = (const char *)p->data + len;
        }
    }
    return p;
}

void ws_payload_release(ws_payload *p)
{
    if (p && apr_atomic_dec32(&p->refs) == 0) {
        free(p->fmt[0]);
        free(p->fmt[1]);
        free(p->fmt[2]);
        free(p);
    }
}

void ws_qmsg_free_list(ws_qmsg *m)
{
    while (m) {
        ws_qmsg *next = m->next;
        ws_payload_release(m->p);
        free(m);
        m = next;
    }
}

void ws_handle_retain(ws_handle *h)
{
    if (h) {
        apr_atomic_inc32(&h->refs);
    }
}

void ws_handle_release(ws_handle *h)
{
    if (h && apr_atomic_dec32(&h->refs) == 0) {
        ws_qmsg_free_list(h->head);
        pthread_mutex_destroy(&h->mu);
        free(h);
    }
}

/* Wake the owner so it looks at the handle (h->mu held): once until it does. */
static void ws_handle_wake_locked(ws_handle *h)
{
    if (h->owner && !h->woken && h->wake) {
        h->woken = 1;
        h->wake(h, h->wake_baton);
    }
}

static void ws_registry_add(ws_handle *h)
{
    int closing;
    ws_handle_retain(h);
    pthread_mutex_lock(&ws_reg_mu);
    h->reg_next = ws_reg_head;
    if (ws_reg_head) {
        ws_reg_head->reg_prev = h;
    }
    ws_reg_head = h;
    closing = ws_reg_closing;
    pthread_mutex_unlock(&ws_reg_mu);
    if (closing) {
        /* A handshake that was under way when the child began to stop. */
        ws_handle_request_close(h, closing, ws_reg_reason);
    }
}

/* Returns whether no session of this child is left. */
static int ws_registry_remove(ws_handle *h)
{
    int empty;
    pthread_mutex_lock(&ws_reg_mu);
    if (h->reg_prev) {
        h->reg_prev->reg_next = h->reg_next;
    }
    else if (ws_reg_head == h) {
        ws_reg_head = h->reg_next;
    }
    if (h->reg_next) {
        h->reg_next->reg_prev = h->reg_prev;
    }
    h->reg_prev = h->reg_next = NULL;
    empty = ws_reg_head == NULL;
    pthread_mutex_unlock(&ws_reg_mu);
    ws_handle_release(h);
    return empty;
}

void ws_registry_close_all(int code, const char *reason)
{
    ws_handle *h;
    pthread_mutex_lock(&ws_reg_mu);
    ws_reg_closing = code;
    apr_cpystrn(ws_reg_reason, reason, sizeof(ws_reg_reason));
    for (h = ws_reg_head; h; h = h->reg_next) {
        ws_handle_request_close(h, code, reason);
    }
    pthread_mutex_unlock(&ws_reg_mu);
}

ws_handle *ws_handle_create(void *owner, apr_size_t max_queue)
{
    ws_handle *h = calloc(1, sizeof(*h));
    if (!h) {
        return NULL;
    }
    h->refs = 1;
    h->owner = owner;
    h->max_queue = max_queue;
    if (pthread_mutex_init(&h->mu, NULL) != 0) {
        free(h);
        return NULL;
    }
    ws_registry_add(h);
    return h;
}

void ws_handle_set_waker(ws_handle *h, ws_wake_fn wake, void *baton)
{
    pthread_mutex_lock(&h->mu);
    h->wake = wake;
    h->wake_baton = baton;
    h->woken = 0;
    /* Work queued before the driver took over (on_open's threads) is not lost. */
    if (h->head || h->overflow || h->close_pending) {
        ws_handle_wake_locked(h);
    }
    pthread_mutex_unlock(&h->mu);
}

int ws_valid_send_args(int type, const void *data, size_t len)
{
    if (type != WS_TEXT && type != WS_BINARY) {
        return 0;
    }
    if (!data && len) {
        return 0;
    }
    /* RFC 6455 5.6: text frames carry UTF-8 */
    if (type == WS_TEXT && !ws_utf8_valid(data, len)) {
        return 0;
    }
    return 1;
}

int ws_handle_enqueue(ws_handle *h, ws_payload *p)
{
    ws_qmsg *m = malloc(sizeof(*m));
    if (!m) {
        return WS_ENOMEM;
    }
    m->next = NULL;
    m->p = p;
    pthread_mutex_lock(&h->mu);
    if (!h->owner || h->close_code || h->overflow) {
        pthread_mutex_unlock(&h->mu);
        free(m);
        return WS_ECLOSED;
    }
    /* The bound covers what waits here and what the owner could not write yet: a
     * peer that does not read fills both. */
    if (h->queued + h->backlog + p->len > h->max_queue) {
        /* Documented policy: a peer that does not read what it is sent is closed with
         * 1008; the sender learns it now, nothing already queued is lost. */
        h->overflow = 1;
        ws_status_queue_drop();
        ws_handle_wake_locked(h);
        pthread_mutex_unlock(&h->mu);
        free(m);
        return WS_EFULL;
    }
    apr_atomic_inc32(&p->refs);
    if (h->tail) {
        h->tail->next = m;
    }
    else {
        h->head = m;
    }
    h->tail = m;
    h->queued += p->len;
    ws_handle_wake_locked(h);
    pthread_mutex_unlock(&h->mu);
    return WS_SUCCESS;
}

int ws_handle_send(ws_handle *h, int type, const void *data, size_t len, int flags)
{
    ws_payload *p;
    int rv;
    if (!h || !ws_valid_send_args(type, data, len)) {
        return WS_EINVAL;
    }
    if (len > h->max_queue) {
        return WS_ETOOBIG;          /* never fits WebSocketMaxQueue: the plugin's error */
    }
    p = ws_payload_create(type == WS_TEXT ? WS_OP_TEXT : WS_OP_BINARY, data, len);
    if (!p) {
        return WS_ENOMEM;
    }
    p->flags = flags & WS_SEND_FLAGS;
    rv = ws_handle_enqueue(h, p);
    ws_payload_release(p);
    return rv;
}

int ws_handle_request_close(ws_handle *h, int code, const char *reason)
{
    size_t n;
    pthread_mutex_lock(&h->mu);
    if (!h->owner || h->close_code) {
        pthread_mutex_unlock(&h->mu);
        return WS_ECLOSED;
    }
    h->close_code = code;
    h->close_pending = 1;
    n = reason ? ws_close_reason_cut(reason, strlen(reason), WS_CLOSE_REASON_MAX) : 0;
    memcpy(h->close_reason, reason ? reason : "", n);
    h->close_reason[n] = '\0';
    ws_handle_wake_locked(h);
    pthread_mutex_unlock(&h->mu);
    return WS_SUCCESS;
}

/* What WebSocketMaxQueue bounds: queued messages plus frames the owner holds unsent
 * (backlog, refreshed by the owner after each write). */
size_t ws_handle_buffered(ws_handle *h)
{
    size_t n = 0;
    if (h) {
        pthread_mutex_lock(&h->mu);
        n = h->owner ? (size_t)(h->queued + h->backlog) : 0;
        pthread_mutex_unlock(&h->mu);
    }
    return n;
}

void ws_handle_take(ws_handle *h, ws_handle_work *w)
{
    pthread_mutex_lock(&h->mu);
    w->list = h->head;
    h->head = h->tail = NULL;
    h->backlog += h->queued;      /* moving to the owner: still unsent, still counted */
    h->queued = 0;
    w->overflow = h->overflow;
    w->close_code = h->close_pending ? h->close_code : 0;
    h->close_pending = 0;
    h->woken = 0;
    memcpy(w->close_reason, h->close_reason, sizeof(w->close_reason));
    pthread_mutex_unlock(&h->mu);
}

void ws_handle_set_backlog(ws_handle *h, apr_size_t n)
{
    pthread_mutex_lock(&h->mu);
    h->backlog = n;
    pthread_mutex_unlock(&h->mu);
}

apr_size_t ws_handle_queued(ws_handle *h)
{
    apr_size_t n;
    pthread_mutex_lock(&h->mu);
    n = h->queued;
    pthread_mutex_unlock(&h->mu);
    return n;
}

void ws_handle_detach(ws_handle *h)
{
    ws_qmsg *list;
    pthread_mutex_lock(&h->mu);
    h->owner = NULL;
    list = h->head;
    h->head = h->tail = NULL;
    h->queued = 0;
    h->wake = NULL;
    pthread_mutex_unlock(&h->mu);
    ws_qmsg_free_list(list);
    if (ws_registry_remove(h)) {
        /* the child's last session: a prefork child's until its next one */
        ws_heap_trim_maybe(WS_TRIM_CHURN_QUIET);
    }
    ws_handle_release(h);
}
