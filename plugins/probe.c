/*
 * probe - a test plugin that exercises the whole plugin ABI, for the integration suite.
 *
 * on open: refuses with HTTP NNN if the query has "refuse=NNN"; picks the first offered
 *   subprotocol that the "protocols" setting lists; sends one text message, a JSON object
 *   {"uri","query","user","remote_ip","origin","protocol","x_test","secure","pid"}
 *   (pid: the httpd child serving the connection).
 * text commands:
 *   close:CODE:REASON   the server closes with CODE and REASON
 *   fail                on_message returns an error: the server closes with 1011
 *   sub:CHANNEL         subscribe; answers "subscribed:CHANNEL:RV" (RV: api return code)
 *   unsub:CHANNEL       unsubscribe; answers "unsubscribed:CHANNEL:RV"
 *   pub:CHANNEL:TEXT    publish TEXT to CHANNEL (every child, every server)
 *   publocal:CHANNEL:TEXT  publish with WS_PUBLISH_LOCAL (this child only)
 *   buffered            answers "buffered:A:B:0": api->buffered_amount(c) and
 *                       api->handle_buffered_amount (the bytes queued, not yet written)
 *   send:SIZE           sends SIZE bytes (binary, 'x', uncompressed), then answers
 *                       "buffered:A:B:RV" (RV: what send returned)
 *   pubsize:N           publishes N bytes to channel "pubsize"; answers "pubsize:N:RV"
 *   flood:N:SIZE[:USEC] a plugin thread sends N binary messages of SIZE bytes (>= 8)
 *                       through a handle: an 8-byte big-endian sequence number, then
 *                       filler bytes (seq & 0xff); then the text "flood-done:N"
 *                       (USEC: a pause after each message, for a flood a reader
 *                       keeps up with)
 *   thread-close:CODE:REASON  a plugin thread closes the connection through a handle
 *   hclose:CODE:REASON  the same (api->handle_close; REASON of any length)
 *   anything else       echoed with its type
 *
 *   WebSocketHandler build/plugins/probe.so
 *   WebSocketPluginConfig protocols "a,b,c"
 */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mod_websocket.h"

static const ws_api *api;

typedef struct probe_conf {
    char *protocols;     /* ",a,b,c," for a simple membership test */
} probe_conf;

/* Flood threads still running; child_exit waits for them before the .so goes away. */
static pthread_mutex_t flood_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t flood_cv = PTHREAD_COND_INITIALIZER;
static int flood_running;

static int probe_init(void **data, const ws_setting *settings, size_t n, char *err,
                      size_t errlen)
{
    probe_conf *conf = calloc(1, sizeof(*conf));
    size_t i;
    if (!conf) {
        snprintf(err, errlen, "out of memory");
        return 1;
    }
    for (i = 0; i < n; i++) {
        if (strcmp(settings[i].key, "protocols") == 0) {
            size_t len = strlen(settings[i].value);
            free(conf->protocols);
            conf->protocols = malloc(len + 3);
            if (!conf->protocols) {
                snprintf(err, errlen, "out of memory");
                free(conf);
                return 1;
            }
            snprintf(conf->protocols, len + 3, ",%s,", settings[i].value);
        }
        else {
            snprintf(err, errlen, "unknown setting '%s'", settings[i].key);
            free(conf->protocols);
            free(conf);
            return 1;
        }
    }
    *data = conf;
    return 0;
}

static void probe_fini(void *data)
{
    probe_conf *conf = data;
    if (conf) {
        free(conf->protocols);
        free(conf);
    }
}

static void probe_child_exit(void *data)
{
    struct timespec until;
    (void)data;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    pthread_mutex_lock(&flood_mu);
    while (flood_running > 0) {
        if (pthread_cond_timedwait(&flood_cv, &flood_mu, &until) != 0) {
            break;
        }
    }
    pthread_mutex_unlock(&flood_mu);
}

/* Append s as a JSON string (or null) to out. */
static void json_str(char *out, size_t outlen, const char *s)
{
    size_t o = strlen(out);
    if (!s) {
        snprintf(out + o, outlen - o, "null");
        return;
    }
    if (o + 1 < outlen) {
        out[o++] = '"';
    }
    for (; *s && o + 7 < outlen; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            out[o++] = '\\';
            out[o++] = (char)ch;
        }
        else if (ch < 0x20) {
            o += (size_t)snprintf(out + o, outlen - o, "\\u%04x", ch);
        }
        else {
            out[o++] = (char)ch;
        }
    }
    if (o + 1 < outlen) {
        out[o++] = '"';
    }
    out[o] = '\0';
}

static int probe_open(ws_conn *c, const ws_request *req)
{
    probe_conf *conf = api->plugin_data(c);
    const char *const *p;
    const char *chosen = NULL, *refuse;
    char msg[4096];

    if (req->query && (refuse = strstr(req->query, "refuse=")) != NULL) {
        return atoi(refuse + 7);
    }
    for (p = req->protocols; conf && conf->protocols && *p && !chosen; p++) {
        char needle[256];
        snprintf(needle, sizeof(needle), ",%s,", *p);
        if (strstr(conf->protocols, needle)) {
            chosen = *p;
        }
    }
    if (chosen && api->set_protocol(c, chosen) != WS_SUCCESS) {
        return 500;
    }
    msg[0] = '\0';
#define FIELD(name, val) \
    strncat(msg, "\"" name "\":", sizeof(msg) - strlen(msg) - 1); \
    json_str(msg, sizeof(msg), val); \
    strncat(msg, ",", sizeof(msg) - strlen(msg) - 1)
    strcpy(msg, "{");
    FIELD("uri", req->uri);
    FIELD("query", req->query);
    FIELD("user", req->user);
    FIELD("remote_ip", req->remote_ip);
    FIELD("origin", req->origin);
    FIELD("protocol", chosen);
    FIELD("x_test", api->request_header(c, "X-Test"));
#undef FIELD
    snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg), "\"secure\":%s,\"pid\":%ld}",
             req->secure ? "true" : "false", (long)getpid());
    return api->send(c, WS_TEXT, msg, strlen(msg), 0) == WS_SUCCESS ? 0 : 500;
}

typedef struct flood_job {
    ws_handle *h;
    unsigned long count;
    size_t size;
    unsigned long pace_us;
    int close_code;         /* thread-close: handle_close instead of a flood */
    char *reason;           /* thread-close (malloc'd: any length; the host cuts it) */
} flood_job;

static void *flood_main(void *arg)
{
    flood_job *job = arg;
    unsigned char *buf = malloc(job->size);
    unsigned long seq;
    char done[64];

    for (seq = 0; buf && seq < job->count; seq++) {
        int i;
        for (i = 0; i < 8; i++) {
            buf[i] = (unsigned char)((uint64_t)seq >> (56 - 8 * i));
        }
        memset(buf + 8, (int)(seq & 0xff), job->size - 8);
        if (api->handle_send(job->h, WS_BINARY, buf, job->size, 0) != WS_SUCCESS) {
            break;      /* closed or overflowing: the connection is going away */
        }
        if (job->pace_us) {
            usleep((useconds_t)job->pace_us);
        }
    }
    if (job->close_code) {
        api->handle_close(job->h, job->close_code, job->reason);
    }
    else if (buf && seq == job->count) {
        snprintf(done, sizeof(done), "flood-done:%lu", job->count);
        api->handle_send(job->h, WS_TEXT, done, strlen(done), 0);
    }
    free(buf);
    free(job->reason);
    api->handle_release(job->h);
    free(job);
    pthread_mutex_lock(&flood_mu);
    flood_running--;
    pthread_cond_broadcast(&flood_cv);
    pthread_mutex_unlock(&flood_mu);
    return NULL;
}

/* Run job on a detached plugin thread with a new handle to c. */
static int start_job(ws_conn *c, flood_job *job)
{
    pthread_t tid;
    sigset_t all, old;
    int rv;
    job->h = api->handle_get(c);
    pthread_mutex_lock(&flood_mu);
    flood_running++;
    pthread_mutex_unlock(&flood_mu);
    /* a plugin thread blocks every signal: httpd handles them on its main thread */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    rv = pthread_create(&tid, NULL, flood_main, job);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rv != 0) {
        api->handle_release(job->h);
        free(job->reason);
        free(job);
        pthread_mutex_lock(&flood_mu);
        flood_running--;
        pthread_mutex_unlock(&flood_mu);
        return -1;
    }
    pthread_detach(tid);
    return 0;
}

/* buffered, send:SIZE, pubsize:N (see the top).  Returns 1, or -1 out of memory. */
static int probe_sizes(ws_conn *c, const char *cmd)
{
    char ans[128];
    size_t n = cmd[0] == 'b' ? 0 : strtoul(strchr(cmd, ':') + 1, NULL, 10);
    char *buf = malloc(n ? n : 1);
    ws_handle *h;
    int rv = 0;

    if (!buf) {
        return -1;
    }
    memset(buf, 'x', n);
    if (cmd[0] == 'p') {
        rv = api->publish("pubsize", WS_BINARY, buf, n, WS_PUBLISH_LOCAL);
        snprintf(ans, sizeof(ans), "pubsize:%zu:%d", n, rv);
    } else {
        if (cmd[0] == 's') {
            rv = api->send(c, WS_BINARY, buf, n, WS_SEND_NO_COMPRESS);
        }
        if (!WS_API_HAS(api, handle_buffered_amount)) {
            snprintf(ans, sizeof(ans), "buffered:unsupported");     /* an older host */
        } else {
            h = api->handle_get(c);
            snprintf(ans, sizeof(ans), "buffered:%zu:%zu:%d", api->buffered_amount(c),
                     api->handle_buffered_amount(h), rv);
            api->handle_release(h);
        }
    }
    free(buf);
    api->send(c, WS_TEXT, ans, strlen(ans), 0);
    return 1;
}

static int start_flood(ws_conn *c, const char *args)
{
    flood_job *job = calloc(1, sizeof(*job));
    char *end;
    if (!job) {
        return -1;
    }
    job->count = strtoul(args, &end, 10);
    job->size = *end == ':' ? strtoul(end + 1, &end, 10) : 8;
    job->pace_us = *end == ':' ? strtoul(end + 1, NULL, 10) : 0;
    if (job->size < 8) {
        job->size = 8;
    }
    return start_job(c, job);
}

/* args: CODE:REASON */
static int start_thread_close(ws_conn *c, const char *args)
{
    flood_job *job = calloc(1, sizeof(*job));
    const char *reason = strchr(args, ':');
    if (!job) {
        return -1;
    }
    job->size = 8;
    job->close_code = atoi(args);
    job->reason = strdup(reason ? reason + 1 : "");
    if (!job->reason) {
        free(job);
        return -1;
    }
    return start_job(c, job);
}

/* Run a text command (cmd: a writable NUL-terminated copy of the message).  Returns 1
 * if it was one, 0 if the message is to be echoed, -1 to fail the connection. */
static int probe_command(ws_conn *c, char *cmd)
{
    if (strcmp(cmd, "fail") == 0) {
        return -1;
    }
    if (strncmp(cmd, "close:", 6) == 0) {
        char *reason = strchr(cmd + 6, ':');
        api->close(c, atoi(cmd + 6), reason ? reason + 1 : "");
        return 1;
    }
    if (strcmp(cmd, "buffered") == 0 || strncmp(cmd, "send:", 5) == 0
        || strncmp(cmd, "pubsize:", 8) == 0) {
        return probe_sizes(c, cmd);
    }
    if (strncmp(cmd, "flood:", 6) == 0) {
        return start_flood(c, cmd + 6) == 0 ? 1 : -1;
    }
    if (strncmp(cmd, "hclose:", 7) == 0) {             /* the short name */
        return start_thread_close(c, cmd + 7) == 0 ? 1 : -1;
    }
    if (strncmp(cmd, "thread-close:", 13) == 0) {
        return start_thread_close(c, cmd + 13) == 0 ? 1 : -1;
    }
    if (strncmp(cmd, "sub:", 4) == 0 || strncmp(cmd, "unsub:", 6) == 0) {
        int sub = cmd[0] == 's';
        int rv = sub ? api->subscribe(c, cmd + 4) : api->unsubscribe(c, cmd + 6);
        char ack[300];
        snprintf(ack, sizeof(ack), "%s:%s:%d", sub ? "subscribed" : "unsubscribed",
                 cmd + (sub ? 4 : 6), rv);
        api->send(c, WS_TEXT, ack, strlen(ack), 0);
        return 1;
    }
    if (strncmp(cmd, "pub:", 4) == 0 || strncmp(cmd, "publocal:", 9) == 0) {
        int local = cmd[3] == 'l';
        char *channel = cmd + (local ? 9 : 4);
        char *text = strchr(channel, ':');
        if (text) {
            *text++ = '\0';
            api->publish(channel, WS_TEXT, text, strlen(text), local ? WS_PUBLISH_LOCAL : 0);
        }
        return 1;
    }
    return 0;
}

static int probe_message(ws_conn *c, int type, const void *data, size_t len)
{
    int rv = 0;
    if (type == WS_TEXT) {
        char *cmd = malloc(len + 1);
        if (!cmd) {
            return -1;
        }
        memcpy(cmd, data, len);
        cmd[len] = '\0';
        rv = probe_command(c, cmd);
        free(cmd);
    }
    if (rv == 0) {
        api->send(c, type, data, len, 0);
    }
    return rv < 0 ? -1 : 0;
}

static const ws_plugin probe_plugin = {
    .magic = WS_PLUGIN_MAGIC,
    .abi_version = WS_ABI_VERSION,
    .size = sizeof(ws_plugin),
    .name = "probe",
    .init = probe_init,
    .fini = probe_fini,
    .child_exit = probe_child_exit,
    .on_open = probe_open,
    .on_message = probe_message,
};

const ws_plugin *websocket_plugin_init(const ws_api *host)
{
    api = host;
    return &probe_plugin;
}
