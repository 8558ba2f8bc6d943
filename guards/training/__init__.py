"""Offline jobs that turn a registered target into the artifacts its interventions need."""
