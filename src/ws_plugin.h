/*
 * ws_plugin.h - loading plugins (WebSocketHandler) and running their life-cycle entry
 * points: init with the section's settings after each configuration read, child_init
 * and child_exit in every child, fini at unload.  Config time and child init/exit only.
 */
#ifndef WS_PLUGIN_H
#define WS_PLUGIN_H

#include "ws_conf.h"

/* pre_config: forget the previous generation's sections. */
void ws_plugin_pre_config(apr_pool_t *pconf);

/* A section that has a WebSocketHandler, WebSocketPluginConfig or a namespace: its
 * plugin is initialised at post_config.  Config time. */
void ws_plugin_note_section(ws_dir_conf *conf);

/* Load the plugin PATH (ServerRoot-relative) with init symbol SYMBOL (NULL: the
 * default) for the directive being read: fills inst, or returns an error message that
 * names the file. */
const char *ws_plugin_load(cmd_parms *cmd, const char *path, const char *symbol,
                           ws_instance *inst);

/* post_config and test_config: run every plugin's init.  Returns an error message. */
const char *ws_plugin_init_all(apr_pool_t *pconf);

/* child_init: each plugin's child_init once (child_exit from a pchild cleanup). */
void ws_plugin_child_init(apr_pool_t *pchild);

/* The channel namespace of the location whose plugin_data this is: NULL if none, or
 * if locations with different namespaces share that plugin_data.  Any thread. */
const char *ws_plugin_ns_of(const void *plugin_data);

#endif
