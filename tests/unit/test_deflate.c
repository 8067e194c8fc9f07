/*
 * test_deflate.c - unit tests of permessage-deflate (ws_deflate.h, RFC 7692).
 *
 * What is checked, in order: the RFC 7692 7.2.3 examples; negotiation (valid, invalid,
 * duplicate, unknown, quoted, several offers, random input); a compressed fragmented
 * message through the real parser; round trips of 0 B .. 16 MiB for every context
 * takeover combination and windows 8..15, each compressed message also decoded by a
 * plain zlib inflater with exactly the agreed window; max_out at the exact boundary;
 * a 1 GiB deflate bomb; invalid data; UTF-8 of text messages; stored, BFINAL and
 * mixed block types, also fed one byte at a time; memory held idle.
 * Input strings go into exactly-sized heap blocks so ASan sees any over-read.
 * Prints a memory table and throughput (informational), then "N passed, M failed";
 * exits non-zero on failure.  TEST_DEFLATE_QUICK=1 shrinks the bomb and the largest
 * round trips (for valgrind); the code paths are the same.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zlib.h>

#include "ws_proto.h"
#include "ws_deflate.h"

/* ---- harness -------------------------------------------------------------------- */

static unsigned g_pass, g_fail;
static int g_quick;

#define CHECK(cond) check((cond) != 0, #cond, __FILE__, __LINE__, "")
#define CHECKM(cond, ...) do { char m_[512]; snprintf(m_, sizeof(m_), __VA_ARGS__); \
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

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        abort();
    return p;
}

/* A copy of b[0..n) in a block of exactly n bytes (ASan catches reads past it). */
static uint8_t *exact(const void *b, size_t n)
{
    uint8_t *p = xmalloc(n);
    if (n)
        memcpy(p, b, n);
    return p;
}

static int same(const uint8_t *a, size_t an, const void *b, size_t bn)
{
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

static ws_pmd_params params(int snct, int cnct, int sbits, int cbits)
{
    ws_pmd_params p;
    p.server_no_context_takeover = snct;
    p.client_no_context_takeover = cnct;
    p.server_max_window_bits = sbits;
    p.client_max_window_bits = cbits;
    return p;
}

/* The client's side of the same agreement: a ws_pmd compresses with server_* and
 * decompresses with client_*, so swapping them makes a client. */
static ws_pmd_params mirror(ws_pmd_params p)
{
    return params(p.client_no_context_takeover, p.server_no_context_takeover,
                  p.client_max_window_bits, p.server_max_window_bits);
}

/* Decompress a constant vector into a copy of it in an exact block. */
static int decomp(ws_pmd *pmd, const uint8_t *in, size_t len, size_t max_out, int text,
                  const uint8_t **out, size_t *out_len)
{
    uint8_t *c = exact(in, len);
    int rc = ws_pmd_decompress(pmd, c, len, max_out, text, out, out_len);
    free(c);
    return rc;
}

/* ---- a plain zlib inflater with exactly the agreed window (the referee) ---------- */

typedef struct {
    z_stream z;
    int bits, no_context, live;
    size_t strict_max;          /* messages up to this size are inflated strictly */
    uint8_t *out;
    size_t n, cap;
} referee;

static void ref_init(referee *r, int bits, int no_context)
{
    memset(r, 0, sizeof(*r));
    r->bits = bits;
    r->no_context = no_context;
    r->strict_max = 70000;
}

static void ref_free(referee *r)
{
    if (r->live)
        inflateEnd(&r->z);
    free(r->out);
    r->live = 0;
    r->out = NULL;
}

/* Inflate a message (RFC 7692 7.2.2) with windowBits exactly r->bits.  Returns the
 * zlib result: Z_OK when all of it inflated and ended at a block boundary.
 * zlib checks a distance against its window plus the output of the current call, so
 * for messages up to strict_max the output is taken one byte per call: then every
 * distance is checked against exactly the agreed window. */
static int ref_inflate(referee *r, const uint8_t *in, size_t len)
{
    static const uint8_t tail[4] = { 0, 0, 0xff, 0xff };
    int i, rc = Z_OK;

    if (r->live && r->no_context) {
        inflateEnd(&r->z);
        r->live = 0;
    }
    if (!r->live) {
        memset(&r->z, 0, sizeof(r->z));
        if (inflateInit2(&r->z, -r->bits) != Z_OK)
            return Z_STREAM_ERROR;
        r->live = 1;
    }
    r->n = 0;
    for (i = 0; i < 2; i++) {
        r->z.next_in = (Bytef *)(uintptr_t)(i == 0 ? in : tail);
        r->z.avail_in = (uInt)(i == 0 ? len : 4);
        do {
            if (r->cap - r->n < 65536) {
                r->cap = r->cap * 2 + 65536;
                r->out = realloc(r->out, r->cap);
                if (!r->out)
                    abort();
            }
            r->z.next_out = r->out + r->n;
            r->z.avail_out = len <= r->strict_max ? 1 : (uInt)(r->cap - r->n);
            rc = inflate(&r->z, Z_SYNC_FLUSH);
            r->n = (size_t)(r->z.next_out - r->out);
            if (rc == Z_BUF_ERROR)
                rc = Z_OK;
            if (rc != Z_OK)
                return rc;
        } while (r->z.avail_in > 0 || r->z.avail_out == 0);
    }
    return (r->z.data_type & 128) ? Z_OK : Z_DATA_ERROR;
}

/* ---- RFC 7692 7.2.3 examples ---------------------------------------------------- */

static const uint8_t HELLO_C[] = { 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00 };
static const uint8_t HELLO_C2[] = { 0xf2, 0x00, 0x11, 0x00, 0x00 };

static void test_rfc_examples(void)
{
    ws_pmd_params ctx = params(0, 0, 15, 15), nct = params(1, 1, 15, 15);
    ws_pmd *s, *c;
    const uint8_t *out;
    size_t n;
    static const uint8_t stored[] = { 0x00, 0x05, 0x00, 0xfa, 0xff,
                                      0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00 };
    static const uint8_t bfinal[] = { 0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00 };
    static const uint8_t bfinal2[] = { 0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00 };
    static const uint8_t two_blocks[] = { 0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff,
                                          0xca, 0xc9, 0xc9, 0x07, 0x00 };
    static const uint8_t frag1[] = { 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00,
                                     0x00, 0x00, 0xff, 0xff };
    uint8_t joined[sizeof(frag1) + 1];

    /* 7.2.3.1: one compressed block */
    s = ws_pmd_create(&ctx, NULL);
    CHECK(s != NULL);
    CHECK(ws_pmd_compress(s, (const uint8_t *)"Hello", 5, &out, &n) == WS_OK);
    CHECKM(same(out, n, HELLO_C, sizeof(HELLO_C)), "got %zu bytes", n);
    /* 7.2.3.2: the second "Hello" refers back into the first one */
    CHECK(ws_pmd_compress(s, (const uint8_t *)"Hello", 5, &out, &n) == WS_OK);
    CHECKM(same(out, n, HELLO_C2, sizeof(HELLO_C2)), "got %zu bytes", n);
    ws_pmd_destroy(s);

    /* ... and without context takeover every message starts over */
    s = ws_pmd_create(&nct, NULL);
    CHECK(ws_pmd_compress(s, (const uint8_t *)"Hello", 5, &out, &n) == WS_OK);
    CHECK(same(out, n, HELLO_C, sizeof(HELLO_C)));
    CHECK(ws_pmd_compress(s, (const uint8_t *)"Hello", 5, &out, &n) == WS_OK);
    CHECK(same(out, n, HELLO_C, sizeof(HELLO_C)));
    ws_pmd_destroy(s);

    /* decompression of the same, with the client's context kept */
    s = ws_pmd_create(&ctx, NULL);
    CHECK(decomp(s, HELLO_C, sizeof(HELLO_C), 100, 1, &out, &n) == WS_OK);
    CHECK(same(out, n, "Hello", 5));
    CHECK(decomp(s, HELLO_C2, sizeof(HELLO_C2), 100, 1, &out, &n) == WS_OK);
    CHECK(same(out, n, "Hello", 5));
    /* 7.2.3.3: a stored block */
    CHECK(decomp(s, stored, sizeof(stored), 100, 1, &out, &n) == WS_OK);
    CHECK(same(out, n, "Hello", 5));
    /* 7.2.3.5: two blocks in one message */
    CHECK(decomp(s, two_blocks, sizeof(two_blocks), 100, 1, &out, &n) == WS_OK);
    CHECK(same(out, n, "Hello", 5));
    /* 7.2.3.4: BFINAL set; the window must survive into the next message */
    CHECK(decomp(s, bfinal, sizeof(bfinal), 100, 1, &out, &n) == WS_OK);
    CHECK(same(out, n, "Hello", 5));
    CHECK(decomp(s, HELLO_C2, sizeof(HELLO_C2), 100, 1, &out, &n) == WS_OK);
    CHECK(same(out, n, "Hello", 5));
    CHECK(decomp(s, bfinal2, sizeof(bfinal2), 100, 1, &out, &n) == WS_OK);
    CHECK(same(out, n, "Hello", 5));
    /* 7.2.3.6: a message ending in an empty fragment 0x00 (joined by the parser) */
    memcpy(joined, frag1, sizeof(frag1));
    joined[sizeof(frag1)] = 0x00;
    CHECK(decomp(s, joined, sizeof(joined), 100, 1, &out, &n) == WS_OK);
    CHECK(same(out, n, "Hello", 5));
    /* an empty message is the empty block alone */
    CHECK(decomp(s, (const uint8_t *)"\0", 1, 100, 1, &out, &n) == WS_OK);
    CHECK(n == 0 && out != NULL);
    ws_pmd_destroy(s);

    /* an empty payload is an empty message and leaves the stream alone */
    s = ws_pmd_create(&ctx, NULL);
    CHECK(decomp(s, HELLO_C, sizeof(HELLO_C), 100, 1, &out, &n) == WS_OK);
    CHECK(ws_pmd_decompress(s, NULL, 0, 100, 1, &out, &n) == WS_OK && n == 0 && out);
    CHECK(decomp(s, HELLO_C2, sizeof(HELLO_C2), 100, 1, &out, &n) == WS_OK
          && same(out, n, "Hello", 5));
    ws_pmd_destroy(s);

    /* level -1 is zlib's default, as in the RFC's example */
    {
        ws_pmd_policy pol;
        ws_pmd_policy_default(&pol);
        pol.level = -1;
        s = ws_pmd_create(&ctx, &pol);
        CHECK(ws_pmd_compress(s, (const uint8_t *)"Hello", 5, &out, &n) == WS_OK
              && same(out, n, HELLO_C, sizeof(HELLO_C)));
        ws_pmd_destroy(s);
    }

    /* with client_no_context_takeover the second message cannot refer back */
    s = ws_pmd_create(&nct, NULL);
    CHECK(decomp(s, HELLO_C, sizeof(HELLO_C), 100, 1, &out, &n) == WS_OK);
    CHECK(decomp(s, HELLO_C2, sizeof(HELLO_C2), 100, 1, &out, &n) == WS_ERR_INFLATE);
    ws_pmd_destroy(s);

    /* empty messages compress to 0x00 at any point of a context-takeover stream */
    s = ws_pmd_create(&ctx, NULL);
    c = ws_pmd_create(&ctx, NULL);      /* its client_* side = our server_* side */
    CHECK(ws_pmd_compress(s, NULL, 0, &out, &n) == WS_OK);
    CHECK(n == 1 && out[0] == 0x00);
    CHECK(decomp(c, out, n, 10, 0, &out, &n) == WS_OK && n == 0);
    CHECK(ws_pmd_compress(s, (const uint8_t *)"Hello", 5, &out, &n) == WS_OK);
    CHECK(decomp(c, out, n, 10, 0, &out, &n) == WS_OK && same(out, n, "Hello", 5));
    CHECK(ws_pmd_compress(s, NULL, 0, &out, &n) == WS_OK);
    CHECK(n == 1 && out[0] == 0x00);
    CHECK(decomp(c, out, n, 10, 0, &out, &n) == WS_OK && n == 0);
    CHECK(ws_pmd_compress(s, (const uint8_t *)"Hello", 5, &out, &n) == WS_OK);
    CHECK(same(out, n, HELLO_C2, sizeof(HELLO_C2)));
    CHECK(decomp(c, out, n, 10, 0, &out, &n) == WS_OK && same(out, n, "Hello", 5));
    ws_pmd_destroy(s);
    ws_pmd_destroy(c);
}

/* ---- negotiation ---------------------------------------------------------------- */

static ws_pmd_policy g_pol;     /* the policy neg() uses */

/* Negotiate hdr (copied to an exact block); returns 1/0 and the response. */
static int neg(const char *hdr, ws_pmd_params *a, char *resp)
{
    char *h = (char *)exact(hdr, strlen(hdr) + 1);
    int rc = ws_pmd_negotiate(h, &g_pol, a, resp, WS_PMD_RESPONSE_MAX);
    free(h);
    return rc;
}

#define NEG_OK(hdr, want_resp, snct, cnct, sb, cb) do { \
    ws_pmd_params a_; char r_[WS_PMD_RESPONSE_MAX]; \
    int rc_ = neg(hdr, &a_, r_); \
    CHECKM(rc_ == 1 && strcmp(r_, want_resp) == 0, "[%s] -> %d [%s]", hdr, rc_, r_); \
    if (rc_ == 1) \
        CHECKM(a_.server_no_context_takeover == (snct) && a_.client_no_context_takeover == (cnct) \
               && a_.server_max_window_bits == (sb) && a_.client_max_window_bits == (cb), \
               "[%s] -> %d %d %d %d", hdr, a_.server_no_context_takeover, \
               a_.client_no_context_takeover, a_.server_max_window_bits, a_.client_max_window_bits); \
} while (0)

#define NEG_NO(hdr) do { \
    ws_pmd_params a_; char r_[WS_PMD_RESPONSE_MAX]; \
    int rc_ = neg(hdr, &a_, r_); \
    CHECKM(rc_ == 0 && r_[0] == '\0', "[%s] -> %d [%s]", hdr, rc_, r_); \
} while (0)

static void test_negotiate(void)
{
    ws_pmd_params a;
    char r[WS_PMD_RESPONSE_MAX], small[20];
    int i;

    ws_pmd_policy_default(&g_pol);

    /* no offers */
    CHECK(ws_pmd_negotiate(NULL, &g_pol, &a, r, sizeof(r)) == 0 && r[0] == '\0');
    NEG_NO("");
    NEG_NO("   ,  , ");
    NEG_NO("x-webkit-deflate-frame");
    NEG_NO("permessage-deflatex");
    NEG_NO("deflate-frame; server_max_window_bits=10");

    /* plain offers (Firefox; Chrome adds client_max_window_bits without a value) */
    NEG_OK("permessage-deflate", "permessage-deflate", 0, 0, 15, 15);
    NEG_OK("permessage-deflate; client_max_window_bits",
           "permessage-deflate; client_max_window_bits=15", 0, 0, 15, 15);
    NEG_OK("permessage-deflate; server_max_window_bits=10",
           "permessage-deflate; server_max_window_bits=10", 0, 0, 10, 15);
    NEG_OK("permessage-deflate; server_max_window_bits=8",
           "permessage-deflate; server_max_window_bits=8", 0, 0, 8, 15);
    NEG_OK("permessage-deflate; client_max_window_bits=9",
           "permessage-deflate; client_max_window_bits=9", 0, 0, 15, 9);
    NEG_OK("permessage-deflate; server_no_context_takeover",
           "permessage-deflate; server_no_context_takeover", 1, 0, 15, 15);
    NEG_OK("permessage-deflate; client_no_context_takeover",
           "permessage-deflate; client_no_context_takeover", 0, 1, 15, 15);
    NEG_OK("permessage-deflate; client_no_context_takeover; server_no_context_takeover;"
           " client_max_window_bits=12; server_max_window_bits=11",
           "permessage-deflate; server_no_context_takeover; client_no_context_takeover;"
           " server_max_window_bits=11; client_max_window_bits=12", 1, 1, 11, 12);

    /* invalid values decline the offer (RFC 7692 7, 7.1.2.1, 7.1.2.2) */
    NEG_NO("permessage-deflate; server_max_window_bits=7");
    NEG_NO("permessage-deflate; server_max_window_bits=16");
    NEG_NO("permessage-deflate; server_max_window_bits=abc");
    NEG_NO("permessage-deflate; server_max_window_bits=010");
    NEG_NO("permessage-deflate; server_max_window_bits=08");
    NEG_NO("permessage-deflate; server_max_window_bits=0");
    NEG_NO("permessage-deflate; server_max_window_bits=-9");
    NEG_NO("permessage-deflate; server_max_window_bits=1e1");
    NEG_NO("permessage-deflate; server_max_window_bits=100000000000000000009");
    NEG_NO("permessage-deflate; server_max_window_bits");      /* value required */
    NEG_NO("permessage-deflate; server_max_window_bits=");
    NEG_NO("permessage-deflate; client_max_window_bits=7");
    NEG_NO("permessage-deflate; client_max_window_bits=16");
    NEG_NO("permessage-deflate; client_max_window_bits=x");
    NEG_NO("permessage-deflate; client_max_window_bits=\"\"");
    NEG_NO("permessage-deflate; server_no_context_takeover=1");  /* no value allowed */
    NEG_NO("permessage-deflate; client_no_context_takeover=\"x\"");
    /* duplicates (RFC 7692 7) */
    NEG_NO("permessage-deflate; server_no_context_takeover; server_no_context_takeover");
    NEG_NO("permessage-deflate; client_no_context_takeover; client_no_context_takeover");
    NEG_NO("permessage-deflate; server_max_window_bits=10; server_max_window_bits=10");
    NEG_NO("permessage-deflate; client_max_window_bits; client_max_window_bits=10");
    NEG_NO("permessage-deflate; client_max_window_bits=10; client_max_window_bits");
    /* unknown parameters (RFC 7692 7) */
    NEG_NO("permessage-deflate; foo");
    NEG_NO("permessage-deflate; foo=1");
    NEG_NO("permessage-deflate; server_max_window_bit=10");
    /* syntax errors */
    NEG_NO("permessage-deflate;");
    NEG_NO("permessage-deflate; ;server_no_context_takeover");
    NEG_NO("permessage-deflate server_no_context_takeover");
    NEG_NO("permessage-deflate; server_max_window_bits=\"10");
    NEG_NO("permessage-deflate; server_max_window_bits=\"1\\");
    NEG_NO("permessage-deflate; =10");
    NEG_NO("\"permessage-deflate\"");
    NEG_NO("permessage-deflate; server_max_window_bits=\"1 0\"");

    /* the first acceptable offer wins; a declined one does not stop the search */
    NEG_OK("permessage-deflate; server_max_window_bits=7, permessage-deflate; "
           "client_max_window_bits", "permessage-deflate; client_max_window_bits=15",
           0, 0, 15, 15);
    NEG_OK("permessage-deflate; server_max_window_bits=10, permessage-deflate",
           "permessage-deflate; server_max_window_bits=10", 0, 0, 10, 15);
    NEG_OK("permessage-deflate; bogus, permessage-deflate; x=\"a,b\", "
           "permessage-deflate; server_no_context_takeover",
           "permessage-deflate; server_no_context_takeover", 1, 0, 15, 15);
    /* an unterminated quoted-string swallows the rest of the header */
    NEG_NO("permessage-deflate; server_max_window_bits=\"10, permessage-deflate");
    /* quoted-string values (RFC 6455 9.1: unescaped, they must be tokens) */
    NEG_OK("permessage-deflate; server_max_window_bits=\"10\"",
           "permessage-deflate; server_max_window_bits=10", 0, 0, 10, 15);
    NEG_OK("permessage-deflate; client_max_window_bits=\"1\\2\"",
           "permessage-deflate; client_max_window_bits=12", 0, 0, 15, 12);
    NEG_NO("permessage-deflate; server_max_window_bits=\"010\"");
    /* names without regard to case */
    NEG_OK("PerMessage-Deflate; Server_No_Context_Takeover; CLIENT_MAX_WINDOW_BITS=9",
           "permessage-deflate; server_no_context_takeover; client_max_window_bits=9",
           1, 0, 15, 9);
    /* several header lines joined with ", ", other extensions first, white space */
    NEG_OK("x-webkit-deflate-frame, permessage-deflate; client_max_window_bits",
           "permessage-deflate; client_max_window_bits=15", 0, 0, 15, 15);
    NEG_OK("foo; a=1; b=\"x;y,z\", bar, permessage-deflate; server_no_context_takeover; "
           "client_no_context_takeover", "permessage-deflate; server_no_context_takeover;"
           " client_no_context_takeover", 1, 1, 15, 15);
    NEG_OK(" , ,\tpermessage-deflate \t;\tserver_max_window_bits = 12 ; "
           "client_max_window_bits = \"11\" ,, ",
           "permessage-deflate; server_max_window_bits=12; client_max_window_bits=11",
           0, 0, 12, 11);
    NEG_OK("foo;;;, permessage-deflate", "permessage-deflate", 0, 0, 15, 15);

    /* policy: smaller windows, forced no_context_takeover */
    g_pol.max_window_bits = 12;
    NEG_OK("permessage-deflate", "permessage-deflate; server_max_window_bits=12",
           0, 0, 12, 15);
    NEG_OK("permessage-deflate; server_max_window_bits=14",
           "permessage-deflate; server_max_window_bits=12", 0, 0, 12, 15);
    NEG_OK("permessage-deflate; server_max_window_bits=10",
           "permessage-deflate; server_max_window_bits=10", 0, 0, 10, 15);
    ws_pmd_policy_default(&g_pol);
    g_pol.client_max_window_bits = 10;
    NEG_OK("permessage-deflate; client_max_window_bits",
           "permessage-deflate; client_max_window_bits=10", 0, 0, 15, 10);
    NEG_OK("permessage-deflate; client_max_window_bits=9",
           "permessage-deflate; client_max_window_bits=9", 0, 0, 15, 9);
    /* a client that cannot be limited is asked not to keep context (7.1.1.2) */
    NEG_OK("permessage-deflate", "permessage-deflate; client_no_context_takeover",
           0, 1, 15, 15);
    ws_pmd_policy_default(&g_pol);
    g_pol.server_no_context_takeover = 1;
    g_pol.client_no_context_takeover = 1;
    NEG_OK("permessage-deflate", "permessage-deflate; server_no_context_takeover;"
           " client_no_context_takeover", 1, 1, 15, 15);
    /* the longest response fits WS_PMD_RESPONSE_MAX */
    g_pol.max_window_bits = 10;
    NEG_OK("permessage-deflate; client_max_window_bits=10",
           "permessage-deflate; server_no_context_takeover; client_no_context_takeover;"
           " server_max_window_bits=10; client_max_window_bits=10", 1, 1, 10, 10);
    CHECK(ws_pmd_negotiate("permessage-deflate; client_max_window_bits", &g_pol, &a,
                           small, sizeof(small)) == 0 && small[0] == '\0');
    ws_pmd_policy_default(&g_pol);
    CHECK(ws_pmd_negotiate("permessage-deflate", NULL, &a, r, sizeof(r)) == 1
          && strcmp(r, "permessage-deflate") == 0);

    /* random headers from a small alphabet: no crash, no over-read, and any
     * response is itself an acceptable offer with the same agreement */
    {
        static const char *const parts[] = {
            "permessage-deflate", "PERMESSAGE-DEFLATE", "foo", ";", ",", " ", "=", "\"",
            "\\", "server_no_context_takeover", "client_no_context_takeover",
            "server_max_window_bits", "client_max_window_bits", "8", "9", "10", "15",
            "16", "07", "x", "\t"
        };
        unsigned accepted = 0, bad = 0;
        rnd_seed(7);
        for (i = 0; i < 20000; i++) {
            char h[200], r2[WS_PMD_RESPONSE_MAX];
            ws_pmd_params a2;
            size_t hl = 0;
            int k, parts_n = (int)(rnd() % 12);
            for (k = 0; k < parts_n; k++) {
                const char *p = parts[rnd() % (sizeof(parts) / sizeof(parts[0]))];
                size_t pl = strlen(p);
                if (hl + pl + 1 > sizeof(h))
                    break;
                memcpy(h + hl, p, pl);
                hl += pl;
            }
            h[hl] = '\0';
            if (neg(h, &a, r)) {
                accepted++;
                if (strncmp(r, "permessage-deflate", 18) != 0 || neg(r, &a2, r2) != 1
                    || memcmp(&a, &a2, sizeof(a)) != 0)
                    bad++;
            }
        }
        CHECKM(accepted > 50 && bad == 0, "accepted %u, bad %u", accepted, bad);
    }
}

/* ---- a compressed fragmented message through the parser -------------------------- */

static size_t put_frame(uint8_t *out, int fin, unsigned flags, unsigned op,
                        const uint8_t *p, size_t n)
{
    static const uint8_t key[4] = { 0x37, 0xfa, 0x21, 0x3d };
    size_t h = ws_frame_header(out, fin, flags, op, n, key);
    memcpy(out + h, p, n);
    ws_mask(out + h, n, key, 0);
    return h + n;
}

static void test_parser(void)
{
    static const uint8_t frag1[] = { 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00,
                                     0x00, 0x00, 0xff, 0xff };
    static const uint8_t frag2[] = { 0x00 };
    uint8_t wire[64], *w;
    size_t wn = 0, used = 0, n;
    ws_parser p;
    ws_event ev;
    ws_pmd_params ag = params(0, 0, 15, 15);
    ws_pmd *pmd = ws_pmd_create(&ag, NULL);
    const uint8_t *out;
    int rc;

    /* RFC 7692 6.1: RSV1 on the first frame only; 7.2.3.6: the last fragment 0x00 */
    wn += put_frame(wire + wn, 0, WS_RSV1, WS_OP_TEXT, frag1, sizeof(frag1));
    wn += put_frame(wire + wn, 1, 0, WS_OP_CONT, frag2, sizeof(frag2));
    w = exact(wire, wn);
    ws_parser_init(&p, 1 << 20, 1);
    p.allowed_rsv = WS_RSV1;
    rc = ws_parser_feed(&p, w, wn, &used, &ev);
    CHECK(rc == WS_OK && ev.type == WS_EV_MESSAGE && ev.compressed == 1
          && ev.opcode == WS_OP_TEXT);
    if (rc == WS_OK) {
        CHECK(ws_pmd_decompress(pmd, ev.data, ev.len, 1 << 20, 1, &out, &n) == WS_OK);
        CHECK(same(out, n, "Hello", 5));
    }
    ws_parser_free(&p);
    free(w);
    ws_pmd_destroy(pmd);
}

/* ---- round trips ----------------------------------------------------------------- */

typedef enum { K_TEXT, K_RANDOM, K_ZEROS, K_MIXED } kind;

/* Fill b[0..n) with data of a kind.  Text is JSON-like UTF-8 with repeats at short
 * and long distances (so small windows matter); cut at a character boundary. */
static void gen(uint8_t *b, size_t n, kind k)
{
    static const char *const words[] = {
        "\"id\":", "\"name\":\"alpha\"", "\"price\":12.50", "\"tags\":[\"x\",\"y\"]",
        "\"caf\xc3\xa9\"", "\"\xe2\x82\xac\"", "\"\xf0\x9f\x98\x80\"", "{", "}", ",",
        "\"status\":\"ok\"", "\"user\":{\"first\":\"Ada\",\"last\":\"Lovelace\"}"
    };
    size_t i = 0;

    switch (k) {
    case K_ZEROS:
        memset(b, 0, n);
        return;
    case K_RANDOM:
        for (; i < n; i++)
            b[i] = (uint8_t)rnd();
        return;
    case K_MIXED:
        for (; i < n; i++)
            b[i] = (i / 4096) % 2 ? (uint8_t)rnd() : (uint8_t)('a' + i % 7);
        return;
    case K_TEXT:
        while (i < n) {
            char num[16];
            const char *w = (rnd() % 5 == 0) ? num : words[rnd() % 12];
            size_t wl;
            if (w == num)
                snprintf(num, sizeof(num), "%u", (unsigned)(rnd() % 100000));
            wl = strlen(w);
            if (i + wl > n) {       /* pad with ASCII to keep UTF-8 whole */
                memset(b + i, ' ', n - i);
                break;
            }
            memcpy(b + i, w, wl);
            i += wl;
        }
        return;
    }
}

/* One message a -> b.  Checks our output against the referee and b's result. */
static void one_way(ws_pmd *a, ws_pmd *b, referee *ref, const uint8_t *msg, size_t len,
                    int text, const char *what)
{
    const uint8_t *c, *d;
    size_t cn, dn;
    uint8_t *cc;
    int rc;

    rc = ws_pmd_compress(a, msg, len, &c, &cn);
    CHECKM(rc == WS_OK, "%s compress %zu: %d", what, len, rc);
    if (rc != WS_OK)
        return;
    cc = exact(c, cn);      /* own copy: what goes on the wire */
    ws_pmd_release(a);
    rc = ref_inflate(ref, cc, cn);
    CHECKM(rc == Z_OK && same(ref->out, ref->n, msg, len),
           "%s referee (window %d) %zu: %d", what, ref->bits, len, rc);
    /* max_out exactly the length: the boundary must pass */
    rc = ws_pmd_decompress(b, cc, cn, len ? len : 1, text, &d, &dn);
    CHECKM(rc == WS_OK && same(d, dn, msg, len), "%s decompress %zu: %d", what, len, rc);
    ws_pmd_release(b);
    free(cc);
}

static void test_round_trips(void)
{
    static const size_t sizes[] = { 0, 1, 2, 5, 100, 1024, 4096, 65535, 65536 + 7,
                                    200000, 1u << 20 };
    /* windows (server, client), and a deflate level and memLevel for each, so that
     * every value is used; the 16 MiB messages go through 9/9 and 15/15 */
    static const struct { int sb, cb, level, mem; } wins[] = {
        { 8, 8, 6, 8 }, { 9, 9, 1, 1 }, { 10, 10, 9, 9 }, { 11, 11, 2, 2 },
        { 12, 12, 3, 3 }, { 13, 13, 4, 4 }, { 14, 14, 5, 5 }, { 15, 15, 6, 8 },
        { 9, 15, 7, 7 }, { 15, 9, 8, 6 }, { 8, 15, 0, 9 }
    };
    size_t big = g_quick ? (1u << 20) + 3 : (16u << 20);
    uint8_t *pool[4], *big_text = xmalloc(big), *big_random = xmalloc(big);
    int ctx, w, k;
    unsigned combos = 0;

    /* The data, made once: generating it is slower than compressing it under ASan.
     * A message is a prefix of pool[kind]; text prefixes are cut back to a
     * character boundary below. */
    rnd_seed(42);
    for (k = 0; k < 4; k++) {
        pool[k] = xmalloc((1u << 20) + 1);  /* +1: the boundary check peeks at [len] */
        pool[k][1u << 20] = 0;
        gen(pool[k], 1u << 20, (kind)k);
    }
    gen(big_text, big, K_TEXT);
    gen(big_random, big, K_RANDOM);

    for (ctx = 0; ctx < 4; ctx++) {
        for (w = 0; w < (int)(sizeof(wins) / sizeof(wins[0])); w++) {
            ws_pmd_params ag = params(ctx & 1, (ctx >> 1) & 1, wins[w].sb, wins[w].cb);
            ws_pmd_params cl = mirror(ag);
            ws_pmd_policy pol;
            ws_pmd *s, *c;
            referee to_client, to_server;
            char what[80];
            size_t i, idle_s, idle_c;
            int round;

            ws_pmd_policy_default(&pol);
            pol.mem_level = wins[w].mem;
            pol.level = wins[w].level;
            s = ws_pmd_create(&ag, &pol);
            c = ws_pmd_create(&cl, &pol);
            idle_s = ws_pmd_memory(s);
            idle_c = ws_pmd_memory(c);
            ref_init(&to_client, ag.server_max_window_bits, ag.server_no_context_takeover);
            ref_init(&to_server, ag.client_max_window_bits, ag.client_no_context_takeover);
            snprintf(what, sizeof(what), "nct %d/%d win %d/%d lvl %d mem %d",
                     ag.server_no_context_takeover, ag.client_no_context_takeover,
                     ag.server_max_window_bits, ag.client_max_window_bits, pol.level,
                     pol.mem_level);
            for (round = 0; round < 2; round++) {
                for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
                    kind kd = (kind)((i + (size_t)round + (size_t)w) % 4);
                    size_t len = sizes[i];
                    /* a text prefix must not end inside a character */
                    if (kd == K_TEXT)
                        while (len > 0 && (pool[kd][len] & 0xC0) == 0x80)
                            len--;
                    one_way(s, c, &to_client, pool[kd], len, kd == K_TEXT, what);
                    one_way(c, s, &to_server, pool[kd], len, kd == K_TEXT, what);
                }
            }
            /* the largest messages, for the ends of the window range */
            if (wins[w].sb == wins[w].cb && (wins[w].sb == 9 || wins[w].sb == 15)) {
                one_way(s, c, &to_client, big_text, big, 1, what);
                one_way(c, s, &to_server, big_text, big, 1, what);
                if (wins[w].sb == 15)
                    one_way(s, c, &to_client, big_random, big, 0, what);
            }
            /* released and idle: no buffers; no zlib state without context takeover */
            if (ag.server_no_context_takeover && ag.client_no_context_takeover)
                CHECKM(ws_pmd_memory(s) == idle_s && ws_pmd_memory(c) == idle_c,
                       "%s idle %zu/%zu", what, ws_pmd_memory(s), ws_pmd_memory(c));
            else
                CHECKM(ws_pmd_memory(s) > idle_s, "%s", what);
            ref_free(&to_client);
            ref_free(&to_server);
            ws_pmd_destroy(s);
            ws_pmd_destroy(c);
            combos++;
        }
    }
    for (k = 0; k < 4; k++)
        free(pool[k]);
    free(big_text);
    free(big_random);
    printf("round trips: %u parameter combinations, messages 0 B .. %zu MiB\n", combos,
           big >> 20);
}

/* ---- limits: max_out and a deflate bomb ------------------------------------------ */

/* Raw deflate of n bytes of value v, fed in 1 MiB chunks, sync flushed, tail
 * removed: a message as a peer would send it. */
static uint8_t *make_bomb(size_t n, int v, size_t *clen)
{
    size_t chunk = 1u << 20, cap = n / 512 + 65536, done = 0;
    uint8_t *in = xmalloc(chunk), *out = xmalloc(cap);
    z_stream z;

    memset(in, v, chunk);
    memset(&z, 0, sizeof(z));
    /* Z_RLE: the same ~1030:1 as level 9 on a run, in half the time */
    if (deflateInit2(&z, 9, Z_DEFLATED, -15, 9, Z_RLE) != Z_OK)
        abort();
    z.next_out = out;
    z.avail_out = (uInt)cap;
    while (done < n) {
        size_t m = n - done < chunk ? n - done : chunk;
        done += m;
        z.next_in = in;
        z.avail_in = (uInt)m;
        if (deflate(&z, done == n ? Z_SYNC_FLUSH : Z_NO_FLUSH) != Z_OK || z.avail_out == 0)
            abort();
    }
    *clen = cap - z.avail_out - 4;
    deflateEnd(&z);
    free(in);
    return out;
}

static void test_limits(void)
{
    ws_pmd_params ag = params(0, 0, 15, 15);
    ws_pmd *s, *c;
    const uint8_t *out;
    size_t n, clen, idle, bomb_size = g_quick ? (64u << 20) : (1u << 30);
    size_t max_out = 16u << 20;
    uint8_t *msg, *bomb;
    clock_t t0;
    int rc;

    /* max_out: exactly the length passes, one less fails */
    msg = xmalloc(100000);
    rnd_seed(3);
    gen(msg, 100000, K_TEXT);
    s = ws_pmd_create(&ag, NULL);
    CHECK(ws_pmd_compress(s, msg, 100000, &out, &n) == WS_OK);
    bomb = exact(out, n);
    clen = n;
    ws_pmd_destroy(s);
    s = ws_pmd_create(&ag, NULL);
    CHECK(ws_pmd_decompress(s, bomb, clen, 100000, 1, &out, &n) == WS_OK && n == 100000);
    /* the output, zlib's state and window, and for a moment the copy of the window kept
     * for the next message (context takeover) */
    CHECK(ws_pmd_memory_peak(s) < 100000 + 96 * 1024);
    ws_pmd_destroy(s);
    s = ws_pmd_create(&ag, NULL);
    CHECK(ws_pmd_decompress(s, bomb, clen, 99999, 1, &out, &n) == WS_ERR_TOO_BIG);
    CHECK(ws_pmd_memory_peak(s) < 99999 + 64 * 1024);
    /* sticky, and everything is freed */
    CHECK(ws_pmd_decompress(s, bomb, clen, 100000, 1, &out, &n) == WS_ERR_TOO_BIG);
    ws_pmd_destroy(s);
    s = ws_pmd_create(&ag, NULL);       /* 0 means no bound, like the parser's */
    CHECK(ws_pmd_decompress(s, bomb, clen, 0, 1, &out, &n) == WS_OK && n == 100000);
    ws_pmd_destroy(s);
    free(bomb);
    free(msg);

    /* a kept buffer larger than max_out must not let more than max_out through,
     * and a large buffer is dropped at the next call even without ws_pmd_release */
    {
        ws_pmd_params nct = params(1, 1, 15, 15);
        uint8_t *big_c, *small_c;
        size_t big_n, small_n;
        msg = xmalloc(1u << 20);
        rnd_seed(4);
        gen(msg, 1u << 20, K_TEXT);
        s = ws_pmd_create(&nct, NULL);
        CHECK(ws_pmd_compress(s, msg, 20000, &out, &n) == WS_OK);
        small_c = exact(out, n);
        small_n = n;
        CHECK(ws_pmd_compress(s, msg, 1u << 20, &out, &n) == WS_OK);
        big_c = exact(out, n);
        big_n = n;
        ws_pmd_destroy(s);
        c = ws_pmd_create(&nct, NULL);
        CHECK(ws_pmd_decompress(c, small_c, small_n, 100000, 1, &out, &n) == WS_OK
              && same(out, n, msg, 20000));
        idle = ws_pmd_memory(c);        /* a kept buffer of up to 64 KiB */
        CHECKM(idle > 20000 + 1000, "%zu", idle);   /* ... larger than the message */
        CHECK(ws_pmd_decompress(c, small_c, small_n, 19999, 1, &out, &n) == WS_ERR_TOO_BIG);
        ws_pmd_destroy(c);
        c = ws_pmd_create(&nct, NULL);
        CHECK(ws_pmd_decompress(c, small_c, small_n, 100000, 1, &out, &n) == WS_OK);
        CHECK(ws_pmd_decompress(c, small_c, small_n, 20000, 1, &out, &n) == WS_OK
              && same(out, n, msg, 20000));
        CHECK(ws_pmd_decompress(c, big_c, big_n, 0, 1, &out, &n) == WS_OK
              && same(out, n, msg, 1u << 20));
        CHECK(ws_pmd_memory(c) > (1u << 20));
        CHECK(ws_pmd_decompress(c, small_c, small_n, 100000, 1, &out, &n) == WS_OK);
        CHECKM(ws_pmd_memory(c) <= idle, "%zu > %zu", ws_pmd_memory(c), idle);
        ws_pmd_destroy(c);
        /* the same for compression */
        s = ws_pmd_create(&nct, NULL);
        CHECK(ws_pmd_compress(s, msg, 1u << 20, &out, &n) == WS_OK);
        CHECK(ws_pmd_compress(s, msg, 100, &out, &n) == WS_OK);
        CHECKM(ws_pmd_memory(s) < 64 * 1024, "%zu", ws_pmd_memory(s));
        ws_pmd_destroy(s);
        free(big_c);
        free(small_c);
        free(msg);
    }

    /* the bomb: 1 GiB of zeros in about 1 MB */
    t0 = clock();
    bomb = make_bomb(bomb_size, 0, &clen);
    printf("bomb: %zu MiB of zeros deflated to %zu bytes (%.1f s to make)\n",
           bomb_size >> 20, clen, (double)(clock() - t0) / CLOCKS_PER_SEC);
    s = ws_pmd_create(&ag, NULL);
    idle = ws_pmd_memory(s);
    t0 = clock();
    rc = ws_pmd_decompress(s, bomb, clen, max_out, 0, &out, &n);
    CHECKM(rc == WS_ERR_TOO_BIG, "rc %d", rc);
    CHECKM(ws_pmd_memory_peak(s) <= max_out + 64 * 1024, "peak %zu",
           ws_pmd_memory_peak(s));
    CHECKM(ws_pmd_memory(s) == idle, "after %zu, idle %zu", ws_pmd_memory(s), idle);
    printf("bomb: max_out 16 MiB -> WS_ERR_TOO_BIG in %.3f s, peak %zu bytes, "
           "after %zu bytes\n", (double)(clock() - t0) / CLOCKS_PER_SEC,
           ws_pmd_memory_peak(s), ws_pmd_memory(s));
    ws_pmd_destroy(s);
    /* the same bomb with a small limit never grows past it */
    s = ws_pmd_create(&ag, NULL);
    CHECK(ws_pmd_decompress(s, bomb, clen, 1000, 0, &out, &n) == WS_ERR_TOO_BIG);
    CHECKM(ws_pmd_memory_peak(s) <= ws_pmd_memory(s) + 1000 + 48 * 1024, "peak %zu",
           ws_pmd_memory_peak(s));
    ws_pmd_destroy(s);
    free(bomb);

    /* a text bomb of invalid UTF-8 fails at the first bytes, not at max_out */
    bomb = make_bomb(g_quick ? (8u << 20) : (64u << 20), 0xff, &clen);
    c = ws_pmd_create(&ag, NULL);
    CHECK(ws_pmd_decompress(c, bomb, clen, max_out, 1, &out, &n) == WS_ERR_UTF8);
    CHECKM(ws_pmd_memory_peak(c) < (1u << 20), "peak %zu", ws_pmd_memory_peak(c));
    ws_pmd_destroy(c);
    free(bomb);
}

/* ---- invalid data and UTF-8 ------------------------------------------------------ */

static void test_invalid(void)
{
    ws_pmd_params ag = params(0, 0, 15, 15), small = params(0, 0, 15, 9);
    ws_pmd *s;
    const uint8_t *out;
    size_t n, clen, i;
    int rc, ok = 0, err = 0, other = 0;
    static const uint8_t reserved_btype[] = { 0x06, 0x00 };   /* BTYPE = 11 */
    static const uint8_t bad_nlen[] = { 0x00, 0x05, 0x00, 0x00, 0x00, 'H', 'e', 'l',
                                        'l', 'o' };
    static const uint8_t cut[] = { 0xf2, 0x48, 0xcd };          /* inside a block */
    static const uint8_t far_back[] = { 0x02, 0x02, 0x00 };
    uint8_t *msg, garbage[64];
    z_stream z;

    s = ws_pmd_create(&ag, NULL);
    CHECK(decomp(s, reserved_btype, sizeof(reserved_btype), 100, 0, &out, &n)
          == WS_ERR_INFLATE);
    CHECK(n == 0 && out != NULL);
    /* sticky: the stream is gone, so is the connection */
    CHECK(decomp(s, HELLO_C, sizeof(HELLO_C), 100, 0, &out, &n) == WS_ERR_INFLATE);
    ws_pmd_destroy(s);

    s = ws_pmd_create(&ag, NULL);
    CHECK(decomp(s, bad_nlen, sizeof(bad_nlen), 100, 0, &out, &n) == WS_ERR_INFLATE);
    ws_pmd_destroy(s);
    s = ws_pmd_create(&ag, NULL);
    CHECK(decomp(s, cut, sizeof(cut), 100, 0, &out, &n) == WS_ERR_INFLATE);
    ws_pmd_destroy(s);
    /* a fixed block with a distance before the start of the data (length 3, distance 1
     * with nothing written yet) */
    s = ws_pmd_create(&ag, NULL);
    CHECK(decomp(s, far_back, sizeof(far_back), 100, 0, &out, &n) == WS_ERR_INFLATE);
    ws_pmd_destroy(s);

    /* A peer that deflates with a larger window than agreed (9), with context
     * takeover: message 2 repeats message 1, 4096 bytes back.  zlib holds only the
     * agreed 512 bytes of message 1, so the reference fails (within one message
     * zlib would find the bytes in its output and not notice; the strict referee,
     * one output byte per call, does). */
    msg = xmalloc(4096);
    rnd_seed(11);
    gen(msg, 4096, K_RANDOM);
    memset(&z, 0, sizeof(z));
    deflateInit2(&z, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
    {
        uint8_t c1[8192], c2[8192];
        size_t n1, n2;
        referee ref;

        z.next_in = msg;
        z.avail_in = 4096;
        z.next_out = c1;
        z.avail_out = sizeof(c1);
        deflate(&z, Z_SYNC_FLUSH);
        n1 = sizeof(c1) - z.avail_out - 4;
        z.next_in = msg;
        z.avail_in = 4096;
        z.next_out = c2;
        z.avail_out = sizeof(c2);
        deflate(&z, Z_SYNC_FLUSH);
        n2 = sizeof(c2) - z.avail_out - 4;
        deflateEnd(&z);
        CHECK(n2 < 100);                        /* it did refer back */
        s = ws_pmd_create(&small, NULL);
        CHECK(decomp(s, c1, n1, 100000, 0, &out, &n) == WS_OK && same(out, n, msg, 4096));
        CHECK(decomp(s, c2, n2, 100000, 0, &out, &n) == WS_ERR_INFLATE);
        ws_pmd_destroy(s);
        s = ws_pmd_create(&ag, NULL);
        CHECK(decomp(s, c1, n1, 100000, 0, &out, &n) == WS_OK);
        CHECK(decomp(s, c2, n2, 100000, 0, &out, &n) == WS_OK && same(out, n, msg, 4096));
        ws_pmd_destroy(s);
        /* the referee catches a too-large window inside one message too */
        memset(&z, 0, sizeof(z));
        deflateInit2(&z, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
        memcpy(c2, msg, 4096);
        memcpy(c2 + 4096, msg, 4096);
        z.next_in = c2;
        z.avail_in = 8192;
        z.next_out = c1;
        z.avail_out = sizeof(c1);
        deflate(&z, Z_SYNC_FLUSH);
        n1 = sizeof(c1) - z.avail_out - 4;
        deflateEnd(&z);
        ref_init(&ref, 9, 1);
        CHECK(ref_inflate(&ref, c1, n1) == Z_DATA_ERROR);
        ref_free(&ref);
        ref_init(&ref, 13, 1);
        CHECK(ref_inflate(&ref, c1, n1) == Z_OK && same(ref.out, ref.n, c2, 8192));
        ref_free(&ref);
    }
    free(msg);

    /* random bytes: any result but a crash; most are invalid */
    rnd_seed(5);
    for (i = 0; i < 3000; i++) {
        size_t len = 1 + rnd() % sizeof(garbage), j;
        for (j = 0; j < len; j++)
            garbage[j] = (uint8_t)rnd();
        s = ws_pmd_create(&ag, NULL);
        rc = decomp(s, garbage, len, 1 << 16, (int)(i & 1), &out, &n);
        if (rc == WS_OK)
            ok++;
        else if (rc == WS_ERR_INFLATE || rc == WS_ERR_UTF8 || rc == WS_ERR_TOO_BIG)
            err++;
        else
            other++;
        ws_pmd_destroy(s);
    }
    CHECKM(other == 0 && err > 2000, "ok %d err %d other %d", ok, err, other);

    /* UTF-8 of text messages (RFC 6455 8.1) */
    {
        static const struct { const char *s; size_t n; int valid; } u[] = {
            { "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14, 1 },
            { "\xff", 1, 0 },
            { "ab\xe2\x82", 4, 0 },             /* cut inside a character */
            { "\xed\xa0\x80", 3, 0 },           /* a surrogate */
            { "\xc0\xaf", 2, 0 },               /* overlong */
        };
        for (i = 0; i < sizeof(u) / sizeof(u[0]); i++) {
            ws_pmd *a = ws_pmd_create(&ag, NULL), *b = ws_pmd_create(&ag, NULL);
            uint8_t *cc;
            CHECK(ws_pmd_compress(a, (const uint8_t *)u[i].s, u[i].n, &out, &n) == WS_OK);
            cc = exact(out, n);
            clen = n;
            rc = ws_pmd_decompress(b, cc, clen, 100, 1, &out, &n);
            CHECKM(rc == (u[i].valid ? WS_OK : WS_ERR_UTF8), "utf8 case %zu: %d", i, rc);
            ws_pmd_destroy(b);
            b = ws_pmd_create(&ag, NULL);       /* binary: no check */
            CHECK(ws_pmd_decompress(b, cc, clen, 100, 0, &out, &n) == WS_OK
                  && same(out, n, u[i].s, u[i].n));
            free(cc);
            ws_pmd_destroy(a);
            ws_pmd_destroy(b);
        }
    }
}

/* ---- block types: stored, BFINAL, mixed; one byte at a time --------------------- */

/* A stored block (RFC 1951 3.2.4) of n <= 65535 bytes, byte-aligned. */
static size_t put_stored(uint8_t *out, int final, const void *data, size_t n)
{
    out[0] = (uint8_t)(final ? 1 : 0);
    out[1] = (uint8_t)n;
    out[2] = (uint8_t)(n >> 8);
    out[3] = (uint8_t)~n;
    out[4] = (uint8_t)(~n >> 8);
    memcpy(out + 5, data, n);
    return 5 + n;
}

/* zlib output for in[0..n) with the given level/strategy and flush, on z. */
static size_t zdeflate(z_stream *z, int level, int strategy, int flush, const char *in,
                       uint8_t *out, size_t cap)
{
    deflateParams(z, level, strategy);
    z->next_in = (Bytef *)(uintptr_t)in;
    z->avail_in = (uInt)strlen(in);
    z->next_out = out;
    z->avail_out = (uInt)cap;
    deflate(z, flush);
    return cap - z->avail_out;
}

/* The message through the parser in 1-byte fragments, fed one wire byte at a time,
 * then inflated with max_out exactly its length (and one less: WS_ERR_TOO_BIG). */
static void bytewise(const uint8_t *msg, size_t n, const char *expect)
{
    size_t cap = n * 8 + 16, wn = 0, i, used, k, elen = strlen(expect);
    uint8_t *wire = xmalloc(cap), *b;
    ws_pmd_params ag = params(1, 1, 15, 15);
    ws_pmd *pmd = ws_pmd_create(&ag, NULL);
    const uint8_t *out;
    ws_parser p;
    ws_event ev;
    int rc = WS_OK, got = 0;

    for (i = 0; i < n; i++)
        wn += put_frame(wire + wn, i + 1 == n, i == 0 ? WS_RSV1 : 0,
                        i == 0 ? WS_OP_BINARY : WS_OP_CONT, msg + i, 1);
    ws_parser_init(&p, 1 << 20, 1);
    p.allowed_rsv = WS_RSV1;
    for (i = 0; i < wn && (rc == WS_OK || rc == WS_NEED_MORE) && !got; i++) {
        b = exact(wire + i, 1);
        rc = ws_parser_feed(&p, b, 1, &used, &ev);
        got = rc == WS_OK && used == 1 && ev.type == WS_EV_MESSAGE;
        if (got) {
            CHECK(ev.compressed == 1 && same(ev.data, ev.len, msg, n));
            CHECKM(ws_pmd_decompress(pmd, ev.data, ev.len, elen, 0, &out, &k) == WS_OK
                   && same(out, k, expect, elen), "%s", expect);
        }
        free(b);
    }
    CHECKM(got && i == wn, "one byte at a time: rc %d, %zu of %zu", rc, i, wn);
    ws_parser_free(&p);
    ws_pmd_destroy(pmd);
    if (elen) {
        pmd = ws_pmd_create(&ag, NULL);
        CHECK(decomp(pmd, msg, n, elen - 1, 0, &out, &k) == WS_ERR_TOO_BIG);
        ws_pmd_destroy(pmd);
    }
    free(wire);
}

static void expect_msg(ws_pmd *s, const uint8_t *m, size_t n, const char *expect,
                       const char *what)
{
    const uint8_t *out;
    size_t k;
    int rc = decomp(s, m, n, 1 << 20, 1, &out, &k);
    CHECKM(rc == WS_OK && same(out, k, expect, strlen(expect)), "%s: rc %d \"%.*s\"", what,
           rc, (int)k, (const char *)out);
}

static void test_blocks(void)
{
    ws_pmd_params takeover = params(1, 0, 15, 15), nct = params(1, 1, 15, 15);
    uint8_t m[4096], ref_msg[256];
    size_t n, rn;
    ws_pmd *s;
    z_stream z;
    int pass;

    /* A message that refers back into "Hello World" (the previous messages): what
     * a client keeping its context sends next. */
    memset(&z, 0, sizeof(z));
    deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
    deflateSetDictionary(&z, (const Bytef *)"Hello World", 11);
    rn = zdeflate(&z, 6, Z_DEFAULT_STRATEGY, Z_SYNC_FLUSH, "Hello World", ref_msg,
                  sizeof(ref_msg)) - 4;
    deflateEnd(&z);
    CHECK(rn < 8);                              /* it is a back reference */

    for (pass = 0; pass < 2; pass++) {
        ws_pmd_params ag = pass ? nct : takeover;
        /* non-final stored blocks without the empty block a zlib sender adds: the
         * payload ends at a block boundary (Node ws and Python websockets take it) */
        s = ws_pmd_create(&ag, NULL);
        n = put_stored(m, 0, "Hello", 5);
        expect_msg(s, m, n, "Hello", "bare stored block");
        n = put_stored(m, 0, " World", 6);
        expect_msg(s, m, n, " World", "second bare stored block");
        if (!pass)
            expect_msg(s, ref_msg, rn, "Hello World", "back into two stored blocks");
        /* the same with zlib's empty block (its header byte; 00 00 ff ff removed) */
        n = put_stored(m, 0, "abc", 3);
        m[n++] = 0x00;
        expect_msg(s, m, n, "abc", "stored block then the empty block");
        /* two stored blocks in one message, then an empty stored block, bare */
        n = put_stored(m, 0, "ab", 2);
        n += put_stored(m + n, 0, "cd", 2);
        n += put_stored(m + n, 0, "", 0);
        expect_msg(s, m, n, "abcd", "stored blocks and an empty one");
        ws_pmd_destroy(s);

        /* BFINAL stored block (RFC 7692 7.2.3.4), and the window survives it */
        s = ws_pmd_create(&ag, NULL);
        n = put_stored(m, 1, "Hello World", 11);
        expect_msg(s, m, n, "Hello World", "BFINAL stored block");
        if (!pass)
            expect_msg(s, ref_msg, rn, "Hello World", "back across a BFINAL block");
        /* a BFINAL fixed-Huffman block, then ignored bytes */
        memset(&z, 0, sizeof(z));
        deflateInit2(&z, 6, Z_DEFLATED, -15, 8, Z_FIXED);
        n = zdeflate(&z, 6, Z_FIXED, Z_FINISH, "fixed and final", m, sizeof(m));
        deflateEnd(&z);
        expect_msg(s, m, n, "fixed and final", "BFINAL fixed block");
        ws_pmd_destroy(s);
    }

    /* mixed block types in one message: stored, fixed, dynamic, then a bare stored */
    memset(&z, 0, sizeof(z));
    deflateInit2(&z, 0, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY);
    n = zdeflate(&z, 0, Z_DEFAULT_STRATEGY, Z_BLOCK, "stored part, ", m, sizeof(m));
    n += zdeflate(&z, 9, Z_FIXED, Z_BLOCK, "fixed part fixed part, ", m + n, sizeof(m) - n);
    n += zdeflate(&z, 6, Z_DEFAULT_STRATEGY, Z_SYNC_FLUSH,
                  "dynamic dynamic dynamic dynamic part, ", m + n, sizeof(m) - n);
    deflateEnd(&z);
    CHECK(n > 4 && memcmp(m + n - 4, "\x00\x00\xff\xff", 4) == 0);
    {
        static const char all[] = "stored part, fixed part fixed part, dynamic dynamic "
                                  "dynamic dynamic part, ";
        static const char more[] = "stored part, fixed part fixed part, dynamic dynamic "
                                   "dynamic dynamic part, and stored";
        size_t full = n;
        s = ws_pmd_create(&takeover, NULL);
        expect_msg(s, m, n - 4, all, "stored, fixed, dynamic");
        ws_pmd_destroy(s);
        bytewise(m, n - 4, all);
        n = full + put_stored(m + full, 0, "and stored", 10);
        s = ws_pmd_create(&takeover, NULL);
        expect_msg(s, m, n, more, "stored, fixed, dynamic, bare stored");
        /* the window goes on from the bare block: the back reference now copies
         * from the end of this message, as plain zlib with that window says */
        {
            char want[64];
            memset(&z, 0, sizeof(z));
            inflateInit2(&z, -15);
            inflateSetDictionary(&z, (const Bytef *)more, (uInt)strlen(more));
            z.next_in = ref_msg;
            z.avail_in = (uInt)rn;
            z.next_out = (Bytef *)want;
            z.avail_out = sizeof(want) - 1;
            inflate(&z, Z_SYNC_FLUSH);
            want[sizeof(want) - 1 - z.avail_out] = '\0';
            inflateEnd(&z);
            CHECK(strlen(want) == 11);
            expect_msg(s, ref_msg, rn, want, "then a new message");
        }
        ws_pmd_destroy(s);
        bytewise(m, n, more);
    }
    n = put_stored(m, 0, "Hello", 5);
    bytewise(m, n, "Hello");
    n = put_stored(m, 1, "Hello", 5);
    bytewise(m, n, "Hello");

    /* Found by fuzz_inflate: a Huffman block that ends byte-aligned and inflates to
     * more than the first output buffer (4x its size + 256): where the payload ends
     * is known only once all of its output is out. */
    {
        static const uint8_t run[] = { 0xca, 0x38, 0xbc, 0x70, 0x70, 0x70, 0x70, 0x70,
                                       0x70, 0x70, 0x70, 0x70, 0x70, 0x70, 0x70, 0x70,
                                       0x70, 0x70, 0x70, 0x70, 0x70, 0x39, 0x70, 0x70,
                                       0x70, 0x00 };
        ws_pmd_params w9 = params(1, 0, 15, 9);
        const uint8_t *out;
        uint8_t want[1024];
        size_t k;
        memset(&z, 0, sizeof(z));
        inflateInit2(&z, -9);
        inflateSetDictionary(&z, (const Bytef *)"HelloHello", 10);
        z.next_in = (Bytef *)(uintptr_t)run;
        z.avail_in = sizeof(run);
        z.next_out = want;
        z.avail_out = sizeof(want);
        CHECK(inflate(&z, Z_SYNC_FLUSH) == Z_OK && z.avail_in == 0
              && (z.data_type & (128 | 256 | 63)) == 128);
        n = sizeof(want) - z.avail_out;
        inflateEnd(&z);
        CHECK(n > 4 * sizeof(run) + 256);
        s = ws_pmd_create(&w9, NULL);
        CHECK(decomp(s, HELLO_C, sizeof(HELLO_C), 4096, 1, &out, &k) == WS_OK);
        CHECK(decomp(s, HELLO_C2, sizeof(HELLO_C2), 4096, 1, &out, &k) == WS_OK);
        CHECK(decomp(s, run, sizeof(run), 4096, 1, &out, &k) == WS_OK && same(out, k, want, n));
        ws_pmd_destroy(s);
    }
}

/* ---- memory held, and throughput (informational) --------------------------------- */

static void test_memory(void)
{
    static const struct {
        const char *name;
        int snct, cnct, sbits, cbits, mem_level;
    } cfg[] = {
        { "default: windows 15/15, memLevel 8, context takeover", 0, 0, 15, 15, 8 },
        { "default + server/client_no_context_takeover", 1, 1, 15, 15, 8 },
        { "default + server_no_context_takeover only", 1, 0, 15, 15, 8 },
        { "default + client_no_context_takeover only", 0, 1, 15, 15, 8 },
        { "smallest: windows 9/8, memLevel 1, context takeover", 0, 0, 9, 8, 1 },
        { "smallest + server/client_no_context_takeover", 1, 1, 9, 8, 1 },
    };
    uint8_t msg[1024];
    size_t i;

    rnd_seed(9);
    gen(msg, sizeof(msg), K_TEXT);
    ws_pmd_thread_cache_free();
    printf("\nmemory per connection, bytes (1 KiB text message each way):\n");
    printf("  %-54s %5s %8s %8s %8s %8s\n", "agreed parameters", "new", "busy", "idle",
           "peak", "thread");
    for (i = 0; i < sizeof(cfg) / sizeof(cfg[0]); i++) {
        ws_pmd_params ag = params(cfg[i].snct, cfg[i].cnct, cfg[i].sbits, cfg[i].cbits);
        ws_pmd_params cl = mirror(ag);
        ws_pmd_policy pol;
        ws_pmd *s, *c;
        const uint8_t *out;
        size_t n, fresh, busy, idle;
        uint8_t *cc;

        ws_pmd_policy_default(&pol);
        pol.mem_level = cfg[i].mem_level;
        s = ws_pmd_create(&ag, &pol);
        c = ws_pmd_create(&cl, &pol);
        fresh = ws_pmd_memory(s);
        /* one message in, one out, as the server sees them */
        CHECK(ws_pmd_compress(c, msg, sizeof(msg), &out, &n) == WS_OK);
        cc = exact(out, n);
        ws_pmd_thread_cache_free();     /* count only what the server side lends */
        CHECK(ws_pmd_decompress(s, cc, n, 1 << 20, 1, &out, &n) == WS_OK);
        free(cc);
        CHECK(ws_pmd_compress(s, msg, sizeof(msg), &out, &n) == WS_OK);
        busy = ws_pmd_memory(s);
        ws_pmd_release(s);
        idle = ws_pmd_memory(s);
        printf("  %-54s %5zu %8zu %8zu %8zu %8zu\n", cfg[i].name, fresh, busy, idle,
               ws_pmd_memory_peak(s), ws_pmd_thread_cache_memory());
        if (ag.server_no_context_takeover && ag.client_no_context_takeover)
            CHECKM(idle == fresh, "%s: %zu", cfg[i].name, idle);
        ws_pmd_destroy(s);
        ws_pmd_destroy(c);
    }
    printf("  new: after ws_pmd_create; busy: after one message each way; idle: after\n"
           "  ws_pmd_release; peak: the most held at once; thread: the deflate stream that\n"
           "  each thread lends to its server_no_context_takeover connections (not theirs)\n\n");
    ws_pmd_thread_cache_free();
}

/* One direction: s deflates with ag's server_* parameters, c inflates (a peer using
 * the same code).  idle: ws_pmd_release(c) after every message, as when a connection
 * parks between messages (a context-takeover inflate stream is then rebuilt each time). */
static void bench(const char *name, ws_pmd_params ag, int level, int n_msgs, int idle)
{
    ws_pmd_params cl = mirror(ag);
    ws_pmd_policy pol;
    ws_pmd *s, *c;
    uint8_t msg[1024];
    size_t total_c = 0, n;
    const uint8_t *out;
    clock_t t0;
    double tc = 0, td = 0;
    int i, fails = 0;

    ws_pmd_policy_default(&pol);
    pol.level = level;
    s = ws_pmd_create(&ag, &pol);
    c = ws_pmd_create(&cl, &pol);
    rnd_seed(13);
    for (i = 0; i < n_msgs; i++) {
        gen(msg, sizeof(msg), K_TEXT);
        t0 = clock();
        if (ws_pmd_compress(s, msg, sizeof(msg), &out, &n) != WS_OK)
            fails++;
        tc += (double)(clock() - t0);
        total_c += n;
        t0 = clock();
        if (ws_pmd_decompress(c, out, n, sizeof(msg), 1, &out, &n) != WS_OK
            || n != sizeof(msg))
            fails++;
        if (idle)
            ws_pmd_release(c);
        td += (double)(clock() - t0);
    }
    CHECK(fails == 0);
    tc /= CLOCKS_PER_SEC;
    td /= CLOCKS_PER_SEC;
    printf("  %-38s compress %6.1f MB/s (%5.2f us/msg)  decompress %6.1f MB/s "
           "(%5.2f us/msg)  ratio %.2f\n", name,
           n_msgs * 1024.0 / 1e6 / tc, tc * 1e6 / n_msgs,
           n_msgs * 1024.0 / 1e6 / td, td * 1e6 / n_msgs,
           (double)total_c / (n_msgs * 1024.0));
    ws_pmd_destroy(s);
    ws_pmd_destroy(c);
}

/* Run one group of tests and say how long it took (CPU seconds). */
static void run(const char *name, void (*fn)(void))
{
    clock_t t0 = clock();
    unsigned f0 = g_fail;

    fn();
    printf("-- %s: %.1f s%s\n", name, (double)(clock() - t0) / CLOCKS_PER_SEC,
           g_fail > f0 ? ", FAILURES" : "");
}

int main(void)
{
    const char *q = getenv("TEST_DEFLATE_QUICK");

    g_quick = q && *q && *q != '0';
    printf("zlib %s\n", zlibVersion());
    run("RFC 7692 7.2.3 examples", test_rfc_examples);
    run("negotiation", test_negotiate);
    run("through the parser", test_parser);
    run("invalid data, UTF-8", test_invalid);
    run("block types, one byte at a time", test_blocks);
    run("max_out and the bomb", test_limits);
    run("round trips", test_round_trips);
    run("memory", test_memory);
    printf("throughput, 1 KiB JSON-like text messages (informational; CPU time):\n");
    {
        int nb = g_quick ? 2000 : 20000;
        bench("level 6, context takeover, windows 15", params(0, 0, 15, 15), 6, nb, 0);
        bench("level 6, no context takeover, 15", params(1, 1, 15, 15), 6, nb, 0);
        bench("level 6, context takeover, windows 9", params(0, 0, 9, 9), 6, nb, 0);
        bench("level 1, context takeover, windows 15", params(0, 0, 15, 15), 1, nb, 0);
        bench("level 1, no context takeover, 15", params(1, 1, 15, 15), 1, nb, 0);
        bench("level 1, context takeover, 12, idle", params(0, 0, 12, 12), 1, nb, 1);
        bench("level 1, context takeover, 15, idle", params(0, 0, 15, 15), 1, nb, 1);
        bench("level 1, no context takeover, 15, idle", params(1, 1, 15, 15), 1, nb, 1);
    }
    ws_pmd_destroy(NULL);
    ws_pmd_thread_cache_free();
    printf("%u passed, %u failed\n", g_pass, g_fail);
    return g_fail ? 1 : 0;
}
