"""The gateway's exception tree and its one mapping to HTTP errors, in vLLM's error body.

``{"error": {"message", "type", "param", "code"}}`` with vLLM's type names and the status as ``code``, so that a
client of ``vllm serve`` reads the gateway's errors as it reads vLLM's:

    GatewayError                      500  InternalServerError
    ├── InvalidRequestError           400  BadRequestError
    │   └── ContextLengthExceeded     400  BadRequestError
    ├── (a body that fails validation 400  Bad Request, ``param`` the field's path as vLLM spells it)
    ├── AuthenticationError           401  UnauthorizedError
    ├── PermissionDeniedError         403  ForbiddenError
    ├── NotFoundError                 404  NotFoundError
    │   └── ModelNotFoundError        404  NotFoundError
    ├── ConflictError                 409  ConflictError
    ├── PayloadTooLargeError          413  PayloadTooLargeError
    └── ServiceUnavailableError       503  ServiceUnavailableError
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: int | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class GatewayError(Exception):
    status_code = 500
    error_type = "InternalServerError"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def to_response(self) -> ErrorResponse:
        return ErrorResponse(error=ErrorBody(message=self.message, type=self.error_type, param=self.param,
                                             code=self.status_code))


class InvalidRequestError(GatewayError):
    status_code = 400
    error_type = "BadRequestError"


class ContextLengthExceeded(InvalidRequestError):
    """The prompt and the completion do not fit the context (vLLM names ``input_tokens``)."""


class AuthenticationError(GatewayError):
    status_code = 401
    error_type = "UnauthorizedError"


class PermissionDeniedError(GatewayError):
    status_code = 403
    error_type = "ForbiddenError"


class NotFoundError(GatewayError):
    status_code = 404
    error_type = "NotFoundError"


class ModelNotFoundError(NotFoundError):
    """vLLM's answer for a model it does not serve."""


class ConflictError(GatewayError):
    status_code = 409
    error_type = "ConflictError"


class PayloadTooLargeError(GatewayError):
    status_code = 413
    error_type = "PayloadTooLargeError"


class ServiceUnavailableError(GatewayError):
    status_code = 503
    error_type = "ServiceUnavailableError"


def error_json(exc: GatewayError) -> JSONResponse:
    return JSONResponse(status_code=exc.status_code, content=exc.to_response().model_dump())


def sse_error_event(exc: GatewayError) -> str:
    """Errors after a stream has started can no longer change the status code: they travel as a data event."""
    return f"data: {json.dumps(exc.to_response().model_dump())}\n\n"


# pydantic-core's names for the wrappers and union branches it lists in an error's ``loc``: not field names
_LOC_MARKERS = frozenset({"function-wrap", "function-after", "function-before", "function-plain", "json-or-python",
                          "lax-or-strict", "chain", "default", "nullable", "tagged-union", "union", "str", "int",
                          "float", "bool", "bytes", "list", "tuple", "dict", "set", "none"})


def validation_param(loc: tuple[Any, ...] | list[Any]) -> str | None:
    """The field an error's ``loc`` points at, spelt as vLLM spells it (``body.messages.0.content``)."""
    parts = [str(p) for p in loc if not any(c in str(p) for c in "[]{}()") and str(p).lower() not in _LOC_MARKERS]
    return ".".join(parts) or None


# Errors about a value's JSON type or presence: vLLM's request models catch these, and answer with the status
# phrase as the type. Out-of-range values pass vLLM's models and are refused by its sampling checks instead (type
# BadRequestError, the bare field as param); the gateway's models check both, and answer each as vLLM does.
_SHAPE_ERRORS = ("_type", "_parsing", "missing", "json_invalid", "literal_error", "union_tag", "extra_forbidden",
                 "is_instance_of", "int_from_float", "dataclass_exact_type")


_VLLM_PARAM = {"max_completion_tokens": "max_tokens", "top_logprobs": "logprobs"}


def validation_error(errors: list[dict[str, Any]], vllm_took_it: bool = False) -> InvalidRequestError:
    """``vllm_took_it``: vLLM's own request model accepted the body (``server.vllm_parity``), so vLLM would refuse
    it in its sampling checks: a BadRequestError naming the field."""
    first = errors[0] if errors else {}
    loc = first.get("loc", ())
    field = validation_param([p for p in loc if p not in ("body", "query", "path")])
    msg = first.get("msg", "invalid request")
    kind = str(first.get("type", ""))
    if kind == "json_invalid":
        return RequestValidationFailed("We could not parse the JSON body of your request: " + msg,
                                       param=validation_param(loc))
    message = f"Invalid value for '{field}': {msg}" if field else msg
    if not vllm_took_it and any(marker in kind for marker in _SHAPE_ERRORS):
        return RequestValidationFailed(message, param=validation_param(loc))
    # vLLM's sampling checks name these two after the field they share a bound with
    return InvalidRequestError(message, param=_VLLM_PARAM.get(field or "", field))


class RequestValidationFailed(InvalidRequestError):
    """A body whose JSON does not fit the request model: vLLM answers these with the status phrase as the type."""

    error_type = "Bad Request"


def install_error_handlers(app: FastAPI, like_vllm: Callable[[Any, bool], bool] | None = None) -> None:
    """``like_vllm``: checks a refused OpenAI body against vLLM's own request model (``server.vllm_parity``)."""
    @app.exception_handler(GatewayError)
    async def _gateway(_: Request, exc: GatewayError) -> JSONResponse:
        if exc.status_code >= 500:
            logger.error("request failed: %s", exc.message)
        return error_json(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        chat = request.url.path.endswith("/chat/completions")
        openai_body = (chat or request.url.path.endswith("/completions")) and not any(
            e.get("type") == "json_invalid" for e in exc.errors())
        try:
            took = like_vllm(exc.body, chat) if openai_body and like_vllm is not None else False
        except GatewayError as vllm_answer:
            return error_json(vllm_answer)
        response = error_json(validation_error(list(exc.errors()), vllm_took_it=took))
        if request.url.path.startswith("/admin"):
            # OpenAI clients expect 400 on /v1; the admin API follows the REST convention (422).
            response.status_code = 422
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        cls: type[GatewayError] = {401: AuthenticationError, 403: PermissionDeniedError, 404: NotFoundError,
                                   409: ConflictError, 413: PayloadTooLargeError}.get(exc.status_code,
                                                                                      InvalidRequestError)
        err = cls(str(exc.detail))
        response = error_json(err)
        response.status_code = exc.status_code
        return response

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return error_json(GatewayError("The server had an error while processing your request."))
