.PHONY: setup serve test lint bench

setup:
	bash scripts/setup.sh

serve: setup
	HF_HUB_OFFLINE=1 .venv/bin/ugw serve

test:
	bash scripts/test.sh

lint:
	.venv/bin/ruff check server classifiers guards loadtest tests

bench: setup
	HF_HUB_OFFLINE=1 .venv/bin/python -m loadtest bench --baseline vllm --targets 0 --out bench.json
