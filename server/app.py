"""The app factory: its lifespan owns the engine, the registry and its cache, detection, the interventions and the
build jobs, and hands each part what it needs (docs/architecture.md)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from server import __version__
from server.admin_port import AdminPortMiddleware
from server.body_limit import BodyLimitMiddleware
from server.deps import AdminServices, Gateway
from server.encoder_store import encoder_dir
from server.engines import create_engine
from server.engines.base import Engine
from server.errors import install_error_handlers
from server.metrics import Metrics, MetricsMiddleware
from server.model_store import resolve_model
from server.registry.artifacts import ArtifactStore
from server.registry.cache import TargetCache
from server.registry.file_store import FileTargetStore
from server.registry.redis_store import RedisTargetStore
from server.registry.service import TargetService
from server.registry.store import TargetStore
from server.registry.worker import BuildWorker
from server.routes import admin, health, openai, sagemaker, tokenize
from server.service import CompletionService
from server.settings import Settings
from server.vllm_parity import check_like_vllm

logger = logging.getLogger(__name__)


def create_store(settings: Settings) -> TargetStore:
    if settings.registry.backend == "redis":
        return RedisTargetStore(settings.registry.redis_url, prefix=settings.registry.prefix)
    return FileTargetStore(settings.registry_path())


def create_app(settings: Settings, engine: Engine | None = None) -> FastAPI:
    """Build the app. Pass ``engine`` to share an already started engine (its owner then shuts it down)."""
    gateway = Gateway(settings=settings, metrics=Metrics())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = engine is None
        eng = engine
        if eng is None:
            model_path = resolve_model(settings.engine.model, settings.cache_dir)
            eng = create_engine(settings.engine, model_path, settings.cache_dir / "work" / settings.engine.kind)
            logger.info("starting %s engine on %s", eng.kind, model_path)
            await eng.start()
        from classifiers.pipeline import DetectionPipeline
        from guards.interventions import ECOIntervention, GuardIntervention, O3Intervention, RequestGuard
        from guards.training.build import TargetBuilder

        store = create_store(settings)
        await store.start()
        cache = TargetCache(store, on_unavailable=settings.registry.on_unavailable)
        await cache.start()
        artifacts = ArtifactStore(settings.artifact_path())
        detection = DetectionPipeline(cache, artifacts, eng.tokenizer, tuple(settings.detection.detectors),
                                      settings.detection.embedding_threshold,
                                      classifier_fpr=settings.detection.classifier_fpr,
                                      negatives_file=settings.detection.negatives_file,
                                      ood_fpr=settings.detection.ood_fpr,
                                      retrieval_fpr=settings.detection.retrieval_fpr,
                                      max_chunks=settings.detection.max_chunks,
                                      retrieval_margin=settings.detection.retrieval_margin,
                                      encoder_dir=encoder_dir(settings.detection.encoder, settings.cache_dir))
        o3 = O3Intervention(eng, artifacts, settings.guards, detection)
        interventions = [ECOIntervention(eng, artifacts, settings.guards, detection), o3,
                         GuardIntervention(eng, artifacts, settings.guards, detection)]
        for intervention in interventions:
            await intervention.warm()
        guard = RequestGuard(detection, interventions, artifacts, settings.guards, registry_check=cache.check_current)
        builder = TargetBuilder(eng, detection, artifacts, settings.guards, o3.ensure_loaded)
        targets = TargetService(store, cache, builder.build, artifacts, queue=settings.jobs.mode == "queue")
        worker = BuildWorker(store, targets) if settings.jobs.worker else None
        if worker is not None:
            await worker.start()
        gateway.admin = AdminServices(targets=targets, cache=cache, detection=guard.batcher)
        gateway.engine = eng
        gateway.metrics.engine_running.set_function(eng.num_running)
        gateway.metrics.serve_model(eng.info.served_model_name, eng.num_running, settings.engine.max_num_seqs)
        gateway.service = CompletionService(eng, gateway.metrics, guard)
        gateway.ready = True
        logger.info("ready: serving %s", eng.info.served_model_name)
        try:
            yield
        finally:
            gateway.draining = True
            gateway.ready = False
            if worker is not None:
                await worker.close()
            await targets.close()
            await guard.batcher.close()
            await cache.close()
            await store.close()
            if owned:
                await eng.shutdown()

    app = FastAPI(title="unlearning-gateway", version=__version__, lifespan=lifespan)
    app.state.gateway = gateway
    install_error_handlers(app, like_vllm=check_like_vllm)
    app.include_router(openai.router)
    app.include_router(health.router)
    app.include_router(admin.router)
    app.include_router(tokenize.router)
    app.include_router(sagemaker.router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes,
                       admin_max_bytes=settings.admin_max_request_bytes)
    if settings.admin_port is not None:
        app.add_middleware(AdminPortMiddleware, admin_port=settings.admin_port)
    app.add_middleware(MetricsMiddleware, metrics=gateway.metrics)
    return app
