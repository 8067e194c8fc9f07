/*
 * fuzz_frame - the push frame parser (ws_parser_feed, src/ws_frame.c).
 *
 * Input: byte 0 = settings, byte 1 = number of cut points (low 4 bits), 2 bytes per
 * cut point (little endian, modulo the stream length + 1), then the byte stream a
 * client would send after the handshake.
 *   byte 0 bit 0  require_mask (a server's parser)
 *          bit 1  validate_utf8
 *          bit 2  allowed_rsv = RSV1 (permessage-deflate negotiated)
 *          bit 3  also feed the stream one byte per call
 *          bits 4-7  max_message, an index into MAX_MESSAGE[]
 *
 * The stream is parsed (a) in one call per event, (b) cut at the cut points, and
 * (c) optionally one byte at a time.  Every run must produce exactly the events and
 * the final status of a reference parser written from RFC 6455 5 over the whole
 * buffer (ref_parse below), and every call must keep the API contract:
 *   consumed <= len; WS_NEED_MORE consumes everything; an event consumes at least one
 *   byte (no progress without consuming); events are well-formed (data never NULL,
 *   sizes within the limits, text valid UTF-8, close codes valid); after an error
 *   every call fails without consuming; after a close everything is swallowed.
 */
#include "fuzz_ref.h"
#include "ws_proto.h"

static const uint64_t MAX_MESSAGE[16] = {
    0, 1, 2, 125, 126, 127, 128, 1000, 65535, 65536, 65537, 100000,
    1u << 20, 16u << 20, UINT64_C(1) << 62, 0
};

typedef struct {
    uint64_t max_message;
    int require_mask, validate_utf8;
    unsigned allowed_rsv;
} settings;

typedef struct {
    int type;
    unsigned opcode, close_code;
    int compressed;
    size_t len;
    uint8_t *data;
} record;

#define ST_CLOSED 1         /* a close event was delivered; otherwise WS_NEED_MORE or an error */

typedef struct {
    record *ev;
    size_t n, cap;
    int status;
} result;

static void add_event(result *r, int type, unsigned opcode, int compressed,
                      const uint8_t *data, size_t len, unsigned close_code)
{
    record *e;

    if (r->n == r->cap) {
        r->cap = r->cap ? 2 * r->cap : 16;
        r->ev = realloc(r->ev, r->cap * sizeof(*r->ev));
        CHECK(r->ev != NULL);
    }
    e = &r->ev[r->n++];
    e->type = type;
    e->opcode = opcode;
    e->compressed = compressed;
    e->len = len;
    e->data = ref_dup(data, len);       /* reading all of it: ASan checks the range */
    e->close_code = close_code;
}

static void free_result(result *r)
{
    size_t i;
    for (i = 0; i < r->n; i++)
        free(r->ev[i].data);
    free(r->ev);
}

static void compare(const result *a, const result *b)
{
    size_t i;

    CHECK(a->status == b->status);
    CHECK(a->n == b->n);
    for (i = 0; i < a->n; i++) {
        const record *x = &a->ev[i], *y = &b->ev[i];
        CHECK(x->type == y->type);
        CHECK(x->opcode == y->opcode);
        CHECK(x->compressed == y->compressed);
        CHECK(x->close_code == y->close_code);
        CHECK(x->len == y->len);
        CHECK(memcmp(x->data, y->data, x->len) == 0);
    }
}

/* ---- the reference: whole buffer, frame by frame, as RFC 6455 5 reads ------------ */

static void ref_parse(const uint8_t *s, size_t n, const settings *cfg, result *r)
{
    size_t pos = 0;
    int in_msg = 0, msg_text = 0, msg_comp = 0;
    unsigned msg_op = 0;
    uint8_t *msg = NULL;
    size_t msg_len = 0;

    r->status = WS_NEED_MORE;
    while (pos < n) {
        size_t have = n - pos, ext, hlen, avail, i;
        int fin, masked, control;
        unsigned rsv, op, len7;
        uint64_t len;
        const uint8_t *key;
        uint8_t *pl;

        if (have < 2)
            break;                      /* nothing is decided by the first byte alone */
        fin = s[pos] >> 7;
        rsv = s[pos] & 0x70;
        op = s[pos] & 0x0F;
        masked = s[pos + 1] >> 7;
        len7 = s[pos + 1] & 0x7F;
        control = op >= 8;

        /* 5.2: known opcodes only; RSV bits only as negotiated; 7692 6.1: RSV1 only
         * on a message's first frame; 5.1: client frames masked; 5.5: control frames
         * final and <= 125 bytes; 5.4: continuation only inside a message, a new
         * message only outside one */
        if (!(op <= 2 || (op >= 8 && op <= 10))
            || (rsv & ~cfg->allowed_rsv)
            || ((rsv & 0x40) && (control || op == 0))
            || (cfg->require_mask && !masked)
            || (control && (!fin || len7 > 125))
            || (op == 0 && !in_msg)
            || (op == 1 || op == 2 ? in_msg : 0)) {
            r->status = WS_ERR_PROTOCOL;
            goto out;
        }
        if (op == 1 || op == 2) {
            in_msg = 1;
            msg_op = op;
            msg_text = op == 1;
            msg_comp = (rsv & 0x40) != 0;
            msg_len = 0;
        }
        ext = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
        if (have < 2 + ext)
            break;
        len = len7;
        if (ext) {
            for (len = 0, i = 0; i < ext; i++)
                len = len << 8 | s[pos + 2 + i];
            /* 5.2: the top bit of a 64-bit length is 0; lengths are minimal */
            if ((len >> 63) || len < (ext == 2 ? 126 : 65536)) {
                r->status = WS_ERR_PROTOCOL;
                goto out;
            }
        }
        /* 10.4: a data message larger than the limit is refused at the header */
        if (!control && cfg->max_message && len > cfg->max_message - msg_len) {
            r->status = WS_ERR_TOO_BIG;
            goto out;
        }
        hlen = 2 + ext + (masked ? 4 : 0);
        if (have < hlen)
            break;
        key = masked ? s + pos + 2 + ext : NULL;
        avail = have - hlen < len ? have - hlen : (size_t)len;
        pl = ref_dup(s + pos + hlen, avail);
        for (i = 0; key && i < avail; i++)
            pl[i] ^= key[i % 4];

        if (control) {
            if (avail < len) {
                free(pl);
                break;
            }
            if (op == 8) {
                /* 5.5.1 / 7.1.5: no body is 1005; a body is a valid code + UTF-8 */
                unsigned code = 1005;
                if (len == 1) {
                    r->status = WS_ERR_PROTOCOL;
                } else if (len >= 2 && !ref_close_code_ok(code = pl[0] << 8 | pl[1])) {
                    r->status = WS_ERR_PROTOCOL;
                } else if (len >= 2 && !ref_utf8_valid(pl + 2, len - 2)) {
                    r->status = WS_ERR_UTF8;
                } else {
                    add_event(r, WS_EV_CLOSE, 8, 0, len >= 2 ? pl + 2 : pl,
                              len >= 2 ? len - 2 : 0, code);
                    r->status = ST_CLOSED;
                }
                free(pl);
                goto out;
            }
            add_event(r, op == 9 ? WS_EV_PING : WS_EV_PONG, op, 0, pl, avail, 0);
            free(pl);
            pos += hlen + (size_t)len;
            continue;
        }
        msg = realloc(msg, msg_len + avail + 1);
        CHECK(msg != NULL);
        memcpy(msg + msg_len, pl, avail);
        msg_len += avail;
        free(pl);
        /* 8.1: fail as soon as the text cannot be valid UTF-8 */
        if (msg_text && cfg->validate_utf8 && !msg_comp) {
            int complete;
            if (ref_utf8_scan(msg, msg_len, &complete) < msg_len) {
                r->status = WS_ERR_UTF8;
                goto out;
            }
            if (avail == len && fin && !complete) {
                r->status = WS_ERR_UTF8;
                goto out;
            }
        }
        if (avail < len)
            break;
        if (fin) {
            add_event(r, WS_EV_MESSAGE, msg_op, msg_comp, msg, msg_len, 0);
            in_msg = 0;
            msg_len = 0;
        }
        pos += hlen + (size_t)len;
    }
out:
    free(msg);
}

/* ---- the parser under test -------------------------------------------------------- */

static void check_event(const ws_event *ev, const settings *cfg)
{
    CHECK(ev->data != NULL);
    switch (ev->type) {
    case WS_EV_MESSAGE:
        CHECK(ev->opcode == WS_OP_TEXT || ev->opcode == WS_OP_BINARY);
        CHECK(!ev->compressed || (cfg->allowed_rsv & WS_RSV1));
        CHECK(!cfg->max_message || ev->len <= cfg->max_message);
        if (ev->opcode == WS_OP_TEXT && cfg->validate_utf8 && !ev->compressed)
            CHECK(ref_utf8_valid(ev->data, ev->len));
        break;
    case WS_EV_PING:
    case WS_EV_PONG:
        CHECK(ev->opcode == (ev->type == WS_EV_PING ? WS_OP_PING : WS_OP_PONG));
        CHECK(ev->len <= 125 && !ev->compressed);
        break;
    case WS_EV_CLOSE:
        CHECK(ev->opcode == WS_OP_CLOSE);
        CHECK(ev->close_code == 1005 ? ev->len == 0 : ref_close_code_ok(ev->close_code));
        CHECK(ev->len <= 123);
        CHECK(ref_utf8_valid(ev->data, ev->len));
        break;
    default:
        CHECK(!"unknown event type");
    }
}

/* Feed s[0..n) in the pieces between cuts[0..ncuts) (sorted, 0 and n included). */
static void ws_parse(const uint8_t *s, size_t n, const size_t *cuts, size_t ncuts,
                     const settings *cfg, result *r)
{
    ws_parser p;
    uint8_t *buf = ref_dup(s, n);       /* the parser unmasks in place */
    size_t k, consumed;
    ws_event ev;
    int rc;

    ws_parser_init(&p, cfg->max_message, cfg->require_mask);
    p.allowed_rsv = cfg->allowed_rsv;
    p.validate_utf8 = cfg->validate_utf8;
    r->status = WS_NEED_MORE;
    for (k = 0; k + 1 < ncuts; k++) {
        size_t off = cuts[k], end = cuts[k + 1];
        for (;;) {
            size_t len = end - off;
            rc = ws_parser_feed(&p, buf + off, len, &consumed, &ev);
            CHECK(consumed <= len);
            if (r->status == ST_CLOSED) {
                /* RFC 6455 5.5.1: after the close, input is swallowed */
                CHECK(rc == WS_NEED_MORE && consumed == len && ev.type == WS_EV_NONE);
                break;
            }
            if (rc == WS_NEED_MORE) {
                CHECK(consumed == len && ev.type == WS_EV_NONE);
                break;
            }
            if (rc != WS_OK) {
                CHECK(rc == WS_ERR_PROTOCOL || rc == WS_ERR_UTF8 || rc == WS_ERR_TOO_BIG
                      || rc == WS_ERR_NOMEM);
                CHECK(ev.type == WS_EV_NONE);
                CHECK(ws_error_close_code(rc) >= 1002 && ws_error_close_code(rc) <= 1011);
                r->status = rc;
                /* sticky: nothing more is taken */
                rc = ws_parser_feed(&p, buf + off + consumed, len - consumed, &consumed, &ev);
                CHECK(rc < 0 && rc != WS_NEED_MORE && consumed == 0);
                goto done;
            }
            CHECK(consumed > 0);        /* an event ends with the byte that completes it */
            check_event(&ev, cfg);
            add_event(r, ev.type, ev.opcode, ev.compressed, ev.data, ev.len,
                      ev.type == WS_EV_CLOSE ? ev.close_code : 0);
            if (ev.type == WS_EV_CLOSE)
                r->status = ST_CLOSED;
            off += consumed;
            if (off == end)
                break;
        }
    }
    /* an empty feed changes nothing */
    rc = ws_parser_feed(&p, buf, 0, &consumed, &ev);
    CHECK(rc == WS_NEED_MORE && consumed == 0 && ev.type == WS_EV_NONE);
done:
    ws_parser_free(&p);
    free(buf);
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    settings cfg;
    size_t ncut, cuts[18], whole[2], i, n;
    const uint8_t *s;
    result ref = { 0 }, a = { 0 }, b = { 0 };

    if (size < 2)
        return 0;
    cfg.require_mask = data[0] & 1;
    cfg.validate_utf8 = (data[0] >> 1) & 1;
    cfg.allowed_rsv = data[0] & 4 ? WS_RSV1 : 0;
    cfg.max_message = MAX_MESSAGE[data[0] >> 4];
    ncut = data[1] & 0x0F;
    if (size < 2 + 2 * ncut)
        return 0;
    s = data + 2 + 2 * ncut;
    n = size - 2 - 2 * ncut;

    ref_parse(s, n, &cfg, &ref);

    whole[0] = 0;
    whole[1] = n;
    ws_parse(s, n, whole, 2, &cfg, &a);
    compare(&ref, &a);

    cuts[0] = 0;
    for (i = 0; i < ncut; i++)
        cuts[1 + i] = (size_t)(data[2 + 2 * i] | data[3 + 2 * i] << 8) % (n + 1);
    cuts[1 + ncut] = n;
    qsort(cuts + 1, ncut, sizeof(size_t), cmp_size);
    ws_parse(s, n, cuts, ncut + 2, &cfg, &b);
    compare(&ref, &b);

    if (data[0] & 8) {
        size_t *bytewise = malloc((n + 1) * sizeof(size_t));
        result c = { 0 };
        CHECK(bytewise != NULL);
        for (i = 0; i <= n; i++)
            bytewise[i] = i;
        ws_parse(s, n, bytewise, n + 1, &cfg, &c);
        compare(&ref, &c);
        free_result(&c);
        free(bytewise);
    }

    free_result(&ref);
    free_result(&a);
    free_result(&b);
    return 0;
}
