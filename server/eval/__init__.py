"""Evaluation suites, run with ``python -m server eval``."""
