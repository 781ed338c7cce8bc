"""Moved: the tests are tests/operator/test_makerchecker.py, the shared set-up is
tests/policy.py. These names stay importable for tests/agent until it imports tests.policy."""

from tests.policy import as_, install_policy, make_people

__all__ = ["as_", "install_policy", "make_people"]
