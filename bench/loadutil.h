/*
 * loadutil.h - what the load generators (wsload, sseload) share: clocks, a sleep that
 * resumes after signals, and a latency histogram (64 linear buckets per power of two,
 * under 1.6% error) that each thread fills alone and main merges.
 */
#ifndef LOADUTIL_H
#define LOADUTIL_H

#include <errno.h>
#include <stdint.h>
#include <time.h>

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static inline void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ---- latency histogram: 64 linear buckets per power of two (< 1.6% error) ----------- */

#define H_SUB 64
#define H_BUCKETS (H_SUB * 42)

typedef struct hist {
    uint64_t n, max, sum;
    uint64_t b[H_BUCKETS];
} hist;

static inline unsigned h_index(uint64_t v)
{
    if (v < H_SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);     /* >= 6 */
    unsigned shift = msb - 6u;
    unsigned idx = (shift + 1u) * H_SUB + (unsigned)((v >> shift) & (H_SUB - 1));
    return idx < H_BUCKETS ? idx : H_BUCKETS - 1;
}

static inline uint64_t h_value(unsigned idx)   /* upper-ish representative of a bucket */
{
    if (idx < H_SUB)
        return idx;
    unsigned shift = idx / H_SUB - 1u;
    uint64_t base = ((uint64_t)H_SUB + (idx % H_SUB)) << shift;
    return base + ((1ull << shift) >> 1);
}

static inline void h_add(hist *h, uint64_t v)
{
    h->b[h_index(v)]++;
    h->n++;
    h->sum += v;
    if (v > h->max)
        h->max = v;
}

static inline void h_merge(hist *d, const hist *s)
{
    for (unsigned i = 0; i < H_BUCKETS; i++)
        d->b[i] += s->b[i];
    d->n += s->n;
    d->sum += s->sum;
    if (s->max > d->max)
        d->max = s->max;
}

static inline uint64_t h_pct(const hist *h, double pct)
{
    if (h->n == 0)
        return 0;
    uint64_t want = (uint64_t)((double)h->n * pct / 100.0 + 0.5);
    if (want < 1)
        want = 1;
    uint64_t acc = 0;
    for (unsigned i = 0; i < H_BUCKETS; i++) {
        acc += h->b[i];
        if (acc >= want) {
            uint64_t v = h_value(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

#endif
