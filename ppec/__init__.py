"""ppec: run a fleet of KVM virtual machines on bare-metal hosts."""

__version__ = "0.1.0"
