"""Detectors that score a prompt against the registered forget targets (docs/detection.md)."""
