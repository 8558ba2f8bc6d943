"""The remote engine: generation on stock vLLM OpenAI servers (``vllm serve``), the guards still inside decoding.

The gateway keeps the API, the registry and detection, and loads of the model only its tokenizer and input
embedding matrix. Each request goes to one upstream's ``/v1/completions`` as token ids (or, for ECO, as
``prompt_embeds``: a base64 ``torch.save`` tensor, which ``--enable-prompt-embeds`` accepts); O3's adapter levels
are loaded on every upstream through ``/v1/load_lora_adapter`` and named as the request's model; GUARD's rules
travel in ``vllm_xargs`` to the gateway's logits processor, which each upstream loads from the package's
``vllm.logits_processors`` entry point. Token ids come back with
``return_token_ids`` and logprobs as ``token_id:N`` strings, so nothing is re-tokenized.

Upstreams are balanced by least outstanding requests and health-checked every second; one that fails a request or a
check is taken out (its in-flight requests end with a 503 or an error event, never a hang) and comes back when it
answers again, after its adapters have been loaded again if it restarted without them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
from collections.abc import AsyncIterator, Container
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from server.engines.base import Engine, EngineOutput, EngineRequest, TokenLogprobs
from server.engines.lora import scaled_copy_dir, write_scaled_copies
from server.errors import GatewayError, InvalidRequestError, ServiceUnavailableError
from server.settings import EngineSettings

logger = logging.getLogger(__name__)

HEALTH_EVERY_S = 1.0


@dataclass
class Upstream:
    url: str
    healthy: bool = False
    outstanding: int = 0
    loaded: set[str] = field(default_factory=set)  # adapter level names loaded there

    def take_out(self) -> None:
        """Out of the rotation until the watcher sees it answer again; it will have lost its adapters by then."""
        self.healthy, self.loaded = False, set()


class RemoteEngine(Engine):
    kind = "remote"

    def __init__(self, settings: EngineSettings, model_path: Path, work_dir: Path) -> None:
        super().__init__(settings, model_path, work_dir)
        if not settings.upstreams:
            raise ValueError("the remote engine needs at least one upstream (--upstream URL[,URL...])")
        self.upstreams = [Upstream(url.rstrip("/")) for url in settings.upstreams]
        self._client: httpx.AsyncClient | None = None
        self._health: asyncio.Task[None] | None = None
        self._loras: dict[str, dict[float, str]] = {}  # adapter -> level -> name of that level's copy
        self._lora_lock = asyncio.Lock()
        self._running = 0
        self.adapter_dir = settings.adapter_dir or work_dir / "loras"

    # ---- lifecycle -------------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=5.0))
        await asyncio.gather(*(self._check(u) for u in self.upstreams))
        if not any(u.healthy for u in self.upstreams):
            raise RuntimeError(f"no upstream answers: {[u.url for u in self.upstreams]}")
        self._health = asyncio.create_task(self._watch())

    async def shutdown(self) -> None:
        if self._health is not None:
            self._health.cancel()
            await asyncio.gather(self._health, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    async def check_health(self) -> bool:
        return any(u.healthy for u in self.upstreams)

    def num_running(self) -> int:
        return self._running

    async def _check(self, upstream: Upstream) -> None:
        assert self._client is not None
        try:
            r = await self._client.get(upstream.url + "/v1/models", timeout=2.0)
            r.raise_for_status()
            served = {m["id"] for m in r.json()["data"]}
        except (httpx.HTTPError, ValueError, KeyError):
            if upstream.healthy:
                logger.warning("upstream %s is down; taken out", upstream.url)
            upstream.take_out()
            return
        upstream.loaded &= served  # a restarted upstream has lost its adapters
        missing = {n: p for levels in self._loras.values() for n, p in self._level_paths(levels).items()
                   if n not in upstream.loaded}
        try:
            for name, path in missing.items():
                await self._load_on(upstream, name, path)
        except ServiceUnavailableError:
            upstream.healthy = False
            return
        if not upstream.healthy:
            logger.info("upstream %s is serving", upstream.url)
        upstream.healthy = True

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_EVERY_S)
            await asyncio.gather(*(self._check(u) for u in self.upstreams))

    def _pick(self, tried: Container[str] = ()) -> Upstream:
        healthy = [u for u in self.upstreams if u.healthy and u.url not in tried]
        if not healthy:
            raise ServiceUnavailableError("no upstream vLLM server is available")
        return min(healthy, key=lambda u: u.outstanding)

    # ---- LoRA ------------------------------------------------------------------------------------------------------
    def _level_paths(self, levels: dict[float, str]) -> dict[str, str]:
        return {name: str(scaled_copy_dir(self.adapter_dir, name.rsplit("@", 1)[0], level))
                for level, name in levels.items()}

    async def _load_on(self, upstream: Upstream, name: str, path: str) -> None:
        assert self._client is not None
        try:
            r = await self._client.post(upstream.url + "/v1/load_lora_adapter",
                                        json={"lora_name": name, "lora_path": path})
        except httpx.HTTPError as exc:
            raise ServiceUnavailableError(f"upstream {upstream.url} did not load adapter {name}: {exc}") from exc
        if r.status_code != 200 and "already been loaded" not in r.text:
            raise InvalidRequestError(f"upstream {upstream.url} refused adapter {name}: {r.text[:300]}")
        upstream.loaded.add(name)

    async def load_lora(self, name: str, path: Path) -> None:
        """Scaled copies go under the work folder, which upstreams must read at the same path (a shared volume)."""
        async with self._lora_lock:
            copies = await asyncio.to_thread(write_scaled_copies, path, self.adapter_dir, name,
                                             self.info.lora_scale_levels)
            levels = {level: f"{name}@{level:g}" for level in copies}
            for upstream in self.upstreams:
                if upstream.healthy:
                    for level, copy in copies.items():
                        upstream.loaded.discard(levels[level])
                        await self._unload_on(upstream, levels[level])
                        await self._load_on(upstream, levels[level], str(copy))
            self._loras[name] = levels

    async def _unload_on(self, upstream: Upstream, level_name: str) -> None:
        assert self._client is not None
        with contextlib.suppress(httpx.HTTPError):
            await self._client.post(upstream.url + "/v1/unload_lora_adapter", json={"lora_name": level_name})

    async def unload_lora(self, name: str) -> None:
        async with self._lora_lock:
            for level_name in self._loras.pop(name, {}).values():
                for upstream in self.upstreams:
                    upstream.loaded.discard(level_name)
                    if upstream.healthy:
                        await self._unload_on(upstream, level_name)

    def loaded_loras(self) -> set[str]:
        return set(self._loras)

    # ---- inference -------------------------------------------------------------------------------------------------
    def _body(self, request: EngineRequest) -> dict[str, Any]:
        from guards.logits.args import to_extra_args

        o = request.sampling
        body: dict[str, Any] = {
            "model": self.info.served_model_name, "max_tokens": o.max_tokens, "temperature": o.temperature,
            "top_p": o.top_p, "top_k": o.top_k, "min_p": o.min_p, "repetition_penalty": o.repetition_penalty,
            "min_tokens": o.min_tokens, "seed": o.seed, "stop": list(o.stop), "stop_token_ids": list(o.stop_token_ids),
            "include_stop_str_in_output": o.include_stop_str_in_output, "presence_penalty": o.presence_penalty,
            "frequency_penalty": o.frequency_penalty, "ignore_eos": o.ignore_eos,
            "skip_special_tokens": o.skip_special_tokens,
            "spaces_between_special_tokens": o.spaces_between_special_tokens,
            "stream": True, "stream_options": {"include_usage": True}, "return_token_ids": True,
            "return_tokens_as_token_ids": True,
        }
        if o.logit_bias:
            body["logit_bias"] = {str(k): v for k, v in o.logit_bias.items()}
        if o.allowed_token_ids is not None:
            body["allowed_token_ids"] = list(o.allowed_token_ids)
        if o.bad_words:
            body["bad_words"] = list(o.bad_words)
        if o.logprobs is not None:
            body["logprobs"] = o.logprobs
        if o.prompt_logprobs is not None:
            # vLLM reports prompt logprobs only on a collected answer (a stream asking for them is refused)
            body["prompt_logprobs"] = o.prompt_logprobs
            body["stream"] = False
            del body["stream_options"]
        if o.structured is not None:
            body["structured_outputs"] = o.structured.vllm_params()
        if request.lora is not None:
            body["model"] = self._loras[request.lora.name][request.lora.scale]
        if request.logits is not None and not request.logits.is_empty():
            body["vllm_xargs"] = to_extra_args(request.logits)
        if request.prompt_embeds is not None:
            import torch

            buffer = io.BytesIO()
            torch.save(request.prompt_embeds.contiguous(), buffer)
            body["prompt_embeds"] = base64.b64encode(buffer.getvalue()).decode()
        else:
            body["prompt"] = list(request.prompt_token_ids or [])
        return body

    def validate_request(self, request: EngineRequest) -> None:
        if request.lora is not None and request.lora.name not in self._loras:
            raise InvalidRequestError(f"LoRA adapter '{request.lora.name}' is not loaded", param="lora")
        super().validate_request(request)

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]:
        self.validate_request(request)
        body = self._body(request)
        tried: set[str] = set()
        while True:
            upstream = self._pick(tried)
            try:
                async for out in self._generate_on(upstream, request, body):
                    yield out
                return
            except _NotReached:
                # refused before it started (an upstream that died since its last check): nothing ran, so another
                # one may serve it, and the one that refused is out until the watcher sees it answer again
                tried.add(upstream.url)

    async def _generate_on(self, upstream: Upstream, request: EngineRequest,
                           body: dict[str, Any]) -> AsyncIterator[EngineOutput]:
        assert self._client is not None
        upstream.outstanding += 1
        self._running += 1
        n_prompt, n_out = request.num_prompt_tokens, 0
        try:
            async with self._client.stream("POST", upstream.url + "/v1/completions", json=body,
                                           headers={"X-Request-Id": request.request_id}) as response:
                if response.status_code >= 400:
                    text = (await response.aread()).decode(errors="replace")
                    raise _upstream_error(upstream.url, response.status_code, text)
                if not body["stream"]:
                    for choice in json.loads(await response.aread()).get("choices", []):
                        yield _output(choice, n_prompt, n_out, request.prompt_token_ids or request.embeds_token_ids)
                    return
                async for line in response.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if "error" in chunk:  # vLLM's error event, e.g. a malformed constraint found as it starts
                        error = chunk["error"] if isinstance(chunk["error"], dict) else {}
                        code = error.get("code")
                        raise _upstream_error(upstream.url, code if isinstance(code, int) else 500, line[6:])
                    for choice in chunk.get("choices", []):
                        out = _output(choice, n_prompt, n_out, request.prompt_token_ids or request.embeds_token_ids)
                        n_out = out.num_output_tokens
                        yield out
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            upstream.take_out()
            raise _NotReached from exc
        except httpx.HTTPError as exc:
            upstream.take_out()
            raise ServiceUnavailableError(f"upstream {upstream.url} went away mid-request: {exc!r}") from exc
        finally:
            upstream.outstanding -= 1
            self._running -= 1


class _NotReached(Exception):
    """The upstream refused the connection: the request never started there."""


def _upstream_error(url: str, status: int, text: str) -> GatewayError:
    """vLLM's own answer, passed on: a client error (4xx) as a 400 with vLLM's message and param; anything else is
    the upstream failing (503)."""
    if 400 <= status < 500:
        try:
            param = json.loads(text).get("error", {}).get("param")
        except (ValueError, AttributeError):
            param = None
        return InvalidRequestError(_message(text), param=param if isinstance(param, str) else None)
    return ServiceUnavailableError(f"upstream {url} failed: {_message(text)}")


def _message(text: str) -> str:
    try:
        body = json.loads(text)
        return str(body.get("error", {}).get("message") or body.get("message") or text)[:500]
    except ValueError:
        return text[:500]


def _id(token: str) -> int:
    return int(token.removeprefix("token_id:"))


def _output(choice: dict[str, Any], n_prompt: int, n_out: int, prompt_ids: list[int] | None) -> EngineOutput:
    ids = list(choice.get("token_ids") or [])
    logprobs = None
    lp = choice.get("logprobs")
    if lp and lp.get("tokens"):
        logprobs = [TokenLogprobs(token_id=_id(t), logprob=v, top=sorted(((_id(k), x) for k, x in (top or {}).items()),
                                                                        key=lambda kv: -kv[1]))
                    for t, v, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"], strict=True)]
    prompt_lps = None
    if choice.get("prompt_logprobs") is not None:
        ids_in = prompt_ids or []
        prompt_lps = [None if p is None or i >= len(ids_in) else _prompt_position(p, ids_in[i])
                      for i, p in enumerate(choice["prompt_logprobs"])]
    finish = choice.get("finish_reason")
    return EngineOutput(text=choice.get("text", ""), token_ids=ids, num_prompt_tokens=n_prompt,
                        num_output_tokens=n_out + len(ids),
                        finish_reason=finish if finish in ("stop", "length", "abort") else None,
                        finished=finish is not None, logprobs=logprobs, prompt_logprobs=prompt_lps,
                        stop_reason=choice.get("stop_reason"))


def _prompt_position(position: dict[str, dict[str, Any]], own: int) -> TokenLogprobs:
    """vLLM's {token id: {logprob, rank, decoded_token}} for one prompt position whose token is ``own``."""
    items = {int(k): float(v["logprob"]) for k, v in position.items()}
    top = sorted(items.items(), key=lambda kv: -kv[1])
    rank = position.get(str(own), {}).get("rank")
    return TokenLogprobs(token_id=own, logprob=max(items.get(own, float("-inf")), -9999.0), top=top,
                         rank=rank if isinstance(rank, int) else None)
