/*
 * ws_close.c - close frame payloads (RFC 6455 5.5.1, 7.4).
 */
#include "ws_proto.h"

#include <string.h>

/* RFC 6455 5.5: a control payload is at most 125 bytes, 2 of which are the code. */
#define WS_REASON_MAX 123

int ws_close_code_valid(unsigned code)
{
    /* RFC 6455 7.4.1/7.4.2 and the IANA registry: 1004 is reserved, 1005/1006/1015
     * must never be sent, 1016-2999 are reserved for the protocol, 3000-4999 belong
     * to libraries and applications; everything else is not a close code at all. */
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014)
        || (code >= 3000 && code <= 4999);
}

int ws_close_parse(const uint8_t *p, size_t len, unsigned *code,
                   const char **reason, size_t *reason_len)
{
    *reason = (const char *)p;
    *reason_len = 0;
    /* RFC 6455 5.5.1: the body is optional; 7.1.5: no code received means 1005 */
    if (len == 0) {
        *code = WS_CLOSE_NO_STATUS;
        return WS_OK;
    }
    /* RFC 6455 5.5.1: a body starts with a 2-byte code, so 1 byte is malformed */
    if (len < 2)
        return WS_ERR_PROTOCOL;
    *code = (unsigned)p[0] << 8 | p[1];
    /* RFC 6455 7.4: only codes a peer may send */
    if (!ws_close_code_valid(*code))
        return WS_ERR_PROTOCOL;
    /* RFC 6455 5.5.1: the reason is UTF-8 (8.1: invalid UTF-8 fails with 1007) */
    if (!ws_utf8_valid(p + 2, len - 2))
        return WS_ERR_UTF8;
    *reason = (const char *)p + 2;
    *reason_len = len - 2;
    return WS_OK;
}

size_t ws_close_reason_cut(const char *reason, size_t len, size_t max)
{
    size_t n = len;
    if (n > max) {
        /* Cut before a continuation byte (10xxxxxx) would split a character, so the
         * cut reason stays valid UTF-8 (RFC 6455 5.5.1). */
        n = max;
        while (n > 0 && ((unsigned char)reason[n] & 0xC0) == 0x80)
            n--;
    }
    return n;
}

size_t ws_close_build(uint8_t *out, unsigned code, const char *reason, size_t reason_len)
{
    size_t n = reason_len;

    /* RFC 6455 7.4.1: 1005 means "no code" and must not appear on the wire, so send an
     * empty body (7.1.5), which the peer reads back as 1005. */
    if (code == 0 || code == WS_CLOSE_NO_STATUS)
        return 0;
    out[0] = (uint8_t)(code >> 8);
    out[1] = (uint8_t)code;
    n = ws_close_reason_cut(reason, n, WS_REASON_MAX);
    if (n)
        memcpy(out + 2, reason, n);
    return 2 + n;
}
