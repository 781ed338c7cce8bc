"""Where the HTTP side listens, and whether it needs a bearer token to be asked anything.

Loopback needs nothing: whoever can reach it is already on this machine. Any other address
serves the fleet's inventory to a network, so it needs a token, read from a file only its
owner can read (a token in a group- or world-readable file is a token for everyone).
"""

from __future__ import annotations

import ipaddress
import os
import stat
from pathlib import Path

from ppec.core.errors import BadInput

DEFAULT_LISTEN = "127.0.0.1:8480"


def split(listen: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[V6]:PORT`` or ``:PORT`` (loopback) as (host, port); port 0 asks
    the kernel for a free one (the start-up log says which)."""
    text = listen.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise BadInput(f"--listen {listen!r}: give HOST:PORT, e.g. {DEFAULT_LISTEN}")
    return host or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False   # a name: it may resolve to anything


def read_token(path: str) -> str:
    """The token in ``path``; refused unless only its owner can read it, and non-empty."""
    file = Path(path)
    try:
        info = file.stat()
    except OSError as e:
        raise BadInput(f"--token-file {path}: {e.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise BadInput(f"--token-file {path}: not a regular file")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise BadInput(f"--token-file {path} is readable by others (mode "
                       f"{stat.S_IMODE(info.st_mode):04o}); chmod 600 {path}")
    if info.st_uid != os.geteuid():
        raise BadInput(f"--token-file {path} belongs to uid {info.st_uid}, not to this "
                       f"process's uid {os.geteuid()}")
    token = file.read_text(errors="replace").strip()
    if len(token) < 16 or any(c.isspace() for c in token):
        raise BadInput(f"--token-file {path}: the token must be one word of at least 16 "
                       f"characters")
    return token


def resolve(listen: str, token_file: str | None) -> tuple[str, int, str | None]:
    """(host, port, token or None) for ``--listen`` and ``--token-file``.

    A non-loopback address without a token file is refused: the service would otherwise
    hand the fleet's inventory to anyone on that network.
    """
    host, port = split(listen)
    token = read_token(token_file) if token_file else None
    if token is None and not is_loopback(host):
        raise BadInput(f"--listen {listen} is not a loopback address: give --token-file FILE "
                       f"(a bearer token, mode 600) or listen on 127.0.0.1")
    return host, port, token


def mode_line(host: str, port: int, token: str | None) -> str:
    """What the service says at start about how it can be reached."""
    where = f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"
    if token is not None:
        return f"HTTP on {where}: bearer token required (Authorization: Bearer …)"
    return f"HTTP on {where}: loopback only, no token"
