"""Reaching host agents: transports (Unix socket, SSH), the protocol client, fan-out."""
