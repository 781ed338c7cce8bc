"""``ppec config``: the effective operator configuration."""

from __future__ import annotations

from dataclasses import asdict

import typer

from ppec import config as ppec_config
from ppec.cli import output
from ppec.cli.output import Fmt, OutputOpt

app = typer.Typer(help="Operator configuration: show the effective values.",
                  no_args_is_help=True)


@app.command("show")
def show(fmt: OutputOpt = Fmt.table) -> None:
    """Print the effective configuration: embedded defaults merged with your file."""
    output.use(fmt)
    cfg = ppec_config.load()
    policy = cfg.placement_policy()
    doc = {"source": cfg.source, "config_path": str(ppec_config.config_path()),
           "db": ppec_config.default_db(), "known_hosts": str(ppec_config.known_hosts_path()),
           "ssh": {"connect_timeout": cfg.connect_timeout, "command": cfg.ssh_command},
           "placement": asdict(policy),
           "flavors": {n: asdict(f) for n, f in sorted(cfg.flavors.items())}}
    if fmt is Fmt.json:
        output.emit_json(doc)
        return
    import tomli_w
    typer.echo(f"# effective configuration (from {cfg.source})")
    typer.echo(tomli_w.dumps(doc))
