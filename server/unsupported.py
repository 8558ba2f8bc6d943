"""Request fields vLLM's OpenAI server honours that this gateway cannot: refused by name, never silently dropped.

A client moving from ``vllm serve`` sends these expecting an effect; ignoring them would give it a different answer
without saying so. A field left at vLLM's default changes nothing and passes. Fields vLLM itself does not know (new
OpenAI SDK fields) are ignored, as vLLM ignores them.
"""

from __future__ import annotations

from typing import Any

from server.errors import InvalidRequestError
from server.protocol import ChatCompletionRequest, CompletionRequest

# field -> (vLLM's default, why this server refuses it)
_SHARED: dict[str, tuple[Any, str]] = {
    "use_beam_search": (False, "beam search is not supported by this server"),
    "length_penalty": (1.0, "length_penalty only applies to beam search, which this server does not run"),
    "logprob_token_ids": (None, "logprob_token_ids is not supported by this server"),
    "priority": (0, "priority scheduling is not enabled on this server"),
    "kv_transfer_params": (None, "disaggregated prefill (kv_transfer_params) is not supported by this server"),
    "ec_transfer_params": (None, "ec_transfer_params is not supported by this server"),
    "vllm_xargs": (None, "vllm_xargs are reserved for the gateway's own logits processor"),
    "mm_processor_kwargs": (None, "this server serves a text-only model"),
    "media_io_kwargs": (None, "this server serves a text-only model"),
    "repetition_detection": (None, "repetition_detection is not supported by this server"),
    "thinking_token_budget": (None, "this model has no reasoning parser"),
    "cache_salt": (None, "cache_salt is not supported by this server"),
    "truncation_side": (None, "truncation_side is not supported; truncate_prompt_tokens keeps the prompt's end"),
    "return_token_offsets": (None, "return_token_offsets is not supported by this server"),
    "return_prompt_text": (None, "return_prompt_text is not supported by this server"),
    "stream_interval": (None, "stream_interval is not supported; every step is streamed"),
    "watermarking": (None, "watermarking is not supported by this server"),
}
_CHAT: dict[str, tuple[Any, str]] = {
    "chat_template": (None, "a request's own chat template is refused (vLLM's default without "
                            "--trust-request-chat-template)"),
    "documents": (None, "this model's chat template takes no documents"),
    "functions": (None, "the deprecated functions field is not supported; use tools"),
    "function_call": (None, "the deprecated function_call field is not supported; use tool_choice"),
}
_COMPLETION: dict[str, tuple[Any, str]] = {
    "prompt_embeds": (None, "client prompt embeddings are refused: the gateway's guards must read the prompt"),
}


# every field refused by name, with the reason (tests/side_by_side.py reads it: the gateway differs there on purpose)
REFUSED: dict[str, str] = {name: why for table in (_SHARED, _CHAT, _COMPLETION) for name, (_, why) in table.items()}
REFUSED["suffix"] = "suffix is not supported by this server"


def refused_field(fields: dict[str, Any] | None, chat: bool) -> str | None:
    """The first field of ``fields`` this server refuses by name, or None."""
    table = {**_SHARED, **(_CHAT if chat else _COMPLETION)}
    for name, value in (fields or {}).items():
        # left at vLLM's default, or empty (an empty dict or list asks for nothing), it changes nothing and passes
        if name in table and value != table[name][0] and value not in (None, {}, [], ""):
            return name
    return None


def refuse_unsupported(extra: dict[str, Any] | None, chat: bool) -> None:
    """``extra``: the request's fields outside its model (pydantic's ``model_extra``)."""
    name = refused_field(extra, chat)
    if name is not None:
        raise InvalidRequestError(f"{name}: {REFUSED[name]}", param=name)


def check_request(body: ChatCompletionRequest | CompletionRequest) -> None:
    """What this server refuses of a request that validated: vLLM fields it cannot honour, and tool choices."""
    refuse_unsupported(body.model_extra, chat=isinstance(body, ChatCompletionRequest))
    if isinstance(body, ChatCompletionRequest):
        # vLLM's answers for a model served without a tool-call parser (this one has none): tools are only
        # rendered into the prompt, and any tool_choice that needs parsing is refused
        if body.tool_choice == "required" and not body.tools:
            raise InvalidRequestError("tool_choice 'required' needs tools", param="tool_choice")
        choice = body.tool_choice if body.tool_choice is not None or not body.tools else "auto"
        if choice == "auto":
            raise InvalidRequestError('"auto" tool choice requires --enable-auto-tool-choice and '
                                      "--tool-call-parser to be set", param="tool_choice")
        if choice not in (None, "none"):
            desc = f'function "{choice.function.name}"' if not isinstance(choice, str) else f'"{choice}"'
            raise InvalidRequestError(f"tool_choice={desc} requires --tool-call-parser to be set",
                                      param="tool_choice")
    if isinstance(body, CompletionRequest):
        if body.suffix:
            raise InvalidRequestError(REFUSED["suffix"], param="suffix")
