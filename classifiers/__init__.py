"""Detectors that score a prompt against the registered forget targets (see DESIGN.md)."""
