"""Drift: each agent compares its ledger with libvirt (``drift.check``); the store keeps
fleet-wide alerts with first/last seen and resolution; changes go to the notifiers."""

from __future__ import annotations

from ppec.operator.store import Host
from ppec.service.jobs import Env, Outcome, alerting_hosts, sync_and_notify
from ppec.service.settings import Settings


class Drift:
    name = "drift"

    def interval(self, settings: Settings) -> float:
        return settings.drift_interval

    def round(self, env: Env, hosts: list[Host], now: float) -> Outcome:
        out = Outcome(asked=len(hosts))
        open_on = alerting_hosts(env.store, "drift")
        for r in env.pool.ask(hosts, "drift.check", env.stop, lane="checks"):
            if not r.ok:
                out.failed.append(r.host)
                continue
            out.answered += 1
            found = [(str(a["code"]), str(a["object"]), str(a.get("detail", "")))
                     for a in r.value.get("alerts", [])]
            if found or r.host in open_on:
                sync_and_notify(env, r.host, "drift", found, now)
        return out
