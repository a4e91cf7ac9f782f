"""In CI a skipped real-peer test is a failure; elsewhere it is a skip with its reason."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

# The suite's own conftest, minus its fixture plugins (the temp project has none).
CONFTEST = re.sub(r"^pytest_plugins = \[.*?\]$", "",
                  (Path(__file__).parent / "conftest.py").read_text(encoding="utf-8"),
                  flags=re.MULTILINE | re.DOTALL)

TESTS = """
import pytest

@pytest.mark.real
def test_needs_a_server():
    pytest.skip("needs PostgreSQL (Debian package postgresql)")

def test_plain():
    pass
"""


@pytest.mark.parametrize(("strict", "outcome"), [
    pytest.param("1", {"passed": 1, "failed": 1}, id="ci-fails"),
    pytest.param("0", {"passed": 1, "skipped": 1}, id="elsewhere-skips"),
])
def test_a_real_peer_skip_fails_only_in_ci(pytester: pytest.Pytester,
                                           monkeypatch: pytest.MonkeyPatch,
                                           strict: str, outcome: dict[str, int]) -> None:
    monkeypatch.setenv("KANSHI_CI_STRICT", strict)
    pytester.makeconftest(CONFTEST)
    pytester.makeini("[pytest]\nmarkers =\n    real: needs a real peer\n")
    pytester.makepyfile(TESTS)
    result = pytester.runpytest_subprocess("-ra")
    result.assert_outcomes(**outcome)
    if strict == "1":
        result.stdout.fnmatch_lines(["*skipped in CI*needs PostgreSQL*"])
