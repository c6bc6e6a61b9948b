"""Usage records on local disk from the moment they are recorded until the database has them,
so a process killed between answering and writing (SIGKILL, the OOM killer, a crash) loses
none of the calls it answered.

Each process appends to segment files of its own in one directory and holds an exclusive
`flock` on each for as long as it lives; the kernel releases those locks when the process
dies, however it dies. A segment whose records are all in the database is emptied (the one
being written) or deleted (a full one). A segment that nobody holds belongs to a process that
died: `replay_orphans` writes its records (the unique request id skips those already in) and
deletes it. `tollgate serve` replays at start and `tollgate worker` every few seconds.

A stream also has its start journaled (`open_call`, in segments of their own): a stream that
has sent its client a 200 and some chunks is owed a record even if its process dies before the
end. When the call's record is appended, its start is no longer needed (`close_call`). Replay
takes the files of one dead process together: a start without its record becomes a record of
the call as cut (status 499, the prompt as estimated, charged for it).

An append is one `write()` into the page cache, a few microseconds: no round trip on the
request path. It survives the death of the process, not of the machine (there is no fsync):
docs/deployment.md argues that trade-off.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson

from api.usage.records import UsageRecord

logger = logging.getLogger("tollgate.usage")

SUFFIX = ".usage.jsonl"
OPEN_SUFFIX = ".open.jsonl"


@dataclass
class _Segment:
    path: Path
    fd: int
    appended: int = 0
    last: int = 0  # sequence number of its last record
    unclosed: int = 0  # starts segments: the calls journaled here whose record is not yet appended


OpenedCall = _Segment  # what `close_call` needs of a journaled start: the segment it is in


class UsageJournal:
    """One process's journal. The writer takes records in the order they were appended, so
    'the first n records are done' is all the journal needs to know to drop them."""

    def __init__(self, directory: Path, records_per_segment: int = 100_000, starts_per_segment: int = 1_000) -> None:
        self.directory = directory
        self._per_segment = records_per_segment
        # Small: a starts segment goes once all its calls have their record, and what a dead
        # process leaves of calls that had theirs is read again at replay.
        self._starts_per_segment = starts_per_segment
        self._segments: deque[_Segment] = deque()
        self._name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self._opened = 0
        self._appended = 0
        self._done = 0
        self._starts: deque[_Segment] = deque()

    def append(self, record: UsageRecord) -> None:
        if not self._segments or self._segments[-1].appended >= self._per_segment:
            self._segments.append(self._open_segment())
        segment = self._segments[-1]
        os.write(segment.fd, encode(record))
        self._appended += 1
        segment.appended += 1
        segment.last = self._appended

    def done(self, count: int) -> None:
        """The next `count` records (in append order) are in the database."""
        self._done += count
        while self._segments and self._segments[0].last <= self._done:
            segment = self._segments[0]
            if len(self._segments) == 1 and segment.appended < self._per_segment:
                # The segment being written: emptied, not deleted, so the next record needs
                # no new file. O_APPEND writes go to the new end.
                os.ftruncate(segment.fd, 0)
                segment.appended = 0
                break
            self._segments.popleft()
            segment.path.unlink(missing_ok=True)
            os.close(segment.fd)

    def open_call(self, record: UsageRecord) -> OpenedCall:
        """Journal a call's start: `record` is what it would be recorded as if cut now."""
        if not self._starts or self._starts[-1].appended >= self._starts_per_segment:
            self._starts.append(self._open_segment(OPEN_SUFFIX))
        segment = self._starts[-1]
        os.write(segment.fd, encode(record))
        segment.appended += 1
        segment.unclosed += 1
        return segment

    def close_call(self, opened: OpenedCall) -> None:
        """The call's record is appended: its start is not needed any more."""
        opened.unclosed -= 1
        if opened.unclosed > 0:
            return
        if opened is self._starts[-1]:
            os.ftruncate(opened.fd, 0)  # kept for the next start, as the record segment is
            opened.appended = 0
        else:
            self._starts.remove(opened)
            opened.path.unlink(missing_ok=True)
            os.close(opened.fd)

    def close(self) -> None:
        """Release the segments; any left with records (or starts without their record) is
        replayed by the next process."""
        self.done(0)
        while self._segments:
            segment = self._segments.popleft()
            if segment.appended == 0 or segment.last <= self._done:
                segment.path.unlink(missing_ok=True)
            os.close(segment.fd)
        while self._starts:
            segment = self._starts.popleft()
            if segment.unclosed == 0:
                segment.path.unlink(missing_ok=True)
            os.close(segment.fd)

    def _open_segment(self, suffix: str = SUFFIX) -> _Segment:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._opened += 1
        path = self.directory / f"{self._name}-{self._opened}{suffix}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return _Segment(path, fd, last=self._appended)


def encode(record: UsageRecord) -> bytes:
    return orjson.dumps(vars(record)) + b"\n"


def decode(line: bytes) -> UsageRecord | None:
    """A record, or None for a line cut short by the death of its writer (that call was
    never answered: the line is written before the answer leaves)."""
    try:
        fields = orjson.loads(line)
        fields["created"] = datetime.fromisoformat(fields["created"])
        return UsageRecord(**fields)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def _process_of(path: Path) -> str:
    """The name of the process that wrote a segment: its files are replayed together."""
    return path.name.rsplit("-", 1)[0]


async def replay_orphans(directory: Path, write: Callable[[list[UsageRecord]], Awaitable[None]]) -> int:
    """Write the records of every process that died (none of its segments held by a live
    process), then delete its segments. Returns how many records were read (some may have been
    in the database already)."""
    if not directory.is_dir():
        return 0
    processes: dict[str, list[Path]] = {}
    for path in sorted([*directory.glob("*" + SUFFIX), *directory.glob("*" + OPEN_SUFFIX)]):
        processes.setdefault(_process_of(path), []).append(path)
    replayed = 0
    for name, paths in sorted(processes.items()):
        replayed += await _replay_process(name, paths, write)
    return replayed


async def _replay_process(name: str, paths: list[Path], write: Callable[[list[UsageRecord]], Awaitable[None]]) -> int:
    locked: list[tuple[Path, int]] = []
    try:
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:  # its process finished with it meanwhile
                continue
            locked.append((path, fd))
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # a live process's, or another replayer's: all of them or none
        records: list[UsageRecord] = []
        starts: list[UsageRecord] = []
        for path, fd in locked:
            if not path.exists():
                continue  # deleted between our open and our lock
            with os.fdopen(os.dup(fd), "rb") as file:
                read = [r for r in map(decode, file.read().splitlines()) if r is not None]
            (starts if path.name.endswith(OPEN_SUFFIX) else records).extend(read)
        recorded = {record.request_id for record in records}
        # The records first: a call whose record exists is never written as cut.
        cut = [start for start in starts if start.request_id not in recorded]
        if records or cut:
            logger.warning("replaying %d usage records and %d calls cut by the death of process %s",
                           len(records), len(cut), name)
            await write(records + cut)
        for path, _ in locked:
            path.unlink(missing_ok=True)
        return len(records) + len(cut)
    finally:
        for _, fd in locked:
            os.close(fd)


async def replay_round(directory: Path, write: Callable[[list[UsageRecord]], Awaitable[None]]) -> None:
    """What `tollgate worker` runs beside ingestion, every few seconds: a replica that dies is
    not always restarted on the same folder, so someone else must pick its records up."""
    try:
        await replay_orphans(directory, write)
    except OSError:
        logger.exception("replaying usage journals in %s failed; trying again at the next round", directory)
