/*
 * fuzz_ring - the backplane ring reader (src/ws_ring.c) over arbitrary ring contents:
 * whatever the bytes, head and reader offset, the reader must stay inside the ring and
 * its buffer, terminate, and deliver only messages whose fields are consistent.
 *
 * Input: 8 bytes head, 8 bytes reader offset (both reduced to stay near each other),
 * then the ring's data (a 4 KiB ring; shorter input leaves the rest zero).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_ref.h"
#include "ws_ring.h"

#define SIZE 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static ws_ring *r;
    ws_ring_reader rd;
    ws_ring_msg m;
    uint64_t head, off;
    int i, rv;

    if (size < 16) {
        return 0;
    }
    if (!r) {
        r = malloc(ws_ring_bytes(SIZE));
        CHECK(r != NULL && ws_ring_init(r, SIZE, 0) == 0);
    }
    memcpy(&head, data, 8);
    memcpy(&off, data + 8, 8);
    data += 16;
    size -= 16;
    memset(r->data, 0, SIZE);
    memcpy(r->data, data, size < SIZE ? size : SIZE);
    /* mostly a reader within two laps of head, sometimes anywhere */
    head &= 0xffffffffffull;
    if (!(off & 1)) {
        off = head - (off >> 1) % (2 * SIZE);
    }
    r->head = head;
    memset(&rd, 0, sizeof(rd));
    rd.off = off;
    for (i = 0; i < 10000; i++) {
        rv = ws_ring_read(r, &rd, &m);
        if (rv != WS_RING_MSG) {
            CHECK(rv == WS_RING_EMPTY || rv == WS_RING_BUSY);
            break;
        }
        CHECK(m.opcode == 1 || m.opcode == 2);
        CHECK(m.channel_len >= 1 && m.channel_len <= WS_RING_CHANNEL_MAX);
        CHECK(m.len <= SIZE / 2);
        CHECK((const unsigned char *)m.channel == rd.buf && m.data == rd.buf + m.channel_len);
        CHECK(m.channel_len + m.len <= rd.cap);
        /* touch every byte: ASan sees a read past the buffer */
        if (m.len) {
            volatile unsigned char x = m.data[m.len - 1];
            (void)x;
        }
    }
    CHECK(i < 10000);
    ws_ring_reader_free(&rd);
    return 0;
}
