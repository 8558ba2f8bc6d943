"""Typed access to what the lifespan built (instead of reading an untyped ``app.state`` bag in handlers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request

from server.engines.base import Engine
from server.metrics import Metrics
from server.service import CompletionService
from server.settings import Settings


@dataclass
class Gateway:
    settings: Settings
    metrics: Metrics
    engine: Engine | None = None
    service: CompletionService | None = None
    draining: bool = False
    ready: bool = False
    extras: dict[str, object] = field(default_factory=dict)


def get_gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def get_service(request: Request) -> CompletionService:
    service = get_gateway(request).service
    if service is None:
        from server.errors import ServiceUnavailableError

        raise ServiceUnavailableError("the server is starting up")
    return service


GatewayDep = Annotated[Gateway, Depends(get_gateway)]
ServiceDep = Annotated[CompletionService, Depends(get_service)]
