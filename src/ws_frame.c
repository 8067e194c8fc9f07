/*
 * ws_frame.c - errors, masking, frame headers, the push parser and the handshake
 * helpers of the RFC 6455 protocol core.  See ws_proto.h for the contracts.
 *
 * The parser, at a glance (one event per call at most):
 *
 *   WS_PS_HEADER  --header complete-->  WS_PS_PAYLOAD  --payload complete-->  WS_PS_HEADER
 *        |  (header bytes are collected one by one       |  (a zero-length frame goes
 *        |   into p->hdr and checked as soon as the      |   straight through)
 *        |   bytes that decide a check are in)           |
 *        +--------------- any error ---------------------+-->  WS_PS_FAILED  (sticky)
 *                                      close frame delivered -->  WS_PS_CLOSED (sticky)
 *
 * Parser notes beyond the header's comments:
 *  - p->in_message is set from the header of a message's first data frame until the
 *    message is delivered.  Between frames that is exactly "a fragmented message is in
 *    progress"; during an unfragmented frame's payload it also tells feed() not to
 *    reset the reassembly buffer.
 *  - The reassembly buffer is reset at the start of the feed() call after a message
 *    was delivered, because the event's data must stay valid until that call.
 *  - Event data is never NULL, even when len is 0.
 *  - ws_parser_init() leaves allowed_rsv = 0 and validate_utf8 = 1; the caller changes
 *    them before the first feed (e.g. WS_RSV1 after negotiating permessage-deflate).
 */
#include "ws_proto.h"

#include <stdlib.h>
#include <string.h>

/* ---- errors -------------------------------------------------------------------- */

/* The one table mapping errors to close codes (RFC 6455 7.4.1) and texts. */
static const struct {
    int err;
    unsigned code;
    const char *text;
} ws_errors[] = {
    { WS_OK,           WS_CLOSE_NORMAL,       "no error" },
    { WS_NEED_MORE,    WS_CLOSE_NORMAL,       "need more input" },
    { WS_ERR_PROTOCOL, WS_CLOSE_PROTOCOL,     "protocol error" },
    { WS_ERR_UTF8,     WS_CLOSE_INVALID_DATA, "invalid UTF-8" },
    { WS_ERR_TOO_BIG,  WS_CLOSE_TOO_BIG,      "message too big" },
    { WS_ERR_INFLATE,  WS_CLOSE_INVALID_DATA, "invalid compressed data" },
    { WS_ERR_NOMEM,    WS_CLOSE_INTERNAL,     "out of memory" },
};
#define WS_NERRORS (sizeof(ws_errors) / sizeof(ws_errors[0]))

unsigned ws_error_close_code(int err)
{
    size_t i;

    for (i = 0; i < WS_NERRORS; i++)
        if (ws_errors[i].err == err)
            return ws_errors[i].code;
    return WS_CLOSE_INTERNAL;   /* an unknown error is our fault, not the peer's */
}

const char *ws_error_text(int err)
{
    size_t i;

    for (i = 0; i < WS_NERRORS; i++)
        if (ws_errors[i].err == err)
            return ws_errors[i].text;
    return "internal error";
}

/* ---- masking (RFC 6455 5.3) ---------------------------------------------------- */

void ws_mask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t offset)
{
    unsigned k = (unsigned)(offset & 3);    /* index of the key byte for p[0] */
    uint8_t key8[8];
    uint64_t kw, w;
    size_t i;

    /* Head: single bytes until p is 8-byte aligned, so the word loop loads aligned. */
    for (; n > 0 && ((uintptr_t)p & 7) != 0; p++, n--, k = (k + 1) & 3)
        *p ^= mask[k];
    /* Body: a word spans two whole key periods, so one rotated 8-byte key fits every
     * word.  The key is laid out in memory order, which makes this endian-neutral. */
    if (n >= 8) {
        for (i = 0; i < 8; i++)
            key8[i] = mask[(k + i) & 3];
        memcpy(&kw, key8, 8);
        for (; n >= 8; p += 8, n -= 8) {
            memcpy(&w, p, 8);
            w ^= kw;
            memcpy(p, &w, 8);
        }
    }
    /* Tail: k is unchanged by the body (8 is a multiple of 4). */
    for (i = 0; i < n; i++)
        p[i] ^= mask[(k + i) & 3];
}

/* ---- frame writing (RFC 6455 5.2) ---------------------------------------------- */

size_t ws_frame_header(uint8_t *out, int fin, unsigned flags, unsigned opcode,
                       uint64_t payload_len, const uint8_t *mask)
{
    size_t n = 2, i;

    out[0] = (uint8_t)((fin ? 0x80 : 0) | (flags & 0x70) | (opcode & 0x0F));
    /* RFC 6455 5.2: the shortest of the 7-bit, 16-bit and 64-bit length forms */
    if (payload_len < 126) {
        out[1] = (uint8_t)payload_len;
    } else if (payload_len <= 0xFFFF) {
        out[1] = 126;
        out[2] = (uint8_t)(payload_len >> 8);
        out[3] = (uint8_t)payload_len;
        n = 4;
    } else {
        out[1] = 127;
        for (i = 0; i < 8; i++)
            out[2 + i] = (uint8_t)(payload_len >> (56 - 8 * i));
        n = 10;
    }
    if (mask) {
        out[1] |= 0x80;
        memcpy(out + n, mask, 4);
        n += 4;
    }
    return n;
}

/* ---- the parser ---------------------------------------------------------------- */

#define WS_BUF_MIN  1024u           /* first reassembly allocation */
#define WS_BUF_KEEP (64u * 1024u)   /* shrink back to this after a bigger message */

static const uint8_t ws_empty[1];   /* data of empty events, so data is never NULL */

#define IS_CONTROL(op) (((op) & 0x08) != 0)    /* RFC 6455 5.5 */

void ws_parser_init(ws_parser *p, uint64_t max_message, int require_mask)
{
    memset(p, 0, sizeof(*p));
    p->max_message = max_message;
    p->require_mask = require_mask != 0;
    p->validate_utf8 = 1;
    p->state = WS_PS_HEADER;
}

void ws_parser_free(ws_parser *p)
{
    free(p->buf);
    p->buf = NULL;
    p->buf_len = p->buf_cap = 0;
}

void ws_parser_release(ws_parser *p)
{
    if (!p->in_message) {
        ws_parser_free(p);
    }
}

/* Forget the delivered message; keep the buffer, but not a big one (memory pinning). */
static void buf_reset(ws_parser *p)
{
    uint8_t *b;

    p->buf_len = 0;
    if (p->buf_cap > WS_BUF_KEEP) {
        b = realloc(p->buf, WS_BUF_KEEP);
        if (b) {                    /* on failure keep the bigger block: still valid */
            p->buf = b;
            p->buf_cap = WS_BUF_KEEP;
        }
    }
}

/* Append n arriving bytes; the buffer grows geometrically, never past max_message.
 * check_length() has already guaranteed buf_len + frame_len fits the limit. */
static int buf_append(ws_parser *p, const uint8_t *d, size_t n)
{
    size_t need = p->buf_len + n, cap;
    uint8_t *b;

    if (n == 0)
        return WS_OK;
    if (need > p->buf_cap) {
        cap = p->buf_cap > SIZE_MAX / 2 ? SIZE_MAX : 2 * p->buf_cap;
        if (cap < WS_BUF_MIN)
            cap = WS_BUF_MIN;
        if (cap < need)
            cap = need;
        if (p->max_message && cap > p->max_message)
            cap = (size_t)p->max_message;   /* >= need, see check_length() */
        b = realloc(p->buf, cap);
        if (!b)
            return WS_ERR_NOMEM;
        p->buf = b;
        p->buf_cap = cap;
    }
    memcpy(p->buf + p->buf_len, d, n);
    p->buf_len = need;
    return WS_OK;
}

/* Text messages are validated here unless compressed (the inflater validates those). */
static int utf8_checked(const ws_parser *p)
{
    return p->validate_utf8 && p->msg_opcode == WS_OP_TEXT && !p->msg_compressed;
}

/* Extended payload length bytes announced by the 7-bit length (RFC 6455 5.2). */
static size_t ext_len_size(uint8_t b1)
{
    b1 &= 0x7F;
    return b1 == 126 ? 2 : b1 == 127 ? 8 : 0;
}

/* Checks decided by the first two header bytes. */
static int check_base(ws_parser *p)
{
    unsigned op = p->hdr[0] & 0x0F;

    p->fin = p->hdr[0] >> 7;
    p->rsv = p->hdr[0] & 0x70;
    p->opcode = op;
    p->masked = p->hdr[1] >> 7;

    /* RFC 6455 5.2: opcodes 0x3-0x7 and 0xB-0xF are reserved */
    if ((op > WS_OP_BINARY && op < WS_OP_CLOSE) || op > WS_OP_PONG)
        return WS_ERR_PROTOCOL;
    /* RFC 6455 5.2: RSV bits must be 0 unless a negotiated extension defines them */
    if (p->rsv & ~p->allowed_rsv)
        return WS_ERR_PROTOCOL;
    /* RFC 7692 6.1: RSV1 (compressed) only on the first frame of a data message */
    if ((p->rsv & WS_RSV1) && (IS_CONTROL(op) || op == WS_OP_CONT))
        return WS_ERR_PROTOCOL;
    /* RFC 6455 5.1: a server fails the connection on an unmasked client frame */
    if (p->require_mask && !p->masked)
        return WS_ERR_PROTOCOL;
    if (IS_CONTROL(op)) {
        /* RFC 6455 5.5: control frames must not be fragmented */
        if (!p->fin)
            return WS_ERR_PROTOCOL;
        /* RFC 6455 5.5: control frames carry at most 125 bytes (7-bit length only) */
        if ((p->hdr[1] & 0x7F) > 125)
            return WS_ERR_PROTOCOL;
    } else if (op == WS_OP_CONT) {
        /* RFC 6455 5.4: a continuation frame needs a message to continue */
        if (!p->in_message)
            return WS_ERR_PROTOCOL;
    } else {
        /* RFC 6455 5.4: fragments of a message must not interleave with another data
         * message */
        if (p->in_message)
            return WS_ERR_PROTOCOL;
        p->in_message = 1;
        p->msg_opcode = op;
        p->msg_compressed = (p->rsv & WS_RSV1) != 0;
        ws_utf8_init(&p->utf8);
    }
    return WS_OK;
}

/* Checks decided by the payload length (before the masking key arrives). */
static int check_length(ws_parser *p, size_t ext)
{
    uint64_t n = p->hdr[1] & 0x7F, limit = SIZE_MAX;
    size_t i;

    if (ext) {
        for (n = 0, i = 0; i < ext; i++)
            n = n << 8 | p->hdr[2 + i];
        /* RFC 6455 5.2: the most significant bit of a 64-bit length must be 0 */
        if (n >> 63)
            return WS_ERR_PROTOCOL;
        /* RFC 6455 5.2: "the minimal number of bytes MUST be used to encode the length" */
        if (n < (ext == 2 ? 126u : 65536u))
            return WS_ERR_PROTOCOL;
    }
    p->frame_len = n;
    if (!IS_CONTROL(p->opcode)) {
        /* RFC 6455 10.4: refuse an oversized message before buffering any of it.  With
         * no limit the message must still fit in memory (matters where size_t is 32 bits). */
        if (p->max_message && p->max_message < limit)
            limit = p->max_message;
        if (n > limit - p->buf_len)
            return WS_ERR_TOO_BIG;
    }
    return WS_OK;
}

/* Called after each header byte: WS_OK once the header is complete, WS_NEED_MORE
 * before, an error as soon as the bytes in decide one. */
static int header_byte(ws_parser *p)
{
    size_t have = p->hdr_have, ext;
    int rc;

    if (have < 2)
        return WS_NEED_MORE;
    ext = ext_len_size(p->hdr[1]);
    if (have == 2 && (rc = check_base(p)) != WS_OK)
        return rc;
    if (have == 2 + ext && (rc = check_length(p, ext)) != WS_OK)
        return rc;
    if (have < 2 + ext + (p->masked ? 4 : 0))
        return WS_NEED_MORE;
    if (p->masked)
        memcpy(p->mask, p->hdr + 2 + ext, 4);
    return WS_OK;
}

/* Take n payload bytes at d (all that is here, up to the end of the frame).  direct:
 * the whole frame is a whole message in the caller's input, delivered without a copy. */
static int payload(ws_parser *p, uint8_t *d, size_t n, int direct)
{
    if (p->masked)
        ws_mask(d, n, p->mask, p->frame_done);
    if (IS_CONTROL(p->opcode)) {
        memcpy(p->ctl + p->frame_done, d, n);      /* <= 125 bytes, see check_base() */
    } else {
        /* RFC 6455 8.1: fail fast on invalid UTF-8 in a text message, even mid-frame */
        if (utf8_checked(p) && ws_utf8_feed(&p->utf8, d, n) != WS_OK)
            return WS_ERR_UTF8;
        if (!direct && buf_append(p, d, n) != WS_OK)
            return WS_ERR_NOMEM;
    }
    p->frame_done += n;
    return WS_OK;
}

/* The frame's payload is complete: WS_OK with an event, WS_NEED_MORE if the frame was
 * a non-final fragment, or an error.  direct: see payload(); the frame's payload. */
static int frame_end(ws_parser *p, const uint8_t *direct, ws_event *ev)
{
    const char *reason;
    int rc;

    p->state = WS_PS_HEADER;
    p->hdr_have = 0;
    ev->opcode = p->opcode;
    switch (p->opcode) {
    case WS_OP_PING:
    case WS_OP_PONG:
        ev->type = p->opcode == WS_OP_PING ? WS_EV_PING : WS_EV_PONG;
        ev->data = p->ctl;
        ev->len = (size_t)p->frame_len;
        return WS_OK;
    case WS_OP_CLOSE:
        /* RFC 6455 5.5.1: code and reason are validated by ws_close_parse() */
        rc = ws_close_parse(p->ctl, (size_t)p->frame_len, &ev->close_code, &reason, &ev->len);
        if (rc != WS_OK)
            return rc;
        ev->type = WS_EV_CLOSE;
        ev->data = (const uint8_t *)reason;
        /* RFC 6455 5.5.1: after a close frame nothing more is processed */
        p->state = WS_PS_CLOSED;
        return WS_OK;
    default:
        /* RFC 6455 5.4: a message ends with the frame that has FIN set */
        if (!p->fin)
            return WS_NEED_MORE;
        /* RFC 6455 8.1: the whole text message must be valid UTF-8, so it must not end
         * inside a character */
        if (utf8_checked(p) && !ws_utf8_complete(&p->utf8))
            return WS_ERR_UTF8;
        ev->type = WS_EV_MESSAGE;
        ev->opcode = p->msg_opcode;
        ev->compressed = p->msg_compressed;
        ev->data = direct ? direct : p->buf ? p->buf : ws_empty;
        ev->len = direct ? (size_t)p->frame_len : p->buf_len;
        p->in_message = 0;
        return WS_OK;
    }
}

int ws_parser_feed(ws_parser *p, uint8_t *in, size_t len, size_t *consumed, ws_event *ev)
{
    size_t pos = 0, n;
    int rc, direct;

    memset(ev, 0, sizeof(*ev));
    *consumed = 0;
    if (p->state == WS_PS_FAILED)
        return WS_ERR_PROTOCOL;     /* the connection is being failed: refuse input */
    if (p->state == WS_PS_CLOSED) {
        *consumed = len;            /* RFC 6455 5.5.1: discard data after a close */
        return WS_NEED_MORE;
    }
    if (!p->in_message)
        buf_reset(p);               /* the last event's data is no longer promised */
    if (len == 0)
        return WS_NEED_MORE;

    for (;;) {
        if (p->state == WS_PS_HEADER) {
            if (pos == len)
                break;
            p->hdr[p->hdr_have++] = in[pos++];
            rc = header_byte(p);
            if (rc == WS_NEED_MORE)
                continue;
            if (rc != WS_OK)
                goto fail;
            p->state = WS_PS_PAYLOAD;
            p->frame_done = 0;
        }
        /* WS_PS_PAYLOAD: take what is here of the rest of the frame (maybe nothing) */
        n = len - pos;
        if (n > p->frame_len - p->frame_done)
            n = (size_t)(p->frame_len - p->frame_done);
        /* Fast path: an unfragmented data message wholly in this input */
        direct = p->frame_done == 0 && n == p->frame_len && p->fin
                 && (p->opcode == WS_OP_TEXT || p->opcode == WS_OP_BINARY);
        rc = payload(p, in + pos, n, direct);
        pos += n;
        if (rc != WS_OK)
            goto fail;
        if (p->frame_done < p->frame_len)
            break;                  /* all input used, the frame goes on */
        rc = frame_end(p, direct ? in + pos - n : NULL, ev);
        if (rc == WS_OK) {
            *consumed = pos;
            return WS_OK;
        }
        if (rc != WS_NEED_MORE)
            goto fail;
    }
    *consumed = pos;
    return WS_NEED_MORE;

fail:
    p->state = WS_PS_FAILED;
    *consumed = pos;
    memset(ev, 0, sizeof(*ev));
    return rc;
}

/* ---- handshake helpers ---------------------------------------------------------- */

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int ws_key_valid(const char *key)
{
    int i, v = 0;

    if (!key)
        return 0;
    /* RFC 6455 4.2.1: the key is a base64-encoded 16-byte value: 22 characters and "==".
     * A NUL stops the loop (not in the alphabet), so a short key is never over-read. */
    for (i = 0; i < 22; i++)
        if ((v = b64_value(key[i])) < 0)
            return 0;
    /* RFC 4648 3.5: 22 characters carry 132 bits for 128, and a canonical encoder
     * leaves the last character's 4 unused bits zero. */
    return (v & 0x0F) == 0 && key[22] == '=' && key[23] == '=' && key[24] == '\0';
}

int ws_next_token(const char **pos, const char **tok, size_t *toklen)
{
    const char *s = *pos, *e, *end;

    if (!s)
        return 0;
    /* RFC 7230 7: list elements are separated by commas with optional white space,
     * and empty elements are allowed and ignored. */
    while (*s == ' ' || *s == '\t' || *s == ',')
        s++;
    if (*s == '\0') {
        *pos = s;
        return 0;
    }
    for (e = s; *e != '\0' && *e != ','; e++)
        ;
    for (end = e; end[-1] == ' ' || end[-1] == '\t'; end--)
        ;                           /* stops at s at the latest: *s is not white space */
    *tok = s;
    *toklen = (size_t)(end - s);
    *pos = e;
    return 1;
}
