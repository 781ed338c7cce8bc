"""Drift: each agent compares its ledger with libvirt (``drift.check``); the store keeps
fleet-wide alerts with first/last seen and resolution; changes go to the notifiers."""

from __future__ import annotations

from typing import Any

from ppec.operator.store import Host
from ppec.service.jobs import Env, Outcome, alert_round
from ppec.service.settings import Settings


class Drift:
    name = "drift"

    def interval(self, settings: Settings) -> float:
        return settings.drift_interval

    def round(self, env: Env, hosts: list[Host], now: float) -> Outcome:
        return alert_round(env, hosts, now, method="drift.check", source="drift",
                           findings=_alerts)


def _alerts(answer: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(str(a["code"]), str(a["object"]), str(a.get("detail", "")))
            for a in answer.get("alerts", [])]
