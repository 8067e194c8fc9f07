/*
 * ws_deflate.c - permessage-deflate (RFC 7692): compression and bounded decompression
 * (the negotiation is in ws_pmd_negotiate.c).  See ws_deflate.h for the contracts.
 *
 * Notes beyond the header's comments:
 *
 *  - zlib and window bits 8.  Raw deflate refuses windowBits 8 (zlib >= 1.2.9 returns
 *    Z_STREAM_ERROR; older versions silently used 9, which is wrong on the wire).
 *    When the agreed server window is 8 we deflate with windowBits 9 and the Z_RLE
 *    strategy: its only matches have distance 1, which any window holds, so the
 *    stream is valid for a 256-byte window (RFC 7692 7.1.2.1) and still compresses
 *    runs.  Raw inflate does accept 8, but we inflate with at least 9: peers built
 *    on zlib < 1.2.9 that agreed to 8 really deflate with 9, and a larger inflate
 *    window accepts everything a smaller one does.
 *
 *  - Empty messages.  After one sync flush, deflate() with no input and another sync
 *    flush returns Z_BUF_ERROR and writes nothing (zlib avoids duplicate flushes), so
 *    an empty message is answered without zlib: 0x00 is an empty stored block with
 *    its 00 00 ff ff removed (RFC 7692 7.2.3.6), valid at any point of the stream,
 *    because deflate leaves the stream byte-aligned after every sync flush.
 *
 *  - The end of a message.  Once the 00 00 ff ff tail is inflated, valid data is at
 *    a block boundary (zlib reports that as bit 128 of data_type), or has ended with
 *    a BFINAL block (Z_STREAM_END; RFC 7692 7.2.3.4 allows that).  Data that stops
 *    inside a block is rejected rather than delivered cut short.  Bytes after a
 *    BFINAL block (at least our own tail) are ignored, as after any DEFLATE stream.
 *    With context takeover the window survives a BFINAL block: it is read out with
 *    inflateGetDictionary after every message and given to the next one's stream.
 *    A payload that ends at a byte-aligned block boundary gets no tail (see
 *    ws_inflate_at_boundary).
 *
 *  - Bombs.  The output buffer grows by doubling but never past max_out; when it is
 *    full, inflate gets a 1-byte scratch output to learn whether more would come.
 *    So a message that inflates to 1 GiB costs max_out bytes and stops there.
 */
#include "ws_deflate.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* The largest chunk handed to zlib at once: its counters are uInt. */
#define WS_ZCHUNK ((size_t)1 << 30)
/* The tail removed by the sender and restored by the receiver (RFC 7692 7.2.1/7.2.2). */
static const uint8_t ws_tail[4] = { 0x00, 0x00, 0xff, 0xff };
/* An empty message: an empty stored block without its tail (RFC 7692 7.2.3.6). */
static const uint8_t ws_empty_block[1] = { 0x00 };

/* ---- counting allocator for zlib ------------------------------------------------ */

/* Each block carries its size in front so zfree can subtract it.  The header is as
 * large as the strictest alignment so the block handed to zlib stays aligned. */
typedef union {
    size_t n;
    long double ld;
    long long ll;
    void *p;
} ws_zhdr;

static voidpf ws_zalloc(voidpf opaque, uInt items, uInt size)
{
    size_t *count = opaque;
    size_t n;
    ws_zhdr *h;

    if (size != 0 && items > (SIZE_MAX - sizeof(ws_zhdr)) / size)
        return Z_NULL;
    n = (size_t)items * size + sizeof(ws_zhdr);
    h = malloc(n);
    if (!h)
        return Z_NULL;
    h->n = n;
    *count += n;
    return h + 1;
}

static void ws_zfree(voidpf opaque, voidpf addr)
{
    size_t *count = opaque;
    ws_zhdr *h;

    if (!addr)
        return;
    h = (ws_zhdr *)addr - 1;
    *count -= h->n;
    free(h);
}

static void ws_zhooks(z_stream *z, size_t *count)
{
    memset(z, 0, sizeof(*z));
    z->zalloc = ws_zalloc;
    z->zfree = ws_zfree;
    z->opaque = count;
}

static int ws_clamp(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* ---- per-connection state -------------------------------------------------------- */

struct ws_pmd {
    ws_pmd_params p;
    int level, mem_level;
    int dbits, strategy;        /* deflateInit2 windowBits and strategy */
    int ibits;                  /* inflateInit2 windowBits */
    int def_live, inf_live;     /* def / inf are initialised */
    int inf_err;                /* sticky decompression error, 0 if none */
    z_stream def;               /* context-takeover deflate stream */
    z_stream inf;               /* inflate stream, live only within a call */
    uint8_t *win;               /* context takeover: the client's window between
                                 * messages (the last win_len bytes inflated) */
    size_t win_len, win_cap;
    size_t zmem;                /* bytes zlib holds through ws_zalloc */
    size_t peak;
    uint8_t *cbuf;              /* compress output */
    size_t ccap;
    uint8_t *dbuf;              /* decompress output */
    size_t dcap;
};

static void ws_note_peak(ws_pmd *pmd)
{
    size_t now = ws_pmd_memory(pmd);
    if (now > pmd->peak)
        pmd->peak = now;
}

ws_pmd *ws_pmd_create(const ws_pmd_params *agreed, const ws_pmd_policy *policy)
{
    ws_pmd_policy def;
    ws_pmd *pmd;

    if (!policy) {
        ws_pmd_policy_default(&def);
        policy = &def;
    }
    pmd = calloc(1, sizeof(*pmd));
    if (!pmd)
        return NULL;
    pmd->p = *agreed;
    pmd->p.server_max_window_bits = ws_clamp(agreed->server_max_window_bits, 8, 15);
    pmd->p.client_max_window_bits = ws_clamp(agreed->client_max_window_bits, 8, 15);
    pmd->level = policy->level < 0 ? Z_DEFAULT_COMPRESSION : ws_clamp(policy->level, 0, 9);
    pmd->mem_level = ws_clamp(policy->mem_level, 1, 9);
    /* zlib cannot deflate with a 256-byte window: see the notes at the top */
    if (pmd->p.server_max_window_bits == 8) {
        pmd->dbits = 9;
        pmd->strategy = Z_RLE;
    } else {
        pmd->dbits = pmd->p.server_max_window_bits;
        pmd->strategy = Z_DEFAULT_STRATEGY;
    }
    pmd->ibits = pmd->p.client_max_window_bits < 9 ? 9 : pmd->p.client_max_window_bits;
    pmd->peak = sizeof(*pmd);
    return pmd;
}

static void ws_inflate_end(ws_pmd *pmd)
{
    if (pmd->inf_live) {
        inflateEnd(&pmd->inf);
        pmd->inf_live = 0;
    }
}

static int ws_inflate_park(ws_pmd *pmd);

void ws_pmd_release(ws_pmd *pmd)
{
    if (!pmd)
        return;
    /* idle: of a client's context keep only the window's bytes (out of memory: the
     * stream stays, which costs memory but nothing else) */
    if (pmd->inf_live && !pmd->inf_err && !pmd->p.client_no_context_takeover)
        ws_inflate_park(pmd);
    free(pmd->cbuf);
    pmd->cbuf = NULL;
    pmd->ccap = 0;
    free(pmd->dbuf);
    pmd->dbuf = NULL;
    pmd->dcap = 0;
}

void ws_pmd_destroy(ws_pmd *pmd)
{
    if (!pmd)
        return;
    if (pmd->def_live)
        deflateEnd(&pmd->def);
    ws_inflate_end(pmd);
    ws_pmd_release(pmd);
    free(pmd->win);
    free(pmd);
}

size_t ws_pmd_memory(const ws_pmd *pmd)
{
    return pmd ? sizeof(*pmd) + pmd->zmem + pmd->ccap + pmd->dcap + pmd->win_cap : 0;
}

size_t ws_pmd_memory_peak(const ws_pmd *pmd)
{
    return pmd ? pmd->peak : 0;
}

/* Output buffers up to this size are kept from one call to the next (a malloc per
 * message is cheap, but so is keeping a few KiB); bigger ones are dropped at the
 * next call, so a large message is not pinned until ws_pmd_release(). */
#define WS_PMD_KEEP ((size_t)64 * 1024)

static void ws_shrink(uint8_t **buf, size_t *cap)
{
    if (*cap > WS_PMD_KEEP) {
        free(*buf);
        *buf = NULL;
        *cap = 0;
    }
}

/* Make *buf at least need bytes, keeping its contents.  need <= limit is the
 * caller's business.  Returns 0 if out of memory (the old buffer stays). */
static int ws_grow(ws_pmd *pmd, uint8_t **buf, size_t *cap, size_t need)
{
    uint8_t *nb;

    if (need <= *cap)
        return 1;
    nb = realloc(*buf, need);
    if (!nb)
        return 0;
    *buf = nb;
    *cap = need;
    ws_note_peak(pmd);
    return 1;
}

/* ---- the per-thread deflate stream (server_no_context_takeover) ----------------- */

/* With no context takeover, nothing of the deflate stream outlives a message, so one
 * stream per thread serves every such connection the thread handles; it is only held
 * within ws_pmd_compress() and left reset (deflateReset keeps the allocations). */
static __thread struct {
    z_stream z;
    int live;
    int level, bits, mem_level, strategy;
    size_t mem;
} ws_tcache;

static z_stream *ws_tcache_get(const ws_pmd *pmd)
{
    if (ws_tcache.live && ws_tcache.level == pmd->level && ws_tcache.bits == pmd->dbits
        && ws_tcache.mem_level == pmd->mem_level && ws_tcache.strategy == pmd->strategy)
        return &ws_tcache.z;
    ws_pmd_thread_cache_free();
    ws_zhooks(&ws_tcache.z, &ws_tcache.mem);
    if (deflateInit2(&ws_tcache.z, pmd->level, Z_DEFLATED, -pmd->dbits, pmd->mem_level,
                     pmd->strategy) != Z_OK) {
        deflateEnd(&ws_tcache.z);      /* harmless on a failed init */
        return NULL;
    }
    ws_tcache.live = 1;
    ws_tcache.level = pmd->level;
    ws_tcache.bits = pmd->dbits;
    ws_tcache.mem_level = pmd->mem_level;
    ws_tcache.strategy = pmd->strategy;
    return &ws_tcache.z;
}

size_t ws_pmd_thread_cache_memory(void)
{
    return ws_tcache.mem;
}

void ws_pmd_thread_cache_free(void)
{
    if (ws_tcache.live) {
        deflateEnd(&ws_tcache.z);
        ws_tcache.live = 0;
    }
}

/* ---- compression (RFC 7692 7.2.1) ------------------------------------------------ */

/* The deflate stream for the next message, initialised if need be; NULL if out of
 * memory (nothing is left half-initialised). */
static z_stream *ws_deflate_stream(ws_pmd *pmd)
{
    int rc;

    if (pmd->p.server_no_context_takeover) {
        /* RFC 7692 7.1.1.1: a new window for every message */
        return ws_tcache_get(pmd);
    }
    /* RFC 7692 7.2.1: with context takeover the window carries over */
    if (!pmd->def_live) {
        ws_zhooks(&pmd->def, &pmd->zmem);
        rc = deflateInit2(&pmd->def, pmd->level, Z_DEFLATED, -pmd->dbits,
                          pmd->mem_level, pmd->strategy);
        ws_note_peak(pmd);
        if (rc != Z_OK) {
            deflateEnd(&pmd->def);
            return NULL;
        }
        pmd->def_live = 1;
    }
    return &pmd->def;
}

/* Deflate in[0..len) into pmd->cbuf, ending with a sync flush; *have is the number of
 * bytes written, the 00 00 ff ff tail included.  Returns 0 if out of memory or if zlib
 * fails (the stream is then in an unknown state). */
static int ws_deflate_message(ws_pmd *pmd, z_stream *z, const uint8_t *in, size_t len,
                              size_t *out_have)
{
    size_t pos = 0, have = 0, cap;
    int rc;

    /* A first guess; text usually compresses 3x or better, and it doubles if not. */
    ws_shrink(&pmd->cbuf, &pmd->ccap);
    cap = len / 2 + 64;
    if (cap > 65536)
        cap = 65536;
    if (!ws_grow(pmd, &pmd->cbuf, &pmd->ccap, cap))
        return 0;

    z->avail_in = 0;
    for (;;) {
        int flush;
        uInt give;

        if (z->avail_in == 0 && pos < len) {
            size_t n = len - pos < WS_ZCHUNK ? len - pos : WS_ZCHUNK;
            z->next_in = (Bytef *)(uintptr_t)(in + pos);   /* zlib does not write it */
            z->avail_in = (uInt)n;
            pos += n;
        }
        /* RFC 7692 7.2.1: sync flush at the end of the message, which ends the
         * output with an empty stored block, i.e. 00 00 ff ff */
        flush = pos == len ? Z_SYNC_FLUSH : Z_NO_FLUSH;
        if (have == pmd->ccap) {
            size_t ncap = pmd->ccap * 2;
            if (ncap < pmd->ccap || !ws_grow(pmd, &pmd->cbuf, &pmd->ccap, ncap))
                return 0;
        }
        give = pmd->ccap - have < WS_ZCHUNK ? (uInt)(pmd->ccap - have) : (uInt)WS_ZCHUNK;
        z->next_out = pmd->cbuf + have;
        z->avail_out = give;
        rc = deflate(z, flush);
        have += give - z->avail_out;
        if (rc != Z_OK && rc != Z_BUF_ERROR)
            return 0;       /* Z_STREAM_ERROR: cannot happen with a sane stream */
        /* zlib: the flush is complete when deflate leaves output space unused */
        if (flush == Z_SYNC_FLUSH && z->avail_in == 0 && z->avail_out > 0)
            break;
    }
    *out_have = have;
    return 1;
}

static int ws_compress_fail(ws_pmd *pmd, const uint8_t **out, size_t *out_len)
{
    /* The stream may hold part of a message the peer will never see. */
    if (pmd->p.server_no_context_takeover) {
        ws_pmd_thread_cache_free();
    } else if (pmd->def_live) {
        deflateEnd(&pmd->def);
        pmd->def_live = 0;
    }
    *out = ws_empty_block;
    *out_len = 0;
    return WS_ERR_NOMEM;
}

int ws_pmd_compress(ws_pmd *pmd, const uint8_t *in, size_t len,
                    const uint8_t **out, size_t *out_len)
{
    z_stream *z;
    size_t have;

    *out = ws_empty_block;
    *out_len = sizeof(ws_empty_block);
    /* An empty message: an empty stored block minus its tail (see the notes). */
    if (len == 0)
        return WS_OK;

    z = ws_deflate_stream(pmd);
    if (!z)
        return WS_ERR_NOMEM;
    if (!ws_deflate_message(pmd, z, in, len, &have))
        return ws_compress_fail(pmd, out, out_len);
    z->next_in = Z_NULL;
    z->next_out = Z_NULL;
    if (pmd->p.server_no_context_takeover)
        deflateReset(z);

    /* RFC 7692 7.2.1: remove the 00 00 ff ff the sync flush ended with (the check
     * cannot fail: zlib always ends a sync flush so) */
    if (have < 4 || memcmp(pmd->cbuf + have - 4, ws_tail, 4) != 0)
        return ws_compress_fail(pmd, out, out_len);
    *out = pmd->cbuf;
    *out_len = have - 4;
    return WS_OK;
}

/* ---- decompression (RFC 7692 7.2.2) ---------------------------------------------- */

/* With context takeover, when the connection goes idle (ws_pmd_release) or a message
 * ended with a BFINAL block: keep the window's bytes, not zlib's inflate state (about
 * 7 KiB) and window buffer; the next message starts a new stream with them as its
 * dictionary (RFC 7692 7.1.1: the window carries over; after a BFINAL block too,
 * 7.2.3.4).  An idle connection then holds at most 2^client_max_window_bits bytes,
 * fewer when it has received fewer; a busy one keeps its stream. */
static int ws_inflate_park(ws_pmd *pmd)
{
    uInt n = 0;

    if (inflateGetDictionary(&pmd->inf, Z_NULL, &n) != Z_OK)
        return WS_ERR_NOMEM;
    if (n > pmd->win_cap) {
        uint8_t *w = realloc(pmd->win, n);
        if (!w)
            return WS_ERR_NOMEM;
        pmd->win = w;
        pmd->win_cap = n;
        ws_note_peak(pmd);
    }
    if (n && inflateGetDictionary(&pmd->inf, pmd->win, &n) != Z_OK)
        return WS_ERR_NOMEM;
    pmd->win_len = n;
    ws_inflate_end(pmd);
    return WS_OK;
}

/* A message ends at a block boundary on a byte boundary (a non-final stored block, or
 * a Huffman block that happens to end there) with the payload alone: the 00 00 ff ff
 * tail would start another block and stop inside its header, so it is not inflated.
 * A payload per RFC 7692 7.2.1 never ends so (it ends inside the header of the empty
 * stored block whose 00 00 ff ff was removed); senders that leave out that empty block
 * do (zlib-based peers accept their messages). */
static int ws_inflate_at_boundary(const z_stream *z)
{
    return (z->data_type & (128 | 256)) == 128 && (z->data_type & 63) == 0;
}

static int ws_decompress_fail(ws_pmd *pmd, int err, const uint8_t **out, size_t *out_len)
{
    pmd->inf_err = err;
    ws_inflate_end(pmd);
    free(pmd->win);
    pmd->win = NULL;
    pmd->win_len = pmd->win_cap = 0;
    free(pmd->dbuf);
    pmd->dbuf = NULL;
    pmd->dcap = 0;
    *out = ws_empty_block;
    *out_len = 0;
    return err;
}

/* One message on its way through ws_pmd_decompress(). */
typedef struct {
    const uint8_t *in;
    size_t len, pos;            /* the payload, and how much of it zlib has been given */
    size_t limit;               /* max_out, or SIZE_MAX for none */
    size_t have;                /* bytes inflated into pmd->dbuf */
    int text;
    int tail_given, ended, probing;
    int drained;            /* the last inflate call had output space left over */
    int boundary;           /* the last call that made progress ended between blocks */
    int done;               /* the message is all inflated */
    uint8_t probe;          /* the scratch byte once dbuf is full at max_out */
    ws_utf8 utf8;
} ws_inflate_msg;

/* Make pmd->inf live: a new stream, with the kept window as its dictionary. */
static int ws_inflate_open(ws_pmd *pmd)
{
    z_stream *z = &pmd->inf;
    int rc;

    if (pmd->inf_live)
        return WS_OK;
    ws_zhooks(z, &pmd->zmem);
    rc = inflateInit2(z, -pmd->ibits);
    if (rc == Z_OK && pmd->win_len)
        rc = inflateSetDictionary(z, pmd->win, (uInt)pmd->win_len);
    ws_note_peak(pmd);
    /* the window is in zlib's now: do not hold it twice while inflating */
    free(pmd->win);
    pmd->win = NULL;
    pmd->win_len = pmd->win_cap = 0;
    if (rc != Z_OK) {
        inflateEnd(z);
        return WS_ERR_NOMEM;
    }
    pmd->inf_live = 1;
    return WS_OK;
}

/* Set up m for a message and give pmd->dbuf its first size. */
static int ws_inflate_begin(ws_pmd *pmd, ws_inflate_msg *m, const uint8_t *in, size_t len,
                            size_t max_out, int text)
{
    size_t cap;

    memset(m, 0, sizeof(*m));
    m->in = in;
    m->len = len;
    m->limit = max_out ? max_out : SIZE_MAX;
    m->text = text;
    ws_utf8_init(&m->utf8);

    /* A first guess at the size: 4x the input, at most 64 KiB, and then doubling. */
    ws_shrink(&pmd->dbuf, &pmd->dcap);
    cap = len < 16384 ? len * 4 + 256 : 65536;
    if (cap > m->limit)
        cap = m->limit;
    if (!ws_grow(pmd, &pmd->dbuf, &pmd->dcap, cap))
        return WS_ERR_NOMEM;
    pmd->inf.avail_in = 0;
    return WS_OK;
}

/* Give zlib more input if it has used up what it had: the next chunk of the payload,
 * then the tail.  Returns 1 when the payload is all inflated and ended at a block
 * boundary, so the tail is not given (see ws_inflate_at_boundary). */
static int ws_inflate_input(z_stream *z, ws_inflate_msg *m)
{
    if (z->avail_in != 0)
        return 0;
    if (m->pos < m->len) {
        size_t n = m->len - m->pos < WS_ZCHUNK ? m->len - m->pos : WS_ZCHUNK;
        z->next_in = (Bytef *)(uintptr_t)(m->in + m->pos);
        z->avail_in = (uInt)n;
        m->pos += n;
    } else if (!m->tail_given && m->drained) {
        /* the payload is all inflated: where did it end? */
        if (m->boundary)
            return 1;
        /* RFC 7692 7.2.2: append 00 00 ff ff to the payload */
        z->next_in = (Bytef *)(uintptr_t)ws_tail;
        z->avail_in = sizeof(ws_tail);
        m->tail_given = 1;
    }
    return 0;
}

/* Give zlib output space: the rest of pmd->dbuf, grown by doubling up to max_out, and
 * once it is full at max_out, the scratch byte.  *give is the space given. */
static int ws_inflate_output(ws_pmd *pmd, ws_inflate_msg *m, uInt *give)
{
    z_stream *z = &pmd->inf;
    /* the usable part of the buffer: a kept buffer may be larger than max_out */
    size_t room = pmd->dcap < m->limit ? pmd->dcap : m->limit;

    if (m->have == room && !m->probing) {
        if (room == m->limit) {
            /* Full at max_out: ask for one byte more into a scratch byte. */
            m->probing = 1;
        } else {
            size_t ncap = pmd->dcap * 2;
            if (ncap < pmd->dcap || ncap > m->limit)
                ncap = m->limit;
            if (!ws_grow(pmd, &pmd->dbuf, &pmd->dcap, ncap))
                return WS_ERR_NOMEM;
            room = pmd->dcap < m->limit ? pmd->dcap : m->limit;
        }
    }
    if (m->probing) {
        z->next_out = &m->probe;
        z->avail_out = *give = 1;
    } else {
        *give = room - m->have < WS_ZCHUNK ? (uInt)(room - m->have) : (uInt)WS_ZCHUNK;
        z->next_out = pmd->dbuf + m->have;
        z->avail_out = *give;
    }
    return WS_OK;
}

/* One inflate call and what it says; sets m->done when the message is over. */
static int ws_inflate_step(ws_pmd *pmd, ws_inflate_msg *m)
{
    z_stream *z = &pmd->inf;
    size_t before = m->have;
    uInt give;
    int rc;

    if (ws_inflate_output(pmd, m, &give) != WS_OK)
        return WS_ERR_NOMEM;
    rc = inflate(z, Z_SYNC_FLUSH);
    m->drained = z->avail_out > 0;
    /* zlib reports a block boundary only for a call that got there: one without
     * input or output space (Z_BUF_ERROR) leaves the state as it was */
    if (rc != Z_BUF_ERROR)
        m->boundary = ws_inflate_at_boundary(z);
    if (m->probing) {
        if (z->avail_out == 0)      /* one byte past max_out (RFC 6455 10.4) */
            return WS_ERR_TOO_BIG;
    } else {
        m->have += give - z->avail_out;
    }
    if (rc == Z_DATA_ERROR || rc == Z_NEED_DICT)
        return WS_ERR_INFLATE;
    if (rc == Z_MEM_ERROR || rc == Z_STREAM_ERROR)
        return WS_ERR_NOMEM;
    ws_note_peak(pmd);      /* inflate allocates its window on first output */
    /* RFC 6455 8.1: text must be UTF-8; fail as soon as it cannot be */
    if (m->text && m->have > before
        && ws_utf8_feed(&m->utf8, pmd->dbuf + before, m->have - before) != WS_OK)
        return WS_ERR_UTF8;
    if (rc == Z_STREAM_END) {
        m->ended = 1;       /* a BFINAL block: what follows is not DEFLATE data */
        m->done = 1;
    } else if (m->tail_given && z->avail_in == 0 && z->avail_out > 0) {
        /* Z_SYNC_FLUSH gives all the output it can: space left over after the whole
         * input means the message is done (Z_BUF_ERROR: no progress was possible). */
        m->done = 1;
    }
    return WS_OK;
}

/* After the last inflate call: did the message end where it may, and what of the
 * stream is kept for the next one? */
static int ws_inflate_finish(ws_pmd *pmd, const ws_inflate_msg *m)
{
    z_stream *z = &pmd->inf;

    z->next_in = Z_NULL;
    z->next_out = Z_NULL;
    /* RFC 7692 7.2.2: with the tail restored, a message ends at a block boundary
     * (data_type bit 128); anything else is DEFLATE data cut inside a block. */
    if (!m->ended && !(m->boundary || (z->data_type & 128)))
        return WS_ERR_INFLATE;
    if (m->text && !ws_utf8_complete(&m->utf8))
        return WS_ERR_UTF8;

    if (pmd->p.client_no_context_takeover) {
        /* RFC 7692 7.1.1.2: the client starts every message with an empty window,
         * so nothing needs keeping: an idle connection holds no inflate state */
        ws_inflate_end(pmd);
    } else if (m->ended) {
        return ws_inflate_park(pmd);
    }
    return WS_OK;
}

int ws_pmd_decompress(ws_pmd *pmd, const uint8_t *in, size_t len, size_t max_out,
                      int text, const uint8_t **out, size_t *out_len)
{
    ws_inflate_msg m;
    int rc;

    *out = ws_empty_block;
    *out_len = 0;
    if (pmd->inf_err)
        return pmd->inf_err;
    /* An empty payload is not DEFLATE data (the empty message is 0x00, RFC 7692
     * 7.2.3.6), but some senders send it for an empty message, and zlib-based
     * receivers read it as one.  We do too, without touching the stream: inflating
     * 00 00 ff ff alone would leave it inside a stored block. */
    if (len == 0)
        return WS_OK;
    rc = ws_inflate_open(pmd);
    if (rc == WS_OK)
        rc = ws_inflate_begin(pmd, &m, in, len, max_out, text);
    while (rc == WS_OK && !m.done) {
        if (ws_inflate_input(&pmd->inf, &m))
            break;
        rc = ws_inflate_step(pmd, &m);
    }
    if (rc == WS_OK)
        rc = ws_inflate_finish(pmd, &m);
    if (rc != WS_OK)
        return ws_decompress_fail(pmd, rc, out, out_len);
    *out = pmd->dbuf;
    *out_len = m.have;
    return WS_OK;
}
