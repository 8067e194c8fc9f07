/*
 * ws_channel.h - channel names, namespaces and the rules a published message obeys
 * (protocol core: no httpd include).
 *
 * A plugin names a channel (1-200 bytes of UTF-8 without control characters).  The host
 * keys its subscriptions by the channel key: the name alone in the server-wide namespace
 * (api->subscribe/publish), or NAMESPACE US NAME (US = 0x1f) in a location's namespace
 * (api->ns_subscribe/ns_publish; WebSocketChannelNamespace, by default the server name
 * and the location path).  Neither part may hold a control character, so keys of two
 * namespaces never collide.  Messages from another process or server (the Redis
 * backplane) are checked with ws_channel_key_valid and ws_channel_message_valid, exactly
 * as a client's frame is: text or binary only, text is UTF-8, within the size limit.
 */
#ifndef WS_CHANNEL_H
#define WS_CHANNEL_H

#include <stddef.h>

#define WS_CHANNEL_NAME_MAX 200
#define WS_CHANNEL_NS_MAX 255
#define WS_CHANNEL_KEY_MAX (WS_CHANNEL_NS_MAX + 1 + WS_CHANNEL_NAME_MAX)
#define WS_CHANNEL_SEP '\x1f'

/* 1 if name (len bytes) is a valid channel name: 1-200 bytes of UTF-8, no C0, DEL or
 * C1 control characters. */
int ws_channel_name_valid(const char *name, size_t len);
/* 1 if ns is a valid namespace: 1-255 bytes, the same characters. */
int ws_channel_ns_valid(const char *ns, size_t len);
/* 1 if key is a valid channel key: a name, or a namespace, US and a name. */
int ws_channel_key_valid(const char *key, size_t len);
/* Write the key of name in namespace ns (NULL: server-wide) into out (at least
 * WS_CHANNEL_KEY_MAX + 1 bytes, NUL-terminated).  Returns its length, or 0 if the name
 * or namespace is invalid. */
size_t ws_channel_key(char *out, const char *ns, const char *name);
/* 1 if a message may be delivered to clients: opcode 1 (valid UTF-8) or 2, at most max
 * bytes. */
int ws_channel_message_valid(int opcode, const unsigned char *data, size_t len, size_t max);

#endif
