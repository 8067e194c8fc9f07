/*
 * ws_proto.h - the RFC 6455 protocol core of mod_websocket.
 *
 * Design: everything here is plain C99 with no httpd or APR include, so it can be
 * unit-tested and fuzzed alone, and both connection drivers (blocking and async)
 * share it as is.  The parser is a push parser: the caller feeds whatever bytes it
 * has (one at a time or a megabyte at once) and gets back at most one event per call;
 * it never does I/O and never allocates a frame's declared length up front.  Whole
 * data messages are reassembled in a buffer that grows with the bytes that actually
 * arrive, bounded by max_message (RFC 6455 10.4).
 *
 * Errors are grouped by class (as wslay does) and mapped to close codes in one table:
 * ws_error_close_code().
 */
#ifndef WS_PROTO_H
#define WS_PROTO_H

#include <stddef.h>
#include <stdint.h>

/* ---- results and errors ------------------------------------------------------ */
enum {
    WS_OK = 0,
    WS_NEED_MORE = -100,     /* all input consumed, no event yet */
    WS_ERR_PROTOCOL = -200,  /* close 1002 */
    WS_ERR_UTF8 = -201,      /* close 1007: invalid UTF-8 in a text message or close reason */
    WS_ERR_TOO_BIG = -202,   /* close 1009: message larger than max_message */
    WS_ERR_INFLATE = -203,   /* close 1007: compressed data that does not inflate (RFC 7692 7.2.2) */
    WS_ERR_NOMEM = -500      /* close 1011 */
};

/* Close code to send when failing the connection with error err (RFC 6455 7.4.1). */
unsigned ws_error_close_code(int err);
/* Short static text for err, suitable as a close reason or log text. */
const char *ws_error_text(int err);

/* ---- opcodes (RFC 6455 5.2) ---------------------------------------------------- */
enum {
    WS_OP_CONT = 0x0,
    WS_OP_TEXT = 0x1,
    WS_OP_BINARY = 0x2,
    WS_OP_CLOSE = 0x8,
    WS_OP_PING = 0x9,
    WS_OP_PONG = 0xA
};

#define WS_RSV1 0x40
#define WS_RSV2 0x20
#define WS_RSV3 0x10

/* ---- close codes (RFC 6455 7.4) ------------------------------------------------ */
/* WS_CLOSE_NORMAL ... WS_CLOSE_BAD_GATEWAY are public: the plugin ABI header defines
 * them (plain C, no dependency), and the core uses the same definitions. */
#include "../include/mod_websocket.h"

/* 1 if a peer may send code in a close frame (RFC 6455 7.4.1/7.4.2 and the IANA
 * registry): 1000-1003, 1007-1014, 3000-4999.  0 otherwise (1004-1006, 1015, <1000,
 * 1016-2999, >= 5000). */
int ws_close_code_valid(unsigned code);

/* Parse a received close frame payload (already unmasked).
 * len 0: *code = 1005, no reason.  len 1: WS_ERR_PROTOCOL.  An invalid code:
 * WS_ERR_PROTOCOL.  A reason that is not valid UTF-8: WS_ERR_UTF8.
 * On WS_OK *reason points into p (not NUL-terminated), *reason_len its length. */
int ws_close_parse(const uint8_t *p, size_t len, unsigned *code,
                   const char **reason, size_t *reason_len);

/* The length of reason (len bytes of valid UTF-8) cut to at most max bytes at a
 * character boundary, so that the cut reason is valid UTF-8 too.  Every path that
 * sends or reports a close reason cuts it with this (123 bytes on the wire). */
#define WS_CLOSE_REASON_MAX 123
size_t ws_close_reason_cut(const char *reason, size_t len, size_t max);

/* Build a close payload into out (at least 125 bytes): 2-byte code then reason,
 * the reason cut to 123 bytes at a UTF-8 character boundary.  code 0 or 1005
 * builds an empty payload.  Returns the payload length. */
size_t ws_close_build(uint8_t *out, unsigned code, const char *reason, size_t reason_len);

/* ---- UTF-8 (RFC 3629), incremental and fail-fast ------------------------------- */
typedef struct ws_utf8 {
    uint32_t state;      /* 0 = at a character boundary; opaque otherwise */
    uint32_t codep;
} ws_utf8;

void ws_utf8_init(ws_utf8 *v);
/* Feed n bytes.  Returns WS_OK while the bytes so far can still be a prefix of valid
 * UTF-8 (an incomplete final character is fine), WS_ERR_UTF8 as soon as they cannot
 * (overlong forms, surrogates, > U+10FFFF, bad continuation bytes). */
int ws_utf8_feed(ws_utf8 *v, const uint8_t *p, size_t n);
/* 1 if the input so far ended on a character boundary. */
int ws_utf8_complete(const ws_utf8 *v);
/* Whole-buffer check: 1 if p[0..n) is complete valid UTF-8. */
int ws_utf8_valid(const uint8_t *p, size_t n);

/* ---- masking (RFC 6455 5.3) ---------------------------------------------------- */
/* XOR p[0..n) with mask, where p starts at byte offset `offset` of the frame payload
 * (so the key is rotated by offset % 4).  Works a machine word at a time. */
void ws_mask(uint8_t *p, size_t n, const uint8_t mask[4], uint64_t offset);

/* ---- frame writing ------------------------------------------------------------- */
#define WS_FRAME_HEADER_MAX 14
/* Write a frame header into out (at least 14 bytes).  flags: WS_RSV1.. bits;
 * mask NULL writes an unmasked (server) frame, else the 4-byte key is included
 * (client frames; the caller masks the payload with ws_mask).
 * Returns the header length (2..14). */
size_t ws_frame_header(uint8_t *out, int fin, unsigned flags, unsigned opcode,
                       uint64_t payload_len, const uint8_t *mask);

/* ---- the parser ---------------------------------------------------------------- */
typedef enum {
    WS_EV_NONE = 0,
    WS_EV_MESSAGE,   /* a whole data message: opcode TEXT or BINARY */
    WS_EV_PING,      /* payload = ping application data (<= 125 bytes) */
    WS_EV_PONG,
    WS_EV_CLOSE      /* close_code (1005 if none), payload/len = reason */
} ws_event_type;

typedef struct ws_event {
    ws_event_type type;
    unsigned opcode;        /* WS_OP_TEXT / WS_OP_BINARY for messages */
    int compressed;         /* RSV1 was set on the first frame (only if allowed) */
    const uint8_t *data;    /* valid until the next call on the parser */
    size_t len;
    unsigned close_code;
} ws_event;

typedef enum {
    WS_PS_HEADER = 0,       /* collecting the 2..14 header bytes */
    WS_PS_PAYLOAD,          /* in a frame's payload */
    WS_PS_CLOSED,           /* a close frame was delivered; further input is ignored */
    WS_PS_FAILED            /* an error was returned; further input is refused */
} ws_parser_state;

typedef struct ws_parser {
    /* settings, fixed after ws_parser_init */
    uint64_t max_message;     /* limit on a whole data message; 0 = no limit */
    unsigned allowed_rsv;     /* RSV bits an extension has negotiated (WS_RSV1) */
    int require_mask;         /* 1 on a server: client frames must be masked */
    int validate_utf8;        /* 1: validate text messages (not compressed ones) */

    /* frame state */
    ws_parser_state state;
    uint8_t hdr[14];
    size_t hdr_have;
    int fin;
    unsigned opcode;
    unsigned rsv;
    uint8_t mask[4];
    int masked;
    uint64_t frame_len;
    uint64_t frame_done;

    /* control frame payload (RFC 6455 5.5: at most 125 bytes) */
    uint8_t ctl[125];

    /* data message reassembly */
    int in_message;           /* a fragmented message is in progress */
    unsigned msg_opcode;
    int msg_compressed;
    uint8_t *buf;             /* malloc'd, grows with arriving bytes */
    size_t buf_len;
    size_t buf_cap;
    ws_utf8 utf8;
} ws_parser;

/* Initialise p.  max_message 0 means unlimited. */
void ws_parser_init(ws_parser *p, uint64_t max_message, int require_mask);
/* Free the reassembly buffer. */
void ws_parser_free(ws_parser *p);
/* Free the reassembly buffer unless a fragmented message is in progress (an idle
 * connection then holds none).  The last event's data is no longer valid after it. */
void ws_parser_release(ws_parser *p);

/*
 * Feed len bytes from in.  The parser unmasks payload in place, so in must be
 * writable.  *consumed is set to the number of bytes used.
 * Returns:
 *   WS_NEED_MORE   all of in was consumed and no event is complete;
 *   WS_OK          *ev holds an event; call again with in + *consumed for the rest;
 *   < 0            an error (see ws_error_close_code); the connection must be failed.
 * Event data point into in or into the parser and are valid until the next call.
 * After WS_EV_CLOSE the parser consumes and ignores everything (RFC 6455 5.5.1).
 *
 * Checks (RFC 6455 5.2, 5.4, 5.5, 5.6, 8.1): masking, RSV bits not negotiated, reserved
 * opcodes, control frames fragmented or > 125 bytes, continuation without a message,
 * a new data frame inside a fragmented message, 64-bit length with the top bit set,
 * non-minimal length encodings (5.2: "the minimal number of bytes MUST be used"),
 * text messages validated incrementally (fail fast), close payload validated.
 */
int ws_parser_feed(ws_parser *p, uint8_t *in, size_t len, size_t *consumed, ws_event *ev);

/* ---- handshake helpers (RFC 6455 4.2.1) ---------------------------------------- */
/* 1 if key is the base64 encoding of exactly 16 bytes (24 chars, "==" padding,
 * canonical: the last data character's unused bits are zero). */
int ws_key_valid(const char *key);

/* Walk a comma-separated HTTP token list (e.g. Sec-WebSocket-Protocol).
 * *pos starts at list; each call sets *tok and *toklen to the next token with surrounding
 * white space removed and returns 1, or returns 0 at the end.  Empty elements are skipped. */
int ws_next_token(const char **pos, const char **tok, size_t *toklen);

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#endif
