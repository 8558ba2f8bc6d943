"""The zero-setup backend: one JSON file per record, written atomically, safe for several local processes.

Writes hold an ``flock`` on the folder's lock file; a generation counter lets other processes on the same folder
notice changes (they poll it), so a second local replica also reloads without a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from server.errors import ConflictError, NotFoundError
from server.registry.models import ChangeEvent, JobRecord, TargetRecord
from server.registry.store import TargetStore, cancel_and_wait


def _atomic_write(path: Path, data: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class FileTargetStore(TargetStore):
    def __init__(self, root: Path, poll_interval_s: float = 0.25) -> None:
        super().__init__()
        self.root = root
        self.targets_dir = root / "targets"
        self.jobs_dir = root / "jobs"
        self.poll_interval_s = poll_interval_s
        self._generation = -1
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self._generation = self._read_generation()
        self._watcher = asyncio.create_task(self._watch())

    async def close(self) -> None:
        await cancel_and_wait(self._watcher)

    # ---- locking and change detection ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read_generation(self) -> int:
        try:
            return int((self.root / "generation").read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _bump(self) -> None:
        gen = self._read_generation() + 1
        _atomic_write(self.root / "generation", str(gen))
        self._generation = gen

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval_s)
            gen = await asyncio.to_thread(self._read_generation)
            if gen != self._generation:
                self._generation = gen
                self.hub.publish(ChangeEvent(op="resync"))

    # ---- targets ---------------------------------------------------------------------------------------------------
    def _path(self, target_id: str) -> Path:
        if not target_id.replace("_", "").isalnum():
            raise NotFoundError(f"no forget target with id '{target_id}'", param="id")
        return self.targets_dir / f"{target_id}.json"

    def _load_all(self) -> list[TargetRecord]:
        out = []
        for path in sorted(self.targets_dir.glob("*.json")):
            with contextlib.suppress(FileNotFoundError):
                out.append(TargetRecord.model_validate_json(path.read_text()))
        return sorted(out, key=lambda r: r.created_at)

    def _check_name(self, record: TargetRecord) -> None:
        for other in self._load_all():
            if other.id != record.id and other.name.casefold() == record.name.casefold():
                raise ConflictError(f"a forget target named '{record.name}' already exists (id {other.id})",
                                    param="name")

    def _create(self, record: TargetRecord) -> TargetRecord:
        with self._locked():
            self._check_name(record)
            _atomic_write(self._path(record.id), record.model_dump_json())
            self._bump()
        return record

    async def create(self, record: TargetRecord) -> TargetRecord:
        await asyncio.to_thread(self._create, record)
        self.hub.publish(ChangeEvent(op="upsert", target_id=record.id, version=record.version))
        return record

    async def get(self, target_id: str) -> TargetRecord | None:
        path = self._path(target_id)
        try:
            return TargetRecord.model_validate_json(await asyncio.to_thread(path.read_text))
        except FileNotFoundError:
            return None

    async def list(self) -> list[TargetRecord]:
        return await asyncio.to_thread(self._load_all)

    def _replace(self, record: TargetRecord) -> TargetRecord:
        with self._locked():
            path = self._path(record.id)
            try:
                current = TargetRecord.model_validate_json(path.read_text())
            except FileNotFoundError:
                raise NotFoundError(f"no forget target with id '{record.id}'", param="id") from None
            if current.version != record.version:
                raise ConflictError(f"target {record.id} changed meanwhile (version {current.version}, "
                                    f"expected {record.version}); retry")
            self._check_name(record)
            new = record.model_copy(update={"version": record.version + 1, "updated_at": time.time()})
            _atomic_write(path, new.model_dump_json())
            self._bump()
        return new

    async def replace(self, record: TargetRecord) -> TargetRecord:
        new = await asyncio.to_thread(self._replace, record)
        self.hub.publish(ChangeEvent(op="upsert", target_id=new.id, version=new.version))
        return new

    def _delete(self, target_id: str) -> None:
        with self._locked():
            try:
                self._path(target_id).unlink()
            except FileNotFoundError:
                raise NotFoundError(f"no forget target with id '{target_id}'", param="id") from None
            self._bump()

    async def delete(self, target_id: str) -> None:
        await asyncio.to_thread(self._delete, target_id)
        self.hub.publish(ChangeEvent(op="delete", target_id=target_id))

    # ---- jobs ------------------------------------------------------------------------------------------------------
    async def put_job(self, job: JobRecord) -> None:
        await asyncio.to_thread(_atomic_write, self.jobs_dir / f"{job.id}.json", job.model_dump_json())

    async def get_job(self, job_id: str) -> JobRecord | None:
        if not job_id.replace("_", "").isalnum():
            return None
        try:
            text = await asyncio.to_thread((self.jobs_dir / f"{job_id}.json").read_text)
        except FileNotFoundError:
            return None
        return JobRecord.model_validate(json.loads(text))

    async def ping(self) -> bool:
        return self.root.is_dir()
