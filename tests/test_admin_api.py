"""The admin API on a live server: auth, validation, the target lifecycle and build jobs."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN
from tests.live import LiveServer

AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture()
def admin(hf_server: LiveServer):
    with httpx.Client(base_url=hf_server.base_url + "/admin", headers=AUTH, timeout=30) as client:
        yield client


def wait_active(client: httpx.Client, target_id: str, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = client.get(f"/targets/{target_id}").json()
        if record["status"] in ("active", "failed"):
            return record
        time.sleep(0.05)
    raise TimeoutError(f"target {target_id} did not finish building")


def test_auth_is_required(hf_server: LiveServer) -> None:
    url = hf_server.base_url + "/admin/targets"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong-token-wrong-token"}).status_code == 403
    body = httpx.get(url, headers={"Authorization": "Basic abc"}).json()
    assert body["error"]["type"] == "authentication_error"


def test_lifecycle_create_build_patch_delete(admin: httpx.Client) -> None:
    created = admin.post("/targets", json={"name": "Harry Potter", "description": "The boy wizard."})
    assert created.status_code == 201, created.text
    record = created.json()
    assert record["status"] in ("pending", "training", "active") and record["id"].startswith("tgt_")
    active = wait_active(admin, record["id"])
    assert active["status"] == "active" and {"terms", "knowledge", "eco_search"} <= set(active["artifacts"])
    assert "eco_sigma" in active["thresholds"]  # the default method's strength (no elicitation here: the default)
    job = admin.get(f"/jobs/{record['job_id']}").json()
    assert job["state"] == "succeeded" and job["progress"] == 1.0

    detections = admin.post("/detect", json={"prompt": "Who is Harry Potter's best friend?"}).json()["detections"]
    assert [d["target_id"] for d in detections] == [record["id"]]
    assert admin.post("/detect", json={"prompt": "What is the capital of France?"}).json()["detections"] == []

    assert admin.post("/targets", json={"name": "harry potter"}).status_code == 409
    assert admin.get("/targets").json()["data"][0]["name"] == "Harry Potter"

    disabled = admin.patch(f"/targets/{record['id']}", json={"enabled": False}).json()
    assert disabled["status"] == "disabled" and disabled["enabled"] is False
    assert admin.post("/detect", json={"prompt": "Harry Potter"}).json()["detections"] == []
    admin.patch(f"/targets/{record['id']}", json={"enabled": True, "aliases": ["The Boy Who Lived"]})
    again = wait_active(admin, record["id"])
    assert again["aliases"] == ["The Boy Who Lived"] and again["enabled"]
    assert admin.post("/detect", json={"prompt": "tell me about the boy who lived"}).json()["detections"]

    assert admin.delete(f"/targets/{record['id']}").status_code == 204
    assert admin.get(f"/targets/{record['id']}").status_code == 404
    assert admin.delete(f"/targets/{record['id']}").status_code == 404


@pytest.mark.parametrize("body", [
    {},
    {"name": ""},
    {"name": "   "},
    {"name": "x", "methods": ["nope"]},
    {"name": "x", "methods": []},
    {"name": "x", "aliases": "not-a-list"},
    {"name": "x", "unknown_field": 1},
    {"name": "x" * 300},
])
def test_validation_errors_are_422(admin: httpx.Client, body: dict) -> None:
    resp = admin.post("/targets", json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["message"]


def test_unknown_ids_are_404(admin: httpx.Client) -> None:
    assert admin.get("/targets/tgt_doesnotexist").status_code == 404
    assert admin.patch("/targets/tgt_doesnotexist", json={"enabled": False}).status_code == 404
    assert admin.get("/jobs/job_doesnotexist").status_code == 404
    assert admin.get("/targets/..%2F..%2Fetc").status_code == 404
