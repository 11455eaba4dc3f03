"""The server side of journald's native protocol, for tests that capture audit records.

https://systemd.io/JOURNAL_NATIVE_PROTOCOL/: each field is ``KEY=value\\n``, or, when the
value holds a newline, ``KEY\\n`` + 64-bit little-endian length + value + ``\\n``.
"""

from __future__ import annotations

import struct


def decode_entry(data: bytes) -> list[tuple[str, bytes]]:
    """The fields of one entry, in order, as journald parses them."""
    fields: list[tuple[str, bytes]] = []
    i = 0
    while i < len(data):
        eol = data.index(b"\n", i)
        line = data[i:eol]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields.append((key.decode("ascii"), value))
            i = eol + 1
        else:
            (size,) = struct.unpack("<Q", data[eol + 1 : eol + 9])
            start = eol + 9
            fields.append((line.decode("ascii"), data[start : start + size]))
            assert data[start + size : start + size + 1] == b"\n"
            i = start + size + 1
    return fields
