/*
 * mod_websocket.c - the httpd glue of mod_websocket: directives, plugin loading, the
 * RFC 6455 opening handshake, and the connection driver.
 *
 * Design
 * - The protocol (frames, UTF-8, close rules) lives in ws_proto.h, which knows nothing
 *   of httpd.  This file turns brigades into bytes for it and its events into plugin
 *   callbacks, and plugin sends into frames on the connection's output filters.
 * - One I/O owner per connection.  Only the thread running the connection's driver
 *   reads or writes its filters (mod_ssl lives there: two threads in one SSL object is
 *   how older Apache WebSocket modules crashed).  Other threads hold a ws_handle: a
 *   reference-counted, mutex-protected outbound queue plus a way to wake the owner.
 *   A handle outlives its connection; sends then fail with WS_ECLOSED.
 * - The blocking driver (every MPM) keeps the handler thread for the connection's whole
 *   life: it drains input without blocking (mod_ssl may hold decrypted bytes the socket
 *   poll cannot see), runs the plugin, flushes, and polls the socket plus a wake pipe.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_connection.h"
#include "http_log.h"
#include "http_main.h"
#include "http_protocol.h"
#include "http_request.h"
#include "http_ssl.h"
#include "ap_mpm.h"
#include "apr_atomic.h"
#include "apr_dso.h"
#include "apr_lib.h"
#include "apr_strings.h"
#include "apr_portable.h"

#include "mod_websocket.h"
#include "ws_accept.h"
#include "ws_proto.h"

module AP_MODULE_DECLARE_DATA websocket_module;
APLOG_USE_MODULE(websocket);

#define WS_DEFAULT_MAX_MESSAGE (16 * 1024 * 1024)
#define WS_DEFAULT_MAX_QUEUE (16 * 1024 * 1024)
#define WS_READ_SIZE 65536
#define WS_FLUSH_AT 65536                        /* flush in-callback sends past this */
#define WS_CLOSE_WAIT apr_time_from_sec(5)       /* wait for the peer's close reply */

/* ---- configuration ------------------------------------------------------------ */

/* A plugin loaded by one WebSocketHandler line, with that section's settings. */
typedef struct ws_instance {
    const char *path;
    const char *symbol;
    const char *where;            /* "FILE:LINE" for messages */
    ws_plugin p;                  /* zero-filled copy of what the plugin declared */
    apr_array_header_t *settings; /* ws_setting */
    void *plugin_data;
} ws_instance;

typedef struct ws_dir_conf {
    ws_instance *inst;
    int inst_set;
    apr_array_header_t *settings;     /* WebSocketPluginConfig lines of this section */
    apr_off_t max_message;
    int max_message_set;
    apr_off_t max_queue;
    int max_queue_set;
    apr_array_header_t *origins;      /* normalized "scheme://host:port" */
    int origins_any;
    int origins_set;
} ws_dir_conf;

/* Sections with a WebSocketHandler or WebSocketPluginConfig, for post_config.  In
 * pconf, recreated at each configuration read. */
static apr_array_header_t *ws_sections;

static void *ws_create_dir_conf(apr_pool_t *p, char *dir)
{
    ws_dir_conf *conf = apr_pcalloc(p, sizeof(*conf));
    (void)dir;
    conf->max_message = WS_DEFAULT_MAX_MESSAGE;
    conf->max_queue = WS_DEFAULT_MAX_QUEUE;
    return conf;
}

static void *ws_merge_dir_conf(apr_pool_t *p, void *basev, void *addv)
{
    ws_dir_conf *base = basev, *add = addv;
    ws_dir_conf *conf = apr_pcalloc(p, sizeof(*conf));

    conf->inst = add->inst_set ? add->inst : base->inst;
    conf->inst_set = add->inst_set || base->inst_set;
    conf->settings = add->settings;
    conf->max_message = add->max_message_set ? add->max_message : base->max_message;
    conf->max_message_set = add->max_message_set || base->max_message_set;
    conf->max_queue = add->max_queue_set ? add->max_queue : base->max_queue;
    conf->max_queue_set = add->max_queue_set || base->max_queue_set;
    if (add->origins_set) {
        conf->origins = add->origins;
        conf->origins_any = add->origins_any;
    }
    else {
        conf->origins = base->origins;
        conf->origins_any = base->origins_any;
    }
    conf->origins_set = add->origins_set || base->origins_set;
    return conf;
}

static void ws_note_section(ws_dir_conf *conf)
{
    int i;
    for (i = 0; i < ws_sections->nelts; i++) {
        if (APR_ARRAY_IDX(ws_sections, i, ws_dir_conf *) == conf) {
            return;
        }
    }
    APR_ARRAY_PUSH(ws_sections, ws_dir_conf *) = conf;
}

static apr_status_t ws_instance_fini(void *data)
{
    ws_instance *inst = data;
    if (inst->p.fini) {
        inst->p.fini(inst->plugin_data);
    }
    return APR_SUCCESS;
}

static const ws_api ws_the_api;

/* WebSocketHandler PATH.so [INIT_SYMBOL]: load the plugin now, so that a missing file,
 * a missing symbol or an ABI mismatch fails `apache2 -t` with the file named. */
static const char *ws_cmd_handler(cmd_parms *cmd, void *dconf, const char *path,
                                  const char *symbol)
{
    ws_dir_conf *conf = dconf;
    ws_instance *inst = apr_pcalloc(cmd->pool, sizeof(*inst));
    apr_dso_handle_t *dso;
    apr_dso_handle_sym_t sym;
    ws_plugin_init_fn initfn;
    const ws_plugin *decl;
    char errbuf[256];
    apr_status_t rv;

    inst->path = ap_server_root_relative(cmd->pool, path);
    if (!inst->path) {
        return apr_psprintf(cmd->pool, "WebSocketHandler: invalid path '%s'", path);
    }
    inst->symbol = symbol ? symbol : WS_PLUGIN_INIT_SYMBOL;
    inst->where = apr_psprintf(cmd->pool, "%s:%d", cmd->directive->filename,
                               cmd->directive->line_num);

    rv = apr_dso_load(&dso, inst->path, cmd->pool);
    if (rv != APR_SUCCESS) {
        return apr_psprintf(cmd->pool, "WebSocketHandler: cannot load %s: %s", inst->path,
                            apr_dso_error(dso, errbuf, sizeof(errbuf)));
    }
    rv = apr_dso_sym(&sym, dso, inst->symbol);
    if (rv != APR_SUCCESS) {
        return apr_psprintf(cmd->pool, "WebSocketHandler: %s has no symbol '%s': %s",
                            inst->path, inst->symbol,
                            apr_dso_error(dso, errbuf, sizeof(errbuf)));
    }
    initfn = (ws_plugin_init_fn)(uintptr_t)sym;
    decl = initfn(&ws_the_api);
    if (!decl) {
        return apr_psprintf(cmd->pool, "WebSocketHandler: %s: %s() returned NULL",
                            inst->path, inst->symbol);
    }
    if (decl->magic != WS_PLUGIN_MAGIC) {
        return apr_psprintf(cmd->pool, "WebSocketHandler: %s is not a mod_websocket "
                            "plugin (bad magic 0x%08x)", inst->path, (unsigned)decl->magic);
    }
    if (decl->abi_version != WS_ABI_VERSION) {
        return apr_psprintf(cmd->pool, "WebSocketHandler: %s was built for plugin ABI "
                            "version %u, this mod_websocket speaks version %u", inst->path,
                            (unsigned)decl->abi_version, WS_ABI_VERSION);
    }
    if (decl->size < offsetof(ws_plugin, on_close) + sizeof(decl->on_close)) {
        return apr_psprintf(cmd->pool, "WebSocketHandler: %s declares a plugin struct of "
                            "%lu bytes, smaller than ABI version 1's", inst->path,
                            (unsigned long)decl->size);
    }
    /* Read only what the plugin's struct has; a newer plugin's extra members are
     * ignored, an older one's missing members stay NULL. */
    memcpy(&inst->p, decl, decl->size < sizeof(inst->p) ? decl->size : sizeof(inst->p));
    if (!inst->p.name) {
        inst->p.name = apr_filepath_name_get(inst->path);
    }

    conf->inst = inst;
    conf->inst_set = 1;
    ws_note_section(conf);
    return NULL;
}

static const char *ws_cmd_plugin_config(cmd_parms *cmd, void *dconf, const char *key,
                                        const char *value)
{
    ws_dir_conf *conf = dconf;
    ws_setting *s;
    if (!conf->settings) {
        conf->settings = apr_array_make(cmd->pool, 4, sizeof(ws_setting));
    }
    s = &APR_ARRAY_PUSH(conf->settings, ws_setting);
    s->key = key;
    s->value = value;
    ws_note_section(conf);
    return NULL;
}

static const char *ws_parse_size(cmd_parms *cmd, const char *arg, apr_off_t min,
                                 apr_off_t *out)
{
    char *end;
    apr_off_t v;
    if (apr_strtoff(&v, arg, &end, 10) != APR_SUCCESS || *end || v < min) {
        return apr_psprintf(cmd->pool, "%s: '%s' is not a size in bytes (>= %" APR_OFF_T_FMT ")",
                            cmd->cmd->name, arg, min);
    }
    *out = v;
    return NULL;
}

static const char *ws_cmd_max_message(cmd_parms *cmd, void *dconf, const char *arg)
{
    ws_dir_conf *conf = dconf;
    conf->max_message_set = 1;
    return ws_parse_size(cmd, arg, 1, &conf->max_message);
}

static const char *ws_cmd_max_queue(cmd_parms *cmd, void *dconf, const char *arg)
{
    ws_dir_conf *conf = dconf;
    conf->max_queue_set = 1;
    return ws_parse_size(cmd, arg, 1024, &conf->max_queue);
}

static const char *ws_lower(apr_pool_t *p, const char *s)
{
    char *copy = apr_pstrdup(p, s);
    ap_str_tolower(copy);
    return copy;
}

/* Normalize an origin "scheme://host[:port]" to lower case with an explicit port.
 * Returns NULL if it is not of that form. */
static const char *ws_origin_normalize(apr_pool_t *p, const char *origin)
{
    apr_uri_t u;
    apr_port_t port;
    if (apr_uri_parse(p, origin, &u) != APR_SUCCESS || !u.scheme || !u.hostname
        || (u.path && *u.path && strcmp(u.path, "/") != 0) || u.query || u.user) {
        return NULL;
    }
    port = u.port ? u.port : apr_uri_port_of_scheme(u.scheme);
    if (!port) {
        return NULL;
    }
    return apr_psprintf(p, "%s://%s:%u", ws_lower(p, u.scheme), ws_lower(p, u.hostname),
                        (unsigned)port);
}

static const char *ws_cmd_origins(cmd_parms *cmd, void *dconf, const char *arg)
{
    ws_dir_conf *conf = dconf;
    const char *norm;
    if (!conf->origins) {
        conf->origins = apr_array_make(cmd->pool, 2, sizeof(const char *));
    }
    conf->origins_set = 1;
    if (strcmp(arg, "*") == 0) {
        conf->origins_any = 1;
        return NULL;
    }
    if (strcmp(arg, "null") == 0) {
        norm = "null";
    }
    else if (!(norm = ws_origin_normalize(cmd->pool, arg))) {
        return apr_psprintf(cmd->pool, "WebSocketAllowedOrigins: '%s' is not an origin "
                            "(scheme://host[:port]), 'null' or '*'", arg);
    }
    APR_ARRAY_PUSH(conf->origins, const char *) = norm;
    return NULL;
}

static const command_rec ws_cmds[] = {
    AP_INIT_TAKE12("WebSocketHandler", ws_cmd_handler, NULL, RSRC_CONF | ACCESS_CONF,
                   "PATH.so [INIT_SYMBOL]: the plugin serving WebSocket connections here "
                   "(PATH relative to ServerRoot)"),
    AP_INIT_TAKE2("WebSocketPluginConfig", ws_cmd_plugin_config, NULL, RSRC_CONF | ACCESS_CONF,
                  "KEY VALUE: a setting passed to this section's plugin at init"),
    AP_INIT_TAKE1("WebSocketMaxMessageSize", ws_cmd_max_message, NULL, RSRC_CONF | ACCESS_CONF,
                  "largest message accepted, in bytes after reassembly (default 16777216)"),
    AP_INIT_TAKE1("WebSocketMaxQueue", ws_cmd_max_queue, NULL, RSRC_CONF | ACCESS_CONF,
                  "bytes a connection may have queued for sending before it is closed "
                  "with 1008 (default 16777216)"),
    AP_INIT_ITERATE("WebSocketAllowedOrigins", ws_cmd_origins, NULL, RSRC_CONF | ACCESS_CONF,
                    "origins (scheme://host[:port], 'null' or '*') allowed besides the "
                    "same origin"),
    { NULL }
};

static int ws_pre_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp)
{
    (void)plog; (void)ptemp;
    ws_sections = apr_array_make(pconf, 4, sizeof(ws_dir_conf *));
    return OK;
}

/* Run each plugin's init with its section's settings.  Returns an error string. */
static const char *ws_init_plugins(apr_pool_t *pconf)
{
    int i;
    for (i = 0; i < ws_sections->nelts; i++) {
        ws_dir_conf *conf = APR_ARRAY_IDX(ws_sections, i, ws_dir_conf *);
        ws_instance *inst = conf->inst_set ? conf->inst : NULL;
        char err[256] = "";
        if (!inst) {
            return "WebSocketPluginConfig is used in a section without a WebSocketHandler";
        }
        inst->settings = conf->settings;
        if (inst->p.init) {
            const ws_setting *s = inst->settings ? (const ws_setting *)inst->settings->elts : NULL;
            size_t n = inst->settings ? (size_t)inst->settings->nelts : 0;
            if (inst->p.init(&inst->plugin_data, s, n, err, sizeof(err)) != 0) {
                return apr_psprintf(pconf, "WebSocketHandler %s (%s): plugin init failed: %s",
                                    inst->path, inst->where, err[0] ? err : "no reason given");
            }
        }
        /* Registered after the dso's own cleanup, so it runs before the unload. */
        apr_pool_cleanup_register(pconf, inst, ws_instance_fini, apr_pool_cleanup_null);
    }
    return NULL;
}

static int ws_post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                          server_rec *s)
{
    const char *err = ws_init_plugins(pconf);
    (void)plog; (void)ptemp;
    if (err) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "WS00001: %s", err);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    return OK;
}

/* `apache2 -t` does not run post_config: check plugin init here so that a bad setting
 * fails the test as it would fail the start. */
static void ws_test_config(apr_pool_t *pconf, server_rec *s)
{
    const char *err = ws_init_plugins(pconf);
    if (err) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "WS00002: %s", err);
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
}

static apr_status_t ws_child_exit(void *data)
{
    apr_array_header_t *insts = data;
    int i;
    for (i = 0; i < insts->nelts; i++) {
        ws_instance *inst = APR_ARRAY_IDX(insts, i, ws_instance *);
        if (inst->p.child_exit) {
            inst->p.child_exit(inst->plugin_data);
        }
    }
    return APR_SUCCESS;
}

static void ws_child_init(apr_pool_t *pchild, server_rec *s)
{
    apr_array_header_t *insts = apr_array_make(pchild, 4, sizeof(ws_instance *));
    int i, j;
    (void)s;
    for (i = 0; i < ws_sections->nelts; i++) {
        ws_instance *inst = APR_ARRAY_IDX(ws_sections, i, ws_dir_conf *)->inst;
        for (j = 0; j < insts->nelts; j++) {
            if (APR_ARRAY_IDX(insts, j, ws_instance *) == inst) {
                break;
            }
        }
        if (inst && j == insts->nelts) {
            APR_ARRAY_PUSH(insts, ws_instance *) = inst;
            if (inst->p.child_init) {
                inst->p.child_init(inst->plugin_data);
            }
        }
    }
    apr_pool_cleanup_register(pchild, insts, ws_child_exit, apr_pool_cleanup_null);
}

/* ---- handles: the part of a connection other threads may touch --------------- */

typedef struct ws_qmsg {
    struct ws_qmsg *next;
    int opcode;
    size_t len;
    size_t hdr_off;               /* frame header is written at data - hdr_len */
    unsigned char room[WS_FRAME_HEADER_MAX];
    unsigned char data[];
} ws_qmsg;

struct ws_handle {
    apr_uint32_t refs;
    pthread_mutex_t mu;
    int alive;                    /* the connection's driver still runs */
    int wake_fd[2];               /* blocking driver: pipe the owner polls */
    int wake_pending;             /* a byte is in the pipe already */
    ws_qmsg *head, *tail;
    apr_size_t queued;
    apr_size_t max_queue;
    int overflow;                 /* a send did not fit: fail with 1008 */
    int close_code;               /* handle_close asked for a close, 0 if not */
    char close_reason[124];
};

static void ws_handle_wake_locked(ws_handle *h)
{
    if (!h->wake_pending && h->wake_fd[1] >= 0) {
        char b = 1;
        ssize_t n;
        do {
            n = write(h->wake_fd[1], &b, 1);
        } while (n < 0 && errno == EINTR);
        h->wake_pending = 1;
    }
}

static ws_handle *ws_handle_create(apr_size_t max_queue)
{
    ws_handle *h = calloc(1, sizeof(*h));
    if (!h) {
        return NULL;
    }
    h->refs = 1;
    h->alive = 1;
    h->max_queue = max_queue;
    if (pthread_mutex_init(&h->mu, NULL) != 0) {
        free(h);
        return NULL;
    }
    if (pipe(h->wake_fd) != 0) {
        pthread_mutex_destroy(&h->mu);
        free(h);
        return NULL;
    }
    fcntl(h->wake_fd[0], F_SETFL, O_NONBLOCK);
    fcntl(h->wake_fd[1], F_SETFL, O_NONBLOCK);
    fcntl(h->wake_fd[0], F_SETFD, FD_CLOEXEC);
    fcntl(h->wake_fd[1], F_SETFD, FD_CLOEXEC);
    return h;
}

static void ws_handle_retain(ws_handle *h)
{
    if (h) {
        apr_atomic_inc32(&h->refs);
    }
}

static void ws_qmsg_free_list(ws_qmsg *m)
{
    while (m) {
        ws_qmsg *next = m->next;
        free(m);
        m = next;
    }
}

static void ws_handle_release(ws_handle *h)
{
    if (h && apr_atomic_dec32(&h->refs) == 0) {
        ws_qmsg_free_list(h->head);
        pthread_mutex_destroy(&h->mu);
        free(h);
    }
}

/* The connection is over: refuse further sends, drop what is queued, close the pipe. */
static void ws_handle_detach(ws_handle *h)
{
    ws_qmsg *drop;
    pthread_mutex_lock(&h->mu);
    if (!h->alive) {
        pthread_mutex_unlock(&h->mu);
        return;
    }
    h->alive = 0;
    drop = h->head;
    h->head = h->tail = NULL;
    h->queued = 0;
    close(h->wake_fd[0]);
    close(h->wake_fd[1]);
    h->wake_fd[0] = h->wake_fd[1] = -1;
    pthread_mutex_unlock(&h->mu);
    ws_qmsg_free_list(drop);
}

static int ws_valid_send_args(int type, const void *data, size_t len)
{
    if (type != WS_TEXT && type != WS_BINARY) {
        return 0;
    }
    if (!data && len) {
        return 0;
    }
    /* RFC 6455 5.6: text frames carry UTF-8 */
    if (type == WS_TEXT && !ws_utf8_valid(data, len)) {
        return 0;
    }
    return 1;
}

static int ws_api_handle_send(ws_handle *h, int type, const void *data, size_t len,
                              int flags)
{
    ws_qmsg *m;
    (void)flags;
    if (!h || !ws_valid_send_args(type, data, len)) {
        return WS_EINVAL;
    }
    m = malloc(sizeof(*m) + len);
    if (!m) {
        return WS_ENOMEM;
    }
    m->next = NULL;
    m->opcode = type == WS_TEXT ? WS_OP_TEXT : WS_OP_BINARY;
    m->len = len;
    if (len) {
        memcpy(m->data, data, len);
    }
    pthread_mutex_lock(&h->mu);
    if (!h->alive || h->close_code || h->overflow) {
        pthread_mutex_unlock(&h->mu);
        free(m);
        return WS_ECLOSED;
    }
    if (h->queued + len > h->max_queue) {
        /* Documented policy: a peer that does not read what it is sent is closed with
         * 1008; the sender learns it now, nothing already queued is lost. */
        h->overflow = 1;
        ws_handle_wake_locked(h);
        pthread_mutex_unlock(&h->mu);
        free(m);
        return WS_EFULL;
    }
    if (h->tail) {
        h->tail->next = m;
    }
    else {
        h->head = m;
    }
    h->tail = m;
    h->queued += len;
    ws_handle_wake_locked(h);
    pthread_mutex_unlock(&h->mu);
    return WS_SUCCESS;
}

static int ws_api_handle_close(ws_handle *h, int code, const char *reason)
{
    if (!h || !ws_close_code_valid((unsigned)code)
        || (reason && !ws_utf8_valid((const uint8_t *)reason, strlen(reason)))) {
        return WS_EINVAL;
    }
    pthread_mutex_lock(&h->mu);
    if (!h->alive || h->close_code) {
        pthread_mutex_unlock(&h->mu);
        return WS_ECLOSED;
    }
    h->close_code = code;
    apr_cpystrn(h->close_reason, reason ? reason : "", sizeof(h->close_reason));
    ws_handle_wake_locked(h);
    pthread_mutex_unlock(&h->mu);
    return WS_SUCCESS;
}

/* ---- the session: one WebSocket connection, owned by its I/O thread ------------ */

typedef enum { WS_ST_OPENING, WS_ST_OPEN, WS_ST_CLOSING, WS_ST_DONE } ws_state;

struct ws_conn {
    conn_rec *c;
    request_rec *r;               /* valid during on_open only */
    ws_instance *inst;
    ws_handle *h;
    apr_bucket_brigade *bbin;
    apr_bucket_brigade *bbout;
    apr_off_t out_buffered;       /* bytes in bbout not yet passed */
    ws_parser parser;
    ws_state state;
    void *user_data;
    const char *protocol;
    const char *const *offered;
    int opened;                   /* on_open accepted: on_close is owed */
    int close_sent;
    int close_received;
    int closed_by_server;
    unsigned close_code;          /* for on_close and the log */
    const char *close_reason;
    apr_time_t close_deadline;
    apr_time_t start;
    apr_uint64_t msgs_in, msgs_out, bytes_in, bytes_out;
    unsigned char rbuf[WS_READ_SIZE];
};

/* Append one frame to bbout.  Small frames share 8 KB heap buckets (one writev for many
 * messages); large payloads get a bucket of their own. */
static void ws_out_frame(ws_conn *s, unsigned opcode, const void *data, size_t len)
{
    uint8_t hdr[WS_FRAME_HEADER_MAX];
    size_t hlen = ws_frame_header(hdr, 1, 0, opcode, len, NULL);
    apr_brigade_write(s->bbout, NULL, NULL, (const char *)hdr, hlen);
    if (len <= 4096) {
        if (len) {
            apr_brigade_write(s->bbout, NULL, NULL, data, len);
        }
    }
    else {
        APR_BRIGADE_INSERT_TAIL(s->bbout, apr_bucket_heap_create(data, len, NULL,
                                                                 s->c->bucket_alloc));
    }
    s->out_buffered += (apr_off_t)(hlen + len);
    s->bytes_out += hlen + len;
}

/* Pass bbout to the connection's filters with a flush (blocking until written). */
static apr_status_t ws_flush(ws_conn *s)
{
    apr_status_t rv;
    if (APR_BRIGADE_EMPTY(s->bbout)) {
        return APR_SUCCESS;
    }
    APR_BRIGADE_INSERT_TAIL(s->bbout, apr_bucket_flush_create(s->c->bucket_alloc));
    rv = ap_pass_brigade(s->c->output_filters, s->bbout);
    apr_brigade_cleanup(s->bbout);
    s->out_buffered = 0;
    if (rv != APR_SUCCESS || s->c->aborted) {
        s->c->aborted = 1;
        return rv != APR_SUCCESS ? rv : APR_ECONNABORTED;
    }
    return APR_SUCCESS;
}

/* Send a close frame (once) and move to CLOSING. */
static void ws_send_close(ws_conn *s, unsigned code, const char *reason)
{
    uint8_t payload[125];
    size_t n;
    if (s->close_sent) {
        return;
    }
    n = ws_close_build(payload, code, reason, reason ? strlen(reason) : 0);
    ws_out_frame(s, WS_OP_CLOSE, payload, n);
    s->close_sent = 1;
    if (!s->close_received) {
        s->closed_by_server = 1;
        s->close_code = code;
        s->close_reason = apr_pstrdup(s->c->pool, reason ? reason : "");
        s->close_deadline = apr_time_now() + WS_CLOSE_WAIT;
    }
    s->state = s->close_received ? WS_ST_DONE : WS_ST_CLOSING;
}

/* RFC 6455 7.1.7: fail the connection: send the close code if we still can, then end. */
static void ws_fail(ws_conn *s, unsigned code, const char *reason)
{
    ap_log_cerror(APLOG_MARK, APLOG_DEBUG, 0, s->c, "WS00010: failing connection: %u %s",
                  code, reason);
    ws_send_close(s, code, reason);
    s->state = WS_ST_DONE;
}

static int ws_plugin_send(ws_conn *s, int type, const void *data, size_t len)
{
    if (s->state != WS_ST_OPENING && s->state != WS_ST_OPEN) {
        return WS_ECLOSED;
    }
    ws_out_frame(s, type == WS_TEXT ? WS_OP_TEXT : WS_OP_BINARY, data, len);
    s->msgs_out++;
    return WS_SUCCESS;
}

/* ---- the api table -------------------------------------------------------------- */

static int ws_api_send(ws_conn *s, int type, const void *data, size_t len, int flags)
{
    int rv;
    (void)flags;
    if (!s || !ws_valid_send_args(type, data, len)) {
        return WS_EINVAL;
    }
    rv = ws_plugin_send(s, type, data, len);
    if (rv == WS_SUCCESS && s->state == WS_ST_OPEN && s->out_buffered >= WS_FLUSH_AT) {
        ws_flush(s);
    }
    return rv;
}

static int ws_api_close(ws_conn *s, int code, const char *reason)
{
    if (!s || !ws_close_code_valid((unsigned)code)
        || (reason && !ws_utf8_valid((const uint8_t *)reason, strlen(reason)))) {
        return WS_EINVAL;
    }
    if (s->state != WS_ST_OPENING && s->state != WS_ST_OPEN) {
        return WS_ECLOSED;
    }
    ws_send_close(s, (unsigned)code, reason);
    return WS_SUCCESS;
}

static void ws_api_set_user_data(ws_conn *s, void *data) { s->user_data = data; }
static void *ws_api_get_user_data(ws_conn *s) { return s->user_data; }
static void *ws_api_plugin_data(ws_conn *s) { return s->inst->plugin_data; }

static int ws_api_set_protocol(ws_conn *s, const char *protocol)
{
    const char *const *o;
    if (s->state != WS_ST_OPENING || !protocol) {
        return WS_EINVAL;
    }
    /* RFC 6455 4.2.2: the server picks one of the values the client offered */
    for (o = s->offered; *o; o++) {
        if (strcmp(*o, protocol) == 0) {
            s->protocol = *o;
            return WS_SUCCESS;
        }
    }
    return WS_EINVAL;
}

static const char *ws_api_request_header(ws_conn *s, const char *name)
{
    if (!s->r || !name) {
        return NULL;
    }
    return apr_table_get(s->r->headers_in, name);
}

static ws_handle *ws_api_handle_get(ws_conn *s)
{
    ws_handle_retain(s->h);
    return s->h;
}

static void ws_api_log(ws_conn *s, int level, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    apr_vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (level < APLOG_EMERG || level > APLOG_DEBUG) {
        level = APLOG_INFO;
    }
    if (s) {
        ap_log_cerror(APLOG_MARK, level, 0, s->c, "WS00020: [%s] %s", s->inst->p.name, msg);
    }
    else {
        ap_log_error(APLOG_MARK, level, 0, ap_server_conf, "WS00021: %s", msg);
    }
}

static const ws_api ws_the_api = {
    WS_ABI_VERSION,
    sizeof(ws_api),
    ws_api_send,
    ws_api_close,
    ws_api_set_user_data,
    ws_api_get_user_data,
    ws_api_plugin_data,
    ws_api_set_protocol,
    ws_api_request_header,
    ws_api_handle_get,
    ws_handle_retain,
    ws_handle_release,
    ws_api_handle_send,
    ws_api_handle_close,
    ws_api_log,
};

/* ---- frames in ------------------------------------------------------------------ */

static void ws_on_event(ws_conn *s, const ws_event *ev)
{
    switch (ev->type) {
    case WS_EV_MESSAGE:
        s->msgs_in++;
        if (s->state != WS_ST_OPEN) {
            return;     /* RFC 6455 1.4: after our close, data may still arrive; drop it */
        }
        if (s->inst->p.on_message
            && s->inst->p.on_message(s, ev->opcode == WS_OP_TEXT ? WS_TEXT : WS_BINARY,
                                     ev->data, ev->len) != 0) {
            ws_fail(s, WS_CLOSE_INTERNAL, "plugin error");
        }
        break;
    case WS_EV_PING:
        /* RFC 6455 5.5.2: answer with a pong carrying the same data, unless closing */
        if (!s->close_sent) {
            ws_out_frame(s, WS_OP_PONG, ev->data, ev->len);
        }
        break;
    case WS_EV_PONG:
        break;
    case WS_EV_CLOSE:
        s->close_received = 1;
        if (!s->close_sent) {
            /* RFC 6455 5.5.1: echo the status code we received */
            s->close_code = ev->close_code;
            s->close_reason = apr_pstrmemdup(s->c->pool, (const char *)ev->data, ev->len);
            ws_send_close(s, ev->close_code == WS_CLOSE_NO_STATUS ? 0 : ev->close_code, "");
        }
        s->state = WS_ST_DONE;
        break;
    default:
        break;
    }
}

/* Feed n bytes of s->rbuf to the parser and act on every event. */
static void ws_consume(ws_conn *s, size_t n)
{
    uint8_t *p = s->rbuf;
    s->bytes_in += n;
    while (n > 0 && s->state != WS_ST_DONE) {
        ws_event ev;
        size_t used = 0;
        int rv = ws_parser_feed(&s->parser, p, n, &used, &ev);
        p += used;
        n -= used;
        if (rv == WS_NEED_MORE) {
            break;
        }
        if (rv < 0) {
            ws_fail(s, ws_error_close_code(rv), ws_error_text(rv));
            break;
        }
        ws_on_event(s, &ev);
    }
}

/* Read what the input filters have without blocking.  Returns APR_SUCCESS if bytes
 * were consumed, APR_EAGAIN if none were there, APR_EOF or an error otherwise. */
static apr_status_t ws_read_available(ws_conn *s)
{
    apr_status_t rv;
    apr_size_t len;
    int eos = 0;
    apr_bucket *b;

    rv = ap_get_brigade(s->c->input_filters, s->bbin, AP_MODE_READBYTES,
                        APR_NONBLOCK_READ, sizeof(s->rbuf));
    if (APR_STATUS_IS_EAGAIN(rv)) {
        return APR_EAGAIN;
    }
    if (rv != APR_SUCCESS) {
        apr_brigade_cleanup(s->bbin);
        return rv;
    }
    for (b = APR_BRIGADE_FIRST(s->bbin); b != APR_BRIGADE_SENTINEL(s->bbin);
         b = APR_BUCKET_NEXT(b)) {
        if (APR_BUCKET_IS_EOS(b)) {
            eos = 1;
        }
    }
    len = sizeof(s->rbuf);
    rv = apr_brigade_flatten(s->bbin, (char *)s->rbuf, &len);
    apr_brigade_cleanup(s->bbin);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    if (len) {
        ws_consume(s, len);
        return APR_SUCCESS;
    }
    return eos ? APR_EOF : APR_EAGAIN;
}

/* Move what other threads queued into bbout, and act on their close or overflow. */
static void ws_drain_handle(ws_conn *s)
{
    ws_handle *h = s->h;
    ws_qmsg *list, *m;
    int overflow, close_code;
    char reason[124];
    char junk[64];

    pthread_mutex_lock(&h->mu);
    while (read(h->wake_fd[0], junk, sizeof(junk)) > 0) {
    }
    h->wake_pending = 0;
    list = h->head;
    h->head = h->tail = NULL;
    h->queued = 0;
    overflow = h->overflow;
    close_code = h->close_code;
    memcpy(reason, h->close_reason, sizeof(reason));
    pthread_mutex_unlock(&h->mu);

    for (m = list; m; m = m->next) {
        if (s->state == WS_ST_OPEN) {
            ws_out_frame(s, (unsigned)m->opcode, m->data, m->len);
            s->msgs_out++;
            if (s->out_buffered >= WS_FLUSH_AT && ws_flush(s) != APR_SUCCESS) {
                s->state = WS_ST_DONE;
            }
        }
    }
    ws_qmsg_free_list(list);
    if (s->state == WS_ST_OPEN) {
        if (overflow) {
            ws_fail(s, WS_CLOSE_POLICY, "send queue overflow");
        }
        else if (close_code) {
            ws_send_close(s, (unsigned)close_code, reason);
        }
    }
}

/* ---- the blocking driver -------------------------------------------------------- */

static void ws_run_blocking(ws_conn *s)
{
    apr_pollfd_t pfd;
    apr_interval_time_t timeout = -1;
    apr_os_sock_t sockfd = -1;

    memset(&pfd, 0, sizeof(pfd));
    pfd.p = s->c->pool;
    if (ap_get_pollfd_from_conn(s->c, &pfd, &timeout) != APR_SUCCESS) {
        s->state = WS_ST_DONE;
        return;
    }
    if (pfd.desc_type == APR_POLL_SOCKET) {
        apr_os_sock_get(&sockfd, pfd.desc.s);
    }
    else {
        apr_os_file_get(&sockfd, pfd.desc.f);
    }

    while (s->state != WS_ST_DONE) {
        struct pollfd fds[2];
        int wait_ms = -1, n;
        apr_status_t rv;

        /* Drain everything the filters already have: bytes mod_ssl decrypted, or a
         * frame that came in the same segment as the handshake, are invisible to poll. */
        do {
            rv = ws_read_available(s);
        } while (rv == APR_SUCCESS && s->state != WS_ST_DONE);
        if (rv != APR_SUCCESS && !APR_STATUS_IS_EAGAIN(rv)) {
            s->state = WS_ST_DONE;      /* EOF or error: TCP went away */
        }
        ws_drain_handle(s);
        if (ws_flush(s) != APR_SUCCESS) {
            s->state = WS_ST_DONE;
        }
        if (s->state == WS_ST_DONE) {
            break;
        }
        if (s->state == WS_ST_CLOSING) {
            apr_time_t left = s->close_deadline - apr_time_now();
            if (left <= 0) {
                break;      /* the peer never answered our close */
            }
            wait_ms = (int)apr_time_msec(left) + 1;
        }

        fds[0].fd = sockfd;
        fds[0].events = POLLIN;
        fds[1].fd = s->h->wake_fd[0];
        fds[1].events = POLLIN;
        fds[0].revents = fds[1].revents = 0;
        n = poll(fds, 2, wait_ms);
        if (n < 0 && errno != EINTR) {
            break;
        }
    }
    ws_flush(s);
}

/* ---- the opening handshake (RFC 6455 4.2) --------------------------------------- */

/* Same-origin check, or the configured list (CSWSH protection).  1 if allowed. */
static int ws_origin_allowed(request_rec *r, const ws_dir_conf *conf, const char *origin)
{
    const char *norm, *host, *self;
    apr_port_t port;
    char *hostname = NULL, *scope = NULL;
    int i;

    if (!origin || conf->origins_any) {
        return 1;   /* no Origin: not a browser, CSWSH does not apply */
    }
    norm = strcmp(origin, "null") == 0 ? "null" : ws_origin_normalize(r->pool, origin);
    if (!norm) {
        return 0;
    }
    for (i = 0; conf->origins && i < conf->origins->nelts; i++) {
        if (strcmp(APR_ARRAY_IDX(conf->origins, i, const char *), norm) == 0) {
            return 1;
        }
    }
    if (strcmp(norm, "null") == 0) {
        return 0;
    }
    host = apr_table_get(r->headers_in, "Host");
    if (!host || apr_parse_addr_port(&hostname, &scope, &port, host, r->pool) != APR_SUCCESS
        || !hostname) {
        return 0;
    }
    if (!port) {
        port = ap_ssl_conn_is_ssl(r->connection) ? 443 : 80;
    }
    /* Compare host and port; the Origin's scheme only sets its default port, so that
     * a TLS-terminating proxy in front does not break same-origin pages. */
    self = apr_psprintf(r->pool, "%s:%u", ws_lower(r->pool, hostname), (unsigned)port);
    norm = strstr(norm, "://");
    return norm && strcmp(norm + 3, self) == 0;
}

/* The subprotocols the client offered, NULL-terminated. */
static const char *const *ws_offered_protocols(request_rec *r)
{
    apr_array_header_t *arr = apr_array_make(r->pool, 4, sizeof(const char *));
    const char *list = apr_table_get(r->headers_in, "Sec-WebSocket-Protocol");
    const char *pos = list, *tok;
    size_t toklen;
    while (pos && ws_next_token(&pos, &tok, &toklen)) {
        APR_ARRAY_PUSH(arr, const char *) = apr_pstrmemdup(r->pool, tok, toklen);
    }
    APR_ARRAY_PUSH(arr, const char *) = NULL;
    return (const char *const *)arr->elts;
}

static int ws_handshake_status(request_rec *r, const ws_dir_conf *conf)
{
    const char *upgrade = apr_table_get(r->headers_in, "Upgrade");
    const char *connection = apr_table_get(r->headers_in, "Connection");
    const char *version = apr_table_get(r->headers_in, "Sec-WebSocket-Version");
    const char *key = apr_table_get(r->headers_in, "Sec-WebSocket-Key");
    const char *origin = apr_table_get(r->headers_in, "Origin");

    /* RFC 6455 4.1: the handshake is an HTTP/1.1 GET */
    if (r->method_number != M_GET || r->header_only) {
        r->allowed = AP_METHOD_BIT << M_GET;
        return HTTP_METHOD_NOT_ALLOWED;
    }
    if (r->proto_num < HTTP_VERSION(1, 1)) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "WS00030: handshake refused: %s",
                      r->protocol);
        return HTTP_BAD_REQUEST;
    }
    /* RFC 6455 4.2.1 (3): Upgrade contains "websocket"; otherwise this is a plain HTTP
     * request to a WebSocket endpoint: say what it takes (RFC 7231 6.5.15). */
    if (!upgrade || !ap_find_token(r->pool, upgrade, "websocket")) {
        apr_table_setn(r->err_headers_out, "Upgrade", "websocket");
        apr_table_setn(r->err_headers_out, "Connection", "Upgrade");
        return HTTP_UPGRADE_REQUIRED;
    }
    /* RFC 6455 4.2.1 (4): Connection contains the "Upgrade" token */
    if (!connection || !ap_find_token(r->pool, connection, "upgrade")) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "WS00031: handshake refused: "
                      "Connection has no upgrade token");
        return HTTP_BAD_REQUEST;
    }
    /* RFC 6455 4.2.1 (6) and 4.4: version 13, else 426 naming the versions we speak */
    if (!version || strcmp(version, "13") != 0) {
        apr_table_setn(r->err_headers_out, "Sec-WebSocket-Version", "13");
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "WS00032: handshake refused: "
                      "Sec-WebSocket-Version %s", version ? version : "missing");
        return HTTP_UPGRADE_REQUIRED;
    }
    /* RFC 6455 4.2.1 (5): base64 of 16 bytes */
    if (!key || !ws_key_valid(key)) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "WS00033: handshake refused: "
                      "bad Sec-WebSocket-Key");
        return HTTP_BAD_REQUEST;
    }
    /* RFC 6455 10.2: the origin is the browser's word on who is asking */
    if (!ws_origin_allowed(r, conf, origin)) {
        ap_log_rerror(APLOG_MARK, APLOG_WARNING, 0, r, "WS00034: handshake refused: "
                      "origin '%s' is not allowed for host '%s'", origin,
                      apr_table_get(r->headers_in, "Host"));
        return HTTP_FORBIDDEN;
    }
    return OK;
}

/* After the 101 the connection is a bidirectional byte stream: set it up as
 * ap_proxy_tunnel_create does. */
static void ws_prepare_connection(request_rec *r)
{
    conn_rec *c = r->connection;
    ap_remove_output_filter_byhandle(c->output_filters, "SSL/TLS Coalescing Filter");
    ap_remove_input_filter_byhandle(c->input_filters, "reqtimeout");
    r->input_filters = r->proto_input_filters = c->input_filters;
    r->output_filters = r->proto_output_filters = c->output_filters;
    c->keepalive = AP_CONN_CLOSE;
}

static void ws_log_session_end(ws_conn *s)
{
    ap_log_cerror(APLOG_MARK, APLOG_INFO, 0, s->c,
                  "WS00040: session end: plugin=%s duration=%.3fs in=%" APR_UINT64_T_FMT
                  "msg/%" APR_UINT64_T_FMT "B out=%" APR_UINT64_T_FMT "msg/%"
                  APR_UINT64_T_FMT "B close=%u closed_by=%s",
                  s->inst->p.name, (double)(apr_time_now() - s->start) / APR_USEC_PER_SEC,
                  s->msgs_in, s->bytes_in, s->msgs_out, s->bytes_out, s->close_code,
                  s->closed_by_server ? "server"
                  : s->close_received ? "client" : "network");
}

static apr_status_t ws_session_cleanup(void *data)
{
    ws_conn *s = data;
    ws_parser_free(&s->parser);
    if (s->h) {
        ws_handle_detach(s->h);
        ws_handle_release(s->h);
        s->h = NULL;
    }
    return APR_SUCCESS;
}

static int ws_handler(request_rec *r)
{
    ws_dir_conf *conf = ap_get_module_config(r->per_dir_config, &websocket_module);
    conn_rec *c = r->connection;
    ws_conn *s;
    ws_request req;
    char accept[WS_ACCEPT_LEN + 1];
    int status;

    if (!conf->inst || r->main) {
        return DECLINED;
    }
    status = ws_handshake_status(r, conf);
    if (status != OK) {
        return status;
    }

    s = apr_pcalloc(c->pool, sizeof(*s));
    s->c = c;
    s->r = r;
    s->inst = conf->inst;
    s->state = WS_ST_OPENING;
    s->start = apr_time_now();
    s->offered = ws_offered_protocols(r);
    s->bbin = apr_brigade_create(c->pool, c->bucket_alloc);
    s->bbout = apr_brigade_create(c->pool, c->bucket_alloc);
    s->close_code = WS_CLOSE_ABNORMAL;
    ws_parser_init(&s->parser, (uint64_t)conf->max_message, 1);
    s->h = ws_handle_create((apr_size_t)conf->max_queue);
    /* A pre-cleanup: sub-pools and buckets of c->pool are still there when it runs. */
    apr_pool_pre_cleanup_register(c->pool, s, ws_session_cleanup);
    if (!s->h) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }

    memset(&req, 0, sizeof(req));
    req.size = sizeof(req);
    req.uri = r->uri;
    req.query = r->args;
    req.remote_ip = r->useragent_ip;
    req.user = r->user;
    req.origin = apr_table_get(r->headers_in, "Origin");
    req.protocols = s->offered;
    req.secure = ap_ssl_conn_is_ssl(c);
    if (s->inst->p.on_open) {
        status = s->inst->p.on_open(s, &req);
        if (status != 0) {
            if (status < 400 || status > 599) {
                ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "WS00035: plugin %s on_open "
                              "returned %d, not an HTTP error status", s->inst->p.name, status);
                status = HTTP_INTERNAL_SERVER_ERROR;
            }
            apr_brigade_cleanup(s->bbout);
            return status;
        }
    }
    s->opened = 1;

    ws_accept_key(apr_table_get(r->headers_in, "Sec-WebSocket-Key"), accept);
    apr_table_clear(r->headers_out);
    apr_table_setn(r->headers_out, "Upgrade", "websocket");
    apr_table_setn(r->headers_out, "Connection", "Upgrade");
    apr_table_set(r->headers_out, "Sec-WebSocket-Accept", accept);
    if (s->protocol) {
        apr_table_setn(r->headers_out, "Sec-WebSocket-Protocol", s->protocol);
    }
    r->status = HTTP_SWITCHING_PROTOCOLS;
    r->status_line = NULL;
    ws_prepare_connection(r);
    /* To the connection's filters: mod_deflate, mod_headers and chunking never see it. */
    ap_send_interim_response(r, 1);
    s->r = NULL;
    s->state = WS_ST_OPEN;
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, "WS00036: upgraded %s to plugin %s%s%s",
                  r->uri, s->inst->p.name, s->protocol ? ", protocol " : "",
                  s->protocol ? s->protocol : "");

    if (c->aborted) {
        s->state = WS_ST_DONE;
    }
    else {
        ws_run_blocking(s);
    }

    if (s->inst->p.on_close) {
        s->inst->p.on_close(s, (int)s->close_code, s->close_reason ? s->close_reason : "");
    }
    ws_log_session_end(s);
    ws_handle_detach(s->h);
    return OK;
}

/* ---- module ------------------------------------------------------------------------ */

static void ws_register_hooks(apr_pool_t *p)
{
    (void)p;
    ap_hook_pre_config(ws_pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(ws_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_test_config(ws_test_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(ws_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    /* First: a WebSocket location answers before mod_dir or the default handler. */
    ap_hook_handler(ws_handler, NULL, NULL, APR_HOOK_FIRST);
}

module AP_MODULE_DECLARE_DATA websocket_module = {
    STANDARD20_MODULE_STUFF,
    ws_create_dir_conf,   /* per-directory config */
    ws_merge_dir_conf,    /* merge per-directory (nested Locations) */
    NULL,                 /* per-server config */
    NULL,                 /* merge per-server */
    ws_cmds,              /* directives */
    ws_register_hooks,
    AP_MODULE_FLAG_NONE
};
