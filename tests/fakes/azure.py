"""A fake Azure OpenAI resource: OpenAI's protocol on deployment paths
(`/openai/deployments/{deployment}/…?api-version=…`) with the `api-key` header, over real HTTP.
The deployment's answers are the OpenAI-compatible fake's (its `behaviour` applies)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from fakes.upstream import Behaviour, FakeUpstream

DEPLOYMENT = "gpt-4o-house"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeAzure(FakeUpstream):
    def __init__(self, behaviour: Behaviour | None = None, azure_key: str = "azure-key-0123456789") -> None:
        super().__init__(models=[DEPLOYMENT, "ada-house"], behaviour=behaviour or Behaviour())
        self.azure_key = azure_key
        self.api_versions: list[str] = []

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        base = "/openai/deployments/{deployment}"
        app.router.add_post(base + "/chat/completions", self._deployment(self._chat))
        app.router.add_post(base + "/embeddings", self._deployment(self._embeddings))
        app.router.add_post(base + "/audio/transcriptions", self._deployment(self._transcription))
        return app

    def _deployment(self, handler: Handler) -> Handler:
        async def serve(request: web.Request) -> web.StreamResponse:
            if request.headers.get("api-key") != self.azure_key:
                return web.json_response({"error": {"code": "401", "message": "Access denied due to invalid subscription key"}},
                                         status=401)
            version = request.query.get("api-version")
            if not version:
                return web.json_response({"error": {"code": "404", "message": "Resource not found"}}, status=404)
            if request.match_info["deployment"] not in self.models:
                return web.json_response({"error": {"code": "DeploymentNotFound", "message": "The API deployment does not exist"}},
                                         status=404)
            self.api_versions.append(version)
            return await handler(request)

        return serve
