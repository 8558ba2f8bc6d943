"""Model resolution: a mounted folder, a hub name (offline here: a clear error), or nonsense (a clear error)."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.model_store import ModelNotAvailable, resolve_model
from server.settings import Settings


def test_a_model_folder_is_used_as_it_is(model_path: Path, tmp_path: Path) -> None:
    assert resolve_model(str(model_path), tmp_path) == model_path


@pytest.mark.parametrize(("model", "says"), [
    ("HuggingFaceTB/SmolLM2-135M-Instruct", "HF_HUB_OFFLINE"),  # conftest runs offline, as the images do
    ("/models/missing", "has no config.json"),
    ("bad name/x y", "valid hub name"),
])
def test_unavailable_models_fail_with_a_reason(model: str, says: str, tmp_path: Path) -> None:
    with pytest.raises(ModelNotAvailable, match=says):
        resolve_model(model, tmp_path)


def test_the_manifests_placeholder_admin_token_is_refused() -> None:
    with pytest.raises(ValueError, match="placeholder"):
        Settings(admin_token="CHANGE-ME-openssl-rand-hex-24")  # type: ignore[arg-type]
