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


class Scanner:
    """The rules that apply to a caller, compiled together: one RE2 set tells which of them can
    match a text at all, so a text without sensitive data (most texts) is read once, not once
    per rule; only the rules the set names then look for their spans."""

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        from api.policies.detectors import prefilter

        self.rules = rules
        self._prefilter = prefilter([rule.detector for rule in rules])

    def scan(self, text: str, findings: Findings) -> str:
        """`text` with the redacted matches replaced; raises the refusal of a blocking rule. A
        span found by an earlier rule is not looked at again by a later one."""
        # Matched as UTF-8 bytes: RE2 reads those, and a str would be converted for every rule
        # and its match offsets mapped back.
        data = text.encode()
        candidates = self._prefilter.Match(data) if self._prefilter is not None else range(len(self.rules))
        if not candidates:
            return text
        spans: list[tuple[int, int, Rule]] = []
        for index in sorted(candidates):
            rule = self.rules[index]
            for start, end in rule.detector.find(data):
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
            parts += [data[at:start], rule.detector.placeholder.encode()]
            at = end
        parts.append(data[at:])
        return b"".join(parts).decode()


def scan_body(endpoint: str, body: dict[str, Any], scanner: Scanner, findings: Findings) -> None:
    """Apply the scanner's rules to the text a body sends upstream, in place: chat messages (text
    parts of multimodal content too; Anthropic's messages arrive translated), a completion's
    prompt, embeddings input, rerank query and documents. `endpoint`: the upstream endpoint the
    body is for (`/v1/chat/completions`...)."""
    if endpoint.endswith("/v1/completions"):
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            body["prompt"] = scanner.scan(prompt, findings)
        elif isinstance(prompt, list):  # texts, or token ids (not text: nothing to read)
            body["prompt"] = [scanner.scan(item, findings) if isinstance(item, str) else item for item in prompt]
    elif endpoint.endswith("/chat/completions"):
        for message in body.get("messages") or []:
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            if isinstance(content, str):
                message["content"] = scanner.scan(content, findings)
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        part["text"] = scanner.scan(part["text"], findings)
    elif endpoint.endswith("/embeddings"):
        inputs = body.get("input")
        if isinstance(inputs, str):
            body["input"] = scanner.scan(inputs, findings)
        elif isinstance(inputs, list):
            body["input"] = [scanner.scan(item, findings) if isinstance(item, str) else item for item in inputs]
    elif endpoint.endswith("/rerank"):
        if isinstance(body.get("query"), str):
            body["query"] = scanner.scan(body["query"], findings)
        if isinstance(body.get("documents"), list):
            body["documents"] = [scanner.scan(d, findings) if isinstance(d, str) else d for d in body["documents"]]
