"""The collector's journal: acknowledged once synced, loaded in bulk, replayed after a crash."""

from __future__ import annotations

import struct

from plait.collect.collector import GroupCommitter
from plait.log.journal import Journal, encode, replay
from plait.log.store import Rejection


def _records(ws, n, prefix="m"):  # noqa: ANN001, ANN202
    return [ws.parser.parse({"type": "track", "userId": f"u{i}", "event": "Product Viewed", "messageId": f"{prefix}{i}"},
                            received_at=0, source="test") for i in range(n)]


def test_journal_acknowledges_then_loads_and_deletes_its_segments(ws, tmp_path):
    acked = []
    loader = GroupCommitter(ws.log, linger_ms=20).start()
    journal = Journal(tmp_path / "journal", loader, lambda tokens, err: acked.extend((t, err) for t in tokens),
                      segment_s=0.05).start()
    recs = _records(ws, 100)
    for i in range(0, 100, 10):
        journal.submit(encode(recs[i:i + 10], [Rejection("bad", origin="test")] if i == 0 else []), i)
    journal.stop()
    loader.stop()
    assert sorted(t for t, _ in acked) == list(range(0, 100, 10)) and all(e is None for _, e in acked)
    assert journal.synced == 10
    assert ws.log.count() == 100 and ws.log.rejected_count() == 1
    assert not list((tmp_path / "journal").glob("*.journal"))     # all loaded: nothing left to replay


def test_replay_takes_whole_frames_skips_a_torn_one_and_adds_nothing_twice(ws, tmp_path):
    folder = tmp_path / "journal"
    folder.mkdir()
    frames = [encode(_records(ws, 3, "a")), encode(_records(ws, 2, "b"), [Rejection("why", origin="x")])]
    torn = encode(_records(ws, 4, "c"))
    data = b"".join(struct.pack("!I", len(f)) + f for f in frames) + struct.pack("!I", len(torn)) + torn[:-5]
    (folder / "000000000001.journal").write_bytes(data)
    (folder / "000000000002.journal").write_bytes(struct.pack("!I", len(frames[0])) + frames[0])
    assert replay(folder, ws.log) == 5                             # the second file repeats the first frame
    assert ws.log.count() == 5 and ws.log.rejected_count() == 1
    assert not list(folder.glob("*.journal"))
    assert replay(folder, ws.log) == 0


def test_acknowledgements_wait_while_the_loader_is_behind(ws, tmp_path):
    import threading
    import time

    acked = []
    gate = threading.Event()
    loader = GroupCommitter(ws.log).start()
    real_put = loader.put

    def slow_put(records, rejections, done):  # noqa: ANN001, ANN202
        def later():
            gate.wait(10)
            real_put(records, rejections, done)
        threading.Thread(target=later, daemon=True).start()

    loader.put = slow_put
    journal = Journal(tmp_path / "journal", loader, lambda tokens, err: acked.extend(tokens), max_pending_rows=10).start()
    recs = _records(ws, 30)
    for i in range(3):
        journal.submit(encode(recs[i * 10:(i + 1) * 10]), i)
        time.sleep(0.2)
    assert acked == [0]                      # 10 rows pending: the next groups wait for the loader
    gate.set()
    deadline = time.time() + 10
    while len(acked) < 3 and time.time() < deadline:
        time.sleep(0.02)
    journal.stop()
    loader.stop()
    assert acked == [0, 1, 2] and ws.log.count() == 30 and journal.pending_rows == 0
