"""The public surface is explicit: every package's ``__all__`` is sorted and importable."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = ["plait", "plait.events", "plait.engine", "plait.log", "plait.collect", "plait.identity", "plait.privacy", "plait.profiles",
            "plait.simulate", "plait.server", "plait.analytics", "plait.conditions", "plait.decide"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_exported(name):
    mod = importlib.import_module(name)
    assert list(mod.__all__) == sorted(mod.__all__)
    for symbol in mod.__all__:
        assert hasattr(mod, symbol), f"{name}.{symbol}"


def test_settings_forbid_unknown_keys():
    from pydantic import ValidationError

    from plait import Settings

    with pytest.raises(ValidationError):
        Settings(base_currencyy="EUR")
    with pytest.raises(ValidationError):
        Settings.model_validate({"collector": {"max_batch": 3}})


def test_missing_extra_names_the_pip_line():
    from plait.errors import MissingExtraError, require

    with pytest.raises(MissingExtraError) as e:
        require("surely_not_a_module_xyz", "spark")
    assert 'pip install "plait[spark]"' in str(e.value)
    assert isinstance(e.value, ImportError)


def test_log_has_no_update_path():
    """Immutability by construction: the log's API offers no way to change or delete an event."""
    from plait.log import EventLog

    assert not [n for n in dir(EventLog) if any(w in n.lower() for w in ("update", "delete", "remove", "edit"))]


def test_pyarrow_submodules_are_imported_not_reached_through_pa():
    """`pa.compute` exists only after something imports it: plait demo once failed on a fresh
    install (no pandas) because of `pa.compute.if_else`. Submodules must be imported by name."""
    import pathlib
    import re

    src = pathlib.Path(__file__).resolve().parents[1] / "src" / "plait"
    bad = [f"{p.name}:{i}" for p in src.rglob("*.py") for i, line in enumerate(p.read_text().splitlines(), 1)
           if re.search(r"\bpa\.(compute|parquet|csv|dataset|ipc|json)\.", line)]
    assert bad == []
