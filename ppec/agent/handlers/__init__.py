"""The agent's handler objects, by the names the method table uses.

``ppec.wire.methods`` is pure data (the CLI imports it); each of its entries names its
handler as ``"object.method"`` (``"vms.create"``), and ``Handlers.resolve`` finds it here,
like Ganeti's node daemon table over its backend functions. Every public method of a
handler object serves exactly one entry of the table (a test holds both directions).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ppec.agent import recovery
from ppec.agent.context import AgentContext
from ppec.agent.handlers.audit import AuditHandlers
from ppec.agent.handlers.console import ConsoleHandlers
from ppec.agent.handlers.disks import DiskHandlers
from ppec.agent.handlers.drift import DriftHandlers
from ppec.agent.handlers.host import HostHandlers
from ppec.agent.handlers.images import ImageHandlers
from ppec.agent.handlers.migrate import MigrateHandlers
from ppec.agent.handlers.stats import StatsHandlers
from ppec.agent.handlers.update import UpdateHandlers
from ppec.agent.handlers.vms import VmHandlers
from ppec.agent.vmops import VmOps
from ppec.agent.volumes import Volumes

Handler = Callable[..., dict[str, Any]]


class Handlers:
    def __init__(self, ctx: AgentContext) -> None:
        self.ctx = ctx
        volumes = Volumes(ctx)
        self.ops = VmOps(ctx, volumes)
        vms = VmHandlers(ctx, self.ops)
        self.drift = DriftHandlers(ctx, self.ops)
        self.objects: dict[str, object] = {
            "host": HostHandlers(ctx, vms),
            "vms": vms,
            "disks": DiskHandlers(ctx, volumes),
            "drift": self.drift,
            "update": UpdateHandlers(ctx),
            "audit": AuditHandlers(ctx),
            "console": ConsoleHandlers(ctx),
            "stats": StatsHandlers(ctx, vms),
            "images": ImageHandlers(ctx),
            "migrate": MigrateHandlers(ctx, self.ops),
        }

    def resolve(self, ref: str) -> Handler:
        """The bound method named ``"object.method"``; KeyError for a name not served."""
        obj_name, _, method = ref.partition(".")
        obj = self.objects.get(obj_name)
        if obj is None or not method or method.startswith("_") \
                or method not in vars(type(obj)):
            raise KeyError(f"no handler {ref!r}")
        handler: Handler = getattr(obj, method)
        return handler

    def served(self) -> set[str]:
        """Every ``"object.method"`` the handler objects offer."""
        return {f"{name}.{attr}" for name, obj in self.objects.items()
                for attr, value in vars(type(obj)).items()
                if not attr.startswith("_") and callable(value)}

    def recover(self) -> list[str]:
        """Start-up recovery (not a method on the wire)."""
        return recovery.recover(self.ctx, self.ops)
