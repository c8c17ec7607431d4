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


def shared_file(*parts: str) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data {p} is absent (it lives beside the project in ../shared/data)")
    return p
