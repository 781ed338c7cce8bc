"""The operator store: SQLite or PostgreSQL (``backends``), its tables (``tables``) and
records (``records``)."""

from ppec.operator.store.records import Host, VmRow
from ppec.operator.store.tables import HaConflict, Store

__all__ = ["HaConflict", "Host", "Store", "VmRow"]
