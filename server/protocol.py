"""OpenAI wire types for /v1/models, /v1/chat/completions and /v1/completions."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

# vLLM sets no bound on n; this one keeps a single request from taking every engine slot many times over.
MAX_N = 128
MAX_STOP = 4
# vLLM's bounds for seeds (and other 64-bit integers): outside them its engine fails, so the request is a 400.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# vLLM's cap on logprobs per token (its max_logprobs default).
MAX_LOGPROBS = 20


class OpenAIBaseModel(BaseModel):
    # Clients send fields this server does not know (the SDK adds new ones often): kept aside, like vLLM does, so
    # that the service can refuse those vLLM would honour but this server cannot (``server.unsupported``).
    model_config = ConfigDict(extra="allow")


def random_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


# ---- requests ------------------------------------------------------------------------------------------------------

class TextContentPart(OpenAIBaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(OpenAIBaseModel):
    # vLLM takes custom roles too (an empty one as well); the chat template decides what it makes of them
    role: str
    content: str | list[TextContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class FunctionDefinition(OpenAIBaseModel):
    name: Annotated[str, Field(min_length=1)]
    description: str | None = None
    parameters: dict | None = None


class ToolParam(OpenAIBaseModel):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(OpenAIBaseModel):
    name: str


class NamedToolChoice(OpenAIBaseModel):
    type: Literal["function"] = "function"
    function: NamedFunction


class StreamOptions(OpenAIBaseModel):
    include_usage: bool = False
    # vLLM's extension: every chunk carries the usage so far
    continuous_usage_stats: bool = False


class StructuredOutputs(OpenAIBaseModel):
    """vLLM's ``structured_outputs``: exactly one constraint, run by vLLM's own structured-output backend."""

    json_schema: dict | str | None = Field(default=None, alias="json")
    regex: str | None = None
    choice: Annotated[list[str], Field(min_length=1)] | None = None
    grammar: str | None = None
    json_object: bool | None = None
    disable_any_whitespace: bool = False
    disable_additional_properties: bool = False
    whitespace_pattern: str | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _one(self) -> StructuredOutputs:
        kinds = [k for k in ("json_schema", "regex", "choice", "grammar", "json_object")
                 if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("give exactly one of json, regex, choice, grammar and json_object "
                             f"(got {len(kinds)})")
        return self


class JsonSchemaFormat(OpenAIBaseModel):
    name: str = "response"
    description: str | None = None
    json_schema: dict | None = Field(default=None, alias="schema")
    strict: bool | None = None

    model_config = ConfigDict(populate_by_name=True, extra="allow")


class ResponseFormat(OpenAIBaseModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema(self) -> ResponseFormat:
        if self.type == "json_schema" and (self.json_schema is None or self.json_schema.json_schema is None):
            raise ValueError("response_format of type json_schema needs json_schema.schema")
        return self


class SamplingFields(OpenAIBaseModel):
    """Fields the two endpoints share; validated here so that the engine never sees a bad value."""

    # vLLM serves a request without a model with its served model (the response names it)
    model: str | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    n: Annotated[int, Field(ge=1, le=MAX_N)] = 1
    seed: Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)] | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    # vLLM clamps a bias to [-100, 100] (server.request_options)
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # ---- vLLM's sampling extensions (openai client: extra_body) ----
    top_k: Annotated[int, Field(le=INT64_MAX)] | None = None
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    repetition_penalty: Annotated[float, Field(gt=0.0)] | None = None
    min_tokens: Annotated[int, Field(ge=0)] = 0
    stop_token_ids: list[Annotated[int, Field(ge=0)]] | None = None
    include_stop_str_in_output: bool = False
    ignore_eos: bool = False
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    truncate_prompt_tokens: Annotated[int, Field(ge=-1, le=INT64_MAX)] | None = None
    # vLLM's -1 (the whole vocabulary per prompt position) is not offered: 20 at most, like logprobs
    prompt_logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS)] | None = None
    allowed_token_ids: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)] | None = None
    bad_words: list[str] | None = None
    structured_outputs: StructuredOutputs | None = None
    return_tokens_as_token_ids: bool = False
    return_token_ids: bool = False

    # vLLM's models take null for these and mean their default
    null_is_default: ClassVar[tuple[str, ...]] = ("n", "stream", "frequency_penalty", "presence_penalty",
                                                  "return_token_ids", "return_tokens_as_token_ids", "echo")

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(data.get(k, 0) is None for k in cls.null_is_default):
            return {k: v for k, v in data.items() if not (k in cls.null_is_default and v is None)}
        return data

    @field_validator("top_k")
    @classmethod
    def _check_top_k(cls, value: int | None) -> int | None:
        if value is not None and value < -1:
            raise ValueError(f"top_k must be -1 (disable), 0 (disable) or at least 1, got {value}")
        return value

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> list[str] | None:
        if value is None:
            return None
        stops = [value] if isinstance(value, str) else value
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences are allowed")
        if any(s == "" for s in stops):
            raise ValueError("stop sequences must not be empty")
        return stops

    @field_validator("stream_options", mode="before")
    @classmethod
    def _stream_options_need_stream(cls, value: Any, info: ValidationInfo) -> Any:
        # vLLM's rule, as it reads the raw body: options given (not empty) without streaming
        if value and not info.data.get("stream"):
            raise ValueError("Stream options can only be defined when `stream=True`.")
        return value

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatCompletionRequest(SamplingFields):
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS)] | None = None
    tools: list[ToolParam] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = True
    response_format: ResponseFormat | None = None
    echo: bool = False
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    chat_template_kwargs: dict | None = None

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @model_validator(mode="after")
    def _check_chat(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("when using `top_logprobs`, `logprobs` must be set to true")
        if self.continue_final_message and self.add_generation_prompt:
            raise ValueError("continue_final_message and add_generation_prompt cannot both be true")
        if isinstance(self.tool_choice, NamedToolChoice):
            if not self.tools or self.tool_choice.function.name not in {t.function.name for t in self.tools}:
                raise ValueError(f"tool_choice names '{self.tool_choice.function.name}', which is not in tools")
        return self


class CompletionRequest(SamplingFields):
    prompt: str | Annotated[list[str], Field(min_length=1)] | Annotated[list[int], Field(min_length=1)] | Annotated[
        list[Annotated[list[int], Field(min_length=1)]], Field(min_length=1)]
    # OpenAI's default for the legacy endpoint (also for an explicit null, as on vLLM)
    max_tokens: Annotated[int, Field(ge=1)] | None = 16
    null_is_default: ClassVar[tuple[str, ...]] = (*SamplingFields.null_is_default, "max_tokens")
    echo: bool = False
    logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS)] | None = None
    suffix: str | None = None
    response_format: ResponseFormat | None = None

    def requested_max_tokens(self) -> int | None:
        return self.max_tokens


class ModelPermission(OpenAIBaseModel):
    """vLLM's model permission entry, field for field: clients written against `vllm serve` read it."""

    id: str = Field(default_factory=lambda: f"modelperm-{uuid.uuid4().hex}")
    object: str = "model_permission"
    created: int = Field(default_factory=lambda: int(time.time()))
    allow_create_engine: bool = False
    allow_sampling: bool = True
    allow_logprobs: bool = True
    allow_search_indices: bool = False
    allow_view: bool = True
    allow_fine_tuning: bool = False
    organization: str = "*"
    group: str | None = None
    is_blocking: bool = False


class ModelCard(OpenAIBaseModel):
    """As `vllm serve` lists its base model: ``root`` is the model's path, ``parent`` is for adapters."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "vllm"
    root: str | None = None
    parent: str | None = None
    max_model_len: int | None = None
    permission: list[ModelPermission] = Field(default_factory=list)


class ModelList(OpenAIBaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
