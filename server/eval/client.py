"""The evaluation's view of a gateway: the official openai client for probes, httpx for the admin API.

Everything the harness measures goes through the live HTTP API, as a user's traffic would: which targets fired
comes from the ``x-unlearning-targets`` response header, TTFT and per-token time from the stream itself. Probes run
concurrently (the engine batches them), at temperature 0, with a progress bar.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import openai
from pydantic import BaseModel

from server.progress import progress_bar

FIRED_HEADER = "x-unlearning-targets"


class Answer(BaseModel):
    text: str
    # target ids that fired on this request (empty: it went to the engine unguarded)
    fired: list[str]
    # the header as sent: each fired target with what ran on it (``<id>:guard``, ``<id>:cleared``)
    verdicts: str = ""
    ttft_ms: float
    latency_ms: float
    tokens: int
    error: str | None = None

    @property
    def per_token_ms(self) -> float:
        return (self.latency_ms - self.ttft_ms) / (self.tokens - 1) if self.tokens > 1 else float("nan")


def fired_targets(header: str | None) -> list[str]:
    """``id1:eco+guard,id2:o3`` -> ``[id1, id2]``."""
    return [part.split(":", 1)[0] for part in (header or "").split(",") if part]


class GatewayClient:
    def __init__(self, base_url: str, admin_token: str | None, model: str | None = None, concurrency: int = 8,
                 max_tokens: int = 32, admin_url: str | None = None, progress: bool = True) -> None:
        self.base_url = base_url.rstrip("/")
        self.admin_url = (admin_url or self.base_url).rstrip("/") + "/admin"
        self.model = model
        self.max_tokens = max_tokens
        self.progress = progress
        self.limit = asyncio.Semaphore(concurrency)
        self.client = openai.AsyncOpenAI(base_url=self.base_url + "/v1", api_key="unused", max_retries=2,
                                         timeout=600)
        headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}
        # Idle keep-alive connections expire here before the server drops them (uvicorn: after 5 s), so a request is
        # never sent on a connection the server is closing at that moment (an httpx.ReadError mid-run).
        self.admin = httpx.AsyncClient(base_url=self.admin_url, headers=headers, timeout=120,
                                       limits=httpx.Limits(keepalive_expiry=2.0))

    async def close(self) -> None:
        await self.client.close()
        await self.admin.aclose()

    async def served_model(self) -> str:
        if self.model is None:
            self.model = (await self.client.models.list()).data[0].id
        return self.model

    # ---- probes ----------------------------------------------------------------------------------------------------
    async def _one(self, prompt: str, max_tokens: int, temperature: float = 0.0, seed: int | None = None) -> Answer:
        model = await self.served_model()
        async with self.limit:
            start = time.perf_counter()
            first: float | None = None
            parts: list[str] = []
            tokens = 0
            try:
                async with self.client.chat.completions.with_streaming_response.create(
                        model=model, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
                        temperature=temperature, seed=seed, stream=True,
                        stream_options={"include_usage": True}) as response:
                    verdicts = response.headers.get(FIRED_HEADER) or ""
                    fired = fired_targets(verdicts)
                    async for chunk in await response.parse():
                        if chunk.choices and chunk.choices[0].delta.content:
                            first = first or time.perf_counter()
                            parts.append(chunk.choices[0].delta.content)
                        if chunk.usage is not None:
                            tokens = chunk.usage.completion_tokens
            except openai.OpenAIError as exc:
                now = (time.perf_counter() - start) * 1000
                return Answer(text="", fired=[], ttft_ms=now, latency_ms=now, tokens=0, error=str(exc))
            end = time.perf_counter()
            return Answer(text="".join(parts), fired=fired, verdicts=verdicts, ttft_ms=((first or end) - start) * 1000,
                          latency_ms=(end - start) * 1000, tokens=tokens)

    async def ask(self, prompts: list[str], desc: str, max_tokens: int | None = None, temperature: float = 0.0,
                  seed: int | None = None) -> list[Answer]:
        """Answers in the order of ``prompts``; failed requests come back with ``error`` set, never raise."""
        bar = progress_bar(len(prompts), desc, unit="probe", enabled=self.progress)

        async def tracked(prompt: str) -> Answer:
            answer = await self._one(prompt, max_tokens or self.max_tokens, temperature, seed)
            bar.update()
            return answer

        try:
            return list(await asyncio.gather(*(tracked(p) for p in prompts)))
        finally:
            bar.close()

    # ---- admin -----------------------------------------------------------------------------------------------------
    async def register(self, body: dict[str, Any], timeout_s: float = 3600.0) -> str:
        """Create a target and wait until its build is done; a failed build raises with the server's reason."""
        created = await self.admin.post("/targets", json=body)
        if created.status_code != 201:
            raise RuntimeError(f"registering {body.get('name')!r} failed: {created.status_code} {created.text}")
        target_id: str = created.json()["id"]
        deadline = time.monotonic() + timeout_s
        while True:
            record = (await self._get(f"/targets/{target_id}")).json()
            if record["status"] == "active":
                return target_id
            if record["status"] == "failed":
                raise RuntimeError(f"build of {body.get('name')!r} failed: {record.get('status_reason')}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{body.get('name')!r} was not active after {timeout_s:.0f} s")
            await asyncio.sleep(0.25)

    async def _get(self, path: str, attempts: int = 3) -> httpx.Response:
        """GET is idempotent: a dropped connection is retried rather than ending an hour-long run."""
        for attempt in range(attempts):
            try:
                return await self.admin.get(path)
            except httpx.TransportError:
                if attempt == attempts - 1:
                    raise
                await asyncio.sleep(0.5)
        raise AssertionError("unreachable")

    async def delete(self, target_id: str) -> None:
        try:
            response = await self.admin.delete(f"/targets/{target_id}")
        except httpx.TransportError:  # deleting is idempotent too (a repeat answers 404)
            response = await self.admin.delete(f"/targets/{target_id}")
        if response.status_code not in (204, 404):
            raise RuntimeError(f"deleting {target_id} failed: {response.status_code} {response.text}")

    async def clear(self) -> None:
        """Start from an empty registry, so the unguarded baseline really is unguarded."""
        for record in (await self._get("/targets")).json()["data"]:
            await self.delete(record["id"])
