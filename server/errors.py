"""The gateway's exception tree and its one mapping to OpenAI-style HTTP errors.

    GatewayError                      500  server_error
    ├── InvalidRequestError           400  invalid_request_error
    │   └── ContextLengthExceeded     400  invalid_request_error / context_length_exceeded
    ├── AuthenticationError           401  authentication_error
    ├── PermissionDeniedError         403  permission_error
    ├── NotFoundError                 404  not_found_error
    │   └── ModelNotFoundError        404  not_found_error / model_not_found
    ├── ConflictError                 409  conflict_error
    ├── PayloadTooLargeError          413  invalid_request_error
    └── ServiceUnavailableError       503  service_unavailable
"""

from __future__ import annotations

import json
import logging
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
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class GatewayError(Exception):
    status_code = 500
    error_type = "server_error"
    default_code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code

    def to_response(self) -> ErrorResponse:
        return ErrorResponse(error=ErrorBody(message=self.message, type=self.error_type, param=self.param,
                                             code=self.code))


class InvalidRequestError(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequestError):
    default_code = "context_length_exceeded"


class AuthenticationError(GatewayError):
    status_code = 401
    error_type = "authentication_error"


class PermissionDeniedError(GatewayError):
    status_code = 403
    error_type = "permission_error"


class NotFoundError(GatewayError):
    status_code = 404
    error_type = "not_found_error"


class ModelNotFoundError(NotFoundError):
    default_code = "model_not_found"


class ConflictError(GatewayError):
    status_code = 409
    error_type = "conflict_error"


class PayloadTooLargeError(GatewayError):
    status_code = 413
    error_type = "invalid_request_error"


class ServiceUnavailableError(GatewayError):
    status_code = 503
    error_type = "service_unavailable"


def error_json(exc: GatewayError) -> JSONResponse:
    return JSONResponse(status_code=exc.status_code, content=exc.to_response().model_dump())


def sse_error_event(exc: GatewayError) -> str:
    """Errors after a stream has started can no longer change the status code: they travel as a data event."""
    return f"data: {json.dumps(exc.to_response().model_dump())}\n\n"


def _validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    param = ".".join(loc) or None
    msg = first.get("msg", "invalid request")
    if first.get("type") == "json_invalid":
        return "We could not parse the JSON body of your request: " + msg, None
    return (f"Invalid value for '{param}': {msg}" if param else msg), param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def _gateway(_: Request, exc: GatewayError) -> JSONResponse:
        if exc.status_code >= 500:
            logger.error("request failed: %s", exc.message)
        return error_json(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = _validation_message(list(exc.errors()))
        response = error_json(InvalidRequestError(message, param=param))
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
