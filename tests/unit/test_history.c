/*
 * test_history.c - message ids and channel histories (src/ws_history.c), under
 * ASan+UBSan (make unit): id round trips and refusals, count, age and byte bounds,
 * the resume lookup (after an id, lost when dropped past it or of another epoch), and
 * that every dropped item is released exactly once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ws_history.h"

static unsigned g_pass, g_fail;
#define CHECK(c) check((c) != 0, #c, __LINE__)
static void check(int ok, const char *what, int line)
{
    if (ok) {
        g_pass++;
    }
    else {
        g_fail++;
        fprintf(stderr, "FAIL line %d: %s\n", line, what);
    }
}

static int g_released;
static void rel(void *item)
{
    g_released++;
    free(item);
}

static int parses(const char *s, ws_msgid *id)
{
    return ws_msgid_parse(s, strlen(s), id);
}

static void test_ids(void)
{
    ws_msgid id = { 1733300000123ULL, 42 }, back;
    char buf[WS_MSGID_LEN];
    CHECK(ws_msgid_format(buf, &id) == strlen("1733300000123-42"));
    CHECK(strcmp(buf, "1733300000123-42") == 0);
    CHECK(parses(buf, &back) && back.epoch == id.epoch && back.seq == 42);
    id.epoch = id.seq = UINT64_MAX;
    ws_msgid_format(buf, &id);
    CHECK(parses(buf, &back) && back.seq == UINT64_MAX);
    CHECK(!parses("18446744073709551616-1", &back));     /* 2^64 */
    CHECK(!parses("", &back));
    CHECK(!parses("12", &back));
    CHECK(!parses("1-", &back));
    CHECK(!parses("-1", &back));
    CHECK(!parses("1-2-3", &back));
    CHECK(!parses("1 -2", &back));
    CHECK(!parses("+1-2", &back));
    CHECK(!parses("a-2", &back));
    CHECK(!parses("000000000000000000001-2", &back));    /* 21 digits */
    CHECK(parses("0-0", &back) && back.epoch == 0 && back.seq == 0);
}

static void push(ws_hist *h, uint64_t epoch, uint64_t seq, int64_t t, size_t bytes)
{
    ws_msgid id = { epoch, seq };
    ws_hist_push(h, &id, t, malloc(8), bytes);
}

static void test_bounds(void)
{
    ws_hist h;
    ws_msgid after = { 7, 0 };
    int lost;
    g_released = 0;
    CHECK(ws_hist_init(&h, 3, rel) == 0);
    push(&h, 7, 1, 100, 10);
    push(&h, 7, 4, 101, 10);
    push(&h, 7, 5, 102, 10);
    CHECK(h.n == 3 && h.bytes == 30 && g_released == 0);
    CHECK(ws_hist_after(&h, &after, &lost) == 0 && !lost);
    after.seq = 1;
    CHECK(ws_hist_after(&h, &after, &lost) == 1 && !lost);
    after.seq = 2;                      /* seq 2, 3 went to other channels */
    CHECK(ws_hist_after(&h, &after, &lost) == 1 && !lost);
    after.seq = 5;
    CHECK(ws_hist_after(&h, &after, &lost) == 3 && !lost);
    push(&h, 7, 9, 103, 10);            /* count bound: seq 1 goes */
    CHECK(h.n == 3 && g_released == 1 && h.dropped.seq == 1);
    CHECK(ws_hist_at(&h, 0)->id.seq == 4 && ws_hist_at(&h, 2)->id.seq == 9);
    after.seq = 0;
    CHECK(ws_hist_after(&h, &after, &lost) == 0 && lost);
    after.seq = 1;                      /* nothing after 1 was dropped */
    CHECK(ws_hist_after(&h, &after, &lost) == 0 && !lost);
    after.epoch = 6;                    /* another epoch: everything, lost */
    CHECK(ws_hist_after(&h, &after, &lost) == 0 && lost);
    CHECK(ws_hist_trim(&h, 102, 1000) == 10 && h.n == 2 && h.dropped.seq == 4);
    CHECK(ws_hist_trim(&h, 0, 10) == 10 && h.n == 1 && ws_hist_at(&h, 0)->id.seq == 9);
    CHECK(ws_hist_trim(&h, 0, 10) == 0 && h.n == 1);
    ws_hist_clear(&h);
    CHECK(h.n == 0 && h.bytes == 0 && h.dropped.seq == 9 && g_released == 4);
    after.epoch = 7;
    after.seq = 8;
    CHECK(ws_hist_after(&h, &after, &lost) == 0 && lost);
    push(&h, 7, 10, 200, 1);
    ws_hist_free(&h);
    CHECK(g_released == 5 && h.e == NULL);
}

int main(void)
{
    test_ids();
    test_bounds();
    printf("test_history: %u passed, %u failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
