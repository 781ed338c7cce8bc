"""The host side of ppec: the agent daemon, the SSH proxy and the syncer.

Kept free of imports so that ``ppec-agent proxy`` (run by sshd for every operator
command) starts on the standard library alone.
"""
