"""A replica's live view of the registry: every record, kept current from change events.

Detectors read ``active()``; ``generation`` changes whenever the set of enforced targets may have changed, so that
indexes built over it can be rebuilt lazily.

``synced`` is false from the moment the store loses its shared registry until a full resync succeeds. What a
request gets meanwhile is the fail policy: closed (the default) answers 503, because a prompt cannot be checked
against targets registered during the outage; ``last_known`` keeps enforcing the targets known before it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from server.registry.models import ChangeEvent, TargetRecord
from server.registry.store import RegistryUnavailable, TargetStore, cancel_and_wait

FailPolicy = Literal["closed", "last_known"]

logger = logging.getLogger(__name__)


class TargetCache:
    def __init__(self, store: TargetStore, resync_interval_s: float = 30.0,
                 on_unavailable: FailPolicy = "closed") -> None:
        self.store = store
        self.on_unavailable = on_unavailable
        self.resync_interval_s = resync_interval_s
        self.targets: dict[str, TargetRecord] = {}
        self.generation = 0
        self.synced = False
        self._task: asyncio.Task[None] | None = None
        self.changed = asyncio.Event()

    async def start(self) -> None:
        try:
            await self.resync()
        except RegistryUnavailable as exc:
            logger.warning("registry unreachable at start (%s); will retry", exc)
        self._task = asyncio.create_task(self._follow())

    async def close(self) -> None:
        await cancel_and_wait(self._task)

    def check_current(self) -> None:
        """Raise (503) when this replica cannot vouch that it knows every registered target."""
        if not self.synced and self.on_unavailable == "closed":
            raise RegistryUnavailable(
                "the forget-target registry is unreachable, so this request cannot be checked against it; "
                "retry shortly")

    def active(self) -> list[TargetRecord]:
        return [t for t in self.targets.values() if t.enforced]

    def _bump(self) -> None:
        self.generation += 1
        self.changed.set()
        self.changed = asyncio.Event()

    async def resync(self) -> None:
        records = await self.store.list()
        self.targets = {r.id: r for r in records}
        self.synced = True
        self._bump()

    async def apply(self, event: ChangeEvent) -> None:
        if event.op == "lost":
            if self.synced:
                logger.warning("registry: link lost; %s until it is back",
                               "refusing requests" if self.on_unavailable == "closed" else "keeping the last known "
                               "targets")
            self.synced = False
            return
        if event.op == "resync" or event.target_id is None:
            await self.resync()
            return
        if event.op == "delete":
            if self.targets.pop(event.target_id, None) is not None:
                self._bump()
            return
        known = self.targets.get(event.target_id)
        if known is not None and known.version >= event.version:
            return  # our own write, already applied, or a stale message
        record = await self.store.get(event.target_id)
        if record is None:
            self.targets.pop(event.target_id, None)
        else:
            self.targets[record.id] = record
        self._bump()

    async def _follow(self) -> None:
        async with self.store.hub.subscribe() as queue:
            while True:
                try:
                    # Out of sync, retry a full resync every second instead of waiting for the periodic one.
                    timeout = self.resync_interval_s if self.synced else min(1.0, self.resync_interval_s)
                    event = await asyncio.wait_for(queue.get(), timeout=timeout)
                except asyncio.TimeoutError:
                    event = ChangeEvent(op="resync")
                try:
                    await self.apply(event)
                except RegistryUnavailable as exc:
                    self.synced = False
                    logger.warning("registry unreachable (%s); keeping the last known targets", exc)
