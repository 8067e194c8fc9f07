/*
 * badabi - a test plugin that claims a future ABI version, so the tests can check that
 * mod_websocket refuses it at configuration time (apache2 -t fails, naming the file).
 */
#include "mod_websocket.h"

static const ws_plugin bad_plugin = {
    .magic = WS_PLUGIN_MAGIC,
    .abi_version = WS_ABI_VERSION + 1,
    .size = sizeof(ws_plugin),
    .name = "badabi",
};

const ws_plugin *websocket_plugin_init(const ws_api *host)
{
    (void)host;
    return &bad_plugin;
}
