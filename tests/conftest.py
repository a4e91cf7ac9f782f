"""Suite-wide rules.

Tests that need a real peer this machine may lack (root, ``ip netns``, a server
package) are marked ``real`` and skip with the reason when it is missing. In CI
(``KANSHI_CI_STRICT=1``, set by ``.ci/run``) such a skip is a failure: a green
CI must mean the real-server tests ran.
"""

from __future__ import annotations

import os

import pytest

STRICT = os.environ.get("KANSHI_CI_STRICT") == "1"

# Fixtures for real peers, usable by every test module.
# stores before frozen, which imports it (else pytest cannot rewrite its asserts).
pytest_plugins = ["tests.support.mounts", "tests.support.stores", "tests.support.agents",
                  "tests.support.frozen", "tests.support.scripted", "tests.support.postgres",
                  "tests.support.mariadb", "tests.support.notifiers"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and item.get_closest_marker("real") is not None:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"a real-peer test skipped in CI (KANSHI_CI_STRICT=1): {reason}"
