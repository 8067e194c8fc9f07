/* Unit tests of the event loop's timer heap (src/ws_timer.c). */
#include <stdio.h>
#include <stdlib.h>

#include "ws_timer.h"

static int failures;

#define CHECK(c) do { \
        if (!(c)) { \
            fprintf(stderr, "test_timer.c:%d: CHECK failed: %s\n", __LINE__, #c); \
            failures++; \
        } \
    } while (0)

/* Pops come out in time order, every armed timer exactly once. */
static void test_order(void)
{
    enum { N = 1000 };
    static ws_timer t[N];
    ws_timer_heap hp;
    int64_t last = -1;
    int i, popped = 0;
    ws_timer *x;
    ws_timer_heap_init(&hp);
    srand(7);
    for (i = 0; i < N; i++) {
        CHECK(ws_timer_set(&hp, &t[i], rand() % 5000) == 0);
    }
    CHECK(ws_timer_pop_due(&hp, -1) == NULL);
    while ((x = ws_timer_pop_due(&hp, 1 << 30)) != NULL) {
        CHECK(x->at >= last);
        CHECK(x->slot == 0);
        last = x->at;
        popped++;
    }
    CHECK(popped == N);
    CHECK(ws_timer_first(&hp) == NULL);
    ws_timer_heap_free(&hp);
}

/* Re-arming moves a timer both ways; cancelling removes it from anywhere. */
static void test_rearm_cancel(void)
{
    ws_timer a = {0, 0}, b = {0, 0}, c = {0, 0}, d = {0, 0};
    ws_timer_heap hp;
    ws_timer_heap_init(&hp);
    ws_timer_set(&hp, &a, 10);
    ws_timer_set(&hp, &b, 20);
    ws_timer_set(&hp, &c, 30);
    ws_timer_set(&hp, &d, 40);
    CHECK(ws_timer_first(&hp) == &a);
    ws_timer_set(&hp, &d, 5);           /* earlier */
    CHECK(ws_timer_first(&hp) == &d);
    ws_timer_set(&hp, &d, 50);          /* later */
    CHECK(ws_timer_first(&hp) == &a);
    ws_timer_cancel(&hp, &b);           /* from the middle */
    ws_timer_cancel(&hp, &b);           /* twice: no-op */
    CHECK(b.slot == 0);
    CHECK(ws_timer_pop_due(&hp, 25) == &a);
    CHECK(ws_timer_pop_due(&hp, 25) == NULL);   /* c is at 30 */
    CHECK(ws_timer_pop_due(&hp, 30) == &c);
    ws_timer_cancel(&hp, &d);           /* the last one */
    CHECK(ws_timer_first(&hp) == NULL && hp.n == 0);
    ws_timer_set(&hp, &a, 1);
    ws_timer_heap_free(&hp);            /* disarms what is left */
    CHECK(a.slot == 0);
}

/* Random arm/re-arm/cancel against a plain array model. */
static void test_model(void)
{
    enum { N = 64, STEPS = 20000 };
    static ws_timer t[N];
    static int armed[N];
    ws_timer_heap hp;
    int step, i;
    ws_timer_heap_init(&hp);
    srand(11);
    for (step = 0; step < STEPS; step++) {
        int k = rand() % N, op = rand() % 3;
        if (op < 2) {
            ws_timer_set(&hp, &t[k], rand() % 1000);
            armed[k] = 1;
        }
        else {
            ws_timer_cancel(&hp, &t[k]);
            armed[k] = 0;
        }
        if (step % 97 == 0) {
            int64_t min = -1;
            for (i = 0; i < N; i++) {
                if (armed[i] && (min < 0 || t[i].at < min)) {
                    min = t[i].at;
                }
            }
            CHECK(min < 0 ? ws_timer_first(&hp) == NULL : ws_timer_first(&hp)->at == min);
        }
    }
    ws_timer_heap_free(&hp);
}

int main(void)
{
    test_order();
    test_rearm_cancel();
    test_model();
    if (failures) {
        fprintf(stderr, "test_timer: %d failure(s)\n", failures);
        return 1;
    }
    printf("test_timer: all passed\n");
    return 0;
}
