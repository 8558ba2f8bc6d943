"""Servers as subprocesses on loopback: the gateway (evaluations, benchmarks, replica tests) or a bare vLLM server
(the benchmarks' baseline and the remote engine's upstreams)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from server.settings import EngineSettings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    name: str
    argv: list[str]
    port: int
    log_path: Path
    health_path: str
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 600.0) -> ServerProcess:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **self.env}
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if httpx.get(self.base_url + self.health_path, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1)
        self.stop()
        raise TimeoutError(f"{self.name} did not become ready in {timeout:.0f}s; see {self.log_path}")

    def rss_bytes(self) -> int:
        """Resident memory of the server and its children (vLLM's engine core is a child process)."""
        own, children = self.rss_split()
        return own + children

    def rss_split(self) -> tuple[int, int]:
        """(the server process itself, its children together): tells gateway growth from engine-core growth."""
        if self.proc is None:
            return 0, 0
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
            own = root.memory_info().rss
            children = 0
            for child in root.children(recursive=True):
                try:
                    children += child.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
            return own, children
        except psutil.NoSuchProcess:
            return 0, 0

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def _engine_flags(engine: EngineSettings) -> list[str]:
    from server.engines.vllm_engine import PROCESSOR, processor_plugin_installed

    flags = ["--dtype", engine.dtype, "--max-model-len", str(engine.max_model_len), "--seed", str(engine.seed),
             "--max-num-seqs", str(engine.max_num_seqs), "--enable-prompt-embeds", "--disable-log-stats"]
    if not processor_plugin_installed():  # installed, vLLM loads it from the package's entry point
        flags += ["--logits-processors", PROCESSOR]
    if engine.enforce_eager:
        flags.append("--enforce-eager")
    if engine.enable_lora:
        flags += ["--enable-lora", "--max-lora-rank", str(engine.max_lora_rank), "--max-loras", str(engine.max_loras),
                  "--max-cpu-loras", str(engine.max_cpu_loras)]
    return flags


def bare_vllm(model_path: Path, name: str, engine: EngineSettings, log_dir: Path, work_dir: Path,
              upstream: bool = False, label: str = "bare-vllm") -> ServerProcess:
    """vLLM's own OpenAI server with the flags and environment the gateway gives its embedded engine.

    ``upstream``: as a remote-engine gateway needs it (adapters loaded at run time, logprobs read after the guards'
    processor); the benchmark's bare baseline keeps vLLM's defaults."""
    from server.engines.vllm_engine import vllm_environment

    port = free_port()
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_path),
            "--served-model-name", name, "--host", "127.0.0.1", "--port", str(port), *_engine_flags(engine)]
    env = vllm_environment(engine, work_dir)
    if upstream:
        argv += ["--logprobs-mode", engine.logprobs_mode]
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    return ServerProcess(label, argv, port, log_dir / f"{label}.log", "/health", env=env)


def isolated_env(admin_token: str, folder: Path, elicit: bool = False) -> dict[str, str]:
    """Settings for a gateway started by a measurement: its own registry and artifacts under ``folder``; without
    ``elicit`` a target's build skips asking the model about it (fast registration of many targets)."""
    env = {"UGW_ADMIN_TOKEN": admin_token, "UGW_REGISTRY__PATH": str(folder / "registry"),
           "UGW_REGISTRY__ARTIFACT_DIR": str(folder / "artifacts")}
    if not elicit:
        env["UGW_GUARDS__ELICIT__QUESTIONS"] = "0"
    return env


def gateway(model_path: Path, name: str, engine: EngineSettings, log_dir: Path, label: str = "gateway",
            env: dict[str, str] | None = None, command: str = "serve") -> ServerProcess:
    """``python -m server serve`` (or ``worker``) as its own process; ``env`` carries further settings (``UGW_*``)."""
    port = free_port()
    argv = [sys.executable, "-m", "server", command, "--engine", engine.kind, "--model", str(model_path),
            "--served-model-name", name, "--port", str(port), "--max-model-len", str(engine.max_model_len)]
    return ServerProcess(label, argv, port, log_dir / f"{label}.log", "/ready", env=env or {})
