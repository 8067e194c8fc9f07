/*
 * ticker - a market ticker: simulated prices for a set of symbols, pushed to every
 * connected client at a fixed rate by a plugin thread.
 *
 *   <Location /ticker>
 *       WebSocketHandler /usr/lib/apache2/modules/websocket/ticker.so
 *       WebSocketPluginConfig symbols "EURUSD,GBPUSD,USDJPY,AAPL,MSFT,GOOG,BTCUSD,GOLD"
 *       WebSocketPluginConfig interval_ms 1000      # 10 or more
 *       WebSocketPluginConfig channel ticker        # in this location's namespace
 *   </Location>
 *
 * Every message (and the snapshot a client gets as soon as it connects) is one JSON
 * object whose first member is the send time, so a client can measure delivery delay:
 *
 *   {"ts":MICROSECONDS_SINCE_EPOCH,"tick":N,"interval_ms":1000,"quotes":[
 *     {"symbol":"EURUSD","price":1.08512,"change":-0.00031,"pct":-0.03,"decimals":5,
 *      "bid":1.08506,"ask":1.08518},...]}
 *
 * change and pct compare with the price at the start of the current UTC day; bid and
 * ask lie half a spread below and above the price (a fixed spread per symbol: about a
 * pip for currency pairs, 0.05% for names the ticker does not know).
 *
 * Design: nothing is shared between child processes.  Each child runs the same thread
 * and publishes with WS_PUBLISH_LOCAL to its own subscribers; the price is a pure
 * function of (symbol, tick), tick = floor(now / interval), so every child, and every
 * server with the same settings and a synchronised clock, shows the same prices at
 * the same moment without talking to each other.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mod_websocket.h"

#define SYMBOL_MAX 16
#define SYMBOLS_MAX 100
#define QUOTE_JSON_MAX 240       /* one quote object, generously */
#define LEVELS 16                /* price detail from 1 tick to 2^15 ticks */
#define MS_PER_DAY 86400000LL

static const ws_api *api;

typedef struct symbol {
    char name[SYMBOL_MAX + 1];
    uint64_t seed;               /* hash of the name: its own price path */
    double base;                 /* the price the path wanders around */
    double vol;                  /* how far it wanders (fraction of base, about 1 sigma) */
    double spread;               /* ask - bid */
    int decimals;
} symbol;

/* Per location: settings from init (parent), the thread from child_init (each child). */
typedef struct ticker {
    symbol *syms;
    size_t nsyms;
    long long interval_ms;
    char channel[201];

    pthread_t thread;
    int running;                 /* the thread was started */
    int stop;                    /* under mu: child_exit asks the thread to end */
    pthread_mutex_t mu;
    pthread_cond_t cv;           /* signalled by child_exit: wakes the thread at once */
} ticker;

/* ---- prices: pure functions of (symbol, tick) ------------------------------------- */

/* Well-known symbols get a plausible price; others one derived from their name. */
static const struct { const char *name; double base, vol, spread; int decimals; } known[] = {
    {"EURUSD", 1.0850, 0.006, 0.00012, 5}, {"GBPUSD", 1.2700, 0.007, 0.00016, 5},
    {"USDJPY", 151.50, 0.007, 0.014, 3},   {"AAPL", 190.00, 0.020, 0.02, 2},
    {"MSFT", 415.00, 0.018, 0.04, 2},      {"GOOG", 170.00, 0.022, 0.03, 2},
    {"BTCUSD", 65000.0, 0.040, 12.0, 2},   {"GOLD", 2350.0, 0.010, 0.35, 2},
};

/* splitmix64's finaliser: turns similar inputs into unrelated 64-bit values. */
static uint64_t mix(uint64_t x)
{
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* A value in [-1, 1), fixed forever by (seed, level, knot). */
static double noise(uint64_t seed, int level, int64_t knot)
{
    uint64_t h = mix(seed ^ mix((uint64_t)knot * 64 + (uint64_t)level));
    return (double)(h >> 11) / (double)(1ULL << 52) - 1.0;
}

/*
 * Where the price stands at tick t, in units of vol: a sum of LEVELS smooth noises, the
 * l-th with random knots every 2^l ticks joined by straight lines and an amplitude of
 * sqrt(2^l), which is how far a random walk strays in 2^l steps.  The result looks like
 * a walk (small moves each tick, slow drifts over hours) yet needs no history: any
 * process can compute any tick directly.  The sum has a standard deviation near 1.
 */
static double wander(uint64_t seed, int64_t t)
{
    double sum = 0, amp = 1;
    int l;
    for (l = 0; l < LEVELS; l++) {
        int64_t span = (int64_t)1 << l, knot = t >> l;
        double f = (double)(t - knot * span) / (double)span;
        sum += amp * (noise(seed, l, knot) * (1 - f) + noise(seed, l, knot + 1) * f);
        amp *= 1.41421356237;
    }
    return sum / 120.0;
}

static double price_at(const symbol *s, int64_t tick)
{
    double factor = 1 + s->vol * wander(s->seed, tick);
    return s->base * (factor > 0.05 ? factor : 0.05);   /* a price stays positive */
}

/* The JSON of tick's quotes (everything after "ts"), e.g. "tick":N,...]} into out. */
static size_t quotes_json(const ticker *t, int64_t tick, char *out, size_t outlen)
{
    /* The reference price: the first tick of the current UTC day. */
    int64_t day_tick = tick * t->interval_ms / MS_PER_DAY * MS_PER_DAY / t->interval_ms;
    size_t o, i;
    o = (size_t)snprintf(out, outlen, "\"tick\":%lld,\"interval_ms\":%lld,\"quotes\":[",
                         (long long)tick, t->interval_ms);
    for (i = 0; i < t->nsyms; i++) {
        const symbol *s = &t->syms[i];
        double p = price_at(s, tick), open = price_at(s, day_tick);
        o += (size_t)snprintf(out + o, outlen - o,
                              "%s{\"symbol\":\"%s\",\"price\":%.*f,\"change\":%.*f,"
                              "\"pct\":%.2f,\"decimals\":%d,\"bid\":%.*f,\"ask\":%.*f}",
                              i ? "," : "", s->name, s->decimals, p, s->decimals, p - open,
                              (p - open) / open * 100, s->decimals, s->decimals,
                              p - s->spread / 2, s->decimals, p + s->spread / 2);
    }
    o += (size_t)snprintf(out + o, outlen - o, "]}");
    return o;
}

static long long now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The whole message for tick into a malloc'd buffer: the timestamp is taken last, just
 * before the caller sends it, so it measures delivery and not our own work. */
static char *ticker_message(const ticker *t, int64_t tick, size_t *len)
{
    size_t cap = 96 + t->nsyms * QUOTE_JSON_MAX;
    char *body = malloc(cap), *msg = malloc(cap + 32);
    if (body && msg) {
        quotes_json(t, tick, body, cap);
        *len = (size_t)snprintf(msg, cap + 32, "{\"ts\":%lld,%s", now_us(), body);
    }
    else {
        free(msg);
        msg = NULL;
    }
    free(body);
    return msg;
}

/* ---- the thread: one per child process -------------------------------------------- */

static void *ticker_main(void *arg)
{
    ticker *t = arg;
    int64_t last = -1;
    pthread_mutex_lock(&t->mu);
    while (!t->stop) {
        int64_t tick = now_us() / 1000 / t->interval_ms;
        struct timespec next;
        if (tick != last) {   /* else a spurious wake-up: wait again */
            size_t len;
            char *msg;
            pthread_mutex_unlock(&t->mu);   /* never hold the lock while publishing */
            msg = ticker_message(t, tick, &len);
            if (msg) {
                /* LOCAL: every child runs this same thread for its own subscribers. */
                api->ns_publish(t, t->channel, WS_TEXT, msg, len, WS_PUBLISH_LOCAL);
                free(msg);
            }
            pthread_mutex_lock(&t->mu);
            last = tick;
        }
        /* Sleep until the next tick starts on the wall clock, which is what makes every
         * child publish at the same moment; child_exit cuts the wait short. */
        next.tv_sec = (time_t)((tick + 1) * t->interval_ms / 1000);
        next.tv_nsec = (long)((tick + 1) * t->interval_ms % 1000 * 1000000);
        while (!t->stop && pthread_cond_timedwait(&t->cv, &t->mu, &next) != ETIMEDOUT) {
        }
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

static void ticker_child_init(void *data)
{
    ticker *t = data;
    sigset_t all, old;
    t->stop = 0;
    /* Signals belong to httpd's own threads (prefork runs its exit paths in signal
     * handlers): the new thread starts with every signal blocked. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    t->running = pthread_create(&t->thread, NULL, ticker_main, t) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!t->running) {
        api->log(NULL, WS_LOG_ERR, "ticker: cannot start the ticker thread");
    }
}

static void ticker_child_exit(void *data)
{
    ticker *t = data;
    if (t->running) {
        pthread_mutex_lock(&t->mu);
        t->stop = 1;
        pthread_cond_signal(&t->cv);
        pthread_mutex_unlock(&t->mu);
        pthread_join(t->thread, NULL);   /* before the .so is unloaded */
        t->running = 0;
    }
}

/* ---- connections ------------------------------------------------------------------ */

static int ticker_open(ws_conn *c, const ws_request *req)
{
    ticker *t = api->plugin_data(c);
    size_t len;
    char *msg;
    (void)req;
    if (api->ns_subscribe(c, t->channel) != WS_SUCCESS) {
        return 503;
    }
    /* The current prices at once, rather than a blank board until the next tick. */
    msg = ticker_message(t, now_us() / 1000 / t->interval_ms, &len);
    if (msg) {
        api->send(c, WS_TEXT, msg, len, 0);
        free(msg);
    }
    return 0;
}

/* ---- configuration ---------------------------------------------------------------- */

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 14695981039346656037ULL;
    for (; *s; s++) {
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    }
    return h;
}

/* Parse "A,B,C" into t->syms; returns an error message or NULL. */
static const char *parse_symbols(ticker *t, const char *list, char *err, size_t errlen)
{
    const char *p = list;
    free(t->syms);
    t->nsyms = 0;
    t->syms = calloc(SYMBOLS_MAX, sizeof(symbol));
    if (!t->syms) {
        return "out of memory";
    }
    while (*p) {
        size_t n = strcspn(p, ","), i, k;
        symbol *s = &t->syms[t->nsyms];
        int ok = n >= 1 && n <= SYMBOL_MAX && t->nsyms < SYMBOLS_MAX;
        for (i = 0; ok && i < n; i++) {
            char ch = p[i];
            ok = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')
                 || ch == '.' || ch == '_' || ch == '-';
        }
        if (!ok) {
            snprintf(err, errlen, "symbols: up to %d names of 1-%d of A-Z a-z 0-9 . _ -, "
                     "comma separated, not '%s'", SYMBOLS_MAX, SYMBOL_MAX, list);
            return err;
        }
        memcpy(s->name, p, n);
        for (k = 0; k < t->nsyms; k++) {
            if (strcmp(t->syms[k].name, s->name) == 0) {
                snprintf(err, errlen, "symbols: '%s' is listed twice", s->name);
                return err;
            }
        }
        s->seed = fnv1a(s->name);
        s->base = 20 + (double)(s->seed % 48000) / 100;   /* 20.00 .. 499.99 */
        s->vol = 0.02;
        s->spread = s->base < 40 ? 0.02 : s->base * 0.0005;   /* 2 cents at least */
        s->decimals = 2;
        for (k = 0; k < sizeof(known) / sizeof(known[0]); k++) {
            if (strcmp(known[k].name, s->name) == 0) {
                s->base = known[k].base;
                s->vol = known[k].vol;
                s->spread = known[k].spread;
                s->decimals = known[k].decimals;
            }
        }
        t->nsyms++;
        p += n;
        if (*p == ',') {
            p++;
        }
    }
    return t->nsyms ? NULL : "symbols: the list is empty";
}

static void ticker_fini(void *data)
{
    ticker *t = data;
    if (t) {
        pthread_cond_destroy(&t->cv);
        pthread_mutex_destroy(&t->mu);
        free(t->syms);
        free(t);
    }
}

static int ticker_init(void **data, const ws_setting *settings, size_t n, char *err,
                       size_t errlen)
{
    ticker *t = calloc(1, sizeof(*t));
    const char *symbols = "EURUSD,GBPUSD,USDJPY,AAPL,MSFT,GOOG,BTCUSD,GOLD", *why = NULL;
    size_t i;
    if (!t) {
        snprintf(err, errlen, "out of memory");
        return 1;
    }
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);   /* CLOCK_REALTIME: ticks follow the wall clock */
    t->interval_ms = 1000;
    strcpy(t->channel, "ticker");
    for (i = 0; i < n && !why; i++) {
        const char *k = settings[i].key, *v = settings[i].value;
        if (strcmp(k, "symbols") == 0) {
            symbols = v;
        }
        else if (strcmp(k, "interval_ms") == 0) {
            char *end;
            long long ms = strtoll(v, &end, 10);
            if (*v < '0' || *v > '9' || *end || ms < 10 || ms > 3600000) {
                snprintf(err, errlen, "interval_ms: 10-3600000, not '%s'", v);
                why = err;
            }
            t->interval_ms = ms;
        }
        else if (strcmp(k, "channel") == 0) {
            if (!*v || strlen(v) >= sizeof(t->channel)) {
                snprintf(err, errlen, "channel: a name of 1-200 bytes");
                why = err;
            }
            else {
                strcpy(t->channel, v);
            }
        }
        else {
            snprintf(err, errlen, "unknown setting '%s' (symbols, interval_ms, channel)", k);
            why = err;
        }
    }
    if (!why) {
        why = parse_symbols(t, symbols, err, errlen);
    }
    if (why) {
        if (why != err) {
            snprintf(err, errlen, "%s", why);
        }
        ticker_fini(t);
        return 1;
    }
    *data = t;
    return 0;
}

static const ws_plugin ticker_plugin = {
    .magic = WS_PLUGIN_MAGIC,
    .abi_version = WS_ABI_VERSION,
    .size = sizeof(ws_plugin),
    .name = "ticker",
    .init = ticker_init,
    .fini = ticker_fini,
    .child_init = ticker_child_init,
    .child_exit = ticker_child_exit,
    .on_open = ticker_open,
};

const ws_plugin *websocket_plugin_init(const ws_api *host)
{
    api = host;
    if (!WS_API_HAS(api, ns_publish)) {
        return NULL;    /* a host without channel namespaces: refuse to load */
    }
    return &ticker_plugin;
}
