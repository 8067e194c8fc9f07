/*
 * echo - the smallest useful mod_websocket plugin: every message comes back as it was
 * sent, text as text, binary as binary.
 *
 *   <Location /echo>
 *       WebSocketHandler /usr/lib/apache2/modules/mod_websocket_echo.so
 *   </Location>
 */
#include <stddef.h>

#include "mod_websocket.h"

static const ws_api *api;

static int echo_message(ws_conn *c, int type, const void *data, size_t len)
{
    /* WS_EFULL or WS_ECLOSED mean the connection is going away: nothing to do. */
    api->send(c, type, data, len, 0);
    return 0;
}

static const ws_plugin echo_plugin = {
    .magic = WS_PLUGIN_MAGIC,
    .abi_version = WS_ABI_VERSION,
    .size = sizeof(ws_plugin),
    .name = "echo",
    .on_message = echo_message,
};

const ws_plugin *websocket_plugin_init(const ws_api *host)
{
    api = host;
    return &echo_plugin;
}
