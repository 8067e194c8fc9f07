/*
 * ws_push.h - channels over plain HTTP (docs/channels.md has the wire protocol):
 *
 *   ws_push_conf.c  the WebSocketChannel* directives of publisher and subscriber
 *                   locations, and the history limits (config time)
 *   ws_push.c       the handler: publishes (POST/PUT), channel info (GET), the end of a
 *                   channel (DELETE); subscriptions by EventSource and long-poll, each
 *                   a session (struct ws_conn of kind WS_KIND_SSE or WS_KIND_POLL) that
 *                   an event loop owns on the event MPM (the handler returns SUSPENDED)
 *                   or this thread runs otherwise; the built-in "plugin" that serves
 *                   channels to WebSocket clients (WS_KIND_CHANNEL)
 *   ws_push_out.c   what those sessions write: each message framed as a JSON text
 *                   frame, an SSE event or part of the long-poll answer, keep-alives,
 *                   the poll timeout, and the end (owner thread; called by ws_session.c)
 *
 * Channel keys: NAME in the location's WebSocketChannelNamespace when it has one, else
 * in the server-wide namespace (the one api->publish and api->subscribe use), so that
 * a plugin and HTTP meet on the same channel (ws_channel.h).
 */
#ifndef WS_PUSH_H
#define WS_PUSH_H

#include "httpd.h"
#include "http_config.h"

#include "ws_history.h"

struct ws_conn;
struct ws_dir_conf;
struct ws_payload;

/* Session kinds (struct ws_conn.kind). */
enum { WS_KIND_PLUGIN = 0, WS_KIND_CHANNEL = 1, WS_KIND_SSE = 2, WS_KIND_POLL = 3 };

/* A location's channel role (ws_dir_conf.push). */
typedef struct ws_push_conf {
    int role;                     /* WS_PUSH_* (0: none) */
    const char *channels;         /* fixed channel(s), comma-separated; NULL: the last
                                   * path segment of the request */
    long first;                   /* no resume point: 0 newest only, -1 all, N last N */
    int first_set;
    apr_interval_time_t poll_timeout;
    int poll_timeout_set;
    long max_subs;                /* subscribers per channel on this server (0: any) */
    int max_subs_set;
} ws_push_conf;

enum { WS_PUSH_OFF = 0, WS_PUSH_PUBLISHER = 1, WS_PUSH_SUBSCRIBER = 2 };

#define WS_PUSH_POLL_TIMEOUT apr_time_from_sec(25)
#define WS_PUSH_MAX_CHANNELS 16    /* channels on one subscription */

/* A subscriber session's channel state (struct ws_conn.push). */
typedef struct ws_push_sess {
    int nkeys;
    const char **keys;
    apr_size_t *klens;
    int multi;                    /* several channels: SSE events name theirs */
    int raw;                      /* this module writes the HTTP head and closes the
                                   * connection after the answer (event loop) */
    request_rec *r;               /* the request (blocking driver only) */
    ws_msgid last;                /* the last id sent (catch-up and live overlap) */
    ws_msgid resume;              /* the client's resume point (seq 0: none) */
    apr_time_t next_keepalive;    /* SSE */
    apr_time_t deadline;          /* long-poll: answer 204 then */
    apr_array_header_t *batch;    /* long-poll: JSON objects of the answer */
    int lost;                     /* long-poll: the answer says messages were lost */
    int ended;
} ws_push_sess;

/* ---- ws_push_conf.c (config time) ---- */
#define WS_PUSH_CMDS                                                                    \
    AP_INIT_TAKE1("WebSocketChannelPublisher", ws_push_cmd_role,                       \
                  (void *)WS_PUSH_PUBLISHER, ACCESS_CONF,                               \
                  "on | off | CHANNEL: this location publishes (POST/PUT), shows (GET) " \
                  "and ends (DELETE) the channel named by the last path segment, or "   \
                  "CHANNEL"),                                                          \
    AP_INIT_TAKE1("WebSocketChannelSubscriber", ws_push_cmd_role,                      \
                  (void *)WS_PUSH_SUBSCRIBER, ACCESS_CONF,                              \
                  "on | off | CHANNEL[,CHANNEL...]: this location serves the channel(s) " \
                  "named by the last path segment, or these, to WebSocket, EventSource " \
                  "and long-poll clients"),                                            \
    AP_INIT_TAKE1("WebSocketChannelFirstMessage", ws_push_cmd_first, NULL, ACCESS_CONF,\
                  "what a subscriber without a resume point gets first: newest (only "  \
                  "messages published after it subscribed; default), all (everything " \
                  "stored), or N (the last N stored)"),                                \
    AP_INIT_TAKE1("WebSocketChannelPollTimeout", ws_push_cmd_poll_timeout, NULL,       \
                  ACCESS_CONF, "seconds a long-poll waits for a message before 204 "    \
                  "(default 25)"),                                                     \
    AP_INIT_TAKE1("WebSocketChannelMaxSubscribers", ws_push_cmd_max_subs, NULL,        \
                  ACCESS_CONF, "subscribers a channel may have on this server; the "   \
                  "next one is refused with 503 (default 0: no limit)"),               \
    AP_INIT_TAKE1("WebSocketChannelHistory", ws_push_cmd_limit, (void *)0, RSRC_CONF,  \
                  "messages each channel keeps for subscribers that resume (default "   \
                  "100; 0: none)"),                                                    \
    AP_INIT_TAKE1("WebSocketChannelHistoryTime", ws_push_cmd_limit, (void *)1,         \
                  RSRC_CONF, "seconds a stored message is kept (default 0: no limit)"), \
    AP_INIT_TAKE1("WebSocketChannelHistoryMemory", ws_push_cmd_limit, (void *)2,       \
                  RSRC_CONF, "bytes of stored messages per child process, every "      \
                  "channel together (default 67108864)"),                              \
    AP_INIT_TAKE1("WebSocketChannelMaxChannels", ws_push_cmd_limit, (void *)3,         \
                  RSRC_CONF, "channels with a history per child process; the least "   \
                  "recently published goes first (default 10000)")

const char *ws_push_cmd_role(cmd_parms *cmd, void *dconf, const char *arg);
const char *ws_push_cmd_first(cmd_parms *cmd, void *dconf, const char *arg);
const char *ws_push_cmd_poll_timeout(cmd_parms *cmd, void *dconf, const char *arg);
const char *ws_push_cmd_limit(cmd_parms *cmd, void *dconf, const char *arg);
const char *ws_push_cmd_max_subs(cmd_parms *cmd, void *dconf, const char *arg);
/* Merge two locations' push settings (NULL: none). */
ws_push_conf *ws_push_conf_merge(apr_pool_t *p, const ws_push_conf *base,
                                 const ws_push_conf *add);
void ws_push_pre_config(void);
void ws_push_post_config(void);

/* The instance subscriber locations serve WebSocket clients with. */
struct ws_instance *ws_push_instance(void);

/* ---- ws_push.c ---- */
/* The handler hook (before ws_handler): publisher requests, and subscriber requests
 * other than a WebSocket upgrade (which ws_handler serves with ws_push_instance()). */
int ws_push_handler(request_rec *r);

/* ---- ws_push_out.c (the session's owner thread) ---- */
/* s (len bytes of UTF-8) as a JSON string, quotes included (any thread). */
char *ws_json_string(apr_pool_t *pool, const char *s, size_t len);
/* Frame one channel message for the session's kind (skipped if already sent). */
void ws_push_message(struct ws_conn *s, const struct ws_payload *p);
/* Tell the subscriber that messages after `from` were lost. */
void ws_push_lost(struct ws_conn *s, const ws_msgid *from);
/* Keep-alives and the long-poll's answer and timeout; the next time to run (0: none). */
apr_time_t ws_push_timers(struct ws_conn *s, apr_time_t now);
/* The end: a close request (code 1000 "channel deleted": the channel ended; 1008: the
 * queue overflowed; 1001: the server stops) ends the stream or answers the poll. */
void ws_push_end(struct ws_conn *s, int code, const char *reason);
/* The long-poll's answer, if messages are batched (then the session is done). */
void ws_push_poll_answer(struct ws_conn *s);

#endif
