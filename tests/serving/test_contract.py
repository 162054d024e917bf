"""Any request body, valid or not, gets 2xx or 4xx with a message, never 5xx: schemathesis against the app's own
OpenAPI spec (valid and invalid bodies, every endpoint), and hypothesis property tests of the rank contract."""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from serving.app import create_app
from serving.config import ServeConfig

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@pytest.fixture(scope="module")
def running(published_pair, tmp_path_factory):
    """The app with its lifespan entered (models loaded), and a client."""
    root, _ = published_pair
    tmp = tmp_path_factory.mktemp("contract")
    config = ServeConfig(
        ranker=str(root / "ranker"),
        store=str(root / "store"),
        feedback=str(tmp / "feedback"),
        impression_log=str(tmp / "served"),
        clock="data_end",
    )
    app = create_app(config)
    with TestClient(app) as client:
        yield app, client


@pytest.fixture(scope="module")
def api_schema(running):
    app, _ = running
    return schemathesis.openapi.from_asgi("/openapi.json", app)


# schemathesis' lazy pytest loader (`from_fixture`) breaks on pytest 9, so each operation's strategies are driven
# by hypothesis here: positive (schema-valid) and negative (schema-breaking) cases of every endpoint.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_generated_request_gets_a_server_error(api_schema, mode):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/rank", "/v1/feedback", "/admin/reload", "/preview", "/readyz"}
    for operation in operations:
        if mode == GenerationMode.NEGATIVE and not (len(operation.body) or len(operation.query)):
            continue  # nothing in the request to break

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case):
            response = case.call()
            case.validate_response(response, checks=[not_a_server_error])
            if mode == GenerationMode.POSITIVE and response.status_code < 300 and case.path != "/metrics":
                case.validate_response(response, checks=[response_schema_conformance])

        check()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
IDS = st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(min_size=1, max_size=30))


@SETTINGS
@given(body=JSON)
def test_any_json_body_is_answered_without_a_server_error(running, body):
    _, client = running
    for path in ("/v1/rank", "/v1/feedback"):
        response = client.post(path, json=body)
        assert response.status_code < 500, (path, body, response.text)
        if response.status_code >= 400:
            assert response.json()["detail"]


def _ids(running):
    app, _ = running
    state = app.state.service.generation.state
    return list(state.user_index)[:50], state.module_ids


@SETTINGS
@given(data=st.data())
def test_well_formed_requests_get_a_consistent_page(running, data):
    _, client = running
    users, modules = _ids(running)
    user = data.draw(st.one_of(st.sampled_from(users), IDS))
    candidates = data.draw(st.none() | st.lists(st.one_of(st.sampled_from(modules), IDS), max_size=40))
    exclude = data.draw(st.lists(st.sampled_from(modules), max_size=5))
    slots = data.draw(st.none() | st.integers(1, 60))
    events = data.draw(
        st.lists(
            st.fixed_dictionaries(
                {"item_id": IDS, "event_type": st.sampled_from(["view", "click", "add_to_cart", "purchase"])}
            ),
            max_size=5,
        )
    )
    diversity = data.draw(
        st.none()
        | st.fixed_dictionaries({}, optional={"mmr_lambda": st.floats(0, 1), "max_per_type": st.integers(1, 5)})
    )
    body = {"user_id": user, "slots": slots, "exclude": exclude, "recent_events": events, "diversity": diversity}
    if candidates is not None:
        body["candidates"] = candidates
    response = client.post("/v1/rank", json=body)
    assert response.status_code == 200, response.text
    page = response.json()
    served = [m["content_id"] for m in page["modules"]]
    assert len(served) == len(set(map(str, served)))  # no module twice
    assert len(served) <= (slots or 20)
    assert not set(served) & set(exclude)
    assert [m["rank"] for m in page["modules"]] == list(range(1, len(served) + 1))
    if candidates is not None:
        assert set(map(str, served)) <= set(map(str, candidates))
    assert all(m["score"] >= 0 and 0 < m["propensity"] <= 1 for m in page["modules"])
    assert page["fallback"] in (None, "cold_start", "degraded")
