"""Logits processing (GUARD): one engine-free core (``core``), thin adapters for vLLM V1 and transformers.

The request-level arguments travel as ``LogitsArgs`` (``args``). In vLLM they ride in ``SamplingParams.extra_args``
as flat lists of ints and floats, the only values that survive the trip to the engine core on every vLLM version.
This package imports nothing of the server, so a stock vLLM upstream loads it alone.
"""
