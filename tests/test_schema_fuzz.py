"""Schemathesis against the server's own OpenAPI schema: no input makes it answer 5xx."""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from server.app import create_app
from server.settings import Settings
from tests.live import LiveServer

pytestmark = pytest.mark.slow


def _bounded_schema() -> dict[str, Any]:
    """The served schema with the positive space steered at the generation path and kept cheap.

    ``model`` is mostly the served one (else every case would be a quick 404) and ``max_tokens`` is small and
    present (else one case could generate up to the whole context). Negative mode still sends out-of-range values.
    """
    schema = copy.deepcopy(create_app(Settings()).openapi())
    for name in ("ChatCompletionRequest", "CompletionRequest"):
        spec = schema["components"]["schemas"][name]
        props = spec["properties"]
        props["model"] = {"type": "string", "enum": ["smollm2", "other-model"]}
        props["max_tokens"] = {"type": "integer", "minimum": 1, "maximum": 8}
        props.pop("max_completion_tokens", None)
        props["n"] = {"type": "integer", "minimum": 1, "maximum": 2}
        spec["required"] = sorted(set(spec.get("required", [])) | {"model", "max_tokens"})
    return schema


schema = schemathesis.openapi.from_dict(_bounded_schema())


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case, hf_server: LiveServer) -> None:
    case.call_and_validate(base_url=hf_server.base_url, checks=[not_a_server_error], timeout=120)


INT_FIELDS = ["max_tokens", "max_completion_tokens", "n", "seed", "top_k", "min_tokens", "truncate_prompt_tokens",
              "top_logprobs", "prompt_logprobs", "stop_token_ids", "allowed_token_ids"]
INT_EDGES = [2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, -1, 0]


@pytest.mark.parametrize("field", INT_FIELDS)
def test_integer_edges_never_give_a_server_error(live: LiveServer, field: str) -> None:
    """int64 bounds and one past them on every integer field: a 200 or a 4xx naming the problem, never a 5xx."""
    for value in INT_EDGES:
        body: dict = {"model": live.model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1,
                      "logprobs": True}
        body[field] = [value] if field in ("stop_token_ids", "allowed_token_ids") else value
        if field == "max_completion_tokens":
            body.pop("max_tokens")
        r = httpx.post(live.base_url + "/v1/chat/completions", json=body, timeout=120)
        assert r.status_code < 500, (field, value, r.text)
        if r.status_code >= 400:
            assert r.json()["error"]["message"]
    for value in INT_EDGES:
        r = httpx.post(live.base_url + "/v1/completions", timeout=120,
                       json={"model": live.model, "prompt": "Hi", "max_tokens": 1, "logprobs": value})
        assert r.status_code < 500, ("logprobs", value, r.text)
