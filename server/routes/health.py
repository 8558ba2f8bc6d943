"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from server.deps import GatewayDep
from server.metrics import CONTENT_TYPE

router = APIRouter(tags=["ops"])


@router.get("/health")
async def health(gateway: GatewayDep) -> JSONResponse:
    """Liveness: the process answers and its engine is alive (a dead engine should get the pod restarted)."""
    alive = gateway.engine is None or await gateway.engine.check_health()
    return JSONResponse({"status": "ok" if alive else "engine_dead"}, status_code=200 if alive else 503)


@router.get("/ready")
async def ready(gateway: GatewayDep) -> JSONResponse:
    """Readiness: take traffic only once the engine is loaded, and stop taking it while draining."""
    if gateway.draining:
        return JSONResponse({"status": "draining"}, status_code=503)
    if not gateway.ready or gateway.engine is None or not await gateway.engine.check_health():
        return JSONResponse({"status": "starting"}, status_code=503)
    return JSONResponse({"status": "ready"})


@router.get("/metrics")
async def metrics(gateway: GatewayDep) -> Response:
    return Response(gateway.metrics.render(), media_type=CONTENT_TYPE)
