/*
 * ws_config.c - mod_websocket's directives and configuration hooks: the per-directory
 * settings (create, merge), every WebSocket* directive, and the pre/post/test config
 * hooks that initialise plugins and the backplane.  Config time only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_core.h"
#include "http_log.h"
#include "apr_lib.h"
#include "apr_strings.h"
#include "apr_uri.h"

#include "ws_backplane.h"
#include "ws_channel.h"
#include "ws_chanstore.h"
#include "ws_conf.h"
#include "ws_h2.h"
#include "ws_hostcheck.h"
#include "ws_plugin.h"
#include "ws_pubsub.h"
#include "ws_push.h"
#include "ws_status.h"

APLOG_USE_MODULE(websocket);

/* WebSocketBackplane: NULL = embedded (default), "off", or a redis:// URL. */
static const char *ws_backplane_conf;

void *ws_create_dir_conf(apr_pool_t *p, char *dir)
{
    ws_dir_conf *conf = apr_pcalloc(p, sizeof(*conf));
    (void)dir;
    conf->max_message = WS_DEFAULT_MAX_MESSAGE;
    conf->max_queue = WS_DEFAULT_MAX_QUEUE;
    conf->ping_interval = WS_DEFAULT_PING_INTERVAL;
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

void *ws_merge_dir_conf(apr_pool_t *p, void *basev, void *addv)
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
    WS_MERGE(compression);
    WS_MERGE(comp_threshold);
    WS_MERGE(comp_window_bits);
    WS_MERGE(comp_mem_level);
    WS_MERGE(comp_level);
    WS_MERGE(comp_takeover);
    WS_MERGE(check_host);
#undef WS_MERGE
    conf->ns = add->ns ? add->ns : base->ns;
    conf->push = ws_push_conf_merge(p, base->push, add->push);
    return conf;
}

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
    const char *err;

    WS_NO_HTACCESS(cmd);
    err = ws_plugin_load(cmd, path, symbol, inst);
    if (err) {
        return err;
    }
    conf->inst = inst;
    conf->inst_set = 1;
    ws_plugin_note_section(conf);
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
    ws_plugin_note_section(conf);
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

/* WebSocketAsyncDelay: the old async driver's worker holding time.  Sessions now live
 * on the module's own event loops; the directive is accepted and ignored so that
 * existing configurations keep starting. */
static const char *ws_cmd_async_delay(cmd_parms *cmd, void *dconf, const char *arg)
{
    apr_interval_time_t t;
    (void)dconf;
    WS_NO_HTACCESS(cmd);
    if (ap_timeout_parameter_parse(arg, &t, "ms") != APR_SUCCESS || t < 0) {
        return "WebSocketAsyncDelay: a duration (e.g. 20ms); obsolete and ignored";
    }
    return NULL;
}

/* WebSocketLoopThreads N: event-loop threads per child (event MPM). */
static int ws_loops = WS_DEFAULT_LOOPS;

static const char *ws_cmd_loops(cmd_parms *cmd, void *dconf, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY | NOT_IN_HTACCESS);
    char *end;
    long v;
    (void)dconf;
    if (err) {
        return err;
    }
    v = strtol(arg, &end, 10);
    if (*end || v < 1 || v > 64) {
        return "WebSocketLoopThreads: a number of threads from 1 to 64";
    }
    ws_loops = (int)v;
    return NULL;
}

int ws_config_loops(void)
{
    return ws_loops;
}

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
    ws_plugin_note_section(conf);
    return NULL;
}

const command_rec ws_cmds[] = {
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
                  "obsolete (the old async driver's worker holding time): ignored"),
    AP_INIT_TAKE1("WebSocketLoopThreads", ws_cmd_loops, NULL, RSRC_CONF,
                  "event-loop threads per child process that own the WebSocket sessions "
                  "on the event MPM (default 2)"),
    WS_H2_CMDS,
    WS_PUSH_CMDS,
    { NULL }
};


int ws_pre_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp)
{
    (void)plog; (void)ptemp;
    ws_plugin_pre_config(pconf);
    ws_backplane_conf = NULL;
    ws_loops = WS_DEFAULT_LOOPS;
    ws_pubsub_set_backplane(NULL);
    ws_push_pre_config();
    return OK;
}

int ws_post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp,
                          server_rec *s)
{
    const char *err = ws_plugin_init_all(pconf);
    (void)plog; (void)ptemp;
    if (err) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "WS00001: %s", err);
        return HTTP_INTERNAL_SERVER_ERROR;
    }
    if (!ws_backplane_conf || strcasecmp(ws_backplane_conf, "off") != 0) {
        ws_bp *bp = ws_bp_create(pconf, ws_backplane_conf, &err);
        if (!bp) {
            ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "WS00004: %s", err);
            return HTTP_INTERNAL_SERVER_ERROR;
        }
        ws_pubsub_set_backplane(bp);
        ws_chanstore_set_counts(ws_bp_counts_mem(bp), WS_BP_COUNTS_BYTES);
    }
    ws_push_post_config();
    ws_status_create(pconf, !ws_pubsub_backplane() ? "off" : ws_backplane_conf ? "redis" : "embedded");
    return OK;
}

/* `apache2 -t` does not run post_config: check plugin init here so that a bad setting
 * fails the test as it would fail the start. */
void ws_test_config(apr_pool_t *pconf, server_rec *s)
{
    const char *err = ws_plugin_init_all(pconf);
    if (err) {
        ap_log_error(APLOG_MARK, APLOG_CRIT, 0, s, "WS00002: %s", err);
        fprintf(stderr, "%s\n", err);
        exit(1);
    }
}
