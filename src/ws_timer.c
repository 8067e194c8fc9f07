/*
 * ws_timer.c - the event loop's timer heap.  See ws_timer.h.
 */
#include <stdlib.h>

#include "ws_timer.h"

void ws_timer_heap_init(ws_timer_heap *hp)
{
    hp->v = NULL;
    hp->n = hp->cap = 0;
}

void ws_timer_heap_free(ws_timer_heap *hp)
{
    size_t i;
    for (i = 0; i < hp->n; i++) {
        hp->v[i]->slot = 0;
    }
    free(hp->v);
    ws_timer_heap_init(hp);
}

static void ws_timer_place(ws_timer_heap *hp, size_t i, ws_timer *t)
{
    hp->v[i] = t;
    t->slot = i + 1;
}

static void ws_timer_up(ws_timer_heap *hp, size_t i)
{
    ws_timer *t = hp->v[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (hp->v[parent]->at <= t->at) {
            break;
        }
        ws_timer_place(hp, i, hp->v[parent]);
        i = parent;
    }
    ws_timer_place(hp, i, t);
}

static void ws_timer_down(ws_timer_heap *hp, size_t i)
{
    ws_timer *t = hp->v[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= hp->n) {
            break;
        }
        if (child + 1 < hp->n && hp->v[child + 1]->at < hp->v[child]->at) {
            child++;
        }
        if (t->at <= hp->v[child]->at) {
            break;
        }
        ws_timer_place(hp, i, hp->v[child]);
        i = child;
    }
    ws_timer_place(hp, i, t);
}

void ws_timer_cancel(ws_timer_heap *hp, ws_timer *t)
{
    size_t i;
    ws_timer *last;
    if (!t->slot) {
        return;
    }
    i = t->slot - 1;
    t->slot = 0;
    last = hp->v[--hp->n];
    if (i == hp->n) {
        return;
    }
    ws_timer_place(hp, i, last);
    if (i > 0 && hp->v[(i - 1) / 2]->at > last->at) {
        ws_timer_up(hp, i);
    }
    else {
        ws_timer_down(hp, i);
    }
}

int ws_timer_set(ws_timer_heap *hp, ws_timer *t, int64_t at)
{
    if (t->slot) {
        int64_t old = t->at;
        t->at = at;
        if (at < old) {
            ws_timer_up(hp, t->slot - 1);
        }
        else if (at > old) {
            ws_timer_down(hp, t->slot - 1);
        }
        return 0;
    }
    if (hp->n == hp->cap) {
        size_t cap = hp->cap ? hp->cap * 2 : 64;
        ws_timer **v = realloc(hp->v, cap * sizeof(*v));
        if (!v) {
            return -1;
        }
        hp->v = v;
        hp->cap = cap;
    }
    t->at = at;
    hp->v[hp->n++] = t;
    ws_timer_up(hp, hp->n - 1);
    return 0;
}

ws_timer *ws_timer_first(const ws_timer_heap *hp)
{
    return hp->n ? hp->v[0] : NULL;
}

ws_timer *ws_timer_pop_due(ws_timer_heap *hp, int64_t now)
{
    ws_timer *t = ws_timer_first(hp);
    if (!t || t->at > now) {
        return NULL;
    }
    ws_timer_cancel(hp, t);
    return t;
}
