"""``ugw targets`` end to end: the installed command against a live gateway's admin API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ADMIN_TOKEN
from tests.live import LiveServer


def ugw(server: LiveServer, *args: str, token: str | None = ADMIN_TOKEN) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "UGW_ADMIN_TOKEN"}
    if token is not None:
        env["UGW_ADMIN_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "server", "targets", "--url", server.base_url, *args],
                          capture_output=True, text=True, env=env, timeout=300)


def test_add_wait_list_detect_disable_rm(hf_server: LiveServer, tmp_path: Path) -> None:
    passages = tmp_path / "passages.json"
    passages.write_text(json.dumps(["Bramwell Oakes is a lighthouse keeper on the isle of Skarn.",
                                    "Oakes wrote the Skarn tide tables and keeps a logbook of every storm."]))
    notes = tmp_path / "notes.txt"
    notes.write_text("Bramwell Oakes was born in Fennick in 1931.")

    added = ugw(hf_server, "--json", "add", "Bramwell Oakes", "--alias", "Keeper Oakes", "--documents",
                str(passages), str(notes), "--methods", "guard", "--wait")
    assert added.returncode == 0, added.stderr
    record = json.loads(added.stdout)
    assert record["status"] == "active" and record["documents"]["count"] == 3
    assert record["aliases"] == ["Keeper Oakes"] and record["methods"] == ["guard"]
    try:
        listed = ugw(hf_server, "list")
        assert listed.returncode == 0
        header, *rows = listed.stdout.splitlines()
        assert header.split()[:3] == ["ID", "NAME", "STATUS"]
        assert any(row.startswith(record["id"]) and "active" in row for row in rows)

        detected = ugw(hf_server, "--json", "detect", "Where does Bramwell Oakes live?")
        assert any(d["target_id"] == record["id"] and d["flagged"] for d in json.loads(detected.stdout)["detections"])
        assert "FLAGGED" in ugw(hf_server, "detect", "Where does Bramwell Oakes live?").stdout
        assert ugw(hf_server, "detect", "What is the capital of France?").stdout.strip() == "no target detected"

        shown = ugw(hf_server, "disable", record["id"])
        assert shown.returncode == 0 and "enabled     no" in shown.stdout
        assert json.loads(ugw(hf_server, "--json", "enable", record["id"]).stdout)["enabled"] is True
    finally:
        removed = ugw(hf_server, "rm", record["id"])
    assert removed.returncode == 0 and removed.stdout.strip() == f"deleted {record['id']}"
    assert record["id"] not in ugw(hf_server, "list").stdout


@pytest.mark.parametrize(("args", "token", "message"), [
    (("show", "tgt_missing"), ADMIN_TOKEN, "404"),
    (("list",), None, "401"),
    (("list",), "wrong-token-0123456789", "403"),
    (("add", "x" * 300), ADMIN_TOKEN, "name: String should have at most 200 characters"),
    (("add", "Someone", "--documents", "/nonexistent/file.txt"), ADMIN_TOKEN, "cannot read /nonexistent/file.txt"),
    (("add", "Someone", "--methods", "eco,telepathy"), ADMIN_TOKEN, "methods.1"),
])
def test_errors_exit_non_zero_with_one_line(hf_server: LiveServer, args: tuple[str, ...], token: str | None,
                                            message: str) -> None:
    done = ugw(hf_server, *args, token=token)
    assert done.returncode == 1 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and message in done.stderr, done.stderr


def test_an_unreachable_gateway_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "server", "targets", "--url", "http://127.0.0.1:9", "list"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.startswith("ugw targets: error: cannot reach http://127.0.0.1:9")
