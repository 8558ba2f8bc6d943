"""The gateway (vllm engine, no target) against bare `vllm serve` on the same model, request for request.

Every request goes to both; the status, the error's type and field, and the response's shape must agree (the text
too at temperature 0 or with a seed), except where tests/side_by_side.py lists a difference on purpose. Then a
seeded property-based run generates requests from vLLM's own request models and sends each to both: a gateway 5xx,
or a 2xx where vLLM says 4xx (or the reverse), fails and prints the request. ``UGW_FUZZ_EXAMPLES`` raises the
number of generated requests per endpoint (default 150).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from server.processes import ServerProcess
from server.unsupported import refused_field
from tests.conftest import BareServer, live_settings
from tests.live import LiveServer
from tests.side_by_side import Case, Reply, differences, on_purpose, send
from tests.vllm_cases import field_cases, malformed_cases, stream_cases

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

Capture = pytest.CaptureFixture[str]
FUZZ_EXAMPLES = int(os.environ.get("UGW_FUZZ_EXAMPLES", "150"))


@pytest.fixture(scope="module")
def bare(bare_server: BareServer) -> ServerProcess:
    return bare_server.process


@pytest.fixture(scope="module")
def gateway(vllm_server: LiveServer, model_path: Path, cache_dir: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The session's vLLM engine behind a gateway of its own, with an empty registry: no target can fire."""
    settings = live_settings("vllm", model_path, cache_dir, tmp_path_factory.mktemp("vs-vllm"))
    server = LiveServer(settings, engine=vllm_server.engine).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def remote(bare: ServerProcess, model_path: Path, cache_dir: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A remote-mode gateway whose upstream is the bare server itself: it must answer as that server answers."""
    settings = live_settings("remote", model_path, cache_dir, tmp_path_factory.mktemp("vs-vllm-remote"))
    settings = settings.model_copy(update={"engine": settings.engine.model_copy(update={"upstreams": [bare.base_url]})})
    server = LiveServer(settings).start()
    yield server
    server.stop()


def _report(capsys: Capture, label: str, compared: int, on_purpose_count: int) -> None:
    """Printed past pytest's capture, so that every run shows how many requests it compared."""
    with capsys.disabled():
        print(f"\n[vs vllm serve] {label}: {compared} requests compared, {on_purpose_count} differ on purpose "
              "(tests/side_by_side.py)")


def _compare(bare: ServerProcess, gateway: LiveServer, cases: list[Case], label: str,
             capsys: Capture) -> None:
    client = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=16))

    def both(case: Case) -> tuple[Case, Reply, Reply]:
        return case, send(client, bare.base_url, case), send(client, gateway.base_url, case)

    failures, deliberate = [], 0
    with client, ThreadPoolExecutor(4) as pool:
        for case, b, g in pool.map(both, cases):
            found = differences(b, g, case.compare_text)
            if g.status >= 500:
                found.insert(0, f"the gateway answered {g.status}")
            if found and on_purpose(case, b, g):
                deliberate += 1
                continue
            if found:
                failures.append(f"{case.name} [{b.status} vs {g.status}]: " + "; ".join(found))
    _report(capsys, label, len(cases), deliberate)
    assert not failures, f"{len(failures)} of {len(cases)} requests differ from vllm serve:\n" + "\n".join(failures)


def test_every_field_valid_and_invalid(bare: ServerProcess, gateway: LiveServer, capsys: Capture) -> None:
    _compare(bare, gateway, field_cases(), "every field, valid and invalid values", capsys)


def test_streaming_and_structured_outputs(bare: ServerProcess, gateway: LiveServer, capsys: Capture) -> None:
    _compare(bare, gateway, stream_cases(), "streams and structured outputs", capsys)


def test_malformed_bodies(bare: ServerProcess, gateway: LiveServer, capsys: Capture) -> None:
    _compare(bare, gateway, malformed_cases(), "malformed bodies", capsys)


def test_remote_mode_answers_as_its_upstream(bare: ServerProcess, remote: LiveServer, capsys: Capture) -> None:
    """The same requests through a remote-mode gateway (its engine is the bare server over HTTP)."""
    _compare(bare, remote, [*field_cases(), *stream_cases()], "remote mode, every field and stream", capsys)


def test_models_listing_has_vllms_fields(bare: ServerProcess, gateway: LiveServer) -> None:
    b = httpx.get(bare.base_url + "/v1/models").json()
    g = httpx.get(gateway.base_url + "/v1/models").json()
    assert differences(Reply(200, b), Reply(200, g), compare_text=False) == []
    assert g["data"][0]["root"] == b["data"][0]["root"] and g["data"][0]["owned_by"] == "vllm"


# ---- differential fuzzing from vLLM's request models -----------------------------------------------------------

def _vllm_openapi() -> dict[str, Any]:
    """An OpenAPI document of vLLM's two request models, bounded so that each case stays cheap: the served model
    (or another), a few tokens, one or two choices."""
    from server.vllm_parity import vllm_request_model

    schemas: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for path, chat in (("/v1/chat/completions", True), ("/v1/completions", False)):
        model = vllm_request_model(chat)
        assert model is not None
        spec = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(spec.pop("$defs", {}))
        props = spec["properties"]
        props["model"] = {"type": "string", "enum": ["smollm2", "other-model"]}
        props["max_tokens"] = {"type": "integer", "minimum": 1, "maximum": 8}
        props["n"] = {"type": "integer", "minimum": 1, "maximum": 2}
        for name in ("max_completion_tokens", "min_tokens", "prompt_embeds", "mm_payload"):
            props.pop(name, None)
        spec["required"] = sorted(set(spec.get("required", [])) | {"model", "max_tokens"})
        schemas[model.__name__] = spec
        paths[path] = {"post": {"operationId": path.rsplit("/", 1)[1], "requestBody": {"required": True, "content": {
            "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}},
            "responses": {"200": {"description": "ok"}}}}
    return {"openapi": "3.1.0", "info": {"title": "vllm", "version": "0.32"}, "paths": paths,
            "components": {"schemas": copy.deepcopy(schemas)}}


def test_fuzz_against_vllm(bare: ServerProcess, gateway: LiveServer, capsys: Capture) -> None:
    """Seeded, bounded: valid and invalid bodies (schemathesis' positive and negative modes) for both endpoints."""
    counts = {"sent": 0, "on_purpose": 0}
    client = httpx.Client(timeout=120)

    def check(case: schemathesis.Case) -> None:
        body = case.body
        sent = body if isinstance(body, (dict, bytes)) else json.dumps(body, default=str).encode()
        refused = refused_field(body, case.path.endswith("chat/completions")) if isinstance(body, dict) else None
        request = Case(f"fuzz {case.path}", case.path, sent, compare_text=False, field=refused)
        b, g = send(client, bare.base_url, request), send(client, gateway.base_url, request)
        counts["sent"] += 1
        if on_purpose(request, b, g):
            counts["on_purpose"] += 1
            return
        shown = (body.decode("latin-1") if isinstance(body, bytes) else json.dumps(body, default=str))[:2000]
        assert g.status < 500, f"the gateway answered {g.status} to {shown}: {g.body}"
        assert (b.status < 300) == (g.status < 300), \
            f"vLLM {b.status}, gateway {g.status} for {shown}:\n vLLM: {str(b.body)[:500]}\n" \
            f" gateway: {str(g.body)[:500]}"

    with client:
        _fuzz(check)
    _report(capsys, "fuzz from vLLM's request models", counts["sent"], counts["on_purpose"])


def _fuzz(check: Callable[[schemathesis.Case], None], examples: int = FUZZ_EXAMPLES) -> None:
    """``check`` on seeded generated requests to each endpoint, valid and invalid (schemathesis' two modes)."""
    schema = schemathesis.openapi.from_dict(_vllm_openapi())
    for result in schema.get_all_operations():
        operation = result.ok()
        cases = st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in GenerationMode))
        settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                 suppress_health_check=list(HealthCheck))(given(cases)(check))()


def test_fuzz_reference_engine_never_fails(hf_server: LiveServer, capsys: Capture) -> None:
    """The same generated requests at the gateway on its reference engine: never a 5xx (it refuses by name what it
    cannot do, e.g. structured outputs)."""
    sent = 0

    def check(case: schemathesis.Case) -> None:
        nonlocal sent
        body = case.body if isinstance(case.body, (dict, bytes)) else json.dumps(case.body, default=str).encode()
        reply = send(client, hf_server.base_url, Case(f"fuzz {case.path}", case.path, body))
        sent += 1
        assert reply.status < 500, f"the gateway answered {reply.status} to {str(body)[:2000]}: {reply.body}"

    with httpx.Client(timeout=120) as client:
        _fuzz(check, examples=max(1, FUZZ_EXAMPLES // 3))
    _report(capsys, "fuzz, reference engine (no 5xx)", sent, 0)
