/*
 * test_ring.c - the backplane ring (src/ws_ring.c) driven through the interleavings that
 * broke the old reader, deterministically, under ASan+UBSan (make unit):
 *
 *   - a reader more than a lap behind jumps to head and delivers nothing stale;
 *   - a writer laps the reader while it copies an entry (the test hook runs the writer
 *     between the copy and the re-validation): the copy is discarded, nothing torn is
 *     delivered and the reader resumes at an entry boundary;
 *   - an entry reserved but not yet committed reads as BUSY, never as a message;
 *   - a writer process that dies between reserve and commit (fork + _exit holding the
 *     robust mutex) leaves a torn entry that the next locker pads: readers skip and count
 *     it and go on with the next message;
 *   - forged bytes in the ring (a commit word that does not match, lengths that do not
 *     fit, bad opcodes) are never delivered;
 *   - a random mix of message sizes with a slow reader: every delivered message is intact.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ws_ring.h"

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

#define SIZE 4096

static ws_ring *new_ring(int shared)
{
    void *mem;
    if (shared) {
        mem = mmap(NULL, ws_ring_bytes(SIZE), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (mem == MAP_FAILED) {
            return NULL;
        }
    }
    else {
        mem = calloc(1, ws_ring_bytes(SIZE));
    }
    if (!mem || ws_ring_init(mem, SIZE, shared) != 0) {
        abort();
    }
    return mem;
}

static void free_ring(ws_ring *r, int shared)
{
    if (shared) {
        munmap(r, ws_ring_bytes(SIZE));
    }
    else {
        free(r);
    }
}

/* A message whose bytes say who it is: payload[i] = (seq + i) & 0xff, channel "chN". */
static int pub(ws_ring *r, unsigned seq, size_t len)
{
    unsigned char *p = malloc(len ? len : 1);
    char ch[16];
    size_t i;
    int rv;
    for (i = 0; i < len; i++) {
        p[i] = (unsigned char)(seq + i);
    }
    snprintf(ch, sizeof(ch), "ch%u", seq);
    rv = ws_ring_publish(r, ch, strlen(ch), 2, p, len);
    free(p);
    return rv;
}

/* 1 if msg is exactly what pub(seq, len) wrote, for some seq; *seq gets it. */
static int intact(const ws_ring_msg *m, unsigned *seq)
{
    char buf[16];
    size_t i;
    unsigned s;
    if (m->opcode != 2 || m->channel_len < 3 || m->channel_len >= sizeof(buf)) {
        return 0;
    }
    memcpy(buf, m->channel, m->channel_len);
    buf[m->channel_len] = '\0';
    if (sscanf(buf, "ch%u", &s) != 1) {
        return 0;
    }
    for (i = 0; i < m->len; i++) {
        if (m->data[i] != (unsigned char)(s + i)) {
            return 0;
        }
    }
    *seq = s;
    return 1;
}

static void test_basic(void)
{
    ws_ring *r = new_ring(0);
    ws_ring_reader rd;
    ws_ring_msg m;
    unsigned s = 0;
    ws_ring_reader_init(&rd, r);
    CHECK(ws_ring_read(r, &rd, &m) == WS_RING_EMPTY);
    CHECK(pub(r, 7, 100) == 0);
    CHECK(pub(r, 8, 0) == 0);
    CHECK(ws_ring_read(r, &rd, &m) == WS_RING_MSG && intact(&m, &s) && s == 7 && m.len == 100);
    CHECK(ws_ring_read(r, &rd, &m) == WS_RING_MSG && intact(&m, &s) && s == 8 && m.len == 0);
    CHECK(ws_ring_read(r, &rd, &m) == WS_RING_EMPTY);
    /* too large, bad opcode, bad channel: refused by the writer */
    CHECK(pub(r, 9, SIZE / 2) == -1);
    CHECK(ws_ring_publish(r, "c", 1, 3, "x", 1) == -1);
    CHECK(ws_ring_publish(r, "", 0, 1, "x", 1) == -1);
    CHECK(ws_ring_max_message(r) == SIZE / 2 - 24);
    CHECK(ws_ring_read(r, &rd, &m) == WS_RING_EMPTY);
    ws_ring_reader_free(&rd);
    free_ring(r, 0);
}

/* The reader is more than a lap behind before it starts reading. */
static void test_lapped_before_read(void)
{
    ws_ring *r = new_ring(0);
    ws_ring_reader rd;
    ws_ring_msg m;
    unsigned i, s = 0;
    ws_ring_reader_init(&rd, r);
    for (i = 0; i < 40; i++) {
        CHECK(pub(r, i, 200) == 0);     /* 40 * 232 bytes: more than a lap */
    }
    CHECK(ws_ring_read(r, &rd, &m) == WS_RING_EMPTY);     /* resumed at head */
    CHECK(rd.overruns == 1 && rd.lost_bytes == 40 * 232);
    CHECK(pub(r, 99, 10) == 0);
    CHECK(ws_ring_read(r, &rd, &m) == WS_RING_MSG && intact(&m, &s) && s == 99);
    ws_ring_reader_free(&rd);
    free_ring(r, 0);
}

/* The old failure: the reader, one lap behind minus a little, has checked its lag and
 * copies an entry while a publisher overwrites it. */
typedef struct lap_ctx {
    ws_ring *r;
    unsigned next;
    int fired;
} lap_ctx;

static void lap_hook(void *arg)
{
    lap_ctx *c = arg;
    int i;
    if (c->fired++) {
        return;
    }
    /* Mid-copy: publish enough to overwrite the entry being read, with lengths that
     * would send the old reader far out of its buffer. */
    for (i = 0; i < 3; i++) {
        pub(c->r, c->next++, 1500);
    }
}

static void test_lapped_during_copy(void)
{
    ws_ring *r = new_ring(0);
    ws_ring_reader rd;
    ws_ring_msg m;
    lap_ctx ctx = { r, 1000, 0 };
    unsigned i, s = 0, delivered = 0;
    int rv;
    ws_ring_reader_init(&rd, r);
    for (i = 0; i < 3; i++) {
        CHECK(pub(r, i, 1200) == 0);        /* the reader is 3 entries behind */
    }
    ws_ring_test_hook = lap_hook;
    ws_ring_test_arg = &ctx;
    while ((rv = ws_ring_read(r, &rd, &m)) == WS_RING_MSG) {
        CHECK(intact(&m, &s));
        CHECK(s >= 1000);               /* nothing from the overwritten lap */
        delivered++;
    }
    ws_ring_test_hook = NULL;
    CHECK(rv == WS_RING_EMPTY);
    CHECK(ctx.fired >= 1);
    CHECK(rd.overruns == 1);
    CHECK(delivered == 0);                  /* resumed at head after the overwrite */
    CHECK(pub(r, 5000, 33) == 0);
    CHECK(ws_ring_read(r, &rd, &m) == WS_RING_MSG && intact(&m, &s) && s == 5000);
    ws_ring_reader_free(&rd);
    free_ring(r, 0);
}

/* Reserved and half written, not committed: BUSY until the commit. */
static void test_uncommitted_is_busy(void)
{
    ws_ring *r = new_ring(0);
    ws_ring_reader rd;
    ws_ring_msg m;
    ws_ring_wr w;
    unsigned s = 0;
    unsigned char payload[64];
    ws_ring_reader_init(&rd, r);
    memset(payload, 0xff, sizeof(payload));
    CHECK(ws_ring_reserve(r, 3, 2, sizeof(payload), &w) == 0);
    CHECK(ws_ring_read(r, &rd, &m) == WS_RING_BUSY);
    ws_ring_write(r, &w, "ch5", payload);
    CHECK(ws_ring_read(r, &rd, &m) == WS_RING_BUSY);
    ws_ring_commit(r, &w);
    CHECK(ws_ring_read(r, &rd, &m) == WS_RING_MSG && m.len == 64 && m.channel_len == 3);
    (void)s;
    ws_ring_reader_free(&rd);
    free_ring(r, 0);
}

/* A writer process dies between reserve and commit, holding the lock. */
static void test_dead_writer(void)
{
    ws_ring *r = new_ring(1);
    ws_ring_reader rd;
    ws_ring_msg m;
    unsigned s = 0;
    pid_t pid;
    int st = 0;
    ws_ring_reader_init(&rd, r);
    CHECK(pub(r, 1, 10) == 0);
    pid = fork();
    if (pid == 0) {
        ws_ring_wr w;
        if (ws_ring_reserve(r, 3, 1, 300, &w) == 0) {
            /* header and channel written, payload not, never committed */
            static char half[300];
            memset(half, '.', sizeof(half));
            ws_ring_write(r, &w, "ch2", half);
        }
        _exit(0);
    }
    CHECK(pid > 0 && waitpid(pid, &st, 0) == pid);
    CHECK(ws_ring_read(r, &rd, &m) == WS_RING_MSG && intact(&m, &s) && s == 1);
    CHECK(ws_ring_read(r, &rd, &m) == WS_RING_BUSY);     /* the dead one's entry */
    ws_ring_unstick(r);                                   /* EOWNERDEAD: padded */
    CHECK(ws_ring_read(r, &rd, &m) == WS_RING_EMPTY);
    CHECK(rd.torn == 1);
    /* the next writer works, and readers go on */
    CHECK(pub(r, 3, 20) == 0);
    CHECK(ws_ring_read(r, &rd, &m) == WS_RING_MSG && intact(&m, &s) && s == 3);
    /* a dead writer found by the next writer instead of a reader */
    pid = fork();
    if (pid == 0) {
        ws_ring_wr w;
        ws_ring_reserve(r, 3, 2, 100, &w);
        _exit(0);
    }
    CHECK(pid > 0 && waitpid(pid, &st, 0) == pid);
    CHECK(pub(r, 4, 20) == 0);
    CHECK(ws_ring_read(r, &rd, &m) == WS_RING_MSG && intact(&m, &s) && s == 4);
    CHECK(rd.torn == 2);
    ws_ring_reader_free(&rd);
    free_ring(r, 1);
}

/* Forged headers at a committed position: never delivered, never out of bounds. */
static void forge(ws_ring *r, uint64_t at, uint64_t commit, uint32_t total, uint32_t chlen,
                  uint32_t len, uint32_t op)
{
    uint32_t f[4] = { total, chlen, len, op };
    memcpy(r->data + (at & (SIZE - 1)), &commit, 8);
    memcpy(r->data + ((at + 8) & (SIZE - 1)), f, sizeof(f));
}

static void test_forged(void)
{
    static const uint32_t bad[][4] = {
        { 1u << 30, 3, 1u << 29, 1 },      /* total beyond the ring */
        { 64, 3, 127512, 1 },              /* payload beyond total */
        { 64, 0xffffffffu, 8, 2 },         /* channel beyond total (and wrapping) */
        { 64, 3, 8, 3 },                   /* reserved opcode */
        { 64, 3, 8, 9 },                   /* ping */
        { 64, 0, 8, 1 },                   /* empty channel */
        { 20, 3, 0, 1 },                   /* smaller than a header */
        { 68, 3, 8, 1 },                   /* not 8-aligned */
        { 64, 3, 3, 1 },                   /* padding beyond 7 bytes */
    };
    size_t i;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ws_ring *r = new_ring(0);
        ws_ring_reader rd;
        ws_ring_msg m;
        unsigned s = 0;
        ws_ring_reader_init(&rd, r);
        forge(r, 0, 1, bad[i][0], bad[i][1], bad[i][2], bad[i][3]);
        r->head = 64;
        CHECK(ws_ring_read(r, &rd, &m) == WS_RING_EMPTY);
        CHECK(rd.invalid == 1);
        CHECK(pub(r, 77, 5) == 0);
        CHECK(ws_ring_read(r, &rd, &m) == WS_RING_MSG && intact(&m, &s) && s == 77);
        ws_ring_reader_free(&rd);
        free_ring(r, 0);
    }
    {
        /* a commit word from another position (an old lap's bytes): busy, not read */
        ws_ring *r = new_ring(0);
        ws_ring_reader rd;
        ws_ring_msg m;
        ws_ring_reader_init(&rd, r);
        forge(r, 0, 1 + SIZE, 64, 3, 8, 1);
        r->head = 64;
        CHECK(ws_ring_read(r, &rd, &m) == WS_RING_BUSY);
        ws_ring_reader_free(&rd);
        free_ring(r, 0);
    }
}

/* Random sizes, a reader that reads a few after each burst: all it gets is intact. */
static void test_random(void)
{
    ws_ring *r = new_ring(0);
    ws_ring_reader rd;
    ws_ring_msg m;
    unsigned seq = 0, s = 0, last = 0, got = 0, round;
    uint32_t x = 12345;
    ws_ring_reader_init(&rd, r);
    for (round = 0; round < 2000; round++) {
        unsigned n = (x >> 7) % 5, k;
        for (k = 0; k < n; k++) {
            x = x * 1103515245u + 12345u;
            CHECK(pub(r, ++seq, (x >> 8) % 1800) == 0);
        }
        x = x * 1103515245u + 12345u;
        for (k = (x >> 9) % 4; k > 0 && ws_ring_read(r, &rd, &m) == WS_RING_MSG; k--) {
            CHECK(intact(&m, &s) && s > last);
            last = s;
            got++;
        }
    }
    while (ws_ring_read(r, &rd, &m) == WS_RING_MSG) {
        CHECK(intact(&m, &s) && s > last);
        last = s;
        got++;
    }
    CHECK(pub(r, ++seq, 10) == 0);
    CHECK(ws_ring_read(r, &rd, &m) == WS_RING_MSG && intact(&m, &s) && s == seq);
    CHECK(got > 100 && rd.overruns > 0 && rd.invalid == 0 && rd.torn == 0);
    ws_ring_reader_free(&rd);
    free_ring(r, 0);
}

int main(void)
{
    test_basic();
    test_lapped_before_read();
    test_lapped_during_copy();
    test_uncommitted_is_busy();
    test_dead_writer();
    test_forged();
    test_random();
    printf("test_ring: %u passed, %u failed\n", g_pass, g_fail);
    return g_fail != 0;
}
