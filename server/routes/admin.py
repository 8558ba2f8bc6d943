"""/admin: forget-target registry and build jobs, behind a bearer token."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, Field

from classifiers.base import Detection
from server.deps import AdminDep, require_admin
from server.errors import ErrorResponse
from server.registry.elicited import elicited
from server.registry.models import ElicitedList, JobRecord, TargetCreate, TargetList, TargetPublic, TargetUpdate

_ERRORS: dict[int | str, dict[str, Any]] = {401: {"model": ErrorResponse}, 403: {"model": ErrorResponse},
                                           404: {"model": ErrorResponse}, 409: {"model": ErrorResponse}}
router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)], responses=_ERRORS)


class DetectRequest(BaseModel):
    prompt: str = Field(min_length=1, max_length=100_000)


class DetectResponse(BaseModel):
    detections: list[Detection]


@router.post("/targets", status_code=201, response_model=TargetPublic)
async def create_target(body: TargetCreate, admin: AdminDep) -> TargetPublic:
    return TargetPublic.of(await admin.targets.create(body))


@router.get("/targets", response_model=TargetList)
async def list_targets(admin: AdminDep) -> TargetList:
    return TargetList(data=[TargetPublic.of(r) for r in await admin.targets.store.list()])


@router.get("/targets/{target_id}", response_model=TargetPublic)
async def get_target(target_id: str, admin: AdminDep) -> TargetPublic:
    return TargetPublic.of(await admin.targets.store.require(target_id))


@router.get("/targets/{target_id}/elicited", response_model=ElicitedList)
async def get_elicited(target_id: str, admin: AdminDep) -> ElicitedList:
    """The target's elicited documents (the served model's answers at its build), for the operator to review; a
    question PATCHed into ``dropped_elicited`` is neither asked nor used again."""
    record = await admin.targets.store.require(target_id)
    return elicited(record, admin.targets.artifacts)


@router.patch("/targets/{target_id}", response_model=TargetPublic)
async def update_target(target_id: str, body: TargetUpdate, admin: AdminDep) -> TargetPublic:
    return TargetPublic.of(await admin.targets.update(target_id, body))


@router.delete("/targets/{target_id}", status_code=204)
async def delete_target(target_id: str, admin: AdminDep) -> Response:
    await admin.targets.delete(target_id)
    return Response(status_code=204)


@router.get("/jobs/{job_id}", response_model=JobRecord)
async def get_job(job_id: str, admin: AdminDep) -> JobRecord:
    return await admin.targets.job(job_id)


@router.post("/detect", response_model=DetectResponse)
async def detect(body: DetectRequest, admin: AdminDep) -> DetectResponse:
    """What this replica's detectors say about a prompt, with its current view of the registry."""
    return DetectResponse(detections=await admin.detection.detect(body.prompt))
