"""The operator store: SQLite or PostgreSQL (``backends``), its tables (``tables``)."""

from ppec.operator.store.tables import HaConflict, Host, Store, VmRow

__all__ = ["HaConflict", "Host", "Store", "VmRow"]
