"""Send one request to bare ``vllm serve`` and to the gateway, and say how the two answers differ.

What is compared is what a client can rely on: the status code, the error's ``type`` and ``param``, and the shape of
a response (field names and JSON types, chunk by chunk when streamed), plus the text where both decode the same
tokens (temperature 0 on the same engine). Sampled text, ids and timestamps are not compared.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx

from server.unsupported import REFUSED

# Requests where the gateway differs from bare vLLM on purpose, with the reason; the tests read them from here.
# A field vLLM honours but the gateway cannot: the gateway answers 400 naming it (server/unsupported.py says why).
REFUSED_ON_PURPOSE: dict[str, str] = REFUSED
# vLLM sets no bound on n; the gateway's keeps one request from taking every engine slot many times over.
BOUNDED_ON_PURPOSE = {"n": "at most 128 choices per request"}
# vLLM answers some client input with a 5xx (a str where it expects an object); the gateway answers 400 naming it.
# A malformed structured-output constraint on a streamed request: vLLM starts a 200 stream and sends the error as
# an event; the gateway checks the constraint before the stream starts and answers 400, as it does unstreamed.
# Not compared at all: the gateway's own response headers (x-unlearning-targets, x-request-id) and routes
# (/admin, /ready, /metrics names prefixed ugw_), which bare vLLM does not have.
NOT_COMPARED = ("headers", "/admin/*", "/ready", "ugw_* metrics")


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    body: Any  # a JSON value, or bytes sent as they are (malformed JSON)
    compare_text: bool = True
    # the field this case varies: a deliberate difference when it is in REFUSED_ON_PURPOSE / BOUNDED_ON_PURPOSE
    field: str | None = None


@dataclass
class Reply:
    status: int
    body: Any
    events: list[Any] = field(default_factory=list)  # the JSON events of a 200 stream, [DONE] as the string

    @property
    def error(self) -> dict[str, Any]:
        return self.body.get("error", {}) if isinstance(self.body, dict) else {}


def send(client: httpx.Client, base_url: str, case: Case) -> Reply:
    try:
        return _send(client, base_url, case)
    except httpx.TransportError:  # a keep-alive connection the server closed (vLLM does after a 5xx): once more
        return _send(client, base_url, case)


def _send(client: httpx.Client, base_url: str, case: Case) -> Reply:
    streamed = isinstance(case.body, dict) and case.body.get("stream") is True
    content = case.body if isinstance(case.body, bytes) else json.dumps(case.body, default=_text).encode()
    headers = {"content-type": "application/json"}
    if not streamed:
        r = client.post(base_url + case.path, content=content, headers=headers)
        return Reply(r.status_code, _json(r.text))
    with client.stream("POST", base_url + case.path, content=content, headers=headers) as r:
        text = r.read().decode()
    if r.status_code != 200 or not r.headers.get("content-type", "").startswith("text/event-stream"):
        return Reply(r.status_code, _json(text))
    events = [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]
    return Reply(r.status_code, None, [e if e == "[DONE]" else _json(e) for e in events])


def _text(value: Any) -> str:
    """Generated bodies may hold bytes: sent as the text they spell."""
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def shape(value: Any) -> Any:
    """Field names and JSON types; a list is the set of its items' shapes (its length is content, not shape)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        seen: list[Any] = []
        for item in value:
            s = shape(item)
            if s not in seen:
                seen.append(s)
        return sorted(seen, key=json.dumps)
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "null" if value is None else type(value).__name__


def text_of(reply: Reply) -> list[str] | None:
    """Each choice's text, joined over a stream's chunks."""
    if reply.status != 200:
        return None
    chunks = reply.events if reply.events else [reply.body]
    texts: dict[int, str] = {}
    for chunk in chunks:
        if not isinstance(chunk, dict):
            continue
        for c in chunk.get("choices", []):
            part = c.get("text") if "text" in c else (c.get("message") or c.get("delta") or {}).get("content")
            texts[c.get("index", 0)] = texts.get(c.get("index", 0), "") + (part or "")
    return [texts[i] for i in sorted(texts)]


def differences(bare: Reply, gateway: Reply, compare_text: bool) -> list[str]:
    """What a client of bare vLLM would notice in the gateway's answer; empty when it would notice nothing."""
    if bare.status != gateway.status:
        return [f"status {bare.status} (vLLM) vs {gateway.status} (gateway): {_brief(bare)} | {_brief(gateway)}"]
    out: list[str] = []
    if bare.status != 200:
        b, g = bare.error, gateway.error
        if b.get("type") != g.get("type"):
            out.append(f"error type {b.get('type')!r} vs {g.get('type')!r}")
        # vLLM names the parameter for some errors only; where it does, the gateway must name the same request
        # field (its path below the field follows each server's own model: union branches, list positions)
        if b.get("param") is not None and _field(b["param"]) != _field(g.get("param")):
            out.append(f"error param {b.get('param')!r} vs {g.get('param')!r}")
        if not g.get("message"):
            out.append("the gateway's error has no message")
        return out
    if bare.events or gateway.events:
        # how many steps a stream has depends on timing (the engine merges steps a slow reader has not taken), so
        # a field null on some chunks only (finish_reason before the last) need not be null on both
        out += [f"stream: {d}" for d in shape_diff(_paths(bare.events), _paths(gateway.events), streamed=True)]
    else:
        out += shape_diff(_paths(bare.body), _paths(gateway.body))
    if compare_text and text_of(bare) != text_of(gateway):
        out.append(f"text {text_of(bare)!r} vs {text_of(gateway)!r}")
    return out


def on_purpose(case: Case, bare: Reply, gateway: Reply) -> str | None:
    """Why the gateway's answer differs from vLLM's on purpose, or None when it should not differ."""
    body = case.body if isinstance(case.body, dict) else {}
    if gateway.status == 400 and _field(gateway.error.get("param")) == "n" and isinstance(body.get("n"), int) \
            and body["n"] > 128:
        return BOUNDED_ON_PURPOSE["n"]
    if gateway.status == 400 and bare.status >= 500:
        return "vLLM fails with a server error; the gateway refuses the input"
    if gateway.status == 400 and bare.status == 200 and case.field in REFUSED_ON_PURPOSE:
        # refused by name (the gateway may name another problem of the same body first)
        return REFUSED_ON_PURPOSE[case.field]
    if gateway.status == 400 and bare.status == 200 and bare.events and any(
            isinstance(e, dict) and "error" in e for e in bare.events):
        return "a bad constraint is refused before the stream starts"
    return None


def _field(param: str | None) -> str | None:
    if param is None:
        return None
    return param.removeprefix("body.").split(".")[0]


def _paths(value: Any, prefix: str = "") -> dict[str, set[str]]:
    """Every field path (list items as ``[]``) with the JSON types seen there."""
    out: dict[str, set[str]] = {}
    if isinstance(value, dict):
        out.setdefault(prefix or ".", set()).add("object")
        for k, v in value.items():
            key = "{token id}" if k.isdigit() else k  # prompt_logprobs: keyed by token id
            for path, types in _paths(v, f"{prefix}.{key}").items():
                out.setdefault(path, set()).update(types)
    elif isinstance(value, list):
        out.setdefault(prefix or ".", set()).add("array")
        for item in value:
            for path, types in _paths(item, f"{prefix}[]").items():
                out.setdefault(path, set()).update(types)
    else:
        out[prefix or "."] = {shape(value)}
    return out


def shape_diff(bare: dict[str, set[str]], gateway: dict[str, set[str]], streamed: bool = False) -> list[str]:
    def types(found: set[str]) -> set[str]:
        return found - {"null"} if streamed and found != {"null"} else found

    out = [f"only vLLM has {p}" for p in sorted(bare.keys() - gateway.keys())]
    out += [f"only the gateway has {p}" for p in sorted(gateway.keys() - bare.keys())]
    out += [f"{p}: {sorted(bare[p])} vs {sorted(gateway[p])}" for p in sorted(bare.keys() & gateway.keys())
            if types(bare[p]) != types(gateway[p])]
    return out


def _brief(reply: Reply) -> str:
    if reply.status == 200:
        return "ok"
    return str(reply.error.get("message") or reply.body)[:200]
