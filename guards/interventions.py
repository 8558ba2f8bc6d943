"""The three interventions, each a small class that adds its part of a plan to the engine request.

``RequestGuard`` runs a prompt through detection and the policy and returns what the engine should run: token
ids or corrupted prompt embeddings (ECO), a LoRA at a strength level (O3), logits-processor arguments (GUARD).
A new method subclasses ``Intervention``; the app's lifespan builds one of each and hands them to ``RequestGuard``.
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from classifiers.batcher import DetectionBatcher
from classifiers.forbidden_tokens import WordTable, word_table
from classifiers.judge import Judge, Verdict
from guards.eco import corrupt_prompt, corrupted_positions, prompt_seed
from guards.logits.name_table import scan_vocabulary
from guards.logits.net_table import load_net
from guards.net import OutputNet
from guards.policy import Firing, Plan, make_plan
from guards.tables import GuardTables, draft_words, number_table, prompt_entities
from server.engines.base import Engine, EngineRequest, LogitsArgs, LoRASelection
from server.engines.lora import LoRAAdapter
from server.registry.artifacts import ArtifactStore
from server.registry.models import Method
from server.settings import InterventionSettings

if TYPE_CHECKING:
    import torch

    from classifiers.pipeline import DetectionPipeline

logger = logging.getLogger(__name__)
audit_logger = logging.getLogger("ugw.audit")


@dataclass
class Guarded:
    """What one prompt becomes: the engine-request fields, and the plan behind them."""

    plan: Plan
    prompt_embeds: torch.Tensor | None = None
    lora: LoRASelection | None = None
    logits: LogitsArgs | None = None
    # the output net's table file, on every request while any target is active (None: no net)
    net: str | None = None
    # drafting: the detectors flagged the prompt and the plan waits for the judge to read its drafts
    pending: bool = False
    # what the judged draft stated of its targets, which GUARD forbids
    draft_words: list[str] = field(default_factory=list)

    def apply_to(self, request: EngineRequest) -> None:
        """Turn a plain engine request into the guarded one; an empty plan (or one waiting for the judge: the
        request is then the unguarded draft) leaves it as it was but for the net."""
        if not self.plan.empty and not self.pending:
            if self.prompt_embeds is not None:
                request.embeds_token_ids = request.prompt_token_ids
                request.prompt_token_ids, request.prompt_embeds = None, self.prompt_embeds
            request.lora, request.logits = self.lora, self.logits
        if self.net is not None:
            request.logits = (request.logits or LogitsArgs()).model_copy(update={"net": self.net})


def forbidding(logits: LogitsArgs | None, table: WordTable) -> LogitsArgs:
    """``logits`` (a method's, or none) with ``table``'s words forbidden too."""
    base = logits or LogitsArgs()
    return base.model_copy(update={
        "banned_token_ids": tuple(sorted({*base.banned_token_ids, *table.banned})),
        "sequences": tuple(sorted({*base.sequences, *(tuple(s) for s in table.sequences)}))})


@dataclass
class PromptContext:
    token_ids: list[int]
    # the messages' own words (chat) or the prompt text (completions): what detection reads
    contents: list[str]
    guarded: Guarded = field(default_factory=lambda: Guarded(Plan()))


class Intervention(abc.ABC):
    method: Method

    def __init__(self, engine: Engine, artifacts: ArtifactStore, settings: InterventionSettings,
                 detection: DetectionPipeline) -> None:
        self.engine = engine
        self.artifacts = artifacts
        self.settings = settings
        self.detection = detection

    @abc.abstractmethod
    async def apply(self, prompt: PromptContext, firings: list[Firing]) -> None: ...

    async def warm(self) -> None:
        """What the first guarded request would otherwise build on its own time, done before the replica is ready."""
        return None


class ECOIntervention(Intervention):
    method = "eco"

    async def apply(self, prompt: PromptContext, firings: list[Firing]) -> None:
        ids = {f.target.id for f in firings}

        def find(text: str) -> list[tuple[int, int]]:
            return [s for t, spans in self.detection.term_spans(text).items() if t in ids for s in spans]

        eco = self.settings.eco
        positions, boosted = corrupted_positions(prompt.token_ids, self.engine.tokenizer, find, prompt.contents,
                                                 eco.scope)
        sigma = max(s for f in firings if (s := f.target.thresholds.eco_sigma) is not None)  # policy.ready
        prompt.guarded.prompt_embeds = corrupt_prompt(self.engine.embed_tokens(prompt.token_ids), positions, boosted,
                                                      eco.corruption, sigma, eco.dims, prompt_seed(prompt.token_ids),
                                                      eco.term_boost)


class O3Intervention(Intervention):
    """Loads a target's adapter on first use on this replica (hot, no restart) and picks the strength level."""

    method = "o3"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._lock = asyncio.Lock()

    @staticmethod
    def adapter_name(digest: str) -> str:
        return f"o3-{digest[:16]}"

    async def ensure_loaded(self, digest: str) -> str:
        name = self.adapter_name(digest)
        if name in self.engine.loaded_loras():
            return name
        async with self._lock:
            if name not in self.engine.loaded_loras():
                folder = self.engine.work_dir / "adapters" / digest
                if not (folder / "adapter_config.json").exists():
                    adapter = LoRAAdapter.from_bytes(self.artifacts.get(digest))
                    await asyncio.to_thread(adapter.save, folder, str(self.engine.model_path))
                await self.engine.load_lora(name, folder)
                logger.info("loaded O3 adapter %s", name)
        return name

    def level(self, score: float) -> float:
        """The smallest served strength at or above the detector's score (a sure detection: full strength)."""
        levels = self.engine.info.lora_scale_levels
        return next((lv for lv in levels if lv >= score - 1e-9), levels[-1])

    async def apply(self, prompt: PromptContext, firings: list[Firing]) -> None:
        firing = firings[0]  # the policy leaves one: the highest score
        digest = firing.target.artifacts.o3_lora
        assert digest is not None, "the policy plans O3 only for a target with an adapter (policy.ready)"
        name = await self.ensure_loaded(digest)
        prompt.guarded.lora = LoRASelection(name=name, scale=self.level(firing.score))


class GuardIntervention(Intervention):
    method = "guard"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._tables: dict[str, GuardTables] = {}
        self._numbers: WordTable | None = None
        self._names: str | None = None

    async def warm(self) -> None:
        # vocabulary scans (~0.4 s each here): a judged request's first token would wait on them
        if self.settings.guard.forbid_numbers and self._numbers is None:
            self._numbers = await asyncio.to_thread(number_table, self.engine.tokenizer)
        if self.settings.guard.forbid_names and self._names is None:
            self._names = await asyncio.to_thread(self._name_table)

    def _name_table(self) -> str:
        """The name rule's table, as a file of the artifact store: the engine's processor (an upstream's too)
        reads it by path."""
        table = scan_vocabulary(self.engine.tokenizer)
        return str(self.artifacts.path(self.artifacts.put(table.model_dump_json().encode())))

    def tables(self, digest: str) -> GuardTables:
        if digest not in self._tables:
            self._tables[digest] = GuardTables.load(self.artifacts, digest)
        return self._tables[digest]

    @staticmethod
    def logits_args(tables: list[GuardTables], strength: float, extra: Sequence[WordTable] = ()) -> LogitsArgs:
        """The union of the fired targets' tables and the request's own extras (retrieved answers, prompt entities);
        a token close to several terms takes its largest penalty."""
        banned: set[int] = set()
        sequences: set[tuple[int, ...]] = set()
        penalties: dict[int, float] = {}
        words: list[GuardTables | WordTable] = [*tables, *extra]
        for t in words:
            banned.update(t.banned)
            sequences.update(tuple(s) for s in t.sequences)
        for t in tables:
            for token, sim in zip(t.semantic_ids, t.semantic_similarities, strict=True):
                penalties[token] = max(penalties.get(token, 0.0), strength * sim)
        return LogitsArgs(banned_token_ids=tuple(sorted(banned)), sequences=tuple(sorted(sequences)),
                          penalty_ids=tuple(penalties), penalty_values=tuple(penalties.values()))

    async def apply(self, prompt: PromptContext, firings: list[Firing]) -> None:
        text = "\n".join(prompt.contents)
        tables = [self.tables(d) for f in firings if (d := f.target.artifacts.guard_tables) is not None]
        extra = [a for a in (t.retrieve(text) for t in tables) if a is not None]
        guard = self.settings.guard
        near = [w for t in tables for w in t.passage_words(text, guard.passage_sentences, guard.passage_overlap,
                                                           guard.passage_plain_words)]
        if near:
            extra.append(word_table(near, self.engine.tokenizer, self.detection.is_common))
        if self.settings.guard.prompt_entities:
            extra.append(prompt_entities(text, self.engine.tokenizer, self.detection.is_common))
        if prompt.guarded.draft_words:
            extra.append(draft_words(prompt.guarded.draft_words, self.engine.tokenizer, self.detection.is_common))
        if self.settings.guard.forbid_numbers:
            if self._numbers is None:
                self._numbers = await asyncio.to_thread(number_table, self.engine.tokenizer)
            extra.append(self._numbers)
        logits = self.logits_args(tables, self.settings.guard.semantic_penalty, extra)
        if guard.forbid_names and any("lexical" in f.detectors for f in firings):
            # a question that names the target: its answer starts no name inside a sentence
            if self._names is None:
                self._names = await asyncio.to_thread(self._name_table)
            logits = logits.model_copy(update={"names": self._names})
        prompt.guarded.logits = logits


class RequestGuard:
    """Detects a request's targets and lets each method's intervention add its part; the app hands it the
    interventions it built (and keeps O3's, whose adapter loader the build jobs use too)."""

    def __init__(self, detection: DetectionPipeline, interventions: Sequence[Intervention], artifacts: ArtifactStore,
                 settings: InterventionSettings, registry_check: Callable[[], None] | None = None) -> None:
        self.detection = detection
        # encoder detectors run in a worker thread, batched across the requests that arrive together
        self.batcher = DetectionBatcher(detection)
        # Raises when the registry's current state is unknown and the fail policy is closed (503).
        self.registry_check = registry_check
        self.settings = settings
        self.interventions: dict[Method, Intervention] = {i.method: i for i in interventions}
        self.net = OutputNet(artifacts) if settings.net.enabled else None
        self._net_generation = -1
        retrieval = detection.retrieval if settings.draft.encoder else None
        self.judge_of = Judge(detection.term_spans, detection.is_common, artifacts.get,
                              similarities=retrieval.similarities if retrieval is not None else None)
        # the served model's tokenizer: a judged draft's words become its token sequences
        self.tokenizer = next(iter(self.interventions.values())).engine.tokenizer if self.interventions else None

    def net_path(self) -> str | None:
        """The current union of the active targets' nets, rebuilt once per registry change."""
        if self.net is None:
            return None
        generation = self.detection.cache.generation
        if generation != self._net_generation:
            self.net.rebuild(self.detection.cache.active())
            self._net_generation = generation
        return self.net.path

    def net_engaged(self, path: str | None, output: Sequence[int], prompt: Sequence[int]) -> set[str]:
        """Targets whose core terms the net kept ``output`` from completing (prompt + output started one)."""
        return load_net(path).engaged(output, prompt) if path is not None and output else set()

    async def guard(self, prompt: PromptContext, request_id: str, draft: bool = True) -> Guarded:
        """``draft``: whether the request's answer alone is what it returns (no channel a draft cannot judge)."""
        if self.registry_check is not None:
            self.registry_check()
        if self.net is not None and self._net_generation != self.detection.cache.generation:
            await asyncio.to_thread(self.net_path)  # merging 1,000 targets' tables: off the loop
        prompt.guarded.net = self.net_path()
        detections = await self.batcher.detect("\n".join(prompt.contents))
        if not detections:
            return prompt.guarded
        targets = {t.id: t for t in self.detection.cache.active()}
        plan = make_plan(detections, targets)
        prompt.guarded.plan = plan
        if plan.empty:
            return prompt.guarded
        if self.settings.draft.enabled and draft:  # the service drafts, then calls judge()
            prompt.guarded.pending = True
            return prompt.guarded
        await self._intervene(prompt)
        self.audit(request_id, plan, prompt)
        return prompt.guarded

    async def reveals_all(self, prompt: PromptContext, drafts: Sequence[str]) -> list[Verdict] | None:
        """The verdicts when the drafts so far already reveal every flagged target (names and facts; the encoder
        criterion is left to the whole draft), so that drafting further would change none; else None."""
        verdicts = await self._verdicts(prompt, drafts, encoder=False)
        return verdicts if verdicts and all(v.revealed for v in verdicts) else None

    async def _verdicts(self, prompt: PromptContext, drafts: Sequence[str], encoder: bool = True) -> list[Verdict]:
        """The judge's verdict on each flagged target, in a worker thread (the encoder criterion encodes)."""
        firings = [f for f in prompt.guarded.plan.firings if f.methods]
        flagged = {f.target.id: f.target.artifacts.judge for f in firings}
        names = {f.target.id: f.target.name for f in firings}
        return await asyncio.to_thread(self.judge_of.verdicts, "\n".join(prompt.contents), drafts, flagged, names,
                                       encoder=encoder)

    async def judge(self, prompt: PromptContext, drafts: Sequence[str], request_id: str,
                    verdicts: Sequence[Verdict] | None = None) -> Guarded:
        """Read the unguarded drafts of a pending plan: targets they do not reveal are cleared (the draft goes on
        as the answer), the others keep their methods, which then apply from the first token. ``verdicts``: those
        ``reveals_all`` already gave on these drafts."""
        guarded = prompt.guarded
        plan = guarded.plan
        guarded.pending = False
        if verdicts is None:
            verdicts = await self._verdicts(prompt, drafts)
        for verdict in verdicts:
            if not verdict.revealed:
                plan.clear(verdict.target_id, "draft")
                continue
            for firing in plan.firings:
                if firing.target.id == verdict.target_id:
                    firing.verdict, firing.reason = "judged", verdict.reason
            guarded.draft_words = list(dict.fromkeys([*guarded.draft_words, *verdict.words]))
        if not plan.empty:
            await self._intervene(prompt)
            self._forbid_revealed(guarded)
        self.audit(request_id, plan, prompt)
        return guarded

    def _forbid_revealed(self, guarded: Guarded) -> None:
        """A method other than GUARD (which forbids them itself) gets the judged draft's verdict words forbidden too:
        an O3 answer would otherwise take up "The Oracle of Omaha" that the prompt offered and the draft confirmed."""
        if not (self.settings.draft.forbid_revealed and guarded.draft_words and self.tokenizer is not None) \
                or guarded.plan.using("guard"):
            return
        guarded.logits = forbidding(guarded.logits, draft_words(guarded.draft_words, self.tokenizer,
                                                                self.detection.is_common))

    async def _intervene(self, prompt: PromptContext) -> None:
        for method, intervention in self.interventions.items():
            firings = prompt.guarded.plan.using(method)
            if firings:
                await intervention.apply(prompt, firings)

    def audit(self, request_id: str, plan: Plan, prompt: PromptContext) -> None:
        line: dict[str, object] = {
            "event": "forget_target_fired" if not plan.empty else "forget_target_cleared", "request_id": request_id,
            "targets": [{"id": f.target.id, "name": f.target.name, "methods": f.methods, "score": round(f.score, 4),
                         "detectors": f.detectors, "verdict": f.verdict, "reason": f.reason}
                        for f in plan.firings if f.methods or f.verdict == "cleared"]}
        if self.settings.audit_prompts:
            line["prompt"] = "\n".join(prompt.contents)
        audit_logger.info(json.dumps(line))

