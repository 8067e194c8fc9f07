/*
 * test_proto.c - unit tests of the RFC 6455 protocol core (ws_proto.h).
 *
 * Every parser input is fed whole, one byte at a time and in random splits (fixed
 * seeds); each chunk is copied into its own exactly-sized heap block so ASan sees any
 * over-read, and the same events (or error) must come out every time.
 * Prints "N passed, M failed" and exits non-zero on failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ws_proto.h"
#include "ws_channel.h"

/* ---- harness -------------------------------------------------------------------- */

static unsigned g_pass, g_fail;

#define CHECK(cond) check((cond) != 0, #cond, __FILE__, __LINE__, "")
#define CHECKM(cond, ...) do { char m_[160]; snprintf(m_, sizeof(m_), __VA_ARGS__); \
                               check((cond) != 0, #cond, __FILE__, __LINE__, m_); } while (0)

static void check(int ok, const char *what, const char *file, int line, const char *msg)
{
    if (ok) {
        g_pass++;
    } else {
        g_fail++;
        fprintf(stderr, "%s:%d: FAILED: %s %s\n", file, line, what, msg);
    }
}

static uint64_t g_rnd;
static void rnd_seed(uint64_t s) { g_rnd = s * 0x9E3779B97F4A7C15u + 1; }
static uint32_t rnd(void)          /* xorshift64* */
{
    g_rnd ^= g_rnd >> 12;
    g_rnd ^= g_rnd << 25;
    g_rnd ^= g_rnd >> 27;
    return (uint32_t)((g_rnd * 0x2545F4914F6CDD1Du) >> 32);
}

static const uint8_t K[4] = { 0x37, 0xfa, 0x21, 0x3d };    /* RFC 6455 5.7 key */

/* A growing byte string, for building parser input. */
typedef struct { uint8_t *b; size_t n, cap; } vec;

static void put(vec *v, const void *d, size_t n)
{
    if (v->n + n > v->cap) {
        v->cap = (v->n + n) * 2 + 64;
        v->b = realloc(v->b, v->cap);
        if (!v->b)
            abort();
    }
    if (n)
        memcpy(v->b + v->n, d, n);
    v->n += n;
}

/* Append a frame; masked with key unless key is NULL. */
static void frame(vec *v, int fin, unsigned rsv, unsigned op, const void *pl, size_t n,
                  const uint8_t *key)
{
    uint8_t h[WS_FRAME_HEADER_MAX];
    size_t at;

    put(v, h, ws_frame_header(h, fin, rsv, op, n, key));
    at = v->n;
    put(v, pl, n);
    if (key)
        ws_mask(v->b + at, n, key, 0);
}

/* ---- running the parser ----------------------------------------------------------- */

typedef struct {
    uint64_t max;
    int mask;
    unsigned rsv;
    int utf8;
} cfg;

static const cfg SERVER = { 0, 1, 0, 1 };      /* requires masked frames */
static const cfg CLIENT = { 0, 0, 0, 1 };      /* takes unmasked frames */

typedef struct {
    ws_event_type type;
    unsigned opcode;
    int compressed;
    unsigned code;
    const uint8_t *data;        /* owned copy in results, literal in expectations */
    size_t len;
} rec;

#define MAX_EV 64
typedef struct {
    rec ev[MAX_EV];
    int nev;
    int err;                    /* 0, or the error the parser returned */
    int bad;                    /* violations of the feed() contract */
} result;

#define EV(t, op, s, n) { (t), (op), 0, 0, (const uint8_t *)(s), (n) }
#define TEXT(s)   EV(WS_EV_MESSAGE, WS_OP_TEXT, s, sizeof(s) - 1)
#define BIN(s, n) EV(WS_EV_MESSAGE, WS_OP_BINARY, s, n)
#define PING(s)   EV(WS_EV_PING, WS_OP_PING, s, sizeof(s) - 1)
#define PONG(s)   EV(WS_EV_PONG, WS_OP_PONG, s, sizeof(s) - 1)
#define CLOSE(c, s) { WS_EV_CLOSE, WS_OP_CLOSE, 0, (c), (const uint8_t *)(s), sizeof(s) - 1 }

static void init_parser(ws_parser *p, const cfg *c)
{
    ws_parser_init(p, c->max, c->mask);
    p->allowed_rsv = c->rsv;
    p->validate_utf8 = c->utf8;
}

/* Feed one chunk (in its own heap block) until it is used up or an error; events are
 * copied into r.  Returns the error or 0. */
static int feed_chunk(ws_parser *p, const uint8_t *d, size_t n, result *r)
{
    uint8_t *buf = malloc(n ? n : 1);
    size_t at = 0, used;
    ws_event ev;
    int rc, err = 0;

    memcpy(buf, d, n);
    for (;;) {
        used = (size_t)-1;
        rc = ws_parser_feed(p, buf + at, n - at, &used, &ev);
        if (used > n - at) {
            r->bad++;
            break;
        }
        at += used;
        if (rc == WS_NEED_MORE) {
            if (at != n || ev.type != WS_EV_NONE)
                r->bad++;
            break;
        }
        if (rc != WS_OK) {
            err = rc;
            break;
        }
        /* an event: it used at least one byte and has data (never NULL) */
        if (used == 0 || ev.type == WS_EV_NONE || ev.data == NULL || r->nev == MAX_EV) {
            r->bad++;
            break;
        }
        {
            rec *e = &r->ev[r->nev++];
            uint8_t *copy = malloc(ev.len ? ev.len : 1);
            memcpy(copy, ev.data, ev.len);
            e->type = ev.type;
            e->opcode = ev.opcode;
            e->compressed = ev.compressed;
            e->code = ev.close_code;
            e->data = copy;
            e->len = ev.len;
        }
    }
    free(buf);
    return err;
}

/* split: 0 whole, 1 one byte at a time, else random chunks seeded with split. */
static void run(const cfg *c, const uint8_t *in, size_t len, unsigned split, result *r)
{
    ws_parser p;
    size_t off = 0, chunk;
    ws_event ev;
    uint8_t junk = 0x81;

    memset(r, 0, sizeof(*r));
    init_parser(&p, c);
    rnd_seed(split);
    while (off < len && !r->err) {
        chunk = len - off;
        if (split == 1)
            chunk = 1;
        else if (split > 1 && rnd() % 2)
            chunk = 1 + rnd() % (chunk < 9 ? chunk : 9);      /* small pieces */
        else if (split > 1)
            chunk = 1 + rnd() % chunk;
        r->err = feed_chunk(&p, in + off, chunk, r);
        off += chunk;
    }
    if (r->err) {
        /* WS_PS_FAILED is sticky */
        if (p.state != WS_PS_FAILED || ws_parser_feed(&p, &junk, 1, &chunk, &ev) != WS_ERR_PROTOCOL)
            r->bad++;
    } else if (p.state == WS_PS_CLOSED) {
        /* WS_PS_CLOSED swallows anything */
        if (ws_parser_feed(&p, &junk, 1, &chunk, &ev) != WS_NEED_MORE || chunk != 1)
            r->bad++;
    }
    ws_parser_free(&p);
}

static void free_result(result *r)
{
    int i;

    for (i = 0; i < r->nev; i++)
        free((void *)r->ev[i].data);
}

static int same_events(const result *r, const rec *exp, int nexp, int err)
{
    int i;

    if (r->bad || r->err != err || r->nev != nexp)
        return 0;
    for (i = 0; i < nexp; i++) {
        const rec *a = &r->ev[i], *b = &exp[i];
        if (a->type != b->type || a->opcode != b->opcode || a->compressed != b->compressed
            || a->code != b->code || a->len != b->len || memcmp(a->data, b->data, a->len))
            return 0;
    }
    return 1;
}

/* The core check: whole, bytewise and in random splits, in gives exactly exp then err. */
static void expect(const char *name, const cfg *c, const uint8_t *in, size_t len,
                   const rec *exp, int nexp, int err)
{
    static const unsigned splits[] = { 0, 1, 2, 3, 4, 5 };
    result r;
    size_t i;

    for (i = 0; i < sizeof(splits) / sizeof(splits[0]); i++) {
        run(c, in, len, splits[i], &r);
        CHECKM(same_events(&r, exp, nexp, err), "%s, split %u: %d events, err %d, bad %d",
               name, splits[i], r.nev, r.err, r.bad);
        free_result(&r);
    }
}

#define EXPECT(name, c, v, evs, err) \
    expect(name, c, (v)->b, (v)->n, evs, (int)(sizeof(evs) / sizeof(evs[0])), err)
#define EXPECT_NONE(name, c, v, err) expect(name, c, (v)->b, (v)->n, NULL, 0, err)

/* Feed in[0..n) whole to a fresh parser: the first error, or 0. */
static int prefix_err(const cfg *c, const uint8_t *in, size_t n)
{
    ws_parser p;
    result r;
    int err;

    memset(&r, 0, sizeof(r));
    init_parser(&p, c);
    err = feed_chunk(&p, in, n, &r);
    free_result(&r);
    ws_parser_free(&p);
    return err;
}

/* Fail fast: in[0..at) is fine, in[0..at] fails with err. */
static void fails_at(const char *name, const cfg *c, const uint8_t *in, size_t at, int err)
{
    CHECKM(prefix_err(c, in, at) == 0, "%s: prefix of %zu bytes", name, at);
    CHECKM(prefix_err(c, in, at + 1) == err, "%s: byte %zu should fail with %d", name, at, err);
}

/* ---- RFC 6455 5.7 examples ---------------------------------------------------------- */

static void test_rfc_examples(void)
{
    static const uint8_t hello[] = { 0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f };
    static const uint8_t mhello[] = { 0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f,
                                      0x4d, 0x51, 0x58 };
    static const uint8_t frag[] = { 0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f };
    static const uint8_t ping[] = { 0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f };
    static const uint8_t mpong[] = { 0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f,
                                     0x4d, 0x51, 0x58 };
    static const rec t_hello[] = { TEXT("Hello") };
    static const rec t_ping[] = { PING("Hello") };
    static const rec t_pong[] = { PONG("Hello") };
    static uint8_t big[65536];
    rec t_big[1] = { BIN(big, 256) };
    vec v = { 0 };
    size_t i;

    expect("unmasked Hello, server", &SERVER, hello, sizeof(hello), NULL, 0, WS_ERR_PROTOCOL);
    fails_at("unmasked Hello, server", &SERVER, hello, 1, WS_ERR_PROTOCOL);
    expect("unmasked Hello, client", &CLIENT, hello, sizeof(hello), t_hello, 1, 0);
    expect("masked Hello", &SERVER, mhello, sizeof(mhello), t_hello, 1, 0);
    expect("fragmented Hello", &CLIENT, frag, sizeof(frag), t_hello, 1, 0);
    expect("unmasked ping", &CLIENT, ping, sizeof(ping), t_ping, 1, 0);
    expect("masked pong", &SERVER, mpong, sizeof(mpong), t_pong, 1, 0);

    for (i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 7 + (i >> 8));
    /* 256 bytes: 16-bit length form 0x7E 0x01 0x00 */
    put(&v, "\x82\x7E\x01\x00", 4);
    put(&v, big, 256);
    EXPECT("256-byte binary", &CLIENT, &v, t_big, 0);
    v.n = 0;
    frame(&v, 1, 0, WS_OP_BINARY, big, 256, K);
    CHECK(v.n == 256 + 8 && v.b[1] == (0x80 | 126) && v.b[2] == 1 && v.b[3] == 0);
    EXPECT("256-byte binary, masked", &SERVER, &v, t_big, 0);
    /* 64 KiB: 64-bit length form 0x7F 0 0 0 0 0 1 0 0 */
    v.n = 0;
    put(&v, "\x82\x7F\x00\x00\x00\x00\x00\x01\x00\x00", 10);
    put(&v, big, sizeof(big));
    t_big[0].len = sizeof(big);
    EXPECT("64KiB binary", &CLIENT, &v, t_big, 0);
    v.n = 0;
    frame(&v, 1, 0, WS_OP_BINARY, big, sizeof(big), K);
    EXPECT("64KiB binary, masked", &SERVER, &v, t_big, 0);
    free(v.b);
}

/* The fast path hands out a pointer into the input; other paths work from the buffer. */
static void test_fast_path(void)
{
    uint8_t in[] = { 0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
                     0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58 };
    ws_parser p;
    ws_event ev;
    size_t used;
    int rc;

    ws_parser_init(&p, 0, 1);
    rc = ws_parser_feed(&p, in, sizeof(in), &used, &ev);
    CHECK(rc == WS_OK && used == 11 && ev.type == WS_EV_MESSAGE && ev.opcode == WS_OP_TEXT);
    CHECK(ev.data == in + 6 && ev.len == 5 && !memcmp(ev.data, "Hello", 5));
    CHECK(p.buf == NULL);                          /* no copy made */
    /* the second frame split: header in one call, payload in the next (still direct) */
    rc = ws_parser_feed(&p, in + 11, 6, &used, &ev);
    CHECK(rc == WS_NEED_MORE && used == 6 && ev.type == WS_EV_NONE);
    rc = ws_parser_feed(&p, in + 17, 5, &used, &ev);
    CHECK(rc == WS_OK && used == 5 && ev.data == in + 17 && !memcmp(ev.data, "Hello", 5));
    CHECK(p.buf == NULL);
    ws_parser_free(&p);
}

/* Several frames in one stream, controls between fragments, then close. */
static void test_streams(void)
{
    static const rec exp[] = {
        TEXT("Hello"), PING("p1"), PONG(""), BIN("\x00\x01\x02", 3), PING(""),
        TEXT("fragmented message"), TEXT(""), BIN("", 0), CLOSE(1000, "bye")
    };
    static const rec after_close[] = { CLOSE(1001, "") };
    static const uint8_t K2[4] = { 0, 0, 0, 0 }, K3[4] = { 0xff, 0x00, 0xa5, 0x5a };
    static const char junk[] = "\xff\xff garbage after close is ignored";
    vec v = { 0 };

    frame(&v, 1, 0, WS_OP_TEXT, "Hello", 5, K);
    frame(&v, 1, 0, WS_OP_PING, "p1", 2, K3);
    frame(&v, 0, 0, WS_OP_BINARY, "\x00", 1, K);
    frame(&v, 0, 0, WS_OP_CONT, "", 0, K2);
    frame(&v, 1, 0, WS_OP_PONG, "", 0, K);
    frame(&v, 1, 0, WS_OP_CONT, "\x01\x02", 2, K3);
    frame(&v, 1, 0, WS_OP_PING, "", 0, K);
    frame(&v, 0, 0, WS_OP_TEXT, "frag", 4, K);
    frame(&v, 0, 0, WS_OP_CONT, "mented ", 7, K3);
    frame(&v, 1, 0, WS_OP_CONT, "message", 7, K);
    frame(&v, 1, 0, WS_OP_TEXT, "", 0, K);               /* empty messages */
    frame(&v, 0, 0, WS_OP_BINARY, "", 0, K);
    frame(&v, 1, 0, WS_OP_CONT, "", 0, K);
    frame(&v, 1, 0, WS_OP_CLOSE, "\x03\xe8" "bye", 5, K3);
    put(&v, junk, sizeof(junk) - 1);                     /* RFC 6455 5.5.1 */
    EXPECT("stream", &SERVER, &v, exp, 0);

    v.n = 0;
    frame(&v, 1, 0, WS_OP_CLOSE, "\x03\xe9", 2, NULL);
    frame(&v, 1, 0, WS_OP_TEXT, "x", 1, NULL);
    EXPECT("close then more frames", &CLIENT, &v, after_close, 0);
    free(v.b);
}

/* ---- protocol errors --------------------------------------------------------------- */

static void test_protocol_errors(void)
{
    static const cfg DEFLATE = { 0, 1, WS_RSV1, 1 };
    static const rec compressed[] = { { WS_EV_MESSAGE, WS_OP_TEXT, 1, 0,
                                        (const uint8_t *)"\xff\xfe", 2 } };
    static uint8_t zeros[65536];
    rec big[1] = { BIN(zeros, 65536) };
    uint8_t h[16];
    vec v = { 0 };
    unsigned op;
    char name[64];

    /* RFC 6455 5.2: RSV bits without an extension */
    h[0] = 0x81 | WS_RSV1; h[1] = 0x80;
    fails_at("RSV1 not negotiated", &SERVER, h, 1, WS_ERR_PROTOCOL);
    h[0] = 0x81 | WS_RSV2;
    fails_at("RSV2", &SERVER, h, 1, WS_ERR_PROTOCOL);
    h[0] = 0x81 | WS_RSV3;
    fails_at("RSV3", &SERVER, h, 1, WS_ERR_PROTOCOL);
    h[0] = 0x81 | WS_RSV2;
    fails_at("RSV2 with only RSV1 allowed", &DEFLATE, h, 1, WS_ERR_PROTOCOL);

    /* RFC 7692 6.1: RSV1 on the first data frame only; compressed text is not checked */
    frame(&v, 0, WS_RSV1, WS_OP_TEXT, "\xff", 1, K);
    frame(&v, 1, 0, WS_OP_PING, "", 0, K);
    frame(&v, 1, 0, WS_OP_CONT, "\xfe", 1, K);
    {
        static const rec exp[] = { PING(""), { WS_EV_MESSAGE, WS_OP_TEXT, 1, 0,
                                               (const uint8_t *)"\xff\xfe", 2 } };
        EXPECT("compressed fragmented text", &DEFLATE, &v, exp, 0);
    }
    v.n = 0;
    frame(&v, 1, WS_RSV1, WS_OP_TEXT, "\xff\xfe", 2, K);
    EXPECT("compressed text", &DEFLATE, &v, compressed, 0);
    v.n = 0;
    frame(&v, 0, WS_RSV1, WS_OP_TEXT, "a", 1, K);
    frame(&v, 1, WS_RSV1, WS_OP_CONT, "b", 1, K);
    fails_at("RSV1 on continuation", &DEFLATE, v.b, 8, WS_ERR_PROTOCOL);
    v.n = 0;
    frame(&v, 1, WS_RSV1, WS_OP_PING, "", 0, K);
    fails_at("RSV1 on ping", &DEFLATE, v.b, 1, WS_ERR_PROTOCOL);

    /* RFC 6455 5.2: reserved opcodes */
    for (op = 3; op <= 0xF; op++) {
        if (op >= WS_OP_CLOSE && op <= WS_OP_PONG)
            continue;
        h[0] = (uint8_t)(0x80 | op); h[1] = 0x80;
        snprintf(name, sizeof(name), "reserved opcode %#x", op);
        fails_at(name, &SERVER, h, 1, WS_ERR_PROTOCOL);
        fails_at(name, &CLIENT, h, 1, WS_ERR_PROTOCOL);
    }

    /* RFC 6455 5.5: control frames not fragmented, <= 125 bytes */
    h[0] = WS_OP_PING; h[1] = 0x80;
    fails_at("fragmented ping", &SERVER, h, 1, WS_ERR_PROTOCOL);
    h[0] = 0x80 | WS_OP_CLOSE; h[1] = 0x80 | 126;
    fails_at("close with 16-bit length", &SERVER, h, 1, WS_ERR_PROTOCOL);
    h[0] = 0x80 | WS_OP_PONG; h[1] = 0x80 | 127;
    fails_at("pong with 64-bit length", &SERVER, h, 1, WS_ERR_PROTOCOL);
    {
        static uint8_t pl[125];
        rec exp[1] = { EV(WS_EV_PING, WS_OP_PING, pl, 125) };
        v.n = 0;
        frame(&v, 1, 0, WS_OP_PING, pl, 125, K);
        EXPECT("125-byte ping", &SERVER, &v, exp, 0);
    }

    /* RFC 6455 5.4: fragmentation rules */
    v.n = 0;
    frame(&v, 1, 0, WS_OP_CONT, "x", 1, K);
    fails_at("continuation without a message", &SERVER, v.b, 1, WS_ERR_PROTOCOL);
    v.n = 0;
    frame(&v, 1, 0, WS_OP_TEXT, "a", 1, K);
    frame(&v, 1, 0, WS_OP_CONT, "x", 1, K);
    fails_at("continuation after a whole message", &SERVER, v.b, 8, WS_ERR_PROTOCOL);
    v.n = 0;
    frame(&v, 0, 0, WS_OP_TEXT, "a", 1, K);
    frame(&v, 1, 0, WS_OP_TEXT, "b", 1, K);
    fails_at("text inside a fragmented message", &SERVER, v.b, 8, WS_ERR_PROTOCOL);
    v.n = 0;
    frame(&v, 0, 0, WS_OP_BINARY, "a", 1, K);
    frame(&v, 1, 0, WS_OP_PING, "", 0, K);
    frame(&v, 1, 0, WS_OP_BINARY, "b", 1, K);
    fails_at("binary inside a fragmented message", &SERVER, v.b, 14, WS_ERR_PROTOCOL);
    {
        static const rec exp[] = { PING("") };
        EXPECT("binary inside a fragmented message", &SERVER, &v, exp, WS_ERR_PROTOCOL);
    }

    /* RFC 6455 5.2: 64-bit length with the top bit set, checked before the mask key */
    memcpy(h, "\x82\xff\x80\x00\x00\x00\x00\x00\x00\x00", 10);
    fails_at("64-bit length top bit", &SERVER, h, 9, WS_ERR_PROTOCOL);
    {
        static const cfg limited = { 1000, 1, 0, 1 };
        fails_at("64-bit length top bit, limited", &limited, h, 9, WS_ERR_PROTOCOL);
    }

    /* RFC 6455 5.2: minimal length encoding */
    memcpy(h, "\x82\xfe\x00\x7d", 4);
    fails_at("16-bit form for 125", &SERVER, h, 3, WS_ERR_PROTOCOL);
    memcpy(h, "\x82\xfe\x00\x00", 4);
    fails_at("16-bit form for 0", &SERVER, h, 3, WS_ERR_PROTOCOL);
    memcpy(h, "\x82\x7e\x00\x7e", 4);
    v.n = 0;
    put(&v, h, 4);
    put(&v, zeros, 126);
    {
        rec exp[1] = { BIN(zeros, 126) };
        EXPECT("16-bit form for 126", &CLIENT, &v, exp, 0);
    }
    memcpy(h, "\x82\xff\x00\x00\x00\x00\x00\x00\xff\xff", 10);
    fails_at("64-bit form for 65535", &SERVER, h, 9, WS_ERR_PROTOCOL);
    memcpy(h, "\x82\xff\x00\x00\x00\x00\x00\x00\x00\x7d", 10);
    fails_at("64-bit form for 125", &SERVER, h, 9, WS_ERR_PROTOCOL);
    v.n = 0;
    put(&v, "\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 10);
    put(&v, zeros, 65536);
    EXPECT("64-bit form for 65536", &CLIENT, &v, big, 0);

    /* RFC 6455 5.1: a server needs masked frames, also on continuations and controls */
    v.n = 0;
    frame(&v, 0, 0, WS_OP_TEXT, "a", 1, K);
    frame(&v, 1, 0, WS_OP_PING, "", 0, NULL);
    fails_at("unmasked ping", &SERVER, v.b, 8, WS_ERR_PROTOCOL);
    v.n = 0;
    frame(&v, 0, 0, WS_OP_TEXT, "a", 1, K);
    frame(&v, 1, 0, WS_OP_CONT, "", 0, NULL);
    fails_at("unmasked continuation", &SERVER, v.b, 8, WS_ERR_PROTOCOL);
    free(v.b);
}

/* ---- UTF-8 ------------------------------------------------------------------------- */

/* Reference: the set of byte strings that begin the encoding of some Unicode scalar
 * value, built by encoding every scalar value with a naive encoder. */
static uint8_t pre1[256], pre2[1 << 16 >> 3], pre3[1 << 24 >> 3], lead_len[256];

static int enc(uint32_t cp, uint8_t *o)
{
    if (cp < 0x80) { o[0] = (uint8_t)cp; return 1; }
    if (cp < 0x800) { o[0] = (uint8_t)(0xC0 | cp >> 6); o[1] = (uint8_t)(0x80 | (cp & 63)); return 2; }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xE0 | cp >> 12); o[1] = (uint8_t)(0x80 | (cp >> 6 & 63));
        o[2] = (uint8_t)(0x80 | (cp & 63));
        return 3;
    }
    o[0] = (uint8_t)(0xF0 | cp >> 18); o[1] = (uint8_t)(0x80 | (cp >> 12 & 63));
    o[2] = (uint8_t)(0x80 | (cp >> 6 & 63)); o[3] = (uint8_t)(0x80 | (cp & 63));
    return 4;
}

#define BIT(set, i) ((set)[(i) >> 3] >> ((i) & 7) & 1)
#define SETBIT(set, i) ((set)[(i) >> 3] |= (uint8_t)(1 << ((i) & 7)))

static void ref_init(void)
{
    uint32_t cp;
    uint8_t o[4];
    int n;

    for (cp = 0; cp <= 0x10FFFF; cp++) {
        if (cp >= 0xD800 && cp <= 0xDFFF)
            continue;
        n = enc(cp, o);
        pre1[o[0]] = 1;
        lead_len[o[0]] = (uint8_t)n;
        if (n >= 2)
            SETBIT(pre2, (uint32_t)o[0] << 8 | o[1]);
        if (n >= 3)
            SETBIT(pre3, (uint32_t)o[0] << 16 | (uint32_t)o[1] << 8 | o[2]);
    }
}

/* Does s[0..k) (k <= lead_len) begin a scalar value's encoding? */
static int ref_prefix(const uint8_t *s, size_t k)
{
    uint8_t o[4];
    uint32_t cp;

    if (k == 1) return pre1[s[0]];
    if (k == 2) return BIT(pre2, (uint32_t)s[0] << 8 | s[1]);
    if (k == 3) return BIT(pre3, (uint32_t)s[0] << 16 | (uint32_t)s[1] << 8 | s[2]);
    /* a whole 4-byte form: decode naively and see that it encodes back the same */
    cp = (uint32_t)(s[0] & 7) << 18 | (uint32_t)(s[1] & 63) << 12 | (uint32_t)(s[2] & 63) << 6
         | (s[3] & 63);
    return cp <= 0x10FFFF && enc(cp, o) == 4 && !memcmp(o, s, 4);
}

/* Index of the first byte after which s cannot be a prefix of valid UTF-8, or n;
 * *complete: s ends on a character boundary. */
static size_t ref_check(const uint8_t *s, size_t n, int *complete)
{
    size_t i = 0, k, L;

    *complete = 1;
    while (i < n) {
        L = lead_len[s[i]];
        if (!L)
            return i;
        for (k = 2; k <= L; k++) {
            if (i + k > n) {
                *complete = 0;
                return n;
            }
            if (!ref_prefix(s + i, k))
                return i + k - 1;
        }
        i += L;
    }
    return n;
}

/* Implementation: the first failing index by feeding bytewise; also whole-feed result. */
static size_t impl_check(const uint8_t *s, size_t n, int *complete, int *whole_ok)
{
    ws_utf8 v;
    size_t i;

    *whole_ok = ws_utf8_valid(s, n);
    ws_utf8_init(&v);
    for (i = 0; i < n; i++)
        if (ws_utf8_feed(&v, s + i, 1) != WS_OK)
            break;
    *complete = ws_utf8_complete(&v);
    if (i < n && ws_utf8_feed(&v, (const uint8_t *)"a", 1) == WS_OK)
        return (size_t)-1;                      /* errors must stay */
    return i;
}

static int agree(const uint8_t *s, size_t n)
{
    int rc, ic, whole;
    size_t r = ref_check(s, n, &rc), i = impl_check(s, n, &ic, &whole);
    ws_utf8 v;

    if (r != i || whole != (r == n && rc) || (r == n && rc != ic))
        return 0;
    /* fail fast with the fast path in use: the prefix up to the bad byte, fed whole */
    if (r < n) {
        ws_utf8_init(&v);
        if (ws_utf8_feed(&v, s, r) != WS_OK)
            return 0;
        ws_utf8_init(&v);
        if (ws_utf8_feed(&v, s, r + 1) != WS_ERR_UTF8)
            return 0;
    }
    return 1;
}

static void test_utf8_table(void)
{
    static const struct { const char *s; int bad; int complete; } t[] = {
        /* valid, boundaries of each length class */
        { "", -1, 1 }, { "abc", -1, 1 }, { "\xc2\x80", -1, 1 }, { "\xdf\xbf", -1, 1 },
        { "\xe0\xa0\x80", -1, 1 }, { "\xed\x9f\xbf", -1, 1 }, { "\xee\x80\x80", -1, 1 },
        { "\xef\xbf\xbf", -1, 1 }, { "\xf0\x90\x80\x80", -1, 1 }, { "\xf4\x8f\xbf\xbf", -1, 1 },
        { "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", -1, 1 },     /* "kosme" */
        /* incomplete but still possible */
        { "\xe2\x82", -1, 0 }, { "\xf0\x9f\x98", -1, 0 }, { "a\xc3", -1, 0 },
        /* stray continuation bytes */
        { "\x80", 0, 0 }, { "\xbf", 0, 0 }, { "a\x80", 1, 0 }, { "\xc3\xa9\xa9", 2, 0 },
        /* bytes that never appear */
        { "\xc0\x80", 0, 0 }, { "\xc1\xbf", 0, 0 }, { "\xf5\x80\x80\x80", 0, 0 },
        { "\xf8", 0, 0 }, { "\xfe", 0, 0 }, { "\xff", 0, 0 },
        /* overlong forms, rejected at the second byte */
        { "\xe0\x80\x80", 1, 0 }, { "\xe0\x9f\xbf", 1, 0 }, { "\xf0\x80\x80\x80", 1, 0 },
        { "\xf0\x8f\xbf\xbf", 1, 0 },
        /* surrogates */
        { "\xed\xa0\x80", 1, 0 }, { "\xed\xbf\xbf", 1, 0 }, { "ab\xed\xb0\x80", 3, 0 },
        /* above U+10FFFF */
        { "\xf4\x90\x80\x80", 1, 0 }, { "\xf4\xbf\xbf\xbf", 1, 0 },
        /* sequences cut short by a non-continuation byte */
        { "\xc3" "A", 1, 0 }, { "\xe2\x82" "A", 2, 0 }, { "\xf0\x9f\x98" "A", 3, 0 },
        { "\xe2\xc3\xa9", 1, 0 },
    };
    size_t i, n, at;
    ws_utf8 v;

    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        const uint8_t *s = (const uint8_t *)t[i].s;
        n = strlen(t[i].s);
        at = t[i].bad < 0 ? n : (size_t)t[i].bad;
        ws_utf8_init(&v);
        CHECKM(ws_utf8_feed(&v, s, at) == WS_OK, "utf8 case %zu: prefix", i);
        if (t[i].bad < 0) {
            CHECKM(ws_utf8_complete(&v) == t[i].complete, "utf8 case %zu: complete", i);
            CHECKM(ws_utf8_valid(s, n) == t[i].complete, "utf8 case %zu: valid", i);
        } else {
            /* fail fast: exactly at the bad byte, fed whole or as one more byte */
            CHECKM(ws_utf8_feed(&v, s + at, 1) == WS_ERR_UTF8, "utf8 case %zu: byte %zu", i, at);
            ws_utf8_init(&v);
            CHECKM(ws_utf8_feed(&v, s, at + 1) == WS_ERR_UTF8, "utf8 case %zu: whole", i);
            CHECKM(!ws_utf8_valid(s, n), "utf8 case %zu: valid", i);
        }
        CHECKM(agree(s, n), "utf8 case %zu: reference", i);
    }
}

static void test_utf8_exhaustive(void)
{
    static const uint8_t alphabet[] = {
        'a', 'z', 0x00, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2,
        0xDF, 0xE0, 0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF
    };
    uint8_t s[48];
    unsigned bad = 0, a, b, c, it;
    size_t n, i;

    /* every 1- and 2-byte string, and every 3-byte string that starts with a non-ASCII byte */
    for (a = 0; a < 256; a++) {
        s[0] = (uint8_t)a;
        bad += !agree(s, 1);
        for (b = 0; b < 256; b++) {
            s[1] = (uint8_t)b;
            bad += !agree(s, 2);
            if (a < 0x80)
                continue;
            for (c = 0; c < 256; c++) {
                s[2] = (uint8_t)c;
                bad += !agree(s, 3);
            }
        }
    }
    CHECKM(bad == 0, "%u short strings disagree with the reference", bad);

    /* random strings over the interesting bytes, mostly ASCII, misaligned: the 8-byte
     * fast path must stop at the right place */
    bad = 0;
    rnd_seed(42);
    for (it = 0; it < 300000; it++) {
        n = rnd() % 40;
        for (i = 0; i < n; i++)
            s[1 + i] = rnd() % 4 ? (uint8_t)('a' + rnd() % 26)
                                 : alphabet[rnd() % sizeof(alphabet)];
        bad += !agree(s + 1, n);
    }
    CHECKM(bad == 0, "%u random strings disagree with the reference", bad);
}

/* UTF-8 in the parser: across fragments and feeds, fail fast, binary not checked. */
static void test_utf8_parser(void)
{
    static const rec euro[] = { PING("!"), TEXT("\xe2\x82\xac x \xf0\x9f\x98\x80") };
    static const rec bin[] = { BIN("\xff", 1) };
    static const cfg noutf8 = { 0, 1, 0, 0 };
    static const rec raw[] = { TEXT("\xed\xa0\x80") };
    static const rec empty_end[] = { TEXT("ab") };
    uint8_t big[300];
    vec v = { 0 };

    /* a multi-byte character split over three fragments, with a ping in between */
    frame(&v, 0, 0, WS_OP_TEXT, "\xe2", 1, K);
    frame(&v, 0, 0, WS_OP_CONT, "\x82", 1, K);
    frame(&v, 1, 0, WS_OP_PING, "!", 1, K);
    frame(&v, 0, 0, WS_OP_CONT, "\xac x \xf0\x9f", 6, K);
    frame(&v, 1, 0, WS_OP_CONT, "\x98\x80", 2, K);
    EXPECT("UTF-8 across fragments", &SERVER, &v, euro, 0);

    /* a zero-length final fragment completes the message */
    v.n = 0;
    frame(&v, 0, 0, WS_OP_TEXT, "ab", 2, K);
    frame(&v, 1, 0, WS_OP_CONT, "", 0, K);
    EXPECT("empty final fragment", &SERVER, &v, empty_end, 0);

    /* ending inside a character: error at the end of the message */
    v.n = 0;
    frame(&v, 0, 0, WS_OP_TEXT, "a\xe2\x82", 3, K);
    frame(&v, 1, 0, WS_OP_CONT, "", 0, K);
    EXPECT_NONE("text ends mid-character", &SERVER, &v, WS_ERR_UTF8);
    fails_at("text ends mid-character", &SERVER, v.b, v.n - 1, WS_ERR_UTF8);
    v.n = 0;
    frame(&v, 1, 0, WS_OP_TEXT, "\xf0\x9f\x98", 3, K);
    fails_at("single frame ends mid-character", &SERVER, v.b, v.n - 1, WS_ERR_UTF8);

    /* invalid sequence spanning fragments: fails at its bad byte in the second frame */
    v.n = 0;
    frame(&v, 0, 0, WS_OP_TEXT, "\xed", 1, K);
    frame(&v, 1, 0, WS_OP_CONT, "\xa0\x80", 2, K);
    fails_at("surrogate across fragments", &SERVER, v.b, 7 + 6, WS_ERR_UTF8);
    EXPECT_NONE("surrogate across fragments", &SERVER, &v, WS_ERR_UTF8);
    /* same bytes with validation off, and as binary */
    EXPECT("validation off", &noutf8, &v, raw, 0);
    v.n = 0;
    frame(&v, 1, 0, WS_OP_BINARY, "\xff", 1, K);
    EXPECT("binary is not UTF-8 checked", &SERVER, &v, bin, 0);

    /* fail fast mid-frame: a 300-byte frame with a bad byte at 200 fails at that byte */
    memset(big, 'x', sizeof(big));
    big[199] = 0xf4;
    big[200] = 0x90;
    v.n = 0;
    frame(&v, 1, 0, WS_OP_TEXT, big, sizeof(big), K);
    fails_at("bad byte mid-frame", &SERVER, v.b, 8 + 200, WS_ERR_UTF8);
    EXPECT_NONE("bad byte mid-frame", &SERVER, &v, WS_ERR_UTF8);
    free(v.b);
}

/* ---- close frames ----------------------------------------------------------------- */

static void test_close(void)
{
    static const unsigned bad_codes[] = { 0, 1, 999, 1004, 1005, 1006, 1015, 1016, 2000,
                                          2999, 5000, 65535 };
    static const unsigned good_codes[] = { 1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010,
                                           1011, 1012, 1013, 1014, 3000, 4000, 4999 };
    uint8_t pl[125], out[125];
    unsigned code;
    const char *reason;
    size_t rlen, i, n;
    vec v = { 0 };
    char name[64];

    for (i = 0; i < sizeof(bad_codes) / sizeof(bad_codes[0]); i++)
        CHECKM(!ws_close_code_valid(bad_codes[i]), "code %u", bad_codes[i]);
    for (i = 0; i < sizeof(good_codes) / sizeof(good_codes[0]); i++)
        CHECKM(ws_close_code_valid(good_codes[i]), "code %u", good_codes[i]);

    /* ws_close_parse */
    CHECK(ws_close_parse(pl, 0, &code, &reason, &rlen) == WS_OK && code == 1005 && rlen == 0);
    CHECK(ws_close_parse((const uint8_t *)"\x03", 1, &code, &reason, &rlen) == WS_ERR_PROTOCOL);
    CHECK(ws_close_parse((const uint8_t *)"\x03\xe8", 2, &code, &reason, &rlen) == WS_OK
          && code == 1000 && rlen == 0);
    CHECK(ws_close_parse((const uint8_t *)"\x03\xe8" "done \xc3\xa9", 9, &code, &reason, &rlen)
          == WS_OK && code == 1000 && rlen == 7 && !memcmp(reason, "done \xc3\xa9", 7));
    CHECK(ws_close_parse((const uint8_t *)"\x03\xe8\xc3", 3, &code, &reason, &rlen)
          == WS_ERR_UTF8);
    CHECK(ws_close_parse((const uint8_t *)"\x03\xe8" "a\xed\xa0\x80", 6, &code, &reason, &rlen)
          == WS_ERR_UTF8);
    for (i = 0; i < sizeof(bad_codes) / sizeof(bad_codes[0]); i++) {
        pl[0] = (uint8_t)(bad_codes[i] >> 8);
        pl[1] = (uint8_t)bad_codes[i];
        CHECKM(ws_close_parse(pl, 2, &code, &reason, &rlen) == WS_ERR_PROTOCOL,
               "parse code %u", bad_codes[i]);
    }
    for (i = 0; i < sizeof(good_codes) / sizeof(good_codes[0]); i++) {
        pl[0] = (uint8_t)(good_codes[i] >> 8);
        pl[1] = (uint8_t)good_codes[i];
        CHECKM(ws_close_parse(pl, 2, &code, &reason, &rlen) == WS_OK && code == good_codes[i],
               "parse code %u", good_codes[i]);
    }

    /* through the parser */
    {
        static const rec none[] = { CLOSE(1005, "") };
        static const rec one[] = { CLOSE(1000, "") };
        static const rec why[] = { CLOSE(4999, "going \xe2\x82\xac") };
        frame(&v, 1, 0, WS_OP_CLOSE, "", 0, K);
        EXPECT("close, empty", &SERVER, &v, none, 0);
        v.n = 0;
        frame(&v, 1, 0, WS_OP_CLOSE, "\x03\xe8", 2, K);
        EXPECT("close 1000", &SERVER, &v, one, 0);
        v.n = 0;
        frame(&v, 0, 0, WS_OP_BINARY, "x", 1, K);               /* inside a message */
        frame(&v, 1, 0, WS_OP_CLOSE, "\x13\x87going \xe2\x82\xac", 11, K);
        EXPECT("close 4999 with reason", &SERVER, &v, why, 0);
        v.n = 0;
        frame(&v, 1, 0, WS_OP_CLOSE, "\x03", 1, K);
        EXPECT_NONE("close, 1 byte", &SERVER, &v, WS_ERR_PROTOCOL);
        v.n = 0;
        frame(&v, 1, 0, WS_OP_CLOSE, "\x03\xed", 2, K);         /* 1005 on the wire */
        EXPECT_NONE("close 1005", &SERVER, &v, WS_ERR_PROTOCOL);
        v.n = 0;
        frame(&v, 1, 0, WS_OP_CLOSE, "\x03\xe8\xff", 3, K);
        EXPECT_NONE("close, bad reason", &SERVER, &v, WS_ERR_UTF8);
    }

    /* ws_close_build: truncation at a character boundary */
    {
        static const struct { const char *ch; size_t keep; } t[] = {
            { "a", 123 }, { "\xc3\xa9", 122 }, { "\xe2\x82\xac", 123 },
            { "\xf0\x9f\x98\x80", 120 },
        };
        char r[300];
        for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
            size_t cl = strlen(t[i].ch);
            for (n = 0; n + cl <= sizeof(r); n += cl)
                memcpy(r + n, t[i].ch, cl);
            rlen = ws_close_build(out, WS_CLOSE_GOING_AWAY, r, n);
            snprintf(name, sizeof(name), "build with %zu-byte characters", cl);
            CHECKM(rlen == 2 + t[i].keep && out[0] == 0x03 && out[1] == 0xe9
                   && !memcmp(out + 2, r, t[i].keep), "%s: %zu", name, rlen);
            CHECKM(ws_close_parse(out, rlen, &code, &reason, &rlen) == WS_OK && code == 1001,
                   "%s: parses back", name);
        }
        /* one byte over the limit, with the cut falling right after a whole character */
        memset(r, 'a', 123);
        memcpy(r + 123, "\xc3\xa9", 2);
        CHECK(ws_close_build(out, 1000, r, 125) == 125);
        memcpy(r + 122, "\xc3\xa9", 2);
        CHECK(ws_close_build(out, 1000, r, 124) == 124 && out[123] == 'a');
        CHECK(ws_close_build(out, 1000, "bye", 3) == 5 && !memcmp(out, "\x03\xe8" "bye", 5));
        CHECK(ws_close_build(out, 1000, NULL, 0) == 2);
        CHECK(ws_close_build(out, 0, "x", 1) == 0);
        CHECK(ws_close_build(out, WS_CLOSE_NO_STATUS, "x", 1) == 0);
    }

    /* ws_close_reason_cut: the one cut every path uses (handle_close stored 123 bytes
     * of "aa\xc3\xa9..." as "...aa\xc3" before) */
    {
        char r[300];
        size_t k;
        for (k = 0; k + 2 <= 200; k += 2)
            memcpy(r + k, "\xc3\xa9", 2);
        CHECK(ws_close_reason_cut(r, 200, 123) == 122);
        CHECK(ws_utf8_valid((const uint8_t *)r, ws_close_reason_cut(r, 200, 123)));
        CHECK(ws_close_reason_cut(r, 200, WS_CLOSE_REASON_MAX) == 122);
        CHECK(ws_close_reason_cut(r, 100, 123) == 100);
        for (k = 0; k + 4 <= 200; k += 4)
            memcpy(r + k, "\xf0\x9f\x98\x80", 4);
        for (k = 0; k <= 130; k++)
            CHECK(ws_close_reason_cut(r, 200, k) == k / 4 * 4);
        CHECK(ws_close_reason_cut("abc", 3, 0) == 0);
    }
    free(v.b);
}

/* ---- channel names and backplane messages (ws_channel.c) --------------------------- */

static void test_channels(void)
{
    char key[WS_CHANNEL_KEY_MAX + 1], name[WS_CHANNEL_NAME_MAX + 2];
    memset(name, 'n', sizeof(name));
    name[WS_CHANNEL_NAME_MAX] = '\0';
    CHECK(ws_channel_name_valid("chat:lobby", 10));
    CHECK(ws_channel_name_valid(name, WS_CHANNEL_NAME_MAX));
    CHECK(!ws_channel_name_valid(name, WS_CHANNEL_NAME_MAX + 1));
    CHECK(!ws_channel_name_valid("", 0));
    CHECK(!ws_channel_name_valid("a\x1f" "b", 3));
    CHECK(!ws_channel_name_valid("a\nb", 3));
    CHECK(!ws_channel_name_valid("a\x7f", 2));
    CHECK(!ws_channel_name_valid("a\xc2\x85", 3));        /* NEL (C1) */
    CHECK(!ws_channel_name_valid("a\xc3", 2));            /* not UTF-8 */
    CHECK(ws_channel_name_valid("caf\xc3\xa9", 5));
    CHECK(ws_channel_key(key, NULL, "x") == 1 && strcmp(key, "x") == 0);
    CHECK(ws_channel_key(key, "host/chat", "chat:lobby") == 20
          && memcmp(key, "host/chat\x1f" "chat:lobby", 20) == 0);
    CHECK(ws_channel_key_valid(key, 20));
    CHECK(ws_channel_key(key, "a\x1f" "b", "x") == 0);
    CHECK(ws_channel_key(key, "", "x") == 0);
    CHECK(ws_channel_key(key, "ns", "a\x1f" "b") == 0);
    CHECK(ws_channel_key(key, "ns", name) == 3 + WS_CHANNEL_NAME_MAX);
    CHECK(!ws_channel_key_valid("\x1f" "x", 2));
    CHECK(!ws_channel_key_valid("ns\x1f", 3));
    CHECK(!ws_channel_key_valid("ns\x1f" "a\x1f" "b", 6));
    CHECK(ws_channel_message_valid(WS_OP_TEXT, (const uint8_t *)"hi", 2, 10));
    CHECK(ws_channel_message_valid(WS_OP_BINARY, (const uint8_t *)"\xff", 1, 10));
    CHECK(ws_channel_message_valid(WS_OP_TEXT, NULL, 0, 10));
    CHECK(!ws_channel_message_valid(WS_OP_TEXT, (const uint8_t *)"\xff", 1, 10));
    CHECK(!ws_channel_message_valid(WS_OP_TEXT, (const uint8_t *)"aa\xc3", 3, 10));
    CHECK(!ws_channel_message_valid(WS_OP_PING, (const uint8_t *)"x", 1, 10));
    CHECK(!ws_channel_message_valid(WS_OP_CLOSE, (const uint8_t *)"\x03\xe8", 2, 10));
    CHECK(!ws_channel_message_valid(3, (const uint8_t *)"x", 1, 10));
    CHECK(!ws_channel_message_valid(0, (const uint8_t *)"x", 1, 10));
    CHECK(!ws_channel_message_valid(WS_OP_BINARY, (const uint8_t *)"xxxxxxxxxxx", 11, 10));
}

/* ---- size limit ------------------------------------------------------------------- */

static void test_limits(void)
{
    static const cfg ten = { 10, 1, 0, 1 };
    static const rec exact[] = { BIN("0123456789", 10) };
    static const rec exact2[] = { PING("0123456789abc"), TEXT("0123456789") };
    static const uint8_t huge[] = { 0x82, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4 };
    ws_parser p;
    ws_event ev;
    size_t used;
    vec v = { 0 };
    uint8_t *big, hbuf[sizeof(huge)];

    frame(&v, 1, 0, WS_OP_BINARY, "0123456789", 10, K);
    EXPECT("limit fits exactly", &ten, &v, exact, 0);
    v.n = 0;
    frame(&v, 1, 0, WS_OP_BINARY, "0123456789a", 11, K);
    fails_at("limit + 1", &ten, v.b, 1, WS_ERR_TOO_BIG);

    /* across fragments; control frames do not count */
    v.n = 0;
    frame(&v, 0, 0, WS_OP_TEXT, "0123", 4, K);
    frame(&v, 1, 0, WS_OP_PING, "0123456789abc", 13, K);
    frame(&v, 0, 0, WS_OP_CONT, "", 0, K);
    frame(&v, 1, 0, WS_OP_CONT, "456789", 6, K);
    EXPECT("limit fits over fragments", &ten, &v, exact2, 0);
    v.n = 0;
    frame(&v, 0, 0, WS_OP_TEXT, "0123", 4, K);
    frame(&v, 1, 0, WS_OP_CONT, "4567890", 7, K);
    fails_at("limit + 1 over fragments", &ten, v.b, 10 + 1, WS_ERR_TOO_BIG);
    EXPECT_NONE("limit + 1 over fragments", &ten, &v, WS_ERR_TOO_BIG);

    /* 2^62 declared: TOO_BIG with a limit, accepted without allocating without one */
    fails_at("2^62 with a limit", &ten, huge, 9, WS_ERR_TOO_BIG);
    ws_parser_init(&p, 0, 1);
    memcpy(hbuf, huge, sizeof(huge));
    CHECK(ws_parser_feed(&p, hbuf, sizeof(huge), &used, &ev) == WS_NEED_MORE
          && used == sizeof(huge) && p.buf_cap == 0 && p.state == WS_PS_PAYLOAD);
    ws_parser_free(&p);

    /* the buffer grows with the bytes that arrive, and shrinks after a big message */
    big = calloc(1, 300000);
    v.n = 0;
    frame(&v, 0, 0, WS_OP_BINARY, big, 100000, K);
    frame(&v, 1, 0, WS_OP_CONT, big, 100000, K);
    frame(&v, 1, 0, WS_OP_PING, "", 0, K);
    ws_parser_init(&p, 1000000, 1);
    CHECK(ws_parser_feed(&p, v.b, 1000, &used, &ev) == WS_NEED_MORE && p.buf_cap < 4096);
    CHECK(ws_parser_feed(&p, v.b + 1000, v.n - 1000, &used, &ev) == WS_OK
          && ev.type == WS_EV_MESSAGE && ev.len == 200000 && !memcmp(ev.data, big, 200000));
    CHECK(p.buf_cap >= 200000 && p.buf_cap <= 1000000);
    used += 1000;
    CHECK(ws_parser_feed(&p, v.b + used, v.n - used, &used, &ev) == WS_OK
          && ev.type == WS_EV_PING && p.buf_cap <= 64 * 1024 && p.buf_len == 0);
    ws_parser_free(&p);

    /* the limit caps the allocation itself */
    v.n = 0;
    frame(&v, 0, 0, WS_OP_BINARY, big, 1500, K);
    frame(&v, 1, 0, WS_OP_CONT, big, 100, K);
    ws_parser_init(&p, 1600, 1);
    CHECK(ws_parser_feed(&p, v.b, v.n, &used, &ev) == WS_OK && ev.len == 1600
          && p.buf_cap == 1600);
    ws_parser_free(&p);
    free(big);
    free(v.b);
}

/* ---- random valid streams --------------------------------------------------------- */

static void test_random_streams(void)
{
    unsigned it, bad = 0, nframes, f, k, s;
    rec exp[MAX_EV];
    int nexp, i;
    vec v = { 0 };
    result r;

    for (it = 0; it < 150; it++) {
        rnd_seed(1000 + it);
        v.n = 0;
        nexp = 0;
        while (nexp < 12) {
            /* a message: text (valid UTF-8, split anywhere) or binary */
            unsigned op = rnd() % 2 ? WS_OP_TEXT : WS_OP_BINARY, sz = rnd() % 8;
            size_t len = sz == 0 ? 0 : sz < 5 ? rnd() % 130 : sz < 7 ? 120 + rnd() % 400
                       : rnd() % 70000, at = 0, i2;
            uint8_t *m = malloc(len + 4), key[4], *ctl;
            for (i2 = 0; i2 < len;) {
                if (op == WS_OP_TEXT) {
                    uint32_t cp = rnd() % 3 ? 0x20 + rnd() % 0x5F : rnd() % 0x110000;
                    uint8_t o[4];
                    int n2;
                    if (cp >= 0xD800 && cp <= 0xDFFF)
                        cp = 'x';
                    n2 = enc(cp, o);
                    if (i2 + (size_t)n2 > len) {
                        len = i2;
                        break;
                    }
                    memcpy(m + i2, o, (size_t)n2);
                    i2 += (size_t)n2;
                } else {
                    m[i2++] = (uint8_t)rnd();
                }
            }
            nframes = 1 + rnd() % 4;
            for (f = 0; f < nframes; f++) {
                size_t piece = f == nframes - 1 ? len - at : rnd() % (len - at + 1);
                for (k = 0; k < 4; k++)
                    key[k] = (uint8_t)rnd();
                frame(&v, f == nframes - 1, 0, f ? WS_OP_CONT : op, m + at, piece, key);
                at += piece;
                if (f == nframes - 1)
                    exp[nexp++] = (rec)EV(WS_EV_MESSAGE, op, m, len);
                if (rnd() % 3 == 0 && nexp < MAX_EV - 2) {       /* a ping in between */
                    s = rnd() % 126;
                    ctl = malloc(s + 1);
                    for (k = 0; k < s; k++)
                        ctl[k] = (uint8_t)rnd();
                    frame(&v, 1, 0, WS_OP_PING, ctl, s, key);
                    exp[nexp++] = (rec)EV(WS_EV_PING, WS_OP_PING, ctl, s);
                }
            }
        }
        for (s = 0; s < 4; s++) {
            run(&SERVER, v.b, v.n, s == 0 ? 0 : s == 1 ? 1 : 7 * it + s, &r);
            bad += !same_events(&r, exp, nexp, 0);
            free_result(&r);
        }
        for (i = 0; i < nexp; i++)
            free((void *)exp[i].data);
    }
    CHECKM(bad == 0, "%u random stream runs differ", bad);
    free(v.b);
}

/* Random garbage: whatever happens, every split must agree with feeding it whole. */
static void test_garbage(void)
{
    static const cfg cfgs[] = { { 0, 1, 0, 1 }, { 0, 0, WS_RSV1, 1 }, { 64, 0, 0, 1 } };
    unsigned it, bad = 0, s, c;
    uint8_t in[64];
    size_t n, i;
    result r0, r;

    for (it = 0; it < 20000; it++) {
        rnd_seed(5000 + it);
        n = 1 + rnd() % sizeof(in);
        for (i = 0; i < n; i++)   /* bias towards plausible header bytes */
            in[i] = (uint8_t)(rnd() % 4 ? rnd() : (rnd() % 2 ? 0x80 : 0) | rnd() % 11);
        c = it % 3;
        run(&cfgs[c], in, n, 0, &r0);
        bad += r0.bad != 0;
        for (s = 1; s < 3; s++) {
            run(&cfgs[c], in, n, s == 1 ? 1 : it + 2, &r);
            bad += !same_events(&r, r0.ev, r0.nev, r0.err);
            free_result(&r);
        }
        free_result(&r0);
    }
    CHECKM(bad == 0, "%u garbage runs differ", bad);
}

/* ---- masking, headers, errors ------------------------------------------------------ */

static void test_mask(void)
{
    uint8_t buf[128], ref[128], key[4] = { 0x12, 0x34, 0xab, 0xcd };
    unsigned bad = 0, off, align, len, i;

    for (off = 0; off < 8; off++)
        for (align = 0; align < 8; align++)
            for (len = 0; len <= 100; len++) {
                for (i = 0; i < sizeof(buf); i++)
                    buf[i] = ref[i] = (uint8_t)(i * 31 + off);
                for (i = 0; i < len; i++)
                    ref[align + i] ^= key[(off + i) % 4];
                ws_mask(buf + align, len, key, off + UINT64_C(0x100000000) * (off & 1));
                bad += memcmp(buf, ref, sizeof(buf)) != 0;   /* incl. bytes around */
            }
    CHECKM(bad == 0, "%u ws_mask cases differ from the reference", bad);
    /* masking twice restores; the RFC 6455 5.7 example */
    memcpy(buf, "Hello", 5);
    ws_mask(buf, 5, K, 0);
    CHECK(!memcmp(buf, "\x7f\x9f\x4d\x51\x58", 5));
    ws_mask(buf, 2, K, 0);
    ws_mask(buf + 2, 3, K, 2);
    CHECK(!memcmp(buf, "Hello", 5));
}

static void test_frame_header(void)
{
    static const struct { uint64_t len; size_t hl; const char *bytes; } t[] = {
        { 0, 2, "\x82\x00" }, { 125, 2, "\x82\x7d" }, { 126, 4, "\x82\x7e\x00\x7e" },
        { 65535, 4, "\x82\x7e\xff\xff" },
        { 65536, 10, "\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00" },
        { UINT64_C(0x123456789a), 10, "\x82\x7f\x00\x00\x00\x12\x34\x56\x78\x9a" },
        { UINT64_C(0x7fffffffffffffff), 10, "\x82\x7f\x7f\xff\xff\xff\xff\xff\xff\xff" },
    };
    uint8_t out[WS_FRAME_HEADER_MAX + 2];
    size_t i, n;

    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        memset(out, 0xee, sizeof(out));
        n = ws_frame_header(out, 1, 0, WS_OP_BINARY, t[i].len, NULL);
        CHECKM(n == t[i].hl && !memcmp(out, t[i].bytes, n) && out[n] == 0xee,
               "header for %llu", (unsigned long long)t[i].len);
        n = ws_frame_header(out, 1, 0, WS_OP_BINARY, t[i].len, K);
        CHECKM(n == t[i].hl + 4 && out[1] == (0x80 | (uint8_t)t[i].bytes[1])
               && !memcmp(out + 2, t[i].bytes + 2, t[i].hl - 2) && !memcmp(out + t[i].hl, K, 4)
               && out[n] == 0xee, "masked header for %llu", (unsigned long long)t[i].len);
    }
    CHECK(ws_frame_header(out, 0, WS_RSV1, WS_OP_TEXT, 5, NULL) == 2 && out[0] == 0x41);
    CHECK(ws_frame_header(out, 1, WS_RSV1 | WS_RSV3, WS_OP_CLOSE, 2, NULL) == 2
          && out[0] == 0xd8 && out[1] == 2);
    CHECK(ws_frame_header(out, 0, 0, WS_OP_CONT, 3, NULL) == 2 && out[0] == 0x00);
}

static void test_errors(void)
{
    CHECK(ws_error_close_code(WS_ERR_PROTOCOL) == 1002);
    CHECK(ws_error_close_code(WS_ERR_UTF8) == 1007);
    CHECK(ws_error_close_code(WS_ERR_TOO_BIG) == 1009);
    CHECK(ws_error_close_code(WS_ERR_NOMEM) == 1011);
    CHECK(ws_error_close_code(-12345) == 1011);
    CHECK(strcmp(ws_error_text(WS_ERR_UTF8), "invalid UTF-8") == 0);
    CHECK(ws_error_text(WS_ERR_PROTOCOL) && ws_error_text(WS_ERR_TOO_BIG)
          && ws_error_text(WS_ERR_NOMEM) && ws_error_text(-12345));
    /* ws_parser_free is idempotent and works on a fresh parser */
    {
        ws_parser p;
        ws_parser_init(&p, 0, 1);
        CHECK(p.state == WS_PS_HEADER && p.allowed_rsv == 0 && p.validate_utf8 == 1);
        ws_parser_free(&p);
        ws_parser_free(&p);
    }
}

/* ---- handshake helpers ------------------------------------------------------------- */

static char *dup(const char *s)     /* exact-size heap copy (strdup is not C99) */
{
    char *d = malloc(strlen(s) + 1);
    return d ? strcpy(d, s) : NULL;
}

static void test_key(void)
{
    static const char *good[] = { "dGhlIHNhbXBsZSBub25jZQ==", "x3JJHMbDL1EzLkh9GBhXDw==",
                                  "AAAAAAAAAAAAAAAAAAAAAA==", "/+/+/+/+/+/+/+/+/+/+/w==" };
    static const char *bad[] = {
        "", "dGhlIHNhbXBsZSBub25jZQ=", "dGhlIHNhbXBsZSBub25jZQ===", "dGhlIHNhbXBsZSBub25jZQ",
        "dGhlIHNhbXBsZSBub25jZQAA", "dGhlIHNhbXBsZSBub25jZR==", "dGhlIHNhbXBsZSBub25jZf==",
        "dGhlIHNhbXBsZSBub25j-Q==", "dGhlIHNhbXBsZSBub25j ZQ==", " dGhlIHNhbXBsZSBub25jZQ==",
        "dGhlIHNhbXBsZSBub25jZQ== ", "dGhlIHNhbXBsZSBub25jZ===", "dGhlIHNhbXBsZSBub25jZQ=A",
        "dGhlIHNhbXBsZSBub25jZQ", "ZGhlIHNhbXBsZSBub25jZQ==ZGhl", "dGhlIHNhbXBsZSBub25jZQ=\n",
    };
    size_t i;

    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        CHECKM(ws_key_valid(good[i]), "key '%s'", good[i]);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        /* exact-size heap copy: no reading past the NUL */
        char *k = dup(bad[i]);
        CHECKM(!ws_key_valid(k), "key '%s'", bad[i]);
        free(k);
    }
    CHECK(!ws_key_valid(NULL));
}

static void test_tokens(void)
{
    static const struct { const char *list; const char *toks[4]; } t[] = {
        { "", { NULL } },
        { "   ", { NULL } },
        { ",, ,\t,", { NULL } },
        { "chat", { "chat", NULL } },
        { "chat, superchat", { "chat", "superchat", NULL } },
        { " chat ,superchat\t,  , x ", { "chat", "superchat", "x", NULL } },
        { ",a,,b,", { "a", "b", NULL } },
        { "permessage-deflate; client_max_window_bits, y",
          { "permessage-deflate; client_max_window_bits", "y", NULL } },
        { "a b ,c", { "a b", "c", NULL } },
    };
    size_t i, j, len;
    const char *pos, *tok;
    int ok;

    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        char *list = dup(t[i].list);
        ok = 1;
        pos = list;
        for (j = 0; t[i].toks[j]; j++)
            ok &= ws_next_token(&pos, &tok, &len) == 1 && len == strlen(t[i].toks[j])
                  && !memcmp(tok, t[i].toks[j], len);
        ok &= ws_next_token(&pos, &tok, &len) == 0 && ws_next_token(&pos, &tok, &len) == 0;
        CHECKM(ok, "token list '%s'", t[i].list);
        free(list);
    }
}

int main(void)
{
    ref_init();
    test_errors();
    test_mask();
    test_frame_header();
    test_rfc_examples();
    test_fast_path();
    test_streams();
    test_protocol_errors();
    test_utf8_table();
    test_utf8_exhaustive();
    test_utf8_parser();
    test_close();
    test_limits();
    test_random_streams();
    test_garbage();
    test_key();
    test_tokens();
    test_channels();
    printf("%u passed, %u failed\n", g_pass, g_fail);
    return g_fail != 0;
}
