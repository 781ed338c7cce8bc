"""``python -m ppec.service.http --db STORE --listen ADDR [--token-file F]``: the HTTP side
alone (API, /metrics, UI) over a store, without the jobs; ``ppec serve`` runs both."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

from ppec.core.errors import EXIT_FAILED, EXIT_USAGE, BadInput, PpecError
from ppec.service.http import listen


def parse(argv: list[str] | None) -> argparse.Namespace:
    from ppec.operator.config import default_db
    p = argparse.ArgumentParser(prog="python -m ppec.service.http",
                                description="Serve ppec's read-only API, /metrics and web UI.")
    p.add_argument("--db", default=None, help=f"the store (default {default_db()})")
    p.add_argument("--listen", default=listen.DEFAULT_LISTEN,
                   help="HOST:PORT (default %(default)s); non-loopback needs --token-file")
    p.add_argument("--token-file", default=None,
                   help="a file (mode 600) holding the bearer token clients must send")
    p.add_argument("--fresh-for", type=float, default=30.0,
                   help="seconds a snapshot stays fresh (default %(default)s)")
    args = p.parse_args(argv)
    args.db = args.db or default_db()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                                                   "%(message)s", stream=sys.stderr)
    try:
        host, port, token = listen.resolve(args.listen, args.token_file)
        from ppec.service.http import server
        from ppec.service.http.app import create_app
        handle = server.start(create_app(args.db, token=token, fresh_for=args.fresh_for),
                              host, port)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except PpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_FAILED
    print(listen.mode_line(host, handle.port, token), file=sys.stderr, flush=True)
    done = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not done.wait(1.0):
        if not handle.alive():
            print("error: the HTTP server stopped", file=sys.stderr)
            return EXIT_FAILED
    handle.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
