"""Snapshots: ``host.snapshot`` from every due host over its warm connection; the
answers (and the failures, with their back-off) written in batches."""

from __future__ import annotations

from ppec.operator.store import Host
from ppec.operator.store import fleetstate as fs
from ppec.service.jobs import Env, Outcome
from ppec.service.settings import Settings


class Snapshots:
    name = "snapshots"

    def interval(self, settings: Settings) -> float:
        return settings.snapshot_interval

    def round(self, env: Env, hosts: list[Host], now: float) -> Outcome:
        before = fs.host_statuses(env.store)
        ok: list[fs.Success] = []
        failed: list[fs.Failure] = []
        out = Outcome(asked=len(hosts))

        def flush() -> None:
            if ok or failed:
                fs.record_round(env.store, ok, failed, now,
                                backoff_base=env.settings.backoff_base,
                                backoff_cap=env.settings.backoff_cap)
            ok.clear()
            failed.clear()

        for r in env.pool.ask(hosts, "host.snapshot", env.stop):
            was = before.get(r.host)
            if r.ok:
                out.answered += 1
                ok.append(fs.Success(r.host, float(r.value["taken_at"]), dict(r.value)))
                if was is not None and was.state == "failed":
                    env.log.info("host_recovered", host=r.host, after_failures=was.failures)
            else:
                assert r.error is not None
                failed.append(fs.Failure(r.host, r.error.code, r.error.message))
                out.failed.append(r.host)
                if was is None or was.state == "ok":
                    env.log.warning("host_failed", host=r.host, code=r.error.code,
                                    error=r.error.message)
            if len(ok) + len(failed) >= env.settings.batch:
                flush()
        flush()
        return out
