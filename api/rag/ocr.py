"""OCR (Mistral's request and response shape) and PDF parsing.

An `image-to-text` router is sent the request as it is (a Mistral OCR provider); an
`image-text-to-text` router (a vision chat model) is shown each page as an image and asked
for its Markdown. Either way the call is admitted, charged and recorded like any other.
"""

from __future__ import annotations

import asyncio
import base64
import io
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from api.calls.call import Call, Defaults
from api.calls.gateway import Gateway
from api.calls.pipeline import Pipeline
from api.errors import InvalidRequestError, UpstreamError
from api.identity.principal import Principal
from api.providers import Endpoint
from api.quota.quotas import Quotas
from api.rag import parsing
from api.rag.embedder import EMPTY_USAGE

OCR_PROMPT = "Transcribe this page to Markdown. Answer with the page's content only, nothing else."
RENDER_SCALE = 2.0  # 144 dpi: legible for OCR models, a few hundred KB per page
MAX_OCR_PAGES = 500
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+/-]+)?(;[^,]*)?;base64,(?P<data>.*)$", re.S)


def page_indices(spec: str | list[int] | None, count: int) -> list[int]:
    """0-based page indices from "0,5-10,20" (or a list), all pages when empty."""
    if spec is None or spec == "" or spec == []:
        return list(range(count))
    indices: list[int] = []
    parts = spec if isinstance(spec, list) else [p.strip() for p in spec.split(",")]
    for part in parts:
        if isinstance(part, int):
            first = last = part
        elif re.fullmatch(r"\d+", part):
            first = last = int(part)
        elif match := re.fullmatch(r"(\d+)-(\d+)", part):
            first, last = int(match[1]), int(match[2])
        else:
            raise InvalidRequestError(f"Invalid page range '{part}': use numbers and ranges like 0,5-10")
        if first > last or last >= count:
            raise InvalidRequestError(f"Page range '{part}' is outside the document's pages 0-{count - 1}")
        indices.extend(i for i in range(first, last + 1) if i not in indices)
    return indices


def _decode_data_url(url: str) -> tuple[str, bytes]:
    match = _DATA_URL.match(url)
    if match is None:
        raise InvalidRequestError("A vision OCR model needs the document as a base64 data: URL")
    try:
        return match["mime"] or "application/octet-stream", base64.b64decode(match["data"], validate=True)
    except ValueError as exc:
        raise InvalidRequestError("The data: URL is not valid base64") from exc


def render_pages(pdf: bytes, indices: list[int]) -> list[bytes]:
    """PNG images of the given pages (CPU work: run it in a thread)."""
    import pypdfium2

    document = pypdfium2.PdfDocument(pdf)
    try:
        images = []
        for index in indices:
            buffer = io.BytesIO()
            document[index].render(scale=RENDER_SCALE).to_pil().save(buffer, format="PNG")
            images.append(buffer.getvalue())
        return images
    finally:
        document.close()


def data_url(mime: str, content: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(content).decode()}"


async def _page_images(document: dict[str, Any], pages: list[int] | None) -> tuple[list[int], list[str]]:
    url = document.get("document_url") or document.get("image_url")
    if isinstance(url, dict):
        url = url.get("url")
    if not isinstance(url, str):
        raise InvalidRequestError("document needs a document_url or an image_url")
    mime, content = _decode_data_url(url)
    if mime == "application/pdf":
        reader = await asyncio.to_thread(parsing.pdf_reader, content)
        indices = page_indices(pages, len(reader.pages))
        if len(indices) > MAX_OCR_PAGES:
            raise InvalidRequestError(f"At most {MAX_OCR_PAGES} pages per OCR request")
        images = await asyncio.to_thread(render_pages, content, indices)
        return indices, [data_url("image/png", image) for image in images]
    if not mime.startswith("image/"):
        raise InvalidRequestError(f"Cannot OCR a document of type {mime}: send a PDF or an image")
    return [0], [url]


def _tokens(answer: dict[str, Any]) -> tuple[int, int]:
    usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
    prompt = usage.get("prompt_tokens") if isinstance(usage.get("prompt_tokens"), int) else 0
    completion = usage.get("completion_tokens") if isinstance(usage.get("completion_tokens"), int) else 0
    return prompt, completion


@dataclass
class DocumentOcr(Defaults):
    """Mistral's OCR request (`document`, `pages`…), sent as it is to an OCR model, or page by
    page to a vision chat model; answered in Mistral's shape."""

    request: dict[str, Any]
    max_tokens: int
    endpoint: Endpoint = Endpoint.ocr
    _indices: list[int] = field(default_factory=list)
    _images: list[str] = field(default_factory=list)

    @staticmethod
    def _vision(call: Call) -> bool:
        return call.router is not None and call.router.type == "image-text-to-text"

    def completion_bound(self, call: Call, quotas: Quotas) -> int:
        return self.max_tokens * max(1, len(self._images))

    async def prepare(self, call: Call) -> None:
        if self._vision(call):
            self._indices, self._images = await _page_images(self.request.get("document") or {}, self.request.get("pages"))

    async def forward(self, call: Call, gateway: Gateway) -> None:
        if not self._vision(call):
            reply = await gateway.call_json(call, Endpoint.ocr, {**self.request, "model": call.model}, call.priority)
            result = reply.body if isinstance(reply.body, dict) else {}
            if not isinstance(result.get("pages"), list):
                raise UpstreamError(f"Model '{call.model}' answered without pages")
            call.tokens(*_tokens(result))
            call.answer = result
            return
        result = {"id": f"ocr-{uuid.uuid4().hex}", "model": call.model, "pages": [], "document_annotation": None}
        prompt_tokens = completion_tokens = 0
        for index, image in zip(self._indices, self._images, strict=True):
            markdown, prompt, completion = await self._read_page(call, gateway, image)
            prompt_tokens += prompt
            completion_tokens += completion
            result["pages"].append({"index": index, "markdown": markdown, "images": [], "dimensions": None})
        result["usage_info"] = {"pages_processed": len(self._images), "doc_size_bytes": None}
        call.tokens(prompt_tokens, completion_tokens)
        call.answer = result

    async def _read_page(self, call: Call, gateway: Gateway, image: str) -> tuple[str, int, int]:
        body = {
            "model": call.model, "max_tokens": self.max_tokens,
            "messages": [{"role": "user", "content": [{"type": "text", "text": OCR_PROMPT},
                                                      {"type": "image_url", "image_url": {"url": image}}]}],
        }
        reply = await gateway.call_json(call, Endpoint.chat, body, call.priority)
        result = reply.body if isinstance(reply.body, dict) else {}
        try:
            markdown = result["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as exc:
            raise UpstreamError(f"Model '{call.model}' answered without a message") from exc
        return str(markdown), *_tokens(result)


class Ocr:
    def __init__(self, pipeline: Pipeline, max_tokens: int) -> None:
        self._pipeline = pipeline
        self._max_tokens = max_tokens

    async def ocr(self, caller: Principal, model: str, request: dict[str, Any], path: str = Endpoint.ocr.value) -> dict[str, Any]:
        """Mistral's OCR response for `request` (its `document`, `pages`…), with `usage`."""
        call = await self._pipeline.run(Call(caller, model, DocumentOcr(request, self._max_tokens), path))
        assert call.answer is not None
        return call.answer


async def parse_pdf(
    ocr: Ocr, caller: Principal, ocr_model: str | None, filename: str, content: bytes, page_range: str, force_ocr: bool
) -> dict[str, Any]:
    """A PDF's pages as text (its text layer) or, with `force_ocr`, as the OCR model reads them."""
    reader = await asyncio.to_thread(parsing.pdf_reader, content)
    indices = page_indices(page_range, len(reader.pages))
    if force_ocr:
        if ocr_model is None:
            raise InvalidRequestError("force_ocr needs an OCR model: set settings.rag.ocr_model")
        answer = await ocr.ocr(caller, ocr_model, {"document": {"type": "document_url", "document_url": data_url("application/pdf", content)},
                                                   "pages": indices}, path="/v1/parse")
        texts = {page["index"]: page.get("markdown") or "" for page in answer["pages"] if isinstance(page, dict)}
        usage = answer["usage"]
    else:
        all_texts = await asyncio.to_thread(parsing.pdf_page_texts, content)
        texts = {index: all_texts[index] for index in indices}
        usage = EMPTY_USAGE
    data = [
        {"object": "documentPage", "content": texts.get(index, ""), "images": {},
         "metadata": {"document_name": filename, "page": index}}
        for index in indices
    ]
    return {"object": "list", "data": data, "usage": usage}
