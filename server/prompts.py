"""A request's prompts as token ids: the chat rendered with the model's own template, or the completion prompts.

What the user wrote (message contents, prompt text) is kept beside the ids, because that, not the template, is what
detection reads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import cast

from server.engines.base import Engine
from server.errors import InvalidRequestError
from server.protocol import ChatCompletionRequest, CompletionRequest


@dataclass
class Prompt:
    token_ids: list[int]
    echo_text: str = ""
    # what the user wrote (message contents, or the prompt text): what detection reads
    contents: list[str] = field(default_factory=list)
    # a token prompt to echo: decoded only after its ids are known to be in the vocabulary
    decode_echo: bool = False
    # target id -> methods applied to this prompt (empty: it went to the engine unguarded)
    fired: dict[str, list[str]] = field(default_factory=dict)



def _tool_calls(calls: list[dict]) -> list[dict]:
    """vLLM's reading of an assistant's past tool calls: function calls only, their JSON arguments as an object for
    the template (arguments that are not a JSON object read as an empty one, so the conversation can go on)."""
    out = []
    for call in calls:
        function = call.get("function")
        if call.get("type", "function") != "function" or not isinstance(function, dict):
            raise InvalidRequestError("chat completions only support assistant tool_calls of type 'function'.",
                                      param="tool_calls")
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments else {}
            except ValueError:
                arguments = {}
        out.append({**call, "function": {**function, "arguments": arguments if isinstance(arguments, dict) else {}}})
    return out


def chat_prompt(engine: Engine, body: ChatCompletionRequest) -> Prompt:
    messages: list[dict] = []
    for m in body.messages:
        message: dict = {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
        for key in ("name", "tool_calls", "tool_call_id"):
            if getattr(m, key) is not None:
                message[key] = getattr(m, key)
        if m.role == "assistant" and message.get("tool_calls") is not None:
            calls = _tool_calls(message.pop("tool_calls"))
            if calls:
                message["tool_calls"] = calls
        messages.append(message)
    tools = [t.model_dump(exclude_none=True) for t in body.tools] if body.tools else None
    try:
        ids = engine.render_chat(messages, add_generation_prompt=body.add_generation_prompt,
                                      continue_final_message=body.continue_final_message, tools=tools,
                                      template_kwargs=body.chat_template_kwargs)
    except Exception as exc:  # the model's Jinja template rejects some conversations
        raise InvalidRequestError(f"the conversation cannot be rendered with the model's chat template: {exc}",
                                  param="messages") from exc
    # vLLM's chat echo: the answer continues the last message when it is the assistant's own
    last = body.messages[-1]
    echo = last.text() if body.echo and last.role == "assistant" else ""
    return Prompt(ids, echo, contents=[m["content"] for m in messages])

def completion_prompts(engine: Engine, body: CompletionRequest) -> list[Prompt]:
    raw = body.prompt
    items: list[str | list[int]]
    if isinstance(raw, str):
        items = [raw]
    elif raw and isinstance(raw[0], int):
        items = [raw]
    else:
        items = list(cast(list[str] | list[list[int]], raw))  # a batch: its first item said which kind
    prompts = []
    tok = engine.tokenizer
    for item in items:
        if isinstance(item, str):
            if not item:
                raise InvalidRequestError("the prompt is empty", param="prompt")
            ids = tok.encode(item, add_special_tokens=False)
            prompts.append(Prompt(ids, item if body.echo else "", contents=[item]))
        else:  # token prompts are decoded (echo, detection) once the engine has checked their ids
            prompts.append(Prompt(list(item), decode_echo=body.echo))
    return prompts
