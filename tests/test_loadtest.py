"""The load generator against a live gateway: a short bounded run with flagged and plain, streamed and collected
requests; the report counts what it sent and what the server answered."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from loadtest.load import LoadSpec, check_loopback, register_targets, run_load
from tests.conftest import ADMIN_TOKEN
from tests.live import LiveServer

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.mark.slow
def test_a_bounded_mixed_run_reports_its_figures(hf_server: LiveServer) -> None:
    names = ["Zorblax Quintavius"]
    register_targets(hf_server.base_url, ADMIN_TOKEN, names, ["guard"], timeout_s=120)
    try:
        spec = LoadSpec(duration_s=60, max_requests=12, concurrency=4, flagged_share=0.5, stream_share=0.5,
                        max_tokens=4, seed=1)
        report = asyncio.run(run_load(hf_server.base_url, hf_server.model, spec, names, server=None))
    finally:
        targets = httpx.get(hf_server.base_url + "/admin/targets", headers=AUTH).json()["data"]
        for t in targets:
            if t["name"] in names:
                httpx.delete(hf_server.base_url + f"/admin/targets/{t['id']}", headers=AUTH)
    assert report.requests == 12 and report.errors == 0  # bounded by count, well inside the duration
    assert 0 < report.flagged_requests < 12 and 0 < report.streamed_requests < 12
    assert report.throughput_tok_s > 0 and report.latency_p50_ms <= report.latency_p99_ms
    assert report.ttft_p50_ms <= report.latency_p99_ms
    metrics = httpx.get(hf_server.base_url + "/metrics").text
    (line,) = [x for x in metrics.splitlines() if x.startswith("ugw_flagged_requests_total ")]
    assert float(line.split()[1]) >= report.flagged_requests  # the server saw the flagged share as flagged


def test_only_loopback_servers_are_loaded() -> None:
    check_loopback("http://127.0.0.1:8000")
    with pytest.raises(SystemExit, match="loopback"):
        check_loopback("http://example.com:8000")


def test_decode_cost_pairs_each_scenario_with_its_own_rounds_plain_median() -> None:
    from loadtest.decode_cost import summarise

    # plain drifts from 10 to 20 ms between rounds and its first row is slower; o3_mixed's unflagged second row is
    # 10% slower than plain's second row in each round
    results = {"plain": [[0.012, 0.010], [0.024, 0.020], [0.018, 0.015]],
               "o3_mixed": [[None, 0.011], [None, 0.022], [None, 0.0165]],
               "plain_again": [[0.012, 0.010], [0.023, 0.019], [0.018, 0.0153]]}
    report = summarise(results, batch=2, max_tokens=8, rounds=3, targets=0)
    assert report.added_pct["o3_mixed"] == pytest.approx(10.0)
    assert report.added_pct_range["o3_mixed"] == pytest.approx((10.0, 10.0))
    assert report.added_pct["plain_again"] == pytest.approx(0.0)
    assert report.added_pct_range["plain_again"] == pytest.approx((-4.545, 0.909), abs=1e-3)
    assert report.ms_per_token["plain"] == pytest.approx(16.5)


def test_decode_cost_times_only_the_steps_where_the_whole_batch_decodes() -> None:
    from loadtest.decode_cost import full_batch_per_token

    # row 0 starts at t=0 at 10 ms a step alone, row 1 joins at t=0.05; together a step takes 20 ms
    early = [(0.01 * k, k + 1) for k in range(5)] + [(0.04 + 0.02 * k, 5 + k) for k in range(1, 8)]
    late = [(0.06 + 0.02 * k, k + 1) for k in range(8)]
    assert full_batch_per_token([early, late]) == pytest.approx([0.02, 0.02])
    assert full_batch_per_token([early, [(0.1, 1)]]) == [None, None]  # a row with one output has no step time
    # rows that never overlap (more adapters than engine slots): each row over its own outputs
    after = [(0.5 + 0.03 * k, k + 1) for k in range(4)]
    assert full_batch_per_token([late, after]) == pytest.approx([0.02, 0.03])


def test_decode_cost_reads_every_scenario_against_the_bare_engine_when_there_is_one() -> None:
    from loadtest.decode_cost import summarise

    results = {"unguarded": [[0.010, 0.010], [0.020, 0.020]], "plain": [[0.0105, 0.0105], [0.021, 0.021]],
               "o3_mixed": [[None, 0.011], [None, 0.022]], "unguarded_again": [[0.010, 0.010], [0.020, 0.020]]}
    report = summarise(results, "unguarded", batch=2, max_tokens=8, rounds=2, targets=0)
    assert report.reference == "unguarded" and "unguarded" not in report.added_pct
    assert report.added_pct["plain"] == pytest.approx(5.0)
    assert report.added_pct["o3_mixed"] == pytest.approx(10.0)
    assert report.added_pct["unguarded_again"] == pytest.approx(0.0)


def test_a_vllm_engine_without_prompt_embeddings_refuses_them_as_a_400(model_path: Path, cache_dir: Path) -> None:
    import torch

    from server.engines.base import EngineRequest, SamplingOptions
    from server.engines.vllm_engine import VLLMEngine
    from server.errors import InvalidRequestError
    from server.settings import EngineSettings

    engine = VLLMEngine(EngineSettings(enable_prompt_embeds=False), model_path, cache_dir / "work" / "vllm")
    hidden = engine.embedding_matrix().shape[1]
    request = EngineRequest(request_id="r", sampling=SamplingOptions(max_tokens=1),
                            prompt_embeds=torch.zeros(3, hidden))
    with pytest.raises(InvalidRequestError, match="enable_prompt_embeds"):
        engine.validate_request(request)
    engine.validate_request(EngineRequest(request_id="t", sampling=SamplingOptions(max_tokens=1),
                                          prompt_token_ids=[1, 2]))
