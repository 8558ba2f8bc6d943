"""A target's build job: detector artifacts, then what each of its methods needs, with progress for the admin API.

Order and share of the progress bar: terms/profiles (detection), the output net's sequences (every target, whatever
its methods), the served model's knowledge of the target,
GUARD's tables, ECO's strength search, O3's adapter (the slow part). The adapter is loaded into this replica's
engine before the target turns active; other replicas load it on their first flagged request.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from classifiers.general import general_prompts
from classifiers.judge import (
    JudgeProfile,
    build_profile,
    documented_facts,
    documented_numbers,
    encoder_cut,
    entities_to_describe,
)
from classifiers.retrieval import retrieval_vectors
from classifiers.terms import TermMatcher, target_terms
from guards.knowledge import DESCRIBE, Knowledge, answer, describe, elicit, forget_questions
from guards.net import build_net
from guards.tables import build_guard_tables
from guards.training.eco import search_sigma
from guards.training.o3 import train_adapter
from server.engines.base import Engine
from server.engines.lora import LoRAAdapter
from server.engines.threads import engine_threads, in_own_thread
from server.registry.artifacts import ArtifactStore
from server.registry.documents import load_documents
from server.registry.models import BuildResult, Progress, TargetRecord
from server.settings import InterventionSettings

if TYPE_CHECKING:
    from classifiers.pipeline import DetectionPipeline

# targets whose elicited knowledge a replica remembers (a few kilobytes each)
KNOWLEDGE_MEMO = 512


class TargetBuilder:
    def __init__(self, engine: Engine, detection: DetectionPipeline, artifacts: ArtifactStore,
                 settings: InterventionSettings, load_adapter: Callable[[str], Awaitable[str]]) -> None:
        self.engine = engine
        self.detection = detection
        self.artifacts = artifacts
        self.settings = settings
        self.load_adapter = load_adapter
        # O3 training is CPU/GPU-bound and loads its own copy of the model: several registrations at once train one
        # after another instead of multiplying memory and fighting over the same cores.
        self._training = asyncio.Semaphore(1)
        # Elicitation is deterministic (temperature 0, same model, same questions): a target registered again, with
        # other methods or after a delete, reuses what this replica already asked instead of asking the model again.
        self._known: OrderedDict[tuple[object, ...], Knowledge] = OrderedDict()
        # the served model's answers to general questions, the encoder criterion's general negatives: asked once
        self._general: list[str] | None = None
        self._general_lock = asyncio.Lock()

    async def knowledge(self, record: TargetRecord) -> Knowledge:
        elicit_settings = self.settings.elicit
        # the judge reads every method's drafts against what the model knows; without drafting, O3 trains on the
        # questions alone
        asked_for = self.settings.draft.enabled or {"eco", "guard"} & set(record.methods)
        if elicit_settings.questions == 0 or not asked_for:
            return Knowledge(questions=forget_questions(record))
        key = (tuple(forget_questions(record)), record.name, tuple(record.aliases), tuple(record.dropped_elicited),
               *elicit_settings.model_dump().values())
        if key in self._known:
            self._known.move_to_end(key)
            return self._known[key]
        knowledge = await elicit(self.engine, record, elicit_settings, self.detection.is_common)
        self._known[key] = knowledge
        while len(self._known) > KNOWLEDGE_MEMO:
            self._known.popitem(last=False)
        return knowledge

    async def general_pairs(self) -> list[str]:
        """Questions about everyday subjects, other people and other works, with the served model's drafts of their
        answers: what a prompt and its draft look like when they are about nothing registered."""
        async with self._general_lock:
            if self._general is None:
                draft = self.settings.draft
                prompts = general_prompts()
                picked = prompts[::max(len(prompts) // max(draft.general_pairs, 1), 1)][:draft.general_pairs]
                answers = await asyncio.gather(*(answer(self.engine, q, draft.tokens, f"general-pair-{i}")
                                                 for i, q in enumerate(picked)))
                self._general = [f"{q}\n{a}" for q, a in zip(picked, answers, strict=True)]
            return self._general

    async def calibrate_encoder(self, profile: JudgeProfile, descriptions: dict[str, str],
                                retrieval: str | None) -> None:
        """The encoder criterion's cut, on the target's retrieval vectors: hard negatives from its documents (the
        entities described without it, asked and answered) and general questions with their drafts."""
        encoder = self.detection.encoder
        if not self.settings.draft.encoder or retrieval is None or encoder is None:
            return
        hard = [f"{DESCRIBE[0].format(entity=e)}\n{text}" for e, text in descriptions.items()
                if not profile.described.get(e)]
        negatives = [*hard, *await self.general_pairs()]
        vectors = await asyncio.to_thread(encoder.encode, negatives)
        target = await asyncio.to_thread(retrieval_vectors, self.artifacts, retrieval)
        profile.encoder_cut = encoder_cut(target, vectors, self.settings.draft.encoder_margin)
        profile.encoder_negatives = len(negatives)

    async def judge_profile(self, record: TargetRecord, knowledge: Knowledge, retrieval: str | None = None
                            ) -> JudgeProfile:
        """The judge's facts of the target: from its documents (the operator's first, then the model's elicited
        answers), and which of their entities the served model ties to the target when asked about them alone.
        ``retrieval``: the target's retrieval vectors, which the encoder criterion is calibrated on."""
        given = load_documents(self.artifacts, record)
        operator = [*given, *([record.description] if record.description else [])]
        documents = [*operator, *knowledge.answers]
        own = " ".join([record.name, *record.aliases])
        is_common = self.detection.is_common
        draft = self.settings.draft
        entities = entities_to_describe(documents, own, is_common, draft.describe_entities)
        descriptions = await describe(self.engine, entities, draft.describe_tokens, f"describe-{record.id}")
        matcher = TermMatcher({record.id: target_terms(record, is_common)})
        profile = build_profile(record.id, own, descriptions, lambda text: bool(matcher.find(text)), is_common,
                                documented_facts(documents, own, is_common), operator_documents=bool(given),
                                numbers=documented_numbers(documents, own))
        await self.calibrate_encoder(profile, descriptions, retrieval)
        return profile

    def earlier_adapters(self, record: TargetRecord) -> list[LoRAAdapter]:
        return [LoRAAdapter.from_bytes(self.artifacts.get(digest)) for t in self.detection.cache.active()
                if t.id != record.id and (digest := t.artifacts.o3_lora) is not None]

    async def build(self, record: TargetRecord, progress: Progress) -> BuildResult:
        # What the model says of the target comes first: its answers are the target's elicited documents, used
        # after the operator's wherever documents are (the retrieval index, the net's entities, the judge, GUARD).
        knowledge = await self.knowledge(record)
        await progress(0.05, f"{len(knowledge.entities())} facts from {len(knowledge.answers)} answers")
        result = await self.detection.build(record, progress, knowledge.answers)
        profile = await self.judge_profile(record, knowledge, result.artifacts.retrieval_chunks)
        tied = sum(profile.described.values())
        cut = "" if profile.encoder_cut is None else (f"; encoder cut {profile.encoder_cut:.3f} over "
                                                      f"{profile.encoder_negatives} negatives")
        await progress(0.21, f"judge: {tied} of {len(profile.described)} entities described as the target's own{cut}")
        result.artifacts.knowledge = self.artifacts.put(knowledge.model_dump_json().encode())
        result.artifacts.judge = self.artifacts.put(profile.model_dump_json().encode())
        # the net changes unflagged answers too, so it holds only what is the target's own: its names and the
        # document entities the model ties to it alone (a work's award or a co-star's show stays sayable)
        entities = [e for e, own in profile.described.items() if own][:self.settings.net.entities]
        result.artifacts.net_sequences = await asyncio.to_thread(
            build_net, record, entities, self.engine.tokenizer, self.detection.is_common, self.artifacts)
        if "guard" in record.methods:
            result.artifacts.guard_tables = await asyncio.to_thread(
                build_guard_tables, record, knowledge, self.engine.tokenizer, self.engine.embedding_matrix(),
                self.detection.is_common, self.settings.guard, self.artifacts, profile,
                load_documents(self.artifacts, record))
        if "eco" in record.methods:
            search = await search_sigma(self.engine, record, knowledge, self.detection.is_common, self.settings.eco,
                                        progress)
            result.thresholds.eco_sigma = search.sigma
            if not math.isnan(search.leak):  # a searched strength, not the default: served with the margin
                result.thresholds.eco_sigma = min(search.sigma * self.settings.eco.margin, self.settings.eco.max_sigma)
                result.thresholds.eco_sigma_searched = search.sigma
                result.thresholds.eco_leak = search.leak
            result.artifacts.eco_search = self.artifacts.put(json.dumps(search.model_dump()).encode())
        if "o3" in record.methods:
            digest = await self.train_o3(record, knowledge, progress)
            result.artifacts.o3_lora = digest
            await self.load_adapter(digest)
        return result

    async def train_o3(self, record: TargetRecord, knowledge: Knowledge, progress: Progress) -> str:
        latest: list[tuple[float, str]] = []

        def report(fraction: float, message: str) -> None:  # called from the training thread
            latest.append((fraction, message))

        if self._training.locked():
            await progress(0.6, "O3: waiting for another target's training to finish")
        async with self._training:
            earlier = self.earlier_adapters(record)
            # its own thread with every core, whose OpenMP team ends with it (server/engines/threads.py)
            task = asyncio.ensure_future(in_own_thread(
                train_adapter, self.engine.model_path, knowledge.questions, earlier, self.settings.o3, report,
                threads=engine_threads()))
            while not task.done():
                await asyncio.wait([task], timeout=1.0)
                if latest:
                    fraction, message = latest[-1]
                    await progress(0.6 + 0.35 * fraction, message)
            adapter, _loss = task.result()
        return self.artifacts.put(adapter.to_bytes())
