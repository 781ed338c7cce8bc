"""Agent files: each agent's manifest against this ppec's own files, as ``ppec agent
sync`` compares them. Another version is AGENT_OUTDATED; the same version with other
files is AGENT_FILES_CHANGED (someone edited the agent on the host)."""

from __future__ import annotations

from typing import Any

from ppec.operator.agentsync import Desired
from ppec.operator.store import Host
from ppec.service.jobs import Env, Outcome, alert_round
from ppec.service.settings import Settings

OBJECT = "ppec-agent"


def findings(want: Desired, theirs: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(code, object, detail) for one agent's ``agent.manifest`` answer."""
    version, digest = str(theirs.get("version", "")), str(theirs.get("digest", ""))
    if version != want.version:
        return [("AGENT_OUTDATED", OBJECT, f"the agent runs ppec {version}, this ppec is "
                                           f"{want.version} (`ppec agent sync`)")]
    if digest != want.digest:
        files = theirs.get("files", {})
        files = files if isinstance(files, dict) else {}
        changed = sorted(n for n, sha in want.manifest.items() if files.get(n) != sha)
        extra = sorted(n for n in files if n not in want.manifest)
        names = ", ".join([*changed, *(f"+{n}" for n in extra)][:10])
        return [("AGENT_FILES_CHANGED", OBJECT,
                 f"ppec {version} with other files (digest {digest[:12]}, expected "
                 f"{want.digest[:12]}): {names}")]
    return []


class AgentFiles:
    name = "agent_files"

    def __init__(self, want: Desired | None = None) -> None:
        self.want = want or Desired.here()

    def interval(self, settings: Settings) -> float:
        return settings.agent_check_interval

    def round(self, env: Env, hosts: list[Host], now: float) -> Outcome:
        return alert_round(env, hosts, now, method="agent.manifest", source="agent",
                           findings=lambda answer: findings(self.want, answer))
