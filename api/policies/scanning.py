"""Applying data policies to what a call sends upstream: each rule a detector and an action.

`block` refuses the call (400, naming the detector, never the matched text), `redact` replaces
each match by its placeholder (`[EMAIL]`) before the provider sees it, `allow` only notes it.
What fired is counted per detector and action for the usage record; the text is never kept.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from api.errors import InvalidRequestError

if TYPE_CHECKING:
    from api.policies.detectors import Detector


@dataclass(frozen=True)
class Rule:
    detector: Detector
    action: str  # "block", "redact" or "allow"
    policy: str  # the policy's name, for a refusal


class Findings:
    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def summary(self) -> str | None:
        """`email:redact:2,payment_card:block:1`: what the usage record keeps."""
        if not self.counts:
            return None
        return ",".join(f"{detector}:{action}:{count}" for (detector, action), count in sorted(self.counts.items()))


def scan(text: str, rules: tuple[Rule, ...], findings: Findings) -> str:
    """`text` with the redacted matches replaced; raises the refusal of a blocking rule. A span
    found by an earlier rule is not looked at again by a later one."""
    spans: list[tuple[int, int, Rule]] = []
    for rule in rules:
        for start, end in rule.detector.find(text):
            if any(start < other_end and other_start < end for other_start, other_end, _ in spans):
                continue
            spans.append((start, end, rule))
            findings.counts[(rule.detector.name, rule.action)] += 1
    blocking = next((rule for _, _, rule in spans if rule.action == "block"), None)
    if blocking is not None:
        raise InvalidRequestError(
            f"Refused by data policy '{blocking.policy}': the request contains {blocking.detector.name.replace('_', ' ')}"
        )
    redacted = sorted((span for span in spans if span[2].action == "redact"), key=lambda span: span[0])
    if not redacted:
        return text
    parts, at = [], 0
    for start, end, rule in redacted:
        parts += [text[at:start], rule.detector.placeholder]
        at = end
    parts.append(text[at:])
    return "".join(parts)


def scan_body(path: str, body: dict[str, Any], rules: tuple[Rule, ...], findings: Findings) -> None:
    """Apply `rules` to the text a model endpoint's body sends upstream, in place: chat messages
    (text parts of multimodal content too), embeddings input, rerank query and documents."""
    if path.endswith("/chat/completions"):
        for message in body.get("messages") or []:
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            if isinstance(content, str):
                message["content"] = scan(content, rules, findings)
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        part["text"] = scan(part["text"], rules, findings)
    elif path.endswith("/embeddings"):
        inputs = body.get("input")
        if isinstance(inputs, str):
            body["input"] = scan(inputs, rules, findings)
        elif isinstance(inputs, list):
            body["input"] = [scan(item, rules, findings) if isinstance(item, str) else item for item in inputs]
    elif path.endswith("/rerank"):
        if isinstance(body.get("query"), str):
            body["query"] = scan(body["query"], rules, findings)
        if isinstance(body.get("documents"), list):
            body["documents"] = [scan(d, rules, findings) if isinstance(d, str) else d for d in body["documents"]]
