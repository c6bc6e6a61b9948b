"""/v1/admin/policies: create, read, change and delete data policies."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.common.db import commit_or_conflict
from api.common.schemas import to_unix
from api.db.tables import Policy
from api.errors import NotFoundError
from api.policies.book import PolicyBook, compile_rules
from api.policies.schemas import PolicyCreate, PolicyOut, PolicyUpdate, RuleIn


def policy_out(policy: Policy) -> PolicyOut:
    return PolicyOut(
        id=policy.id, name=policy.name, rules=[RuleIn.model_validate(rule) for rule in policy.rules],
        organizations=policy.organization_ids, roles=policy.role_ids, keys=policy.key_ids,
        created=to_unix(policy.created), updated=to_unix(policy.updated),
    )


async def get_policy(session: AsyncSession, policy_id: int) -> Policy:
    policy = await session.get(Policy, policy_id)
    if policy is None:
        raise NotFoundError(f"Policy {policy_id} not found")
    return policy


async def list_policies(session: AsyncSession) -> list[PolicyOut]:
    return [policy_out(p) for p in (await session.execute(select(Policy).order_by(Policy.id))).scalars()]


async def create_policy(session: AsyncSession, book: PolicyBook, body: PolicyCreate) -> int:
    rules = [rule.model_dump(exclude_none=True) for rule in body.rules]
    compile_rules(body.name, rules)  # an expression RE2 cannot run is refused here (400)
    policy = Policy(name=body.name, rules=rules, organization_ids=sorted(set(body.organizations)),
                    role_ids=sorted(set(body.roles)), key_ids=sorted(set(body.keys)))
    session.add(policy)
    await commit_or_conflict(session, f"A policy named '{body.name}' already exists")
    await book.reload()  # in force in this process at once, in the others at their next refresh
    return policy.id


async def update_policy(session: AsyncSession, book: PolicyBook, policy_id: int, body: PolicyUpdate) -> None:
    policy = await get_policy(session, policy_id)
    if body.name is not None:
        policy.name = body.name
    if body.rules is not None:
        policy.rules = [rule.model_dump(exclude_none=True) for rule in body.rules]
    compile_rules(policy.name, policy.rules)
    for field, column in (("organizations", "organization_ids"), ("roles", "role_ids"), ("keys", "key_ids")):
        value = getattr(body, field)
        if value is not None:
            setattr(policy, column, sorted(set(value)))
    await commit_or_conflict(session, f"A policy named '{policy.name}' already exists")
    await book.reload()


async def delete_policy(session: AsyncSession, book: PolicyBook, policy_id: int) -> None:
    await session.delete(await get_policy(session, policy_id))
    await session.commit()
    await book.reload()
