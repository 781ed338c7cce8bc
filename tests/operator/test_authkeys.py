"""authorized_keys edits: one ppec line per operator key, everything else byte for byte."""

from __future__ import annotations

import pytest

from ppec.core.errors import BadInput
from ppec.operator.bootstrap import authkeys

OP = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOperatorOperatorOperatorOperatorOperator00"
OTHER = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherOtherOtherOtherOtherOtherOtherOther00 bob"
NEW = authkeys.forced_line("/opt/ppec/bin/ppec-agent", "/run/ppec/agent.sock", OP)


def test_the_line_runs_only_the_proxy() -> None:
    assert ('restrict,command="/opt/ppec/bin/ppec-agent proxy --socket '
                   f'/run/ppec/agent.sock" {OP} ppec-operator') == NEW
    assert authkeys.key_blob(NEW) == OP.split()[1]


def test_added_once_and_others_kept() -> None:
    text = f"# ops\n{OTHER}\nfrom=\"10.0.0.1\",no-pty {OTHER}\nnot a key line at all\n"
    once = authkeys.with_line(text, NEW)
    assert once == text + NEW + "\n"
    assert authkeys.with_line(once, NEW) == once   # a rerun changes nothing


def test_an_old_ppec_line_is_replaced_where_it_was() -> None:
    old = f'restrict,command="/old/bin/ppec-agent proxy" {OP} x'
    text = f"{OTHER}\n{old}\n# end\n"
    assert authkeys.with_line(text, NEW) == f"{OTHER}\n{NEW}\n# end\n"
    dup = f"{old}\n{OTHER}\n{old}\n"
    assert authkeys.with_line(dup, NEW) == f"{NEW}\n{OTHER}\n"


def test_the_operator_key_without_the_proxy_is_refused() -> None:
    for line in (OP, f"no-pty {OP}", f'command="/bin/sh" {OP}'):
        with pytest.raises(BadInput, match="line 2"):
            authkeys.with_line(f"{OTHER}\n{line}\n", NEW)


def test_removal_takes_only_ppec_lines_for_that_key() -> None:
    text = f"{OTHER}\n{NEW}\n# end\n"
    assert authkeys.without(text, OP.split()[1]) == f"{OTHER}\n# end\n"
    assert authkeys.without(f"{OTHER}\n", OP.split()[1]) == f"{OTHER}\n"


def test_unreadable_lines_are_nobodys() -> None:
    assert authkeys.key_blob('command="unbalanced ssh-ed25519 AAAA') is None
    assert authkeys.key_blob("   ") is None
    assert authkeys.key_blob("# ssh-ed25519 AAAA") is None
