"""The baseline the issue names: a minimal pass-through proxy, FastAPI + one httpx client, no features.

    UPSTREAM=http://127.0.0.1:9100 uvicorn bench.passthrough_httpx:app --port 9200
"""

import os
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI, Request, Response

UPSTREAM = os.environ.get("UPSTREAM", "http://127.0.0.1:9100")


@asynccontextmanager
async def lifespan(app: FastAPI):
    app.state.client = httpx.AsyncClient(base_url=UPSTREAM, timeout=60)
    yield
    await app.state.client.aclose()


app = FastAPI(lifespan=lifespan)


@app.post("/v1/chat/completions")
async def chat(request: Request) -> Response:
    upstream = await request.app.state.client.post("/v1/chat/completions", content=await request.body(),
                                                   headers={"content-type": "application/json"})
    return Response(upstream.content, status_code=upstream.status_code, media_type="application/json")
