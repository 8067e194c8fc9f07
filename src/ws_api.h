/*
 * ws_api.h - the function table given to every plugin at load (ws_api.c).
 */
#ifndef WS_API_H
#define WS_API_H

#include "mod_websocket.h"

extern const ws_api ws_the_api;

#endif
