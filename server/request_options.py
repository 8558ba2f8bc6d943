"""A wire request's sampling fields -> the engine's ``SamplingOptions``, with vLLM's meanings and checks.

Everything a client can ask of decoding is read here, once; what the engine in use cannot do is refused by the
engine's ``unsupported`` (a 400 naming the field), what no engine here can do by ``server.unsupported``.
"""

from __future__ import annotations

import json

from server.engines.base import SamplingOptions, StructuredSpec
from server.errors import ContextLengthExceeded, InvalidRequestError
from server.protocol import (
    INT64_MAX,
    INT64_MIN,
    ChatCompletionRequest,
    CompletionRequest,
    SamplingFields,
    StructuredOutputs,
)


def structured_spec(body: SamplingFields) -> StructuredSpec | None:
    """vLLM's ``structured_outputs``, or OpenAI's ``response_format`` (json_object, json_schema); not both."""
    given: StructuredOutputs | None = body.structured_outputs
    fmt = getattr(body, "response_format", None)
    if fmt is not None and fmt.type != "text" and given is not None:
        raise InvalidRequestError("give either response_format or structured_outputs, not both",
                                  param="response_format")
    if fmt is not None and fmt.type == "json_object":
        return StructuredSpec(kind="json_object")
    if fmt is not None and fmt.type == "json_schema":
        assert fmt.json_schema is not None
        return StructuredSpec(kind="json", value=json.dumps(fmt.json_schema.json_schema))
    if given is None:
        return None
    flags = {"disable_any_whitespace": given.disable_any_whitespace,
             "disable_additional_properties": given.disable_additional_properties,
             "whitespace_pattern": given.whitespace_pattern}
    if given.json_schema is not None:
        schema = given.json_schema
        if isinstance(schema, str):
            try:
                json.loads(schema)
            except ValueError as exc:
                raise InvalidRequestError(f"structured_outputs.json is not valid JSON: {exc}",
                                          param="structured_outputs.json") from None
        return StructuredSpec(kind="json", value=schema if isinstance(schema, str) else json.dumps(schema), **flags)
    if given.regex is not None:
        return StructuredSpec(kind="regex", value=given.regex, **flags)
    if given.grammar is not None:
        return StructuredSpec(kind="grammar", value=given.grammar, **flags)
    if given.choice is not None:
        return StructuredSpec(kind="choice", choices=tuple(given.choice), **flags)
    return StructuredSpec(kind="json_object", **flags)


def logprob_counts(body: ChatCompletionRequest | CompletionRequest) -> tuple[int | None, int | None]:
    """(logprobs per generated token, per prompt token) the engine must report, or None."""
    if isinstance(body, ChatCompletionRequest):
        generated = (body.top_logprobs or 0) if body.logprobs else None
        if body.prompt_logprobs is None and body.echo:  # vLLM's chat: echo reports the prompt's logprobs
            return generated, body.top_logprobs or 0
        return generated, body.prompt_logprobs
    prompt = body.prompt_logprobs
    if body.echo and body.logprobs is not None:  # echoed prompt tokens carry logprobs too (vLLM)
        prompt = max(prompt or 0, body.logprobs)
    return body.logprobs, prompt


def sampling_options(body: ChatCompletionRequest | CompletionRequest, prompt_len: int, requested: int | None,
                     limit: int) -> SamplingOptions:
    # vLLM's rules: a prompt or a max_tokens over the context is refused; a max_tokens that fits the context but
    # not beside this prompt is cut to what is left
    if prompt_len >= limit:
        raise ContextLengthExceeded(f"This model's maximum context length is {limit} tokens; your prompt has "
                                    f"{prompt_len} tokens. Please shorten it.", param="input_tokens")
    if requested is not None and requested > limit:
        raise ContextLengthExceeded(f"max_tokens={requested} cannot be greater than the model's maximum context "
                                    f"length ({limit} tokens). Please request fewer output tokens.",
                                    param="max_tokens")
    max_tokens = min(requested, limit - prompt_len) if requested is not None else limit - prompt_len
    if body.n > 1 and body.temperature is not None and body.temperature < 1e-5:
        # vLLM's rule: greedy choices would all be the same
        raise InvalidRequestError(f"n must be 1 when using greedy sampling, got {body.n}.", param="n")
    if body.min_tokens > max_tokens:
        raise InvalidRequestError(f"min_tokens ({body.min_tokens}) must be at most max_tokens ({max_tokens})",
                                  param="min_tokens")
    bias: dict[int, float] | None = None
    if body.logit_bias:
        try:
            bias = {int(k): min(100.0, max(-100.0, float(v))) for k, v in body.logit_bias.items()}
        except ValueError:
            raise InvalidRequestError("logit_bias keys must be token ids", param="logit_bias") from None
    logprobs, prompt_logprobs = logprob_counts(body)
    return SamplingOptions(
        max_tokens=max_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        top_k=0 if body.top_k in (None, -1) else body.top_k,
        min_p=body.min_p or 0.0,
        repetition_penalty=1.0 if body.repetition_penalty is None else body.repetition_penalty,
        min_tokens=body.min_tokens,
        seed=body.seed,
        stop=tuple(body.stop_list()),
        stop_token_ids=tuple(body.stop_token_ids or ()),
        include_stop_str_in_output=body.include_stop_str_in_output,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        logit_bias=bias,
        allowed_token_ids=tuple(body.allowed_token_ids) if body.allowed_token_ids is not None else None,
        bad_words=tuple(body.bad_words or ()),
        ignore_eos=body.ignore_eos,
        skip_special_tokens=body.skip_special_tokens,
        spaces_between_special_tokens=body.spaces_between_special_tokens,
        logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
        structured=structured_spec(body),
    )


def choice_seed(seed: int | None, index: int) -> int | None:
    """Distinct seeds per choice (n > 1 with a seed: n different, reproducible samples), kept in int64."""
    if seed is None or index == 0:
        return seed
    return (seed + index - INT64_MIN) % 2**64 + INT64_MIN if seed + index > INT64_MAX else seed + index


def truncate(token_ids: list[int], keep: int | None, limit: int) -> list[int]:
    """vLLM's truncate_prompt_tokens: keep the prompt's last ``keep`` tokens (-1: as many as the context holds)."""
    if keep is None:
        return token_ids
    keep = limit if keep == -1 else keep
    if keep > limit:
        raise InvalidRequestError(f"truncate_prompt_tokens ({keep}) cannot be greater than max_model_len "
                                  f"({limit}); use a smaller value", param="truncate_prompt_tokens")
    return token_ids[-keep:] if keep else []
