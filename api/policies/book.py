"""The policies in force, compiled once and held in each process: read again when one changes
through this process and every `refresh_seconds` (a change through another replica)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.db.engine import database_unavailable
from api.db.tables import Policy
from api.identity.principal import Principal
from api.policies.scanning import Rule, Scanner

logger = logging.getLogger("tollgate.policies")


def compile_rules(policy_name: str, rules: list[dict[str, Any]]) -> tuple[Rule, ...]:
    """Built-in detectors first, in their own order (a secret before a phone number), then the
    policy's expressions: a span one of them found is not looked at again. (The detectors and
    their validators are loaded with the first policy: a gateway without any pays nothing.)"""
    from api.policies.detectors import BUILT_IN, Detector, custom_detector

    order = list(BUILT_IN)
    built_in = sorted((r for r in rules if r["detector"] != "regex"), key=lambda r: order.index(r["detector"]))
    compiled: list[Rule] = []
    for rule in [*built_in, *(r for r in rules if r["detector"] == "regex")]:
        detector: Detector = BUILT_IN[rule["detector"]] if rule["detector"] != "regex" else custom_detector(rule["name"], rule["pattern"])
        compiled.append(Rule(detector, rule["action"], policy_name))
    return tuple(compiled)


@dataclass(frozen=True)
class CompiledPolicy:
    id: int
    rules: tuple[Rule, ...]
    organizations: frozenset[int]
    roles: frozenset[int]
    keys: frozenset[int]

    def applies_to(self, principal: Principal) -> bool:
        return (principal.organization_id in self.organizations or principal.role_id in self.roles
                or principal.key_id in self.keys)


class PolicyBook:
    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self._session_factory = session_factory
        self._policies: tuple[CompiledPolicy, ...] = ()
        # A scanner per combination of policies that apply to some caller: few, and each is
        # compiled once (its RE2 set) rather than on every call.
        self._scanners: dict[tuple[int, ...], Scanner] = {}

    def scanner_for(self, principal: Principal) -> Scanner | None:
        """The rules in force for this caller, compiled together; None if there are none."""
        if not self._policies or principal.user_id is None:
            return None
        applying = tuple(index for index, policy in enumerate(self._policies) if policy.applies_to(principal))
        if not applying:
            return None
        scanner = self._scanners.get(applying)
        if scanner is None:
            scanner = Scanner(tuple(rule for index in applying for rule in self._policies[index].rules))
            self._scanners[applying] = scanner
        return scanner

    async def reload(self) -> None:
        async with self._session_factory() as session:
            rows = (await session.execute(select(Policy).order_by(Policy.id))).scalars().all()
        policies = tuple(
            CompiledPolicy(row.id, compile_rules(row.name, row.rules), frozenset(row.organization_ids),
                           frozenset(row.role_ids), frozenset(row.key_ids))
            for row in rows
        )
        self._policies, self._scanners = policies, {}

    async def refresh(self) -> None:
        """One round of the periodic refresh."""
        try:
            await self.reload()
        except Exception as error:  # noqa: BLE001 - the policies in hand stay in force
            if not database_unavailable(error):
                logger.exception("reading the data policies failed; the ones in hand stay in force")
