"""The tree's import rules (docs/design.md, "Layout"), read from the source with ast.

Each top-level package of ppec may import only the packages listed for it. The agent in
particular never imports operator, CLI or service code: it runs alone on every host.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "ppec"

# package -> the ppec packages it may import (itself always), and the third-party
# distributions it may import (anywhere in the module, lazily included).
RULES: dict[str, tuple[set[str], set[str]]] = {
    "core": (set(), {"paramiko"}),                  # paramiko: SSH signatures, lazily
    "wire": ({"core"}, set()),
    "numa": ({"core"}, set()),
    "placement": ({"core", "numa"}, {"numpy"}),
    "agent": ({"core", "wire", "numa"}, {"libvirt", "psutil", "filelock", "paramiko"}),
    "operator": ({"core", "wire", "numa", "placement"},
                 {"paramiko", "psycopg", "filelock", "tomli_w", "numpy"}),
    "service": ({"core", "wire", "numa", "placement", "operator"},
                {"fastapi", "uvicorn", "jinja2", "starlette", "pydantic", "paramiko",
                 "psycopg", "filelock", "prometheus_client", "anyio"}),
    "cli": ({"core", "wire", "numa", "placement", "operator", "service"},
            {"typer", "rich", "click", "tomli_w"}),
}
TOP_MODULES = {"__init__"}   # ppec/__init__.py: the version only


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in the file, nested ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "ppec":
                found += [(node.lineno, f"ppec.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def package_of(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def violations(root: Path = ROOT) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        package = package_of(path, root)
        if package in TOP_MODULES:
            continue
        assert package in RULES, f"{path}: package {package!r} has no import rule"
        allowed_ppec, allowed_third = RULES[package]
        for line, module in imports(path):
            top, _, rest = module.partition(".")
            where = f"{path.relative_to(root.parent)}:{line}"
            if top == "ppec":
                target = rest.split(".")[0]
                if target in ("", "__version__") or target in TOP_MODULES:   # the version
                    continue
                if target != package and target not in allowed_ppec:
                    bad.append(f"{where}: {package} imports ppec.{rest}")
            elif top not in sys.stdlib_module_names and top not in allowed_third:
                bad.append(f"{where}: {package} imports third-party {module}")
    return bad


def test_every_package_keeps_to_its_imports() -> None:
    assert violations() == []


def test_the_agent_imports_no_operator_code() -> None:
    # The rule above says so too; this names the property on its own, so a change to RULES
    # that lets the agent reach the operator side fails here by name.
    assert not RULES["agent"][0] & {"operator", "cli", "service", "placement"}
    agent_files = sorted((ROOT / "agent").rglob("*.py"))
    assert agent_files
    for path in agent_files:
        for line, module in imports(path):
            assert not module.startswith(("ppec.operator", "ppec.cli", "ppec.service")), \
                f"{path}:{line} imports {module}"


@pytest.mark.parametrize("rule", sorted(RULES))
def test_the_rules_catch_a_forbidden_import(rule: str, tmp_path: Path) -> None:
    """The checker itself: a nested import of what the package may not use is reported,
    and so is an unlisted third-party module."""
    forbidden = next(p for p in ("cli", "agent", "operator") if p != rule
                     and p not in RULES[rule][0])
    probe = tmp_path / "ppec" / rule / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(f"def f():\n    from ppec.{forbidden} import x\n    import requests\n")
    assert violations(tmp_path / "ppec") == [
        f"ppec/{rule}/probe.py:2: {rule} imports ppec.{forbidden}",
        f"ppec/{rule}/probe.py:3: {rule} imports third-party requests"]
