#!/usr/bin/env bash
# The project's test command: lint, type check, then the whole pytest suite (slow engine tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/tools.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
.venv/bin/ruff check server classifiers guards loadtest tests
.venv/bin/mypy  # [tool.mypy] in pyproject.toml: server classifiers guards loadtest
exec .venv/bin/python -m pytest "$@"
