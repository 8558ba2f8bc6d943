"""Typed access to what the lifespan built (instead of reading an untyped ``app.state`` bag in handlers)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from server.engines.base import Engine
from server.errors import AuthenticationError, PermissionDeniedError, ServiceUnavailableError
from server.metrics import Metrics
from server.service import CompletionService
from server.settings import Settings

if TYPE_CHECKING:
    from classifiers.batcher import DetectionBatcher
    from server.registry.cache import TargetCache
    from server.registry.service import TargetService


@dataclass
class AdminServices:
    targets: TargetService
    cache: TargetCache
    detection: DetectionBatcher


@dataclass
class Gateway:
    settings: Settings
    metrics: Metrics
    engine: Engine | None = None
    service: CompletionService | None = None
    admin: AdminServices | None = None
    draining: bool = False
    ready: bool = False


def get_gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def get_service(request: Request) -> CompletionService:
    service = get_gateway(request).service
    if service is None:
        raise ServiceUnavailableError("the server is starting up")
    return service


def require_admin(request: Request) -> AdminServices:
    """Bearer-token check for /admin: 403 when no token is configured (admin disabled), 401 without a valid one."""
    gateway = get_gateway(request)
    token = gateway.settings.admin_token
    if token is None:
        raise PermissionDeniedError("the admin API is disabled: set UGW_ADMIN_TOKEN to enable it")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        raise AuthenticationError("missing bearer token for the admin API")
    if not hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
        raise PermissionDeniedError("invalid admin token")
    if gateway.admin is None:
        raise ServiceUnavailableError("the registry is starting up")
    return gateway.admin


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
ServiceDep = Annotated[CompletionService, Depends(get_service)]
AdminDep = Annotated[AdminServices, Depends(require_admin)]
