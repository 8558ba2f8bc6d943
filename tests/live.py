"""A live gateway on loopback, in this process: uvicorn on a background thread with its own event loop.

Tests talk to it over real HTTP with the openai client, and can also run coroutines on its loop to reach the engine
directly (prompt embeddings, LoRA, logits arguments) - one engine per kind per test session.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx
import uvicorn

from server.app import create_app
from server.deps import Gateway
from server.engines.base import Engine
from server.processes import free_port
from server.settings import Settings

T = TypeVar("T")


class LiveServer:
    def __init__(self, settings: Settings, start_timeout: float = 600.0, engine: Engine | None = None) -> None:
        self.settings = settings.model_copy(update={"port": free_port()})
        self.app = create_app(self.settings, engine=engine)
        self.gateway: Gateway = self.app.state.gateway
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.settings.port, log_level="warning",
                                timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, name=f"live-{settings.engine.kind}", daemon=True)
        self.start_timeout = start_timeout
        self.error: BaseException | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    @property
    def engine(self) -> Engine:
        assert self.gateway.engine is not None
        return self.gateway.engine

    @property
    def model(self) -> str:
        return self.engine.info.served_model_name

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.server.serve())
        except BaseException as exc:  # surfaced by start()
            self.error = exc

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.error is not None or not self.thread.is_alive():
                raise RuntimeError(f"live server failed to start: {self.error!r}")
            try:
                if httpx.get(self.base_url + "/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError("live server did not become ready")

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 300.0) -> T:
        """Run a coroutine on the server's loop (where the engine lives) and wait for it."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)
