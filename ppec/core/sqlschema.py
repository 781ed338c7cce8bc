"""Schema migrations: one runner for the host's ledger and the operator's store.

A schema is a list of scripts; script N (1-based) takes the database from version N-1 to
N. The runner reads the version, refuses a database newer than the code (it would write
rows an older schema does not describe), and applies the missing scripts in order,
setting the version after each. Run it inside the caller's transaction: a failed script
then leaves the database at the version it had.

Where the version lives is the caller's: SQLite's ``PRAGMA user_version`` (``Pragma``), a
table, anything, through a ``schema_version()``/``set_schema_version()`` pair on the
connection or two callbacks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ppec.core.errors import BadInput


class SchemaTooNew(BadInput):
    """The database was written by a newer ppec: refused, never downgraded. Bad input (exit
    2) for the CLI, whose --db named it; the agent daemon logs it and exits 1."""

    code = "SCHEMA_TOO_NEW"


class Executes(Protocol):
    def execute(self, sql: str, /) -> Any: ...


class Pragma:
    """SQLite's ``user_version`` as the schema version, for a plain ``sqlite3`` connection."""

    def __init__(self, db: Executes) -> None:
        self.db = db

    def execute(self, sql: str, /) -> Any:
        return self.db.execute(sql)

    def schema_version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def set_schema_version(self, version: int) -> None:
        self.db.execute(f"PRAGMA user_version={int(version)}")


def statements(script: str) -> list[str]:
    """A script's statements (split on ';': migrations hold no ';' inside literals)."""
    return [s for s in script.split(";") if s.strip()]


def migrate(db: Executes, migrations: Sequence[str], *, what: str, program: str = "ppec",
            ddl: Callable[[str], str] = lambda statement: statement,
            get_version: Callable[[], int] | None = None,
            set_version: Callable[[int], None] | None = None) -> int:
    """Bring ``db`` up to ``len(migrations)``; returns the version it was at.

    ``db`` needs ``execute(sql)``, and ``schema_version()``/``set_schema_version(n)``
    unless ``get_version``/``set_version`` are given. ``ddl`` rewrites each statement for
    the dialect (e.g. REAL -> DOUBLE PRECISION). ``what`` names the database in the error
    ("store /var/lib/ppec/ppec.db"), ``program`` the code that should be upgraded.
    """
    get = get_version or getattr(db, "schema_version", None)
    put = set_version or getattr(db, "set_schema_version", None)
    if get is None or put is None:
        raise TypeError("migrate() needs schema_version()/set_schema_version() on the "
                        "connection, or get_version/set_version")
    version = int(get())
    if version > len(migrations):
        raise SchemaTooNew(f"{what} has schema {version}, newer than this {program} "
                           f"(knows {len(migrations)}); upgrade {program}",
                           details={"version": version, "known": len(migrations)})
    for number, script in enumerate(migrations[version:], start=version + 1):
        for statement in statements(script):
            db.execute(ddl(statement))
        put(number)
    return version
