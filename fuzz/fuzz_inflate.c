/*
 * fuzz_inflate - permessage-deflate (src/ws_deflate.c): bounded decompression of
 * arbitrary data against a reference zlib inflate, and compress/decompress round trips.
 *
 * Input: byte 0 = mode, byte 1 = max_out index, then messages, each a 2-byte little
 * endian length and that many bytes (the last one cut at the end of the input).
 *   byte 0 bit 0     client_no_context_takeover (a fresh window per message)
 *          bits 1-3  client_max_window_bits = 8 + value
 *          bit 4     text messages (validate UTF-8 while inflating)
 *          bit 5     round trip: compress the messages with a server-side ws_pmd
 *                    (server_* = the same bits) and decompress with a client-side one
 *          bit 6     ws_pmd_release() after every message (as the module does)
 *          bit 7     round trip: compression level 9 instead of 1
 *
 * Decompression checks, per message, against a reference that runs zlib directly and
 * keeps the window itself across messages (reset + the last 2^bits bytes of output as
 * dictionary after a BFINAL block, as RFC 7692 7.2.3.4 needs):
 *   - WS_OK exactly when the reference inflates cleanly (ending at a block boundary or
 *     a final block) to at most max_out bytes that are, for text, complete UTF-8, and
 *     then the bytes are the same;
 *   - WS_ERR_TOO_BIG exactly when more than max_out bytes come out (before any UTF-8
 *     error), WS_ERR_INFLATE for bad data, WS_ERR_UTF8 for bad text (where both data
 *     and text are bad, either is right: it depends on zlib's chunking);
 *   - errors are sticky; the output never exceeds max_out; the memory high-water mark
 *     stays within max_out plus zlib's inflate state and window (the bomb bound).
 */
#include <zlib.h>

#include "fuzz_ref.h"
#include "ws_deflate.h"
#include "ws_proto.h"

static const size_t MAX_OUT[16] = {
    1, 2, 3, 16, 125, 126, 1000, 1024, 4096, 16384, 65535, 65536, 100000,
    1u << 20, 4u << 20, 16u << 20
};

/* zlib's inflate state (~7 KiB) + window (32 KiB) + headers + struct ws_pmd, and with
 * context takeover, for a moment, the copy of the window kept for the next message
 * (32 KiB), rounded up */
#define ZLIB_INFLATE_BOUND (96u * 1024u)

static const uint8_t TAIL[4] = { 0x00, 0x00, 0xff, 0xff };

/* ---- the reference inflater ----------------------------------------------------- */

typedef struct {
    z_stream z;
    int live;
    z_stream snap;              /* z as it was before the current message */
    int snap_live;
    int bits;
    int no_takeover;
    uint8_t hist[32768];        /* the last output bytes, for the dictionary */
    size_t hist_len;
} ref_inflater;

typedef struct {
    uint8_t *out;
    size_t len;                 /* bytes produced, at most max_out + 1 */
    int data_bad;               /* zlib error, or data cut inside a block */
    int ended;                  /* a BFINAL block */
} ref_result;

static void ref_hist_add(ref_inflater *ri, const uint8_t *p, size_t n)
{
    if (n >= sizeof(ri->hist)) {
        memcpy(ri->hist, p + n - sizeof(ri->hist), sizeof(ri->hist));
        ri->hist_len = sizeof(ri->hist);
        return;
    }
    if (ri->hist_len + n > sizeof(ri->hist)) {
        size_t drop = ri->hist_len + n - sizeof(ri->hist);
        memmove(ri->hist, ri->hist + drop, ri->hist_len - drop);
        ri->hist_len -= drop;
    }
    memcpy(ri->hist + ri->hist_len, p, n);
    ri->hist_len += n;
}

static int ref_at_boundary(const z_stream *z)
{
    return (z->data_type & (128 | 256)) == 128 && (z->data_type & 63) == 0;
}

static void ref_message(ref_inflater *ri, const uint8_t *msg, size_t len, size_t max_out,
                        ref_result *rr)
{
    uint8_t *in = malloc(len + 4);
    int rc;

    CHECK(in != NULL);
    rr->out = malloc(max_out + 1);
    CHECK(rr->out != NULL);
    rr->len = 0;
    rr->data_bad = rr->ended = 0;
    if (len == 0) {
        /* An empty payload is no DEFLATE data at all (the empty message is 0x00, RFC
         * 7692 7.2.3.6), but zlib-based peers send and accept it as an empty message;
         * ws_deflate.c does too, leaving the stream as it was. */
        free(in);
        return;
    }
    memcpy(in, msg, len);
    memcpy(in + len, TAIL, 4);          /* RFC 7692 7.2.2 */
    if (!ri->live) {
        memset(&ri->z, 0, sizeof(ri->z));
        CHECK(inflateInit2(&ri->z, -ri->bits) == Z_OK);
        ri->live = 1;
    }
    if (ri->snap_live)
        inflateEnd(&ri->snap);
    CHECK(inflateCopy(&ri->snap, &ri->z) == Z_OK);
    ri->snap_live = 1;
    ri->z.next_in = in;
    ri->z.avail_in = (uInt)len;
    ri->z.next_out = rr->out;
    ri->z.avail_out = (uInt)(max_out + 1);
    do {
        rc = inflate(&ri->z, Z_SYNC_FLUSH);
    } while (rc == Z_OK && ri->z.avail_in > 0 && ri->z.avail_out > 0);
    /* The payload alone may end at a byte-aligned block boundary (a stored block
     * without the empty block after it): then the tail is not given (ws_deflate.c,
     * ws_inflate_at_boundary).  Otherwise it is (RFC 7692 7.2.2). */
    if (rc == Z_OK && ri->z.avail_in == 0 && ri->z.avail_out > 0 && !ref_at_boundary(&ri->z)) {
        ri->z.avail_in = 4;
        do {
            rc = inflate(&ri->z, Z_SYNC_FLUSH);
        } while (rc == Z_OK && ri->z.avail_in > 0 && ri->z.avail_out > 0);
    }
    rr->len = max_out + 1 - ri->z.avail_out;
    if (rc == Z_DATA_ERROR || rc == Z_NEED_DICT || rc == Z_MEM_ERROR)
        rr->data_bad = 1;
    else if (rc == Z_STREAM_END)
        rr->ended = 1;
    else if (ri->z.avail_out > 0 && !(ri->z.data_type & 128))
        rr->data_bad = 1;               /* all input used, stopped inside a block */
    free(in);
}

/*
 * The reference above inflates a message in one call into one buffer, and zlib checks
 * a match distance against the window *or* the output of the current call: a distance
 * longer than the agreed window passes if the bytes are in that buffer.  ws_deflate.c
 * inflates into growing chunks, so it may catch such a distance that the one-call
 * reference lets through (ws_deflate.h documents this).  When it does, ask a strict
 * reference: the same message from the same state, one output byte per call, so only
 * the window counts.  1 if that finds bad data before max_out + 1 bytes came out.
 */
static int ref_strict_bad(ref_inflater *ri, const uint8_t *msg, size_t len, size_t max_out)
{
    z_stream z;
    uint8_t *in = malloc(len + 4), byte;
    size_t produced = 0;
    int rc = Z_OK, bad = 0;

    CHECK(in != NULL);
    memcpy(in, msg, len);
    memcpy(in + len, TAIL, 4);
    CHECK(inflateCopy(&z, &ri->snap) == Z_OK);
    z.next_in = in;
    z.avail_in = (uInt)(len + 4);
    while (produced <= max_out) {
        z.next_out = &byte;
        z.avail_out = 1;
        rc = inflate(&z, Z_SYNC_FLUSH);
        produced += 1 - z.avail_out;
        if (rc != Z_OK)
            break;
        if (z.avail_in == 0 && z.avail_out == 1)
            break;                      /* all input taken, no more output */
    }
    if ((rc == Z_DATA_ERROR || rc == Z_NEED_DICT) && produced <= max_out)
        bad = 1;
    inflateEnd(&z);
    free(in);
    return bad;
}

static void ref_message_done(ref_inflater *ri, const ref_result *rr)
{
    ref_hist_add(ri, rr->out, rr->len);
    if (ri->no_takeover) {
        if (ri->live)
            inflateEnd(&ri->z);
        ri->live = 0;
        ri->hist_len = 0;
    } else if (rr->ended) {
        /* a new stream that still sees the window */
        CHECK(inflateReset(&ri->z) == Z_OK);
        if (ri->hist_len)
            CHECK(inflateSetDictionary(&ri->z, ri->hist, (uInt)ri->hist_len) == Z_OK);
    }
}

/* ---- input -------------------------------------------------------------------------- */

typedef struct {
    const uint8_t *p;
    size_t len;
} msg;

static size_t split_messages(const uint8_t *d, size_t n, msg *m, size_t max)
{
    size_t k = 0;

    while (n >= 2 && k < max) {
        size_t len = (size_t)(d[0] | d[1] << 8);
        d += 2;
        n -= 2;
        if (len > n)
            len = n;
        m[k].p = d;
        m[k].len = len;
        k++;
        d += len;
        n -= len;
    }
    return k;
}

/* ---- arbitrary data ---------------------------------------------------------------- */

static void fuzz_decompress(uint8_t mode, size_t max_out, const msg *m, size_t nmsg)
{
    ws_pmd_params ag;
    ws_pmd *pmd;
    ref_inflater *ri = calloc(1, sizeof(*ri));
    int text = (mode >> 4) & 1;
    size_t i;

    CHECK(ri != NULL);
    memset(&ag, 0, sizeof(ag));
    ag.client_no_context_takeover = mode & 1;
    ag.client_max_window_bits = 8 + ((mode >> 1) & 7);
    ag.server_max_window_bits = 15;
    pmd = ws_pmd_create(&ag, NULL);
    CHECK(pmd != NULL);
    /* documented: inflate with at least 9 bits (see ws_deflate.c) */
    ri->bits = ag.client_max_window_bits < 9 ? 9 : ag.client_max_window_bits;
    ri->no_takeover = ag.client_no_context_takeover;

    for (i = 0; i < nmsg; i++) {
        uint8_t *in = ref_dup(m[i].p, m[i].len);
        const uint8_t *out = NULL;
        size_t out_len = 0, plen;
        ref_result rr;
        int rc, too_big, utf8_bad, text_bad, complete = 0, strict_bad;

        rc = ws_pmd_decompress(pmd, in, m[i].len, max_out, text, &out, &out_len);
        ref_message(ri, m[i].p, m[i].len, max_out, &rr);

        CHECK(out != NULL);
        CHECK(out_len <= max_out);
        CHECK(ws_pmd_memory_peak(pmd) <= max_out + ZLIB_INFLATE_BOUND);
        too_big = rr.len > max_out;
        plen = too_big ? max_out : rr.len;
        utf8_bad = text && ref_utf8_scan(rr.out, plen, &complete) < plen;
        text_bad = text && !utf8_bad && !complete;

        /* the stricter distance check, only where the outcomes differ */
        strict_bad = rc == WS_ERR_INFLATE && !(rr.data_bad && !too_big)
                     && ref_strict_bad(ri, m[i].p, m[i].len, max_out);

        switch (rc) {
        case WS_OK:
            CHECK(!too_big && !rr.data_bad && !utf8_bad && !text_bad);
            CHECK(out_len == rr.len && memcmp(out, rr.out, out_len) == 0);
            break;
        case WS_ERR_TOO_BIG:
            CHECK(too_big && !utf8_bad);
            break;
        case WS_ERR_INFLATE:
            CHECK((rr.data_bad && !too_big) || strict_bad);
            break;
        case WS_ERR_UTF8:
            CHECK(utf8_bad || (text_bad && !too_big && !rr.data_bad));
            break;
        default:
            CHECK(!"unexpected return code");
        }
        /* and the other way round, where the outcome is certain */
        if (!too_big && !rr.data_bad && !utf8_bad && !text_bad)
            CHECK(rc == WS_OK || strict_bad);
        if (too_big && !utf8_bad)
            CHECK(rc == WS_ERR_TOO_BIG || strict_bad);
        if (rr.data_bad && !too_big && !utf8_bad)
            CHECK(rc == WS_ERR_INFLATE);
        if (utf8_bad && !rr.data_bad)
            CHECK(rc == WS_ERR_UTF8 || strict_bad);

        free(in);
        if (rc != WS_OK) {
            /* sticky: the connection is being failed */
            CHECK(ws_pmd_decompress(pmd, TAIL, 1, max_out, text, &out, &out_len) == rc);
            CHECK(out != NULL && out_len == 0);
            free(rr.out);
            break;
        }
        ref_message_done(ri, &rr);
        free(rr.out);
        if (mode & 0x40)
            ws_pmd_release(pmd);
    }
    ws_pmd_destroy(pmd);
    if (ri->live)
        inflateEnd(&ri->z);
    if (ri->snap_live)
        inflateEnd(&ri->snap);
    free(ri);
}

/* ---- round trips -------------------------------------------------------------------- */

static void fuzz_roundtrip(uint8_t mode, const msg *m, size_t nmsg)
{
    ws_pmd_params srv, cli;
    ws_pmd_policy pol;
    ws_pmd *s, *c;
    size_t i;

    memset(&srv, 0, sizeof(srv));
    srv.server_no_context_takeover = mode & 1;
    srv.server_max_window_bits = 8 + ((mode >> 1) & 7);
    srv.client_max_window_bits = 15;
    /* the client's decompressor reads the server_* side: swap the roles */
    memset(&cli, 0, sizeof(cli));
    cli.client_no_context_takeover = srv.server_no_context_takeover;
    cli.client_max_window_bits = srv.server_max_window_bits;
    cli.server_max_window_bits = 15;
    ws_pmd_policy_default(&pol);
    pol.level = mode & 0x80 ? 9 : 1;
    s = ws_pmd_create(&srv, &pol);
    c = ws_pmd_create(&cli, NULL);
    CHECK(s && c);

    for (i = 0; i < nmsg; i++) {
        const uint8_t *z = NULL, *out = NULL;
        size_t zlen = 0, out_len = 0;
        uint8_t *zcopy;
        int text = (mode >> 4) & 1 && ref_utf8_valid(m[i].p, m[i].len);

        CHECK(ws_pmd_compress(s, m[i].p, m[i].len, &z, &zlen) == WS_OK);
        CHECK(z != NULL && zlen > 0);
        zcopy = ref_dup(z, zlen);
        /* exactly the size fits */
        CHECK(ws_pmd_decompress(c, zcopy, zlen, m[i].len ? m[i].len : 1, text, &out,
                                &out_len) == WS_OK);
        CHECK(out_len == m[i].len && memcmp(out, m[i].p, out_len) == 0);
        /* one byte less does not, on a fresh window (no takeover) */
        if (srv.server_no_context_takeover && m[i].len > 1) {
            ws_pmd *t = ws_pmd_create(&cli, NULL);
            CHECK(t != NULL);
            CHECK(ws_pmd_decompress(t, zcopy, zlen, m[i].len - 1, 0, &out, &out_len)
                  == WS_ERR_TOO_BIG);
            CHECK(out_len == 0);
            CHECK(ws_pmd_memory_peak(t) <= m[i].len - 1 + ZLIB_INFLATE_BOUND);
            ws_pmd_destroy(t);
        }
        free(zcopy);
        if (mode & 0x40) {
            ws_pmd_release(s);
            ws_pmd_release(c);
        }
    }
    ws_pmd_destroy(s);
    ws_pmd_destroy(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    msg m[64];
    size_t nmsg;

    if (size < 2)
        return 0;
    nmsg = split_messages(data + 2, size - 2, m, 64);
    if (data[0] & 0x20)
        fuzz_roundtrip(data[0], m, nmsg);
    else
        fuzz_decompress(data[0], MAX_OUT[data[1] & 15], m, nmsg);
    return 0;
}
