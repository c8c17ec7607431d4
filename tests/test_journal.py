"""The collector's journal: a front acknowledges once synced, the writer loads in bulk, a crash is replayed."""

from __future__ import annotations

import asyncio
import struct
import threading
import time

import pytest

from plait.log.journal import Journal, Loader, arrow_frame, encode, replay
from plait.log.schema import records_from_arrow, records_to_arrow
from plait.log.vault import SEALED, plain
from plait.log.store import Rejection


def _records(ws, n, prefix="m"):  # noqa: ANN001, ANN202
    return [ws.parser.parse({"type": "track", "userId": f"u{i}", "event": "Product Viewed", "messageId": f"{prefix}{i}"},
                            received_at=0, source="test") for i in range(n)]


def _segments(folder):  # noqa: ANN001, ANN202
    return sorted(p.name for p in folder.glob("*.journal"))


@pytest.mark.parametrize("arrow_min_rows", [1, 10_000])      # groups as Arrow frames, and as msgpack
def test_front_journal_acknowledges_synced_groups_and_the_loader_deletes_finished_segments(ws, tmp_path, arrow_min_rows):
    folder = tmp_path / "journal"
    recs = _records(ws, 100)
    journal = Journal(folder, "front0", segment_s=3600, arrow_min_rows=arrow_min_rows)

    async def send(lo, hi, rejections=()):  # noqa: ANN001, ANN202
        await asyncio.gather(*(journal.append(recs[i:i + 10], rejections if i == lo else [])
                               for i in range(lo, hi, 10)))

    asyncio.run(send(0, 50, [Rejection("bad", origin="test")]))
    assert journal.synced >= 1 and _segments(folder) == ["front0-000000000001.journal"]
    loader = Loader(folder, ws.log)
    assert loader.load() == 50 and ws.log.rejected_count() == 1
    assert _segments(folder) == ["front0-000000000001.journal"]     # the front still writes it
    assert loader.load() == 0                                         # read once, not twice
    journal.segment_s = 0                                             # the next group opens a new segment
    asyncio.run(send(50, 100))
    assert _segments(folder) == ["front0-000000000001.journal", "front0-000000000002.journal"]
    assert loader.load() == 50 and ws.log.count() == 100 and ws.log.rejected_count() == 1
    assert _segments(folder) == ["front0-000000000002.journal"]       # finished and loaded: gone
    journal.close()
    loader.stop()                                                     # the fronts have stopped
    assert _segments(folder) == [] and ws.log.count() == 100


def test_acknowledgements_wait_while_the_loader_is_behind(ws, tmp_path):
    folder = tmp_path / "journal"
    recs = _records(ws, 40)
    journal = Journal(folder, "front0", segment_s=0, max_segments=2)
    loader = Loader(folder, ws.log)

    async def run() -> list[int]:
        acked: list[int] = []
        for i in range(2):                                            # two segments, one group each
            await journal.append(recs[i * 10:(i + 1) * 10])
            acked.append(i)
        third = asyncio.ensure_future(journal.append(recs[20:30]))
        await asyncio.sleep(0.3)
        assert not third.done() and journal.held > 0                  # held back, not refused
        assert loader.load() == 20                                    # the writer catches up
        await asyncio.wait_for(third, 5)
        return acked

    assert asyncio.run(run()) == [0, 1]
    journal.close()
    loader.stop()
    assert ws.log.count() == 30 and _segments(folder) == []


def test_replay_takes_whole_frames_skips_a_torn_one_and_adds_nothing_twice(ws, tmp_path):
    folder = tmp_path / "journal"
    folder.mkdir()
    # Arrow frames, and a msgpack pair as rejections (and segments from before Arrow) are written.
    frames = [arrow_frame(_records(ws, 3, "a")), encode(_records(ws, 2, "b"), [Rejection("why", origin="x")])]
    torn = arrow_frame(_records(ws, 4, "c"))
    data = b"".join(struct.pack("!I", len(f)) + f for f in frames) + struct.pack("!I", len(torn)) + torn[:-5]
    (folder / "front0-000000000001.journal").write_bytes(data)
    (folder / "front1-000000000001.journal").write_bytes(struct.pack("!I", len(frames[0])) + frames[0])
    (folder / "000000000007.journal").write_bytes(b"\x00\x00\x00\x03abc")   # unreadable: a dead letter
    assert replay(folder, ws.log) == 5                             # the second front repeats the first frame
    assert ws.log.count() == 5 and ws.log.rejected_count() == 2
    assert any("unreadable journal frame" in r["reason"] for r in ws.log.rejected())
    assert _segments(folder) == []
    assert replay(folder, ws.log) == 0


def test_a_failed_sync_is_an_error_for_its_requests_and_the_next_group_starts_a_fresh_segment(ws, tmp_path, monkeypatch):
    import errno

    import plait.log.journal as journal_module

    folder = tmp_path / "journal"
    recs = _records(ws, 20)
    journal = Journal(folder, "front0", segment_s=3600)
    real = journal_module._write_sync

    def full(fd, data):  # noqa: ANN001, ANN202
        raise OSError(errno.ENOSPC, "No space left on device")

    async def run() -> None:
        await journal.append(recs[:10])                      # segment 1, synced
        monkeypatch.setattr(journal_module, "_write_sync", full)
        try:
            await journal.append(recs[10:15])
            raise AssertionError("a failed sync was acknowledged")
        except OSError as e:
            assert e.errno == errno.ENOSPC
        monkeypatch.setattr(journal_module, "_write_sync", real)
        await journal.append(recs[15:20])                    # a fresh segment: 2

    asyncio.run(run())
    journal.close()
    assert _segments(folder) == ["front0-000000000001.journal", "front0-000000000002.journal"]
    loader = Loader(folder, ws.log)
    loader.stop()
    assert {r["message_id"] for r in ws.log.events(limit=None).to_pylist()} == \
        {f"m{i}" for i in range(10)} | {f"m{i}" for i in range(15, 20)}   # what was refused is not there


def test_a_failed_load_keeps_the_segments_reports_it_and_is_retried(ws, tmp_path, monkeypatch):
    folder = tmp_path / "journal"
    journal = Journal(folder, "front0", segment_s=3600, arrow_min_rows=1)

    async def send() -> None:
        await journal.append(_records(ws, 10))

    asyncio.run(send())
    journal.close()
    loader = Loader(folder, ws.log, interval_s=0.05)
    real = ws.log.append_plain
    calls = []
    checked = threading.Event()

    def broken(table):  # noqa: ANN001, ANN202
        calls.append(table.num_rows)
        if len(calls) == 1:
            raise RuntimeError("disk went away")
        checked.wait(10)                     # the retry waits until the test has read /health's view
        return real(table)

    monkeypatch.setattr(ws.log, "append_plain", broken)
    loader.start()
    deadline = time.time() + 10
    while len(calls) < 2 and time.time() < deadline:
        time.sleep(0.01)
    status = loader.status()
    assert status["error"] == "RuntimeError: disk went away" and status["backlog_bytes"] > 0
    assert _segments(folder) == ["front0-000000000001.journal"] and ws.log.count() == 0
    checked.set()
    while ws.log.count() < 10 and time.time() < deadline:
        time.sleep(0.02)
    loader.stop()
    assert calls[0] == 10 and ws.log.count() == 10                    # retried, loaded once
    assert loader.status()["error"] is None and _segments(folder) == []


def test_journaled_rows_come_back_as_the_same_records_and_personal_fields_are_sealed_by_the_writer(ws, tmp_path):
    calls = [
        {"type": "identify", "userId": "u1", "messageId": "i1", "timestamp": "2025-03-01T10:00:00Z",
         "sentAt": "2025-03-01T10:00:05Z", "traits": {"email": "Ann@Example.com", "tier": "gold"},
         "context": {"library": {"name": "analytics.js"}, "traits": {"phone": "+44 20 7946 0000"}}},
        {"type": "track", "anonymousId": "c1", "event": "Order Completed", "messageId": "o1",
         "properties": {"order_id": "A1", "total": 12.5, "currency": "eur", "store_id": 7}},
        {"type": "page", "anonymousId": "c1", "name": "Home", "category": "landing"},
    ]
    recs = [ws.parser.parse(c, received_at=1_700_000_000_000_000, source="test") for c in calls]
    assert recs[0].pii                                  # the workspace treats email and phone as personal
    table = records_to_arrow(recs, [plain(r.pii) for r in recs])
    assert records_from_arrow(table) == recs            # nothing lost or changed on the way
    folder = tmp_path / "journal"

    async def send() -> None:
        await journal.append(recs)

    journal = Journal(folder, "front0", arrow_min_rows=1)
    asyncio.run(send())
    journal.close()
    seen = []
    ws.log.follow(lambda batch: seen.append((batch.values("pii"), [r.message_id for r in batch.where_event({"Order Completed"})])))
    assert replay(folder, ws.log) == 3
    assert seen == [([recs[0].pii, None, None], ["o1"])]
    row = ws.log.events(limit=None, type="identify").to_pylist()[0]
    assert row["pii"][0] == SEALED and b"Example" not in row["pii"]   # sealed under the subject's key
    revealed = ws.log.reveal(row)
    assert revealed["traits"]["email"] == "Ann@Example.com" and revealed["context"]["traits"]["phone"] == "+44 20 7946 0000"


def test_a_group_that_cannot_be_encoded_is_refused_and_the_journal_goes_on(ws, tmp_path, monkeypatch):
    import plait.log.journal as journal_module
    from plait.errors import EngineError

    folder = tmp_path / "journal"
    recs = _records(ws, 20)
    journal = Journal(folder, "front0", segment_s=3600, arrow_min_rows=1)
    real = journal_module.arrow_frame

    def broken(records):  # noqa: ANN001, ANN202
        raise ValueError("cannot lay this out")

    async def run() -> None:
        monkeypatch.setattr(journal_module, "arrow_frame", broken)
        try:
            await asyncio.wait_for(journal.append(recs[:10]), 5)
            raise AssertionError("an unwritten group was acknowledged")
        except EngineError as e:
            assert "cannot lay this out" in str(e)
        monkeypatch.setattr(journal_module, "arrow_frame", real)
        await asyncio.wait_for(journal.append(recs[10:20]), 5)     # not stuck behind the failure

    asyncio.run(run())
    journal.close()
    assert replay(folder, ws.log) == 10
    assert {r["message_id"] for r in ws.log.events(limit=None).to_pylist()} == {f"m{i}" for i in range(10, 20)}
