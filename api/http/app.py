"""The application factory: `create_app(settings)` builds a fresh, self-contained app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import FastAPI

from api.http.model_lane import TollgateAPI
from api.calls.pipeline import Step
from api.http.api_reference import add_api_reference
from api.http.console import add_console
from api.http.context import build_context
from api.http.json_model_routes import add_json_model_routes
from api.http import anthropic_messages, messages_route
from api.http.messages_route import add_messages_route
from api.http.error_handlers import install_error_handlers
from api.http.routes import admin_identity
from api.http.routes import admin_tokens
from api.http.routes import admin_policies
from api.http.routes import conversations
from api.http.routes import auth
from api.http.routes import me
from api.http.routes import monitoring
from api.http.routes import models
from api.calls.tokens import load_encoding
from api.http.routes import admin_models
from api.http.routes import provider_health
from api.http.routes import usage
from api.http.middleware.body_size import BodySizeLimit
from api.http.middleware.request_id import RequestIdMiddleware
from api.http.routes import rag
from api.settings import Settings, load_settings

logger = logging.getLogger("tollgate")

MASTER_KEY_WARNING = (
    "\n" + "!" * 78 + "\n"
    "!! settings.auth_master_key is the shipped default 'changeme'. Anyone who knows it\n"
    "!! is an administrator. Set TOLLGATE_MASTER_KEY (or the config) before exposing Tollgate.\n"
    + "!" * 78
)


def create_app(settings: Settings, extra_call_steps: Sequence[Step] = ()) -> FastAPI:
    """`extra_call_steps` join every model call's pipeline (`api.calls.steps.build_steps`)."""
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.uses_default_master_key:
            logger.warning(MASTER_KEY_WARNING)
        async with AsyncExitStack() as stack:
            app.state.context = await build_context(settings, stack, extra_call_steps)
            # On the event loop's own thread, not a worker thread: nothing is served before
            # start-up completes anyway, and a thread would give the tokenizer's tables a malloc
            # arena of their own, ~3 MB more per worker for as long as it runs.
            load_encoding()
            # The collector is tuned by `tollgate serve` (api/http/serving.py), not here: it is
            # the whole process's.
            yield

    app = TollgateAPI(
        title="Tollgate",
        summary="One OpenAI-compatible API in front of many model providers, with organisations, "
        "roles, users, keys, budgets, limits and accounting.",
        version="0.1.0",
        lifespan=lifespan,
        # FastAPI's reference pages load their assets from CDNs: ours (api_reference.py) do not.
        docs_url=None,
        redoc_url=None,
        # Even with no provider configured, native telemetry looks the global providers up on
        # every request; switched off, FastAPI skips that work entirely.
        telemetry=None if settings.settings.opentelemetry else {"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(app)
    app.add_middleware(
        BodySizeLimit, max_bytes=settings.settings.max_request_body_bytes,
        upload_paths=rag.UPLOAD_PATHS, max_upload_bytes=settings.settings.rag.max_upload_bytes,
        error_shapes={messages_route.PATH: anthropic_messages.error_body},
    )
    # Added last, so it runs first: a 413 carries the request id too.
    app.add_middleware(RequestIdMiddleware)

    # The model endpoints first: routes are matched in order, and these carry the traffic.
    # (Only FastAPI's own route for /openapi.json comes before them.)
    add_json_model_routes(app, lane=not settings.settings.opentelemetry)
    add_messages_route(app)
    app.include_router(models.routes)

    app.include_router(monitoring.routes)
    app.include_router(auth.routes)
    app.include_router(me.routes)
    app.include_router(usage.routes)
    app.include_router(admin_identity.routes)
    app.include_router(admin_tokens.routes)
    app.include_router(admin_policies.routes)
    app.include_router(conversations.routes)
    app.include_router(admin_models.routes)
    app.include_router(provider_health.routes)
    app.include_router(rag.routes)
    add_api_reference(app)
    add_console(app)
    return app


def create_app_from_env() -> FastAPI:
    """The app of the config named by TOLLGATE_CONFIG (as `tollgate serve` passes it on)."""
    return create_app(load_settings())
