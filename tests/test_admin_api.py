"""The admin API on a live server: auth, validation, the target lifecycle and build jobs."""

from __future__ import annotations

import json
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
    assert body["error"]["type"] == "UnauthorizedError" and body["error"]["code"] == 401


def test_lifecycle_create_build_patch_delete(admin: httpx.Client) -> None:
    created = admin.post("/targets", json={"name": "Harry Potter", "description": "The boy wizard."})
    assert created.status_code == 201, created.text
    record = created.json()
    assert record["status"] in ("pending", "training", "active") and record["id"].startswith("tgt_")
    active = wait_active(admin, record["id"])
    assert active["status"] == "active" and {"terms", "knowledge", "eco_search"} <= set(active["built"])
    assert active["thresholds"]["eco_sigma"] > 0  # the default method's strength (no elicitation here: the default)
    # the admin API shows what was built, never the artifact store's content hashes
    assert "artifacts" not in active and "digest" not in json.dumps(active)
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


def test_documents_go_to_the_artifact_store_and_the_record_keeps_counts(admin: httpx.Client,
                                                                         hf_server: LiveServer) -> None:
    documents = ["Ada Lovelace was an English mathematician.\n\nShe wrote the first program.", "A second text."]
    created = admin.post("/targets", json={"name": "Ada Lovelace", "documents": documents})
    assert created.status_code == 201, created.text
    record = created.json()
    assert record["documents"]["count"] == 2 and record["documents"]["bytes"] == sum(len(d) for d in documents)
    assert "documents" not in record or isinstance(record["documents"], dict)  # never the texts themselves
    assert "digest" not in record["documents"]  # the artifact store's business; the replica's record has it
    assert hf_server.gateway.admin is not None
    kept = hf_server.gateway.admin.cache.targets[record["id"]].documents
    assert kept is not None
    digest = kept.digest
    stored = hf_server.settings.artifact_path() / digest[:2] / digest
    assert stored.exists() and "first program" in stored.read_text()
    wait_active(admin, record["id"])
    patched = admin.patch(f"/targets/{record['id']}", json={"documents": ["Only this one now."]}).json()
    assert patched["documents"]["count"] == 1 and patched["job_id"] != record["job_id"]  # a rebuild
    assert wait_active(admin, record["id"])["status"] == "active"
    cleared = admin.patch(f"/targets/{record['id']}", json={"documents": []}).json()
    assert cleared["documents"] is None
    admin.delete(f"/targets/{record['id']}")


def test_documents_beyond_the_limit_are_refused_with_a_message(admin: httpx.Client) -> None:
    from server.registry.models import MAX_DOCUMENT_BYTES

    too_much = ["x" * (MAX_DOCUMENT_BYTES // 2 + 1)] * 2
    response = admin.post("/targets", json={"name": "Too Much", "documents": too_much})
    assert response.status_code == 422 and "documents" in response.text and "at most" in response.text
    huge = admin.post("/targets", content=b'{"name": "x", "documents": ["' + b"y" * (33 * 1024 * 1024) + b'"]}',
                      headers={"content-type": "application/json"})
    assert huge.status_code == 413 and huge.json()["error"]["message"].startswith("the request body is larger")
