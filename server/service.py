"""Chat and text completions: wire request -> engine requests -> wire response or SSE stream.

This is the one place where a request's prompt is turned into token ids and limits are checked, so that every
engine call that follows is known to be valid. The guard (detection, policy, interventions) runs between rendering
and the engine.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pydantic import BaseModel

from guards.interventions import PromptContext, RequestGuard
from server import __version__
from server.engines.base import Engine, EngineOutput, EngineRequest, TokenLogprobs
from server.engines.detokenize import decode_text
from server.errors import GatewayError, ModelNotFoundError, sse_error_event
from server.logprobs import chat_logprobs, completion_logprobs, prompt_logprobs, token_text
from server.metrics import Metrics
from server.prompts import Prompt, chat_prompt, completion_prompts
from server.protocol import ChatCompletionRequest, CompletionRequest, SamplingFields, now, random_id
from server.request_options import choice_seed, sampling_options, truncate
from server.responses import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    Completion,
    CompletionChoice,
    DeltaMessage,
    Usage,
    chunk_json,
)
from server.unsupported import check_request

R = TypeVar("R", bound=BaseModel)
B = TypeVar("B", ChatCompletionRequest, CompletionRequest)


@dataclass
class Answer(Generic[R]):
    """A collected response, with its headers (the targets that fired, and where the output net filtered)."""

    body: R
    headers: dict[str, str]


@dataclass
class Stream:
    """A streamed response's SSE lines, with its headers: sent before the first line, so they name what the
    detectors fired on, not where the output net will filter."""

    lines: AsyncIterator[str]
    headers: dict[str, str]


@dataclass
class _Started:
    """A choice's unguarded generation, started as the judge's draft: the outputs held back while it was judged,
    and the iterator that goes on with the rest of the answer once it was cleared."""

    outputs: AsyncIterator[EngineOutput]
    held: list[EngineOutput] = field(default_factory=list)
    submitted: float = field(default_factory=time.perf_counter)
    done: bool = False

    @property
    def text(self) -> str:
        return "".join(o.text for o in self.held)

    async def close(self) -> None:
        """Aborts the generation in the engine (a judged draft is never sent)."""
        aclose = getattr(self.outputs, "aclose", None)
        if aclose is not None:
            await aclose()


@dataclass
class _Choice:
    index: int
    prompt: Prompt
    response_id: str = ""
    text: list[str] = field(default_factory=list)
    output_tokens: int = 0
    finish_reason: str | None = None
    token_ids: list[int] = field(default_factory=list)
    # the output net the request was sent with, and the targets whose terms it kept the output from completing
    net: str | None = None
    net_fired: set[str] = field(default_factory=set)
    logprobs: list[TokenLogprobs] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprobs | None] | None = None
    stop_reason: int | str | None = None
    # the draft, when the judge cleared it: the answer is this generation, gone on
    started: _Started | None = None


# one engine request per choice (n of them per prompt), with what the response needs of it
Jobs = list[tuple[_Choice, EngineRequest]]


class CompletionService:
    def __init__(self, engine: Engine, metrics: Metrics, guard: RequestGuard | None = None) -> None:
        self.engine = engine
        self.metrics = metrics
        # vLLM names its build and configuration in every response; this names the gateway's and the model's
        self.fingerprint = f"ugw-{__version__}-{hashlib.sha1(str(engine.info.model_path).encode()).hexdigest()[:8]}"
        # Detection + policy + interventions; None serves the model unguarded.
        self.guard = guard

    # ---- validation shared by both endpoints -----------------------------------------------------------------------
    def check_model(self, model: str | None) -> None:
        """No model is the served one, as on `vllm serve`; any other name is not served here."""
        if model and model != self.engine.info.served_model_name:
            raise ModelNotFoundError(f"The model '{model}' does not exist; this server serves "
                                     f"'{self.engine.info.served_model_name}'.", param="model")

    async def _guarded(self, prompt: Prompt, request_id: str, draft: bool) -> PromptContext | None:
        if self.guard is None:
            return None
        contents = prompt.contents or [decode_text(self.engine.tokenizer, prompt.token_ids)]
        context = PromptContext(prompt.token_ids, contents)
        guarded = await self.guard.guard(context, request_id, draft)
        prompt.fired = guarded.plan.summary()
        if not guarded.pending:
            self.metrics.count_interventions(prompt.fired)
        return context

    async def _draft(self, job: tuple[_Choice, EngineRequest], tokens: int) -> str:
        """Start a choice's unguarded generation, or go on with it, and hold its first ``tokens`` tokens (or all, if
        fewer)."""
        choice, req = job
        started = choice.started
        if started is None:
            started = choice.started = _Started(aiter(self.engine.generate(req)))
        while not started.done and (not started.held or started.held[-1].num_output_tokens < tokens):
            out = await anext(started.outputs, None)
            if out is None:
                started.done = True
                break
            started.held.append(out)
            started.done = out.finished
        return started.text

    async def _draft_and_judge(self, prompt: Prompt, context: PromptContext, jobs: Jobs, request_id: str) -> None:
        """The judge reads every choice's draft: cleared, the drafts go on as the answer; judged, they are aborted
        and the requests are guarded from their first token. The drafts are read every ``check_every`` tokens on
        the way: one that already reveals every flagged target stops there ("Ron Weasley" in its fifth token), so a
        judged answer starts that much sooner; a draft is cleared only once read whole."""
        assert self.guard is not None
        guarded = context.guarded
        settings = self.guard.settings.draft
        tokens = min(settings.check_every, settings.tokens)
        verdicts = None  # the stopping checkpoint's, which the judge then reuses
        while True:
            drafts = await asyncio.gather(*(self._draft(job, tokens) for job in jobs))
            if tokens >= settings.tokens or all(c.started is None or c.started.done for c, _ in jobs):
                break
            verdicts = await self.guard.reveals_all(context, drafts)
            if verdicts is not None:
                break
            tokens = min(tokens + settings.check_every, settings.tokens)
        await self.guard.judge(context, drafts, request_id, verdicts)
        prompt.fired = guarded.plan.summary()
        self.metrics.count_interventions(prompt.fired)
        self.metrics.count_draft("cleared" if guarded.plan.empty else "judged")
        if guarded.plan.empty:
            return
        for choice, req in jobs:
            if choice.started is not None:
                await choice.started.close()
                choice.started = None
            req.request_id = f"{req.request_id}-guarded"
            guarded.apply_to(req)
            self._guard_choices(req)
            self.engine.validate_request(req)

    async def _engine_requests(self, request_id: str, prompts: list[Prompt],
                               body: ChatCompletionRequest | CompletionRequest,
                               requested: int | None) -> Jobs:
        out: Jobs = []
        try:
            for p_index, prompt in enumerate(prompts):
                await self._prompt_requests(request_id, p_index, prompt, body, requested, out)
        except BaseException:
            await _close(out)  # drafts started for this request are aborted, whatever failed after them
            raise
        return out

    async def _prompt_requests(self, request_id: str, p_index: int, prompt: Prompt,
                               body: ChatCompletionRequest | CompletionRequest, requested: int | None,
                               out: Jobs) -> None:
        """One prompt's n engine requests, appended to ``out`` as soon as they exist (a draft may start them)."""
        limit = self.engine.info.max_model_len
        prompt.token_ids = truncate(prompt.token_ids, body.truncate_prompt_tokens, limit)
        sampling = sampling_options(body, len(prompt.token_ids), requested, limit)
        if body.prompt_logprobs is None and sampling.prompt_logprobs is not None and \
                self.engine.unsupported(sampling) == "prompt_logprobs":
            # asked for only by implication (vLLM's chat echo): an engine without them answers without them
            sampling = sampling.model_copy(update={"prompt_logprobs": None})
        self.engine.validate_request(EngineRequest(request_id=request_id, sampling=sampling,
                                                   prompt_token_ids=prompt.token_ids))
        if prompt.decode_echo:
            prompt.echo_text = decode_text(self.engine.tokenizer, prompt.token_ids)
        # prompt_logprobs are the model's reading of the prompt itself, which no draft of the answer can clear: a
        # flagged prompt that asks for them is guarded without a draft
        context = await self._guarded(prompt, request_id, draft=sampling.prompt_logprobs is None)
        guarded = context.guarded if context is not None else None
        jobs: Jobs = []
        for i in range(body.n):
            index = p_index * body.n + i
            seeded = sampling if i == 0 else sampling.model_copy(update={"seed": choice_seed(sampling.seed, i)})
            req = EngineRequest(request_id=f"{request_id}-{index}", sampling=seeded,
                                prompt_token_ids=prompt.token_ids)
            if guarded is not None:
                guarded.apply_to(req)
                self._guard_choices(req)
            self.engine.validate_request(req)
            jobs.append((_Choice(index=index, prompt=prompt, response_id=request_id,
                                 net=guarded.net if guarded else None), req))
        out += jobs
        if context is not None and context.guarded.pending:
            await self._draft_and_judge(prompt, context, jobs, request_id)

    def _guard_choices(self, req: EngineRequest) -> None:
        """A structured-output choice spelling a forbidden token is dropped: the grammar could otherwise spell it
        with smaller tokens than the ones GUARD filters ("R" + "on"). When every choice is forbidden the list is
        left whole, for the processor to do what it can. The choices vetted so, GUARD's name rule is lifted: it
        would cut a kept choice at its second capital ("Sherlock Holmes" -> "Sherlock ")."""
        spec, rules = req.sampling.structured, req.logits
        if spec is None or spec.kind != "choice" or rules is None:
            return
        if rules.names is not None:
            req.logits = rules = rules.model_copy(update={"names": None})
        if not rules.banned_token_ids and not rules.sequences:
            return
        banned = set(rules.banned_token_ids) | {s[0] for s in rules.sequences}
        tok = self.engine.tokenizer
        kept = tuple(c for c in spec.choices if not any(
            banned & set(tok.encode(form, add_special_tokens=False)) for form in (c, " " + c)))
        if kept and len(kept) < len(spec.choices):
            req.sampling = req.sampling.model_copy(update={"structured": spec.model_copy(update={"choices": kept})})

    # ---- running ---------------------------------------------------------------------------------------------------
    async def _outputs(self, choice: _Choice, req: EngineRequest) -> AsyncIterator[EngineOutput]:
        started = choice.started
        if started is None:
            async for out in self.engine.generate(req):
                yield out
            return
        try:  # a cleared draft: what was held back, then the same generation, going on
            for out in started.held:
                yield out
            if not started.done:
                async for out in started.outputs:
                    yield out
        finally:
            await started.close()

    async def _merged(self, jobs: Jobs) -> AsyncIterator[tuple[_Choice, EngineOutput]]:
        if len(jobs) == 1:  # the common case: no tasks, no queue
            choice, req = jobs[0]
            async for out in self._outputs(choice, req):
                yield choice, out
            return
        queue: asyncio.Queue[tuple[_Choice, EngineOutput] | BaseException | None] = asyncio.Queue()

        async def pump(choice: _Choice, req: EngineRequest) -> None:
            try:
                async for out in self._outputs(choice, req):
                    queue.put_nowait((choice, out))
            except BaseException as exc:  # noqa: BLE001 - forwarded to the consumer
                queue.put_nowait(exc)
            finally:
                queue.put_nowait(None)

        tasks = [asyncio.create_task(pump(c, r)) for c, r in jobs]
        try:
            remaining = len(tasks)
            while remaining:
                item = await queue.get()
                if item is None:
                    remaining -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _usage(self, choices: list[_Choice]) -> Usage:
        prompt_tokens = sum(len(p.token_ids) for p in {id(c.prompt): c.prompt for c in choices}.values())
        completion_tokens = sum(c.output_tokens for c in choices)
        return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                     total_tokens=prompt_tokens + completion_tokens)

    async def _steps(self, jobs: Jobs
                     ) -> AsyncIterator[tuple[_Choice, EngineOutput, str | None]]:
        """(choice, engine step, finish reason or None), with the choice's counters and logprobs kept current."""
        # a cleared draft started before: its time to first token counts from then
        start = min([time.perf_counter(), *(c.started.submitted for c, _ in jobs if c.started)])
        first = True
        async for choice, out in self._merged(jobs):
            if first:
                self.metrics.observe_ttft(time.perf_counter() - start)
                first = False
            choice.output_tokens = out.num_output_tokens
            choice.token_ids += out.token_ids
            if out.logprobs:
                choice.logprobs += out.logprobs
            if out.prompt_logprobs is not None:
                choice.prompt_logprobs = out.prompt_logprobs
            finish = None
            if out.finished:
                finish = "length" if out.finish_reason == "length" else "stop"
                choice.finish_reason = finish
                choice.stop_reason = out.stop_reason
                self._net_fired(choice)
            yield choice, out, finish

    def _net_fired(self, choice: _Choice) -> None:
        if self.guard is None or choice.net is None:
            return
        choice.net_fired = self.guard.net_engaged(choice.net, choice.token_ids, choice.prompt.token_ids)
        self.metrics.count_interventions({t: ["net"] for t in choice.net_fired})

    async def _collect(self, jobs: Jobs) -> list[_Choice]:
        async for choice, out, _ in self._steps(jobs):
            choice.text.append(out.text)
        choices = [c for c, _ in jobs]
        self.metrics.count_tokens(self._usage(choices))
        return choices

    @staticmethod
    def fired_header(jobs: Jobs) -> dict[str, str]:
        """``x-unlearning-targets: <target id>:<method>+<method>,...`` when any target fired, else no header;
        ``net`` is the output net, which filtered a continuation of that target's terms."""
        fired: dict[str, set[str]] = {}
        for choice, _ in jobs:
            for target, methods in choice.prompt.fired.items():
                fired.setdefault(target, set()).update(methods)
            for target in choice.net_fired:
                fired.setdefault(target, set()).add("net")
        if not fired:
            return {}
        return {"x-unlearning-targets": ",".join(f"{t}:{'+'.join(sorted(m))}" for t, m in sorted(fired.items()))}

    @staticmethod
    def _response_id(jobs: Jobs) -> str:
        return jobs[0][0].response_id

    def _text(self, body: SamplingFields):
        return token_text(self.engine.tokenizer, body.return_tokens_as_token_ids)

    def _chat_logprobs(self, body: ChatCompletionRequest, positions: list[TokenLogprobs]):
        return chat_logprobs(positions, body.top_logprobs or 0, self._text(body)) if body.logprobs else None

    def _completion_logprobs(self, body: CompletionRequest, choice: _Choice, positions: list[TokenLogprobs],
                             first: bool, offset: int = 0):
        """A completion's logprobs; with echo the prompt's positions come first (once, in a stream)."""
        if body.logprobs is None:
            return None
        echoed: list[TokenLogprobs | None] = []
        if body.echo and first and choice.prompt_logprobs is not None:
            echoed = list(choice.prompt_logprobs)
        return completion_logprobs([*echoed, *positions], body.logprobs, self._text(body), offset)

    def _prompt_logprobs(self, body: SamplingFields, choice: _Choice):
        chat_echo = isinstance(body, ChatCompletionRequest) and body.echo  # vLLM's chat echo reports them
        if (body.prompt_logprobs is None and not chat_echo) or choice.prompt_logprobs is None:
            return None
        return prompt_logprobs(choice.prompt_logprobs, self._text(body))

    # ---- chat ------------------------------------------------------------------------------------------------------
    async def chat(self, body: ChatCompletionRequest) -> Answer[ChatCompletion] | Stream:
        """``/v1/chat/completions``."""
        return await self._answer(body, "chatcmpl", lambda: [chat_prompt(self.engine, body)], self._chat_stream,
                                  self._chat_response)

    async def _answer(self, body: B, prefix: str, prompts: Callable[[], list[Prompt]],
                      stream: Callable[[B, Jobs], AsyncIterator[str]],
                      collect: Callable[[B, Jobs], Awaitable[R]]) -> Answer[R] | Stream:
        """Validate, render, guard; then stream or collect. Every 4xx is raised before a stream starts."""
        self.check_model(body.model)
        body.model = self.engine.info.served_model_name  # what the response names
        check_request(body)
        jobs = await self._engine_requests(random_id(prefix), prompts(), body, body.requested_max_tokens())
        if body.stream:
            return Stream(stream(body, jobs), self.fired_header(jobs))
        return Answer(await collect(body, jobs), self.fired_header(jobs))

    async def _chat_response(self, body: ChatCompletionRequest,
                             jobs: Jobs) -> ChatCompletion:
        choices = await self._collect(jobs)
        first = choices[0]
        return ChatCompletion(
            id=self._response_id(jobs), created=now(), model=body.model, system_fingerprint=self.fingerprint,
            choices=[ChatChoice(index=c.index,
                                message=AssistantMessage(content=c.prompt.echo_text + "".join(c.text)),
                                finish_reason=c.finish_reason,
                                logprobs=self._chat_logprobs(body, c.logprobs), stop_reason=c.stop_reason,
                                token_ids=c.token_ids if body.return_token_ids else None) for c in choices],
            usage=self._usage(choices),
            prompt_logprobs=self._prompt_logprobs(body, first),
            prompt_token_ids=first.prompt.token_ids if body.return_token_ids else None)

    async def _chat_stream(self, body: ChatCompletionRequest,
                          jobs: Jobs) -> AsyncIterator[str]:
        """vLLM's chunks: the role chunk (with the prompt's token ids), one per step, the usage chunk if asked."""
        rid, created = self._response_id(jobs), now()
        continuous = self._continuous(body)

        def chunk(choices: list[ChatChunkChoice], usage: Usage | None, **extra: object) -> str:
            fields = {"usage": usage} if usage is not None else {}
            return chunk_json(ChatCompletionChunk(id=rid, object="chat.completion.chunk", created=created,
                                                  model=body.model, choices=choices, **fields, **extra))

        def chat_usage(prompt_tokens: int, completion_tokens: int) -> Usage | None:
            if not continuous:
                return None
            return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                         total_tokens=prompt_tokens + completion_tokens, completion_tokens_details=None)

        # vLLM sends the role chunk with the first engine output, not before: a client timing its first chunk
        # (vLLM's own benchmark does) then measures the time to the first token, not to the response headers
        preamble: list[str] = []
        for c, _ in jobs:
            preamble.append(chunk([ChatChunkChoice(index=c.index, delta=DeltaMessage(role="assistant", content=""),
                                                   logprobs=None, finish_reason=None)],
                                  chat_usage(len(c.prompt.token_ids), 0),
                                  prompt_token_ids=c.prompt.token_ids if body.return_token_ids else None,
                                  prompt_text=None))
            if c.prompt.echo_text:
                preamble.append(chunk([ChatChunkChoice(index=c.index, delta=DeltaMessage(content=c.prompt.echo_text),
                                                       logprobs=None, finish_reason=None)], None))

        def step(c: _Choice, out: EngineOutput, finish: str | None, usage: Usage | None) -> str:
            ended = {"stop_reason": c.stop_reason} if finish else {}
            return chunk([ChatChunkChoice(
                index=c.index, delta=DeltaMessage(content=out.text),
                logprobs=self._chat_logprobs(body, out.logprobs or []) if out.token_ids else None,
                finish_reason=finish, **ended,
                token_ids=out.token_ids if body.return_token_ids else None)],
                usage and chat_usage(usage.prompt_tokens, usage.completion_tokens), **self._finished(body, finish))

        def last(usage: Usage) -> str:
            return chunk([], usage, system_fingerprint=self.fingerprint)

        async for line in self._sse_events(jobs, body, step, last, preamble):
            yield line

    def _finished(self, body: SamplingFields, finish: str | None) -> dict[str, str]:
        """vLLM names its build on a choice's last chunk, or on the usage chunk when one follows."""
        usage_follows = body.stream_options is not None and body.stream_options.include_usage
        return {"system_fingerprint": self.fingerprint} if finish and not usage_follows else {}

    @staticmethod
    def _continuous(body: SamplingFields) -> bool:
        options = body.stream_options
        return options is not None and options.include_usage and options.continuous_usage_stats

    # ---- text completions ------------------------------------------------------------------------------------------
    async def complete(self, body: CompletionRequest) -> Answer[Completion] | Stream:
        """``/v1/completions``."""
        return await self._answer(body, "cmpl", lambda: completion_prompts(self.engine, body), self._complete_stream,
                                  self._completion_response)

    async def _completion_response(self, body: CompletionRequest,
                                   jobs: Jobs) -> Completion:
        choices = await self._collect(jobs)
        return Completion(
            id=self._response_id(jobs), created=now(), model=body.model, system_fingerprint=self.fingerprint,
            choices=[CompletionChoice(index=c.index, text=c.prompt.echo_text + "".join(c.text),
                                      finish_reason=c.finish_reason,
                                      logprobs=self._completion_logprobs(body, c, c.logprobs, first=True),
                                      stop_reason=c.stop_reason,
                                      token_ids=c.token_ids if body.return_token_ids else None,
                                      prompt_logprobs=self._prompt_logprobs(body, c),
                                      prompt_token_ids=c.prompt.token_ids if body.return_token_ids else None)
                     for c in choices],
            usage=self._usage(choices))

    async def _complete_stream(self, body: CompletionRequest,
                              jobs: Jobs) -> AsyncIterator[str]:
        rid, created = self._response_id(jobs), now()
        sent: dict[int, int] = {}  # choice index -> characters sent (logprobs' text_offset)
        echoed: set[int] = set()

        def chunk(choices: list[CompletionChoice], usage: Usage | None = None, **extra: object) -> str:
            fields = {"usage": usage} if usage is not None else {}
            return chunk_json(Completion(id=rid, object="text_completion", created=created, model=body.model,
                                         choices=choices, **fields, **extra))

        for c, _ in jobs:
            if c.prompt.echo_text and body.logprobs is None:
                yield chunk([CompletionChoice(index=c.index, text=c.prompt.echo_text, logprobs=None,
                                              finish_reason=None)])
                echoed.add(c.index)

        def step(c: _Choice, out: EngineOutput, finish: str | None, usage: Usage | None) -> str:
            # with logprobs the echo waits for the prompt's logprobs, which come with the first step
            first = c.index not in echoed
            echoed.add(c.index)
            text = (c.prompt.echo_text if first else "") + out.text
            logprobs = self._completion_logprobs(body, c, out.logprobs or [], first, sent.get(c.index, 0))
            sent[c.index] = sent.get(c.index, 0) + len(text)
            asked = {"prompt_logprobs": self._prompt_logprobs(body, c) if first else None} \
                if body.prompt_logprobs is not None else {}
            return chunk([CompletionChoice(
                index=c.index, text=text, logprobs=logprobs, finish_reason=finish,
                stop_reason=c.stop_reason if finish else None, **asked,
                prompt_token_ids=c.prompt.token_ids if body.return_token_ids and first else None,
                token_ids=out.token_ids if body.return_token_ids else None)], usage, **self._finished(body, finish))

        async for line in self._sse_events(jobs, body, step,
                                           lambda usage: chunk([], usage, system_fingerprint=self.fingerprint)):
            yield line

    async def _sse_events(self, jobs: Jobs, body: SamplingFields,
                          step: Callable[[_Choice, EngineOutput, str | None, Usage | None], str],
                          usage: Callable[[Usage], str], preamble: list[str] | None = None) -> AsyncIterator[str]:
        """The SSE lines: the preamble with the first step (not before an error, as vLLM sends none then), one line
        per engine step, the usage chunk if asked, then [DONE].

        An error after the stream started cannot change the status code any more: it goes out as an error event.
        """
        waiting = list(preamble or [])
        options = body.stream_options
        continuous = self._continuous(body)
        try:
            async for choice, out, finish in self._steps(jobs):
                if out.text or finish or out.logprobs:
                    while waiting:
                        yield waiting.pop(0)
                    yield step(choice, out, finish, self._usage([c for c, _ in jobs]) if continuous else None)
        except GatewayError as exc:
            self.metrics.count_error(exc.error_type)
            yield sse_error_event(exc)
            yield "data: [DONE]\n\n"
            return
        for line in waiting:  # a stream that produced no step still opens with its role chunk
            yield line
        totals = self._usage([c for c, _ in jobs])
        self.metrics.count_tokens(totals)
        if options is not None and options.include_usage:
            yield usage(totals)
        yield "data: [DONE]\n\n"


async def _close(jobs: Jobs) -> None:
    """Abort the drafts already started for a request that failed before it was answered."""
    await asyncio.gather(*(c.started.close() for c, _ in jobs if c.started), return_exceptions=True)
