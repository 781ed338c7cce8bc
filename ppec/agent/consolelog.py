"""Reading a VM's console log (virtlogd writes it; see ``domxml.console_elements``).

``vm logs`` asks for the last lines, ``vm logs --follow`` then asks again and again with
the cursor of the previous answer, ``"<inode>:<offset>:<crc32 of the 64 bytes before
it>"`` (opaque to clients). A cursor stays valid across agent restarts (it names a file
and a place in it) and across virtlogd's rotation (``x.log`` becomes ``x.log.0``): the
rest of the old file comes first.
Each answer holds at most ``MAX_CHUNK`` bytes of the log (``more`` says whether to ask
again at once), so even a log of control characters fits in one protocol line.
"""

from __future__ import annotations

import os
import re
import zlib
from pathlib import Path
from typing import Any, BinaryIO

from ppec.core.errors import BadInput

MAX_CHUNK = 128 * 1024
_BLOCK = 16 * 1024
_TAG_BYTES = 64
_EMPTY = f"{zlib.crc32(b''):08x}"


def parse_cursor(cursor: str) -> tuple[int, int, str]:
    parts = cursor.split(":")
    if len(cursor) > 60 or len(parts) != 3 or not parts[0].isdigit() \
            or not parts[1].isdigit() or not re.fullmatch(r"[0-9a-f]{8}", parts[2]):
        raise BadInput(f"bad log cursor {cursor[:60]!r}: pass back the cursor a previous "
                       f"answer gave", code="BAD_PARAMS")
    return int(parts[0]), int(parts[1]), parts[2]


def _tag(f: BinaryIO, offset: int) -> str:
    """What the file holds just before ``offset``: a file deleted and made again (a VM
    re-created under its name) often gets the same inode back, rarely the same bytes."""
    f.seek(max(offset - _TAG_BYTES, 0))
    return f"{zlib.crc32(f.read(min(offset, _TAG_BYTES))):08x}"


def complete_utf8(data: bytes) -> bytes:
    """``data`` without a trailing, unfinished UTF-8 sequence (the writer is mid-character;
    the next read gets the whole of it)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:      # a continuation byte: look further back
            continue
        if byte < 0x80:
            return data
        need = 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4 \
            if byte >> 3 == 0b11110 else 1
        return data[:-back] if need > back else data
    return data


def _answer(f: BinaryIO | None, data: bytes, ino: int, offset: int,
            **flags: bool) -> dict[str, Any]:
    data = complete_utf8(data)
    end = offset + len(data)
    return {"text": data.decode(errors="replace"),
            "cursor": f"{ino}:{end}:{_tag(f, end) if f else _EMPTY}",
            "more": False, "reset": False, "truncated": False, **flags}


def tail(path: Path, lines: int) -> dict[str, Any]:
    """The last ``lines`` lines (0: from the start), at most MAX_CHUNK bytes of them."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return _answer(None, b"", 0, 0)
    with f:
        st = os.fstat(f.fileno())
        size = st.st_size
        if lines == 0:
            data = f.read(min(size, MAX_CHUNK))
            return _answer(f, data, st.st_ino, 0, more=len(data) < size)
        start = size
        data = b""
        # Newlines past the one ending the last line: the last line may have none.
        while start > 0 and len(data) < MAX_CHUNK:
            step = min(_BLOCK, start)
            start -= step
            f.seek(start)
            data = f.read(step) + data
            if data.rstrip(b"\n").count(b"\n") >= lines:
                break
        lines_in = data.rstrip(b"\n")
        kept = lines_in.split(b"\n")[-lines:]
        body = b"\n".join(kept) + data[len(lines_in):]
        # Started mid-line: the first line kept is only the end of one.
        truncated = len(body) > MAX_CHUNK or (start > 0 and lines_in.count(b"\n") < lines)
        if len(body) > MAX_CHUNK:   # cut at a line start when the lines are too long
            cut = body[-MAX_CHUNK:]
            body = cut[cut.find(b"\n") + 1:] if b"\n" in cut else cut
        return _answer(f, body, st.st_ino, size - len(body), truncated=truncated)


def _chunk(path: Path, ino: int, offset: int, tag: str,
           **flags: bool) -> dict[str, Any] | None:
    """From ``offset`` in ``path`` if it is still file ``ino`` (None if it is not)."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        return None
    with f:
        st = os.fstat(f.fileno())
        if ino and st.st_ino != ino:
            return None
        if st.st_size < offset or _tag(f, offset) != tag:
            # Cut short, or another file under the same inode: start over.
            offset, flags = 0, {**flags, "reset": bool(ino)}
        f.seek(offset)
        data = f.read(MAX_CHUNK)
        more = offset + len(data) < st.st_size
        return _answer(f, data, st.st_ino, offset, **{"more": more, **flags})


def since(path: Path, cursor: str) -> dict[str, Any]:
    """What the log gained after ``cursor``."""
    ino, offset, tag = parse_cursor(cursor)
    same = _chunk(path, ino, offset, tag)
    if same is not None:
        return same
    rotated = _chunk(path.with_name(path.name + ".0"), ino, offset, tag)
    if rotated is not None and not rotated["reset"] and (rotated["text"] or rotated["more"]):
        return {**rotated, "more": True}   # the current file follows
    # The old file is read to its end, or gone: the current file from its start. ``reset``
    # when bytes may have been missed (the cursor's file is no longer to be found).
    lost = ino != 0 and (rotated is None or rotated["reset"])
    fresh = _chunk(path, 0, 0, _EMPTY, reset=lost)
    return fresh if fresh is not None else _answer(None, b"", 0, 0, reset=lost)
