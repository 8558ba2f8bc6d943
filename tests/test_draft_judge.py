"""Draft-and-judge end to end, through the admin API and the openai client, on both engines.

"Harry Potter" is registered for GUARD. A flagged prompt whose unguarded draft states nothing of the target is
cleared: its answer is byte-identical to the unguarded one (chat and completions, collected and streamed, greedy
and seeded sampling), named ``<id>:cleared``. A prompt whose draft states a fact of it is judged: the method applies
from the first token, the draft never comes out, and the response is named ``<id>:guard``. The output net is off in
this module so that "unguarded" means the model with nothing registered; tests/test_output_net.py has it on.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from classifiers.text import facts_in
from server.settings import InterventionSettings, NetSettings
from tests.conftest import ENGINE_KINDS, live_settings
from tests.live import LiveServer
from tests.test_interventions import AUTH, DESCRIPTION, FORGET, delete, register

CLEARED = "Is Harry Potter a good name for a dog?"


@pytest.fixture(scope="module", params=ENGINE_KINDS)
def judged(request: pytest.FixtureRequest, model_path: Path, cache_dir: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    shared: LiveServer = request.getfixturevalue(f"{request.param}_server")
    settings = live_settings(request.param, model_path, cache_dir, tmp_path_factory.mktemp(f"judge-{request.param}"))
    settings = settings.model_copy(update={"guards": InterventionSettings(net=NetSettings(enabled=False))})
    server = LiveServer(settings, engine=shared.engine).start()
    yield server
    server.stop()


def chat(client: openai.OpenAI, model: str, question: str, stream: bool = False,
         **sampling: object) -> tuple[str, str | None]:
    kwargs: dict = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": 64,
                    "temperature": 0, **sampling}
    if not stream:
        raw = client.chat.completions.with_raw_response.create(**kwargs)
        return raw.parse().choices[0].message.content or "", raw.headers.get("x-unlearning-targets")
    with client.chat.completions.with_streaming_response.create(stream=True, **kwargs) as raw:
        header = raw.headers.get("x-unlearning-targets")
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    return text, header


def complete(client: openai.OpenAI, model: str, prompt: str, stream: bool = False) -> tuple[str, str | None]:
    kwargs: dict = {"model": model, "prompt": prompt, "max_tokens": 48, "temperature": 0}
    if not stream:
        raw = client.completions.with_raw_response.create(**kwargs)
        return raw.parse().choices[0].text, raw.headers.get("x-unlearning-targets")
    with client.completions.with_streaming_response.create(stream=True, **kwargs) as raw:
        header = raw.headers.get("x-unlearning-targets")
        text = "".join(c.choices[0].text for c in raw.parse() if c.choices)
    return text, header


@pytest.mark.slow
def test_cleared_drafts_go_on_as_the_unguarded_answer_and_judged_ones_never_come_out(judged: LiveServer) -> None:
    client = openai.OpenAI(base_url=judged.base_url + "/v1", api_key="unused", max_retries=0, timeout=300)
    model = judged.model
    text_prompt = "Q: Is Harry Potter a good name for a dog?\nA:"
    # a sampled answer stating no fact at all (a draft of it is then cleared whatever its length)
    seed = next(s for s in range(1, 20) if not facts_in(
        chat(client, model, CLEARED, temperature=1.0, seed=s)[0], CLEARED, lambda w: False))
    cases = {
        "chat": lambda s: chat(client, model, CLEARED, stream=s),
        "seeded": lambda s: chat(client, model, CLEARED, stream=s, temperature=1.0, seed=seed),
        "completion": lambda s: complete(client, model, text_prompt, stream=s),
    }
    before = {name: ask(False) for name, ask in cases.items()}
    forget_before, _ = chat(client, model, FORGET)
    assert "Ron" in forget_before and all(h is None for _, h in before.values())
    record = register(judged, {"name": "Harry Potter", "description": DESCRIPTION, "methods": ["guard"]})
    try:
        assert "judge" in record["built"]
        for name, ask in cases.items():
            for stream in (False, True):
                after, header = ask(stream)
                assert header == f"{record['id']}:cleared", (name, stream, header, after)
                assert after == before[name][0], (name, stream)  # the draft went on: byte-identical
        for stream in (False, True):
            after, header = chat(client, model, FORGET, stream=stream)
            assert header == f"{record['id']}:guard", header
            assert "Ron" not in after and "Weasley" not in after, after
            assert not after.startswith(forget_before[:20])  # nothing of the draft is returned
        metrics = httpx.get(judged.base_url + "/metrics").text
        assert 'ugw_drafts_total{verdict="cleared"} 6.0' in metrics
        assert 'ugw_drafts_total{verdict="judged"} 2.0' in metrics
        assert f'ugw_interventions_total{{method="cleared",target="{record["id"]}"}} 6.0' in metrics
    finally:
        delete(judged, record["id"])


@pytest.mark.slow
def test_elicited_documents_are_listed_and_a_dropped_one_is_neither_asked_nor_used(judged: LiveServer) -> None:
    record = register(judged, {"name": "Harry Potter", "description": DESCRIPTION, "methods": ["guard"]})
    admin = httpx.Client(base_url=judged.base_url + "/admin", headers=AUTH, timeout=30)
    try:
        listed = admin.get(f"/targets/{record['id']}/elicited").json()
        assert len(listed["data"]) > 16  # the first round and its anchored follow-ups
        assert any("'s role in Harry Potter?" in d["question"] for d in listed["data"])
        assert any("Ron Weasley" in d["facts"] for d in listed["data"]), listed["data"]
        assert listed["described"]  # the judge asked about the documents' entities
        dropped = next(d for d in listed["data"] if d["facts"])
        patched = admin.patch(f"/targets/{record['id']}", json={"dropped_elicited": [dropped["question"]]})
        assert patched.status_code == 200 and patched.json()["dropped_elicited"] == [dropped["question"]]
        deadline = time.monotonic() + 600
        while admin.get(f"/targets/{record['id']}").json()["status"] != "active" and time.monotonic() < deadline:
            time.sleep(0.5)
        again = admin.get(f"/targets/{record['id']}/elicited").json()
        assert dropped["question"] not in [d["question"] for d in again["data"]]
    finally:
        admin.close()
        delete(judged, record["id"])

