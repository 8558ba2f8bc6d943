"""The load generator against a live gateway: a short bounded run with flagged and plain, streamed and collected
requests; the report counts what it sent and what the server answered."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from loadtest.load import LoadSpec, check_loopback, register_targets, run_load
from tests.conftest import ADMIN_TOKEN
from tests.live import LiveServer

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


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
