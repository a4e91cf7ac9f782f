"""schemathesis against the served OpenAPI document: as admin and as nobody, positive
and negative data — no 5xx, and nothing written without a token."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.api.conftest import Api

#: Examples per operation, role and mode: bounded so the whole run stays well under a minute.
EXAMPLES = 15
#: Never unauthenticated, besides these (liveness, the schema, Prometheus).
OPEN = {"/api/v1/health", "/openapi.json", "/metrics"}


def test_the_api_never_fails_with_a_5xx_and_never_writes_for_nobody(api: Api) -> None:
    iid = api.incident_id()
    assert iid >= 1
    schema = schemathesis.openapi.from_url(api.url + "/openapi.json")
    ran: dict[str, int] = {}
    accepted.clear()
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.endswith("/stream"):
            continue   # an endless event stream by design; tested in test_api
        for role in ("admin", None):
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                ran[operation.label] = ran.get(operation.label, 0) + _fuzz(
                    api, operation, role, mode)
    total = sum(ran.values())
    print(f"schemathesis: {total} cases over {len(ran)} operations")
    assert len(ran) >= 25
    assert total >= 25 * EXAMPLES
    assert len(accepted) >= 20, f"the admin token was accepted on only {sorted(accepted)}"


accepted: set[str] = set()   # operations that answered the admin with a 2xx


def _fuzz(api: Api, operation: Any, role: str | None, mode: GenerationMode) -> int:
    headers = {"Authorization": f"Bearer {api.tokens[role]}"} if role else {}
    count = 0

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        nonlocal count
        count += 1
        sent = {**(case.headers or {}), **headers}
        if role is None:
            sent.pop("Authorization", None)
        response = case.call(base_url=api.url, headers=sent, timeout=20)
        where = f"{case.method} {case.formatted_path} ({role or 'no token'}, {mode.value})"
        assert response.status_code < 500, f"{where}: {response.status_code} {response.text}"
        if role and response.status_code < 300:
            accepted.add(operation.label)
        if role is None and operation.path not in OPEN:
            assert 400 <= response.status_code < 500, \
                f"{where}: answered {response.status_code} without a token"

    try:
        check()
    except Unsatisfiable:
        # nothing to get wrong: an operation without parameters has no negative data
        assert mode is GenerationMode.NEGATIVE, operation.label
    return count


@pytest.mark.parametrize("path", sorted(OPEN))
def test_open_paths_answer_without_a_token(api: Api, path: str) -> None:
    assert api.call("GET", path).status_code == 200
