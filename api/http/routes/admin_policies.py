"""/v1/admin/policies: data policies and what they are attached to (the `admin` permission)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from api.common.schemas import CLIENT_ERRORS, ListPage
from api.http.deps import PoliciesDep, require_admin, Session
from api.http.params import PathId
from api.identity.schemas import Created
from api.policies import service
from api.policies.schemas import PolicyCreate, PolicyOut, PolicyUpdate

routes = APIRouter(prefix="/v1/admin/policies", dependencies=[Depends(require_admin)], responses=CLIENT_ERRORS,
                   tags=["admin: policies"])


@routes.post("", status_code=201)
async def create_policy(body: PolicyCreate, session: Session, book: PoliciesDep) -> Created:
    return Created(id=await service.create_policy(session, book, body))


@routes.get("")
async def list_policies(session: Session) -> ListPage[PolicyOut]:
    data = await service.list_policies(session)
    return ListPage(data=data, total=len(data))


@routes.get("/{policy}")
async def get_policy(policy: PathId, session: Session) -> PolicyOut:
    return service.policy_out(await service.get_policy(session, policy))


@routes.patch("/{policy}", status_code=204)
async def update_policy(policy: PathId, body: PolicyUpdate, session: Session, book: PoliciesDep) -> Response:
    await service.update_policy(session, book, policy, body)
    return Response(status_code=204)


@routes.delete("/{policy}", status_code=204)
async def delete_policy(policy: PathId, session: Session, book: PoliciesDep) -> Response:
    await service.delete_policy(session, book, policy)
    return Response(status_code=204)
