/*
 * oldabi - an echo plugin built against the plugin header of commit f00f916
 * (mod_websocket_abi1_f00f916.h, ABI v1 before buffered_amount, WS_ETOOBIG and the
 * public close codes).  test_ws_655_plugin_abi.py compiles it and checks that the
 * current host still loads it and runs it: old plugins keep working.
 *
 *   any message   echoed with its type (sent with WS_SEND_NO_COMPRESS when it starts
 *                 with "raw:", to use a flag of the old header)
 *   "abi"         answers "abi:HOST_API_SIZE:OUR_API_SIZE:ABI_VERSION"
 *   "close"       closes with 4001 "old plugin"
 */
#include <stdio.h>
#include <string.h>

#include "mod_websocket_abi1_f00f916.h"

static const ws_api *api;

static int oldabi_message(ws_conn *c, int type, const void *data, size_t len)
{
    char ans[96];

    if (type == WS_TEXT && len == 3 && memcmp(data, "abi", 3) == 0) {
        snprintf(ans, sizeof(ans), "abi:%zu:%zu:%u", api->size, sizeof(ws_api),
                 (unsigned)api->abi_version);
        api->send(c, WS_TEXT, ans, strlen(ans), 0);
        return 0;
    }
    if (type == WS_TEXT && len == 5 && memcmp(data, "close", 5) == 0) {
        api->close(c, 4001, "old plugin");
        return 0;
    }
    api->send(c, type, data, len,
              len >= 4 && memcmp(data, "raw:", 4) == 0 ? WS_SEND_NO_COMPRESS : 0);
    return 0;
}

static const ws_plugin oldabi_plugin = {
    .magic = WS_PLUGIN_MAGIC,
    .abi_version = WS_ABI_VERSION,
    .size = sizeof(ws_plugin),
    .name = "oldabi",
    .on_message = oldabi_message,
};

const ws_plugin *websocket_plugin_init(const ws_api *host)
{
    api = host;
    return &oldabi_plugin;
}
