/*
 * fuzz_ref.h - reference implementations the fuzz targets check the protocol core
 * against.  Written from the RFCs, deliberately unlike src/: the UTF-8 reference
 * decodes code points (src/ws_utf8.c tracks byte ranges), and the close-code and
 * base64 checks are tables and loops of their own.  Header-only: each target is one
 * translation unit plus the core sources.
 */
#ifndef FUZZ_REF_H
#define FUZZ_REF_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A failed invariant: say which and where, then abort so libFuzzer saves the input. */
#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__,     \
                    #cond);                                                          \
            abort();                                                                 \
        }                                                                            \
    } while (0)

/* An exact-size heap copy, so ASan catches a read one byte past the input. */
static inline uint8_t *ref_dup(const uint8_t *p, size_t n)
{
    uint8_t *d = malloc(n ? n : 1);
    CHECK(d != NULL);
    if (n)
        memcpy(d, p, n);
    return d;
}

/* ---- UTF-8 (RFC 3629 3 and 4) by decoding code points ---------------------------- */

/* Sequence length announced by lead byte b (by its bit pattern alone), 0 if b cannot
 * start a sequence (a continuation byte 10xxxxxx, or 11111xxx). */
static inline int ref_utf8_seqlen(uint8_t b)
{
    if ((b & 0x80) == 0x00) return 1;
    if ((b & 0xE0) == 0xC0) return 2;
    if ((b & 0xF0) == 0xE0) return 3;
    if ((b & 0xF8) == 0xF0) return 4;
    return 0;
}

/* 1 if some code point encoded with `len` bytes lies in [lo, hi] and is a Unicode
 * scalar value that RFC 3629 allows for that length (shortest form, no surrogates,
 * at most U+10FFFF). */
static inline int ref_utf8_range_ok(int len, uint32_t lo, uint32_t hi)
{
    static const uint32_t min_for_len[5] = { 0, 0, 0x80, 0x800, 0x10000 };
    static const uint32_t max_for_len[5] = { 0, 0x7F, 0x7FF, 0xFFFF, 0x10FFFF };
    uint32_t a = lo > min_for_len[len] ? lo : min_for_len[len];
    uint32_t b = hi < max_for_len[len] ? hi : max_for_len[len];

    if (a > b)
        return 0;
    /* [a, b] minus the surrogates U+D800..U+DFFF */
    return a < 0xD800 || b > 0xDFFF;
}

/*
 * Scan p[0..n).  Returns the length of the longest prefix that can still be extended
 * to valid UTF-8 (n if all of it can), i.e. the byte index at which an incremental
 * validator must fail is the return value when it is < n.  *complete is set to 1 if
 * p[0..n) is valid and ends on a character boundary.
 */
static inline size_t ref_utf8_scan(const uint8_t *p, size_t n, int *complete)
{
    size_t i = 0;

    *complete = 0;
    while (i < n) {
        int len = ref_utf8_seqlen(p[i]), k;
        uint32_t c;

        if (len == 0)
            return i;                  /* no character starts with this byte */
        c = len == 1 ? p[i] : (uint32_t)(p[i] & (0x7F >> len));
        /* After each byte of the sequence, ask whether any completion is valid: each
         * of the (len - k) missing continuation bytes adds 6 bits, 000000..111111.
         * The first byte after which none is, is where a validator must fail. */
        for (k = 1; k <= len; k++) {
            int missing;
            uint32_t lo, hi;

            if (k > 1) {
                if (i + (size_t)k - 1 >= n)
                    return n;          /* a valid, incomplete final character */
                if ((p[i + k - 1] & 0xC0) != 0x80)
                    return i + (size_t)k - 1;      /* not a continuation byte */
                c = c << 6 | (p[i + k - 1] & 0x3F);
            }
            missing = len - k;
            lo = c << (6 * missing);
            hi = lo | ((1u << (6 * missing)) - 1);
            if (!ref_utf8_range_ok(len, lo, hi))
                return i + (size_t)k - 1;
        }
        i += (size_t)len;
    }
    *complete = 1;
    return n;
}

static inline int ref_utf8_valid(const uint8_t *p, size_t n)
{
    int complete;
    return ref_utf8_scan(p, n, &complete) == n && complete;
}

/* ---- close codes (RFC 6455 7.4.1, 7.4.2; IANA WebSocket Close Code Number Registry) */

/* 1 if a peer may put code on the wire. */
static inline int ref_close_code_ok(unsigned code)
{
    /* registered codes an endpoint may send (1004 reserved, 1005/1006/1015 never sent) */
    static const unsigned registered[] = { 1000, 1001, 1002, 1003, 1007, 1008, 1009,
                                           1010, 1011, 1012, 1013, 1014 };
    size_t i;

    for (i = 0; i < sizeof(registered) / sizeof(registered[0]); i++)
        if (code == registered[i])
            return 1;
    /* 3000-3999 registered by libraries/frameworks, 4000-4999 private use */
    return code / 1000 == 3 || code / 1000 == 4;
}

/* ---- base64 (RFC 4648 4) ----------------------------------------------------------- */

static const char ref_b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Strict decode of a NUL-terminated string: length a multiple of 4, '=' only as the
 * last one or two characters, and the bits a canonical encoder leaves zero are zero.
 * Returns the decoded length, or -1.  out must hold strlen(s) / 4 * 3 bytes. */
static inline long ref_b64_decode(const char *s, uint8_t *out)
{
    size_t n = strlen(s), i, o = 0;
    uint32_t acc = 0;
    int pad = 0;

    if (n % 4 != 0)
        return -1;
    for (i = 0; i < n; i++) {
        const char *hit = s[i] ? strchr(ref_b64_alphabet, s[i]) : NULL;
        int v;

        if (s[i] == '=') {
            if (i < n - 2 || (i == n - 2 && s[n - 1] != '='))
                return -1;
            pad++;
            v = 0;
        } else if (hit) {
            if (pad)
                return -1;
            v = (int)(hit - ref_b64_alphabet);
        } else {
            return -1;
        }
        acc = acc << 6 | (uint32_t)v;
        if (i % 4 == 3) {
            /* canonical: the padding bits are zero */
            if (pad == 1 && (acc & 0xFF) != 0)
                return -1;
            if (pad == 2 && (acc & 0xFFFF) != 0)
                return -1;
            out[o++] = (uint8_t)(acc >> 16);
            if (pad < 2)
                out[o++] = (uint8_t)(acc >> 8);
            if (pad < 1)
                out[o++] = (uint8_t)acc;
            acc = 0;
        }
    }
    return (long)o;
}

/* Encode n bytes; out must hold 4 * ((n + 2) / 3) + 1 bytes. */
static inline void ref_b64_encode(const uint8_t *p, size_t n, char *out)
{
    size_t i, o = 0;

    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = ref_b64_alphabet[v >> 18];
        out[o++] = ref_b64_alphabet[(v >> 12) & 63];
        out[o++] = ref_b64_alphabet[(v >> 6) & 63];
        out[o++] = ref_b64_alphabet[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = ref_b64_alphabet[v >> 18];
        out[o++] = ref_b64_alphabet[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8;
        out[o++] = ref_b64_alphabet[v >> 18];
        out[o++] = ref_b64_alphabet[(v >> 12) & 63];
        out[o++] = ref_b64_alphabet[(v >> 6) & 63];
        out[o++] = '=';
    }
    out[o] = '\0';
}

#endif
