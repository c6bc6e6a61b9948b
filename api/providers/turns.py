"""What the Messages API (`anthropic`) and Converse (`bedrock`) share: OpenAI's chat messages
folded into a system prompt and alternating user and assistant turns of content blocks, tool
results in the user turn that follows, and the counts of a usage object."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def text_of(content: Any) -> str:
    """The text of OpenAI message content: a string, or its text parts joined."""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or [] if isinstance(p, dict) and p.get("type") == "text")


def arguments_of(raw: Any) -> dict[str, Any]:
    """A tool call's arguments (a JSON string) as the object the upstream wants as its input."""
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw) if isinstance(raw, str) and raw else {}
    except ValueError:
        return {"arguments": raw}
    return value if isinstance(value, dict) else {"value": value}


def count(usage: dict[str, Any], name: str) -> int:
    value = usage.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_with_cache(usage: dict[str, Any], names: tuple[str, str, str, str]) -> dict[str, Any]:
    """An upstream's usage as OpenAI's, given the names of its (input, output, cache read,
    cache write) counts: the cache's tokens are prompt tokens too; its reads are cached tokens."""
    prompt, completion, cache_read, cache_write = (count(usage, name) for name in names)
    prompt += cache_read + cache_write
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cache_read}, "cache_creation_input_tokens": cache_write}


@dataclass
class BlockStyle:
    """How one upstream writes its content blocks: content (text, images…) as blocks, a tool
    result `(call id, text)`, a tool call `(call id, name, input)`."""

    content: Callable[[Any], list[dict[str, Any]]]
    tool_result: Callable[[str, str], dict[str, Any]]
    tool_use: Callable[[Any, Any, dict[str, Any]], dict[str, Any]]


@dataclass
class Turns:
    system: list[str] = field(default_factory=list)
    turns: list[dict[str, Any]] = field(default_factory=list)

    def add(self, role: str, blocks: list[dict[str, Any]]) -> None:
        if self.turns and self.turns[-1]["role"] == role:  # turns alternate: consecutive ones merge
            self.turns[-1]["content"].extend(blocks)
        else:
            self.turns.append({"role": role, "content": blocks})


def fold(messages: Any, style: BlockStyle) -> Turns:
    """OpenAI chat messages as a system prompt and alternating turns of `style`'s blocks."""
    folded = Turns()
    for message in messages or []:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role in ("system", "developer"):
            folded.system.append(text_of(message.get("content")))
        elif role == "tool":
            folded.add("user", [style.tool_result(str(message.get("tool_call_id", "")), text_of(message.get("content")))])
        elif role == "assistant":
            blocks = style.content(message.get("content"))
            for call in message.get("tool_calls") or []:
                if isinstance(call, dict):
                    function = call.get("function") or {}
                    blocks.append(style.tool_use(call.get("id"), function.get("name"), arguments_of(function.get("arguments"))))
            folded.add("assistant", blocks)
        else:
            folded.add("user", style.content(message.get("content")))
    return folded


def function_tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The `function` of each of a chat request's function tools."""
    return [t["function"] for t in body.get("tools") or [] if isinstance(t, dict) and isinstance(t.get("function"), dict)]


def tool_call(call_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
    """An upstream's tool use as an OpenAI tool call (its input as a JSON string)."""
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments or {})}}


def chat_completion(
    answer_id: Any, model: Any, text: list[str], reasoning: list[str], calls: list[dict[str, Any]], finish_reason: str,
    usage: dict[str, Any] | None,
) -> dict[str, Any]:
    """An OpenAI chat completion of one choice, from what an upstream's answer said."""
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    completion: dict[str, Any] = {"id": answer_id, "object": "chat.completion", "created": int(time.time()), "model": model,
                                  "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}]}
    if usage is not None:
        completion["usage"] = usage
    return completion
