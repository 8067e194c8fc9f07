/*
 * fuzz_utf8 - the incremental UTF-8 validator (src/ws_utf8.c) against a reference
 * decoder written from RFC 3629 (fuzz_ref.h).
 *
 * Input: byte 0 = number of cut points (low 4 bits), then 2 bytes per cut point
 * (little endian, taken modulo the text length + 1), then the text.
 * Checks:
 *  - ws_utf8_valid(whole) agrees with the reference;
 *  - feeding the text in the pieces the cut points make (empty pieces included), the
 *    piece holding the reference's first impossible byte is the first to return
 *    WS_ERR_UTF8 (fail fast), every later call fails too (sticky), and after each
 *    successful piece ws_utf8_complete() agrees with the reference on that prefix;
 *  - byte at a time, the failure comes exactly at that byte.
 */
#include "fuzz_ref.h"
#include "ws_proto.h"

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t ncut, cuts[18], i, n, fail, prev;
    const uint8_t *text;
    uint8_t *t;
    int complete, rc, failed;
    ws_utf8 v;

    if (size < 1)
        return 0;
    ncut = data[0] & 0x0F;
    if (size < 1 + 2 * ncut)
        return 0;
    text = data + 1 + 2 * ncut;
    n = size - 1 - 2 * ncut;
    t = ref_dup(text, n);

    fail = ref_utf8_scan(t, n, &complete);
    CHECK(fail <= n);
    CHECK(ws_utf8_valid(t, n) == (fail == n && complete));

    /* pieces between sorted cut points, 0 and n included */
    cuts[0] = 0;
    for (i = 0; i < ncut; i++)
        cuts[1 + i] = (size_t)(data[1 + 2 * i] | data[2 + 2 * i] << 8) % (n + 1);
    cuts[1 + ncut] = n;
    qsort(cuts + 1, ncut, sizeof(size_t), cmp_size);

    ws_utf8_init(&v);
    CHECK(ws_utf8_complete(&v));
    failed = 0;
    for (i = 0; i <= ncut; i++) {
        size_t a = cuts[i], b = cuts[i + 1];
        rc = ws_utf8_feed(&v, t + a, b - a);
        if (failed) {
            CHECK(rc == WS_ERR_UTF8);              /* sticky */
        } else if (fail < n && fail < b) {
            CHECK(rc == WS_ERR_UTF8);              /* fail fast: in this piece */
            CHECK(!ws_utf8_complete(&v));
            failed = 1;
        } else {
            int c;
            CHECK(rc == WS_OK);
            CHECK(ref_utf8_scan(t, b, &c) == b);
            CHECK(ws_utf8_complete(&v) == c);
        }
    }
    CHECK(failed == (fail < n));
    if (!failed)
        CHECK(ws_utf8_complete(&v) == complete);
    /* a call after the end, with nothing, changes nothing */
    CHECK(ws_utf8_feed(&v, t, 0) == (failed ? WS_ERR_UTF8 : WS_OK));

    /* byte at a time: the failure is at exactly the reference's byte */
    ws_utf8_init(&v);
    prev = n;
    for (i = 0; i < n; i++) {
        rc = ws_utf8_feed(&v, t + i, 1);
        if (rc != WS_OK) {
            prev = i;
            break;
        }
    }
    CHECK(prev == fail);
    if (fail == n)
        CHECK(ws_utf8_complete(&v) == complete);

    free(t);
    return 0;
}
