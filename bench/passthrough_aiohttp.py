"""A minimal pass-through proxy, FastAPI + one shared aiohttp session, no features (the
reference of the limits issue).

    UPSTREAM=http://127.0.0.1:9100 uvicorn bench.passthrough_aiohttp:app --port 9300
"""

import os
from contextlib import asynccontextmanager

import aiohttp
from fastapi import FastAPI, Request, Response

UPSTREAM = os.environ.get("UPSTREAM", "http://127.0.0.1:9100")


@asynccontextmanager
async def lifespan(app: FastAPI):
    app.state.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
    yield
    await app.state.session.close()


app = FastAPI(lifespan=lifespan)


@app.post("/v1/chat/completions")
async def chat(request: Request) -> Response:
    async with request.app.state.session.post(UPSTREAM + "/v1/chat/completions", data=await request.body(),
                                              headers={"content-type": "application/json"}) as upstream:
        return Response(await upstream.read(), status_code=upstream.status, media_type="application/json")
