/*
 * ws_redis_hist.c - see ws_redis_hist.h.
 */
#include <stdio.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "mod_websocket.h"
#include "ws_channel.h"
#include "ws_redis_hist.h"

/* KEYS: the stream; ARGV: the range start ('-' or '(E-S'), the count, the resume
 * epoch ('' for none), its seq, 'rev' for the last COUNT.  Returns {lost, entries}. */
static const char ws_redis_read_script[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then return {0, {}} end "
    "local lost, start = 0, ARGV[1] "
    "if ARGV[3] ~= '' then "
    "  local info, f = redis.call('XINFO', 'STREAM', KEYS[1]), {} "
    "  for i = 1, #info, 2 do f[info[i]] = info[i + 1] end "
    "  local e = string.match(f['last-generated-id'], '^(%d+)-') "
    "  if e ~= ARGV[3] then lost, start = 1, '-' "
    "  elseif (f['entries-added'] or 0) > f['length'] and f['first-entry'] then "
    "    local fs = string.match(f['first-entry'][1], '-(%d+)$') "
    "    if tonumber(fs) > tonumber(ARGV[4]) + 1 then lost = 1 end "
    "  end "
    "end "
    "if ARGV[5] == 'rev' then "
    "  return {lost, redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[2])} end "
    "return {lost, redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', ARGV[2])}";

/* One stream entry [id, ['v', header + payload]] through fn; 0, or -1 if malformed. */
static int ws_redis_entry(const redisReply *e, ws_redis_hist_fn fn, void *baton)
{
    const redisReply *fields, *v;
    ws_msgid id;
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2
        || e->element[0]->type != REDIS_REPLY_STRING
        || !ws_msgid_parse(e->element[0]->str, e->element[0]->len, &id)) {
        return -1;
    }
    fields = e->element[1];
    if (fields->type != REDIS_REPLY_ARRAY || fields->elements != 2
        || (v = fields->element[1])->type != REDIS_REPLY_STRING || v->len < 2
        || !ws_channel_message_valid((unsigned char)v->str[0] & 0x7f,
                                     (const unsigned char *)v->str + 2, v->len - 2,
                                     WS_PUBLISH_MAX)) {
        return -1;
    }
    fn(baton, &id, (unsigned char)v->str[0] & 0x7f, (const unsigned char *)v->str + 2,
       v->len - 2);
    return 0;
}

int ws_redis_history(ws_bp *bp, const char *key, size_t klen, const ws_msgid *after,
                     long count, int *lost, ws_redis_hist_fn fn, void *baton)
{
    redisContext *c = ws_bp_redis_connect(bp);
    redisReply *reply, *list;
    char start[WS_MSGID_LEN + 1] = "-", epoch[24] = "", seq[24] = "0";
    int n = -1;
    size_t i;
    if (!c) {
        return -1;
    }
    if (after) {
        start[0] = '(';
        ws_msgid_format(start + 1, after);
        snprintf(epoch, sizeof(epoch), "%llu", (unsigned long long)after->epoch);
        snprintf(seq, sizeof(seq), "%llu", (unsigned long long)after->seq);
    }
    reply = redisCommand(c, "EVAL %s 1 %s!h:%b %s %ld %s %s %s", ws_redis_read_script,
                         ws_bp_redis_prefix(bp), key, klen, start, count, epoch, seq,
                         after ? "fwd" : "rev");
    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2
        && reply->element[0]->type == REDIS_REPLY_INTEGER
        && (list = reply->element[1])->type == REDIS_REPLY_ARRAY) {
        *lost = reply->element[0]->integer != 0;
        n = 0;
        for (i = 0; i < list->elements; i++) {
            /* XREVRANGE gives the newest first: hand them out oldest first. */
            size_t at = after ? i : list->elements - 1 - i;
            if (ws_redis_entry(list->element[at], fn, baton) == 0) {
                n++;
            }
        }
    }
    if (reply) {
        freeReplyObject(reply);
    }
    redisFree(c);
    return n;
}
