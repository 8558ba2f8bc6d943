"""Load generation and benchmarks against the gateway and the bare vLLM server."""
