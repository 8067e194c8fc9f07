/*
 * chat - chat rooms over publish/subscribe: every room is a channel "chat:ROOM", so
 * people connected to different child processes (or, with a Redis backplane, to
 * different servers) talk to each other without the plugin knowing where they are.
 *
 *   <Location /chat>
 *       WebSocketHandler /usr/lib/apache2/modules/websocket/chat.so
 *       WebSocketPluginConfig max_text 1000         # longest message text, in bytes
 *       WebSocketPluginConfig default_room lobby
 *   </Location>
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
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mod_websocket.h"

#define ROOM_MAX 32
#define NAME_MAX_BYTES 32
#define CHANNEL_PREFIX "chat:"

static const ws_api *api;

/* Per location (WebSocketPluginConfig), made by init in the parent, read-only after. */
typedef struct chat_conf {
    size_t max_text;
    char default_room[ROOM_MAX + 1];
} chat_conf;

/* Per connection (set_user_data), freed by on_close. */
typedef struct chat_user {
    char channel[sizeof(CHANNEL_PREFIX) + ROOM_MAX];   /* "chat:ROOM" */
    const char *room;                                 /* points into channel */
    char name[NAME_MAX_BYTES + 1];
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

/* To everyone in the user's room, in every process (and on every server with Redis). */
static void room_say(const chat_user *u, const char *type, const char *from, const char *text,
                     size_t text_len)
{
    size_t len;
    char *msg = chat_json(type, from, text, text_len, &len);
    if (msg) {
        api->publish(u->channel, WS_TEXT, msg, len, 0);
        free(msg);
    }
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

/* ---- configuration --------------------------------------------------------------- */

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
        else {
            snprintf(err, errlen, "unknown setting '%s' (max_text, default_room)", k);
            free(conf);
            return 1;
        }
    }
    *data = conf;
    return 0;
}

static void chat_fini(void *data)
{
    free(data);
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
    }
    else {
        guest_name(u->name);
    }
    /* Subscribe before announcing, so the newcomer sees its own join and everything
     * said from then on. */
    if (api->subscribe(c, u->channel) != WS_SUCCESS) {
        free(u);
        return 503;
    }
    api->set_user_data(c, u);
    tell(c, "welcome", u->name, u->room);
    room_say(u, "join", u->name, u->room, strlen(u->room));
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
        else if (strcmp(name, u->name) != 0) {
            room_say(u, "nick", u->name, name, strlen(name));
            strcpy(u->name, name);
        }
        return 0;
    }
    if (len == 0) {
        tell(c, "error", NULL, "empty message");
        return 0;
    }
    room_say(u, "message", u->name, text, len);
    return 0;
}

static void chat_close(ws_conn *c, int code, const char *reason)
{
    chat_user *u = api->get_user_data(c);
    (void)code, (void)reason;
    if (u) {
        /* The subscription ends with the connection; the others hear that we left. */
        room_say(u, "leave", u->name, u->room, strlen(u->room));
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
    if (!WS_API_HAS(api, publish)) {
        return NULL;    /* a host without channels: refuse to load */
    }
    return &chat_plugin;
}
