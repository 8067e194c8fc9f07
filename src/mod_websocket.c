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
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
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
#include "mpm_common.h"
#include "mod_status.h"
#include "apr_atomic.h"
#include "apr_dso.h"
#include "apr_lib.h"
#include "apr_strings.h"
#include "apr_portable.h"

#include "mod_websocket.h"
#include "ws_accept.h"
#include "ws_backplane.h"
#include "ws_channel.h"
#include "ws_deflate.h"
#include "ws_h2.h"
#include "ws_hostcheck.h"
#include "ws_proto.h"
#include "ws_status.h"

module AP_MODULE_DECLARE_DATA websocket_module;
APLOG_USE_MODULE(websocket);

#define WS_DEFAULT_MAX_MESSAGE (16 * 1024 * 1024)
#define WS_DEFAULT_MAX_QUEUE (16 * 1024 * 1024)
#define WS_READ_SIZE 65536                       /* per-thread flatten buffer */
#define WS_FLUSH_AT 65536                        /* flush in-callback sends past this */
#define WS_CLOSE_WAIT apr_time_from_sec(5)       /* wait for the peer's close reply */
#define WS_WRITE_CHUNK 65536                     /* async: most bytes handed to the filters at once */
#define WS_OUT_RETRY apr_time_from_msec(100)     /* async: retry pending output this often */
#define WS_TICK apr_time_from_msec(100)          /* housekeeping period */
#define WS_DEFAULT_PING_INTERVAL apr_time_from_sec(30)
#define WS_DEFAULT_ASYNC_DELAY apr_time_from_msec(20)
#define WS_DEFAULT_CLIENT_WINDOW 12   /* bits: a client keeping its context, by default */
#define WS_OUT_BUF 8192                          /* output bucket size for small frames */
#define WS_WARM_FREE (32 * 1024)                 /* allocator nodes a busy session keeps */
#define WS_WARM_NODES 4                          /* ... at most this many (8 KB or more) */
#define WS_COOL_AFTER apr_time_from_sec(1)       /* quiet this long: give them back */
#define WS_TRIM_CHURN (16 * 1024 * 1024)         /* malloc_trim after this much traffic */
#define WS_TLS_CHURN (64 * 1024)                 /* ... counting a TLS handshake as this */

/* ---- configuration ------------------------------------------------------------ */

typedef enum { WS_DRIVER_AUTO = 0, WS_DRIVER_BLOCKING } ws_driver;

/* A plugin loaded by one WebSocketHandler line, with that section's settings. */
typedef struct ws_instance {
    const char *path;
    const char *symbol;
    const char *where;            /* "FILE:LINE" for messages */
    ws_plugin p;                  /* zero-filled copy of what the plugin declared */
    apr_array_header_t *settings; /* ws_setting */
    void *plugin_data;
    server_rec *server;           /* where WebSocketHandler is, for the namespace */
    const char *section;          /* its <Location>/<Directory> path, or NULL */
    const char *ns;               /* channel namespace (ns_subscribe, ns_publish) */
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
    int driver;                       /* WS_DRIVER_* */
    int driver_set;
    apr_interval_time_t ping_interval;
    int ping_interval_set;
    apr_interval_time_t async_delay;
    int async_delay_set;
    int compression;                  /* permessage-deflate (RFC 7692) */
    int compression_set;
    int comp_threshold;               /* smaller messages go out uncompressed */
    int comp_threshold_set;
    int comp_window_bits;             /* largest window, both directions, 8..15 */
    int comp_window_bits_set;
    int comp_mem_level;
    int comp_mem_level_set;
    int comp_level;
    int comp_level_set;
    int comp_takeover;                /* 0: ask clients for client_no_context_takeover;
                                       * -1 (default): as 1 with a window of at most
                                       * WS_DEFAULT_CLIENT_WINDOW bits */
    int comp_takeover_set;
    int check_host;                   /* same origin also needs a Host of this vhost */
    int check_host_set;
    const char *ns;                   /* WebSocketChannelNamespace of this section */
} ws_dir_conf;

/* Sections with a WebSocketHandler or WebSocketPluginConfig, for post_config.  In
 * pconf, recreated at each configuration read. */
static apr_array_header_t *ws_sections;

/* WebSocketBackplane: NULL = embedded (default), "off", or a redis:// URL. */
static const char *ws_backplane_conf;
static ws_bp *ws_backplane;            /* this generation's backplane, or NULL (off) */

static void *ws_create_dir_conf(apr_pool_t *p, char *dir)
{
    ws_dir_conf *conf = apr_pcalloc(p, sizeof(*conf));
    (void)dir;
    conf->max_message = WS_DEFAULT_MAX_MESSAGE;
    conf->max_queue = WS_DEFAULT_MAX_QUEUE;
    conf->ping_interval = WS_DEFAULT_PING_INTERVAL;
    conf->async_delay = WS_DEFAULT_ASYNC_DELAY;
    conf->compression = 1;
    conf->comp_threshold = 64;
    conf->comp_window_bits = 15;
    conf->comp_mem_level = 8;
    conf->comp_level = 1;
    conf->comp_takeover = -1;     /* unset: clients that can be limited keep their
                                   * context with at most WS_DEFAULT_CLIENT_WINDOW bits */
    conf->check_host = 1;
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
#define WS_MERGE(f) do { \
        conf->f = add->f##_set ? add->f : base->f; \
        conf->f##_set = add->f##_set || base->f##_set; \
    } while (0)
    WS_MERGE(driver);
    WS_MERGE(ping_interval);
    WS_MERGE(async_delay);
    WS_MERGE(compression);
    WS_MERGE(comp_threshold);
    WS_MERGE(comp_window_bits);
    WS_MERGE(comp_mem_level);
    WS_MERGE(comp_level);
    WS_MERGE(comp_takeover);
    WS_MERGE(check_host);
#undef WS_MERGE
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

/* Every directive of this module: never in .htaccess, even where AllowOverrideList
 * names it (a WebSocketHandler there would load any shared object into httpd). */
#define WS_NO_HTACCESS(cmd) do { \
        const char *e_ = ap_check_cmd_context(cmd, NOT_IN_HTACCESS); \
        if (e_) { \
            return e_; \
        } \
    } while (0)

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

    WS_NO_HTACCESS(cmd);
    inst->server = cmd->server;
    inst->section = cmd->path;
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
    WS_NO_HTACCESS(cmd);
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
    WS_NO_HTACCESS(cmd);
    conf->max_message_set = 1;
    return ws_parse_size(cmd, arg, 1, &conf->max_message);
}

static const char *ws_cmd_max_queue(cmd_parms *cmd, void *dconf, const char *arg)
{
    ws_dir_conf *conf = dconf;
    WS_NO_HTACCESS(cmd);
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
    WS_NO_HTACCESS(cmd);
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

static const char *ws_cmd_driver(cmd_parms *cmd, void *dconf, const char *arg)
{
    ws_dir_conf *conf = dconf;
    WS_NO_HTACCESS(cmd);
    if (!strcasecmp(arg, "auto")) {
        conf->driver = WS_DRIVER_AUTO;
    }
    else if (!strcasecmp(arg, "blocking")) {
        conf->driver = WS_DRIVER_BLOCKING;
    }
    else {
        return "WebSocketDriver: auto or blocking";
    }
    conf->driver_set = 1;
    return NULL;
}

static const char *ws_cmd_ping_interval(cmd_parms *cmd, void *dconf, const char *arg)
{
    ws_dir_conf *conf = dconf;
    apr_interval_time_t t;
    WS_NO_HTACCESS(cmd);
    if (ap_timeout_parameter_parse(arg, &t, "s") != APR_SUCCESS || t < 0) {
        return apr_psprintf(cmd->pool, "WebSocketPingInterval: '%s' is not a duration", arg);
    }
    conf->ping_interval = t;
    conf->ping_interval_set = 1;
    return NULL;
}

static const char *ws_cmd_async_delay(cmd_parms *cmd, void *dconf, const char *arg)
{
    ws_dir_conf *conf = dconf;
    apr_interval_time_t t;
    WS_NO_HTACCESS(cmd);
    if (ap_timeout_parameter_parse(arg, &t, "ms") != APR_SUCCESS || t < 0
        || t > apr_time_from_sec(10)) {
        return apr_psprintf(cmd->pool, "WebSocketAsyncDelay: '%s' is not a duration "
                            "from 0 to 10s", arg);
    }
    conf->async_delay = t;
    conf->async_delay_set = 1;
    return NULL;
}

/* An integer directive stored at the offset given in cmd->info (set flag right after). */
static const char *ws_cmd_int(cmd_parms *cmd, void *dconf, const char *arg)
{
    int *field = (int *)((char *)dconf + (size_t)(uintptr_t)cmd->info);
    int lo = 0, hi = 1 << 30;
    char *end;
    long v = strtol(arg, &end, 10);
    WS_NO_HTACCESS(cmd);
    if (!strcmp(cmd->cmd->name, "WebSocketCompressionWindowBits")) {
        lo = 8, hi = 15;
    }
    else if (!strcmp(cmd->cmd->name, "WebSocketCompressionMemLevel")) {
        lo = 1, hi = 9;
    }
    else if (!strcmp(cmd->cmd->name, "WebSocketCompressionLevel")) {
        lo = 0, hi = 9;
    }
    if (*end || end == arg || v < lo || v > hi) {
        return apr_psprintf(cmd->pool, "%s: '%s' is not a number from %d to %d",
                            cmd->cmd->name, arg, lo, hi);
    }
    field[0] = (int)v;
    field[1] = 1;       /* the _set flag follows each field */
    return NULL;
}

static const char *ws_cmd_flag(cmd_parms *cmd, void *dconf, int on)
{
    int *field = (int *)((char *)dconf + (size_t)(uintptr_t)cmd->info);
    WS_NO_HTACCESS(cmd);
    field[0] = on;
    field[1] = 1;
    return NULL;
}

static const char *ws_cmd_backplane(cmd_parms *cmd, void *dconf, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY | NOT_IN_HTACCESS);
    (void)dconf;
    if (err) {
        return err;
    }
    if (!strcasecmp(arg, "embedded")) {
        ws_backplane_conf = NULL;
    }
    else if (!strcasecmp(arg, "off") || !strncasecmp(arg, "redis://", 8)
             || !strncasecmp(arg, "rediss://", 9)) {
        ws_backplane_conf = arg;
    }
    else {
        return "WebSocketBackplane: embedded, off or "
               "redis[s]://[[USER]:PASSWORD@]HOST[:PORT][/PREFIX]";
    }
    return NULL;
}

static const char *ws_cmd_namespace(cmd_parms *cmd, void *dconf, const char *arg)
{
    ws_dir_conf *conf = dconf;
    WS_NO_HTACCESS(cmd);
    if (!ws_channel_ns_valid(arg, strlen(arg))) {
        return "WebSocketChannelNamespace: 1-255 bytes of UTF-8 without control characters";
    }
    conf->ns = arg;
    ws_note_section(conf);
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
    AP_INIT_TAKE1("WebSocketBackplane", ws_cmd_backplane, NULL, RSRC_CONF,
                  "how published channel messages reach other processes: embedded "
                  "(default: every child of this httpd), off (this child only), or "
                  "redis://HOST[:PORT][/PREFIX] (every server sharing that Redis)"),
    AP_INIT_FLAG("WebSocketCompression", ws_cmd_flag,
                 (void *)APR_OFFSETOF(ws_dir_conf, compression), RSRC_CONF | ACCESS_CONF,
                 "negotiate permessage-deflate (RFC 7692) when the client offers it "
                 "(default on)"),
    AP_INIT_TAKE1("WebSocketCompressionThreshold", ws_cmd_int,
                  (void *)APR_OFFSETOF(ws_dir_conf, comp_threshold), RSRC_CONF | ACCESS_CONF,
                  "messages smaller than this many bytes are sent uncompressed (default 64)"),
    AP_INIT_TAKE1("WebSocketCompressionWindowBits", ws_cmd_int,
                  (void *)APR_OFFSETOF(ws_dir_conf, comp_window_bits), RSRC_CONF | ACCESS_CONF,
                  "largest LZ77 window, 8-15, in both directions (default 15; the "
                  "inflate window a connection keeps is 2^N bytes)"),
    AP_INIT_TAKE1("WebSocketCompressionMemLevel", ws_cmd_int,
                  (void *)APR_OFFSETOF(ws_dir_conf, comp_mem_level), RSRC_CONF | ACCESS_CONF,
                  "zlib memLevel for compression, 1-9 (default 8)"),
    AP_INIT_TAKE1("WebSocketCompressionLevel", ws_cmd_int,
                  (void *)APR_OFFSETOF(ws_dir_conf, comp_level), RSRC_CONF | ACCESS_CONF,
                  "zlib compression level, 0-9 (default 1: fastest)"),
    AP_INIT_FLAG("WebSocketCompressionContextTakeover", ws_cmd_flag,
                 (void *)APR_OFFSETOF(ws_dir_conf, comp_takeover), RSRC_CONF | ACCESS_CONF,
                 "let clients keep their compression context between messages (on: with "
                 "the full window; off: ask for client_no_context_takeover; default: on "
                 "with at most a 4 KiB window, off for clients that cannot be limited); "
                 "the server never keeps one"),
    AP_INIT_TAKE1("WebSocketDriver", ws_cmd_driver, NULL, RSRC_CONF | ACCESS_CONF,
                  "auto (async on the event MPM, else blocking) or blocking (one thread "
                  "per connection, for debugging)"),
    AP_INIT_TAKE1("WebSocketPingInterval", ws_cmd_ping_interval, NULL, RSRC_CONF | ACCESS_CONF,
                  "ping a client silent this long (default 30s; 0 = never); one silent "
                  "for another interval after the ping is closed with 1001"),
    AP_INIT_TAKE1("WebSocketChannelNamespace", ws_cmd_namespace, NULL, RSRC_CONF | ACCESS_CONF,
                  "NAME: the channel namespace of this section's plugin (default: the "
                  "ServerName and the section's path); sections with the same NAME share "
                  "channels"),
    AP_INIT_FLAG("WebSocketCheckHost", ws_cmd_flag,
                 (void *)APR_OFFSETOF(ws_dir_conf, check_host), RSRC_CONF | ACCESS_CONF,
                 "same-origin requests must also name this virtual host in Host: its "
                 "ServerName, a ServerAlias, the address connected to, or localhost over "
                 "loopback (default on: refuses DNS rebinding)"),
    AP_INIT_TAKE1("WebSocketAsyncDelay", ws_cmd_async_delay, NULL, RSRC_CONF | ACCESS_CONF,
                  "async driver: keep the worker while the connection is busy, parking "
                  "after this long without input (default 20ms; 0 = park at once)"),
    WS_H2_CMDS,
    { NULL }
};

static int ws_pre_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp)
{
    (void)plog; (void)ptemp;
    ws_sections = apr_array_make(pconf, 4, sizeof(ws_dir_conf *));
    ws_backplane_conf = NULL;
    ws_backplane = NULL;
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
            return "WebSocketPluginConfig or WebSocketChannelNamespace is used in a section "
                   "without a WebSocketHandler";
        }
        inst->settings = conf->settings;
        inst->ns = conf->ns ? conf->ns
                 : apr_pstrcat(pconf, inst->server->server_hostname
                               ? inst->server->server_hostname : "",
                               inst->section ? inst->section : "/", NULL);
        if (!ws_channel_ns_valid(inst->ns, strlen(inst->ns))) {
            inst->ns = apr_psprintf(pconf, "%.255s", inst->ns);   /* a long path, cut */
        }
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
    if (!ws_backplane_conf || strcasecmp(ws_backplane_conf, "off") != 0) {
        ws_backplane = ws_bp_create(pconf, ws_backplane_conf, &err);
        if (!ws_backplane) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "WS00004: %s", err);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    ws_status_create(pconf, !ws_backplane ? "off" : ws_backplane_conf ? "redis" : "embedded");
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

static void ws_child_init_plugins(apr_pool_t *pchild, server_rec *s)
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

/* A message body, shared by every queue it sits in (a published message fans out to
 * many subscribers with one copy). */
typedef struct ws_payload {
    apr_uint32_t refs;
    int opcode;
    int flags;                    /* WS_SEND_* */
    size_t len;
    unsigned char data[];
} ws_payload;

typedef struct ws_qmsg {
    struct ws_qmsg *next;
    ws_payload *p;
} ws_qmsg;

/* Bytes malloc'd for queued messages (freed on other threads than their senders')
 * since the housekeeper last trimmed the heap. */
static apr_uint32_t ws_heap_churn;

static void ws_heap_churn_add(size_t len)
{
    apr_atomic_add32(&ws_heap_churn, len > 0x7fffffff ? 0x7fffffff : (apr_uint32_t)len);
}

static ws_payload *ws_payload_create(int opcode, const void *data, size_t len)
{
    ws_payload *p = malloc(sizeof(*p) + len);
    ws_heap_churn_add(len);
    if (p) {
        p->refs = 1;
        p->flags = 0;
        p->opcode = opcode;
        p->len = len;
        if (len) {
            memcpy(p->data, data, len);
        }
    }
    return p;
}

static void ws_payload_release(ws_payload *p)
{
    if (p && apr_atomic_dec32(&p->refs) == 0) {
        free(p);
    }
}


/*
 * A handle is malloc'd and reference counted: plugin threads, MPM callbacks and the
 * per-child registry may hold it after the connection (and its pools) are gone.
 * Its mutex protects every member.  `io_busy` is the I/O ownership token: the thread
 * that holds it is the only one that may touch the connection's filters.  It is a flag
 * and a condition variable, not a mutex, because ownership passes from the handler to
 * the process_connection hook across a return to the MPM.
 */
struct ws_handle {
    apr_uint32_t refs;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    ws_conn *s;                   /* NULL once the connection is over */
    int io_busy;                  /* a thread owns the connection's I/O */
    int parked;                   /* async: the MPM polls it; wake with a callback */
    int cb_pending;               /* a wake callback is scheduled */
    int wake_fd;                  /* eventfd of the owning thread while busy, or -1 */
    ws_qmsg *head, *tail;
    apr_size_t queued;
    apr_size_t backlog;           /* bytes the owner still holds unsent (its bbout) */
    apr_size_t max_queue;
    int overflow;                 /* a send did not fit: fail with 1008 */
    int close_code;               /* a close was asked for (handle_close, shutdown) */
    int close_pending;            /* ... and the owner has not acted on it yet */
    char close_reason[124];
    apr_time_t next_timer;        /* when the owner wants to run again (pings, close) */
    int timer_due;                /* the housekeeper found next_timer passed */
    struct ws_handle *reg_prev, *reg_next;
};

/* Per-child registry of live sessions: for pings, close deadlines and graceful stop. */
static pthread_mutex_t ws_reg_mu = PTHREAD_MUTEX_INITIALIZER;
static ws_handle *ws_reg_head;
static apr_uint32_t ws_busy_threads;
static int ws_mpm_can_waitio;
static int ws_busy_limit = 1;
static volatile int ws_child_stopping_flag;



/* One eventfd per thread that runs sessions: how senders wake a busy owner without a
 * file descriptor per connection (10,000 connections must fit in 20,000 fds). */
static pthread_key_t ws_thread_fd_key;
static pthread_once_t ws_thread_fd_once = PTHREAD_ONCE_INIT;

static void ws_thread_fd_free(void *p)
{
    close((int)(intptr_t)p - 1);
}

static void ws_thread_fd_init(void)
{
    pthread_key_create(&ws_thread_fd_key, ws_thread_fd_free);
}

static int ws_thread_fd(void)
{
    void *p;
    pthread_once(&ws_thread_fd_once, ws_thread_fd_init);
    p = pthread_getspecific(ws_thread_fd_key);
    if (!p) {
        int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (fd < 0) {
            return -1;
        }
        pthread_setspecific(ws_thread_fd_key, (void *)(intptr_t)(fd + 1));
        return fd;
    }
    return (int)(intptr_t)p - 1;
}

static void ws_thread_fd_drain(int fd)
{
    uint64_t v;
    if (fd >= 0) {
        while (read(fd, &v, sizeof(v)) > 0) {
        }
    }
}

static void ws_async_wake_cb(void *baton);
static void ws_async_wake_direct(ws_handle *h);

/* Hand a wake-up claimed with ws_handle_enqueue_ex (cb_pending set, a reference held)
 * to the MPM after all. */
static void ws_async_wake_schedule(ws_handle *h)
{
    if (ap_mpm_register_timed_callback(0, ws_async_wake_cb, h) != APR_SUCCESS) {
        ws_async_wake_cb(h);
    }
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
        ws_payload_release(m->p);
        free(m);
        m = next;
    }
}

static void ws_handle_release(ws_handle *h)
{
    if (h && apr_atomic_dec32(&h->refs) == 0) {
        ws_qmsg_free_list(h->head);
        pthread_cond_destroy(&h->cv);
        pthread_mutex_destroy(&h->mu);
        free(h);
    }
}

/* Wake the connection's owner so it looks at the handle (called with h->mu held):
 * a busy owner through its thread's eventfd, a parked async connection through a
 * zero-delay MPM callback (at most one scheduled at a time). */
static void ws_handle_wake_locked(ws_handle *h)
{
    if (!h->s) {
        return;
    }
    if (h->io_busy) {
        if (h->wake_fd >= 0) {
            uint64_t one = 1;
            ssize_t n;
            do {
                n = write(h->wake_fd, &one, sizeof(one));
            } while (n < 0 && errno == EINTR);
        }
    }
    else if (h->parked && !h->cb_pending) {
        h->cb_pending = 1;
        apr_atomic_inc32(&h->refs);
        if (ap_mpm_register_timed_callback(0, ws_async_wake_cb, h) != APR_SUCCESS) {
            h->cb_pending = 0;
            apr_atomic_dec32(&h->refs);
        }
    }
}

static ws_handle *ws_handle_create(ws_conn *s, apr_size_t max_queue)
{
    ws_handle *h = calloc(1, sizeof(*h));
    if (!h) {
        return NULL;
    }
    h->refs = 1;
    h->s = s;
    h->wake_fd = -1;
    h->max_queue = max_queue;
    if (pthread_mutex_init(&h->mu, NULL) != 0) {
        free(h);
        return NULL;
    }
    if (pthread_cond_init(&h->cv, NULL) != 0) {
        pthread_mutex_destroy(&h->mu);
        free(h);
        return NULL;
    }
    return h;
}

/* Take I/O ownership of the connection behind h: wait while another thread has it.
 * Returns the session, or NULL if the connection is over. */
static ws_conn *ws_io_acquire(ws_handle *h)
{
    ws_conn *s;
    pthread_mutex_lock(&h->mu);
    while (h->io_busy) {
        pthread_cond_wait(&h->cv, &h->mu);
    }
    s = h->s;
    if (s) {
        h->io_busy = 1;
        h->parked = 0;
        h->wake_fd = ws_thread_fd();
    }
    pthread_mutex_unlock(&h->mu);
    return s;
}

/* Give up I/O ownership.  With park set (async), the MPM is about to poll the
 * connection: refuse (return 0) if work came in meanwhile, so the caller runs again
 * instead of leaving a message stranded. */
static int ws_io_release(ws_handle *h, int park, apr_time_t next_timer)
{
    pthread_mutex_lock(&h->mu);
    if (park && h->s && (h->head || h->overflow || h->close_pending || h->timer_due)) {
        pthread_mutex_unlock(&h->mu);
        return 0;
    }
    h->io_busy = 0;
    h->parked = park && h->s;
    h->wake_fd = -1;
    h->next_timer = next_timer;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    return 1;
}

static void ws_registry_add(ws_handle *h)
{
    ws_handle_retain(h);
    pthread_mutex_lock(&ws_reg_mu);
    h->reg_next = ws_reg_head;
    if (ws_reg_head) {
        ws_reg_head->reg_prev = h;
    }
    ws_reg_head = h;
    pthread_mutex_unlock(&ws_reg_mu);
}

static void ws_registry_remove(ws_handle *h)
{
    pthread_mutex_lock(&ws_reg_mu);
    if (h->reg_prev) {
        h->reg_prev->reg_next = h->reg_next;
    }
    else if (ws_reg_head == h) {
        ws_reg_head = h->reg_next;
    }
    if (h->reg_next) {
        h->reg_next->reg_prev = h->reg_prev;
    }
    h->reg_prev = h->reg_next = NULL;
    pthread_mutex_unlock(&ws_reg_mu);
    ws_handle_release(h);
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

/* Queue a payload (taking a new reference) for the owner of h to send.  With direct
 * set, a parked connection is not woken through an MPM callback: *direct comes back 1
 * and the caller must run ws_async_wake_cb(h) itself (fan-out does one thread's worth
 * of writes instead of a callback per subscriber). */
static int ws_handle_enqueue_ex(ws_handle *h, ws_payload *p, int *direct)
{
    ws_qmsg *m = malloc(sizeof(*m));
    if (!m) {
        return WS_ENOMEM;
    }
    m->next = NULL;
    m->p = p;
    pthread_mutex_lock(&h->mu);
    if (!h->s || h->close_code || h->overflow) {
        pthread_mutex_unlock(&h->mu);
        free(m);
        return WS_ECLOSED;
    }
    /* The bound covers what waits here and what the owner could not write yet: a
     * peer that does not read fills both. */
    if (h->queued + h->backlog + p->len > h->max_queue) {
        /* Documented policy: a peer that does not read what it is sent is closed with
         * 1008; the sender learns it now, nothing already queued is lost. */
        h->overflow = 1;
        ws_status_queue_drop();
        ws_handle_wake_locked(h);
        pthread_mutex_unlock(&h->mu);
        free(m);
        return WS_EFULL;
    }
    apr_atomic_inc32(&p->refs);
    if (h->tail) {
        h->tail->next = m;
    }
    else {
        h->head = m;
    }
    h->tail = m;
    h->queued += p->len;
    if (direct && !h->io_busy && h->parked && !h->cb_pending) {
        h->cb_pending = 1;          /* the caller runs the wake-up */
        apr_atomic_inc32(&h->refs);
        *direct = 1;
    }
    else {
        ws_handle_wake_locked(h);
    }
    pthread_mutex_unlock(&h->mu);
    return WS_SUCCESS;
}

static int ws_handle_enqueue(ws_handle *h, ws_payload *p)
{
    return ws_handle_enqueue_ex(h, p, NULL);
}

static int ws_api_handle_send(ws_handle *h, int type, const void *data, size_t len,
                              int flags)
{
    ws_payload *p;
    int rv;
    if (!h || !ws_valid_send_args(type, data, len)) {
        return WS_EINVAL;
    }
    if (len > h->max_queue) {
        return WS_ETOOBIG;          /* never fits WebSocketMaxQueue: the plugin's error */
    }
    p = ws_payload_create(type == WS_TEXT ? WS_OP_TEXT : WS_OP_BINARY, data, len);
    if (!p) {
        return WS_ENOMEM;
    }
    p->flags = flags & WS_SEND_FLAGS;
    rv = ws_handle_enqueue(h, p);
    ws_payload_release(p);
    return rv;
}

static int ws_handle_request_close(ws_handle *h, int code, const char *reason)
{
    size_t n;
    pthread_mutex_lock(&h->mu);
    if (!h->s || h->close_code) {
        pthread_mutex_unlock(&h->mu);
        return WS_ECLOSED;
    }
    h->close_code = code;
    h->close_pending = 1;
    n = reason ? ws_close_reason_cut(reason, strlen(reason), WS_CLOSE_REASON_MAX) : 0;
    memcpy(h->close_reason, reason ? reason : "", n);
    h->close_reason[n] = '\0';
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
    return ws_handle_request_close(h, code, reason);
}

/* ---- the session: one WebSocket connection, owned by its I/O thread ------------ */

/* One name for it: the type is struct ws_conn, as plugins see it in the ABI
 * (include/mod_websocket.h); "session" in comments and in ws_session_* function names
 * means the same thing, and `s` is the usual variable. */

typedef enum { WS_ST_OPENING, WS_ST_OPEN, WS_ST_CLOSING, WS_ST_DONE } ws_state;

struct ws_conn {
    conn_rec *c;
    request_rec *r;               /* valid during on_open only */
    ws_instance *inst;
    const ws_dir_conf *conf;      /* a copy in c->pool of the request's merged config */
    ws_handle *h;
    apr_bucket_brigade *bbin;
    apr_bucket_brigade *bbout;    /* frames not yet passed to the filters */
    apr_bucket_brigade *bbtmp;
    apr_off_t out_buffered;       /* bytes in bbout */
    ws_parser parser;
    ws_pmd *pmd;                  /* permessage-deflate state, if negotiated */
    ws_state state;
    int async;                    /* driven by the MPM (event), not by a held thread */
    int handoff;                  /* async: the handler returned holding I/O ownership */
    int input_pending;            /* the last read stopped before the filters ran dry */
    ap_filter_t *handoff_filter;
    int detached;
    void *user_data;
    struct ws_sub *subs;          /* this connection's channel subscriptions */
    const char *protocol;
    const char *const *offered;
    int opened;                   /* on_open accepted: on_close is owed */
    int close_sent;
    int close_received;
    int closed_by_server;
    unsigned close_code;          /* for on_close and the log */
    const char *close_reason;
    apr_time_t close_deadline;
    apr_time_t drain_deadline;    /* async: a finished session's output must go by then */
    apr_time_t last_input;
    apr_time_t prev_input;        /* the input before last_input: is traffic steady? */
    apr_allocator_t *alloc;       /* the connection's allocator, while kept warm */
    apr_size_t write_chunk;       /* async: most bytes handed to the filters at once */
    apr_time_t ping_sent;         /* 0 when no ping is outstanding */
    apr_time_t start;
    apr_uint64_t msgs_in, msgs_out, bytes_in, bytes_out;
};

/* The read buffer is per thread, not per connection: the parser keeps what it needs
 * of a partial frame, so an idle connection holds no read buffer. */
static __thread unsigned char ws_rbuf[WS_READ_SIZE];

/* Append bytes to bbout (copied).  Small frames share malloc'd heap buckets of
 * WS_OUT_BUF (one writev for many messages); a large payload gets one of its own.
 * Not apr_brigade_write: its buffers come from the connection's allocator, which
 * with a small MaxMemFree maps and unmaps a node for every message. */
static void ws_out_bytes(ws_conn *s, const void *data, size_t len)
{
    apr_bucket *e;
    char *buf;
    size_t cap;

    if (!APR_BRIGADE_EMPTY(s->bbout)) {
        e = APR_BRIGADE_LAST(s->bbout);
        if (APR_BUCKET_IS_HEAP(e)) {
            apr_bucket_heap *hb = e->data;
            size_t end = (size_t)e->start + e->length;
            if (hb->free_func == free && hb->refcount.refcount == 1
                && end == (size_t)e->length && hb->alloc_len - end >= len) {
                memcpy(hb->base + end, data, len);
                e->length += len;
                return;
            }
        }
    }
    cap = len > WS_OUT_BUF / 2 ? len : WS_OUT_BUF;
    buf = malloc(cap);
    if (!buf) {
        s->c->aborted = 1;      /* out of memory: drop the connection */
        return;
    }
    memcpy(buf, data, len);
    e = apr_bucket_heap_create(buf, cap, free, s->c->bucket_alloc);
    e->length = len;
    APR_BRIGADE_INSERT_TAIL(s->bbout, e);
}

/* Append one frame to bbout (the data is copied). */
static void ws_out_frame_rsv(ws_conn *s, unsigned rsv, unsigned opcode, const void *data,
                             size_t len)
{
    uint8_t hdr[WS_FRAME_HEADER_MAX];
    size_t hlen = ws_frame_header(hdr, 1, rsv, opcode, len, NULL);
    ws_out_bytes(s, hdr, hlen);
    if (len) {
        ws_out_bytes(s, data, len);
    }
    s->out_buffered += (apr_off_t)(hlen + len);
    s->bytes_out += hlen + len;
}

static void ws_out_frame(ws_conn *s, unsigned opcode, const void *data, size_t len)
{
    ws_out_frame_rsv(s, 0, opcode, data, len);
}

/* A data message, compressed when permessage-deflate was agreed, the message is worth
 * it and the sender did not say otherwise (RFC 7692 6: RSV1 on the first frame). */
static void ws_out_message(ws_conn *s, unsigned opcode, const void *data, size_t len,
                           int flags)
{
    const uint8_t *z;
    size_t zlen;
    if (s->pmd && !(flags & WS_SEND_NO_COMPRESS)
        && len >= (size_t)s->conf->comp_threshold
        && ws_pmd_compress(s->pmd, data, len, &z, &zlen) == WS_OK) {
        ws_out_frame_rsv(s, WS_RSV1, opcode, z, zlen);
        return;
    }
    ws_out_frame(s, opcode, data, len);
}

/* Blocking write of everything in bbout (blocking driver, and the last close frame). */
static apr_status_t ws_flush(ws_conn *s)
{
    apr_status_t rv;
    if (APR_BRIGADE_EMPTY(s->bbout) && !s->c->data_in_output_filters) {
        return APR_SUCCESS;
    }
    APR_BRIGADE_INSERT_TAIL(s->bbout, apr_bucket_flush_create(s->c->bucket_alloc));
    rv = ap_pass_brigade(s->c->output_filters, s->bbout);
    apr_brigade_cleanup(s->bbout);
    s->out_buffered = 0;
    pthread_mutex_lock(&s->h->mu);
    s->h->backlog = 0;
    pthread_mutex_unlock(&s->h->mu);
    if (rv != APR_SUCCESS || s->c->aborted) {
        s->c->aborted = 1;
        return rv != APR_SUCCESS ? rv : APR_ECONNABORTED;
    }
    return APR_SUCCESS;
}

/* Stay at or under FlushMaxThreshold, past which the core writes blocking; through
 * another filter (mod_ssl adds record overhead) keep half of it in reserve.  The
 * connection's filters are settled once the handshake is done. */
static apr_size_t ws_write_chunk(conn_rec *c)
{
    core_server_config *cconf = ap_get_core_module_config(c->base_server->module_config);
    apr_size_t chunk = cconf->flush_max_threshold;
    if (c->output_filters->frec != ap_core_output_filter_handle) {
        chunk /= 2;
    }
    return chunk > WS_WRITE_CHUNK ? WS_WRITE_CHUNK : chunk < 1024 ? 1024 : chunk;
}

/* Non-blocking write for the async driver: hand bbout to the filters in bounded
 * chunks (the core output filter blocks past FlushMaxThreshold) while the socket
 * takes them, then push the core's remainder without a FLUSH bucket (which would
 * block).  Returns 1 if output is still pending (park for write), 0 if all went. */
static int ws_write_nonblocking(ws_conn *s)
{
    conn_rec *c = s->c;
    ap_filter_t *core = c->output_filters;
    apr_status_t rv = APR_SUCCESS;
    apr_size_t chunk = s->write_chunk ? s->write_chunk : ws_write_chunk(c);

    while (core->next) {
        core = core->next;
    }
    while (!APR_BRIGADE_EMPTY(s->bbout) && !c->aborted) {
        apr_bucket *after;
        if (c->data_in_output_filters) {
            rv = core->frec->filter_func.out_func(core, NULL);
            if (rv != APR_SUCCESS || c->data_in_output_filters) {
                break;
            }
        }
        apr_brigade_partition(s->bbout, (apr_off_t)chunk, &after);
        while (APR_BRIGADE_FIRST(s->bbout) != after) {
            apr_bucket *b = APR_BRIGADE_FIRST(s->bbout);
            APR_BUCKET_REMOVE(b);
            APR_BRIGADE_INSERT_TAIL(s->bbtmp, b);
        }
        rv = ap_pass_brigade(c->output_filters, s->bbtmp);
        apr_brigade_cleanup(s->bbtmp);
        if (rv != APR_SUCCESS) {
            break;
        }
    }
    if (rv == APR_SUCCESS && c->data_in_output_filters && !c->aborted) {
        rv = core->frec->filter_func.out_func(core, NULL);
    }
    if (rv != APR_SUCCESS || c->aborted) {
        c->aborted = 1;
        apr_brigade_cleanup(s->bbout);
        s->out_buffered = 0;
        s->state = WS_ST_DONE;
        return 0;
    }
    apr_brigade_length(s->bbout, 0, &s->out_buffered);
    pthread_mutex_lock(&s->h->mu);
    s->h->backlog = (apr_size_t)s->out_buffered;
    pthread_mutex_unlock(&s->h->mu);
    return !APR_BRIGADE_EMPTY(s->bbout) || c->data_in_output_filters;
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
        s->close_reason = apr_pstrmemdup(s->c->pool, reason ? reason : "",
                                         n > 2 ? n - 2 : 0);   /* as sent */
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

/* ---- the api table -------------------------------------------------------------- */

static int ws_api_send(ws_conn *s, int type, const void *data, size_t len, int flags)
{
    if (!s || !ws_valid_send_args(type, data, len)) {
        return WS_EINVAL;
    }
    if (s->state != WS_ST_OPENING && s->state != WS_ST_OPEN) {
        return WS_ECLOSED;
    }
    if (len > s->h->max_queue) {
        return WS_ETOOBIG;          /* never fits WebSocketMaxQueue: the plugin's error */
    }
    if ((apr_size_t)s->out_buffered + len > s->h->max_queue) {
        ws_status_queue_drop();
        ws_fail(s, WS_CLOSE_POLICY, "send queue overflow");
        return WS_EFULL;
    }
    ws_out_message(s, type == WS_TEXT ? WS_OP_TEXT : WS_OP_BINARY, data, len,
                   flags & WS_SEND_FLAGS);
    s->msgs_out++;
    /* The blocking driver writes as it goes; the async one never blocks here. */
    if (!s->async && s->state == WS_ST_OPEN && s->out_buffered >= WS_FLUSH_AT) {
        if (ws_flush(s) != APR_SUCCESS) {
            s->state = WS_ST_DONE;
        }
    }
    return WS_SUCCESS;
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

/* ---- channels: publish/subscribe ------------------------------------------------- */

/*
 * Per child: channel name -> subscribers, in a hash table under one read-write lock.
 * Subscribing and unsubscribing (I/O threads) write; delivery (the backplane's reader
 * threads) reads, and queues one shared payload to every subscriber's handle.  The
 * backplane carries every publish to every child, this child included, so local and
 * remote subscribers see one order.
 */
#define WS_CHANNEL_BUCKETS 1024

typedef struct ws_sub {
    struct ws_sub *prev, *next;   /* in the channel's subscriber list */
    struct ws_sub *conn_next;     /* in the connection's list */
    struct ws_channel *ch;
    ws_handle *h;                 /* a reference */
} ws_sub;

typedef struct ws_channel {
    struct ws_channel *next;      /* hash chain */
    ws_sub *subs;
    size_t len;
    char name[];
} ws_channel;

static pthread_rwlock_t ws_chan_lock = PTHREAD_RWLOCK_INITIALIZER;
static ws_channel *ws_chan_table[WS_CHANNEL_BUCKETS];

static unsigned ws_chan_hash(const char *name, size_t len)
{
    uint32_t h = 2166136261u;          /* FNV-1a */
    size_t i;
    for (i = 0; i < len; i++) {
        h = (h ^ (unsigned char)name[i]) * 16777619u;
    }
    return h % WS_CHANNEL_BUCKETS;
}

static ws_channel **ws_chan_slot(const char *name, size_t len)
{
    ws_channel **pp = &ws_chan_table[ws_chan_hash(name, len)];
    while (*pp && !((*pp)->len == len && memcmp((*pp)->name, name, len) == 0)) {
        pp = &(*pp)->next;
    }
    return pp;
}

static int ws_subscribe_key(ws_conn *s, const char *channel, size_t len)
{
    ws_channel **slot, *ch;
    ws_sub *sub;
    if (s->state != WS_ST_OPENING && s->state != WS_ST_OPEN) {
        return WS_ECLOSED;
    }
    for (sub = s->subs; sub; sub = sub->conn_next) {
        if (sub->ch->len == len && memcmp(sub->ch->name, channel, len) == 0) {
            return WS_SUCCESS;          /* already */
        }
    }
    sub = calloc(1, sizeof(*sub));
    if (!sub) {
        return WS_ENOMEM;
    }
    pthread_rwlock_wrlock(&ws_chan_lock);
    slot = ws_chan_slot(channel, len);
    ch = *slot;
    if (!ch) {
        ch = calloc(1, sizeof(*ch) + len + 1);
        if (!ch) {
            pthread_rwlock_unlock(&ws_chan_lock);
            free(sub);
            return WS_ENOMEM;
        }
        ch->len = len;
        memcpy(ch->name, channel, len);
        *slot = ch;
    }
    sub->ch = ch;
    sub->h = s->h;
    ws_handle_retain(s->h);
    sub->next = ch->subs;
    if (ch->subs) {
        ch->subs->prev = sub;
    }
    ch->subs = sub;
    pthread_rwlock_unlock(&ws_chan_lock);
    sub->conn_next = s->subs;
    s->subs = sub;
    return WS_SUCCESS;
}

/* Unlink sub (with the write lock held); frees the channel when it empties. */
static void ws_sub_unlink_locked(ws_sub *sub)
{
    ws_channel *ch = sub->ch;
    if (sub->prev) {
        sub->prev->next = sub->next;
    }
    else {
        ch->subs = sub->next;
    }
    if (sub->next) {
        sub->next->prev = sub->prev;
    }
    if (!ch->subs) {
        ws_channel **slot = ws_chan_slot(ch->name, ch->len);
        *slot = ch->next;
        free(ch);
    }
}

static int ws_unsubscribe_key(ws_conn *s, const char *channel, size_t len)
{
    ws_sub **pp;
    for (pp = &s->subs; *pp; pp = &(*pp)->conn_next) {
        ws_sub *sub = *pp;
        if (sub->ch->len == len && memcmp(sub->ch->name, channel, len) == 0) {
            *pp = sub->conn_next;
            pthread_rwlock_wrlock(&ws_chan_lock);
            ws_sub_unlink_locked(sub);
            pthread_rwlock_unlock(&ws_chan_lock);
            ws_handle_release(sub->h);
            free(sub);
            return WS_SUCCESS;
        }
    }
    return WS_SUCCESS;
}

static int ws_api_subscribe(ws_conn *s, const char *channel)
{
    char key[WS_CHANNEL_KEY_MAX + 1];
    size_t len = s ? ws_channel_key(key, NULL, channel) : 0;
    return len ? ws_subscribe_key(s, key, len) : WS_EINVAL;
}

static int ws_api_unsubscribe(ws_conn *s, const char *channel)
{
    char key[WS_CHANNEL_KEY_MAX + 1];
    size_t len = s ? ws_channel_key(key, NULL, channel) : 0;
    return len ? ws_unsubscribe_key(s, key, len) : WS_EINVAL;
}

/* The same in the namespace of the connection's location. */
static int ws_api_ns_subscribe(ws_conn *s, const char *channel)
{
    char key[WS_CHANNEL_KEY_MAX + 1];
    size_t len = s ? ws_channel_key(key, s->inst->ns, channel) : 0;
    return len ? ws_subscribe_key(s, key, len) : WS_EINVAL;
}

static int ws_api_ns_unsubscribe(ws_conn *s, const char *channel)
{
    char key[WS_CHANNEL_KEY_MAX + 1];
    size_t len = s ? ws_channel_key(key, s->inst->ns, channel) : 0;
    return len ? ws_unsubscribe_key(s, key, len) : WS_EINVAL;
}

/* The connection is over: drop all its subscriptions. */
static void ws_unsubscribe_all(ws_conn *s)
{
    ws_sub *sub = s->subs;
    if (!sub) {
        return;
    }
    pthread_rwlock_wrlock(&ws_chan_lock);
    for (; sub; sub = sub->conn_next) {
        ws_sub_unlink_locked(sub);
    }
    pthread_rwlock_unlock(&ws_chan_lock);
    while ((sub = s->subs) != NULL) {
        s->subs = sub->conn_next;
        ws_handle_release(sub->h);
        free(sub);
    }
}

/* Deliver a published message to this child's subscribers (backplane threads, or the
 * publisher itself for WS_PUBLISH_LOCAL). */
static void ws_deliver(void *baton, const char *channel, size_t channel_len, int opcode,
                       const unsigned char *data, size_t len)
{
    ws_channel *ch;
    ws_payload *p = NULL;
    ws_handle *local[64], **wake = local;
    size_t nwake = 0, cap = 64, i;
    (void)baton;
    pthread_rwlock_rdlock(&ws_chan_lock);
    ch = *ws_chan_slot(channel, channel_len);
    if (ch && (p = ws_payload_create(opcode, data, len)) != NULL) {
        ws_sub *sub;
        for (sub = ch->subs; sub; sub = sub->next) {
            int direct = 0;
            /* A full queue closes that subscriber with 1008; the others go on. */
            ws_handle_enqueue_ex(sub->h, p, &direct);
            if (direct) {
                if (nwake == cap) {
                    ws_handle **bigger = malloc(sizeof(*bigger) * cap * 2);
                    if (!bigger) {
                        /* Out of memory: this one goes through an MPM callback. */
                        ws_async_wake_schedule(sub->h);
                        continue;
                    }
                    memcpy(bigger, wake, sizeof(*wake) * nwake);
                    if (wake != local) {
                        free(wake);
                    }
                    wake = bigger;
                    cap *= 2;
                }
                wake[nwake++] = sub->h;
            }
        }
    }
    pthread_rwlock_unlock(&ws_chan_lock);
    ws_payload_release(p);
    /* Write to the parked subscribers from this thread, outside the channel lock. */
    for (i = 0; i < nwake; i++) {
        ws_async_wake_direct(wake[i]);
    }
    if (wake != local) {
        free(wake);
    }
}

static int ws_publish_key(const char *key, size_t klen, int type, const void *data,
                          size_t len, int flags)
{
    int opcode = type == WS_TEXT ? WS_OP_TEXT : WS_OP_BINARY;
    if (!klen || !ws_valid_send_args(type, data, len)) {
        return WS_EINVAL;
    }
    if (len > WS_PUBLISH_MAX - klen) {
        return WS_ETOOBIG;          /* the backplane ring takes no more */
    }
    if ((flags & WS_PUBLISH_LOCAL) || !ws_backplane) {
        ws_deliver(NULL, key, klen, opcode, data, len);
        return WS_SUCCESS;
    }
    return ws_bp_publish(ws_backplane, key, klen, opcode, data, len) == 0
           ? WS_SUCCESS : WS_ENOMEM;
}

static int ws_api_publish(const char *channel, int type, const void *data, size_t len,
                          int flags)
{
    char key[WS_CHANNEL_KEY_MAX + 1];
    return ws_publish_key(key, ws_channel_key(key, NULL, channel), type, data, len, flags);
}

/* The namespace of the location whose plugin_data this is: NULL if none, or if two
 * locations with different namespaces share that plugin_data. */
static const char *ws_ns_of(const void *plugin_data)
{
    const char *ns = NULL;
    int i;
    for (i = 0; ws_sections && i < ws_sections->nelts; i++) {
        const ws_instance *inst = APR_ARRAY_IDX(ws_sections, i, ws_dir_conf *)->inst;
        if (inst && inst->plugin_data == plugin_data && inst->ns) {
            if (ns && strcmp(ns, inst->ns) != 0) {
                return NULL;
            }
            ns = inst->ns;
        }
    }
    return ns;
}

static int ws_api_ns_publish(void *plugin_data, const char *channel, int type,
                             const void *data, size_t len, int flags)
{
    char key[WS_CHANNEL_KEY_MAX + 1];
    const char *ns = ws_ns_of(plugin_data);
    return ws_publish_key(key, ns ? ws_channel_key(key, ns, channel) : 0, type, data, len,
                          flags);
}

/* What WebSocketMaxQueue bounds: queued messages plus frames the owner holds unsent
 * (backlog, refreshed by the owner after each write). */
static size_t ws_api_handle_buffered_amount(ws_handle *h)
{
    size_t n = 0;
    if (h) {
        pthread_mutex_lock(&h->mu);
        n = h->s ? (size_t)(h->queued + h->backlog) : 0;
        pthread_mutex_unlock(&h->mu);
    }
    return n;
}

/* On the I/O thread bbout is current (backlog is its size at the last write). */
static size_t ws_api_buffered_amount(ws_conn *s)
{
    size_t n;
    if (!s || s->state == WS_ST_DONE) {
        return 0;
    }
    pthread_mutex_lock(&s->h->mu);
    n = (size_t)s->h->queued;
    pthread_mutex_unlock(&s->h->mu);
    return n + (size_t)s->out_buffered;
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
    ws_api_subscribe,
    ws_api_unsubscribe,
    ws_api_publish,
    ws_api_log,
    ws_api_ns_subscribe,
    ws_api_ns_unsubscribe,
    ws_api_ns_publish,
    ws_api_buffered_amount,
    ws_api_handle_buffered_amount,
};

/* ---- frames in ------------------------------------------------------------------ */

static void ws_on_event(ws_conn *s, const ws_event *ev)
{
    switch (ev->type) {
    case WS_EV_MESSAGE: {
        const uint8_t *data = ev->data;
        size_t len = ev->len;
        s->msgs_in++;
        if (s->state != WS_ST_OPEN) {
            return;     /* RFC 6455 1.4: after our close, data may still arrive; drop it */
        }
        if (!ev->compressed && (apr_off_t)len > s->conf->max_message) {
            ws_fail(s, WS_CLOSE_TOO_BIG, ws_error_text(WS_ERR_TOO_BIG));
            return;
        }
        if (ev->compressed) {
            /* RFC 7692 7.2.2; the size limit applies to what comes out (a small bomb
             * never costs more than WebSocketMaxMessageSize), text is checked as it
             * comes out (RFC 6455 8.1). */
            int rv = ws_pmd_decompress(s->pmd, ev->data, ev->len,
                                       (size_t)s->conf->max_message,
                                       ev->opcode == WS_OP_TEXT, &data, &len);
            if (rv != WS_OK) {
                ws_fail(s, ws_error_close_code(rv), ws_error_text(rv));
                return;
            }
        }
        if (s->inst->p.on_message
            && s->inst->p.on_message(s, ev->opcode == WS_OP_TEXT ? WS_TEXT : WS_BINARY,
                                     data, len) != 0) {
            ws_fail(s, WS_CLOSE_INTERNAL, "plugin error");
        }
        break;
    }
    case WS_EV_PING:
        /* RFC 6455 5.5.2: answer with a pong carrying the same data, unless closing */
        if (!s->close_sent) {
            ws_out_frame(s, WS_OP_PONG, ev->data, ev->len);
        }
        break;
    case WS_EV_PONG:
        break;      /* any input proves the peer is alive: see ws_consume */
    case WS_EV_CLOSE:
        s->close_received = 1;
        if (!s->close_sent) {
            /* RFC 6455 5.5.1: echo the status code we received, and its reason (the
             * parser checked it is UTF-8 and at most 123 bytes), as browsers and
             * other servers expect */
            s->close_code = ev->close_code;
            s->close_reason = apr_pstrmemdup(s->c->pool, (const char *)ev->data, ev->len);
            ws_send_close(s, ev->close_code == WS_CLOSE_NO_STATUS ? 0 : ev->close_code,
                          s->close_reason);
        }
        s->state = WS_ST_DONE;
        break;
    default:
        break;
    }
}

/*
 * Allocator warmth.  The event MPM gives every connection an APR allocator of its own
 * that keeps at most MaxMemFree of freed memory.  With the small MaxMemFree that keeps
 * 10,000 idle connections small, each socket read's 8 KB buffer is mapped and unmapped
 * again: that cost a busy echo three quarters of its throughput.  So a session with
 * steady traffic keeps up to WS_WARM_FREE of nodes, and gives them back once quiet.
 */
static void ws_alloc_warm(ws_conn *s)
{
    /* (An HTTP/2 stream's allocator is mod_http2's, with its own limit.) */
    if (s->alloc || s->c->master || ap_max_mem_free == APR_ALLOCATOR_MAX_FREE_UNLIMITED
        || ap_max_mem_free >= WS_WARM_FREE) {
        return;
    }
    s->alloc = apr_pool_allocator_get(s->c->pool);
    if (s->alloc) {
        apr_allocator_max_free_set(s->alloc, WS_WARM_FREE);
    }
}

static void ws_alloc_cool(ws_conn *s, int drain)
{
    apr_memnode_t *nodes[WS_WARM_NODES];
    int i, n = 0;
    if (!s->alloc) {
        return;
    }
    apr_allocator_max_free_set(s->alloc, ap_max_mem_free);
    if (!drain) {
        s->alloc = NULL;
        return;
    }
    /* APR has no call that releases an allocator's free nodes.  Take out as many as
     * it may hold (the smallest request is served by any free node), then free them
     * past the lowered limit, which hands them back to the system. */
    for (i = 0; i < WS_WARM_NODES; i++) {
        if ((nodes[n] = apr_allocator_alloc(s->alloc, 1)) != NULL) {
            n++;
        }
    }
    for (i = 0; i < n; i++) {
        apr_allocator_free(s->alloc, nodes[i]);
    }
    s->alloc = NULL;
}

/* Steady traffic (this input came soon after the one before) keeps the nodes until
 * the session has been quiet for WS_COOL_AFTER; sporadic input (pings, a chat line
 * now and then) gives them back as soon as the session waits again. */
static apr_time_t ws_alloc_cool_at(const ws_conn *s)
{
    if (!s->alloc) {
        return 0;
    }
    if (!s->prev_input || s->last_input - s->prev_input >= WS_COOL_AFTER) {
        return s->last_input;
    }
    return s->last_input + WS_COOL_AFTER;
}

/* Feed n bytes of buf to the parser and act on every event. */
static void ws_consume(ws_conn *s, uint8_t *p, size_t n)
{
    s->bytes_in += n;
    s->prev_input = s->last_input;
    s->last_input = apr_time_now();
    s->ping_sent = 0;
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
 * were consumed, APR_EAGAIN if none were there, APR_EOF or an error otherwise.
 * *drained is set when the read shows that nothing more is waiting: on a plain
 * socket (the core's input filter alone, which reads until it has what was asked or
 * the socket says EAGAIN) a read that returned less than asked took all there was.
 * Reads are asked in batches of two of the core's 8000-byte buffers, so that a busy
 * session needs few allocator nodes at a time (see ws_alloc_warm). */
#define WS_READ_BATCH (2 * APR_BUCKET_BUFF_SIZE)
static apr_status_t ws_read_available(ws_conn *s, int *drained)
{
    apr_status_t rv;
    apr_size_t len;
    int eos = 0;
    apr_bucket *b;

    *drained = 0;
    rv = ap_get_brigade(s->c->input_filters, s->bbin, AP_MODE_READBYTES,
                        APR_NONBLOCK_READ, WS_READ_BATCH);
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
    len = sizeof(ws_rbuf);
    rv = apr_brigade_flatten(s->bbin, (char *)ws_rbuf, &len);
    apr_brigade_cleanup(s->bbin);
    if (rv != APR_SUCCESS) {
        return rv;
    }
    if (len) {
        *drained = len < WS_READ_BATCH
                   && s->c->input_filters->frec == ap_core_input_filter_handle;
        ws_consume(s, ws_rbuf, len);
        return APR_SUCCESS;
    }
    if (eos && s->c->master && !s->bytes_in) {
        /* An HTTP/2 stream (RFC 8441): mod_http2 ends the upgrade request's body with
         * an EOS on the first read (h2_c2.c), before any of the client's bytes.  Not
         * the end of the stream: that comes as APR_EOF (or an abort) on a later read. */
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

    pthread_mutex_lock(&h->mu);
    list = h->head;
    h->head = h->tail = NULL;
    h->backlog += h->queued;      /* moving to bbout: still unsent, still counted */
    h->queued = 0;
    overflow = h->overflow;
    close_code = h->close_pending ? h->close_code : 0;
    h->close_pending = 0;
    h->timer_due = 0;
    memcpy(reason, h->close_reason, sizeof(reason));
    pthread_mutex_unlock(&h->mu);

    for (m = list; m; m = m->next) {
        if (s->state == WS_ST_OPEN) {
            ws_out_message(s, (unsigned)m->p->opcode, m->p->data, m->p->len, m->p->flags);
            s->msgs_out++;
            if (!s->async && s->out_buffered >= WS_FLUSH_AT && ws_flush(s) != APR_SUCCESS) {
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

/* Pings, the dead-peer timeout and the close-handshake deadline.  Returns when the
 * session next wants to run (0: never). */
static apr_time_t ws_timers(ws_conn *s, apr_time_t now)
{
    apr_interval_time_t interval = s->conf->ping_interval;
    apr_time_t next = 0;

    if (s->state == WS_ST_CLOSING) {
        if (now >= s->close_deadline) {
            s->state = WS_ST_DONE;      /* the peer never answered our close */
            return 0;
        }
        return s->close_deadline;
    }
    if (s->state != WS_ST_OPEN || interval <= 0) {
        return 0;
    }
    if (s->ping_sent && now - s->ping_sent >= interval) {
        if (s->out_buffered > 0 || s->c->data_in_output_filters) {
            /* Our ping may still sit behind data the peer has not taken yet: that is
             * a slow reader, bounded by Timeout on the pending write, not a dead one.
             * Give it another interval once the output has drained. */
            s->ping_sent = now;
        }
        else {
            /* Documented: a peer that sends no frame for a whole interval after our
             * ping reached the socket is closed with 1001 "ping timeout". */
            ws_send_close(s, WS_CLOSE_GOING_AWAY, "ping timeout");
            return s->close_deadline;
        }
    }
    if (!s->ping_sent && now - s->last_input >= interval) {
        ws_out_frame(s, WS_OP_PING, NULL, 0);
        s->ping_sent = now;
    }
    next = s->ping_sent ? s->ping_sent + interval : s->last_input + interval;
    return next;
}

/* One round of work for the owner: input, other threads' requests, timers.  Does not
 * write.  Returns the next timer. */
static apr_time_t ws_round(ws_conn *s, int read_input)
{
    apr_status_t rv = APR_SUCCESS;
    apr_time_t now, next, cool;
    int drained = 0;
    if (read_input) {
        ws_alloc_warm(s);
        /* Drain everything the filters already have: bytes mod_ssl decrypted, or a
         * frame that came in the same segment as the handshake, are invisible to poll. */
        do {
            rv = ws_read_available(s, &drained);
        } while (rv == APR_SUCCESS && !drained && s->state != WS_ST_DONE
                 && s->out_buffered < WS_FLUSH_AT);
        /* Stopped to write first (backpressure): more input may sit in the filters,
         * where poll cannot see it; the caller must read again before waiting. */
        s->input_pending = rv == APR_SUCCESS && !drained;
        if (rv != APR_SUCCESS && !APR_STATUS_IS_EAGAIN(rv)) {
            s->state = WS_ST_DONE;      /* EOF or error: TCP went away */
        }
    }
    ws_drain_handle(s);
    now = apr_time_now();
    next = ws_timers(s, now);
    cool = ws_alloc_cool_at(s);
    if (cool && cool <= now) {
        ws_alloc_cool(s, 1);
    }
    else if (cool && (!next || cool < next)) {
        next = cool;
    }
    return next;
}

/* ---- the blocking driver -------------------------------------------------------- */

static apr_os_sock_t ws_conn_fd(conn_rec *c)
{
    apr_pollfd_t pfd;
    apr_interval_time_t timeout = -1;
    apr_os_sock_t fd = -1;

    memset(&pfd, 0, sizeof(pfd));
    pfd.p = c->pool;
    if (ap_get_pollfd_from_conn(c, &pfd, &timeout) != APR_SUCCESS) {
        return -1;
    }
    if (pfd.desc_type == APR_POLL_SOCKET) {
        apr_os_sock_get(&fd, pfd.desc.s);
    }
    else if (pfd.desc_type == APR_POLL_FILE && pfd.desc.f) {
        apr_os_file_get(&fd, pfd.desc.f);
    }
    /* else APR_NO_DESC: an h2 stream the client already ended (extended CONNECT with
     * END_STREAM): no input will ever come. */
    return fd;
}

/* Wait for input (or, with want_write, only for room to write: no more input is taken
 * while output is stuck), a wake-up or the timer.  Returns 1 if the socket is ready. */
static int ws_wait(apr_os_sock_t fd, int wake_fd, int want_write, apr_time_t until)
{
    struct pollfd fds[2];
    int wait_ms = -1, n;
    if (until) {
        apr_time_t left = until - apr_time_now();
        wait_ms = left <= 0 ? 0 : (int)((left + 999) / 1000);
    }
    fds[0].fd = fd;
    fds[0].events = want_write ? POLLOUT : POLLIN;
    fds[1].fd = wake_fd;
    fds[1].events = POLLIN;
    fds[0].revents = fds[1].revents = 0;
    n = poll(fds, wake_fd >= 0 ? 2 : 1, wait_ms);
    if (fds[1].revents) {
        ws_thread_fd_drain(wake_fd);
    }
    return n > 0 && fds[0].revents;
}

static void ws_run_blocking(ws_conn *s)
{
    apr_os_sock_t fd = ws_conn_fd(s->c);
    int wake_fd = s->h->wake_fd;

    if (fd < 0) {
        s->state = WS_ST_DONE;
    }
    while (s->state != WS_ST_DONE) {
        int mpm_state = 0;
        apr_time_t next = ws_round(s, 1);
        if (ws_flush(s) != APR_SUCCESS) {
            s->state = WS_ST_DONE;
        }
        if (s->state == WS_ST_DONE) {
            break;
        }
        /* prefork has no child_stopping hook: a graceful stop interrupts our poll */
        if (ap_mpm_query(AP_MPMQ_MPM_STATE, &mpm_state) == APR_SUCCESS
            && mpm_state == AP_MPMQ_STOPPING && s->state == WS_ST_OPEN) {
            ws_send_close(s, WS_CLOSE_GOING_AWAY, "server shutting down");
            continue;
        }
        if (!s->input_pending) {
            if (s->pmd) {
                ws_pmd_release(s->pmd);
            }
            ws_parser_release(&s->parser);
            ws_wait(fd, wake_fd, 0, next);
        }
    }
    ws_flush(s);
}

/* ---- the async driver (event MPM) ---------------------------------------------- */

/* Park the connection with the MPM: ASYNC_WAITIO until readable (or writable, while
 * output is pending).  Called by the owner; gives up ownership unless work arrived. */
static int ws_async_park(ws_conn *s, int want_write, apr_time_t next)
{
    conn_rec *c = s->c;
    if (s->pmd) {
        ws_pmd_release(s->pmd);     /* an idle connection keeps no output buffers */
    }
    ws_parser_release(&s->parser);  /* ... and no reassembly buffer between messages */
    c->cs->state = CONN_STATE_ASYNC_WAITIO;
    c->cs->sense = want_write ? CONN_SENSE_WANT_WRITE : CONN_SENSE_WANT_READ;
    if (want_write && (!next || next > apr_time_now() + WS_OUT_RETRY)) {
        next = apr_time_now() + WS_OUT_RETRY;
    }
    return ws_io_release(s->h, 1, next);
}

/* End the session while we own it: the plugin's on_close, the log line, and the
 * handle forgets the connection.  Ownership is released. */
static void ws_session_end(ws_conn *s)
{
    ws_handle *h = s->h;
    if (s->detached) {
        return;
    }
    s->detached = 1;
    if (s->opened && s->inst->p.on_close) {
        s->inst->p.on_close(s, (int)s->close_code, s->close_reason ? s->close_reason : "");
    }
    ap_log_cerror(APLOG_MARK, APLOG_INFO, 0, s->c,
                  "WS00040: session end: plugin=%s driver=%s duration=%.3fs in=%"
                  APR_UINT64_T_FMT "msg/%" APR_UINT64_T_FMT "B out=%" APR_UINT64_T_FMT
                  "msg/%" APR_UINT64_T_FMT "B close=%u closed_by=%s proto=%s",
                  s->inst->p.name, s->async ? "async" : "blocking",
                  (double)(apr_time_now() - s->start) / APR_USEC_PER_SEC,
                  s->msgs_in, s->bytes_in, s->msgs_out, s->bytes_out, s->close_code,
                  s->closed_by_server ? "server"
                  : s->close_received ? "client" : "network",
                  !s->c->master ? "http/1.1"          /* RFC 8441: a stream of an h2 */
                  : ap_ssl_conn_is_ssl(s->c->master) ? "h2" : "h2c");
    if (s->opened) {
        ws_status_session_end(s->async, s->close_code, s->msgs_in, s->bytes_in,
                              s->msgs_out, s->bytes_out);
    }
    ws_unsubscribe_all(s);
    /* Only the limit: the connection's pool is about to be recycled (the event MPM
     * keeps a few, ThreadsPerChild * 3/4 with MaxMemFree set) or destroyed, and the
     * next connection on it reuses what is left. */
    ws_alloc_cool(s, 0);
    ws_parser_free(&s->parser);
    ws_pmd_destroy(s->pmd);
    s->pmd = NULL;
    pthread_mutex_lock(&h->mu);
    h->s = NULL;
    ws_qmsg_free_list(h->head);
    h->head = h->tail = NULL;
    h->queued = 0;
    h->io_busy = 0;
    h->parked = 0;
    h->wake_fd = -1;
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    ws_registry_remove(h);
}

/* A finished session (DONE) ends once its output has gone, or at its drain deadline.
 * Messages queued meanwhile by other threads are dropped. */
static int ws_async_drained(ws_conn *s, int pending)
{
    apr_time_t now = apr_time_now();
    ws_drain_handle(s);
    if (!s->drain_deadline) {
        /* The patience httpd gives any pending write: Timeout. */
        apr_interval_time_t t = s->c->base_server->timeout;
        s->drain_deadline = now + (t > WS_CLOSE_WAIT ? t : WS_CLOSE_WAIT);
    }
    if (ws_child_stopping_flag && s->drain_deadline > now + WS_CLOSE_WAIT) {
        s->drain_deadline = now + WS_CLOSE_WAIT;    /* the child is going away */
    }
    return !pending || s->c->aborted || now >= s->drain_deadline;
}

/*
 * The async loop, run by the owner after the handshake and at every re-entry.  While
 * bytes keep coming (within WebSocketAsyncDelay) the connection keeps its worker, so a
 * busy echo does not pay a trip through the MPM's listener per message; when quiet,
 * or when too many workers are already held that way, it parks.
 * Returns 1 when the session is over (the caller lingers-closes the connection).
 */
static int ws_async_run(ws_conn *s)
{
    apr_os_sock_t fd = ws_conn_fd(s->c);
    int busy_counted = 0, readable = 1, done = 0;

    for (;;) {
        apr_time_t next = s->state != WS_ST_DONE ? ws_round(s, readable) : 0;
        int pending = ws_write_nonblocking(s);
        apr_interval_time_t delay = s->conf->async_delay;

        if (s->state == WS_ST_DONE) {
            if (!ws_async_drained(s, pending)) {
                /* Queued messages and the close frame still go out (a 1008 for an
                 * overflowing subscriber comes after what was accepted): park for
                 * write until drained or the drain deadline (Timeout). */
                if (ws_async_park(s, 1, s->drain_deadline)) {
                    break;
                }
                continue;
            }
            done = 1;
            break;
        }
        if (!pending && s->input_pending) {
            readable = 1;
            continue;
        }
        /* Wait here, on this worker, for input, for room to write the rest (a large
         * message fills the socket buffer; a round trip through the MPM's poll for it
         * costs more than the wait), for a wake-up or a timer. */
        if (delay > 0 && fd >= 0 && !ws_child_stopping_flag) {
            if (!busy_counted) {
                if (apr_atomic_inc32(&ws_busy_threads) >= (apr_uint32_t)ws_busy_limit) {
                    apr_atomic_dec32(&ws_busy_threads);
                    delay = 0;
                }
                else {
                    busy_counted = 1;
                }
            }
            if (delay > 0) {
                apr_time_t until = apr_time_now() + delay;
                int timer = 0;
                if (next && next <= until) {
                    until = next;
                    timer = 1;
                }
                readable = ws_wait(fd, s->h->wake_fd, pending, until);
                if (readable || timer || apr_time_now() < until) {
                    continue;   /* input, a wake-up or a timer: stay on this worker */
                }
            }
        }
        ap_log_cerror(APLOG_MARK, APLOG_TRACE3, 0, s->c, "park: pending=%d state=%d",
                      pending, (int)s->state);
        if (ws_async_park(s, pending, next)) {
            break;
        }
        readable = 1;           /* work arrived while parking: run again */
    }
    if (busy_counted) {
        apr_atomic_dec32(&ws_busy_threads);
    }
    return done;
}

/* A zero-delay MPM callback: a parked connection has queued messages, a close request
 * or a due timer.  Runs on a worker while the MPM polls the socket, so it only writes
 * (without blocking); reading stays with process_connection. */
/* Write what is queued for a parked connection, as its I/O owner for the moment. */
static void ws_async_service(ws_handle *h, ws_conn *s)
{
    for (;;) {
        apr_time_t next = s->state != WS_ST_DONE ? ws_round(s, 0) : 0;
        int pending = ws_write_nonblocking(s);
        if (s->state == WS_ST_DONE) {
            if (ws_async_drained(s, pending)) {
                /* Only process_connection can end a parked connection: wake it by
                 * shutting the socket (for reading: what we wrote still goes; for
                 * both if we give up on a peer that does not read). */
                apr_socket_shutdown(ap_get_conn_socket(s->c), pending
                                    ? APR_SHUTDOWN_READWRITE : APR_SHUTDOWN_READ);
                ws_io_release(h, 0, 0);
                pthread_mutex_lock(&h->mu);
                h->parked = 1;      /* still in the MPM's poll set */
                pthread_mutex_unlock(&h->mu);
                return;
            }
            /* The MPM polls this connection for input: retry the writes from the
             * housekeeper's timer until drained. */
            next = apr_time_now() + WS_OUT_RETRY;
        }
        if (pending && (!next || next > apr_time_now() + WS_OUT_RETRY)) {
            next = apr_time_now() + WS_OUT_RETRY;
        }
        if (ws_io_release(h, 1, next)) {
            return;
        }
    }
}

/* A zero-delay MPM callback: a parked connection has queued messages, a close request
 * or a due timer.  Runs on a worker while the MPM polls the socket, so it only writes
 * (without blocking); reading stays with process_connection. */
static void ws_async_wake_cb(void *baton)
{
    ws_handle *h = baton;
    ws_conn *s;

    pthread_mutex_lock(&h->mu);
    h->cb_pending = 0;
    pthread_mutex_unlock(&h->mu);
    s = ws_io_acquire(h);
    if (s) {
        ws_async_service(h, s);
    }
    ws_handle_release(h);
}

/* The fan-out's wake-up, on the publishing (or backplane) thread: like the callback,
 * but it never waits: if an owner took the connection meanwhile, that owner sends the
 * queued message before it parks again. */
static void ws_async_wake_direct(ws_handle *h)
{
    ws_conn *s = NULL;
    pthread_mutex_lock(&h->mu);
    h->cb_pending = 0;
    if (h->s && !h->io_busy) {
        s = h->s;
        h->io_busy = 1;
        h->parked = 0;
        h->wake_fd = ws_thread_fd();
    }
    pthread_mutex_unlock(&h->mu);
    if (s) {
        ws_async_service(h, s);
    }
    ws_handle_release(h);
}

/* process_connection: re-entry of a parked WebSocket connection. */
static int ws_process_connection(conn_rec *c)
{
    ws_conn *s = ap_get_module_config(c->conn_config, &websocket_module);
    if (!s || !s->async) {
        return DECLINED;
    }
    ap_log_cerror(APLOG_MARK, APLOG_TRACE2, 0, c, "process_connection: handoff=%d state=%d",
                  s->handoff, (int)s->state);
    if (s->handoff) {
        s->handoff = 0;         /* we still own I/O since the handler */
        c->keepalive = AP_CONN_CLOSE;
        if (s->handoff_filter) {
            ap_remove_input_filter(s->handoff_filter);
            s->handoff_filter = NULL;
        }
    }
    else if (ws_io_acquire(s->h) != s) {
        c->cs->state = CONN_STATE_LINGER;
        return OK;
    }
    c->clogging_input_filters = 1;
    if (ws_async_run(s)) {
        ws_session_end(s);
        c->cs->state = CONN_STATE_LINGER;
    }
    return OK;
}

/*
 * The handler cannot park the connection itself: after it returns, httpd finishes the
 * request and the MPM flushes on this thread, so no other thread may write yet.  It
 * keeps I/O ownership and asks for an immediate re-entry of process_connection on the
 * same thread: ap_check_pipeline sees one (fake) speculative byte from this filter, so
 * the MPM goes straight back to process_connection, where ws_process_connection
 * takes over without ever leaving the session unowned.
 */
static apr_status_t ws_handoff_filter(ap_filter_t *f, apr_bucket_brigade *bb,
                                      ap_input_mode_t mode, apr_read_type_e block,
                                      apr_off_t readbytes)
{
    ws_conn *s = f->ctx;
    if (mode == AP_MODE_SPECULATIVE && s->handoff && !s->detached) {
        APR_BRIGADE_INSERT_TAIL(bb, apr_bucket_immortal_create("W", 1, f->c->bucket_alloc));
        return APR_SUCCESS;
    }
    return ap_get_brigade(f->next, bb, mode, block, readbytes);
}

static ap_filter_rec_t *ws_handoff_filter_handle;

static apr_status_t ws_keepalive_after_request(void *data)
{
    conn_rec *c = data;
    c->keepalive = AP_CONN_KEEPALIVE;
    return APR_SUCCESS;
}

/* pre_close_connection: the MPM is closing (timeout, shutdown): stop callbacks from
 * touching the connection before mod_ssl sends its close_notify. */
static int ws_pre_close_connection(conn_rec *c)
{
    ws_conn *s = ap_get_module_config(c->conn_config, &websocket_module);
    if (s && s->async && !s->detached && s->h) {
        if (s->handoff || ws_io_acquire(s->h) == s) {
            s->handoff = 0;
            ws_session_end(s);
        }
    }
    return OK;
}

/* c->pool pre-cleanup: the last chance to tell the plugin and unlink the handle. */
static apr_status_t ws_session_cleanup(void *data)
{
    ws_conn *s = data;
    if (!s->detached && s->h) {
        if (s->handoff || !s->async || ws_io_acquire(s->h) == s) {
            s->handoff = 0;
            ws_session_end(s);
        }
    }
    if (s->h) {
        ws_handle_release(s->h);
        s->h = NULL;
    }
    return APR_SUCCESS;
}

/* ---- per-child housekeeping: timers and graceful stop --------------------------- */

static apr_thread_t *ws_housekeeper;
static volatile int ws_housekeeper_stop;

/* Once a tick, wake the sessions whose timer (ping, dead-peer, close deadline,
 * pending output) is due.  A wake-up is cheap: a flag and, for a parked connection,
 * a zero-delay MPM callback. */
static void *APR_THREAD_FUNC ws_housekeeper_main(apr_thread_t *t, void *data)
{
    unsigned ticks = 0;
    apr_uint64_t churn = 0;
    (void)data;
    while (!ws_housekeeper_stop) {
        /* Messages are allocated on the senders' threads and freed on the writers':
         * glibc keeps the freed middle of each thread's arena.  Give it back now and
         * then (bursts of queued messages otherwise raise a child's RSS for good),
         * but only after real traffic: trimming a large heap holds glibc's arena
         * locks, a stall every thread that allocates would feel. */
        churn += apr_atomic_xchg32(&ws_heap_churn, 0);
        if (++ticks % 100 == 0) {
            if (churn >= WS_TRIM_CHURN) {
                malloc_trim(0);
            }
            churn = 0;
        }
        apr_time_t now = apr_time_now();
        ws_handle *h;
        pthread_mutex_lock(&ws_reg_mu);
        for (h = ws_reg_head; h; h = h->reg_next) {
            pthread_mutex_lock(&h->mu);
            if (h->s && h->next_timer && h->next_timer <= now && !h->timer_due) {
                h->timer_due = 1;
                ws_handle_wake_locked(h);
            }
            pthread_mutex_unlock(&h->mu);
        }
        pthread_mutex_unlock(&ws_reg_mu);
        apr_sleep(WS_TICK);
    }
    apr_thread_exit(t, APR_SUCCESS);
    return NULL;
}

/* Graceful restart or stop: every session gets a close 1001, so that clients reconnect
 * to the new generation and the old child can exit instead of lingering until Timeout. */
static void ws_child_stopping(apr_pool_t *pchild, int graceful)
{
    ws_handle *h;
    (void)pchild;
    ws_child_stopping_flag = 1;
    ap_log_error(APLOG_MARK, APLOG_TRACE1, 0, ap_server_conf, "child stopping (graceful=%d)",
                 graceful);
    pthread_mutex_lock(&ws_reg_mu);
    for (h = ws_reg_head; h; h = h->reg_next) {
        ws_handle_request_close(h, WS_CLOSE_GOING_AWAY, "server shutting down");
    }
    pthread_mutex_unlock(&ws_reg_mu);
}

static apr_status_t ws_housekeeper_join(void *data)
{
    apr_status_t rv;
    (void)data;
    ws_housekeeper_stop = 1;
    if (ws_housekeeper) {
        apr_thread_join(&rv, ws_housekeeper);
        ws_housekeeper = NULL;
    }
    return APR_SUCCESS;
}

static void ws_child_init_drivers(apr_pool_t *pchild)
{
    int v = 0, threads = 0;
    if (ap_mpm_query(AP_MPMQ_IS_ASYNC, &v) == APR_SUCCESS && v
        && ap_mpm_query(AP_MPMQ_CAN_WAITIO, &v) == APR_SUCCESS && v) {
        ws_mpm_can_waitio = 1;
    }
    /* A worker held by a busy connection is not idle for the MPM, and the event MPM
     * stops accepting when no worker is idle: hold at most a quarter of them. */
    if (ap_mpm_query(AP_MPMQ_MAX_THREADS, &threads) == APR_SUCCESS && threads > 4) {
        ws_busy_limit = threads / 4;
    }
    /* Only the async driver needs it: the blocking driver times its own poll. */
    if (ws_mpm_can_waitio) {
        sigset_t all, old;
        ws_housekeeper_stop = 0;
        /* Signals stay with the MPM's threads: prefork and the others run their exit
         * paths from signal handlers, which must not land on our thread. */
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        if (apr_thread_create(&ws_housekeeper, NULL, ws_housekeeper_main, NULL, pchild)
            != APR_SUCCESS) {
            ws_housekeeper = NULL;
            ap_log_error(APLOG_MARK, APLOG_ERR, 0, ap_server_conf, "WS00003: cannot start "
                         "the housekeeping thread: no pings, no close deadlines");
        }
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        apr_pool_pre_cleanup_register(pchild, NULL, ws_housekeeper_join);
    }
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
    /* RFC 6454: an origin is scheme, host and port.  The page of a same-origin
     * ws:// connection was served over http, of a wss:// one over https.  (Behind a
     * TLS-terminating proxy, list the public origin in WebSocketAllowedOrigins.) */
    self = apr_psprintf(r->pool, "%s://%s:%u",
                        ap_ssl_conn_is_ssl(r->connection) ? "https" : "http",
                        ws_lower(r->pool, hostname), (unsigned)port);
    if (strcmp(norm, self) != 0) {
        return 0;
    }
    /* DNS rebinding: attacker.example resolved to this server gives Host and Origin
     * attacker.example, equal but not ours (docs/security.md). */
    if (conf->check_host && !ws_host_known(r, hostname)) {
        ap_log_rerror(APLOG_MARK, APLOG_INFO, 0, r, "WS00037: Host '%s' is not a name "
                      "of this virtual host (WebSocketCheckHost)", hostname);
        return 0;
    }
    return 1;
}

/* 1 if the comma-separated list holds tok, compared without case.  (ap_find_token
 * also accepts a prefix of tok: "Upgrad" would pass for "upgrade".) */
static int ws_has_token(const char *list, const char *tok)
{
    const char *pos = list, *t;
    size_t len, toklen = strlen(tok);
    while (pos && ws_next_token(&pos, &t, &len)) {
        if (len == toklen && strncasecmp(t, tok, len) == 0) {
            return 1;
        }
    }
    return 0;
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
    if (!upgrade || !ws_has_token(upgrade, "websocket")) {
        apr_table_setn(r->err_headers_out, "Upgrade", "websocket");
        apr_table_setn(r->err_headers_out, "Connection", "Upgrade");
        return HTTP_UPGRADE_REQUIRED;
    }
    /* RFC 6455 4.2.1 (4): Connection contains the "Upgrade" token */
    if (!connection || !ws_has_token(connection, "upgrade")) {
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

/* RFC 7692 5: accept the first acceptable permessage-deflate offer of r, if any, and set
 * the response header and the parser's limits for s.  Handler thread, before the 101. */
static void ws_negotiate_deflate(request_rec *r, ws_conn *s, const ws_dir_conf *conf)
{
    /* The server never keeps a deflate stream per connection (server_no_context_takeover);
     * clients may keep theirs unless WebSocketCompressionContextTakeover is off. */
    ws_pmd_policy policy;
    ws_pmd_params agreed;
    char response[WS_PMD_RESPONSE_MAX];
    ws_pmd_policy_default(&policy);
    policy.max_window_bits = conf->comp_window_bits;
    /* zlib cannot deflate with an 8-bit window: never ask a client for less than 9
     * (we inflate with 9 or more anyway). */
    policy.client_max_window_bits = conf->comp_window_bits < 9 ? 9 : conf->comp_window_bits;
    /* By default a client keeps its context only if it can be held to a small
     * window (it offered client_max_window_bits): some clients ignore a
     * client_no_context_takeover they cannot parse (docs/clients.md). */
    if (conf->comp_takeover < 0 && policy.client_max_window_bits > WS_DEFAULT_CLIENT_WINDOW) {
        policy.client_max_window_bits = WS_DEFAULT_CLIENT_WINDOW;
    }
    policy.mem_level = conf->comp_mem_level;
    policy.level = conf->comp_level;
    policy.server_no_context_takeover = 1;
    policy.client_no_context_takeover = conf->comp_takeover == 0;
    if (ws_pmd_negotiate(apr_table_get(r->headers_in, "Sec-WebSocket-Extensions"),
                         &policy, &agreed, response, sizeof(response))
        && (s->pmd = ws_pmd_create(&agreed, &policy)) != NULL) {
        apr_table_set(r->headers_out, "Sec-WebSocket-Extensions", response);
        s->parser.allowed_rsv = WS_RSV1;
        /* Incompressible data grows a little when deflated: the parser bounds wire
         * bytes with some slack, the real limit is checked after inflating (and
         * for uncompressed messages in ws_on_event). */
        s->parser.max_message = (uint64_t)conf->max_message
                                + (uint64_t)conf->max_message / 16 + 1024;
    }
}

/* A new session for the upgrade request r on its connection (in c->pool, registered,
 * its handle held by this thread as I/O owner), or NULL out of memory.  Handler thread. */
static ws_conn *ws_session_create(request_rec *r, ws_dir_conf *conf)
{
    conn_rec *c = r->connection;
    ws_conn *s;

    s = apr_pcalloc(c->pool, sizeof(*s));
    s->c = c;
    s->r = r;
    s->inst = conf->inst;
    /* The merged per-directory config lives in r->pool, which dies at the handoff. */
    s->conf = apr_pmemdup(c->pool, conf, sizeof(*conf));
    s->state = WS_ST_OPENING;
    s->start = s->last_input = apr_time_now();
    s->offered = ws_offered_protocols(r);
    s->bbin = apr_brigade_create(c->pool, c->bucket_alloc);
    s->bbout = apr_brigade_create(c->pool, c->bucket_alloc);
    s->bbtmp = apr_brigade_create(c->pool, c->bucket_alloc);
    s->close_code = WS_CLOSE_ABNORMAL;
    /* Async where the MPM can wait for I/O on our behalf; an HTTP/2 stream's c->cs is
     * its primary connection's, so streams always use the blocking driver. */
    s->async = ws_mpm_can_waitio && !c->master && c->cs
               && conf->driver != WS_DRIVER_BLOCKING;
    ws_parser_init(&s->parser, (uint64_t)conf->max_message, 1);
    s->h = ws_handle_create(s, (apr_size_t)conf->max_queue);
    if (!s->h) {
        ws_parser_free(&s->parser);
        return NULL;
    }
    /* A pre-cleanup: sub-pools and buckets of c->pool are still there when it runs. */
    apr_pool_pre_cleanup_register(c->pool, s, ws_session_cleanup);
    ws_io_acquire(s->h);
    ws_registry_add(s->h);
    /* A TLS handshake leaves tens of KB of freed OpenSSL memory in glibc's arenas:
     * a storm of new wss connections is traffic worth a trim too. */
    if (ap_ssl_conn_is_ssl(c)) {
        ws_heap_churn_add(WS_TLS_CHURN);
    }

    return s;
}

/* The plugin's on_open for the upgrade request r: OK, or the HTTP error status it
 * refuses with (a status outside 4xx/5xx becomes 500).  Handler thread. */
static int ws_call_on_open(request_rec *r, ws_conn *s)
{
    ws_request req;
    int status;

    if (!s->inst->p.on_open) {
        return OK;
    }
    memset(&req, 0, sizeof(req));
    req.size = sizeof(req);
    req.uri = r->uri;
    req.query = r->args;
    req.remote_ip = r->useragent_ip;
    req.user = r->user;
    req.origin = apr_table_get(r->headers_in, "Origin");
    req.protocols = s->offered;
    req.secure = ap_ssl_conn_is_ssl(r->connection);
    status = s->inst->p.on_open(s, &req);
    if (status != 0 && (status < 400 || status > 599)) {
        ap_log_rerror(APLOG_MARK, APLOG_ERR, 0, r, "WS00035: plugin %s on_open "
                      "returned %d, not an HTTP error status", s->inst->p.name, status);
        status = HTTP_INTERNAL_SERVER_ERROR;
    }
    return status == 0 ? OK : status;
}

static int ws_handler(request_rec *r)
{
    ws_dir_conf *conf = ap_get_module_config(r->per_dir_config, &websocket_module);
    conn_rec *c = r->connection;
    ws_conn *s;
    char accept[WS_ACCEPT_LEN + 1];
    int status;

    if (!conf->inst || r->main) {
        return DECLINED;
    }
    status = ws_handshake_status(r, conf);
    if (status != OK) {
        return status;
    }
    /* An HTTP/2 stream holds an h2 worker for the session's life: within a cap. */
    if (c->master && !ws_h2_admit(r)) {
        return HTTP_SERVICE_UNAVAILABLE;
    }

    s = ws_session_create(r, conf);
    if (!s) {
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    status = ws_call_on_open(r, s);
    if (status != OK) {
        apr_brigade_cleanup(s->bbout);
        ws_session_end(s);
        return status;
    }
    s->opened = 1;
    ws_status_session_open(s->async);

    ws_accept_key(apr_table_get(r->headers_in, "Sec-WebSocket-Key"), accept);
    apr_table_clear(r->headers_out);
    if (conf->compression) {
        ws_negotiate_deflate(r, s, conf);
    }
    apr_table_setn(r->headers_out, "Upgrade", "websocket");
    apr_table_setn(r->headers_out, "Connection", "Upgrade");
    apr_table_set(r->headers_out, "Sec-WebSocket-Accept", accept);
    if (s->protocol) {
        apr_table_setn(r->headers_out, "Sec-WebSocket-Protocol", s->protocol);
    }
    r->status = HTTP_SWITCHING_PROTOCOLS;
    r->status_line = NULL;
    ws_prepare_connection(r);
    s->write_chunk = ws_write_chunk(c);
    /* To the connection's filters: mod_deflate, mod_headers and chunking never see it. */
    ap_send_interim_response(r, 1);
    s->r = NULL;
    if (s->state == WS_ST_OPENING) {
        s->state = WS_ST_OPEN;
    }
    ap_log_rerror(APLOG_MARK, APLOG_DEBUG, 0, r, "WS00036: upgraded %s to plugin %s "
                  "(%s driver)%s%s", r->uri, s->inst->p.name, s->async ? "async" : "blocking",
                  s->protocol ? ", protocol " : "", s->protocol ? s->protocol : "");
    if (c->aborted) {
        s->state = WS_ST_DONE;
    }

    if (!s->async) {
        ws_run_blocking(s);
        ws_session_end(s);
        return OK;
    }

    /* Async: hand the connection to the MPM through an immediate re-entry of
     * process_connection on this thread (see ws_handoff_filter). */
    ap_set_module_config(c->conn_config, &websocket_module, s);
    if (s->state != WS_ST_DONE) {
        /* What on_open sent goes out now: at the handoff nothing may be pending. */
        if (ws_flush(s) != APR_SUCCESS) {
            ws_session_end(s);
            return OK;
        }
        s->handoff = 1;
        s->handoff_filter = ap_add_input_filter_handle(ws_handoff_filter_handle, s, NULL, c);
        c->clogging_input_filters = 1;
        c->cs->sense = CONN_SENSE_DEFAULT;
        /* Keep-alive only once the request is gone: ap_discard_request_body would
         * otherwise read our frames as a request body. */
        apr_pool_cleanup_register(r->pool, c, ws_keepalive_after_request,
                                  apr_pool_cleanup_null);
    }
    else {
        ws_flush(s);
        ws_session_end(s);
    }
    return OK;
}

/* ---- module ------------------------------------------------------------------------ */

static void ws_child_init(apr_pool_t *pchild, server_rec *s)
{
    sigset_t all, old;
    /* A fixed mmap threshold: glibc's adaptive one rises to the largest block freed
     * (16 MiB messages, inflate buffers), after which such blocks stay in the threads'
     * arenas: children grew to 1.1 GB under repeated 16 MiB compressed messages. */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    ws_status_child_init(pchild);
    if (ws_backplane) {
        ws_bp_child_init(ws_backplane, pchild, ws_deliver, NULL);
    }
    /* Threads that plugins start here inherit a mask with every signal blocked: the
     * MPMs run their exit paths from signal handlers, which must not land on them. */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    ws_child_init_plugins(pchild, s);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    ws_child_init_drivers(pchild);
}

/* The backplane's part of /server-status (after ws_status's section): ring skips, Redis
 * input.  Any worker thread. */
static int ws_bp_status_hook(request_rec *r, int flags)
{
    if (ws_backplane) {
        ws_bp_status(ws_backplane, r, flags & AP_STATUS_SHORT);
    }
    return OK;
}

static void ws_register_hooks(apr_pool_t *p)
{
    (void)p;
    ap_hook_pre_config(ws_pre_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_post_config(ws_post_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_test_config(ws_test_config, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_init(ws_child_init, NULL, NULL, APR_HOOK_MIDDLE);
    ap_hook_child_stopping(ws_child_stopping, NULL, NULL, APR_HOOK_MIDDLE);
    ws_h2_register_hooks();
    /* First: a WebSocket location answers before mod_dir or the default handler. */
    ap_hook_handler(ws_handler, NULL, NULL, APR_HOOK_FIRST);
    /* Really first: claim our own parked connections before mod_http2's hook peeks at
     * them (it reads speculatively on connections it has not seen). */
    ap_hook_process_connection(ws_process_connection, NULL, NULL, APR_HOOK_REALLY_FIRST);
    ap_hook_pre_close_connection(ws_pre_close_connection, NULL, NULL, APR_HOOK_FIRST);
    ws_status_register_hooks();
    APR_OPTIONAL_HOOK(ap, status_hook, ws_bp_status_hook, NULL, NULL, APR_HOOK_MIDDLE);
    ws_handoff_filter_handle = ap_register_input_filter("WEBSOCKET_HANDOFF",
                                                        ws_handoff_filter, NULL,
                                                        AP_FTYPE_CONNECTION);
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
