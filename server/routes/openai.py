"""/v1: the OpenAI-compatible API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from server.deps import ServiceDep
from server.errors import ErrorResponse
from server.protocol import ChatCompletionRequest, CompletionRequest, ModelCard, ModelList, ModelPermission
from server.responses import ChatCompletion, Completion
from server.service import Answer, Stream
from server.vllm_parity import check_like_vllm

router = APIRouter(prefix="/v1", tags=["openai"])

_ERRORS: dict[int | str, dict[str, Any]] = {400: {"model": ErrorResponse}, 404: {"model": ErrorResponse},
                                           503: {"model": ErrorResponse}}
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DISCONNECT_POLL_S = 0.1


# nginx's "client closed request": nobody reads it, but the access log and metrics say what happened
CLIENT_CLOSED = 499


@router.get("/models", response_model=ModelList)
async def list_models(service: ServiceDep) -> ModelList:
    info = service.engine.info
    return ModelList(data=[ModelCard(id=info.served_model_name, root=str(info.model_path),
                                     max_model_len=info.max_model_len, permission=[ModelPermission()])])


async def _serve(request: Request | None, answering: Coroutine[Any, Any, Answer[Any] | Stream]) -> Response:
    """Stream or collect the service's answer, its headers either way. A collected answer is aborted in the engine
    as soon as the client disconnects: a client timeout must not leave the engine generating for nobody (streams are
    aborted by Starlette closing the body iterator)."""
    task = asyncio.ensure_future(answering)
    while request is not None:
        done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
        if done:
            break
        if await request.is_disconnected():
            task.cancel()  # cancels the engine iterators, which abort their requests (n > 1 included)
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return Response(status_code=CLIENT_CLOSED)
    answer = await task
    if isinstance(answer, Stream):
        return StreamingResponse(answer.lines, media_type="text/event-stream", headers=_SSE_HEADERS | answer.headers)
    return Response(answer.body.model_dump_json(), media_type="application/json", headers=answer.headers)


@router.post("/chat/completions", response_model=ChatCompletion, responses=_ERRORS)
async def chat_completions(body: ChatCompletionRequest, service: ServiceDep, request: Request) -> Response:
    check_like_vllm(await request.json(), chat=True)
    return await _serve(request, service.chat(body))


@router.post("/completions", response_model=Completion, responses=_ERRORS)
async def completions(body: CompletionRequest, service: ServiceDep, request: Request) -> Response:
    check_like_vllm(await request.json(), chat=False)
    return await _serve(request, service.complete(body))
