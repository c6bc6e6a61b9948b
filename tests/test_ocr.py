"""/v1/parse and /v1/ocr: text layers, a Mistral OCR provider, a vision chat model page by page."""

from __future__ import annotations

import base64

import pytest

from conftest import Models, Seeder, usage_rows
from pdfs import make_pdf

PAGES = ["Invoice number 42", "Total due: 100 euros", "Thank you"]


def pdf_url(content: bytes) -> str:
    return "data:application/pdf;base64," + base64.b64encode(content).decode()


async def test_parse_gives_each_pages_text_with_its_number(client, seed: Seeder) -> None:
    user = await seed.user()
    response = await client.post("/v1/parse", headers=user.headers, files={"file": ("invoice.pdf", make_pdf(PAGES))},
                                 data={"page_range": "0,2"})
    assert response.status_code == 200, response.text
    assert [(p["content"], p["metadata"]) for p in response.json()["data"]] == [
        ("Invoice number 42", {"document_name": "invoice.pdf", "page": 0}),
        ("Thank you", {"document_name": "invoice.pdf", "page": 2}),
    ]
    assert (await client.post("/v1/parse-beta", headers=user.headers, files={"file": ("i.pdf", make_pdf(PAGES))})).status_code == 200
    rows = await usage_rows(client)
    assert [r.endpoint for r in rows] == ["/v1/parse", "/v1/parse"] and all(r.user_id == user.id for r in rows)


@pytest.mark.parametrize(("page_range", "detail"), [("7", "outside"), ("2-1", "outside"), ("a-b", "Invalid page range")])
async def test_parse_refuses_bad_page_ranges(client, seed: Seeder, page_range: str, detail: str) -> None:
    user = await seed.user()
    response = await client.post("/v1/parse", headers=user.headers, files={"file": ("i.pdf", make_pdf(PAGES))},
                                 data={"page_range": page_range})
    assert response.status_code == 400 and detail in response.json()["detail"]


async def test_parse_refuses_what_is_not_a_pdf(client, seed: Seeder) -> None:
    user = await seed.user()
    not_pdf = await client.post("/v1/parse", headers=user.headers, files={"file": ("notes.txt", b"hello")})
    assert not_pdf.status_code == 415
    corrupt = await client.post("/v1/parse", headers=user.headers, files={"file": ("x.pdf", b"%PDF-1.7 garbage")})
    assert corrupt.status_code == 400 and "not a readable PDF" in corrupt.json()["detail"]


async def test_ocr_forwarded_to_a_mistral_provider(client, models: Models, upstream) -> None:
    router = await models.router("ocr", type="image-to-text", cost_prompt_tokens=1)
    await models.provider(router, upstream.base_url, model_name="fake-chat", type="mistral")
    user = await models.user_for(router)
    body = {"model": "ocr", "document": {"type": "document_url", "document_url": pdf_url(make_pdf(PAGES))}, "pages": [1]}
    response = await client.post("/v1/ocr", json=body, headers=user.headers)
    assert response.status_code == 200, response.text
    result = response.json()
    assert [(p["index"], p["markdown"]) for p in result["pages"]] == [(1, "# OCR\n\nTotal due: 100 euros")]
    assert "usage" in result and upstream.received[-1].path == "/v1/ocr"
    assert [(r.endpoint, r.status, r.user_id) for r in await usage_rows(client)] == [("/v1/ocr", 200, user.id)]


async def test_ocr_by_a_vision_chat_model_reads_each_page_as_an_image(client, models: Models, upstream) -> None:
    router = await models.router("vision", type="image-text-to-text", cost_prompt_tokens=1, cost_completion_tokens=1)
    await models.provider(router, upstream.base_url, model_name="fake-chat")
    user = await models.user_for(router)
    body = {"model": "vision", "document": {"type": "document_url", "document_url": pdf_url(make_pdf(PAGES))}}
    response = await client.post("/v1/ocr", json=body, headers=user.headers)
    assert response.status_code == 200, response.text
    pages = response.json()["pages"]
    assert [p["index"] for p in pages] == [0, 1, 2]
    assert all(p["markdown"].startswith("read image ") for p in pages) and len({p["markdown"] for p in pages}) == 3
    sent = [r.body for r in upstream.received if r.path == "/v1/chat/completions"]
    assert len(sent) == 3 and sent[0]["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    usage = response.json()["usage"]
    assert usage["completion_tokens"] == 9 and usage["cost"] > 0
    rows = await usage_rows(client)
    assert [(r.endpoint, r.completion_tokens) for r in rows] == [("/v1/ocr", 9)]  # one request, one record


async def test_parse_with_force_ocr_uses_the_configured_model(app_factory, upstream) -> None:
    client = await app_factory(rag={"ocr_model": "vision"})
    models = Models(client, Seeder(client))
    router = await models.router("vision", type="image-text-to-text")
    await models.provider(router, upstream.base_url, model_name="fake-chat")
    user = await models.user_for(router)
    response = await client.post("/v1/parse", headers=user.headers, files={"file": ("i.pdf", make_pdf(PAGES))},
                                 data={"page_range": "1-2", "force_ocr": "true"})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert [p["metadata"]["page"] for p in data] == [1, 2] and all(p["content"].startswith("read image") for p in data)
    assert response.json()["usage"]["completion_tokens"] == 6


async def test_ocr_of_a_remote_url_by_a_vision_model_is_refused(client, models: Models, upstream) -> None:
    router = await models.router("vision", type="image-text-to-text")
    await models.provider(router, upstream.base_url, model_name="fake-chat")
    user = await models.user_for(router)
    body = {"model": "vision", "document": {"type": "document_url", "document_url": "http://169.254.169.254/latest"}}
    response = await client.post("/v1/ocr", json=body, headers=user.headers)
    assert response.status_code == 400 and "data: URL" in response.json()["detail"]
    assert [r.status for r in await usage_rows(client)] == [400]
