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
from collections.abc import Callable
from typing import Any

from api.errors import InvalidRequestError, UpstreamError
from api.identity.auth import Principal
from api.calls import service
from api.calls.gateway import Gateway
from api.quota.quotas import Quotas
from api.providers import Endpoint
from api.rag import parsing
from api.rag.embedder import EMPTY_USAGE
from api.usage.meter import Meter
from api.usage.records import UsageRecord
from api.usage.writer import UsageWriter

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


class Ocr:
    def __init__(
        self, gateway: Gateway, quotas: Quotas, writer: UsageWriter, observe: Callable[[UsageRecord], None], max_tokens: int
    ) -> None:
        self._gateway = gateway
        self._quotas = quotas
        self._writer = writer
        self._observe = observe
        self._max_tokens = max_tokens

    async def _page_images(self, document: dict[str, Any], pages: list[int] | None) -> tuple[list[int], list[str]]:
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

    async def ocr(self, caller: Principal, model: str, request: dict[str, Any], endpoint: str = Endpoint.ocr.value) -> dict[str, Any]:
        """Mistral's OCR response for `request` (its `document`, `pages`…), with `usage`."""
        meter = Meter(self._writer, caller, endpoint, observe=self._observe)
        meter.model = model
        prompt_tokens = completion_tokens = 0
        async with service.metered(meter):
            router = self._gateway.resolve(caller, model, Endpoint.ocr)
            vision = router.type == "image-text-to-text"
            indices, images = await self._page_images(request.get("document") or {}, request.get("pages")) if vision else ([], [])
            await service.route_and_admit(
                self._gateway, self._quotas, caller, meter, Endpoint.ocr, lambda: 0, self._max_tokens * max(1, len(images))
            )
            if not vision:
                answer = await self._gateway.call_json(meter, Endpoint.ocr, {**request, "model": model}, caller.priority)
                result = answer.body if isinstance(answer.body, dict) else {}
                if not isinstance(result.get("pages"), list):
                    raise UpstreamError(f"Model '{model}' answered without pages")
                usage = result.get("usage") if isinstance(result.get("usage"), dict) else {}
                prompt_tokens = usage.get("prompt_tokens") if isinstance(usage.get("prompt_tokens"), int) else 0
                completion_tokens = usage.get("completion_tokens") if isinstance(usage.get("completion_tokens"), int) else 0
            else:
                result = {"id": f"ocr-{uuid.uuid4().hex}", "model": model, "pages": [], "document_annotation": None}
                for index, image in zip(indices, images, strict=True):
                    markdown, prompt, completion = await self._read_page(meter, model, image, caller.priority)
                    prompt_tokens += prompt
                    completion_tokens += completion
                    result["pages"].append({"index": index, "markdown": markdown, "images": [], "dimensions": None})
                result["usage_info"] = {"pages_processed": len(images), "doc_size_bytes": None}
            usage_out, cost, carbon = meter.usage(prompt_tokens, completion_tokens)
            result["usage"] = usage_out
            await meter.record(200, prompt_tokens, completion_tokens, cost, carbon)
        return result

    async def _read_page(self, meter: Meter, model: str, image: str, priority: int) -> tuple[str, int, int]:
        body = {
            "model": model, "max_tokens": self._max_tokens,
            "messages": [{"role": "user", "content": [{"type": "text", "text": OCR_PROMPT},
                                                      {"type": "image_url", "image_url": {"url": image}}]}],
        }
        answer = await self._gateway.call_json(meter, Endpoint.chat, body, priority)
        result = answer.body if isinstance(answer.body, dict) else {}
        try:
            markdown = result["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as exc:
            raise UpstreamError(f"Model '{model}' answered without a message") from exc
        usage = result.get("usage") if isinstance(result.get("usage"), dict) else {}
        prompt = usage.get("prompt_tokens") if isinstance(usage.get("prompt_tokens"), int) else 0
        completion = usage.get("completion_tokens") if isinstance(usage.get("completion_tokens"), int) else 0
        return str(markdown), prompt, completion


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
                                                   "pages": indices}, endpoint="/v1/parse")
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
