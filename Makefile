.PHONY: setup serve test test-fast lint bench

setup:
	bash scripts/setup.sh

serve: setup
	HF_HUB_OFFLINE=1 .venv/bin/ugw serve

test:
	bash scripts/test.sh

# unit and HTTP-layer tests against the reference engine (no vLLM start, no training): under a minute
test-fast:
	HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false .venv/bin/python -m pytest -q -m "not slow and not vllm"

lint:
	.venv/bin/ruff check server classifiers guards loadtest tests

bench: setup
	HF_HUB_OFFLINE=1 .venv/bin/python -m loadtest bench --baseline vllm --targets 0 --out bench.json
