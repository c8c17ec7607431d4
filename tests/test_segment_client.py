"""Segment's own Python library, unchanged, pointed at a real Plait server."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import uvicorn

from plait.server import create_app

analytics = pytest.importorskip("segment.analytics", reason="segment-analytics-python is a test dependency")


@pytest.fixture
def server(ws):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(ws), host="127.0.0.1", port=port, log_level="error", lifespan="on"))
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    for _ in range(100):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    t.join(10)


@pytest.mark.parametrize("gzip", [False, True])
def test_segment_python_library_works_unchanged(ws, server, gzip):
    key = ws.keys.create("backend", source="order-service")
    errors = []
    client = analytics.Client(key, host=server, gzip=gzip, sync_mode=True, on_error=lambda e, b: errors.append(e))
    client.identify("u-42", {"email": "Jane@Example.com", "plan": "gold"})
    client.track("u-42", "Order Completed", {"order_id": "o-9", "total": 30.5, "currency": "EUR",
                                             "products": [{"product_id": "p1", "price": 30.5, "quantity": 1}]})
    client.page(anonymous_id="anon-1", name="Home", properties={"path": "/"})
    client.alias("anon-1", "u-42")
    client.group("u-42", "acme", {"industry": "retail"})
    client.screen("u-42", name="Cart")
    client.flush()
    assert errors == []
    rows = {r["type"]: r for r in ws.log.events(limit=None).to_pylist()}
    assert set(rows) == {"identify", "track", "page", "alias", "group", "screen"}
    order = rows["track"]
    assert order["source"] == "order-service" and order["amount"] == 30.5 and order["currency"] == "EUR"
    assert '"analytics-python"' in order["context"]  # context.library kept
    assert order["sent_at"] is not None
    assert ws.log.reveal(rows["identify"])["traits"]["email"] == "Jane@Example.com"


def test_segment_library_sees_bad_key_as_error(ws, server):
    from segment.analytics.request import APIError

    client = analytics.Client("wrong", host=server, sync_mode=True, max_retries=0)
    with pytest.raises(APIError) as e:
        client.track("u", "x")
    assert e.value.status == 401 and e.value.code == "unauthorized" and "write key" in e.value.message
    assert ws.log.count() == 0
