"""A request body checked against vLLM's own request model, where vLLM is installed.

Clients of ``vllm serve`` expect its answer to a malformed body: the same status, the error ``type`` it gives (its
request model answers with the status phrase, ``Bad Request``) and the same ``param``. Rather than restate vLLM's
type rules field by field, the gateway runs the body through vLLM's model first and answers its errors as vLLM's
handler does; what passes goes on to the gateway's own model and checks. Without vLLM (the reference engine, or a
remote-mode gateway installed without it) the gateway's model alone decides.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel, ValidationError

from server.errors import InvalidRequestError, RequestValidationFailed, validation_param


@functools.lru_cache(maxsize=2)
def vllm_request_model(chat: bool) -> type[BaseModel] | None:
    try:
        if chat:
            from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
            return ChatCompletionRequest
        from vllm.entrypoints.openai.completion.protocol import CompletionRequest
        return CompletionRequest
    except Exception:  # not installed, or another vLLM layout: the gateway's model alone decides
        return None


def check_like_vllm(raw: Any, chat: bool) -> bool:
    """Raise what `vllm serve` answers when its request model refuses ``raw``; True when it takes it, False when
    vLLM is not here to ask."""
    model = vllm_request_model(chat)
    if model is None:
        return False
    try:
        model.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        first: dict[str, Any] = dict(errors[0]) if errors else {}
        # vLLM's handler: a validator that names its parameter is believed, else the first error's field
        named = next((p for e in errors if (p := getattr((e.get("ctx") or {}).get("error"), "parameter", None))),
                     None)
        field = validation_param(first.get("loc", ()))
        msg = str(first.get("msg", "invalid request"))
        raise RequestValidationFailed(f"Invalid value for '{field}': {msg}" if field else msg,
                                      param=named or validation_param(("body", *first.get("loc", ())))) from None
    except Exception as exc:  # noqa: BLE001
        if getattr(exc, "parameter", None) is not None:  # vLLM's own validation error, raised as it is
            raise InvalidRequestError(str(exc), param=exc.parameter) from None  # type: ignore[attr-defined]
        # a vLLM validator that breaks on input it did not expect (vLLM answers 500): the gateway's model answers it
        return True
    return True
