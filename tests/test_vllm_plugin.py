"""The upstream side of the remote engine is the installed package's vLLM entry points, which need no server."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from server.engines.vllm_engine import PROCESSOR, processor_plugin_installed
from server.processes import _engine_flags
from server.settings import EngineSettings

pytestmark = pytest.mark.vllm


def test_vllm_finds_the_processor_and_the_lora_fix_through_entry_points() -> None:
    assert processor_plugin_installed()
    assert "guards.vllm_lora_fix:register" in {ep.value for ep in entry_points(group="vllm.general_plugins")}
    # vLLM loads the entry point itself: handing it the processor too would run it twice
    assert PROCESSOR not in " ".join(_engine_flags(EngineSettings()))
    probe = ("from vllm.v1.sample.logits_processor import _load_logitsprocs_plugins as load; "
             "print([c.__name__ for c in load()])")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "['GatewayLogitsProcessor']"
