/* Unit tests of the handle queue (src/ws_handle.c) and the channel table
 * (src/ws_pubsub.c, with its history store src/ws_chanstore.c), without httpd: the
 * backplane and the status counters are stubbed. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "apr_general.h"
#include "ws_chanstore.h"
#include "ws_handle.h"
#include "ws_proto.h"
#include "ws_pubsub.h"

static int failures;
static int drops, bp_publishes, wakes;

#define CHECK(c) do { \
        if (!(c)) { \
            fprintf(stderr, "test_handle.c:%d: CHECK failed: %s\n", __LINE__, #c); \
            failures++; \
        } \
    } while (0)

/* stubs of the httpd-side services */
void ws_status_queue_drop(void) { drops++; }
int ws_bp_publish(ws_bp *bp, const char *channel, size_t channel_len, int opcode,
                  const void *data, size_t len, ws_bp_meta *meta)
{
    (void)bp; (void)channel; (void)channel_len; (void)opcode; (void)data; (void)len;
    (void)meta;
    bp_publishes++;
    return 0;
}
static uint64_t next_seq = 1;
void ws_bp_local_id(ws_bp *bp, ws_msgid *id)
{
    (void)bp;
    id->epoch = 1;
    id->seq = next_seq++;
}

static void count_wake(ws_handle *h, void *baton)
{
    (void)h;
    (*(int *)baton)++;
    wakes++;
}

static size_t take_all(ws_handle *h, ws_handle_work *w)
{
    size_t n = 0;
    ws_qmsg *m;
    ws_handle_take(h, w);
    for (m = w->list; m; m = m->next) {
        n++;
    }
    ws_qmsg_free_list(w->list);
    w->list = NULL;
    return n;
}

/* One wake-up per batch; order kept; the bound covers queued + backlog; overflow. */
static void test_queue(void)
{
    int mine = 0;
    ws_handle_work w;
    ws_handle *h = ws_handle_create((void *)1, 100);
    ws_handle_set_waker(h, count_wake, &mine);
    CHECK(ws_handle_send(h, WS_TEXT, "a", 1, 0) == WS_SUCCESS);
    CHECK(ws_handle_send(h, WS_TEXT, "bb", 2, 0) == WS_SUCCESS);
    CHECK(mine == 1);                           /* woken once until taken */
    ws_handle_take(h, &w);
    CHECK(w.list && w.list->p->len == 1 && w.list->next->p->len == 2);
    ws_qmsg_free_list(w.list);
    CHECK(ws_handle_buffered(h) == 3);          /* moved to the owner: still counted */
    ws_handle_set_backlog(h, 90);
    CHECK(ws_handle_send(h, WS_BINARY, "0123456789", 10, 0) == WS_SUCCESS);
    CHECK(mine == 2);
    CHECK(ws_handle_send(h, WS_BINARY, "x", 1, 0) == WS_EFULL);
    CHECK(drops == 1);
    CHECK(ws_handle_send(h, WS_BINARY, "x", 1, 0) == WS_ECLOSED);  /* closing */
    CHECK(take_all(h, &w) == 1 && w.overflow == 1);
    CHECK(ws_handle_send(h, WS_TEXT, "\xff", 1, 0) == WS_EINVAL);  /* not UTF-8 */
    {
        char big[101];
        memset(big, 'a', sizeof(big));
        CHECK(ws_handle_send(h, WS_TEXT, big, sizeof(big), 0) == WS_ETOOBIG);
    }
    ws_handle_detach(h);                        /* owner's reference gone: freed */
}

/* A close request is taken once; sends after the owner left fail; refs keep it. */
static void test_close_and_detach(void)
{
    int mine = 0;
    ws_handle_work w;
    ws_handle *h = ws_handle_create((void *)1, 1000);
    ws_handle_send(h, WS_TEXT, "early", 5, 0);  /* before the driver: kept */
    ws_handle_set_waker(h, count_wake, &mine);
    CHECK(mine == 1);
    CHECK(ws_handle_request_close(h, 4000, "bye") == WS_SUCCESS);
    CHECK(ws_handle_request_close(h, 4001, "again") == WS_ECLOSED);
    CHECK(take_all(h, &w) == 1 && w.close_code == 4000 && strcmp(w.close_reason, "bye") == 0);
    ws_handle_take(h, &w);
    CHECK(w.close_code == 0 && w.list == NULL);
    ws_handle_retain(h);                        /* a plugin thread's reference */
    ws_handle_detach(h);
    CHECK(ws_handle_send(h, WS_TEXT, "late", 4, 0) == WS_ECLOSED);
    CHECK(ws_handle_buffered(h) == 0);
    ws_handle_release(h);
}

/* Subscribe, deliver to the right channel only, one shared payload, unsubscribe. */
static void test_channels(void)
{
    int wa = 0, wb = 0;
    ws_sub *subs_a = NULL, *subs_b = NULL;
    ws_handle_work w;
    ws_handle *a = ws_handle_create((void *)1, 1000), *b = ws_handle_create((void *)2, 1000);
    ws_handle_set_waker(a, count_wake, &wa);
    ws_handle_set_waker(b, count_wake, &wb);
    CHECK(ws_pubsub_subscribe(&subs_a, a, "ns\0news", 7) == WS_SUCCESS);
    CHECK(ws_pubsub_subscribe(&subs_a, a, "ns\0news", 7) == WS_SUCCESS);   /* again */
    CHECK(ws_pubsub_subscribe(&subs_b, b, "ns\0news", 7) == WS_SUCCESS);
    CHECK(ws_pubsub_subscribe(&subs_b, b, "ns\0sport", 8) == WS_SUCCESS);
    CHECK(ws_pubsub_publish("ns\0news", 7, WS_TEXT, "hello", 5, WS_PUBLISH_LOCAL) == WS_SUCCESS);
    ws_handle_take(a, &w);
    CHECK(w.list && !w.list->next && memcmp(w.list->p->data, "hello", 5) == 0);
    {
        ws_handle_work wbw;
        ws_handle_take(b, &wbw);
        CHECK(wbw.list && wbw.list->p == w.list->p);   /* one copy for every subscriber */
        ws_qmsg_free_list(wbw.list);
    }
    ws_qmsg_free_list(w.list);
    ws_pubsub_publish("ns\0sport", 8, WS_TEXT, "goal", 4, WS_PUBLISH_LOCAL);
    CHECK(take_all(a, &w) == 0 && take_all(b, &w) == 1);
    ws_pubsub_unsubscribe(&subs_b, "ns\0sport", 8);
    ws_pubsub_publish("ns\0sport", 8, WS_TEXT, "goal", 4, WS_PUBLISH_LOCAL);
    CHECK(take_all(b, &w) == 0);
    CHECK(ws_pubsub_publish("ns\0news", 7, WS_TEXT, "\xff", 1, 0) == WS_EINVAL);
    ws_pubsub_unsubscribe_all(&subs_a);
    ws_pubsub_unsubscribe_all(&subs_b);
    CHECK(subs_a == NULL && subs_b == NULL);
    ws_pubsub_publish("ns\0news", 7, WS_TEXT, "nobody", 6, WS_PUBLISH_LOCAL);
    CHECK(take_all(a, &w) == 0 && take_all(b, &w) == 0);
    ws_handle_detach(a);
    ws_handle_detach(b);
}

/* Many threads send to one handle: nothing lost, each thread's order kept. */
#define SENDERS 4
#define PER_SENDER 5000
static ws_handle *shared;

static void *sender(void *arg)
{
    int id = (int)(intptr_t)arg, i;
    for (i = 0; i < PER_SENDER; i++) {
        char msg[16];
        int n = snprintf(msg, sizeof(msg), "%d:%d", id, i);
        while (ws_handle_send(shared, WS_TEXT, msg, (size_t)n, 0) != WS_SUCCESS) {
        }
    }
    return NULL;
}

static void test_threads(void)
{
    pthread_t t[SENDERS];
    int next[SENDERS] = {0}, mine = 0, i, total = 0;
    shared = ws_handle_create((void *)1, 1u << 30);
    ws_handle_set_waker(shared, count_wake, &mine);
    for (i = 0; i < SENDERS; i++) {
        pthread_create(&t[i], NULL, sender, (void *)(intptr_t)i);
    }
    while (total < SENDERS * PER_SENDER) {
        ws_handle_work w;
        ws_qmsg *m;
        ws_handle_take(shared, &w);
        for (m = w.list; m; m = m->next) {
            int id, seq;
            char buf[16];
            memcpy(buf, m->p->data, m->p->len);
            buf[m->p->len] = '\0';
            CHECK(sscanf(buf, "%d:%d", &id, &seq) == 2 && seq == next[id]);
            next[id] = seq + 1;
            total++;
        }
        ws_qmsg_free_list(w.list);
    }
    for (i = 0; i < SENDERS; i++) {
        pthread_join(t[i], NULL);
    }
    ws_handle_detach(shared);
}

int main(void)
{
    apr_pool_t *pool;
    ws_chanstore_limits limits = { 10, 0, 1 << 20, 100 };
    ws_msgid now = { 1, 0 };
    apr_initialize();
    apr_pool_create(&pool, NULL);
    ws_chanstore_configure(&limits);
    ws_chanstore_child_init(pool, &now);
    test_queue();
    test_close_and_detach();
    test_channels();
    test_threads();
    apr_pool_destroy(pool);
    apr_terminate();
    if (failures) {
        fprintf(stderr, "test_handle: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_handle: all passed (%d wake-ups)\n", wakes);
    return 0;
}
