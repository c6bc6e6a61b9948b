"""Files to text, text to chunks. PDF pages keep their number in each chunk's metadata."""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from enum import StrEnum
from html.parser import HTMLParser
from pathlib import PurePath
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from api.errors import InvalidRequestError, UnsupportedMediaTypeError

# pypdf and langchain's splitters are imported where they are used: a process that reads no
# document (documents off, no /v1/parse call yet) does not hold their tens of megabytes.
if TYPE_CHECKING:
    from langchain_text_splitters import RecursiveCharacterTextSplitter
    from pypdf import PdfReader

logging.getLogger("pypdf").setLevel(logging.ERROR)  # its warnings name nothing a user can act on

KINDS = {".pdf": "pdf", ".md": "markdown", ".markdown": "markdown", ".txt": "text", ".text": "text",
         ".html": "html", ".htm": "html", ".json": "json"}
MEDIA_TYPES = {"application/pdf": "pdf", "text/markdown": "markdown", "text/x-markdown": "markdown", "text/plain": "text",
               "text/html": "html", "application/json": "json"}
MAX_PAGES = 5000


class Language(StrEnum):
    """The splitter presets of LangChain (`langchain_text_splitters.Language`), declared here so
    that the form field naming them does not import LangChain."""

    CPP = "cpp"
    GO = "go"
    JAVA = "java"
    KOTLIN = "kotlin"
    JS = "js"
    TS = "ts"
    PHP = "php"
    PROTO = "proto"
    PYTHON = "python"
    R = "r"
    RST = "rst"
    RUBY = "ruby"
    RUST = "rust"
    SCALA = "scala"
    SWIFT = "swift"
    MARKDOWN = "markdown"
    LATEX = "latex"
    HTML = "html"
    SOL = "sol"
    CSHARP = "csharp"
    COBOL = "cobol"
    C = "c"
    LUA = "lua"
    PERL = "perl"
    HASKELL = "haskell"
    ELIXIR = "elixir"
    POWERSHELL = "powershell"
    VISUALBASIC6 = "visualbasic6"


@dataclass(frozen=True)
class Page:
    text: str
    number: int | None  # 1-based, PDFs only


@dataclass(frozen=True)
class SplitOptions:
    chunk_size: int = 2048
    chunk_min_size: int = 0
    chunk_overlap: int = 0
    separators: tuple[str, ...] = ()
    is_separator_regex: bool = False
    preset_separators: str = "markdown"
    disable_chunking: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "separators": list(self.separators)}


def kind_of(filename: str, content_type: str | None) -> str:
    """The file's kind from its extension, else its declared media type."""
    kind = KINDS.get(PurePath(filename).suffix.lower())
    if kind is None and content_type:
        kind = MEDIA_TYPES.get(content_type.split(";")[0].strip().lower())
    if kind is None:
        raise UnsupportedMediaTypeError(
            f"Unsupported file type '{PurePath(filename).suffix or content_type}': send PDF, Markdown, text, HTML or JSON"
        )
    return kind


def _text(content: bytes) -> str:
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidRequestError("The file is not UTF-8 text") from exc
    if "\x00" in text:
        raise InvalidRequestError("The file contains NUL characters: it is not text")
    return text


class _HtmlText(HTMLParser):
    SKIP = {"script", "style", "head", "noscript", "template"}
    BLOCKS = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "pre", "table"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self.SKIP:
            self._skipping += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self._skipping:
            self._skipping -= 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def pdf_reader(content: bytes) -> PdfReader:
    """Open a PDF, or refuse it clearly (corrupt, encrypted, too many pages)."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(content), strict=False)
        if reader.is_encrypted:
            raise InvalidRequestError("The PDF is encrypted")
        pages = len(reader.pages)
    except InvalidRequestError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
        raise InvalidRequestError("The file is not a readable PDF") from exc
    if pages == 0:
        raise InvalidRequestError("The PDF has no pages")
    if pages > MAX_PAGES:
        raise InvalidRequestError(f"The PDF has {pages} pages; at most {MAX_PAGES} are accepted")
    return reader


def check(content: bytes, kind: str) -> int | None:
    """Refuse at upload what ingestion could not read; the page count of a PDF."""
    if not content:
        raise InvalidRequestError("The file is empty")
    if kind == "pdf":
        return len(pdf_reader(content).pages)
    text = _text(content)
    if kind == "json":
        try:
            json.loads(text)
        except ValueError as exc:
            raise InvalidRequestError("The file is not valid JSON") from exc
    if not text.strip():
        raise InvalidRequestError("The file has no text")
    return None


def pdf_page_texts(content: bytes) -> list[str]:
    from pypdf.errors import PyPdfError

    reader = pdf_reader(content)
    texts = []
    for page in reader.pages:
        try:
            texts.append(page.extract_text() or "")
        except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError):
            texts.append("")  # one unreadable page does not lose the others
    return texts


def pages_of(content: bytes, kind: str) -> list[Page]:
    if kind == "pdf":
        return [Page(text, number) for number, text in enumerate(pdf_page_texts(content), start=1)]
    text = _text(content)
    if kind == "html":
        parser = _HtmlText()
        parser.feed(text)
        parser.close()
        text = "".join(parser.parts)
    elif kind == "json":
        text = json.dumps(json.loads(text), ensure_ascii=False, indent=2)
    return [Page(text, None)]


def _splitter(options: SplitOptions, max_tokens: int | None) -> RecursiveCharacterTextSplitter:
    from langchain_text_splitters import Language as Preset
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    size = max(1, options.chunk_size)
    overlap = min(options.chunk_overlap, size - 1) if size > 1 else 0
    length = len if max_tokens is None else _length_within(size, max_tokens)
    if options.separators:
        return RecursiveCharacterTextSplitter(
            separators=list(options.separators), is_separator_regex=options.is_separator_regex,
            chunk_size=size, chunk_overlap=overlap, length_function=length,
        )
    return RecursiveCharacterTextSplitter.from_language(
        Preset(options.preset_separators), chunk_size=size, chunk_overlap=overlap, length_function=length
    )


def _length_within(chunk_size: int, max_tokens: int) -> Callable[[str], int]:
    """A length in which `chunk_size` means both bounds at once: a piece fits when it has at
    most `chunk_size` characters and at most `max_tokens` tokens (the embedding model's)."""
    from api.calls.tokens import count_text

    def length(text: str) -> int:
        return max(len(text), -(-count_text(text) * chunk_size // max_tokens))

    return length


def split(pages: list[Page], options: SplitOptions, max_tokens: int | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Chunks of text with their metadata (the page number for PDFs). A piece shorter than
    `chunk_min_size` joins the chunk before it on the same page rather than being lost, unless
    the two together would pass `max_tokens`, the most the embedding model reads: a chunk is
    never longer than that, whatever `chunk_size` says, and nothing is cut off."""
    from api.calls.tokens import count_text

    splitter = None if options.disable_chunking else _splitter(options, max_tokens)
    chunks: list[tuple[str, dict[str, Any]]] = []
    for page in pages:
        pieces = [page.text] if splitter is None else splitter.split_text(page.text)
        metadata = {} if page.number is None else {"page": page.number}
        page_chunks: list[str] = []
        for piece in (p.strip() for p in pieces):
            if not piece:
                continue
            joined = f"{page_chunks[-1]}\n{piece}" if page_chunks else piece
            if page_chunks and len(piece) < options.chunk_min_size and (max_tokens is None or count_text(joined) <= max_tokens):
                page_chunks[-1] = joined
            else:
                page_chunks.append(piece)
        if splitter is None and max_tokens is not None:
            for piece in page_chunks:
                if (tokens := count_text(piece)) > max_tokens:
                    where = f"Page {page.number}" if page.number is not None else "The document"
                    raise InvalidRequestError(
                        f"{where} is about {tokens} tokens long, more than the embedding model reads whole ({max_tokens}): "
                        "upload it again with chunking on"
                    )
        chunks.extend((text, dict(metadata)) for text in page_chunks)
    return chunks
