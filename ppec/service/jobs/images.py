"""Images: the newest version of each image named in ``[images] everywhere``, on every
host that lacks it, pushed over the agent's own channel (``imagepush.push``).

A host lacks an image when neither the catalogue's record of pushes nor its latest
snapshot says it holds it (``ppec.service.imagewhere``): a host that has every image
costs no connection. The pushes run on the shared pool's workers, at most
``image_pushes`` at once (so snapshot rounds keep the other workers), one host's images
one after the other. The job's thread records each success in the catalogue
(``image_hosts``; ``push`` itself touches no store). A failed push is an alert
(IMAGE_PUSH_FAILED on that host, object ``NAME@DIGEST12``) that resolves when a later
round finds the image there or pushes it.
Alerts about the list itself (a name the catalogue lacks, an image file gone from this
machine) are the fleet's, not a host's: their host is "".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ppec.core.errors import PpecError
from ppec.operator import config as ppec_config
from ppec.operator import imagepush, images
from ppec.operator.context import Context
from ppec.operator.fleet.client import AgentClient, Reach
from ppec.operator.store import Host, Store
from ppec.service.imagewhere import held, recorded_epoch
from ppec.service.jobs import Env, Outcome, alerting_hosts, sync_and_notify
from ppec.service.settings import Settings

SOURCE = "images"
FLEET = ""            # the host of alerts that are no one host's
Finding = tuple[str, str, str]   # (code, object, detail)
# imagepush.push's shape: the seam the tests replace.
Push = Callable[[Context, Host, images.Image], dict[str, Any]]


def label(image: images.Image) -> str:
    """How alerts and logs name one version: ``debian12@1a2b3c4d5e6f``."""
    return f"{image.name}@{image.digest[:12]}"


class Stopping(PpecError):
    code = "STOPPING"


class Images:
    name = "images"

    def __init__(self, wanted: Sequence[str], push: Push | None = None) -> None:
        self.wanted = tuple(wanted)
        self.push: Push = push or imagepush.push

    def interval(self, settings: Settings) -> float:
        return settings.images_interval

    def round(self, env: Env, hosts: list[Host], now: float) -> Outcome:
        open_on = alerting_hosts(env.store, SOURCE)
        targets = self._targets(env, now, FLEET in open_on)
        plan = lacking(env.store, [h for h in hosts if not h.drained], targets)
        out = Outcome(asked=len(plan))
        todo = [h for h in hosts if h.name in plan]
        at_once = min(env.settings.image_pushes, env.settings.workers)
        for r in env.pool.map(todo, lambda h: self._push_host(env, h, plan[h.name]),
                              env.stop, at_once):
            have, found = r.value if r.ok else ([], [
                ("IMAGE_PUSH_FAILED", label(i), f"{r.error.code}: {r.error.message}"
                 if r.error else "failed") for i in plan[r.host]])
            for digest in have:
                images.record_host(env.store, digest, r.host)
            if found:
                out.failed.append(r.host)
            else:
                out.answered += 1
            if found or r.host in open_on:
                sync_and_notify(env, r.host, SOURCE, found, now)
        if not env.stop.is_set():
            # Hosts that lack nothing now (or are drained) have no push left to fail.
            for h in hosts:
                if h.name not in plan and h.name in open_on:
                    sync_and_notify(env, h.name, SOURCE, [], now)
        return out

    def _targets(self, env: Env, now: float, fleet_alerts: bool) -> list[images.Image]:
        """The newest version of each wanted name that can be pushed; the rest become
        the fleet's alerts (IMAGE_UNKNOWN, IMAGE_SOURCE)."""
        newest: dict[str, images.Image] = {}
        for version in images.versions(env.store):
            newest.setdefault(version.name, version)
        found: list[Finding] = []
        out = []
        for name in self.wanted:
            image = newest.get(name)
            if image is None:
                found.append(("IMAGE_UNKNOWN", name,
                              f"[images] everywhere names {name}, which the catalogue does "
                              f"not have (ppec image add {name} FILE)"))
                continue
            source = Path(image.source)
            if not source.is_file() or source.stat().st_size != image.file_bytes:
                found.append(("IMAGE_SOURCE", label(image),
                              f"{source} is gone or changed size since `ppec image add`: "
                              f"nothing to push from (add it again)"))
                continue
            out.append(image)
        if found or fleet_alerts:
            sync_and_notify(env, FLEET, SOURCE, found, now)
        return out

    def _push_host(self, env: Env, host: Host, todo: list[images.Image]
                   ) -> tuple[list[str], list[Finding]]:
        """On a pool worker: ``todo`` onto ``host``, one after the other, each over a
        connection of its own (a push takes the stream over). Returns the digests the host
        now holds and the failures. Touches no store: the job thread records them."""
        clients: list[AgentClient] = []

        def connect(h: Host, _reach: Reach) -> AgentClient:
            clients.append(env.pool.fresh_client(h))
            return clients[-1]

        # The job thread's store rides along unused: push touches no store.
        ctx = Context(env.store, ppec_config.Config(), env.settings.reach(), connect=connect)
        have: list[str] = []
        found: list[Finding] = []
        try:
            for image in todo:
                if env.stop.is_set():
                    raise Stopping("the service is stopping")
                try:
                    done = self.push(ctx, host, image)
                except (PpecError, OSError) as e:   # OSError: the file, read as it is sent
                    code, message = (e.code, e.message) if isinstance(e, PpecError) else (
                        "IMAGE_SOURCE", f"{type(e).__name__}: {e}")
                    found.append(("IMAGE_PUSH_FAILED", label(image), f"{code}: {message}"))
                    env.log.warning("image_push_failed", host=host.name, image=label(image),
                                    code=code, error=message)
                    continue
                have.append(image.digest)
                env.log.info("image_pushed", host=host.name, image=label(image),
                             state=done.get("state"), sent=done.get("sent"),
                             seconds=done.get("seconds"))
        finally:
            for client in clients:
                client.close()
        return have, found


def lacking(store: Store, hosts: list[Host], targets: list[images.Image]
            ) -> dict[str, list[images.Image]]:
    """host -> the images of ``targets`` it does not hold (hosts lacking none left out)."""
    if not hosts or not targets:
        return {}
    digests = sorted({i.digest for i in targets})
    recorded = _recorded(store, digests)
    seen = _seen(store, digests)
    plan: dict[str, list[images.Image]] = {}
    for h in hosts:
        taken_at, listed, present = seen.get(h.name, (None, False, frozenset()))
        miss = [i for i in targets
                if not held(recorded.get((i.digest, h.name)), taken_at,
                            (i.digest in present) if listed else None)]
        if miss:
            plan[h.name] = miss
    return plan


def _recorded(store: Store, digests: list[str]) -> dict[tuple[str, str], float | None]:
    """(digest, host) -> when a push of it was recorded (image_hosts)."""
    marks = ",".join("?" * len(digests))
    rows = store.db.execute(f"SELECT digest, host, at FROM image_hosts WHERE digest IN "
                            f"({marks})", digests).fetchall()
    return {(str(d), str(h)): recorded_epoch(at) for d, h, at in rows}


def _seen(store: Store, digests: list[str]
          ) -> dict[str, tuple[float, bool, frozenset[str]]]:
    """host -> (taken_at, whether its snapshot lists images, the digests it names).

    The store searches the snapshots' text for each digest, so a round over 10,000 hosts
    neither reads nor parses their JSON. A digest named elsewhere in a snapshot (a VM's
    disk backed by it) is held there too: the agent refuses to remove an image in use."""
    find = "strpos" if store.db.dialect == "postgresql" else "instr"
    probes = ['"images"', *digests]
    columns = ", ".join(f"{find}(data, ?) > 0" for _ in probes)
    rows = store.db.execute(f"SELECT host, taken_at, {columns} FROM snapshots",
                            probes).fetchall()
    return {str(r[0]): (float(r[1]), bool(r[2]),
                        frozenset(d for d, hit in zip(digests, r[3:], strict=True) if hit))
            for r in rows}
