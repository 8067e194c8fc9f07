/* test_accept.c - the RFC 6455 1.3 / 4.2.2 key/accept example, through apr-util. */
#include <stdio.h>
#include <string.h>

#include "ws_accept.h"

int main(void)
{
    static const struct { const char *key, *accept; } cases[] = {
        /* RFC 6455 1.3 */
        { "dGhlIHNhbXBsZSBub25jZQ==", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" },
        /* RFC 6455 section 1.2 / 4.1 example client key (accept computed independently
         * with `printf %s KEY+GUID | openssl sha1 -binary | base64`) */
        { "x3JJHMbDL1EzLkh9GBhXDw==", "HSmrc0sMlYUkAGmm5OPpG2HaGWk=" },
    };
    int passed = 0, failed = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[WS_ACCEPT_LEN + 1];
        ws_accept_key(cases[i].key, out);
        if (strlen(out) == WS_ACCEPT_LEN && strcmp(out, cases[i].accept) == 0) {
            passed++;
        } else {
            failed++;
            fprintf(stderr, "FAIL: key %s: got %s want %s\n", cases[i].key, out, cases[i].accept);
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
