"""The differential suite's requests: every field of vLLM's chat and completion requests that docs/api.md lists,
with valid and invalid values, streamed and not, and each structured-output kind with malformed inputs."""

from __future__ import annotations

from typing import Any

from tests.side_by_side import Case

CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"
MODEL = "smollm2"
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
BASE = {CHAT: {"model": MODEL, "messages": MESSAGES, "max_tokens": 5, "temperature": 0},
        COMPLETIONS: {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 5, "temperature": 0}}
SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"]}

# field -> values, each sent on both endpoints; valid and invalid mixed (the servers decide which is which)
SHARED: dict[str, list[Any]] = {
    "model": [None, "other-model", 5, ""],
    "temperature": [0.7, 2.0, 2.5, -0.5, "hot", None],
    "top_p": [0.5, 1.0, 0.0, 1.5, -1, None],
    "n": [2, 0, -1, "two", None],
    "seed": [42, -1, 2**63 - 1, 2**63, -(2**63) - 1, "x", None],
    "stop": ["Paris", ["is", "France"], ["a", "b", "c", "d", "e"], 5, [1], "", [], None],
    "stream": [False, "yes", 2, None],
    "stream_options": [{"include_usage": True}, {"continuous_usage_stats": True}, None, "x", {"include_usage": "x"}],
    "presence_penalty": [1.0, 2.0, 2.5, -2.5, "x"],
    "frequency_penalty": [0.5, -2.0, 3.0, [1]],
    "repetition_penalty": [1.2, 0.0, -1.0, 2.5, "x"],
    "max_tokens": [1, 0, -1, 1024, 100000, "x", 2.5, None],
    "min_tokens": [2, 5, 6, -1, "x"],
    "logit_bias": [{"504": 5}, {"504": -100}, {"x": 1}, {"999999": 1}, {"504": 101}, {"504": -101}, [], None],
    "allowed_token_ids": [[504, 2], [], [10**9], [-1], "x", None],
    "bad_words": [["Paris"], [], ["a b c"], [5], "Paris", None],
    "ignore_eos": [True, "x"],
    "truncate_prompt_tokens": [3, 0, -1, 1024, 2000, "x", None],
    "skip_special_tokens": [False, "x"],
    "spaces_between_special_tokens": [False, 3],
    "include_stop_str_in_output": [True, "x"],
    "stop_token_ids": [[2], [], [-1], [10**9], "x", None],
    "top_k": [5, 1, 0, -1, -2, 10**9, 2.5, None],
    "min_p": [0.1, 0.0, 1.0, 1.5, -0.1, "x"],
    "user": ["someone", 5, None],
    "prompt_logprobs": [0, 1, 20, 21, -1, -2, "x", None],
    "return_token_ids": [True, "x", None],
    "return_tokens_as_token_ids": [True, "x"],
    "add_special_tokens": [True, False, "x"],
    "request_id": ["my-request", 5],
    "response_format": [{"type": "text"}, {"type": "json_object"},
                        {"type": "json_schema", "json_schema": {"name": "city", "schema": SCHEMA}},
                        {"type": "json_schema"}, {"type": "json_schema", "json_schema": {"name": "x"}},
                        {"type": "bogus"}, "json", None],
    "structured_outputs": [{"choice": ["Paris", "Lyon"]}, {"regex": r"(19|20)\d\d"}, {"json": SCHEMA},
                           {"json": '{"type": "string"}'}, {"grammar": 'root ::= "yes" | "no"'},
                           {"json_object": True},
                           {"regex": "[.*"}, {"grammar": "root ::= ("}, {"json": "{not json"},
                           {"json": {"type": "object", "properties": {"a": {"type": "nonsense"}}}},
                           {"choice": []}, {"choice": ["a"], "regex": "a"}, {}, {"nonsense": 1}, "x", None],
    # fields the gateway refuses on purpose (tests.side_by_side.REFUSED_ON_PURPOSE), and their defaults, which pass
    "use_beam_search": [True, False],
    "length_penalty": [0.5, 1.0],
    "vllm_xargs": [{"a": 1}, None],
    "cache_salt": ["salt"],
    "priority": [0, 1],
}
CHAT_ONLY: dict[str, list[Any]] = {
    "messages": [[], [{"role": "user"}], [{"content": "hi"}], [{"role": "user", "content": 5}],
                 [{"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]}],
                 [{"role": "user", "content": [{"type": "bogus"}]}],
                 [{"role": "system", "content": "Be brief."}, *MESSAGES],
                 [{"role": "narrator", "content": "A quiet morning."}, *MESSAGES], "hi", None],
    "logprobs": [True, False, "x", None],
    "top_logprobs": [0, 5, 20, 21, -1],
    "max_completion_tokens": [3, 0, -1, "x"],
    "echo": [True, "x"],
    "add_generation_prompt": [False, "x"],
    "continue_final_message": [True, "x"],
    "chat_template_kwargs": [{"enable_thinking": False}, "x", None],
    "tools": [[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
              [{"type": "function"}], [], "x", None],
    "tool_choice": ["none", "auto", "required", "bogus", None],
    "parallel_tool_calls": [True, False, "x"],
    "include_reasoning": [True, False],
    "reasoning_effort": ["low", "bogus"],
    "chat_template": ["{{ messages }}"],
    "documents": [[{"text": "x"}]],
}
COMPLETION_ONLY: dict[str, list[Any]] = {
    "prompt": ["", [], ["One", "Two"], [504, 1228], [[504], [1228, 2]], [10**9], [-1], ["a", 5], 5, None,
               "word " * 2000],
    "logprobs": [0, 1, 5, 20, 21, -1, True, "x", None],
    "echo": [True, "x"],
    "best_of": [1, 2, 0, "x", None],
    "suffix": ["!", None],
    "prompt_embeds": ["AAAA"],
}
# requests whose text is sampled (no temperature 0) or echoes nothing comparable: shape and status only
_SAMPLED = {"temperature", "top_p", "seed", "n"}


def _with(path: str, name: str, value: Any, **extra: Any) -> dict[str, Any]:
    body = {**BASE[path], **extra}
    if value is _ABSENT:
        body.pop(name, None)
    else:
        body[name] = value
    return body


_ABSENT = object()


def field_cases() -> list[Case]:
    cases: list[Case] = []
    for path, table in ((CHAT, {**SHARED, **CHAT_ONLY}), (COMPLETIONS, {**SHARED, **COMPLETION_ONLY})):
        kind = "chat" if path == CHAT else "completions"
        for name, values in table.items():
            if name in BASE[path]:
                values = [*values, _ABSENT]
            for value in values:
                extra: dict[str, Any] = {}
                if name == "stream_options":
                    extra["stream"] = value is not None and value != "x"
                if name in ("top_logprobs", "return_tokens_as_token_ids") and path == CHAT:
                    extra["logprobs"] = True
                if name == "return_tokens_as_token_ids" and path == COMPLETIONS:
                    extra["logprobs"] = 1
                if name == "continue_final_message":
                    extra["messages"] = [*MESSAGES, {"role": "assistant", "content": "The capital is"}]
                    extra["add_generation_prompt"] = False
                if name == "seed":
                    extra["temperature"] = 1.0
                label = "absent" if value is _ABSENT else repr(value)[:40]
                # sampled text is compared only where a seed fixes it (vLLM reads seed -1 as none)
                seeded = name == "seed" and isinstance(value, int) and value != -1
                cases.append(Case(f"{kind}:{name}={label}", path, _with(path, name, value, **extra),
                                  compare_text=name not in _SAMPLED or seeded, field=name))
    return cases


def stream_cases() -> list[Case]:
    """Streaming: plain, with usage, with logprobs, several choices, stops, and each structured-output kind."""
    variants: list[tuple[str, dict[str, Any]]] = [
        ("plain", {}), ("usage", {"stream_options": {"include_usage": True}}),
        ("continuous", {"stream_options": {"include_usage": True, "continuous_usage_stats": True}}),
        ("n2", {"n": 2, "temperature": 1.0, "seed": 7}), ("stop", {"stop": ["Paris"]}),
        ("max_tokens_0", {"max_tokens": 0}), ("return_token_ids", {"return_token_ids": True}),
        ("choice", {"structured_outputs": {"choice": ["Paris", "Lyon"]}}),
        ("regex", {"structured_outputs": {"regex": r"(19|20)\d\d"}}),
        ("bad_regex", {"structured_outputs": {"regex": "[.*"}}),
        ("bad_grammar", {"structured_outputs": {"grammar": "root ::= ("}}),
        ("json_schema", {"response_format": {"type": "json_schema",
                                             "json_schema": {"name": "city", "schema": SCHEMA}}}),
        ("bad_max_tokens", {"max_tokens": -1}), ("bad_model", {"model": "other-model"}),
    ]
    cases = []
    for path in (CHAT, COMPLETIONS):
        kind = "chat" if path == CHAT else "completions"
        logprobs = {"logprobs": True, "top_logprobs": 2} if path == CHAT else {"logprobs": 2}
        for name, extra in [*variants, ("logprobs", logprobs)]:
            body = {**BASE[path], **extra, "stream": True}
            cases.append(Case(f"{kind}:stream:{name}", path, body, compare_text="seed" not in extra))
    return cases


def malformed_cases() -> list[Case]:
    cases = []
    for path in (CHAT, COMPLETIONS):
        kind = "chat" if path == CHAT else "completions"
        for name, raw in (("not-json", b"{not json"), ("empty", b""), ("array", b"[]"), ("string", b'"hi"'),
                          ("null", b"null"), ("truncated", b'{"model": "smollm2", "messages": [')):
            cases.append(Case(f"{kind}:body={name}", path, raw))
    return cases


def all_cases() -> list[Case]:
    return [*field_cases(), *stream_cases(), *malformed_cases()]
