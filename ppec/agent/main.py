"""``ppec-agent``: the host agent's entry point.

argparse rather than typer: ``proxy`` runs for every SSH session and must not pay for
importing the CLI stack.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["proxy"]:
        from ppec.agent import proxy
        sys.exit(proxy.main(args[1:]))
    import argparse

    parser = argparse.ArgumentParser(
        prog="ppec-agent", description="ppec host agent: builds and runs VMs through libvirt.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the agent daemon (as root)")
    serve.add_argument("--config", help="agent TOML (default /etc/ppec/agent.toml, "
                                        "else built-in defaults)")
    serve.add_argument("--log-level", default="INFO")
    sub.add_parser("proxy", help="relay stdin/stdout to the agent socket "
                                 "(sshd's forced command)").add_argument("--socket")
    sub.add_parser("default-config", help="print the embedded default configuration")
    sub.add_parser("check-config", help="parse an agent TOML as `serve` would; print its "
                                        "socket as JSON, or the error (exit 2)"
                   ).add_argument("config")
    ns = parser.parse_args(args)
    if ns.command == "check-config":
        return _check_config(ns.config)
    if ns.command == "default-config":
        from importlib.resources import files
        sys.stdout.write(files("ppec.agent").joinpath("default-agent.toml").read_text())
        return 0
    from ppec.agent.daemon import serve as run_serve
    sys.exit(run_serve(ns.config, ns.log_level))


def _check_config(path: str) -> int:
    """For the operator (`ppec host add --install`): the agent's own parser decides."""
    import json
    from pathlib import Path

    from ppec.agent.config import load
    from ppec.core.errors import PpecError
    try:
        config = load(Path(path))
    except PpecError as e:
        sys.stderr.write(f"{e}\n")
        return 2
    sys.stdout.write(json.dumps({"socket": config.socket, "host": config.host}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
