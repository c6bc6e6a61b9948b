"""One model call as the pipeline carries it: what the endpoint asked for (`Operation`), and
what each step found out on the way (`Call`).

A field of `Call` is written by one step only; the comment beside it names which. Endpoints
build an operation and read the finished call; they never write to it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from api.catalog.catalog import ProviderTarget, RouterEntry
from api.identity.principal import Principal
from api.logs import usage_request_id
from api.providers import Endpoint
from api.usage.accounting import NO_CARBON, Carbon
from api.usage.journal import OpenedCall

if TYPE_CHECKING:
    from api.calls.answers import OpenStream
    from api.calls.gateway import Gateway
    from api.quota.quotas import QuotaPass, Quotas

CLIENT_CLOSED = 499  # nginx's convention for "the client closed the request"


class Operation(Protocol):
    """What an endpoint asks of a model: the kind of router it needs, how big it may be, and how
    to send it. `forward` sets the call's answer (or stream) and, once known, its tokens."""

    endpoint: Endpoint  # the kind of router that can serve it

    def prompt_estimate(self) -> int:
        """The prompt's tokens, estimated before the call (only computed if a limit or budget needs it)."""
        ...

    def completion_bound(self, call: Call, quotas: Quotas) -> int:
        """The most completion tokens the call may produce (reserved at admission); a chat call
        asks `quotas` (which may set `max_tokens` on its body)."""
        ...

    async def prepare(self, call: Call) -> None:
        """Work that needs the router and must come before admission (a search, pages rendered)."""
        ...

    async def forward(self, call: Call, gateway: Gateway) -> None:
        ...


class Defaults:
    """What most operations do: no estimate, no completion, nothing to prepare."""

    def prompt_estimate(self) -> int:
        return 0

    def completion_bound(self, call: Call, quotas: Quotas) -> int:
        return 0

    async def prepare(self, call: Call) -> None:
        pass


@dataclass
class Call:
    principal: Principal
    model: str | None  # None: a request served without a model (`LocalWork`)
    operation: Operation
    path: str  # recorded as the usage record's endpoint
    method: str = "POST"
    tag: str | None = None  # what the caller said of the call, for the reports (api.usage.tags)
    end_user: str | None = None  # the body's OpenAI `user`
    request_id: str = field(default_factory=usage_request_id)
    started: float = field(default_factory=time.perf_counter)

    router: RouterEntry | None = None  # ResolveRouter
    quota: QuotaPass | None = None  # Admit
    headers: dict[str, str] = field(default_factory=dict)  # Admit (rate-limit headers)
    # Forward (through the gateway): the provider of the last attempt, time spent waiting on it.
    provider: ProviderTarget | None = None
    upstream_seconds: float = 0.0
    first_byte_at: float | None = None
    answer: dict[str, Any] | None = None  # Forward: a complete answer, `usage` added by Price
    raw_answer: tuple[bytes, str] | None = None  # Forward: an answer that is not JSON, and its content type
    stream: OpenStream | None = None  # Forward: an open stream (relayed by the endpoint)
    # The outcome: Forward (or the stream relay) sets the tokens (Price caps the completion at the
    # bound reserved for); the pipeline the status.
    status: int | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_nanos: int = 0  # Price
    carbon: Carbon = NO_CARBON  # Price
    usage: dict[str, Any] | None = None  # Price: the `usage` object of the answer
    # Set by the pipeline when a stream is open: runs the steps' ends once the stream is over.
    finish: Callable[[], Awaitable[None]] | None = None
    journaled_start: OpenedCall | None = None  # Record, when a stream opens: see UsageWriter.started
    # AnswerFromCache: the key its answer is kept under (None: not cached), whether it was a hit.
    cache_key: str | None = None
    cached: bool = False
    # The stream relay, once a stream ended well: its answer as a JSON one (text and reasoning).
    streamed_answer: dict[str, Any] | None = None
    streamed_plain: bool = False  # ...and it was one choice of text only: the cache may replay it
    policy_findings: str | None = None  # ApplyPolicies: what the data policies found (never the text)
    kept_request: dict[str, Any] | None = None  # KeepConversations: the request to keep with its answer

    @property
    def priority(self) -> int:
        return self.principal.priority

    @property
    def answered(self) -> bool:
        return self.answer is not None or self.stream is not None or self.raw_answer is not None

    def tokens(self, prompt: int, completion: int) -> None:
        self.prompt_tokens, self.completion_tokens = prompt, completion

    def overhead_ms(self) -> float:
        """The gateway's own time so far: everything but waiting for the upstream."""
        return max(0.0, (time.perf_counter() - self.started - self.upstream_seconds) * 1000)
