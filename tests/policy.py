"""Maker-checker set-up the operator and agent tests share: three people with real SSH
keys (ssh-keygen), the policy naming them, and running `ppec` as one of them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.realparts import Cli, make_key


def make_people(where: Path) -> dict[str, Path]:
    """alice and bob (role sre) and carol (netops): a real SSH key each."""
    keys = {who: where / f"{who}_ed25519" for who in ("alice", "bob", "carol")}
    for key in keys.values():
        make_key(key)
    return keys


def pub(key: Path) -> str:
    return " ".join(key.with_suffix(".pub").read_text().split()[:2])


def policy_toml(people: dict[str, Path], extra: str = "",
                vm_operations: tuple[str, ...] = ("delete",)) -> str:
    return (f'[operators.alice]\nkey = "{pub(people["alice"])}"\nroles = ["sre"]\n'
            f'[operators.bob]\nkey = "{pub(people["bob"])}"\nroles = ["sre"]\n'
            f'[operators.carol]\nkey = "{pub(people["carol"])}"\nroles = ["netops"]\n'
            f'[approval.vm]\noperations = {json.dumps(list(vm_operations))}\napprovers = ["sre"]\n'
            '[approval.ip]\noperations = ["release", "update"]\napprovers = ["netops"]\n'
            '[approval.disk]\noperations = ["detach"]\napprovers = ["sre"]\n' + extra)


def install_policy(cli: Cli, where: Path, people: dict[str, Path], extra: str = "",
                   vm_operations: tuple[str, ...] = ("delete",)) -> Path:
    """The operator config with the policy (``cli`` uses it), and the approvers file a host
    enforces, exported by ppec itself; returns that file."""
    config = where / "config.toml"
    config.write_text(policy_toml(people, extra, vm_operations))
    cli.env["PPEC_CONFIG"] = str(config)
    approvers = where / "approvers.toml"
    done = cli.ok("config", "export-approvers", str(approvers))
    assert "wrote 3 operators" in done.stdout
    approvers.chmod(0o644)
    return approvers


def as_(cli: Cli, who: Path, *args: str, **env: str) -> object:
    saved = dict(cli.env)
    cli.env.update(env)
    try:
        return cli.run("--identity", str(who), *args)
    finally:
        cli.env = saved
