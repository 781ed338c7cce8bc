"""Default locations both sides agree on (the operator's inventory, the agent's config)."""

AGENT_SOCKET = "/run/ppec/agent.sock"
