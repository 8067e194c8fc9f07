/*
 * chat - chat rooms over publish/subscribe: every room is a channel "chat:ROOM", so
 * people connected to different child processes (or, with a Redis backplane, to
 * different servers) talk to each other without the plugin knowing where they are.
 *
 *   <Location /chat>
 *       WebSocketHandler /usr/lib/apache2/modules/websocket/chat.so
 *       WebSocketPluginConfig max_text 1000         # longest message text, in bytes
 *       WebSocketPluginConfig default_room lobby
 *       WebSocketPluginConfig rate 5                # messages per second per connection
 *       WebSocketPluginConfig burst 10              # ... with bursts of this many (0: off)
 *   </Location>
 *
 * Rooms live in the location's channel namespace (api->ns_publish): two chat locations
 * do not hear each other unless both say `WebSocketChannelNamespace SAME`.
 *
 * Nicknames are unique per room among the connections of this httpd (a table in memory
 * shared by its children; with a Redis backplane, not across servers), compared without
 * ASCII case; a taken name gets an "error".  Names are printable: no control characters,
 * no bidi controls (U+202A-202E, U+2066-2069, U+200E/200F, U+061C), no line or paragraph
 * separators, no spaces other than U+0020, no zero-width characters.
 *
 * Connecting: ws://host/chat/ROOM or ws://host/chat?room=ROOM[&name=NICK] (the room is
 * the last segment of a path with two or more segments, so mount the plugin at a
 * one-segment location such as /chat).  Room names: [A-Za-z0-9_-]{1,32}; a bad one is
 * refused with HTTP 400.  Without a name (percent-encoded UTF-8 in the query) the
 * nickname is "guest-NNNN".
 *
 * The client sends text: "name: NEWNAME" changes the nickname, anything else is said to
 * the room.  The server sends JSON objects
 *
 *   {"type":T,"from":NICK,"text":TEXT,"ts":MILLISECONDS_SINCE_EPOCH}
 *
 * T is "message", "join" and "leave" (text: the room), "nick" (from: the old name,
 * text: the new one) to everyone in the room; "welcome" (from: your nickname, text: the
 * room) and "error" (from: null, text: why) to one connection only.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "mod_websocket.h"

#define ROOM_MAX 32
#define NAME_MAX_BYTES 32
#define CHANNEL_PREFIX "chat:"

static const ws_api *api;

#define ROSTER_SLOTS 4096      /* names in use at once, over all rooms of a location */

/* One name in use: in memory shared by every child (made by init in the parent). */
typedef struct roster_slot {
    pid_t pid;                 /* the child holding it; 0 = free */
    char room[ROOM_MAX + 1];
    char name[NAME_MAX_BYTES + 1];
} roster_slot;

typedef struct roster {
    pthread_mutex_t mu;        /* process-shared, robust */
    roster_slot slot[ROSTER_SLOTS];
} roster;

/* Per location (WebSocketPluginConfig), made by init in the parent, read-only after. */
typedef struct chat_conf {
    size_t max_text;
    char default_room[ROOM_MAX + 1];
    double rate;               /* messages per second per connection (0: no limit) */
    double burst;
    roster *names;             /* shared mapping */
} chat_conf;

/* Per connection (set_user_data), freed by on_close. */
typedef struct chat_user {
    char channel[sizeof(CHANNEL_PREFIX) + ROOM_MAX];   /* "chat:ROOM" */
    const char *room;                                 /* points into channel */
    char name[NAME_MAX_BYTES + 1];
    double tokens;                                    /* rate limit: a token bucket */
    struct timespec last;
} chat_user;

/* ---- validation ------------------------------------------------------------------ */

static int room_ok(const char *s, size_t len)
{
    size_t i;
    if (len < 1 || len > ROOM_MAX) {
        return 0;
    }
    for (i = 0; i < len; i++) {
        char ch = s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')
              || ch == '_' || ch == '-')) {
            return 0;
        }
    }
    return 1;
}

/* Length of the UTF-8 sequence at s (at most n bytes), or 0 if it is not valid UTF-8.
 * Text that came in a WebSocket message is already checked by the host; a name taken
 * from the query string is not, and sending invalid UTF-8 as text would fail. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    size_t len, i;
    unsigned cp;
    if (s[0] < 0x80) {
        return 1;
    }
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        len = 2;
        cp = s[0] & 0x1f;
    }
    else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        len = 3;
        cp = s[0] & 0x0f;
    }
    else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        len = 4;
        cp = s[0] & 0x07;
    }
    else {
        return 0;
    }
    if (len > n) {
        return 0;
    }
    for (i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    /* overlong forms, surrogates, beyond U+10FFFF */
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff))
        || (cp >= 0xd800 && cp <= 0xdfff)) {
        return 0;
    }
    return len;
}

/* The code point of the UTF-8 sequence at s (n bytes, valid). */
static unsigned code_point(const unsigned char *s, size_t n)
{
    unsigned cp = n == 2 ? s[0] & 0x1f : n == 3 ? s[0] & 0x0f : s[0] & 0x07;
    size_t i;
    for (i = 1; i < n; i++) {
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    return cp;
}

/* Not in a name: what can make one name look like another or reorder the line around
 * it (bidi controls and marks, zero-width characters, separators, odd spaces). */
static int name_char_ok(const unsigned char *s, size_t n)
{
    unsigned cp = code_point(s, n);
    return !(cp == 0x00a0 || cp == 0x00ad || cp == 0x061c || cp == 0x1680
             || (cp >= 0x180b && cp <= 0x180e) || (cp >= 0x2000 && cp <= 0x200f)
             || (cp >= 0x2028 && cp <= 0x202f) || (cp >= 0x205f && cp <= 0x206f)
             || cp == 0x3000 || cp == 0x3164 || cp == 0xfeff || (cp >= 0xfe00 && cp <= 0xfe0f)
             || (cp >= 0xfff0 && cp <= 0xfffb) || (cp >= 0xe0000 && cp <= 0xe007f));
}

/* A nickname: 1-32 bytes of UTF-8 after trimming spaces, no control characters (C0,
 * DEL, C1), since names are shown on one line.  Copies it into out (NAME_MAX_BYTES+1).
 * Returns NULL, or why it was refused. */
static const char *take_name(char *out, const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i, n;
    while (len > 0 && *u == ' ') {
        u++;
        len--;
    }
    while (len > 0 && u[len - 1] == ' ') {
        len--;
    }
    if (len == 0) {
        return "a name cannot be empty";
    }
    if (len > NAME_MAX_BYTES) {
        return "a name has at most 32 bytes";
    }
    for (i = 0; i < len; i += n) {
        n = utf8_seq(u + i, len - i);
        if (n == 0) {
            return "a name must be UTF-8";
        }
        if (u[i] < 0x20 || u[i] == 0x7f || (u[i] == 0xc2 && u[i + 1] < 0xa0)) {
            return "a name cannot contain control characters";
        }
        if (n > 1 && !name_char_ok(u + i, n)) {
            return "a name cannot contain invisible, bidi control or separator characters";
        }
    }
    memcpy(out, u, len);
    out[len] = '\0';
    return NULL;
}

/* ---- messages -------------------------------------------------------------------- */

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Append s (len bytes) to out as a JSON string, or null if s is NULL; out needs room for
 * 6 * len + 2 bytes (every byte escaped as \u00XX, plus the quotes). */
static char *json_string(char *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t i;
    if (!s) {
        memcpy(out, "null", 4);
        return out + 4;
    }
    *out++ = '"';
    for (i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            *out++ = '\\';
            *out++ = (char)ch;
        }
        else if (ch == '\n') {
            *out++ = '\\';
            *out++ = 'n';
        }
        else if (ch < 0x20) {
            memcpy(out, "\\u00", 4);
            out[4] = hex[ch >> 4];
            out[5] = hex[ch & 0xf];
            out += 6;
        }
        else {
            *out++ = (char)ch;   /* UTF-8 passes through: JSON text is Unicode */
        }
    }
    *out++ = '"';
    return out;
}

/* {"type":..,"from":..,"text":..,"ts":..} in a malloc'd buffer; *len gets its length. */
static char *chat_json(const char *type, const char *from, const char *text, size_t text_len,
                       size_t *len)
{
    size_t from_len = from ? strlen(from) : 0;
    char *buf = malloc(64 + strlen(type) + 6 * (from_len + text_len) + 4);
    char *p = buf;
    if (!buf) {
        return NULL;
    }
    p += sprintf(p, "{\"type\":\"%s\",\"from\":", type);
    p = json_string(p, from, from_len);
    p += sprintf(p, ",\"text\":");
    p = json_string(p, text, text_len);
    p += sprintf(p, ",\"ts\":%lld}", now_ms());
    *len = (size_t)(p - buf);
    return buf;
}

/* To everyone in the user's room, in every process (and on every server with Redis),
 * within this location's channel namespace.  Returns the api's code. */
static int room_say(ws_conn *c, const chat_user *u, const char *type, const char *from,
                    const char *text, size_t text_len)
{
    size_t len;
    int rv = WS_ENOMEM;
    char *msg = chat_json(type, from, text, text_len, &len);
    if (msg) {
        rv = api->ns_publish(api->plugin_data(c), u->channel, WS_TEXT, msg, len, 0);
        free(msg);
    }
    return rv;
}

/* To this connection only. */
static void tell(ws_conn *c, const char *type, const char *from, const char *text)
{
    size_t len;
    char *msg = chat_json(type, from, text, strlen(text), &len);
    if (msg) {
        api->send(c, WS_TEXT, msg, len, 0);
        free(msg);
    }
}

/* ---- the roster: unique names per room -------------------------------------------- */

static int roster_lock(roster *r)
{
    int rv = pthread_mutex_lock(&r->mu);
    if (rv == EOWNERDEAD) {       /* a child died holding it: the table is consistent
                                   * (a slot is claimed by its pid, written last) */
        pthread_mutex_consistent(&r->mu);
        rv = 0;
    }
    return rv;
}

static int slot_live(const roster_slot *s)
{
    return s->pid && (kill(s->pid, 0) == 0 || errno != ESRCH);
}

/* Claim name in room for this process (releasing old, if given, in the same step).
 * Returns 0, or -1 if another connection has it (or the table is full). */
static int roster_claim(roster *r, const char *room, const char *name, const char *old)
{
    roster_slot *free_slot = NULL, *old_slot = NULL;
    int i, rv = 0;
    if (roster_lock(r) != 0) {
        return -1;
    }
    for (i = 0; i < ROSTER_SLOTS; i++) {
        roster_slot *sl = &r->slot[i];
        if (!slot_live(sl)) {
            sl->pid = 0;
            free_slot = free_slot ? free_slot : sl;
            continue;
        }
        if (strcmp(sl->room, room) != 0) {
            continue;
        }
        if (old && !old_slot && sl->pid == getpid() && strcmp(sl->name, old) == 0) {
            old_slot = sl;
        }
        else if (strcasecmp(sl->name, name) == 0) {
            rv = -1;
        }
    }
    if (rv == 0 && (old_slot || free_slot)) {
        roster_slot *sl = old_slot ? old_slot : free_slot;
        strcpy(sl->room, room);
        strcpy(sl->name, name);
        sl->pid = getpid();
    }
    else {
        rv = -1;
    }
    pthread_mutex_unlock(&r->mu);
    return rv;
}

static void roster_release(roster *r, const char *room, const char *name)
{
    int i;
    if (roster_lock(r) != 0) {
        return;
    }
    for (i = 0; i < ROSTER_SLOTS; i++) {
        roster_slot *sl = &r->slot[i];
        if (sl->pid == getpid() && strcmp(sl->room, room) == 0
            && strcmp(sl->name, name) == 0) {
            sl->pid = 0;
            break;
        }
    }
    pthread_mutex_unlock(&r->mu);
}

static roster *roster_create(void)
{
    pthread_mutexattr_t attr;
    roster *r = mmap(NULL, sizeof(roster), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (r == MAP_FAILED) {
        return NULL;
    }
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    pthread_mutex_init(&r->mu, &attr);
    pthread_mutexattr_destroy(&attr);
    return r;
}

/* 1 if the connection may send another message now (a token bucket). */
static int rate_ok(const chat_conf *conf, chat_user *u)
{
    struct timespec now;
    double dt;
    if (conf->rate <= 0) {
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &now);
    dt = (double)(now.tv_sec - u->last.tv_sec) + (now.tv_nsec - u->last.tv_nsec) / 1e9;
    u->last = now;
    u->tokens += dt * conf->rate;
    if (u->tokens > conf->burst) {
        u->tokens = conf->burst;
    }
    if (u->tokens < 1) {
        return 0;
    }
    u->tokens -= 1;
    return 1;
}

/* ---- configuration --------------------------------------------------------------- */

/* A number setting from lo to hi into *out; 0, or 1 after writing err. */
static int number_setting(const char *k, const char *v, double lo, double hi, double *out,
                          char *err, size_t errlen)
{
    char *end;
    double d = strtod(v, &end);
    if (*v < '0' || *v > '9' || *end || d < lo || d > hi) {
        snprintf(err, errlen, "%s: a number from %g to %g, not '%s'", k, lo, hi, v);
        return 1;
    }
    *out = d;
    return 0;
}

static int chat_init(void **data, const ws_setting *settings, size_t n, char *err,
                     size_t errlen)
{
    chat_conf *conf = calloc(1, sizeof(*conf));
    size_t i;
    if (!conf) {
        snprintf(err, errlen, "out of memory");
        return 1;
    }
    conf->max_text = 1000;
    strcpy(conf->default_room, "lobby");
    conf->rate = 5;
    conf->burst = 10;
    for (i = 0; i < n; i++) {
        const char *k = settings[i].key, *v = settings[i].value;
        if (strcmp(k, "max_text") == 0) {
            char *end;
            unsigned long m = strtoul(v, &end, 10);
            if (*v < '0' || *v > '9' || *end || m < 1 || m > 1000000) {
                snprintf(err, errlen, "max_text: a number of bytes, 1-1000000, not '%s'", v);
                free(conf);
                return 1;
            }
            conf->max_text = m;
        }
        else if (strcmp(k, "default_room") == 0) {
            if (!room_ok(v, strlen(v))) {
                snprintf(err, errlen, "default_room: 1-32 of A-Z a-z 0-9 _ -, not '%s'", v);
                free(conf);
                return 1;
            }
            strcpy(conf->default_room, v);
        }
        else if (strcmp(k, "rate") == 0 || strcmp(k, "burst") == 0) {
            if (number_setting(k, v, 0, 1e6, k[0] == 'r' ? &conf->rate : &conf->burst,
                               err, errlen)) {
                free(conf);
                return 1;
            }
        }
        else {
            snprintf(err, errlen, "unknown setting '%s' (max_text, default_room, rate, "
                     "burst)", k);
            free(conf);
            return 1;
        }
    }
    if (conf->rate > 0 && conf->burst < 1) {
        conf->burst = 1;
    }
    conf->names = roster_create();
    if (!conf->names) {
        snprintf(err, errlen, "cannot map the shared name table");
        free(conf);
        return 1;
    }
    *data = conf;
    return 0;
}

static void chat_fini(void *data)
{
    chat_conf *conf = data;
    if (conf) {
        munmap(conf->names, sizeof(roster));
    }
    free(conf);
}

/* ---- connections ----------------------------------------------------------------- */

/* The value of key in a query string ("a=1&b=2"), as a pointer into it, or NULL. */
static const char *query_param(const char *query, const char *key, size_t *len)
{
    size_t klen = strlen(key);
    const char *p = query;
    while (p && *p) {
        const char *end = strchr(p, '&');
        size_t plen = end ? (size_t)(end - p) : strlen(p);
        if (plen > klen && strncmp(p, key, klen) == 0 && p[klen] == '=') {
            *len = plen - klen - 1;
            return p + klen + 1;
        }
        p = end ? end + 1 : NULL;
    }
    return NULL;
}

static int hex_digit(char ch)
{
    if (ch >= '0' && ch <= '9') {
        return ch - '0';
    }
    if ((ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F')) {
        return (ch | 0x20) - 'a' + 10;     /* | 0x20: a letter in lower case */
    }
    return -1;
}

/* Percent-decode (and '+' as space) at most outlen - 1 bytes; -1 if too long or bad. */
static int url_decode(char *out, size_t outlen, const char *s, size_t len)
{
    size_t i, o = 0;
    for (i = 0; i < len; i++) {
        int ch = (unsigned char)s[i];
        if (ch == '+') {
            ch = ' ';
        }
        else if (ch == '%') {
            int hi = i + 2 < len ? hex_digit(s[i + 1]) : -1;
            int lo = hi >= 0 ? hex_digit(s[i + 2]) : -1;
            if (lo < 0) {
                return -1;
            }
            ch = hi * 16 + lo;
            i += 2;
        }
        if (o + 1 >= outlen) {
            return -1;
        }
        out[o++] = (char)ch;
    }
    out[o] = '\0';
    return (int)o;
}

/* A fresh "guest-NNNN": a counter under a mutex (callbacks run on many threads),
 * started from the pid and clock so two children do not hand out the same numbers. */
static void guest_name(char *out)
{
    static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    static unsigned next;
    unsigned n;
    pthread_mutex_lock(&mu);
    if (next == 0) {
        next = (unsigned)getpid() * 2654435761u ^ (unsigned)now_ms();
    }
    next = next * 1103515245u + 12345u;    /* a step of a LCG: neighbours look unrelated */
    n = (next >> 8) % 10000;
    pthread_mutex_unlock(&mu);
    sprintf(out, "guest-%04u", n);
}

/* A free guest name in u's room (a few tries). */
static int guest_claim(chat_conf *conf, chat_user *u)
{
    int i;
    for (i = 0; i < 20; i++) {
        guest_name(u->name);
        if (roster_claim(conf->names, u->room, u->name, NULL) == 0) {
            return 0;
        }
    }
    return -1;
}

static int chat_open(ws_conn *c, const ws_request *req)
{
    chat_conf *conf = api->plugin_data(c);
    const char *room = conf->default_room, *q, *slash = strrchr(req->uri, '/');
    size_t room_len = strlen(room), len;
    chat_user *u;

    /* Room: ?room=R, else /LOCATION/R, else the default. */
    if (req->query && (q = query_param(req->query, "room", &len)) != NULL) {
        room = q;
        room_len = len;
    }
    else if (slash && slash != req->uri && slash[1]) {
        room = slash + 1;
        room_len = strlen(room);
    }
    if (!room_ok(room, room_len)) {
        return 400;
    }
    u = calloc(1, sizeof(*u));
    if (!u) {
        return 503;
    }
    snprintf(u->channel, sizeof(u->channel), CHANNEL_PREFIX "%.*s", (int)room_len, room);
    u->room = u->channel + strlen(CHANNEL_PREFIX);

    if (req->query && (q = query_param(req->query, "name", &len)) != NULL) {
        char raw[NAME_MAX_BYTES + 16];      /* room for spaces that trimming removes */
        int n = url_decode(raw, sizeof(raw), q, len);
        if (n < 0 || take_name(u->name, raw, (size_t)n)) {
            free(u);
            return 400;
        }
        if (roster_claim(conf->names, u->room, u->name, NULL) != 0) {
            tell(c, "error", NULL, "that name is taken in this room: you are a guest");
            u->name[0] = '\0';
        }
    }
    if (!u->name[0] && guest_claim(conf, u) != 0) {
        free(u);
        return 503;
    }
    clock_gettime(CLOCK_MONOTONIC, &u->last);
    u->tokens = conf->burst;
    /* Subscribe before announcing, so the newcomer sees its own join and everything
     * said from then on. */
    if (api->ns_subscribe(c, u->channel) != WS_SUCCESS) {
        roster_release(conf->names, u->room, u->name);
        free(u);
        return 503;
    }
    api->set_user_data(c, u);
    tell(c, "welcome", u->name, u->room);
    room_say(c, u, "join", u->name, u->room, strlen(u->room));
    return 0;
}

static int chat_message(ws_conn *c, int type, const void *data, size_t len)
{
    chat_conf *conf = api->plugin_data(c);
    chat_user *u = api->get_user_data(c);
    const char *text = data;
    char err[80];

    if (type != WS_TEXT) {
        tell(c, "error", NULL, "only text messages are understood");
        return 0;
    }
    if (len > conf->max_text) {
        snprintf(err, sizeof(err), "a message has at most %zu bytes", conf->max_text);
        tell(c, "error", NULL, err);
        return 0;
    }
    if (len >= 5 && memcmp(text, "name:", 5) == 0) {
        char name[NAME_MAX_BYTES + 1];
        const char *why = take_name(name, text + 5, len - 5);
        if (why) {
            tell(c, "error", NULL, why);
        }
        else if (strcmp(name, u->name) == 0) {
            return 0;
        }
        else if (roster_claim(conf->names, u->room, name, u->name) != 0) {
            tell(c, "error", NULL, "that name is taken in this room");
        }
        else {
            room_say(c, u, "nick", u->name, name, strlen(name));
            strcpy(u->name, name);
        }
        return 0;
    }
    if (len == 0) {
        tell(c, "error", NULL, "empty message");
        return 0;
    }
    if (!rate_ok(conf, u)) {
        tell(c, "error", NULL, "too many messages: slow down (this one was not sent)");
        return 0;
    }
    if (room_say(c, u, "message", u->name, text, len) != WS_SUCCESS) {
        tell(c, "error", NULL, "your message could not be delivered (too large for the "
             "backplane, or the server is out of memory)");
    }
    return 0;
}

static void chat_close(ws_conn *c, int code, const char *reason)
{
    chat_user *u = api->get_user_data(c);
    chat_conf *conf = api->plugin_data(c);
    (void)code, (void)reason;
    if (u) {
        /* The subscription ends with the connection; the others hear that we left. */
        room_say(c, u, "leave", u->name, u->room, strlen(u->room));
        roster_release(conf->names, u->room, u->name);
        free(u);
    }
}

static const ws_plugin chat_plugin = {
    .magic = WS_PLUGIN_MAGIC,
    .abi_version = WS_ABI_VERSION,
    .size = sizeof(ws_plugin),
    .name = "chat",
    .init = chat_init,
    .fini = chat_fini,
    .on_open = chat_open,
    .on_message = chat_message,
    .on_close = chat_close,
};

const ws_plugin *websocket_plugin_init(const ws_api *host)
{
    api = host;
    if (!WS_API_HAS(api, ns_publish)) {
        return NULL;    /* a host without channel namespaces: refuse to load */
    }
    return &chat_plugin;
}
