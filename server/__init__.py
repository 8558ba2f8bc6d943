"""unlearning-gateway: an OpenAI-compatible server that enforces forgetting at inference time."""

__version__ = "0.1.0"
