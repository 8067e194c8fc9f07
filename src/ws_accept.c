/* ws_accept.c - see ws_accept.h. */
#include <string.h>

#include "apr_sha1.h"
#include "apr_base64.h"

#include "ws_accept.h"
#include "ws_proto.h"

void ws_accept_key(const char *key, char *out)
{
    apr_sha1_ctx_t sha;
    unsigned char digest[APR_SHA1_DIGESTSIZE];

    apr_sha1_init(&sha);
    apr_sha1_update(&sha, key, (unsigned int)strlen(key));
    apr_sha1_update(&sha, WS_GUID, (unsigned int)(sizeof(WS_GUID) - 1));
    apr_sha1_final(digest, &sha);
    apr_base64_encode(out, (const char *)digest, APR_SHA1_DIGESTSIZE);
}
