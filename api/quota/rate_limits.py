"""Role limits on a router, per user: rpm, rpd, tpm, tpd; and a key's own limits, on every
router together: rpm, rph, rpd, tpm, tph, tpd. A call counts in all that apply.

Requests are counted when admitted. Tokens are admitted on the most the call can use: the
prompt's estimate plus its completion bound (`max_tokens` × `n`, as OpenAI's own limiter
counts), so calls admitted together cannot overshoot the window by their completions; the
window is settled to the real total (prompt + completion) once the call ends, whatever its
outcome. A call that could never fit a token limit is refused at once (429). A limit of 0
forbids the router (403); null is unlimited.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple, NoReturn

from api.errors import TooManyRequestsError
from api.identity.principal import Principal
from api.observability.metrics import GatewayMetrics
from api.catalog.catalog import RouterEntry
from api.quota.windows import Admission, LimitStore, WindowCheck, WindowState, check_from_fields

WINDOWS = {"rpm": 60, "rph": 3_600, "rpd": 86_400, "tpm": 60, "tph": 3_600, "tpd": 86_400}
TOKEN_LIMITS = ("tpm", "tph", "tpd")
KEY_WINDOW = "key-"  # a key's windows are named after it, a user's role windows after the user


class LimitPlan(NamedTuple):
    layout: _Windows
    checks: list[WindowCheck]  # in the layout's order
    reserved_tokens: int

    def ticket(self, admission: Admission) -> Ticket:
        return Ticket(admission.windows, self.layout, self.reserved_tokens)


class Ticket(NamedTuple):
    """What one request was admitted with, to settle when it ends."""

    windows: tuple[WindowState, ...]  # as counted at admission, in the layout's order
    layout: _Windows
    reserved_tokens: int  # counted in the token windows at admission: prompt estimate + completion bound

    @property
    def token_windows(self) -> list[WindowState]:
        return [self.windows[index] for index, _ in self.layout.token_windows]

    def headers(self) -> dict[str, str]:
        """OpenAI-style x-ratelimit-* headers, from the per-minute windows (else per-day)."""
        headers: dict[str, str] = {}
        for kind, index in self.layout.header_windows:
            state = self.windows[index]
            headers[f"x-ratelimit-limit-{kind}"] = str(state.limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, state.limit - state.used))
            headers[f"x-ratelimit-reset-{kind}"] = f"{math.ceil(state.reset_in)}s"
        return headers


@dataclass(frozen=True)
class LimitCounter:
    router: int
    type: str
    limit: int
    used: int
    reset_in: int


class _Window(NamedTuple):
    label: str  # how a refusal names it: "tpm", or "key tpm" for the key's own
    kind: str
    key: str  # the counter, without its window index
    limit: int
    seconds: int
    counts_tokens: bool


class _Windows(NamedTuple):
    """A caller's windows on a router, worked out once (`Limiter._windows`): the role's, then
    the key's, each by kind (the first full one refuses a call). A call's checks are the
    request windows' own, the same call after call, with its token windows' put in their place."""

    windows: list[_Window]
    request_checks: list[WindowCheck | None]  # each counts 1; None in a token window's place
    token_windows: list[tuple[int, tuple[str, int, int]]]  # place; key, limit, length: each counts the call's tokens
    header_windows: tuple[tuple[str, int], ...]  # ("requests" or "tokens", the window's index): the headers' windows
    smallest_token_limit: int  # a call reserving more than this is refused before it is counted
    counts_tokens: bool  # a token limit above 0 applies (one of 0 refuses every call anyway)


def _windows_of(windows: list[_Window]) -> _Windows:
    token_limits = [window.limit for window in windows if window.counts_tokens]
    labels = [window.label for window in windows]
    header_windows = []
    for kind, minute, day in (("requests", "rpm", "rpd"), ("tokens", "tpm", "tpd")):
        shown = next((label for label in (minute, day, f"key {minute}", f"key {day}") if label in labels), None)
        if shown is not None:
            header_windows.append((kind, labels.index(shown)))
    return _Windows(
        windows, [None if window.counts_tokens else WindowCheck(window.key, window.limit, window.seconds, 1) for window in windows],
        [(index, (window.key, window.limit, window.seconds)) for index, window in enumerate(windows) if window.counts_tokens],
        tuple(header_windows), min(token_limits, default=0), any(token_limits),
    )


# Callers × routers whose windows are kept worked out; past it the cache starts again.
MAX_CACHED_WINDOWS = 50_000


class Limiter:
    def __init__(self, store: LimitStore, metrics: GatewayMetrics) -> None:
        self._store = store
        self._metrics = metrics
        self._windows_cache: dict[tuple[int | None, int | None, int], tuple[Principal, RouterEntry, _Windows]] = {}

    @staticmethod
    def _limits(principal: Principal, router: RouterEntry) -> Mapping[str, int | None]:
        if principal.limits is None:  # the master key
            return {}
        return principal.limits.get(router.id, {})

    def counts_tokens(self, principal: Principal, router: RouterEntry) -> bool:
        """Whether a token limit (tpm, tph, tpd) applies to the caller on `router`."""
        return self._windows(principal, router).counts_tokens

    def plan(
        self, principal: Principal, router: RouterEntry, estimate: Callable[[], int], completion_bound: int = 0
    ) -> LimitPlan | None:
        """The windows to count the request in on `router`, or None when no limit applies.
        The token windows count the prompt's `estimate` (only computed when a token limit
        applies) plus `completion_bound`, the most tokens the answer may have."""
        windows = self._windows(principal, router)
        if not windows.windows:
            return None
        reserved = 0
        if windows.token_windows:
            prompt = estimate()
            reserved = prompt + completion_bound
            if reserved > windows.smallest_token_limit:
                # The shortest window first: the refusal names the limit a client most likely set.
                for token_kind in TOKEN_LIMITS:
                    for window in windows.windows:
                        if window.kind == token_kind and reserved > window.limit:
                            self._too_large(router, window.label, window.limit, prompt, completion_bound)
        checks = windows.request_checks.copy()
        amount = (reserved,)
        for index, fields in windows.token_windows:
            checks[index] = check_from_fields(fields + amount)
        return LimitPlan(windows, checks, reserved)  # type: ignore[arg-type]  # every place filled

    def _windows(self, principal: Principal, router: RouterEntry) -> _Windows:
        """The windows a caller counts in on a router: the role's on this router, then the
        key's own on every router. Worked out once per caller and router as read (the
        principal and the router are replaced when they change), not on every call."""
        cache_key = (principal.user_id, principal.key_id, router.id)
        cached = self._windows_cache.get(cache_key)
        if cached is not None and cached[0] is principal and cached[1] is router:
            return cached[2]
        limits = self._limits(principal, router)  # a limit of 0 was refused before (api.calls.steps.Authorise)
        windows = [_Window(kind, kind, f"{principal.user_id}:{router.id}:{kind}", limits[kind] or 0, WINDOWS[kind],
                           kind in TOKEN_LIMITS)
                   for kind, value in sorted(limits.items()) if value is not None and kind in WINDOWS]
        if principal.key_limits:
            windows += [_Window(f"key {kind}", kind, f"{KEY_WINDOW}{principal.key_id}:{kind}", value, WINDOWS[kind],
                                kind in TOKEN_LIMITS)
                        for kind, value in sorted(principal.key_limits.items()) if kind in WINDOWS]
        if len(self._windows_cache) >= MAX_CACHED_WINDOWS:
            self._windows_cache.clear()
        worked_out = self._windows_cache[cache_key] = (principal, router, _windows_of(windows))
        return worked_out[2]

    def _too_large(self, router: RouterEntry, kind: str, limit: int, prompt: int, completion_bound: int) -> NoReturn:
        # Even an empty window could not take this call: waiting for one would not help.
        self._metrics.rejections.labels(kind).inc()
        raise TooManyRequestsError(
            f"Request too large for model '{router.name}': it may use up to {prompt + completion_bound} tokens "
            f"({prompt} in the prompt, {completion_bound} of completion: max_tokens × n, or the gateway's default "
            f"when the request sets none), more than your {kind} limit of {limit} tokens. Ask for fewer tokens "
            f"(a lower max_tokens).",
            retry_after=WINDOWS[_kind(kind)],
            headers={"x-ratelimit-limit-tokens": str(limit)},
        )

    async def counters(self, principal: Principal) -> list[LimitCounter]:
        """Where the caller stands on each of its limits now (for /v1/me/info)."""
        if principal.limits is None or principal.user_id is None:
            return []
        checks, labels = [], []
        for router_id, limits in sorted(principal.limits.items()):
            for kind, value in sorted(limits.items()):
                if value is not None and value > 0 and kind in WINDOWS:
                    checks.append(WindowCheck(f"{principal.user_id}:{router_id}:{kind}", value, WINDOWS[kind], 0))
                    labels.append((router_id, kind))
        states = await self._store.peek(checks)
        return [
            LimitCounter(router=router_id, type=kind, limit=state.limit, used=max(0, state.used), reset_in=math.ceil(state.reset_in))
            for (router_id, kind), state in zip(labels, states, strict=True)
        ]

    def refuse(self, admission: Admission) -> NoReturn:
        state = admission.windows[0]
        kind = state.key.split(":")[-2]
        # The window's key, as the store names it (Redis adds its prefix): "...key-<id>:<kind>:<index>".
        whose = "the key's" if f":{KEY_WINDOW}" in f":{state.key}" else "your role's"
        self._metrics.rejections.labels(kind).inc()
        unit = "tokens" if kind in TOKEN_LIMITS else "requests"
        raise TooManyRequestsError(
            f"Rate limit reached: {kind} {state.limit} {unit} ({whose} limit; used {state.used}); "
            f"retry in {admission.retry_after}s",
            retry_after=admission.retry_after,
            headers={
                f"x-ratelimit-limit-{unit}": str(state.limit),
                f"x-ratelimit-remaining-{unit}": str(max(0, state.limit - state.used)),
                f"x-ratelimit-reset-{unit}": f"{math.ceil(state.reset_in)}s",
            },
        )

    @staticmethod
    def adjustments(ticket: Ticket, real_tokens: int) -> list[tuple[str, int]]:
        """Replace the tokens reserved by the real total in every token window."""
        delta = real_tokens - ticket.reserved_tokens
        return [(state.key, delta) for state in ticket.token_windows] if delta else []


def _kind(label: str) -> str:
    """A window's kind from its label: "tpm", or "key tpm" for a key's own."""
    return label.rpartition(" ")[2]
