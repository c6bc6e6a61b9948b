"""Chat with search: find chunks for the last user message and put them in the prompt.

Asked for with a tool `{"type": "search", ...search arguments}` or OpenGateLLM's legacy
`search: true` with `search_args`. The search tool never reaches the provider.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from api.calls.call import Call
from api.calls.operations import Chat
from api.errors import InvalidRequestError
from api.identity.principal import Principal
from api.rag.schemas import SearchArgs, SearchResult


_FIELD = re.compile(r"\{(chunks|prompt)\}")


def search_request(body: dict[str, Any]) -> SearchArgs | None:
    """The search asked for, if any; removes its traces from `body` (sent to the provider)."""
    raw: dict[str, Any] | None = None
    legacy = body.pop("search", None)
    legacy_args = body.pop("search_args", None)
    if legacy is True:
        raw = legacy_args if isinstance(legacy_args, dict) else {}
    tools = body.get("tools")
    if isinstance(tools, list):
        kept = []
        for tool in tools:
            if isinstance(tool, dict) and tool.get("type") == "search":
                raw = {k: v for k, v in tool.items() if k != "type"}
            else:
                kept.append(tool)
        if kept:
            body["tools"] = kept
        else:
            body.pop("tools", None)
            body.pop("tool_choice", None)
    if raw is None:
        return None
    try:
        return SearchArgs.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidRequestError(f"Invalid search arguments: {where}: {first['msg']}") from exc


def last_user_text(messages: list[dict[str, Any]]) -> tuple[int, str]:
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return index, content
        if isinstance(content, list):
            return index, " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    raise InvalidRequestError("Chat with search needs a user message to search for")


def with_chunks(body: dict[str, Any], index: int, prompt: str, results: list[SearchResult], template: str) -> None:
    """Replace the user message at `index` by the template filled with the chunks."""
    fields = {"chunks": "\n\n".join(result.chunk.content for result in results), "prompt": prompt}
    # One pass, not str.format: braces in documents or prompts are text, never fields.
    content = _FIELD.sub(lambda match: fields[match.group(1)], template)
    messages = list(body["messages"])
    messages[index] = {**messages[index], "content": content}
    body["messages"] = messages


Search = Callable[[Principal, SearchArgs, str], Awaitable[list[SearchResult]]]


@dataclass(kw_only=True)
class ChatWithSearch(Chat):
    """A chat that may ask for a search: its last user message is then replaced by the chunks
    found for it (once the router is known to serve the caller, before the call is admitted:
    the prompt grows with them). The results go back with the answer, or with the stream's
    last chunk. Without a search it is a plain chat."""

    search: Search
    template: str

    async def prepare(self, call: Call) -> None:
        args = search_request(self.body)
        if args is None:
            return
        index, prompt = last_user_text(self.body["messages"])
        results = await self.search(call.principal, args, prompt)
        with_chunks(self.body, index, prompt, results, self.template)
        self.final_fields["search_results"] = [result.model_dump() for result in results]
