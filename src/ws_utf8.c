/*
 * ws_utf8.c - incremental, fail-fast UTF-8 validation (RFC 3629, RFC 6455 8.1).
 *
 * RFC 6455 8.1 says an endpoint must fail the connection when a text message is not
 * valid UTF-8; we want to know at the first byte that makes that certain, even when
 * the message arrives in pieces.  Instead of decoding code points we track, for the
 * character in progress, how many continuation bytes are still due and which range
 * the next one must fall in.  Narrowing the range of the byte after the lead byte
 * (Unicode Table 3-7 "well-formed byte sequences") is what rejects overlong forms,
 * surrogates and values above U+10FFFF at the exact byte where they become certain.
 */
#include "ws_proto.h"

#include <string.h>

/* v->state: 0 at a character boundary, ST_REJECT after an error (sticky), otherwise
 * bits 16-23 = continuation bytes still due, bits 8-15 / 0-7 = lowest / highest
 * value allowed for the next byte.  v->codep is not needed and stays 0. */
#define ST(need, lo, hi) ((uint32_t)(need) << 16 | (uint32_t)(lo) << 8 | (uint32_t)(hi))
#define ST_NEED(st) ((st) >> 16)
#define ST_LO(st) (((st) >> 8) & 0xFF)
#define ST_HI(st) ((st) & 0xFF)
#define ST_REJECT 0xFFFFFFFFu

/* State after non-ASCII lead byte b (RFC 3629 4). */
static uint32_t lead_state(uint8_t b)
{
    if (b < 0xC2)
        return ST_REJECT;              /* 80-BF stray continuation; C0/C1 only overlong */
    if (b < 0xE0)
        return ST(1, 0x80, 0xBF);      /* U+0080..U+07FF */
    if (b == 0xE0)
        return ST(2, 0xA0, 0xBF);      /* E0 80-9F would be overlong (< U+0800) */
    if (b == 0xED)
        return ST(2, 0x80, 0x9F);      /* ED A0-BF would be surrogates U+D800..DFFF */
    if (b < 0xF0)
        return ST(2, 0x80, 0xBF);
    if (b == 0xF0)
        return ST(3, 0x90, 0xBF);      /* F0 80-8F would be overlong (< U+10000) */
    if (b < 0xF4)
        return ST(3, 0x80, 0xBF);
    if (b == 0xF4)
        return ST(3, 0x80, 0x8F);      /* F4 90-BF would be above U+10FFFF */
    return ST_REJECT;                  /* F5-FF never occur in UTF-8 */
}

void ws_utf8_init(ws_utf8 *v)
{
    v->state = 0;
    v->codep = 0;
}

int ws_utf8_feed(ws_utf8 *v, const uint8_t *p, size_t n)
{
    uint32_t st = v->state;
    size_t i = 0;
    uint64_t w;

    while (i < n && st != ST_REJECT) {
        if (st == 0) {
            /* Fast path: text is mostly ASCII, so skip 8 bytes at a time while no byte
             * has its top bit set (memcpy: p need not be aligned). */
            while (n - i >= 8) {
                memcpy(&w, p + i, 8);
                if (w & UINT64_C(0x8080808080808080))
                    break;
                i += 8;
            }
            while (i < n && p[i] < 0x80)
                i++;
            if (i < n)
                st = lead_state(p[i++]);
        } else if (p[i] < ST_LO(st) || p[i] > ST_HI(st)) {
            st = ST_REJECT;            /* not a continuation byte, or one out of range */
        } else {
            i++;
            st = ST_NEED(st) > 1 ? ST(ST_NEED(st) - 1, 0x80, 0xBF) : 0;
        }
    }
    v->state = st;
    return st == ST_REJECT ? WS_ERR_UTF8 : WS_OK;
}

int ws_utf8_complete(const ws_utf8 *v)
{
    return v->state == 0;
}

int ws_utf8_valid(const uint8_t *p, size_t n)
{
    ws_utf8 v;

    ws_utf8_init(&v);
    return ws_utf8_feed(&v, p, n) == WS_OK && ws_utf8_complete(&v);
}
