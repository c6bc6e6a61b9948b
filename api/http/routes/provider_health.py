"""GET /health/models: each router's providers, as the health checks last saw them."""

from __future__ import annotations

from fastapi import APIRouter

from api.common.schemas import error_responses
from api.http.deps import Caller, CatalogDep, HealthDep, LoadDep
from api.identity.schemas import Permission
from api.catalog.schemas import ModelHealth, ModelHealthList, ProviderHealth

routes = APIRouter(tags=["monitoring"], responses=error_responses(401, 403, 503))


@routes.get("/health/models")
async def models_health(caller: Caller, catalog: CatalogDep, load: LoadDep, health: HealthDep) -> ModelHealthList:
    """Every router with its providers: healthy by the last probe of this process, and cooling
    down (tried last) in the shared state. Needs the `read_metric` permission."""
    caller.require(Permission.read_metric)
    routers = catalog.routers()
    cooling = await load.cooling(p.id for r in routers for p in r.providers)
    data: list[ModelHealth] = []
    for entry in routers:
        providers = []
        for provider in entry.providers:
            outcome = health.outcome(provider.id)
            providers.append(ProviderHealth(
                id=provider.id, healthy=None if outcome is None else outcome.healthy, cooling=provider.id in cooling,
                checked_at=None if outcome is None else int(outcome.checked_at),
                latency_ms=None if outcome is None else outcome.latency_ms, error=None if outcome is None else outcome.error,
            ))
        usable = sum(1 for p in providers if p.healthy is not False and not p.cooling)
        data.append(ModelHealth(id=entry.id, name=entry.name, type=entry.type, healthy_providers=usable, providers=providers))
    return ModelHealthList(data=data, total=len(data))
