"""Byte-level mutations of valid encodings (the fallback engine when atheris is not installed, and
the short run's engine): a few edits chosen at random, the kinds a coverage-guided fuzzer starts
with, plus ones that matter for these formats (length fields, huge numbers in text, splices of two
valid inputs)."""

from __future__ import annotations

import random

_INTERESTING = (b"\x00", b"\xff", b"\x7f", b"\x80", b"\x18", b"\x19", b"\x1a", b"\x1b", b"\x1f", b"\x9f",
                b"\xbf", b"\xc0", b"\xf4", b"\xf9", b"\xfb", b"\xff\xff\xff\xff", b"\x00\x00\x00\x00",
                b'"', b"\\", b"{", b"}", b"[", b"]", b",", b":", b"-", b"1e999", b"NaN", b"\\u0000",
                b"\xc3\xa9", b"\xed\xa0\x80", b"9" * 5000, b"[" * 100, b'"a":1,"a":2')


def mutate(rng: random.Random, data: bytes, corpus: list[bytes], edits: int | None = None) -> bytes:
    buf = bytearray(data)
    for _ in range(edits if edits is not None else rng.randint(1, 4)):
        choice = rng.randrange(9)
        pos = rng.randrange(len(buf) + 1)
        if choice == 0 and buf:  # flip bits
            pos = min(pos, len(buf) - 1)
            buf[pos] ^= 1 << rng.randrange(8)
        elif choice == 1 and buf:  # set a byte
            buf[min(pos, len(buf) - 1)] = rng.randrange(256)
        elif choice == 2:  # insert random bytes
            buf[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif choice == 3 and buf:  # delete a run
            del buf[pos : pos + rng.randint(1, 16)]
        elif choice == 4:  # insert a token that tends to matter
            buf[pos:pos] = rng.choice(_INTERESTING)
        elif choice == 5:  # truncate
            del buf[pos:]
        elif choice == 6 and buf:  # duplicate a run
            end = min(len(buf), pos + rng.randint(1, 32))
            buf[pos:pos] = buf[pos:end]
        elif choice == 7 and corpus:  # splice with another valid input
            other = rng.choice(corpus)
            cut = rng.randrange(len(other) + 1)
            buf = buf[:pos] + bytearray(other[cut:])
        elif choice == 8 and len(buf) >= 4:  # bump a length-like field
            pos = min(pos, len(buf) - 1)
            buf[pos] = (buf[pos] + rng.choice((1, -1, 16, -16, 128))) % 256
    return bytes(buf)
