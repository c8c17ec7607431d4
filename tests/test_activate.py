"""Delivery: a failing webhook is retried, then dead-lettered, nothing is lost across a restart;
triggers fire on collected events."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from plait.activate import Memory, Outbox, Webhook
from plait.errors import ConfigError, DeliveryError


class Receiver:
    """A real HTTP endpoint that fails the first ``fail`` requests with 500."""

    def __init__(self, fail: int = 0) -> None:
        self.fail, self.got = fail, []
        outer = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                if outer.fail > 0:
                    outer.fail -= 1
                    self.send_response(500)
                else:
                    outer.got.append(body)
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *a) -> None:  # noqa: ANN002
                pass

        self.server = HTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def wait_for(cond, timeout=10.0):  # noqa: ANN001, ANN201
    t = time.time() + timeout
    while time.time() < t:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_a_flaky_webhook_is_retried_until_it_accepts(ws):
    rx = Receiver(fail=2)
    ob = Outbox(ws, {"crm": Webhook("crm", rx.url)}, base_delay_s=0.05).start()
    try:
        ob.enqueue("crm", {"hello": 1})
        assert wait_for(lambda: rx.got == [{"hello": 1}])
        assert wait_for(lambda: ob.pending() == 0)
        row = ws.backend.rows("SELECT status, attempts FROM activation_outbox")[0]
        assert row == {"status": "sent", "attempts": 3}
    finally:
        ob.stop()
        rx.close()


def test_a_dead_webhook_dead_letters_and_can_be_retried(ws):
    flaky = Memory("crm", fail_next=10)
    ob = Outbox(ws, {"crm": flaky}, max_attempts=3, base_delay_s=0.01)
    ob.enqueue("crm", {"n": 1})
    for _ in range(20):
        ob.deliver_due(now=time.time() + 3600)
    dead = ob.dead_letters()
    assert len(dead) == 1 and dead[0]["attempts"] == 3 and "refused" in dead[0]["last_error"]
    assert json.loads(dead[0]["payload"]) == {"n": 1} and flaky.sent == []
    flaky.fail_next = 0
    assert ob.retry_dead("crm") == 1
    ob.deliver_due()
    assert flaky.sent == [{"n": 1}] and ob.dead_letters() == []
    with pytest.raises(ConfigError, match="no destination 'erp'"):
        ob.enqueue("erp", {})
    with pytest.raises(DeliveryError, match="unreachable"):
        Webhook("x", "http://127.0.0.1:9/never", timeout_s=0.5).send({})


def test_nothing_is_lost_across_a_restart(tmp_path):
    import plait

    with plait.connect(tmp_path / "ws") as ws:
        Outbox(ws, {"crm": Memory("crm")}).enqueue("crm", {"order": "ready"})     # never started: a crash
    with plait.connect(tmp_path / "ws") as ws:
        m = Memory("crm")
        ob = Outbox(ws, {"crm": m})
        assert ob.pending() == 1
        ob.deliver_due()
        assert m.sent == [{"order": "ready"}]


def test_a_trigger_fires_on_a_collected_event(order_ready):
    ws = order_ready
    from plait.decide import Decider
    from plait.decide.triggers import Triggers

    d = Decider.from_workspace(ws)
    m = Memory("app")
    ob = Outbox(ws, {"app": m}).start()
    tr = Triggers(d, ob).attach(ws.log)
    try:
        ws.log.append([ws.parser.parse({"type": "track", "event": "Order Ready", "userId": "u1",
                                        "properties": {"order_id": "o9", "store_id": "leeds"}},
                                       received_at=0, source="test")])
        ws.log.append([ws.parser.parse({"type": "track", "event": "Page Viewed", "userId": "u1"},
                                       received_at=0, source="test")])
        assert wait_for(lambda: len(m.sent) == 1)
        sent = m.sent[0]
        assert sent["trigger"] == "order-ready" and sent["event"]["properties"]["order_id"] == "o9"
        assert [a["offer_id"] for a in sent["decision"]["actions"]] == ["ready"]
        assert tr.fired == 1
    finally:
        tr.close()
        ob.stop()
        d.close()


def test_a_stream_destination_publishes_to_jetstream(ws):
    import asyncio
    import socket

    from plait.activate import Stream

    try:
        socket.create_connection(("127.0.0.1", 4222), timeout=1).close()
    except OSError:
        pytest.skip("no NATS server on 127.0.0.1:4222 (the CI machine runs one)")
    pytest.importorskip("nats", reason="pip install nats-py")
    import nats

    subject = f"plait.test.{int(time.time() * 1000)}"
    s = Stream("bus", subject, stream=f"PLAIT_TEST_{int(time.time() * 1000)}")
    ob = Outbox(ws, {"bus": s})
    ob.enqueue("bus", {"offer": "coffee"})
    ob.deliver_due()
    assert ob.pending() == 0 and not ob.dead_letters()
    s.close()

    async def read() -> dict:
        nc = await nats.connect("nats://127.0.0.1:4222")
        js = nc.jetstream()
        sub = await js.subscribe(subject)
        msg = await sub.next_msg(timeout=5)
        await msg.ack()
        await nc.close()
        return json.loads(msg.data)

    assert asyncio.run(read()) == {"offer": "coffee"}
