"""A fake AWS Bedrock runtime: Converse (`POST /model/{id}/converse`) and ConverseStream
(`…/converse-stream`, AWS's binary event-stream frames), over real HTTP. Every request's SigV4
signature is verified with botocore against the fake's credentials (403 as AWS answers when it
is wrong); errors come in Bedrock's shape (`x-amzn-ErrorType`, `{"message": …}`)."""

from __future__ import annotations

import asyncio
import binascii
import hashlib
import json
import re
import struct
from typing import Any

from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from fakes.upstream import Behaviour, FakeUpstream, Received, count_tokens

BEDROCK_MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
ACCESS_KEY, SECRET_KEY = "AKIAFAKEFAKEFAKE0000", "fake/secret+key/0123456789abcdefghijklmn"
REGION = "eu-west-3"
_AUTHORIZATION = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request, "
                            r"SignedHeaders=([^,]+), Signature=([0-9a-f]{64})")


def _header(name: str, value: str) -> bytes:
    encoded = value.encode()
    return bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(encoded)) + encoded


def event_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One message of AWS's event-stream encoding: prelude (lengths and their CRC), headers,
    payload, message CRC."""
    raw_headers = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(raw_headers) + len(payload) + 4
    prelude = struct.pack(">II", total, len(raw_headers))
    prelude += struct.pack(">I", binascii.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + raw_headers + payload
    return message + struct.pack(">I", binascii.crc32(message) & 0xFFFFFFFF)


def event(kind: str, payload: dict[str, Any]) -> bytes:
    return event_frame({":event-type": kind, ":content-type": "application/json", ":message-type": "event"},
                       json.dumps(payload).encode())


def bedrock_error(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status, headers={"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/"})


class FakeBedrock(FakeUpstream):
    def __init__(self, behaviour: Behaviour | None = None, region: str = REGION) -> None:
        super().__init__(models=[BEDROCK_MODEL], behaviour=behaviour or Behaviour())
        self.region = region
        self.signatures_checked = 0

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/model/{model}/converse", self._converse)
        app.router.add_post("/model/{model}/converse-stream", self._converse)
        return app

    def _signature_problem(self, request: web.Request, body: bytes) -> str | None:
        match = _AUTHORIZATION.fullmatch(request.headers.get("Authorization", ""))
        if match is None:
            return "Missing Authentication Token"
        key_id, _day, region, service, signed_headers, signature = match.groups()
        if key_id != ACCESS_KEY or region != self.region or service != "bedrock":
            return f"The security token included in the request is invalid ({key_id}, {region}, {service})"
        names = signed_headers.split(";")
        headers = {name: request.headers[name] for name in names if name != "host" and name in request.headers}
        signed = AWSRequest(method=request.method, url=f"http://{request.host}{request.raw_path}", data=body, headers=headers)
        signed.context["timestamp"] = request.headers.get("X-Amz-Date", "")
        auth = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY, request.headers.get("X-Amz-Security-Token")), "bedrock", region)
        expected = auth.signature(auth.string_to_sign(signed, auth.canonical_request(signed)), signed)
        self.signatures_checked += 1
        if expected != signature:
            return "The request signature we calculated does not match the signature you provided."
        return None

    def _reply(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        messages = body.get("messages") or []
        last = messages[-1]["content"] if messages else []
        results = [b["toolResult"] for b in last if "toolResult" in b]
        if results:
            return [{"text": f"the tool said {results[0]['content'][0]['text']}"}], "end_turn"
        tools = (body.get("toolConfig") or {}).get("tools")
        if tools:
            return [{"toolUse": {"toolUseId": "tooluse_01", "name": tools[0]["toolSpec"]["name"], "input": {"city": "Paris"}}}], "tool_use"
        blocks = [b for m in messages for b in m["content"]]
        for block in blocks:
            if "image" in block:
                data = block["image"]["source"]["bytes"]
                return [{"text": f"read image {block['image']['format']} {hashlib.sha256(data.encode()).hexdigest()[:12]}"}], "end_turn"
            if "document" in block:
                document = block["document"]
                return [{"text": f"read document {document['name']} {document['format']} {len(document['source']['bytes'])}"}], "end_turn"
        words = [f"word{i}" for i in range(self.behaviour.reply_words)]
        config = body.get("inferenceConfig") or {}
        stop = "end_turn"
        if isinstance(config.get("maxTokens"), int) and len(words) > config["maxTokens"]:
            words, stop = words[: config["maxTokens"]], "max_tokens"
        for sequence in config.get("stopSequences") or []:
            if sequence in words:
                words, stop = words[: words.index(sequence)], "stop_sequence"
        return [{"text": " ".join(words)}], stop

    async def _converse(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw)
        self.received.append(Received(request.path, body, dict(request.headers)))
        problem = self._signature_problem(request, raw)
        if problem is not None:
            return bedrock_error(403, "UnrecognizedClientException", problem)
        if self.behaviour.delay_seconds:
            await asyncio.sleep(self.behaviour.delay_seconds)
        status = self._consume_failure()
        if status is not None:
            kind = {429: "ThrottlingException", 503: "ServiceUnavailableException"}.get(
                status, "InternalServerException" if status >= 500 else "ValidationException")
            return bedrock_error(status, kind, f"injected failure {status}")
        if request.match_info["model"] not in self.models:
            return bedrock_error(404, "ResourceNotFoundException", "Could not resolve the foundation model")
        if any(m.get("role") not in ("user", "assistant") for m in body.get("messages") or []):
            return bedrock_error(400, "ValidationException", "roles must be user or assistant")
        blocks, stop = self._reply(body)
        system = " ".join(s.get("text", "") for s in body.get("system") or [])
        prompt = sum(count_tokens(b.get("text", "")) for m in body.get("messages") or [] for b in m["content"])
        output = sum(count_tokens(b.get("text", "")) for b in blocks) + sum(3 for b in blocks if "toolUse" in b)
        usage = {"inputTokens": prompt, "outputTokens": output, "totalTokens": prompt + output + count_tokens(system),
                 "cacheReadInputTokens": count_tokens(system), "cacheWriteInputTokens": 0}
        if request.path.endswith("/converse-stream"):
            return await self._stream(request, blocks, stop, usage)
        return web.json_response({"output": {"message": {"role": "assistant", "content": blocks}}, "stopReason": stop,
                                  "usage": usage, "metrics": {"latencyMs": 12}})

    async def _stream(self, request: web.Request, blocks: list[dict[str, Any]], stop: str, usage: dict[str, int]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/vnd.amazon.eventstream"})
        await response.prepare(request)
        frames = [event("messageStart", {"role": "assistant"})]
        for index, block in enumerate(blocks):
            if "toolUse" in block:
                use = block["toolUse"]
                frames.append(event("contentBlockStart", {"contentBlockIndex": index,
                                                          "start": {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}}))
                raw = json.dumps(use["input"])
                for part in (raw[: len(raw) // 2], raw[len(raw) // 2:]):
                    frames.append(event("contentBlockDelta", {"contentBlockIndex": index, "delta": {"toolUse": {"input": part}}}))
            else:
                for position, word in enumerate(block["text"].split(" ")):
                    text = word if position == 0 else " " + word
                    frames.append(event("contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": text}}))
            frames.append(event("contentBlockStop", {"contentBlockIndex": index}))
        frames.append(event("messageStop", {"stopReason": stop}))
        frames.append(event("metadata", {"usage": usage, "metrics": {"latencyMs": 12}}))
        if self.behaviour.bad_event_after_chunks is not None:  # a frame whose checksum is wrong
            frame = bytearray(frames[self.behaviour.bad_event_after_chunks])
            frame[-1] ^= 0xFF
            frames = frames[: self.behaviour.bad_event_after_chunks] + [bytes(frame)]
        for frame in frames:
            # Frames split across writes, as TCP may deliver them: the parser must reassemble them.
            middle = len(frame) // 2
            await response.write(frame[:middle])
            await response.write(frame[middle:])
            if self.behaviour.chunk_delay_seconds:
                await asyncio.sleep(self.behaviour.chunk_delay_seconds)
        await response.write_eof()
        return response
