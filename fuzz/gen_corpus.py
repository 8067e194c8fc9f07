#!/usr/bin/python3
"""Write the seed corpora of the fuzz targets into fuzz/corpus/<target>/.

    /usr/bin/python3 fuzz/gen_corpus.py          (or: make fuzz-corpus)

Deterministic: the same files every run (named by the SHA-1 of their content), so the
committed corpus only changes when this script does.  Each seed starts with the
settings bytes its target reads first (see the comment at the top of each
fuzz/fuzz_<target>.c); the fuzzer grows the corpus from here in a scratch directory
(build/fuzz/corpus/), never in this one.
"""

import hashlib
import os
import random
import shutil
import struct
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")

rng = random.Random(6455)


def write(target, items):
    d = os.path.join(CORPUS, target)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    names = set()
    for data in items:
        name = hashlib.sha1(data).hexdigest()
        if name in names:
            continue
        names.add(name)
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    return len(names)


# ---- frames (client -> server) ----------------------------------------------------------

def frame(op, payload=b"", fin=True, rsv=0, mask=True, length=None, key=None):
    b0 = (0x80 if fin else 0) | (rsv << 4) | op
    n = len(payload) if length is None else length
    m = 0x80 if mask else 0
    if n < 126:
        head = bytes([b0, m | n])
    elif n < 65536:
        head = bytes([b0, m | 126]) + struct.pack("!H", n)
    else:
        head = bytes([b0, m | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = key if key is not None else bytes(rng.randrange(256) for _ in range(4))
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def frame_seed(settings, stream, cuts=()):
    """settings byte, cut count, cuts (2 bytes each, little endian), stream"""
    out = bytes([settings, len(cuts)])
    for c in cuts:
        out += struct.pack("<H", c)
    return out + stream


def close_body(code, reason=b""):
    return struct.pack("!H", code) + reason


def frame_corpus():
    S = 0x03            # require_mask + validate_utf8, unlimited
    SR = 0x07           # + RSV1 allowed
    SB = 0x0B           # + byte at a time
    streams = [
        frame(1, b"Hello"),
        frame(2, bytes(range(256))[:200]),
        frame(2, b"x" * 300),
        frame(2, b"y" * 10, length=65536),                   # 64-bit length, cut short
        frame(1, b"Hel", fin=False) + frame(9, b"ping") + frame(0, b"lo"),
        frame(1, "h\u00e9".encode()[:2], fin=False) + frame(0, "h\u00e9".encode()[2:]),
        frame(1, "\u20ac\U0001F600".encode()),
        frame(1, b"\xed\xa0\x80"),                           # surrogate: 1007
        frame(1, b"ok\xc3", fin=False) + frame(0, b"\xa9"),  # split inside a character
        frame(1, b"bad\xc3"),                                # ends inside one: 1007
        frame(9, b"") + frame(10, b"pong") + frame(9, b"p" * 125),
        frame(9, b"p" * 126),                                # control > 125: 1002
        frame(9, b"x", fin=False),                           # fragmented control: 1002
        frame(8, close_body(1000, b"bye")) + frame(1, b"after close"),
        frame(8, b""),
        frame(8, b"\x03"),                                   # 1-byte close: 1002
        frame(8, close_body(1005)),                          # never on the wire: 1002
        frame(8, close_body(4999, "r\u00e9".encode())),
        frame(8, close_body(3000, b"\xff")),                 # bad reason: 1007
        frame(0, b"cont"),                                   # nothing to continue: 1002
        frame(1, b"a", fin=False) + frame(1, b"b"),          # interleaved: 1002
        frame(3, b"reserved"),
        frame(11, b""),
        frame(1, b"rsv2", rsv=2),
        frame(1, b"compressed", rsv=4),
        frame(1, b"a", fin=False, rsv=4) + frame(0, b"b", rsv=4),
        frame(1, b"unmasked", mask=False),
        bytes([0x82, 0xFF]) + b"\xff" * 8 + b"\0\0\0\0",    # 2^64-1 length: 1002
        bytes([0x82, 0xFF]) + b"\x80" + b"\0" * 7,           # 2^63 length: 1002
        bytes([0x82, 0xFF]) + b"\x7f" + b"\xff" * 7 + b"\1\2\3\4",   # 2^63-1: 1009
        bytes([0x82, 0xFE, 0x00, 0x05]) + b"\0\0\0\0" + b"short",     # non-minimal 16
        bytes([0x82, 0xFF]) + struct.pack("!Q", 300) + b"\0\0\0\0",   # non-minimal 64
        b"".join(frame(1, str(i).encode()) for i in range(40)),
        b"".join(frame(2, b"", fin=False) for _ in range(5)) + frame(0, b""),
    ]
    items = []
    for i, s in enumerate(streams):
        items.append(frame_seed(S, s))
        if i % 3 == 0:
            items.append(frame_seed(SR, s, cuts=(1, 3, 7)))
        if i % 4 == 1:
            items.append(frame_seed(SB, s))
    # size limits: 1 (index 1), 125 (3), 65535 (8)
    items.append(frame_seed(0x13, frame(2, b"ab")))
    items.append(frame_seed(0x33, frame(2, b"a" * 125) + frame(2, b"a" * 126)))
    items.append(frame_seed(0x33, frame(2, b"a" * 100, fin=False) + frame(0, b"a" * 26)))
    items.append(frame_seed(0x83, frame(2, b"z" * 70, length=65536)))
    # a server-side stream (unmasked) for a parser without require_mask
    items.append(frame_seed(0x02, frame(1, b"server", mask=False) + frame(8, close_body(1001), mask=False)))
    return items


# ---- UTF-8 -------------------------------------------------------------------------------

def utf8_seed(text, cuts=()):
    out = bytes([len(cuts)])
    for c in cuts:
        out += struct.pack("<H", c)
    return out + text


def utf8_corpus():
    texts = [
        b"", b"hello world", b"a" * 40,
        "\u007f\u0080\u07ff\u0800\uffff\U00010000\U0010ffff".encode(),
        "caf\u00e9 \u20ac \U0001F600".encode(),
        b"\xc0\x80", b"\xc1\xbf", b"\xe0\x80\x80", b"\xe0\x9f\xbf", b"\xf0\x80\x80\x80",
        b"\xf0\x8f\xbf\xbf", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xed\x9f\xbf",
        b"\xf4\x90\x80\x80", b"\xf4\x8f\xbf\xbf", b"\xf5\x80\x80\x80", b"\xff", b"\xfe",
        b"\x80", b"\xbf", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"abc\xc3(",
        b"abcdefg\xc3\xa9abcdefgh", b"12345678" * 3 + b"\xe2\x82\xac" + b"12345678" * 3,
        b"12345678" * 2 + b"\xed\xa0\x80",
    ]
    items = [utf8_seed(t) for t in texts]
    items.append(utf8_seed("\u00e9\u20ac\U0001F600".encode(), cuts=(1, 2, 3, 4, 5, 6)))
    items.append(utf8_seed(b"aaaaaaa\xf0\x9f\x98\x80bbbbbbb", cuts=(8, 9, 10)))
    items.append(utf8_seed(b"x" * 15 + b"\xed\xa0\x80", cuts=(16,)))
    return items


# ---- close payloads ----------------------------------------------------------------------

def close_corpus():
    items = [b"\x00", b"\x00\x03", b"\x01\x03\xe8"]
    for code in (1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1011, 1014, 1015, 1016,
                 2999, 3000, 3999, 4000, 4999, 5000, 0, 999, 65535):
        items.append(b"\x00" + struct.pack("!H", code) + b"reason")
    items.append(b"\x00" + close_body(1000, b"r" * 123))
    items.append(b"\x00" + close_body(1000, b"r" * 124))
    items.append(b"\x00" + close_body(1000, b"r" * 122 + "\u00e9".encode()))   # 124 bytes
    items.append(b"\x00" + close_body(1000, b"r" * 121 + "\u20ac".encode() + b"z"))
    items.append(b"\x00" + close_body(1000, "\U0001F600".encode() * 40))
    items.append(b"\x00" + close_body(1000, b"\xed\xa0\x80"))
    items.append(b"\x01" + close_body(1000, b"\xc3"))
    items.append(b"\x03" + close_body(1234, "\u00e9t\u00e9".encode()))
    return items


# ---- handshake strings -------------------------------------------------------------------

def handshake_corpus():
    strings = [
        "dGhlIHNhbXBsZSBub25jZQ==",            # RFC 6455 1.3's sample key
        "dGhlIHNhbXBsZSBub25jZR==",            # non-canonical last character
        "dGhlIHNhbXBsZSBub25jZQ=", "dGhlIHNhbXBsZSBub25jZQ===", "AAAAAAAAAAAAAAAAAAAAAA==",
        "////////////////////+A==", "dGhlIHNhbXBsZSBub25j ZQ==", "dGhlIHNhbXBsZSBub25jZQ",
        "", "chat, superchat", " a , b,,c\t, ,", ",,,", "\t", "x-foo;bar=1",
        "permessage-deflate",
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; client_max_window_bits=10; server_max_window_bits=12",
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        "permessage-deflate; client_max_window_bits=\"9\"",
        "permessage-deflate; server_max_window_bits=8, permessage-deflate",
        "permessage-deflate; server_max_window_bits=16, permessage-deflate; client_max_window_bits",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=08",
        "permessage-deflate; unknown=1, permessage-deflate",
        "x-webkit-deflate-frame, permessage-deflate; client_max_window_bits=15",
        "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        "PerMessage-Deflate; Client_Max_Window_Bits",
        "foo; bar=\"a,b\\\"c\", permessage-deflate",
        "permessage-deflate; client_max_window_bits=\"1\\0\"",
        "permessage-deflate;;", "permessage-deflate ; server_no_context_takeover = x",
        "permessage-deflate; server_max_window_bits=\"",
    ]
    items = []
    for i, s in enumerate(strings):
        b = s.encode("latin-1")
        items.append(bytes([0x00, 0x00]) + b)
        if "permessage" in s and i % 2:
            items.append(bytes([0xC2, 0x85]) + b)      # no-takeover policy, 6-byte buffer
            items.append(bytes([0x1F, 0x07]) + b)      # small windows
    return items


# ---- permessage-deflate payloads ---------------------------------------------------------

def deflate_messages(msgs, wbits=15, final_last=False):
    """Compress like a client (RFC 7692 7.2.1): one raw stream, sync flush per message,
    the trailing 00 00 ff ff removed."""
    c = zlib.compressobj(6, zlib.DEFLATED, -wbits)
    out = []
    for i, m in enumerate(msgs):
        if final_last and i == len(msgs) - 1:
            data = c.compress(m) + c.flush(zlib.Z_FINISH)
        else:
            data = c.compress(m) + c.flush(zlib.Z_SYNC_FLUSH)
            assert data.endswith(b"\x00\x00\xff\xff")
            data = data[:-4]
        out.append(data)
    return out


def inflate_seed(mode, max_index, payloads):
    out = bytes([mode, max_index])
    for p in payloads:
        out += struct.pack("<H", len(p)) + p
    return out


def stored_block(data, final=False):
    return bytes([1 if final else 0]) + struct.pack("<HH", len(data), len(data) ^ 0xFFFF) + data


BARE_STORED = [stored_block(b"Hello"), stored_block(b"ab") + stored_block(b"cd"),
               stored_block(b"final", True), b"\xf2\x00\x11\x00\x00"]


def inflate_corpus():
    text = [b"Hello", b"Hello", "h\u00e9llo w\u00f6rld \u20ac".encode(), b""]
    items = [
        inflate_seed(0x00, 8, deflate_messages(text)),                 # context takeover
        inflate_seed(0x01, 8, [deflate_messages([t])[0] for t in text]),   # no takeover
        inflate_seed(0x10, 8, deflate_messages(text)),                 # text
        inflate_seed(0x00, 8, deflate_messages(text, final_last=True) + deflate_messages([b"x"])),
        inflate_seed(0x00, 8, deflate_messages([b"abc" * 100, b"abc" * 100], wbits=9)),
        inflate_seed(0x02, 8, deflate_messages([b"abc" * 100], wbits=9)),  # 9-bit window
        inflate_seed(0x00, 3, deflate_messages([b"\0" * 100000])),    # bomb vs max_out 16
        inflate_seed(0x00, 6, deflate_messages([b"\0" * 1000])),      # exactly max_out
        inflate_seed(0x00, 6, deflate_messages([b"\0" * 1001])),      # one byte over
        inflate_seed(0x10, 8, deflate_messages([b"ok \xed\xa0\x80 bad"])),
        inflate_seed(0x10, 8, deflate_messages([b"cut \xc3"])),
        inflate_seed(0x00, 8, [b"\x00"]),                             # empty stored block
        inflate_seed(0x00, 8, [b""]),
        inflate_seed(0x00, 8, [b"\xff\xff\xff"]),                      # invalid block type
        inflate_seed(0x00, 8, [deflate_messages([b"hello world"])[0][:-2]]),   # cut
        inflate_seed(0x00, 8, [b"\x01\x05\x00\xfa\xffhello"]),        # stored, BFINAL
        inflate_seed(0x40, 8, deflate_messages([b"a" * 5000, b"b" * 5000])),
        # stored blocks without the empty block after them (the payload ends at a
        # byte-aligned block boundary), then a back reference; kept and released
        inflate_seed(0x00, 8, BARE_STORED),
        inflate_seed(0x40, 5, BARE_STORED),
        # a Huffman block ending byte-aligned that inflates past the first buffer
        inflate_seed(0x10, 8, [b"\xf2\x48\xcd\xc9\xc9\x07\x00", b"\xf2\x00\x11\x00\x00",
                               b"\xca\x38\xbc" + b"\x70" * 18 + b"\x39\x70\x70\x70\x00"]),
    ]
    # round trips
    for mode in (0x20, 0x21, 0x22, 0x30, 0x31 | 0x80, 0x2F, 0x60):
        items.append(inflate_seed(mode, 0, [b"Hello", b"Hello", b"", b"x" * 300,
                                            "\u00e9\u20ac".encode(), bytes(range(256))]))
    return items


def main():
    counts = {
        "frame": write("frame", frame_corpus()),
        "utf8": write("utf8", utf8_corpus()),
        "close": write("close", close_corpus()),
        "handshake": write("handshake", handshake_corpus()),
        "inflate": write("inflate", inflate_corpus()),
    }
    for k, v in counts.items():
        print(f"fuzz/corpus/{k}: {v} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
