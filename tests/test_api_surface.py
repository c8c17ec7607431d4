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


def test_no_input_makes_the_http_api_answer_500(tmp_path):
    """Every route in the OpenAPI document, given out-of-range, mistyped and malformed values for
    each of its query parameters and body fields, answers 4xx (or 2xx), never 5xx: each of a
    timeline limit, a timeline cursor, a rules limit and most analytics fit parameters once did."""
    import base64
    import re
    import warnings

    from fastapi.testclient import TestClient

    import plait
    from plait.server import create_app

    warnings.filterwarnings("ignore")
    ws = plait.connect(tmp_path / "ws")
    ws.simulate(people=150, days=20, seed=5)
    ws.resolve()
    key = ws.keys.create("fuzz", role="admin")
    h = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}
    pid = ws.backend.scalar(f"SELECT min(profile_id) FROM identity_map WHERE version = {ws.identity.version}")
    bad_values = [-5, 0, 1e300, "abc", "", None, [1], {"a": 1}]
    fits = {"clv": ["horizon_days", "discount_rate", "calibration_end", "as_of"],
            "rules": ["within_days", "min_support", "segment_column"], "segments": ["k_min", "seed"],
            "propensity": ["target", "horizon_days"], "attribution": ["model", "lookback_days", "method"]}
    with TestClient(create_app(ws), raise_server_exceptions=False) as c:
        spec = c.get("/openapi.json").json()
        schemas = spec["components"]["schemas"]
        calls = []
        for path, ops in spec["paths"].items():
            url = re.sub(r"\{[^}]+\}", pid, path)
            for method, op in ops.items():
                for p in op.get("parameters", []):
                    if p["in"] == "query":
                        calls += [(method, url, {"params": {p["name"]: v}}) for v in bad_values if v is not None]
                body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
                if "$ref" in body:
                    props = schemas[body["$ref"].rsplit("/", 1)[1]].get("properties", {})
                    calls += [(method, url, {"json": {f: v}}) for f in props for v in bad_values]
                if method == "post":
                    calls += [(method, url, {"content": raw}) for raw in (b"not json", b"[]", b'{"a":')]
        for name, params in fits.items():
            calls += [("post", f"/v1/analytics/{name}", {"json": {"params": {p: v}}}) for p in params for v in bad_values]
        failed = []
        for method, url, kw in calls:
            r = c.request(method.upper(), url, headers={**h, "content-type": "application/json"}, **kw)
            if r.status_code >= 500:
                failed.append((method, url, kw, r.status_code))
    ws.close()
    assert len(calls) > 400 and failed == []
