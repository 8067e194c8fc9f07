/*
 * ws_push_conf.c - the WebSocketChannel* directives (ws_push.h).  Config time only.
 */
#include <stdlib.h>
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "apr_strings.h"

#include "ws_channel.h"
#include "ws_chanstore.h"
#include "ws_conf.h"
#include "ws_pubsub.h"
#include "ws_push.h"

static ws_chanstore_limits ws_push_limits;

static ws_push_conf *ws_push_conf_of(cmd_parms *cmd, ws_dir_conf *conf)
{
    if (!conf->push) {
        conf->push = apr_pcalloc(cmd->pool, sizeof(*conf->push));
    }
    return conf->push;
}

/* CHANNEL[,CHANNEL...]: each a valid channel name, at most WS_PUSH_MAX_CHANNELS. */
static const char *ws_push_check_list(apr_pool_t *p, const char *list, int many)
{
    char *copy = apr_pstrdup(p, list), *last = NULL, *name;
    int n = 0;
    for (name = apr_strtok(copy, ",", &last); name; name = apr_strtok(NULL, ",", &last)) {
        if (!ws_channel_name_valid(name, strlen(name)) || ++n > WS_PUSH_MAX_CHANNELS) {
            return "a channel name is 1-200 bytes of UTF-8 without control characters "
                   "(at most 16 channels)";
        }
    }
    if (n == 0 || (n > 1 && !many)) {
        return "one channel name";
    }
    return NULL;
}

const char *ws_push_cmd_role(cmd_parms *cmd, void *dconf, const char *arg)
{
    ws_dir_conf *conf = dconf;
    int role = (int)(intptr_t)cmd->info;
    ws_push_conf *pc = ws_push_conf_of(cmd, conf);
    const char *err;
    if (!strcasecmp(arg, "off")) {
        pc->role = WS_PUSH_OFF;
        return NULL;
    }
    if (strcasecmp(arg, "on") != 0) {
        if ((err = ws_push_check_list(cmd->pool, arg, role == WS_PUSH_SUBSCRIBER)) != NULL) {
            return apr_psprintf(cmd->pool, "%s: %s", cmd->cmd->name, err);
        }
        pc->channels = arg;
    }
    if (pc->role && pc->role != role) {
        return "WebSocketChannelPublisher and WebSocketChannelSubscriber: one location "
               "is one or the other";
    }
    pc->role = role;
    if (role == WS_PUSH_SUBSCRIBER) {
        if (conf->inst_set && conf->inst && conf->inst != ws_push_instance()) {
            return "WebSocketChannelSubscriber: this location already has a "
                   "WebSocketHandler";
        }
        conf->inst = ws_push_instance();
        conf->inst_set = 1;
    }
    return NULL;
}

const char *ws_push_cmd_first(cmd_parms *cmd, void *dconf, const char *arg)
{
    ws_push_conf *pc = ws_push_conf_of(cmd, dconf);
    char *end = NULL;
    long n;
    if (!strcasecmp(arg, "newest")) {
        n = 0;
    }
    else if (!strcasecmp(arg, "all") || !strcasecmp(arg, "oldest")) {
        n = -1;
    }
    else if ((n = strtol(arg, &end, 10)) < 1 || *end || n > 100000) {
        return "WebSocketChannelFirstMessage: newest, all, or a number 1-100000";
    }
    pc->first = n;
    pc->first_set = 1;
    return NULL;
}

const char *ws_push_cmd_poll_timeout(cmd_parms *cmd, void *dconf, const char *arg)
{
    ws_push_conf *pc = ws_push_conf_of(cmd, dconf);
    char *end = NULL;
    long n = strtol(arg, &end, 10);
    if (n < 1 || n > 3600 || *end) {
        return "WebSocketChannelPollTimeout: seconds, 1-3600";
    }
    pc->poll_timeout = apr_time_from_sec(n);
    pc->poll_timeout_set = 1;
    return NULL;
}

const char *ws_push_cmd_max_subs(cmd_parms *cmd, void *dconf, const char *arg)
{
    ws_push_conf *pc = ws_push_conf_of(cmd, dconf);
    char *end = NULL;
    long n = strtol(arg, &end, 10);
    if (n < 0 || *end || !*arg) {
        return "WebSocketChannelMaxSubscribers: a number, 0 (no limit) or more";
    }
    pc->max_subs = n;
    pc->max_subs_set = 1;
    return NULL;
}

const char *ws_push_cmd_limit(cmd_parms *cmd, void *dconf, const char *arg)
{
    const char *err = ap_check_cmd_context(cmd, GLOBAL_ONLY);
    char *end = NULL;
    long long n = strtoll(arg, &end, 10);
    (void)dconf;
    if (err) {
        return err;
    }
    if (n < 0 || *end || !*arg || n > (1LL << 40)) {
        return apr_psprintf(cmd->pool, "%s: a number, 0 or more", cmd->cmd->name);
    }
    switch ((int)(intptr_t)cmd->info) {
    case 0: ws_push_limits.max_msgs = (long)n; break;
    case 1: ws_push_limits.max_age = apr_time_from_sec(n); break;
    case 2: ws_push_limits.max_bytes = (apr_size_t)n; break;
    default: ws_push_limits.max_channels = (long)n; break;
    }
    return NULL;
}

ws_push_conf *ws_push_conf_merge(apr_pool_t *p, const ws_push_conf *base,
                                 const ws_push_conf *add)
{
    ws_push_conf *pc;
    if (!base || !add) {
        return (ws_push_conf *)(add ? add : base);
    }
    pc = apr_pmemdup(p, add, sizeof(*pc));
    if (!add->role) {
        pc->role = base->role;
        pc->channels = base->channels;
    }
    if (!add->first_set) {
        pc->first = base->first;
        pc->first_set = base->first_set;
    }
    if (!add->max_subs_set) {
        pc->max_subs = base->max_subs;
        pc->max_subs_set = base->max_subs_set;
    }
    if (!add->poll_timeout_set) {
        pc->poll_timeout = base->poll_timeout;
        pc->poll_timeout_set = base->poll_timeout_set;
    }
    return pc;
}

void ws_push_pre_config(void)
{
    ws_chanstore_set_counts(NULL, 0);
    ws_push_limits.max_msgs = WS_CHANSTORE_DEFAULT_MSGS;
    ws_push_limits.max_age = 0;
    ws_push_limits.max_bytes = WS_CHANSTORE_DEFAULT_BYTES;
    ws_push_limits.max_channels = WS_CHANSTORE_DEFAULT_CHANNELS;
}

void ws_push_post_config(void)
{
    ws_bp *bp = ws_pubsub_backplane();
    ws_chanstore_configure(&ws_push_limits);
    if (bp) {
        ws_bp_set_history(bp, ws_push_limits.max_msgs);
    }
}
