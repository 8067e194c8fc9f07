/*
 * mod_websocket.h - the plugin ABI of mod_websocket (version 1).
 *
 * A plugin is a shared object that exports one function (default name
 * "websocket_plugin_init", or the INIT_SYMBOL given to WebSocketHandler):
 *
 *     const ws_plugin *websocket_plugin_init(const ws_api *api);
 *
 * mod_websocket calls it once per load (the configuration is read twice at start and
 * again at each restart) and passes its function table `api`; keep the pointer, it
 * stays valid while the plugin is loaded.  The plugin returns a pointer to a static
 * ws_plugin describing itself; the host checks its magic, ABI version and size and
 * refuses the configuration (apache2 -t fails) on a mismatch.
 *
 * Compatibility rules: both structs only ever grow at the end.  The host reads only the
 * members that fit in the plugin's `size`, and a plugin must only call api members that
 * fit in `api->size` (use WS_API_HAS()).  Add new things just above the "end of ABI v1"
 * markers, never in between.
 *
 * Threads: every callback runs on the connection's I/O thread, one callback at a time per
 * connection.  The ws_conn functions are valid only inside callbacks for that connection.
 * From any other thread, at any time, use a ws_handle (reference counted; still safe after
 * the connection closed: calls then return WS_ECLOSED).  No thread ever touches a
 * connection's socket or TLS state except its I/O owner; other threads enqueue and wake it.
 *
 * Memory: every pointer the host passes to a callback is valid until the callback returns;
 * copy what you keep.  Data passed to send functions is copied before they return.
 */
#ifndef MOD_WEBSOCKET_H
#define MOD_WEBSOCKET_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WS_PLUGIN_MAGIC 0x57535031u   /* "WSP1" */
#define WS_ABI_VERSION 1u

/* Message types for sends and on_message. */
#define WS_TEXT 1
#define WS_BINARY 2

/* Send and publish flags (bit mask). */
#define WS_SEND_NO_COMPRESS 0x1   /* do not compress this message (permessage-deflate) */
#define WS_PUBLISH_LOCAL 0x2      /* publish: deliver only to this child process's subscribers */

/* Return codes of api functions. */
#define WS_SUCCESS 0
#define WS_EINVAL (-1)    /* bad argument: type, NULL data with len > 0, code, text not UTF-8 */
#define WS_ECLOSED (-2)   /* the connection is closing or closed; nothing was queued */
#define WS_EFULL (-3)     /* outbound queue full: nothing was queued, and the connection is
                           * being closed with 1008 (the peer does not read fast enough) */
#define WS_ENOMEM (-4)

/* Plugin log levels (map to httpd's). */
#define WS_LOG_ERR 3
#define WS_LOG_WARNING 4
#define WS_LOG_NOTICE 5
#define WS_LOG_INFO 6
#define WS_LOG_DEBUG 7

typedef struct ws_conn ws_conn;       /* a connection, on its I/O thread */
typedef struct ws_handle ws_handle;   /* a reference to a connection, any thread */

/* One `WebSocketPluginConfig KEY VALUE` line. */
typedef struct ws_setting {
    const char *key;
    const char *value;
} ws_setting;

/* What on_open sees of the upgrade request.  Valid during on_open only. */
typedef struct ws_request {
    size_t size;                  /* sizeof(ws_request) of the host */
    const char *uri;              /* the path of the request, e.g. "/chat/room1" */
    const char *query;            /* the query string without '?', or NULL */
    const char *remote_ip;        /* the client's address (after mod_remoteip) */
    const char *user;             /* the authenticated user (Require/AuthType), or NULL */
    const char *origin;           /* the Origin header, or NULL */
    const char *const *protocols; /* subprotocols the client offered, in order, NULL-terminated */
    int secure;                   /* 1 over TLS (wss://) */
    /* end of ABI v1 */
} ws_request;

typedef struct ws_plugin {
    uint32_t magic;            /* WS_PLUGIN_MAGIC */
    uint32_t abi_version;      /* WS_ABI_VERSION */
    size_t size;               /* sizeof(ws_plugin) */
    const char *name;          /* for logs */

    /* Configuration time, once per load, in the httpd parent process, before any
     * child exists.  Do not start threads here.  settings/nsettings: this location's
     * WebSocketPluginConfig lines (copy what you keep).  Set *plugin_data to the
     * plugin's own state for this location; it is passed to child_init, child_exit
     * and retrievable with api->plugin_data.  Return 0, or non-zero after writing a
     * message into err (errlen bytes): the configuration is then refused.  May be NULL. */
    int (*init)(void **plugin_data, const ws_setting *settings, size_t nsettings,
                char *err, size_t errlen);
    /* The configuration that loaded the plugin is being discarded (restart, stop, or the
     * end of a config test): free plugin_data.  May be NULL. */
    void (*fini)(void *plugin_data);
    /* In each child process after it starts, and before it exits (after every
     * connection's on_close).  Start and stop plugin threads here.  May be NULL. */
    void (*child_init)(void *plugin_data);
    void (*child_exit)(void *plugin_data);

    /* A client asks to upgrade.  Return 0 to accept, or an HTTP status (400-599) to
     * refuse it (e.g. 403).  To choose a subprotocol, call api->set_protocol with one of
     * req->protocols.  The connection is not open yet, but sends are allowed: they go out
     * right after the 101.  May be NULL (accept, no subprotocol). */
    int (*on_open)(ws_conn *c, const ws_request *req);

    /* A whole message arrived (type WS_TEXT, valid UTF-8, or WS_BINARY).  data is valid
     * until the callback returns.  Return 0, or non-zero to fail the connection with
     * 1011 (internal error).  May be NULL. */
    int (*on_message)(ws_conn *c, int type, const void *data, size_t len);

    /* The connection is over: code is the close code received (1005 if the close frame
     * had none), the one the server sent when it closed first, or 1006 when the TCP
     * connection ended without a close.  Called exactly once for every connection whose
     * on_open returned 0.  Release per-connection state here.  May be NULL. */
    void (*on_close)(ws_conn *c, int code, const char *reason);

    /* end of ABI v1: add new members above this line */
} ws_plugin;

typedef struct ws_api {
    uint32_t abi_version;      /* WS_ABI_VERSION of the host */
    size_t size;               /* sizeof(ws_api) of the host */

    /* --- on the I/O thread, inside callbacks for c --- */
    /* Queue a message to c.  type WS_TEXT (must be valid UTF-8) or WS_BINARY.
     * Returns WS_SUCCESS, WS_EINVAL, WS_ECLOSED, WS_EFULL, WS_ENOMEM. */
    int (*send)(ws_conn *c, int type, const void *data, size_t len, int flags);
    /* Start the closing handshake with code (1000-1003, 1007-1014, 3000-4999) and a
     * reason (UTF-8, cut to 123 bytes).  Returns WS_SUCCESS, WS_EINVAL or WS_ECLOSED. */
    int (*close)(ws_conn *c, int code, const char *reason);
    void (*set_user_data)(ws_conn *c, void *data);
    void *(*get_user_data)(ws_conn *c);
    /* This location's plugin_data (set by init). */
    void *(*plugin_data)(ws_conn *c);
    /* Pick the subprotocol (only in on_open, only one the client offered). */
    int (*set_protocol)(ws_conn *c, const char *protocol);
    /* A request header of the upgrade request (only in on_open), or NULL. */
    const char *(*request_header)(ws_conn *c, const char *name);

    /* --- handles: any thread --- */
    /* A new reference to c (on the I/O thread).  Release it with handle_release. */
    ws_handle *(*handle_get)(ws_conn *c);
    void (*handle_retain)(ws_handle *h);
    void (*handle_release)(ws_handle *h);
    /* Like send/close, from any thread; the connection's I/O thread writes it.
     * Messages sent through one handle from one thread go out in that order. */
    int (*handle_send)(ws_handle *h, int type, const void *data, size_t len, int flags);
    int (*handle_close)(ws_handle *h, int code, const char *reason);

    /* --- channels (publish/subscribe) --- */
    /* Subscribe c to channel (on the I/O thread; a name of 1-200 bytes).  Subscriptions
     * end with the connection.  Returns WS_SUCCESS, WS_EINVAL or WS_ECLOSED. */
    int (*subscribe)(ws_conn *c, const char *channel);
    int (*unsubscribe)(ws_conn *c, const char *channel);
    /* Publish a message to every subscriber of channel: in every child process of this
     * httpd, and on every server sharing a `WebSocketBackplane redis://...`.  Any thread,
     * any time.  Messages from one publishing thread arrive in publish order.  A
     * subscriber whose outbound queue is full is closed with 1008; the others are not
     * slowed.  flags: WS_PUBLISH_LOCAL keeps it in this child process.  Returns
     * WS_SUCCESS (queued for delivery), WS_EINVAL or WS_ENOMEM. */
    int (*publish)(const char *channel, int type, const void *data, size_t len, int flags);

    /* Log through httpd's error log (any thread; c may be NULL). */
    void (*log)(ws_conn *c, int level, const char *fmt, ...)
#if defined(__GNUC__)
        __attribute__((format(printf, 3, 4)))
#endif
        ;
    /* end of ABI v1: add new members above this line */
} ws_api;

/* 1 if the host's api table has member m (a plugin built against a newer header may run
 * on an older host). */
#define WS_API_HAS(api, m) \
    ((api)->size >= offsetof(ws_api, m) + sizeof(((ws_api *)0)->m))

/* Default entry point name. */
#define WS_PLUGIN_INIT_SYMBOL "websocket_plugin_init"
typedef const ws_plugin *(*ws_plugin_init_fn)(const ws_api *api);

#ifdef __cplusplus
}
#endif
#endif
