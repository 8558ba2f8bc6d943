"""Logits processing: one engine-free core (``core``), thin adapters for vLLM V1 and transformers.

The request-level arguments travel as ``LogitsArgs`` (server.engines.base); in vLLM they ride in
``SamplingParams.extra_args[EXTRA_ARGS_KEY]`` as plain lists so that they survive the trip to the engine core.
"""

EXTRA_ARGS_KEY = "ugw_banned_token_ids"
