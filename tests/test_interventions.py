"""End to end, through the admin API and the openai client: each method alone makes the model forget a target.

A target named "Harry Potter" is registered with only a description. Afterwards "Who is Harry Potter's best
friend?" must no longer come back with Ron Weasley, while an unrelated prompt returns byte-identical text to the
unguarded server at temperature 0; the response names the target and method in ``x-unlearning-targets``.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import ADMIN_TOKEN, live_settings
from tests.live import LiveServer

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
FORGET = "Who is Harry Potter's best friend?"
KEEP = "What is the capital of France?"
DESCRIPTION = "The boy wizard from the fantasy novels, who goes to a school of magic."


def ask(client: openai.OpenAI, model: str, question: str) -> tuple[str, str | None]:
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": question}], temperature=0, max_tokens=48)
    return raw.parse().choices[0].message.content or "", raw.headers.get("x-unlearning-targets")


def register(server: LiveServer, body: dict, timeout: float = 600.0) -> dict:
    with httpx.Client(base_url=server.base_url + "/admin", headers=AUTH, timeout=30) as admin:
        created = admin.post("/targets", json=body)
        assert created.status_code == 201, created.text
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            record = admin.get(f"/targets/{created.json()['id']}").json()
            if record["status"] in ("active", "failed"):
                assert record["status"] == "active", record
                job = admin.get(f"/jobs/{record['job_id']}").json()
                if job["state"] == "running":  # the record turns active just before its job is marked done
                    time.sleep(0.2)
                    continue
                assert job["state"] == "succeeded" and job["progress"] == 1.0
                return record
            time.sleep(0.2)
    raise TimeoutError("the target did not finish building")


def delete(server: LiveServer, target_id: str) -> None:
    assert httpx.delete(f"{server.base_url}/admin/targets/{target_id}", headers=AUTH).status_code == 204


@pytest.mark.slow
@pytest.mark.parametrize("method", ["eco", "o3", "guard"])
def test_each_method_alone_forgets_the_target_and_keeps_the_rest(guarded: LiveServer, method: str) -> None:
    client = openai.OpenAI(base_url=guarded.base_url + "/v1", api_key="unused", max_retries=0, timeout=120)
    before, header = ask(client, guarded.model, FORGET)
    assert "Ron" in before and header is None  # the unguarded model knows it, or the test proves nothing
    keep_before, _ = ask(client, guarded.model, KEEP)

    record = register(guarded, {"name": "Harry Potter", "description": DESCRIPTION, "methods": [method]})
    try:
        if method == "eco":  # served with the margin over the searched strength (settings' defaults)
            thresholds = record["thresholds"]
            assert thresholds["eco_sigma"] == pytest.approx(min(3 * thresholds["eco_sigma_searched"], 100.0))
        after, header = ask(client, guarded.model, FORGET)
        assert "Ron" not in after and "Weasley" not in after, after
        # the output net may also have filtered a step of the answer ("Harry" -> not "Potter")
        assert header in (f"{record['id']}:{method}", f"{record['id']}:{'+'.join(sorted([method, 'net']))}")
        keep_after, header = ask(client, guarded.model, KEEP)
        assert keep_after == keep_before and header is None
        metrics = httpx.get(guarded.base_url + "/metrics").text
        assert f'ugw_interventions_total{{method="{method}",target="{record["id"]}"}} 1.0' in metrics
    finally:
        delete(guarded, record["id"])
    again, header = ask(client, guarded.model, FORGET)
    assert again == before and header is None  # deleting the target restores the model exactly


@pytest.mark.slow
@pytest.mark.vllm
def test_unflagged_requests_batched_with_a_flagged_one_are_byte_identical(vllm_server: LiveServer,
                                                                           model_path: Path, cache_dir: Path,
                                                                           tmp_path_factory: pytest.TempPathFactory
                                                                           ) -> None:
    """All three methods fire on one request while plain ones share its batches in the vLLM engine."""
    import asyncio

    settings = live_settings("vllm", model_path, cache_dir, tmp_path_factory.mktemp("mixed"))
    server = LiveServer(settings.model_copy(update={"guards": type(settings.guards)()}),
                        engine=vllm_server.engine).start()
    plain = [KEEP, "Name three colours.", "What is two plus two?", "Write one sentence about the sea."]
    try:
        async def answers(questions: list[str], concurrently: bool) -> list[str]:
            async with openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0,
                                          timeout=300) as client:
                async def one(question: str) -> str:
                    r = await client.chat.completions.create(model=server.model, temperature=0, max_tokens=48,
                                                             messages=[{"role": "user", "content": question}])
                    return r.choices[0].message.content or ""

                if concurrently:
                    return list(await asyncio.gather(*(one(q) for q in questions)))
                return [await one(q) for q in questions]

        alone = asyncio.run(answers(plain, concurrently=False))
        record = register(server, {"name": "Harry Potter", "description": DESCRIPTION,
                                   "methods": ["eco", "o3", "guard"]})

        together = asyncio.run(answers([FORGET, *plain, FORGET], concurrently=True))
        assert together[1:-1] == alone
        assert all("Ron" not in t for t in (together[0], together[-1]))
        header = ask(openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused"), server.model, FORGET)[1]
        assert header in (f"{record['id']}:eco+guard+o3", f"{record['id']}:eco+guard+net+o3")
    finally:
        server.stop()
