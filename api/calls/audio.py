"""What an audio file says of its transcript before it is transcribed: its length bounds it.

A WAV file's duration is read from its header. Other formats are not decoded: their duration
is bounded by their size at the lowest bitrate speech is stored at (6 kbit/s Opus), which can
only make the bound larger than the truth, never smaller.
"""

from __future__ import annotations

import io
import math
import re
import wave

LOWEST_BYTES_PER_SECOND = 750  # 6 kbit/s
# Fast speech is about 3.5 words a second, 4.5 tokens: reserve more than any speaker says.
TOKENS_PER_SECOND = 6
TOKENS_SLACK = 16


def duration_bound(audio: bytes) -> float:
    """The audio's duration in seconds (WAV), or the most it can be (any other format)."""
    try:
        with wave.open(io.BytesIO(audio)) as reader:
            rate = reader.getframerate()
            if rate > 0:
                return reader.getnframes() / rate
    except (wave.Error, EOFError, ValueError):
        pass
    return len(audio) / LOWEST_BYTES_PER_SECOND


def transcript_bound(audio: bytes, most: int) -> int:
    """The most tokens a transcript of `audio` can have, at most `most` (the gateway's default)."""
    return min(most, math.ceil(duration_bound(audio) * TOKENS_PER_SECOND) + TOKENS_SLACK)


_CUE_LINE = re.compile(r"^(WEBVTT.*|\d+|[\d:.,]+ --> [\d:.,]+.*)$")


def transcript_text(body: bytes, content_type: str) -> str:
    """The words of a transcript answered as text, SRT or WebVTT (cue numbers and times left out)."""
    text = body.decode("utf-8", errors="replace")
    if "srt" in content_type or "vtt" in content_type or "-->" in text:
        return "\n".join(line.strip() for line in text.splitlines() if line.strip() and not _CUE_LINE.match(line.strip()))
    return text.strip()
