"""``ppec-agent proxy``: relay stdin/stdout to the agent's Unix socket.

sshd runs this as the forced command of every operator key, once per SSH session, so it
must start fast: standard library only, no imports from the rest of ppec.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import sys

from ppec.core.paths import AGENT_SOCKET

DEFAULT_SOCKET = AGENT_SOCKET


def _fail(code: str, message: str) -> int:
    line = {"v": 1, "id": None, "ok": False,
            "error": {"code": code, "message": message, "details": {}}}
    os.write(1, json.dumps(line).encode() + b"\n")
    return 1


def run(socket_path: str) -> int:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(socket_path)
    except FileNotFoundError:
        return _fail("AGENT_UNREACHABLE", f"agent not running: no socket at {socket_path}")
    except ConnectionRefusedError:
        return _fail("AGENT_UNREACHABLE",
                     f"agent not running: nothing listens on {socket_path} (stale socket)")
    except OSError as e:
        return _fail("AGENT_UNREACHABLE", f"agent not reachable at {socket_path}: "
                                          f"{e.strerror or e}")
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ, "in")
    sel.register(sock, selectors.EVENT_READ, "sock")
    stdin_open = True
    try:
        while True:
            for key, _ in sel.select():
                if key.data == "in":
                    data = os.read(0, 65536)
                    if not data:
                        # The client is done sending; let the agent finish its replies.
                        sel.unregister(0)
                        stdin_open = False
                        sock.shutdown(socket.SHUT_WR)
                    else:
                        sock.sendall(data)
                else:
                    data = sock.recv(65536)
                    if not data:
                        return 0 if not stdin_open else 1
                    view = memoryview(data)
                    while view:
                        view = view[os.write(1, view):]
    except (BrokenPipeError, ConnectionResetError):
        return 1
    finally:
        sock.close()


USAGE = ("usage: ppec-agent proxy [--socket PATH]\n\n"
         "Relay stdin/stdout to the agent socket (sshd's forced command).\n\n"
         "options:\n"
         "  -h, --help     show this help and exit\n"
         f"  --socket PATH  the agent's socket (default {DEFAULT_SOCKET})\n")


def main(argv: list[str]) -> int:
    path = DEFAULT_SOCKET
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help"):
            sys.stdout.write(USAGE)
            return 0
        if arg == "--socket" and args:
            path = args.pop(0)
        elif arg.startswith("--socket="):
            path = arg.split("=", 1)[1]
        else:
            sys.stderr.write(f"ppec-agent proxy: unexpected argument {arg!r}\n"
                             "usage: ppec-agent proxy [--socket PATH]\n")
            return 2
    return run(path)
