/*
 * ws_conf.h - mod_websocket's configuration as the other glue files see it: the merged
 * per-directory settings (ws_dir_conf) and the plugin instance a WebSocketHandler line
 * loaded (ws_instance).  Made at config time, read-only afterwards (any thread).
 */
#ifndef WS_CONF_H
#define WS_CONF_H

#include "httpd.h"
#include "http_config.h"
#include "mod_websocket.h"

extern module AP_MODULE_DECLARE_DATA websocket_module;

#define WS_DEFAULT_MAX_MESSAGE (16 * 1024 * 1024)
#define WS_DEFAULT_MAX_QUEUE (16 * 1024 * 1024)
#define WS_DEFAULT_PING_INTERVAL apr_time_from_sec(30)
#define WS_DEFAULT_CLIENT_WINDOW 12   /* bits: a client keeping its context, by default */
#define WS_DEFAULT_LOOPS 2            /* event-loop threads per child */

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
    struct ws_push_conf *push;        /* channel publisher/subscriber (ws_push.h) */
} ws_dir_conf;

/* The directives (ws_config.c). */
extern const command_rec ws_cmds[];

/* Config time: create and merge the per-directory configuration. */
void *ws_create_dir_conf(apr_pool_t *p, char *dir);
void *ws_merge_dir_conf(apr_pool_t *p, void *basev, void *addv);

/* Hooks (ws_config.c): reset at each read, init plugins and the backplane, -t. */
int ws_pre_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp);
int ws_post_config(apr_pool_t *pconf, apr_pool_t *plog, apr_pool_t *ptemp, server_rec *s);
void ws_test_config(apr_pool_t *pconf, server_rec *s);

/* WebSocketLoopThreads of the main server (event-loop threads per child). */
int ws_config_loops(void);

#endif
