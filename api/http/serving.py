"""How `tollgate serve` runs the app: the factory uvicorn calls in each worker process.

What is tuned here is process-wide (the garbage collector, the C heap), so it is done for the
served process only, never by `create_app`: a test or a program embedding the app keeps its own.
"""

from __future__ import annotations

import ctypes
import gc

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.http.app import create_app_from_env

# The collector's young generation is scanned every 700 net allocations by default. Under
# concurrent load the requests in flight keep that count climbing (a deallocation at zero is
# not counted), so it ran every eight requests, ~200 µs each: 20-30 µs of every request, and a
# full pass every few seconds (docs/performance.md, 2026-12-01, night). Requests free what
# they allocate by reference counting; what reference cycles leave waits a little longer.
GC_THRESHOLDS = (10_000, 20, 100)


def tune_collector() -> None:
    # Everything built by start-up lives as long as the app: keep it out of the collector's
    # full passes, which otherwise pause the event loop for tens of milliseconds.
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def release_free_heap() -> None:
    """Hand the heap that start-up used and freed (imports, the tokenizer's loading, the
    migrations' check) back to the system: glibc keeps freed memory for reuse otherwise, and
    every worker would hold ~2 MB it never needs again. A no-op off glibc."""
    # The process's own symbols, libc's among them: no library search (`find_library` runs
    # ldconfig) for one call.
    malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if malloc_trim is not None:
        malloc_trim(0)


class CollectorTunedOnStartup:
    """The app, with the collector tuned and the freed heap released once its lifespan startup
    has completed (the ASGI lifespan protocol's `lifespan.startup.complete`), when what start-up
    built is in place."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_tuned(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                tune_collector()
                release_free_heap()
            await send(message)

        await self.app(scope, receive, send_tuned)


def create_served_app() -> ASGIApp:
    """Entry point for uvicorn workers: the app of the config named by TOLLGATE_CONFIG."""
    return CollectorTunedOnStartup(create_app_from_env())
