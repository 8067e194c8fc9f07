/*
 * fuzz_handshake - the handshake helpers of the protocol core: ws_key_valid
 * (RFC 6455 4.2.1) against an independent strict base64 decoder, ws_next_token
 * (RFC 7230 7 list syntax) against a plain split-and-trim, and ws_pmd_negotiate
 * (RFC 7692 5, 7) for memory safety and the consistency of what it agrees to.
 *
 * Input: byte 0 and byte 1 = negotiation policy and response buffer size, then a
 * header value; it is used as a NUL-terminated string (an embedded NUL ends it
 * early, as it would in httpd) in an exact-size heap copy, so over-reads crash.
 */
#include "fuzz_ref.h"
#include "ws_deflate.h"
#include "ws_proto.h"

static void check_key(const char *s, const uint8_t *raw, size_t rawlen)
{
    uint8_t dec[256 / 4 * 3 + 3];
    char enc[32];
    long n = -1;
    int want;

    if (strlen(s) == 24)
        n = ref_b64_decode(s, dec);
    /* RFC 6455 4.2.1: a base64-encoded 16-byte value */
    want = n == 16;
    CHECK(ws_key_valid(s) == want);
    if (want) {
        ref_b64_encode(dec, 16, enc);
        CHECK(strcmp(enc, s) == 0);              /* canonical */
    }
    /* any 16 bytes, encoded, are a valid key */
    if (rawlen >= 16) {
        ref_b64_encode(raw, 16, enc);
        CHECK(ws_key_valid(enc));
        enc[23] = 'A';                           /* "=A": not padding any more */
        CHECK(!ws_key_valid(enc));
    }
    CHECK(!ws_key_valid(NULL));
}

static void check_tokens(const char *s)
{
    const char *pos = s, *tok, *r = s;
    size_t toklen, len = strlen(s), count = 0;

    for (;;) {
        /* reference: the next comma-separated element, trimmed of SP/HT, non-empty */
        const char *rs = NULL, *re = NULL;
        int got;

        while (*r) {
            const char *e = strchr(r, ',');
            const char *a = r, *b;
            if (!e)
                e = r + strlen(r);
            b = e;
            while (a < b && (*a == ' ' || *a == '\t'))
                a++;
            while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
                b--;
            r = *e ? e + 1 : e;
            if (a < b) {
                rs = a;
                re = b;
                break;
            }
        }
        got = ws_next_token(&pos, &tok, &toklen);
        CHECK(got == (rs != NULL));
        CHECK(pos >= s && pos <= s + len);
        if (!got)
            break;
        CHECK(tok == rs && toklen == (size_t)(re - rs));
        CHECK(++count <= len);
    }
    CHECK(ws_next_token(&pos, &tok, &toklen) == 0);   /* stays at the end */
    pos = NULL;
    CHECK(ws_next_token(&pos, &tok, &toklen) == 0);
}

static int has_param(const char *resp, const char *name, int *value)
{
    const char *p = strstr(resp, name);
    if (!p)
        return 0;
    if (value)
        *value = p[strlen(name)] == '=' ? atoi(p + strlen(name) + 1) : -1;
    return 1;
}

static void check_negotiate(const char *s, uint8_t b0, uint8_t b1)
{
    ws_pmd_policy pol;
    ws_pmd_params ag, ag2;
    size_t rsz = b1 & 0x80 ? (size_t)(b1 & 0x7F) + 1 : WS_PMD_RESPONSE_MAX;
    char *resp = malloc(rsz), *resp2 = malloc(WS_PMD_RESPONSE_MAX);
    int rc, v;

    CHECK(resp && resp2);
    ws_pmd_policy_default(&pol);
    pol.max_window_bits = 8 + (b0 & 7);
    pol.client_max_window_bits = 8 + ((b0 >> 3) & 7);
    pol.server_no_context_takeover = (b0 >> 6) & 1;
    pol.client_no_context_takeover = (b0 >> 7) & 1;
    pol.level = b1 % 10;
    pol.mem_level = 1 + b1 % 9;
    memset(resp, 0xAA, rsz);

    rc = ws_pmd_negotiate(s, &pol, &ag, resp, rsz);
    CHECK(rc == 0 || rc == 1);
    if (rc == 0)
        goto done;
    CHECK(memchr(resp, '\0', rsz) != NULL);
    CHECK(strncmp(resp, "permessage-deflate", 18) == 0);
    CHECK(ag.server_max_window_bits >= 8 && ag.server_max_window_bits <= pol.max_window_bits);
    CHECK(ag.client_max_window_bits >= 8 && ag.client_max_window_bits <= 15);
    /* the policy is honoured */
    if (pol.server_no_context_takeover)
        CHECK(ag.server_no_context_takeover);
    if (pol.client_no_context_takeover)
        CHECK(ag.client_no_context_takeover);
    /* a client window larger than we keep context for means no takeover */
    if (ag.client_max_window_bits > pol.client_max_window_bits)
        CHECK(ag.client_no_context_takeover);
    /* the response says exactly what was agreed (RFC 7692 7.1) */
    CHECK(has_param(resp, "server_no_context_takeover", NULL) == ag.server_no_context_takeover);
    CHECK(has_param(resp, "client_no_context_takeover", NULL) == ag.client_no_context_takeover);
    if (has_param(resp, "server_max_window_bits", &v))
        CHECK(v == ag.server_max_window_bits);
    else
        CHECK(ag.server_max_window_bits == 15);
    if (has_param(resp, "client_max_window_bits", &v))
        CHECK(v == ag.client_max_window_bits);
    else
        CHECK(ag.client_max_window_bits == 15);
    /* our response, offered back, is accepted with the same parameters */
    CHECK(ws_pmd_negotiate(resp, &pol, &ag2, resp2, WS_PMD_RESPONSE_MAX) == 1);
    CHECK(memcmp(&ag, &ag2, sizeof(ag)) == 0);
    CHECK(strcmp(resp, resp2) == 0);
done:
    free(resp);
    free(resp2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s;
    size_t n;

    if (size < 2)
        return 0;
    n = size - 2;
    s = malloc(n + 1);
    CHECK(s != NULL);
    memcpy(s, data + 2, n);
    s[n] = '\0';

    check_key(s, data + 2, n);
    check_tokens(s);
    check_negotiate(s, data[0], data[1]);
    CHECK(ws_pmd_negotiate(NULL, NULL, NULL, NULL, 0) == 0);

    free(s);
    return 0;
}
