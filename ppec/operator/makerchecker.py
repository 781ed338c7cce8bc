"""Requests for destructive operations: made, approved or rejected, executed once."""

from __future__ import annotations

import json
import time
from typing import Any

from ppec.core.clock import utc_now
from ppec.core.errors import Conflict, NotFound
from ppec.core.signing import (
    DEFAULT_TTL,
    PURPOSE_APPROVE,
    PURPOSE_REQUEST,
    Approvers,
    Forbidden,
    Signer,
    check_approval,
    check_request,
    digest,
    new_payload,
    sign,
)
from ppec.core.units import check_disk_target
from ppec.operator import audit, ipdb
from ppec.operator.context import Context

# Operations a checker approves but does not run: the maker runs them, once, within the
# request's lifetime (an interactive console: nobody can type into it for the maker).
BY_MAKER = frozenset({"vm.console"})


def approvers(ctx: Context) -> Approvers:
    return Approvers.from_mapping(ctx.config.raw, ctx.config.source)


def needs(ctx: Context, rtype: str, operation: str) -> bool:
    return approvers(ctx).needs(rtype, operation)



def _row(ctx: Context, request_id: int) -> dict[str, Any]:
    with ctx.store.transaction() as db:
        row = db.execute("SELECT id, payload, digest, maker, maker_sig, state, checker, "
                         "checker_sig, note, updated_at FROM requests WHERE id=?",
                         (request_id,)).fetchone()
    if row is None:
        raise NotFound(f"no request {request_id} (see `ppec request list`)")
    keys = ("id", "payload", "digest", "maker", "maker_sig", "state", "checker",
            "checker_sig", "note", "updated_at")
    doc = dict(zip(keys, row, strict=True))
    doc["payload"] = json.loads(doc["payload"])
    return doc


def create(ctx: Context, signer: Signer, operation: str, rtype: str, resource: str,
           host: str = "", params: dict[str, Any] | None = None) -> dict[str, Any]:
    maker, key = signer.whoami(approvers(ctx))
    ttl = float(ctx.config.raw.get("request_ttl", DEFAULT_TTL))
    payload = new_payload(f"{rtype}.{operation}", rtype, resource, maker, params, host, ttl)
    hexdigest = digest(payload)
    with ctx.store.transaction() as db:
        # Writers are serialized, so max + 1 is ours (and portable across backends).
        request_id = int(db.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM requests")
                         .fetchone()[0])
        db.execute("INSERT INTO requests (id, payload, digest, maker, maker_sig, state, "
                   "updated_at) VALUES (?, ?, ?, ?, ?, 'pending', ?)",
                   (request_id, json.dumps(payload, sort_keys=True), hexdigest, maker.name,
                    sign(key, PURPOSE_REQUEST, hexdigest), utc_now()))
        audit.append_in(db, maker.name, "request", request_id,
                        {"operation": payload["operation"], "resource": resource,
                         "host": host, "digest": hexdigest})
    return show(ctx, request_id)


def _hosts(ctx: Context, vm: str, host: str | None) -> tuple[str, str]:
    """(inventory name, agent's own name) of the VM's host. A request binds to the agent's
    name (what the agent checks), asked of it now; the inventory name rides along to find
    the host again at execution."""
    inventory = host or ctx.store.vm(vm).host
    return inventory, str(ctx.client(ctx.store.host(inventory)).call("ping")["host"])


def request_vm_delete(ctx: Context, signer: Signer, name: str,
                      host: str | None = None) -> dict[str, Any]:
    inventory, agent_name = _hosts(ctx, name, host)
    return create(ctx, signer, "delete", "vm", name, host=agent_name,
                  params={"inventory_host": inventory})


def request_vm_migrate(ctx: Context, signer: Signer, ask: Any) -> dict[str, Any]:
    """The approval names the VM and the host it goes to (placement chooses it now when
    ``--to`` was not given): the agent refuses a migration elsewhere."""
    from ppec.operator import migtarget
    inventory, agent_name = _hosts(ctx, ask.name, None)
    target = ask.to
    if not target:
        info = ctx.client(ctx.store.host(inventory)).call("vm.migrate_info", name=ask.name)
        target = migtarget.choose_target(ctx, ctx.store.vm(ask.name), info, "").name
    return create(ctx, signer, "migrate", "vm", ask.name, host=agent_name,
                  params={"inventory_host": inventory, "target": target,
                          "max_downtime_ms": ask.max_downtime_ms,
                          "bandwidth_mib": ask.bandwidth_mib, "timeout": ask.timeout})


def request_disk_detach(ctx: Context, signer: Signer, vm: str, target: str, *,
                        keep_volume: bool, timeout: int,
                        host: str | None = None) -> dict[str, Any]:
    """The approval names VM/target and whether the volume is kept: the agent refuses a
    call that differs."""
    from ppec.operator import disks
    check_disk_target(target)
    inventory, agent_name = _hosts(ctx, vm, host)
    # The volume too: a later disk under the same target name is not what was approved.
    found = [d for d in disks.list_(ctx, vm, inventory)["disks"] if d["target"] == target]
    if not found or found[0]["kind"] != "data":
        raise NotFound(f"VM {vm} has no data disk {target} (see `ppec disk list {vm}`)")
    return create(ctx, signer, "detach", "disk", f"{vm}/{target}", host=agent_name,
                  params={"inventory_host": inventory, "keep_volume": keep_volume,
                          "timeout": timeout, "path": found[0]["path"]})


def request_vm_console(ctx: Context, signer: Signer, name: str,
                       host: str | None = None) -> dict[str, Any]:
    inventory, agent_name = _hosts(ctx, name, host)
    return create(ctx, signer, "console", "vm", name, host=agent_name,
                  params={"inventory_host": inventory})


def request_agent_update(ctx: Context, signer: Signer, compared: Any,
                         allow_downgrade: bool = False) -> dict[str, Any]:
    """One host's update (``compared``: its ``syncer.HostSync``). The approval names the
    host and the exact files (the digest of this ppec's manifest; the agent refuses any
    other set), and the payload lists each changed file with its checksum for the
    checker to see."""
    from ppec.operator.agentsync import Desired
    want = Desired.here()
    agent_name = str(ctx.client(ctx.store.host(compared.host)).call("ping")["host"])
    return create(ctx, signer, "update", "agent", "agent", host=agent_name,
                  params={"inventory_host": compared.host, "version": want.version,
                          "digest": want.digest, "from_version": compared.version,
                          "changed": {n: want.manifest[n] for n in compared.changed},
                          "removed": compared.removed,
                          # The checker sees it (with version and from_version); the
                          # digest is what the agent binds.
                          "allow_downgrade": allow_downgrade})


def show(ctx: Context, request_id: int) -> dict[str, Any]:
    doc = _row(ctx, request_id)
    p = doc["payload"]
    return {"id": doc["id"], "state": doc["state"], "operation": p["operation"],
            "resource": p["resource"],
            "host": p["params"].get("inventory_host", p.get("host", "")),
            "maker": doc["maker"],
            "checker": doc["checker"], "created": p["created"], "expires": p["expires"],
            "digest": doc["digest"], "note": doc["note"], "payload": p}


def list_(ctx: Context, state: str | None = None) -> list[dict[str, Any]]:
    with ctx.store.transaction() as db:
        ids = [r[0] for r in db.execute(
            "SELECT id FROM requests" + (" WHERE state=?" if state else "") + " ORDER BY id",
            (state,) if state else ())]
    return [show(ctx, i) for i in ids]


def _set(ctx: Context, request_id: int, expect: str, state: str,
         entry: tuple[str, str, dict[str, Any]], **fields: str) -> dict[str, Any]:
    """Move a request from ``expect`` to ``state`` and append the audit ``entry`` (actor,
    action, detail) in the same transaction: no change without its record. Returns the
    entry appended."""
    sets = ", ".join([f"{k}=?" for k in fields] + ["state=?", "updated_at=?"])
    with ctx.store.transaction() as db:
        cur = db.execute(f"UPDATE requests SET {sets} WHERE id=? AND state=?",
                         (*fields.values(), state, utc_now(), request_id, expect))
        if cur.rowcount != 1:
            now = db.execute("SELECT state FROM requests WHERE id=?",
                             (request_id,)).fetchone()
            raise Conflict(f"request {request_id} is {now[0] if now else 'gone'}, "
                           f"not {expect}", code="REQUEST_STATE")
        actor, action, detail = entry
        return audit.append_in(db, actor, action, request_id, detail)


def approve(ctx: Context, signer: Signer, request_id: int) -> dict[str, Any]:
    """Sign the request's digest as the checker, after every rule holds; then execute."""
    appr = approvers(ctx)
    checker, key = signer.whoami(appr)
    doc = _row(ctx, request_id)
    if doc["state"] != "pending":
        raise Conflict(f"request {request_id} is {doc['state']}, not pending",
                       code="REQUEST_STATE")
    if digest(doc["payload"]) != doc["digest"]:
        raise Forbidden(f"request {request_id}'s payload no longer matches its digest "
                        f"(edited in the store)")
    if doc["payload"]["operation"] == "agent.update":
        _check_same_files(doc["payload"])   # never sign files you do not have yourself
    checker_sig = sign(key, PURPOSE_APPROVE, doc["digest"])
    try:
        check_approval(appr, doc["payload"], doc["maker_sig"], checker.name, checker_sig)
    except Forbidden as e:
        audit.append(ctx.store, checker.name, "approve-refused", request_id,
                     {"reason": e.message})
        raise
    _set(ctx, request_id, "pending", "approved",
         (checker.name, "approve", {"digest": doc["digest"]}), checker=checker.name,
         checker_sig=checker_sig)
    if doc["payload"]["operation"] in BY_MAKER:
        return show(ctx, request_id)   # approved; the maker runs it (use_approved)
    return execute(ctx, request_id, actor=checker.name)


def _envelope(doc: dict[str, Any], head: dict[str, Any] | None) -> dict[str, Any]:
    envelope: dict[str, Any] = {"payload": doc["payload"], "maker_sig": doc["maker_sig"],
                                "checker": doc["checker"], "checker_sig": doc["checker_sig"]}
    if head is not None:
        envelope["audit"] = {"seq": head["seq"], "hash": head["hash"]}
    return envelope


def mine(ctx: Context, signer: Signer, operation: str, resource: str) -> dict[str, Any] | None:
    """The caller's own unexpired request for ``operation`` on ``resource``: an approved
    one first (to use), else a pending one (still waiting), else None."""
    me, _ = signer.whoami(approvers(ctx))
    now = time.time()
    found = [r for r in list_(ctx) if r["operation"] == operation and r["maker"] == me.name
             and r["resource"] == resource and r["state"] in ("approved", "pending")
             and float(r["expires"]) > now]
    found.sort(key=lambda r: (r["state"] != "approved", -int(r["id"])))
    return found[0] if found else None


def use_approved(ctx: Context, request_id: int, actor: str) -> dict[str, Any]:
    """For an operation the maker runs (BY_MAKER): every rule again, the request marked
    executed (once), and the envelope to send the agent, which spends its nonce. The
    caller records the outcome with ``finish``."""
    doc = _row(ctx, request_id)
    p = doc["payload"]
    check_approval(approvers(ctx), p, doc["maker_sig"], doc["checker"], doc["checker_sig"])
    head = _set(ctx, request_id, "approved", "executed",
                (actor, "execute", {"operation": p["operation"], "resource": p["resource"]}))
    return _envelope(doc, head)


def finish(ctx: Context, request_id: int, actor: str, result: dict[str, Any] | None,
           error: str = "") -> None:
    """The outcome of a request the maker ran: executed, or failed with ``error``."""
    if error:
        with ctx.store.transaction() as db:
            db.execute("UPDATE requests SET state='failed', note=?, updated_at=? WHERE id=?",
                       (error, utc_now(), request_id))
            audit.append_in(db, actor, "failed", request_id, {"error": error})
        return
    audit.append(ctx.store, actor, "executed", request_id, {"result": result})


def execute(ctx: Context, request_id: int, actor: str = "") -> dict[str, Any]:
    """Run an approved request, once: the request is marked executed before it runs."""
    from ppec.operator import disks, lifecycle
    doc = _row(ctx, request_id)
    p = doc["payload"]
    if p["operation"] in BY_MAKER:
        raise Conflict(f"request {request_id} ({p['operation']} {p['resource']}) is run by "
                       f"its maker, {doc['maker']}: `ppec vm console {p['resource']}`",
                       code="REQUEST_STATE")
    # Re-check everything at the moment of execution: expiry, signatures, edits.
    check_approval(approvers(ctx), p, doc["maker_sig"], doc["checker"], doc["checker_sig"])
    head = _set(ctx, request_id, "approved", "executed",
                (actor or doc["checker"], "execute",
                 {"operation": p["operation"], "resource": p["resource"]}))
    # The host keeps the chain head (this execution's own entry) in its ledger: an anchor
    # the store's writer cannot move (auditcheck). Not with an agent update: the agent
    # being replaced may predate the field and would refuse the envelope.
    envelope = _envelope(doc, head if p["operation"] != "agent.update" else None)
    try:
        if p["operation"] == "vm.delete":
            result = lifecycle.delete(ctx, p["resource"], p["params"].get("inventory_host"),
                                approval=envelope)
        elif p["operation"] == "vm.migrate":
            from ppec.operator import migrate
            result = migrate.migrate(ctx, migrate.MoveAsk(
                p["resource"], to=str(p["params"]["target"]),
                max_downtime_ms=int(p["params"]["max_downtime_ms"]),
                bandwidth_mib=int(p["params"].get("bandwidth_mib", 0)),
                timeout=int(p["params"]["timeout"])), approval=envelope)
        elif p["operation"] == "disk.detach":
            vm, _, target = str(p["resource"]).partition("/")
            result = disks.detach(ctx, vm, target, timeout=int(p["params"]["timeout"]),
                                  keep_volume=bool(p["params"]["keep_volume"]),
                                  path=str(p["params"]["path"]),
                                  host=p["params"].get("inventory_host"), approval=envelope)
        elif p["operation"] == "agent.update":
            result = _agent_update(ctx, p, envelope)
        elif p["operation"] == "agent.rollback":
            result = _agent_rollback(ctx, p, envelope)
        elif p["operation"] == "ip.update":
            result = ipdb.update(ctx.store, p["params"]["vrf"], p["resource"],
                                 p["params"]["owner"], expect_owner=p["params"]["from_owner"])
        elif p["operation"] == "ip.release":
            result = ipdb.release(ctx.store, p["params"]["vrf"], p["resource"])
        else:
            raise Forbidden(f"unknown operation {p['operation']!r}")
    except Exception as e:
        with ctx.store.transaction() as db:
            db.execute("UPDATE requests SET state='failed', note=?, updated_at=? WHERE id=?",
                       (str(e), utc_now(), request_id))
            audit.append_in(db, actor or doc["checker"], "failed", request_id,
                            {"error": str(e)})
        raise
    audit.append(ctx.store, actor or doc["checker"], "executed", request_id,
                 {"result": result})
    return {**show(ctx, request_id), "result": result}


def _check_same_files(payload: dict[str, Any]) -> Any:
    """The files this ppec would install must be the ones the request names."""
    from ppec.operator.agentsync import Desired
    want = Desired.here()
    if want.digest != payload["params"]["digest"]:
        raise Conflict(f"this ppec's files ({want.version}, {want.digest[:12]}) are not the "
                       f"ones the request names ({payload['params']['version']}, "
                       f"{payload['params']['digest'][:12]}); approve it from an install "
                       f"of exactly those files, or make a new request",
                       code="UPDATE_MISMATCH")
    return want


def _agent_update(ctx: Context, payload: dict[str, Any],
                  envelope: dict[str, Any]) -> dict[str, Any]:
    from dataclasses import asdict

    from ppec.operator.agentsync import sync_host
    want = _check_same_files(payload)
    host = ctx.store.host(payload["params"]["inventory_host"])
    return asdict(sync_host(ctx, host, want, approval=envelope,
                            allow_downgrade=bool(payload["params"].get("allow_downgrade"))))


def _agent_rollback(ctx: Context, payload: dict[str, Any],
                    envelope: dict[str, Any]) -> dict[str, Any]:
    from dataclasses import asdict

    from ppec.operator.agentsync import rollback_host
    params = payload["params"]
    host = ctx.store.host(params["inventory_host"])
    return asdict(rollback_host(ctx, host, approval=envelope,
                                expect=(str(params["to"]), str(params["current"]))))


def reject(ctx: Context, signer: Signer, request_id: int, reason: str) -> dict[str, Any]:
    who, _ = signer.whoami(approvers(ctx))
    doc = _row(ctx, request_id)
    check_request(approvers(ctx), doc["payload"], doc["maker_sig"])
    if who.name == doc["maker"]:
        raise Forbidden("the maker cancels (`ppec request cancel`), a checker rejects")
    _set(ctx, request_id, "pending", "rejected", (who.name, "reject", {"reason": reason}),
         checker=who.name, note=reason)
    return show(ctx, request_id)


def cancel(ctx: Context, signer: Signer, request_id: int) -> dict[str, Any]:
    who, _ = signer.whoami(approvers(ctx))
    doc = _row(ctx, request_id)
    if who.name != doc["maker"]:
        raise Forbidden(f"only {doc['maker']}, who made request {request_id}, may cancel it")
    _set(ctx, request_id, "pending", "cancelled", (who.name, "cancel", {}))
    return show(ctx, request_id)
