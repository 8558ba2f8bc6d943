"""vLLM's ``/ping`` and ``/invocations``, for hosts (SageMaker and others) that probe and invoke by these paths.

``/invocations`` takes a chat body (``messages``) or a completions body (``prompt``) and answers exactly as the
matching ``/v1`` endpoint does, guards included.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from server.deps import GatewayDep, ServiceDep
from server.errors import InvalidRequestError
from server.protocol import ChatCompletionRequest, CompletionRequest
from server.routes import health, openai

router = APIRouter(tags=["vllm"])


@router.api_route("/ping", methods=["GET", "POST"])
async def ping(gateway: GatewayDep) -> JSONResponse:
    return await health.health(gateway)


@router.post("/invocations")
async def invocations(service: ServiceDep, request: Request, body: dict[str, Any] = Body(...)) -> Response:  # noqa: B008
    try:
        if "messages" in body:
            return await openai.chat_completions(ChatCompletionRequest.model_validate(body), service, request)
        if "prompt" in body:
            return await openai.completions(CompletionRequest.model_validate(body), service, request)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from exc
    raise InvalidRequestError("an invocation is a chat body (messages) or a completions body (prompt)",
                              param="messages")
