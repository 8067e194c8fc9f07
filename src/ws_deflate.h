/*
 * ws_deflate.h - permessage-deflate (RFC 7692) for mod_websocket's protocol core.
 *
 * Design: like ws_proto.h this is plain C99 with no httpd or APR include; it needs
 * only libc and zlib.  It has three parts:
 *
 *   ws_pmd_negotiate()    reads the client's Sec-WebSocket-Extensions offers and
 *                         writes the one response value (RFC 7692 5, 7.1);
 *   ws_pmd_compress()     turns one whole outgoing message into the payload of a
 *                         frame with RSV1 set (RFC 7692 7.2.1);
 *   ws_pmd_decompress()   turns one whole received message (the parser reassembles
 *                         fragments) back into its data (RFC 7692 7.2.2), bounded
 *                         by max_out so a small "deflate bomb" costs at most max_out.
 *
 * Roles: a ws_pmd compresses with the server_* parameters and decompresses with the
 * client_* ones, i.e. it is the server's side.  A client (or a test playing one) uses
 * the same code with the server_* and client_* fields of ws_pmd_params swapped.
 *
 * Memory: every byte zlib allocates goes through counting hooks, so ws_pmd_memory()
 * counts zlib's state exactly, plus our buffers (not malloc's own overhead).  Streams are created on first use.  With
 * client_no_context_takeover the inflate stream is freed after every message; without
 * it (the client keeps its context) ws_pmd_release() frees the stream and keeps only
 * the window's bytes (at most 2^client_max_window_bits, fewer if fewer were received),
 * to be the next message's dictionary; with
 * server_no_context_takeover no deflate stream belongs to the connection at all: one
 * per thread is borrowed for the duration of a call (deflateInit2 + deflateEnd of a
 * default stream cost ~60 us, several times a small message; deflateReset ~3 us).  Output buffers are freed by
 * ws_pmd_release(), so an idle connection with both no_context_takeover parameters
 * holds only sizeof(ws_pmd).  Even without ws_pmd_release() a buffer larger than
 * 64 KiB is dropped at the next call, so a large message is not kept for long.
 *
 * A ws_pmd is not thread-safe: one owner per connection, like the parser.
 */
#ifndef WS_DEFLATE_H
#define WS_DEFLATE_H

#include <stddef.h>
#include <stdint.h>

#include "ws_proto.h"

/* Errors: those of ws_proto.h.  WS_ERR_INFLATE (close 1007) is compressed data that
 * does not inflate (RFC 7692 7.2.2: _Fail the WebSocket Connection_; 1007 because the
 * payload is inconsistent with the message, as with bad UTF-8, RFC 6455 7.4.1). */

/* Server policy, from directives.  Start from ws_pmd_policy_default(). */
typedef struct ws_pmd_policy {
    int max_window_bits;        /* 8..15: largest server_max_window_bits we deflate
                                 * with.  8 is honoured by deflating with run-length
                                 * matches only (distance 1), see ws_deflate.c */
    int client_max_window_bits; /* 8..15: largest client window we keep inflate
                                 * context for.  A client that cannot be limited (it
                                 * did not offer client_max_window_bits) and would use
                                 * more is asked for client_no_context_takeover */
    int mem_level;              /* deflateInit2 memLevel 1..9 */
    int level;                  /* deflate level 0..9 (0 stores, 1 fastest, 9 best);
                                 * -1: zlib's default (6) */
    int server_no_context_takeover; /* 1: always answer server_no_context_takeover */
    int client_no_context_takeover; /* 1: always answer client_no_context_takeover */
} ws_pmd_policy;

/* zlib's defaults and RFC 7692's: windows 15, memLevel 8, level 6, context takeover. */
void ws_pmd_policy_default(ws_pmd_policy *policy);

/* What was agreed for one connection. */
typedef struct ws_pmd_params {
    int server_no_context_takeover;
    int client_no_context_takeover;
    int server_max_window_bits;     /* 8..15: the window we deflate with */
    int client_max_window_bits;     /* 8..15: the window the client deflates with
                                     * (15 when the offer could not limit it) */
} ws_pmd_params;

/* Enough for the longest response value (128 characters) and its NUL. */
#define WS_PMD_RESPONSE_MAX 160

/*
 * Read a Sec-WebSocket-Extensions value (several header lines joined with ", ", as
 * httpd does) and accept the first acceptable permessage-deflate offer (RFC 7692 5).
 * Other extensions are skipped.  An offer with an unknown, duplicate or invalid
 * parameter is declined and the next one tried (RFC 7692 7); values may be tokens
 * or quoted-strings (RFC 6455 9.1).  Extension and parameter names are matched
 * without regard to case.
 * Returns 1 if an offer was accepted: *agreed is filled and response holds the value
 * to send back as Sec-WebSocket-Extensions, NUL-terminated.  Returns 0 if none was
 * (or response_size < the response's length + 1; WS_PMD_RESPONSE_MAX always fits):
 * then send no Sec-WebSocket-Extensions and do not allow RSV1.
 * header may be NULL (no offers).
 */
int ws_pmd_negotiate(const char *header, const ws_pmd_policy *policy,
                     ws_pmd_params *agreed, char *response, size_t response_size);

typedef struct ws_pmd ws_pmd;

/* Per-connection state for agreed parameters; level and mem_level come from policy
 * (NULL: defaults).  Allocates only the small struct.  NULL if out of memory. */
ws_pmd *ws_pmd_create(const ws_pmd_params *agreed, const ws_pmd_policy *policy);
/* Free everything pmd holds.  NULL is fine. */
void ws_pmd_destroy(ws_pmd *pmd);

/*
 * Compress one whole message (RFC 7692 7.2.1): deflate, sync flush, drop the final
 * 00 00 ff ff.  Send the result as the payload of a data message whose first frame
 * has RSV1 set.  With context takeover, what was compressed is in the peer's window
 * only if it is sent: once compressed, a message must be sent compressed.
 * *out points into a buffer owned by pmd, valid until the next call on pmd or
 * ws_pmd_release().  An empty message gives the 1-byte payload 0x00.
 * Returns WS_OK, or WS_ERR_NOMEM: nothing to send, fail the connection (1011).
 */
int ws_pmd_compress(ws_pmd *pmd, const uint8_t *in, size_t len,
                    const uint8_t **out, size_t *out_len);

/*
 * Decompress one whole message (RFC 7692 7.2.2: append 00 00 ff ff, inflate).
 * max_out bounds the result (0: no bound, as the parser's max_message): as soon as
 * one byte more would come out, WS_ERR_TOO_BIG is returned; the output buffer is
 * never grown past max_out (one of up to 64 KiB kept from an earlier call may be
 * larger, but no more than max_out bytes are written into it).  text != 0 validates the output as UTF-8 while it
 * is produced (RFC 6455 8.1: fail fast), so the caller need not: the parser skips
 * compressed text messages.
 * An empty payload is taken as an empty message (see ws_deflate.c).
 * *out points into a buffer owned by pmd, valid until the next call on pmd or
 * ws_pmd_release().  *out is never NULL.
 * Returns WS_OK; WS_ERR_TOO_BIG (close 1009); WS_ERR_UTF8 (1007); WS_ERR_INFLATE
 * (1007): not valid DEFLATE data, or data that stops inside a block, or refers
 * back past the data inflated so far (zlib checks distances against the data it
 * holds, which is at least the agreed window, so a peer deflating with a larger
 * window than agreed is caught only where it reaches past that); WS_ERR_NOMEM (1011).
 * After an error every later call returns the same error: fail the connection.
 */
int ws_pmd_decompress(ws_pmd *pmd, const uint8_t *in, size_t len, size_t max_out,
                      int text, const uint8_t **out, size_t *out_len);

/* The connection goes idle: free the output buffers (call when done with *out: the
 * frame was written, or the message delivered), and reduce a client's context-takeover
 * inflate stream to its window's bytes.  Keeps the server's context-takeover deflate
 * stream. */
void ws_pmd_release(ws_pmd *pmd);

/* Bytes of heap this connection's state holds now: the struct, zlib's allocations
 * (counted by hooks) and output buffers.  Not the per-thread deflate stream. */
size_t ws_pmd_memory(const ws_pmd *pmd);
/* The highest ws_pmd_memory() seen on pmd, counted at every allocation. */
size_t ws_pmd_memory_peak(const ws_pmd *pmd);

/* Bytes of the calling thread's borrowed deflate stream (used for
 * server_no_context_takeover), and a way to free it, e.g. at thread exit. */
size_t ws_pmd_thread_cache_memory(void);
void ws_pmd_thread_cache_free(void);

#endif
