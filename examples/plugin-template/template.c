/*
 * template - a mod_websocket plugin to copy: answers each message with a prefix.
 *
 *   make                          builds template.so (flags from pkg-config mod_websocket)
 *   <Location /template>
 *       WebSocketHandler /path/to/template.so
 *       WebSocketPluginConfig prefix "you said: "
 *   </Location>
 *
 * docs/plugins.md of mod_websocket explains every callback and function.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mod_websocket.h>

static const ws_api *api;            /* the host's functions, given at load */

typedef struct template_conf {       /* one per WebSocketHandler line */
    char prefix[64];
} template_conf;

/* Configuration time, in the parent: read this location's WebSocketPluginConfig. */
static int template_init(void **data, const ws_setting *settings, size_t n, char *err,
                         size_t errlen)
{
    template_conf *conf = calloc(1, sizeof(*conf));
    size_t i;
    if (!conf) {
        snprintf(err, errlen, "out of memory");
        return 1;
    }
    strcpy(conf->prefix, "template: ");
    for (i = 0; i < n; i++) {
        if (strcmp(settings[i].key, "prefix") != 0
            || strlen(settings[i].value) >= sizeof(conf->prefix)) {
            snprintf(err, errlen, "unknown setting or value too long: %s", settings[i].key);
            free(conf);
            return 1;
        }
        strcpy(conf->prefix, settings[i].value);
    }
    *data = conf;
    return 0;
}

static void template_fini(void *data)
{
    free(data);
}

/* A whole message arrived: send back prefix + message, same type. */
static int template_message(ws_conn *c, int type, const void *data, size_t len)
{
    const template_conf *conf = api->plugin_data(c);
    size_t plen = strlen(conf->prefix);
    char *out = malloc(plen + len + 1);
    if (!out) {
        return -1;                   /* the connection is closed with 1011 */
    }
    memcpy(out, conf->prefix, plen);
    memcpy(out + plen, data, len);
    api->send(c, type, out, plen + len, 0);   /* copied before it returns */
    free(out);
    return 0;
}

static const ws_plugin template_plugin = {
    .magic = WS_PLUGIN_MAGIC,
    .abi_version = WS_ABI_VERSION,
    .size = sizeof(ws_plugin),
    .name = "template",
    .init = template_init,
    .fini = template_fini,
    .on_message = template_message,
};

const ws_plugin *websocket_plugin_init(const ws_api *host)
{
    api = host;
    return &template_plugin;
}
