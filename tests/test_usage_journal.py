"""The usage journal: what a process answered survives its death until the database has it."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from api.usage.journal import OPEN_SUFFIX, SUFFIX, UsageJournal, encode, replay_orphans
from api.usage.records import UsageRecord


def record(n: int) -> UsageRecord:
    return UsageRecord(request_id=f"req-{n}", endpoint="/v1/chat/completions", method="POST", status=200,
                       user_id=1, organization_id=None, key_id=1, key_name="k", prompt_tokens=n, cost_nanos=10 * n)


def segments(directory: Path) -> dict[str, int]:
    return {p.name: len(p.read_bytes().splitlines()) for p in directory.glob("*" + SUFFIX)}


async def collect(directory: Path) -> list[UsageRecord]:
    found: list[UsageRecord] = []

    async def write(records: list[UsageRecord]) -> None:
        found.extend(records)

    await replay_orphans(directory, write)
    return found


async def test_records_stay_on_disk_until_written_then_go(tmp_path: Path) -> None:
    journal = UsageJournal(tmp_path, records_per_segment=3)
    for n in range(7):
        journal.append(record(n))
    assert sorted(segments(tmp_path).values()) == [1, 3, 3]  # two full segments and the current one
    journal.done(4)  # the first full segment is written; the second is not yet
    assert sorted(segments(tmp_path).values()) == [1, 3]
    journal.done(3)
    assert list(segments(tmp_path).values()) == [0]  # all written: the current segment is emptied
    journal.append(record(7))
    assert list(segments(tmp_path).values()) == [1]
    # A live process's segments are its own: a replayer leaves them alone.
    assert await collect(tmp_path) == []
    journal.done(1)
    journal.close()
    assert segments(tmp_path) == {}


async def test_a_killed_process_leaves_its_records_to_be_replayed_once(tmp_path: Path) -> None:
    # A real process appends five records, tells us, and is killed before writing any.
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        from test_usage_journal import record
        from api.usage.journal import UsageJournal
        journal = UsageJournal(Path({str(tmp_path)!r}))
        for n in range(5):
            journal.append(record(n))
        journal.done(2)  # the first two reached the database
        print("ready", flush=True)
        time.sleep(60)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        assert await collect(tmp_path) == []  # alive: its lock holds
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    # The journal still holds all five (done() only empties a segment once all of it is in):
    # the two already written are skipped by the database's unique request id.
    replayed = await collect(tmp_path)
    assert [r.request_id for r in replayed] == [f"req-{n}" for n in range(5)]
    assert replayed[3].prompt_tokens == 3 and replayed[3].cost_nanos == 30 and replayed[3].created.tzinfo is not None
    assert segments(tmp_path) == {} and await collect(tmp_path) == []


async def test_a_line_cut_short_by_a_crash_is_skipped(tmp_path: Path) -> None:
    # What a process killed in the middle of its third append leaves (nobody holds the file).
    (tmp_path / f"host-1-dead-1{SUFFIX}").write_bytes(encode(record(1)) + encode(record(2)) + b'{"request_id": "req-3", "endp')
    assert [r.request_id for r in await collect(tmp_path)] == ["req-1", "req-2"]
    assert segments(tmp_path) == {}


def starts(directory: Path) -> dict[str, int]:
    return {p.name: len(p.read_bytes().splitlines()) for p in directory.glob("*" + OPEN_SUFFIX)}


async def test_a_streams_start_stays_on_disk_until_its_record_is_appended(tmp_path: Path) -> None:
    journal = UsageJournal(tmp_path, starts_per_segment=2)
    first, second, third = (journal.open_call(record(n)) for n in range(3))
    assert sorted(starts(tmp_path).values()) == [1, 2]  # a full segment and the current one
    journal.append(record(0))
    journal.close_call(first)
    assert sorted(starts(tmp_path).values()) == [1, 2]  # the second call of that segment is open
    journal.append(record(1))
    journal.close_call(second)
    assert list(starts(tmp_path).values()) == [1]  # the full segment went
    journal.append(record(2))
    journal.close_call(third)
    assert list(starts(tmp_path).values()) == [0]  # the current one is emptied
    journal.done(3)
    journal.close()
    assert starts(tmp_path) == {} and segments(tmp_path) == {}


async def test_a_killed_process_leaves_its_open_streams_to_be_recorded_as_cut(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        from test_usage_journal import record
        from api.usage.journal import UsageJournal
        journal = UsageJournal(Path({str(tmp_path)!r}))
        opened = [journal.open_call(record(n)) for n in range(3)]
        journal.append(record(0))  # the first stream ended: its real record
        journal.close_call(opened[0])
        print("ready", flush=True)
        time.sleep(60)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        assert await collect(tmp_path) == []  # alive: its locks hold
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    replayed = await collect(tmp_path)
    # The ended stream once, with its real record; the two others as their starts recorded them.
    assert [r.request_id for r in replayed] == ["req-0", "req-1", "req-2"]
    assert starts(tmp_path) == {} and segments(tmp_path) == {}
