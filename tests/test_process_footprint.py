"""A process pays only for what it serves: with documents off, serving a chat call never
imports the document stack (Qdrant Edge or client, the PDF readers, the text splitters), nor what
only logins (password hashing), provider keys (encryption) and Bedrock providers (botocore) need."""

import asyncio
import json
import sys

import pytest

from api.rag.parsing import Language
from conftest import Models, Seeder

DOCUMENT_STACK = ("qdrant_client", "qdrant_edge", "numpy", "pypdf", "pypdfium2", "PIL", "langchain_text_splitters", "langchain_core", "Stemmer")
ON_DEMAND = (*DOCUMENT_STACK, "passlib", "argon2", "cryptography.fernet", "botocore")  # redis-py imports bare `cryptography`

# Builds and starts the app from the settings given as JSON, serves one chat call, and says
# which of the document stack's modules the process then holds.
SERVE_ONE_CALL = """
import asyncio, json, sys
import httpx
from api.http.app import create_app
from api.settings import Settings

async def main() -> None:
    settings = Settings.model_validate_json(sys.argv[1])
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://tollgate.test") as client:
            response = await client.post("/v1/chat/completions", headers={"Authorization": "Bearer " + sys.argv[2]},
                                         json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
    loaded = [name for name in json.loads(sys.argv[3]) if name in sys.modules]
    print(json.dumps({"status": response.status_code, "loaded": loaded}))

asyncio.run(main())
"""


@pytest.mark.parametrize("documents", [False, True], ids=["documents-off", "documents-on"])
async def test_serving_a_chat_call_loads_only_what_it_needs(
    app_factory, upstream, documents: bool
) -> None:
    client = await app_factory()
    models = Models(client, Seeder(client))
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router)
    settings = client.app.state.context.settings
    if documents:
        settings = settings.model_copy(update={"settings": settings.settings.model_copy(
            update={"rag": settings.settings.rag.model_copy(update={"vector_store_model": "embeddings", "ingestion_concurrency": 0})}
        )})
    # Only what differs from the defaults, as a config file gives it (a lexical_language set
    # there is checked against the stemmer's list, which loads the stemmer: 1 MB).
    # Not subprocess.run: the fake provider answers from this process' event loop.
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVE_ONE_CALL, settings.model_dump_json(exclude_defaults=True), user.key, json.dumps(ON_DEMAND),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, stderr.decode()[-3000:]
    served = json.loads(stdout.decode().strip().splitlines()[-1])
    assert served["status"] == 200
    if documents:
        # The embedded vector store: Qdrant Edge, not qdrant-client (with numpy, ~55 MB).
        assert "qdrant_edge" in served["loaded"] and "qdrant_client" not in served["loaded"]
    else:
        assert served["loaded"] == []


def test_the_splitter_presets_are_langchains() -> None:
    """Declared here so that the form field does not import LangChain; a preset LangChain adds
    or drops must show."""
    from langchain_text_splitters import Language as Preset

    assert {(member.name, member.value) for member in Language} == {(member.name, member.value) for member in Preset}
