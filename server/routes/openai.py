"""/v1: the OpenAI-compatible API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from server.deps import ServiceDep
from server.errors import ErrorResponse
from server.protocol import ChatCompletion, ChatCompletionRequest, Completion, CompletionRequest, ModelCard, ModelList
from server.service import CompletionService

router = APIRouter(prefix="/v1", tags=["openai"])

_ERRORS = {400: {"model": ErrorResponse}, 404: {"model": ErrorResponse}, 503: {"model": ErrorResponse}}
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DISCONNECT_POLL_S = 0.1


# nginx's "client closed request": nobody reads it, but the access log and metrics say what happened
CLIENT_CLOSED = 499


@router.get("/models", response_model=ModelList)
async def list_models(service: ServiceDep) -> ModelList:
    info = service.engine.info
    return ModelList(data=[ModelCard(id=info.served_model_name, created=0, max_model_len=info.max_model_len)])


async def _collect_unless_gone(request: Request | None,
                               collecting: Coroutine[Any, Any, BaseModel]) -> BaseModel | Response:
    """Collect the answer, but abort it in the engine as soon as the client disconnects: a client timeout must not
    leave the engine generating for nobody (streams are aborted by Starlette closing the body iterator)."""
    task = asyncio.ensure_future(collecting)
    if request is None:
        return await task
    while True:
        done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()  # cancels the engine iterators, which abort their requests (n > 1 included)
            with contextlib.suppress(asyncio.CancelledError):
                await task
            return Response(status_code=CLIENT_CLOSED)


async def _respond(service: CompletionService, body: ChatCompletionRequest | CompletionRequest, jobs: list,
                   response: Response, stream: Callable, collect: Callable,
                   request: Request | None = None) -> BaseModel | Response:
    """Stream or collect; either way the targets that fired go out in a header (a collected response's also names
    where the output net filtered; a stream's headers leave before its output exists)."""
    if body.stream:
        return StreamingResponse(stream(body, jobs), media_type="text/event-stream",
                                 headers=_SSE_HEADERS | service.fired_header(jobs))
    result = await _collect_unless_gone(request, collect(body, jobs))
    response.headers.update(service.fired_header(jobs))
    return result


@router.post("/chat/completions", response_model=ChatCompletion, responses=_ERRORS)
async def chat_completions(body: ChatCompletionRequest, service: ServiceDep, response: Response,
                           request: Request = None) -> ChatCompletion | StreamingResponse:  # type: ignore[assignment]
    jobs = await service.prepare_chat(body)  # every 4xx is raised here, before a stream starts
    return await _respond(service, body, jobs, response, service.chat_stream, service.chat,  # type: ignore[return-value]
                          request)


@router.post("/completions", response_model=Completion, responses=_ERRORS)
async def completions(body: CompletionRequest, service: ServiceDep, response: Response,
                      request: Request = None) -> Completion | StreamingResponse:  # type: ignore[assignment]
    jobs = await service.prepare_completion(body)
    return await _respond(service, body, jobs, response, service.complete_stream,  # type: ignore[return-value]
                          service.complete, request)
