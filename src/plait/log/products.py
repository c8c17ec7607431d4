"""The product catalogue: reference data that puts order lines into a hierarchy.

``products(product_id, name, category, department, brand, list_price)`` — one row per product,
replaced when a newer file says otherwise (reference data, not events). Order lines carry a
product id and, usually, a category; the catalogue adds the department for multi-level rules
and the list price from which the discount a customer took is measured.

>>> import tempfile, plait
>>> ws = plait.connect(tempfile.mkdtemp())
>>> ws.catalogue.add([{"product_id": "P1", "category": "Dairy", "department": "Fresh", "list_price": 2.5}])
1
>>> ws.catalogue.hierarchy()["P1"]
['Dairy', 'Fresh']
>>> ws.close()
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from plait.engine.backend import Backend
from plait.errors import ImportFormatError

COLUMNS = {"product_id": pa.string(), "name": pa.string(), "category": pa.string(), "department": pa.string(),
           "brand": pa.string(), "list_price": pa.float64()}
DDL = ("CREATE TABLE IF NOT EXISTS products (product_id VARCHAR PRIMARY KEY, name VARCHAR, category VARCHAR, "
       "department VARCHAR, brand VARCHAR, list_price DOUBLE)")


class Catalogue:
    """``ws.catalogue``: load and read the product catalogue."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        backend.execute(DDL)

    def add(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Add or replace products (dicts with product_id and any of the other columns)."""
        rows = list(rows)
        for i, r in enumerate(rows):
            if not r.get("product_id"):
                raise ImportFormatError(f"product row {i} has no product_id", hint="every product needs its id")
            price = r.get("list_price")
            if price not in (None, "") and not float(price) >= 0:
                raise ImportFormatError(f"product {r['product_id']} has a negative list_price {price}")
        if not rows:
            return 0
        table = pa.table({c: pa.array([_cell(r.get(c), t) for r in rows], t) for c, t in COLUMNS.items()})
        return self.backend.append("products", table, on_conflict="replace")

    def load(self, path: str | Path) -> int:
        """Load a CSV or Parquet file with a product_id column (and category, department, … as present)."""
        path = Path(path)
        if not path.exists():
            raise ImportFormatError(f"{path} does not exist")
        try:
            if path.suffix.lower() == ".parquet":
                import pyarrow.parquet as pq

                table = pq.read_table(path)
            else:
                import pyarrow.csv as pacsv

                table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types={"product_id": pa.string()}))
        except (pa.ArrowInvalid, OSError) as e:
            raise ImportFormatError(f"{path} cannot be read as {'Parquet' if path.suffix.lower() == '.parquet' else 'CSV'}: {e}",
                                    hint="give a CSV with a header row, or a Parquet file, with a product_id column") from None
        if "product_id" not in table.column_names:
            raise ImportFormatError(f"{path} has no product_id column (it has {', '.join(table.column_names)})",
                                    hint="name the product key column product_id")
        return self.add(table.to_pylist())

    def count(self) -> int:
        return int(self.backend.scalar("SELECT count(*) FROM products"))

    def hierarchy(self) -> dict[str, list[str]]:
        """product id → [category, department] (those known), for multi-level rules."""
        return {r["product_id"]: [v for v in (r["category"], r["department"]) if v]
                for r in self.backend.rows("SELECT product_id, category, department FROM products")}


def _cell(v: Any, t: pa.DataType) -> Any:
    if v is None or v == "":
        return None
    return float(v) if t == pa.float64() else str(v)


__all__ = ["Catalogue"]
