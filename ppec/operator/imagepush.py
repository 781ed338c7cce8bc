"""Pushing a catalogue image to hosts over the agent's own channel (issue 25).

The forced command stays `ppec-agent proxy`: no scp, no SFTP. ``image.status`` says what
the host has (the image, or how many bytes of a transfer that broke off); ``image.upload``
switches the connection to a byte stream of the rest, from that offset; the host hashes
the whole file and renames it into place only when the SHA-256 matches, then answers one
protocol line. A re-run after a dropped connection resumes from the host's offset.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ppec.core.errors import BadInput, PpecError, ProtocolError, TransportError, from_wire
from ppec.operator import images
from ppec.operator.context import Context
from ppec.operator.fleet.client import AgentClient
from ppec.operator.fleet.transport import Stream
from ppec.operator.store import Host
from ppec.wire import protocol

CHUNK = 1 << 20
# The host hashes the whole image before it answers: a GiB takes seconds, a disk-sized
# image longer. Wait this long for that last line.
VERIFY_TIMEOUT = 1800.0
SEND_TIMEOUT = 120.0
BUSY_WAIT = 30.0

Progress = Callable[[str, int, int], None]    # host, bytes on the host so far, total


def push(ctx: Context, host: Host, image: images.Image,
         progress: Progress | None = None) -> dict[str, Any]:
    """``image`` onto ``host``: a no-op when it is there, else the rest of it from the
    host's offset. Returns {host, digest, state: present|pushed, sent, seconds, path}.
    Touches no store (pushes run in threads; the store's connection is the caller's
    thread's): the caller records the host with ``images.record_host``."""
    source = Path(image.source)
    if not source.is_file() or source.stat().st_size != image.file_bytes:
        raise BadInput(f"{source} (image {image.name}) is gone or changed size since "
                       f"`ppec image add`; add it again", code="IMAGE_SOURCE")
    client = ctx.client(host)
    started = time.monotonic()
    try:
        status, answer = _begin(client, image)
        if answer.get("have"):   # there already, or another push finished meanwhile
            return _result(host, image, "present", 0, started,
                           str(answer.get("path") or status.get("path", "")))
        if answer.get("stream") != "image":
            raise ProtocolError(f"{host.name}: the agent did not switch to an image stream")
        offset = int(answer["offset"])
        stream, early = client.take_stream()
        try:
            _send_file(stream, source, offset, image.file_bytes,
                       lambda done: progress(host.name, done, image.file_bytes)
                       if progress else None)
            result = _final_reply(stream, early, host.name)
        finally:
            stream.close()
    finally:
        client.close()
    return _result(host, image, "pushed", image.file_bytes - offset, started,
                   str(result.get("path", "")))


def _begin(client: AgentClient, image: images.Image) -> tuple[dict[str, Any], dict[str, Any]]:
    """The host's offset, then the upload from it. A transfer that just broke off may hold
    the host's lock for that image a moment longer (it is still writing what arrived):
    UPLOAD_BUSY is asked again for a while, each time from the offset the host has now."""
    deadline = time.monotonic() + BUSY_WAIT
    while True:
        status = dict(client.call("image.status", digest=image.digest))
        if status.get("have"):
            return status, status
        try:
            return status, dict(client.call("image.upload", digest=image.digest,
                                            size=image.file_bytes,
                                            offset=int(status.get("partial") or 0)))
        except PpecError as e:
            if e.code != "UPLOAD_BUSY" or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _result(host: Host, image: images.Image, state: str, sent: int, started: float,
            path: str) -> dict[str, Any]:
    return {"host": host.name, "image": image.name, "digest": image.digest, "state": state,
            "sent": sent, "seconds": round(time.monotonic() - started, 3), "path": path}


def _send_file(stream: Stream, source: Path, offset: int, size: int,
               progress: Callable[[int], object]) -> None:
    with source.open("rb") as f:
        f.seek(offset)
        done = offset
        while done < size:
            block = f.read(min(CHUNK, size - done))
            if not block:
                raise BadInput(f"{source} ended at {done} bytes, before its {size}",
                               code="IMAGE_SOURCE")
            stream.send(block, SEND_TIMEOUT)
            done += len(block)
            progress(done)


def _final_reply(stream: Stream, early: bytes, where: str) -> dict[str, Any]:
    """The host's one line after the bytes: the image's path, or why it refused it."""
    buf = early
    while b"\n" not in buf:
        chunk = stream.recv(VERIFY_TIMEOUT)
        if not chunk:
            raise TransportError(f"{where}: the agent closed the connection before "
                                 f"confirming the image", code="AGENT_UNREACHABLE")
        buf += chunk
    reply = protocol.decode(buf.partition(b"\n")[0])
    if reply.get("ok") is True and isinstance(reply.get("result"), dict):
        return dict(reply["result"])
    error = reply.get("error")
    raise from_wire(error if isinstance(error, dict) else {}, host=where)
