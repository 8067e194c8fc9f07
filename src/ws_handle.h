/*
 * ws_handle.h - the part of a session other threads may touch.
 *
 * A handle is malloc'd and reference counted: plugin threads, channel subscriptions and
 * the per-child registry may hold it after the session (and its pools) are gone; sends
 * then fail with WS_ECLOSED.  Its mutex protects every member.  Other threads queue
 * messages (shared payloads) and close requests; the session's owner (one thread: its
 * event loop, or the thread of the blocking driver) takes them and is woken through the
 * waker its driver installed: the one interface both drivers implement.
 */
#ifndef WS_HANDLE_H
#define WS_HANDLE_H

#include <pthread.h>
#include <stddef.h>

#include "apr.h"
#include "mod_websocket.h"
#include "ws_history.h"

/* A message body, shared by every queue it sits in (a published message fans out to
 * many subscribers with one copy). */
typedef struct ws_payload {
    apr_uint32_t refs;
    int opcode;
    int flags;                    /* WS_SEND_* */
    size_t len;
    ws_msgid id;                  /* a channel message's id (seq 0: none) */
    const char *key;              /* its channel key (after data[]), or NULL */
    size_t klen;
    void *fmt[3];                 /* its framings for channel subscribers, made once
                                   * by the first that needs one (ws_push_out.c) */
    unsigned char data[];
} ws_payload;

typedef struct ws_qmsg {
    struct ws_qmsg *next;
    ws_payload *p;
} ws_qmsg;

/* Wakes the owner of h (called with h->mu held, at most once until the owner takes
 * what is queued): must not block and must not take h->mu. */
typedef void (*ws_wake_fn)(ws_handle *h, void *baton);

struct ws_handle {
    apr_uint32_t refs;
    pthread_mutex_t mu;
    void *owner;                  /* the session; NULL once it is over */
    ws_wake_fn wake;              /* set by the owner's driver */
    void *wake_baton;
    int woken;                    /* a wake-up is pending (the owner has not looked) */
    ws_qmsg *head, *tail;
    apr_size_t queued;
    apr_size_t backlog;           /* bytes the owner still holds unsent */
    apr_size_t max_queue;
    int overflow;                 /* a send did not fit: fail with 1008 */
    int close_code;               /* a close was asked for (handle_close, shutdown) */
    int close_pending;            /* ... and the owner has not acted on it yet */
    int push_kind;                /* a channel subscriber session (ws_push.h): set
                                   * before its first subscription, then read-only */
    char close_reason[124];
    struct ws_handle *reg_prev, *reg_next;  /* the per-child registry */
    struct ws_handle *ready_next; /* the waker's own list (event loop) ... */
    int in_ready;                 /* ... and whether h is on it */
};

/* What the owner takes from its handle in one go (ws_handle_take). */
typedef struct ws_handle_work {
    ws_qmsg *list;                /* queued messages, oldest first: free with ws_qmsg_free_list */
    int overflow;
    int close_code;               /* 0: no close requested */
    char close_reason[124];
} ws_handle_work;

/* ---- any thread ---- */
ws_payload *ws_payload_create(int opcode, const void *data, size_t len);
/* A channel message: the payload with its channel key and id. */
ws_payload *ws_payload_create_keyed(int opcode, const void *data, size_t len,
                                    const char *key, size_t klen, const ws_msgid *id);
void ws_payload_release(ws_payload *p);
void ws_qmsg_free_list(ws_qmsg *m);
void ws_handle_retain(ws_handle *h);
void ws_handle_release(ws_handle *h);
/* 1 if type and data make a valid message to send (text must be UTF-8). */
int ws_valid_send_args(int type, const void *data, size_t len);
/* Queue a payload (taking a new reference) and wake the owner.  WS_SUCCESS,
 * WS_ECLOSED, WS_ENOMEM, or WS_EFULL (the session is then closed with 1008). */
int ws_handle_enqueue(ws_handle *h, ws_payload *p);
/* The plugin API's handle_send, handle_close and handle_buffered_amount. */
int ws_handle_send(ws_handle *h, int type, const void *data, size_t len, int flags);
int ws_handle_request_close(ws_handle *h, int code, const char *reason);
size_t ws_handle_buffered(ws_handle *h);
/* Any thread: count bytes of heap that will be freed on another thread (and read
 * the count); trim the heap once `threshold` bytes were counted.  The loops check
 * once a tick, with WS_TRIM_CHURN_LOOP, or WS_TRIM_CHURN_QUIET if nothing was counted
 * since the last tick; so does the end of a child's last live session (a prefork
 * child serves one session at a time: what it queued would otherwise stay with the
 * child until its next one). */
#define WS_TRIM_CHURN_LOOP (16u * 1024 * 1024)
#define WS_TRIM_CHURN_QUIET (1024u * 1024)
void ws_heap_churn_add(size_t len);
apr_uint32_t ws_heap_churn(void);
void ws_heap_trim_maybe(apr_uint32_t threshold);

/* Ask every live session of this child to close (graceful stop), and every session
 * created from now on. */
void ws_registry_close_all(int code, const char *reason);

/* ---- the owner ---- */
ws_handle *ws_handle_create(void *owner, apr_size_t max_queue);   /* registered */
void ws_handle_set_waker(ws_handle *h, ws_wake_fn wake, void *baton);
/* Take what other threads queued (and clear the pending wake-up). */
void ws_handle_take(ws_handle *h, ws_handle_work *w);
/* Bytes the owner holds unsent (counted against max_queue). */
void ws_handle_set_backlog(ws_handle *h, apr_size_t n);
/* Bytes queued and not yet taken. */
apr_size_t ws_handle_queued(ws_handle *h);
/* The session is over: sends fail from now on; unregisters; drops the owner's
 * reference. */
void ws_handle_detach(ws_handle *h);

#endif
