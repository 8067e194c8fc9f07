/*
 * fuzz_close - close frame payloads (src/ws_close.c): ws_close_parse against the
 * rules of RFC 6455 5.5.1 / 7.4 as written in fuzz_ref.h, and the round trip
 * ws_close_parse(ws_close_build(code, reason)).
 *
 * Input: byte 0 = mode (bit 0: force the code into 1000..4999 so round trips are
 * frequent), then the payload: bytes 1-2 are also the code for ws_close_build and
 * the rest its reason.
 */
#include "fuzz_ref.h"
#include "ws_proto.h"

#define REASON_MAX 123      /* RFC 6455 5.5: 125-byte control payload - 2-byte code */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    unsigned c;

    (void)argc;
    (void)argv;
    /* the code table once, exhaustively (and a little past 16 bits) */
    for (c = 0; c < 70000; c++)
        CHECK(ws_close_code_valid(c) == ref_close_code_ok(c));
    return 0;
}

static void check_parse(const uint8_t *payload, size_t len)
{
    uint8_t *p = ref_dup(payload, len);
    unsigned code = 0;
    const char *reason = NULL;
    size_t rlen = 999;
    int rc = ws_close_parse(p, len, &code, &reason, &rlen);

    if (len == 0) {
        CHECK(rc == WS_OK && code == 1005 && rlen == 0);
    } else if (len == 1) {
        CHECK(rc == WS_ERR_PROTOCOL);
    } else if (!ref_close_code_ok((unsigned)p[0] << 8 | p[1])) {
        CHECK(rc == WS_ERR_PROTOCOL);
    } else if (!ref_utf8_valid(p + 2, len - 2)) {
        CHECK(rc == WS_ERR_UTF8);
    } else {
        CHECK(rc == WS_OK);
        CHECK(code == ((unsigned)p[0] << 8 | p[1]));
        CHECK(reason == (const char *)p + 2 && rlen == len - 2);
    }
    free(p);
}

static void check_build(unsigned code, const uint8_t *reason_in, size_t len)
{
    uint8_t *reason = ref_dup(reason_in, len);
    uint8_t *out = malloc(125);            /* exactly the documented minimum */
    size_t n, want;
    int valid = ref_utf8_valid(reason, len);

    CHECK(out != NULL);
    n = ws_close_build(out, code, (const char *)reason, len);
    CHECK(n <= 125);
    if (code == 0 || code == 1005) {
        CHECK(n == 0);
        goto done;
    }
    CHECK(n >= 2);
    CHECK(out[0] == (uint8_t)(code >> 8) && out[1] == (uint8_t)code);
    CHECK(memcmp(out + 2, reason, n - 2) == 0);
    /* the cut: everything if it fits, else the longest prefix <= 123 bytes that does
     * not end inside a character (the byte after it is not a continuation byte) */
    if (len <= REASON_MAX) {
        want = len;
    } else {
        want = REASON_MAX;
        while (want > 0 && (reason[want] & 0xC0) == 0x80)
            want--;
    }
    CHECK(n - 2 == want);
    if (valid) {
        unsigned pcode = 0;
        const char *preason = NULL;
        size_t plen = 0;
        int rc;

        /* a valid reason stays valid when cut */
        CHECK(ref_utf8_valid(out + 2, n - 2));
        rc = ws_close_parse(out, n, &pcode, &preason, &plen);
        if (ref_close_code_ok(code & 0xFFFF)) {
            CHECK(rc == WS_OK);
            CHECK(pcode == (code & 0xFFFF));
            CHECK(plen == n - 2 && memcmp(preason, reason, plen) == 0);
        } else {
            CHECK(rc == WS_ERR_PROTOCOL);
        }
    }
done:
    free(out);
    free(reason);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned code;

    if (size < 1)
        return 0;
    check_parse(data + 1, size - 1);
    code = size >= 3 ? (unsigned)data[1] << 8 | data[2] : 0;
    if (data[0] & 1)
        code = 1000 + code % 4000;
    check_build(code, size > 3 ? data + 3 : data, size > 3 ? size - 3 : 0);
    /* a code wider than 16 bits (callers validate codes first) goes out as its low
     * 16 bits: no overflow of out, and parse sees those bits */
    if (data[0] & 2)
        check_build(code | 0x10000u, size > 3 ? data + 3 : data, size > 3 ? size - 3 : 0);
    return 0;
}
