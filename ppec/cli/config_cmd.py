"""``ppec config``: the effective operator configuration."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer

from ppec.cli import output
from ppec.cli.common import OutputOpt, Run, command
from ppec.cli.output import Fmt
from ppec.operator import config as ppec_config

app = typer.Typer(help="Operator configuration: show the effective values.",
                  no_args_is_help=True)


@app.command("show")
@command
def show(run: Run, fmt: OutputOpt = Fmt.table) -> None:
    """Print the effective configuration: embedded defaults merged with your file."""
    cfg = ppec_config.load()
    policy = cfg.placement_policy()
    doc = {"source": cfg.source, "config_path": str(ppec_config.config_path()),
           "db": run.state.db or ppec_config.default_db(),
           "known_hosts": str(ppec_config.known_hosts_path()),
           "ssh": {"connect_timeout": cfg.connect_timeout, "command": cfg.ssh_command},
           "placement": {**asdict(policy), "fresh_for": cfg.fresh_for},
           "flavors": {n: f._asdict() for n, f in sorted(cfg.flavors.items())}}
    if fmt is Fmt.json:
        output.emit_json(doc)
        return
    import tomli_w
    typer.echo(f"# effective configuration (from {cfg.source})")
    typer.echo(tomli_w.dumps(doc))


@app.command("export-approvers")
@command
def export_approvers(run: Run, path: Path, fmt: OutputOpt = Fmt.table) -> None:
    """Write the operators, keys, roles and approval policy for the hosts' agents.

    Install it on each host as /etc/ppec/approvers.toml, owned by root, mode 0644: the
    agent then refuses approval-bound operations that lack a valid, unused approval."""
    import tomli_w

    from ppec.core.signing import Approvers
    cfg = ppec_config.load()
    appr = Approvers.from_mapping(cfg.raw, cfg.source)
    path.write_text(tomli_w.dumps(appr.to_toml_mapping()))
    output.emit_record(fmt, {"path": str(path), "operators": len(appr.operators),
                             "rules": sorted(appr.rules)},
                       message=f"wrote {len(appr.operators)} operators to {path}")
