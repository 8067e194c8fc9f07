/*
 * ws_channel.c - see ws_channel.h.
 */
#include <string.h>

#include "ws_channel.h"
#include "ws_proto.h"

/* Valid UTF-8 without control characters (C0, DEL, C1 = U+0080..U+009F: c2 80..c2 9f). */
static int ws_chars_ok(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i;
    if (!ws_utf8_valid(u, len)) {
        return 0;
    }
    for (i = 0; i < len; i++) {
        if (u[i] < 0x20 || u[i] == 0x7f || (u[i] == 0xc2 && i + 1 < len && u[i + 1] < 0xa0)) {
            return 0;
        }
    }
    return 1;
}

int ws_channel_name_valid(const char *name, size_t len)
{
    return name && len >= 1 && len <= WS_CHANNEL_NAME_MAX && ws_chars_ok(name, len);
}

int ws_channel_ns_valid(const char *ns, size_t len)
{
    return ns && len >= 1 && len <= WS_CHANNEL_NS_MAX && ws_chars_ok(ns, len);
}

int ws_channel_key_valid(const char *key, size_t len)
{
    const char *sep = key ? memchr(key, WS_CHANNEL_SEP, len) : NULL;
    if (!sep) {
        return ws_channel_name_valid(key, len);
    }
    return ws_channel_ns_valid(key, (size_t)(sep - key))
           && ws_channel_name_valid(sep + 1, len - (size_t)(sep - key) - 1);
}

size_t ws_channel_key(char *out, const char *ns, const char *name)
{
    size_t nlen = name ? strlen(name) : 0, slen = ns ? strlen(ns) : 0;
    if (!ws_channel_name_valid(name, nlen) || (ns && !ws_channel_ns_valid(ns, slen))) {
        return 0;
    }
    if (ns) {
        memcpy(out, ns, slen);
        out[slen++] = WS_CHANNEL_SEP;
    }
    memcpy(out + slen, name, nlen);
    out[slen + nlen] = '\0';
    return slen + nlen;
}

int ws_channel_message_valid(int opcode, const unsigned char *data, size_t len, size_t max)
{
    if (len > max || (len && !data)) {
        return 0;
    }
    if (opcode == WS_OP_BINARY) {
        return 1;
    }
    return opcode == WS_OP_TEXT && ws_utf8_valid(data, len);
}
