/*
 * ws_plugin.c - plugins: loading the shared objects, the sections that configure them,
 * and their life cycle (init, child_init, child_exit, fini).  See ws_plugin.h.
 */
#include <string.h>

#include "httpd.h"
#include "http_config.h"
#include "http_log.h"
#include "apr_dso.h"
#include "apr_file_info.h"
#include "apr_lib.h"
#include "apr_strings.h"

#include "mod_websocket.h"
#include "ws_api.h"
#include "ws_channel.h"
#include "ws_plugin.h"

APLOG_USE_MODULE(websocket);

/* Sections with a WebSocketHandler or WebSocketPluginConfig, for post_config.  In
 * pconf, recreated at each configuration read. */
static apr_array_header_t *ws_sections;

void ws_plugin_pre_config(apr_pool_t *pconf)
{
    ws_sections = apr_array_make(pconf, 4, sizeof(ws_dir_conf *));
}

void ws_plugin_note_section(ws_dir_conf *conf)
{
    int i;
    for (i = 0; i < ws_sections->nelts; i++) {
        if (APR_ARRAY_IDX(ws_sections, i, ws_dir_conf *) == conf) {
            return;
        }
    }
    APR_ARRAY_PUSH(ws_sections, ws_dir_conf *) = conf;
}

static apr_status_t ws_instance_fini(void *data)
{
    ws_instance *inst = data;
    if (inst->p.fini) {
        inst->p.fini(inst->plugin_data);
    }
    return APR_SUCCESS;
}

const char *ws_plugin_load(cmd_parms *cmd, const char *path, const char *symbol,
                           ws_instance *inst)
{
    apr_dso_handle_t *dso;
    apr_dso_handle_sym_t sym;
    ws_plugin_init_fn initfn;
    const ws_plugin *decl;
    char errbuf[256];
    apr_status_t rv;

    inst->server = cmd->server;
    inst->section = cmd->path;
    inst->path = ap_server_root_relative(cmd->pool, path);
    if (!inst->path) {
        return apr_psprintf(cmd->pool, "WebSocketHandler: invalid path '%s'", path);
    }
    inst->symbol = symbol ? symbol : WS_PLUGIN_INIT_SYMBOL;
    inst->where = apr_psprintf(cmd->pool, "%s:%d", cmd->directive->filename,
                               cmd->directive->line_num);

    rv = apr_dso_load(&dso, inst->path, cmd->pool);
    if (rv != APR_SUCCESS) {
        return apr_psprintf(cmd->pool, "WebSocketHandler: cannot load %s: %s", inst->path,
                            apr_dso_error(dso, errbuf, sizeof(errbuf)));
    }
    rv = apr_dso_sym(&sym, dso, inst->symbol);
    if (rv != APR_SUCCESS) {
        return apr_psprintf(cmd->pool, "WebSocketHandler: %s has no symbol '%s': %s",
                            inst->path, inst->symbol,
                            apr_dso_error(dso, errbuf, sizeof(errbuf)));
    }
    initfn = (ws_plugin_init_fn)(uintptr_t)sym;
    decl = initfn(&ws_the_api);
    if (!decl) {
        return apr_psprintf(cmd->pool, "WebSocketHandler: %s: %s() returned NULL",
                            inst->path, inst->symbol);
    }
    if (decl->magic != WS_PLUGIN_MAGIC) {
        return apr_psprintf(cmd->pool, "WebSocketHandler: %s is not a mod_websocket "
                            "plugin (bad magic 0x%08x)", inst->path, (unsigned)decl->magic);
    }
    if (decl->abi_version != WS_ABI_VERSION) {
        return apr_psprintf(cmd->pool, "WebSocketHandler: %s was built for plugin ABI "
                            "version %u, this mod_websocket speaks version %u", inst->path,
                            (unsigned)decl->abi_version, WS_ABI_VERSION);
    }
    if (decl->size < offsetof(ws_plugin, on_close) + sizeof(decl->on_close)) {
        return apr_psprintf(cmd->pool, "WebSocketHandler: %s declares a plugin struct of "
                            "%lu bytes, smaller than ABI version 1's", inst->path,
                            (unsigned long)decl->size);
    }
    /* Read only what the plugin's struct has; a newer plugin's extra members are
     * ignored, an older one's missing members stay NULL. */
    memcpy(&inst->p, decl, decl->size < sizeof(inst->p) ? decl->size : sizeof(inst->p));
    if (!inst->p.name) {
        inst->p.name = apr_filepath_name_get(inst->path);
    }

    return NULL;
}

/* Run each plugin's init with its section's settings.  Returns an error string. */
const char *ws_plugin_init_all(apr_pool_t *pconf)
{
    int i;
    for (i = 0; i < ws_sections->nelts; i++) {
        ws_dir_conf *conf = APR_ARRAY_IDX(ws_sections, i, ws_dir_conf *);
        ws_instance *inst = conf->inst_set ? conf->inst : NULL;
        char err[256] = "";
        if (!inst && conf->push) {
            continue;       /* a channel publisher: WebSocketChannelNamespace alone */
        }
        if (!inst) {
            return "WebSocketPluginConfig or WebSocketChannelNamespace is used in a section "
                   "without a WebSocketHandler";
        }
        inst->settings = conf->settings;
        inst->ns = conf->ns ? conf->ns
                 : apr_pstrcat(pconf, inst->server->server_hostname
                               ? inst->server->server_hostname : "",
                               inst->section ? inst->section : "/", NULL);
        if (!ws_channel_ns_valid(inst->ns, strlen(inst->ns))) {
            inst->ns = apr_psprintf(pconf, "%.255s", inst->ns);   /* a long path, cut */
        }
        if (inst->p.init) {
            const ws_setting *s = inst->settings ? (const ws_setting *)inst->settings->elts : NULL;
            size_t n = inst->settings ? (size_t)inst->settings->nelts : 0;
            if (inst->p.init(&inst->plugin_data, s, n, err, sizeof(err)) != 0) {
                return apr_psprintf(pconf, "WebSocketHandler %s (%s): plugin init failed: %s",
                                    inst->path, inst->where, err[0] ? err : "no reason given");
            }
        }
        /* Registered after the dso's own cleanup, so it runs before the unload. */
        apr_pool_cleanup_register(pconf, inst, ws_instance_fini, apr_pool_cleanup_null);
    }
    return NULL;
}

static apr_status_t ws_child_exit(void *data)
{
    apr_array_header_t *insts = data;
    int i;
    for (i = 0; i < insts->nelts; i++) {
        ws_instance *inst = APR_ARRAY_IDX(insts, i, ws_instance *);
        if (inst->p.child_exit) {
            inst->p.child_exit(inst->plugin_data);
        }
    }
    return APR_SUCCESS;
}

void ws_plugin_child_init(apr_pool_t *pchild)
{
    apr_array_header_t *insts = apr_array_make(pchild, 4, sizeof(ws_instance *));
    int i, j;
    for (i = 0; i < ws_sections->nelts; i++) {
        ws_instance *inst = APR_ARRAY_IDX(ws_sections, i, ws_dir_conf *)->inst;
        for (j = 0; j < insts->nelts; j++) {
            if (APR_ARRAY_IDX(insts, j, ws_instance *) == inst) {
                break;
            }
        }
        if (inst && j == insts->nelts) {
            APR_ARRAY_PUSH(insts, ws_instance *) = inst;
            if (inst->p.child_init) {
                inst->p.child_init(inst->plugin_data);
            }
        }
    }
    apr_pool_cleanup_register(pchild, insts, ws_child_exit, apr_pool_cleanup_null);
}

/* The namespace of the location whose plugin_data this is: NULL if none, or if two
 * locations with different namespaces share that plugin_data. */
const char *ws_plugin_ns_of(const void *plugin_data)
{
    const char *ns = NULL;
    int i;
    for (i = 0; ws_sections && i < ws_sections->nelts; i++) {
        const ws_instance *inst = APR_ARRAY_IDX(ws_sections, i, ws_dir_conf *)->inst;
        if (inst && inst->plugin_data == plugin_data && inst->ns) {
            if (ns && strcmp(ns, inst->ns) != 0) {
                return NULL;
            }
            ns = inst->ns;
        }
    }
    return ns;
}
