"""/health (no authentication) and /metrics (Prometheus, `read_metric` permission)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from api.common.schemas import error_responses
from api.http.deps import Caller, ComponentsDep, MetricsDep
from api.identity.schemas import Permission
from api.observability.components import refresh as refresh_component_gauges

routes = APIRouter(tags=["monitoring"])


@routes.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@routes.get("/metrics", response_class=PlainTextResponse, responses=error_responses(401, 403))
async def metrics(caller: Caller, metrics: MetricsDep, components: ComponentsDep) -> PlainTextResponse:
    """Prometheus metrics; needs the `read_metric` permission."""
    caller.require(Permission.read_metric)
    await refresh_component_gauges(metrics.components, components)
    return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE_LATEST)
