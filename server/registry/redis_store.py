"""The production backend: Redis is the one source of truth for every replica.

Each write is one Lua script (name uniqueness and version checks are atomic across replicas) followed by a
PUBLISH; every replica's listener turns those messages into local change events, and after a lost connection
it emits a ``resync`` so that nothing published during the outage is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from server.errors import ConflictError, NotFoundError
from server.registry.models import ChangeEvent, JobRecord, TargetRecord
from server.registry.store import RegistryUnavailable, TargetStore, cancel_and_wait

logger = logging.getLogger(__name__)

_CREATE = """
local existing = redis.call('HGET', KEYS[2], ARGV[2])
if existing then return existing end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return ''
"""

_REPLACE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 'notfound' end
local doc = cjson.decode(cur)
if tostring(doc['version']) ~= ARGV[2] then return 'version:' .. tostring(doc['version']) end
local owner = redis.call('HGET', KEYS[2], ARGV[3])
if owner and owner ~= ARGV[1] then return 'name:' .. owner end
local oldkey = string.lower(doc['name'])
if oldkey ~= ARGV[3] then redis.call('HDEL', KEYS[2], oldkey) end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
return 'ok'
"""

_DELETE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur then return 0 end
local doc = cjson.decode(cur)
redis.call('HDEL', KEYS[2], string.lower(doc['name']))
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"""

JOB_TTL_S = 7 * 24 * 3600


def _name_key(name: str) -> str:
    # Lua's string.lower is ASCII-only; use the same folding on both sides.
    return "".join(c.lower() if c.isascii() else c for c in name)


class RedisTargetStore(TargetStore):
    def __init__(self, url: str, prefix: str = "ugw", reconnect_delay_s: float = 0.5) -> None:
        super().__init__()
        self.url = url
        self.prefix = prefix
        self.reconnect_delay_s = reconnect_delay_s
        self.client: aioredis.Redis = aioredis.Redis.from_url(url, decode_responses=True, socket_timeout=5,
                                                              socket_connect_timeout=2)
        self.k_targets = f"{prefix}:targets"
        self.k_names = f"{prefix}:names"
        self.channel = f"{prefix}:events"
        self.k_queued = f"{prefix}:jobs:queued"
        self.k_running = f"{prefix}:jobs:running"
        self._listener: asyncio.Task[None] | None = None
        self.connected = False

    # ---- lifecycle -------------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen())

    async def close(self) -> None:
        await cancel_and_wait(self._listener)
        await self.client.aclose()

    async def _listen(self) -> None:
        first = True
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.subscribe(self.channel)
                self.connected = True
                if not first:  # whatever changed while we were away
                    logger.info("registry: reconnected to Redis, resyncing")
                    self.hub.publish(ChangeEvent(op="resync"))
                first = False
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        with contextlib.suppress(ValueError):
                            self.hub.publish(ChangeEvent.model_validate_json(message["data"]))
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                if self.connected or first:
                    logger.warning("registry: lost Redis (%s); retrying", exc)
                    self.hub.publish(ChangeEvent(op="lost"))
                self.connected = False
                first = False
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(self.reconnect_delay_s)

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            self.connected = False
            raise RegistryUnavailable(f"the registry (Redis) is unreachable: {exc}") from exc
        except RedisError as exc:
            raise RegistryUnavailable(f"the registry (Redis) failed: {exc}") from exc

    async def _publish(self, event: ChangeEvent) -> None:
        self.hub.publish(event)
        await self._call(self.client.publish(self.channel, event.model_dump_json()))

    # ---- targets ---------------------------------------------------------------------------------------------------
    async def create(self, record: TargetRecord) -> TargetRecord:
        owner = await self._call(self.client.eval(_CREATE, 2, self.k_targets, self.k_names, record.id,
                                                  _name_key(record.name), record.model_dump_json()))
        if owner:
            raise ConflictError(f"a forget target named '{record.name}' already exists (id {owner})", param="name")
        await self._publish(ChangeEvent(op="upsert", target_id=record.id, version=record.version))
        return record

    async def get(self, target_id: str) -> TargetRecord | None:
        raw = await self._call(self.client.hget(self.k_targets, target_id))
        return TargetRecord.model_validate_json(raw) if raw else None

    async def list(self) -> list[TargetRecord]:
        raw = await self._call(self.client.hgetall(self.k_targets))
        return sorted((TargetRecord.model_validate_json(v) for v in raw.values()), key=lambda r: r.created_at)

    async def replace(self, record: TargetRecord) -> TargetRecord:
        new = record.model_copy(update={"version": record.version + 1, "updated_at": time.time()})
        result = await self._call(self.client.eval(_REPLACE, 2, self.k_targets, self.k_names, record.id,
                                                   str(record.version), _name_key(new.name), new.model_dump_json()))
        if result == "notfound":
            raise NotFoundError(f"no forget target with id '{record.id}'", param="id")
        if result.startswith("version:"):
            raise ConflictError(f"target {record.id} changed meanwhile (version {result[8:]}, expected "
                                f"{record.version}); retry")
        if result.startswith("name:"):
            raise ConflictError(f"a forget target named '{new.name}' already exists (id {result[5:]})",
                                param="name")
        await self._publish(ChangeEvent(op="upsert", target_id=new.id, version=new.version))
        return new

    async def delete(self, target_id: str) -> None:
        removed = await self._call(self.client.eval(_DELETE, 2, self.k_targets, self.k_names, target_id))
        if not removed:
            raise NotFoundError(f"no forget target with id '{target_id}'", param="id")
        await self._publish(ChangeEvent(op="delete", target_id=target_id))

    # ---- jobs ------------------------------------------------------------------------------------------------------
    async def put_job(self, job: JobRecord) -> None:
        await self._call(self.client.set(f"{self.prefix}:job:{job.id}", job.model_dump_json(), ex=JOB_TTL_S))

    async def get_job(self, job_id: str) -> JobRecord | None:
        raw = await self._call(self.client.get(f"{self.prefix}:job:{job_id}"))
        return JobRecord.model_validate_json(raw) if raw else None

    async def enqueue_job(self, job_id: str) -> None:
        await self._call(self.client.lpush(self.k_queued, job_id))

    async def claim_job(self, timeout_s: float) -> str | None:
        # Blocking pop, kept under the client's socket timeout; RIGHT->LEFT makes the queue first-in first-out.
        timeout = max(min(timeout_s, 4.0), 0.01)
        # redis-py annotates the timeout as int; Redis itself takes fractional seconds (6.0 on)
        job_id: str | None = await self._call(self.client.blmove(self.k_queued, self.k_running, cast(int, timeout),
                                                                 src="RIGHT", dest="LEFT"))
        return job_id

    async def finish_job(self, job_id: str) -> None:
        await self._call(self.client.lrem(self.k_running, 0, job_id))

    async def requeue_running(self) -> int:
        moved = 0
        while await self._call(self.client.lmove(self.k_running, self.k_queued, src="RIGHT", dest="RIGHT")):
            moved += 1
        return moved

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
            return False
