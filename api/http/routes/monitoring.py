"""/health (no authentication) and /metrics (Prometheus, `read_metric` permission)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from api.common.schemas import error_responses
from api.http.deps import Caller, Context
from api.identity.schemas import Permission
from api.observability.components import Components
from api.observability.components import refresh as refresh_component_gauges

routes = APIRouter(tags=["monitoring"])


@routes.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@routes.get("/metrics", response_class=PlainTextResponse, responses=error_responses(401, 403))
async def metrics(caller: Caller, context: Context) -> PlainTextResponse:
    """Prometheus metrics; needs the `read_metric` permission."""
    caller.require(Permission.read_metric)
    components = Components(context.engine, context.session_factory, context.redis, context.usage_writer)
    await refresh_component_gauges(context.metrics.components, components)
    return PlainTextResponse(context.metrics.render(), media_type=CONTENT_TYPE_LATEST)
