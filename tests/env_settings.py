"""Check ``UGW_*`` variable names against the settings model: pydantic-settings ignores unknown names silently, so a
typo in an image or a manifest would otherwise go unnoticed until the setting failed to apply in production."""

from __future__ import annotations

from pydantic import BaseModel

from server.settings import Settings


def unknown_setting(name: str) -> str | None:
    """None when ``name`` (e.g. ``UGW_ENGINE__MODEL``) is a settings field; else the reason it is not."""
    if not name.startswith("UGW_"):
        return f"{name}: not a UGW_ setting"
    model: type[BaseModel] = Settings
    parts = name[4:].lower().split("__")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return f"{name}: no field '{part}' in {model.__name__}"
        nested = field.annotation
        if i < len(parts) - 1:
            if not (isinstance(nested, type) and issubclass(nested, BaseModel)):
                return f"{name}: '{part}' has no sub-fields"
            model = nested
    return None


def settings_from_env(env: dict[str, str]) -> Settings:
    """What a process with exactly these ``UGW_*`` variables would run with (validation errors included)."""
    import os
    from unittest import mock

    clean = {k: v for k, v in os.environ.items() if not k.startswith("UGW_")}
    with mock.patch.dict(os.environ, {**clean, **env}, clear=True):
        return Settings()
