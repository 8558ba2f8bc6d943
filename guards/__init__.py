"""Interventions that run inside the engine: ECO corruption, O3 LoRA, GUARD logits processing."""
