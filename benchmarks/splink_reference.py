"""Splink, the reference library, on the person records Plait's matcher sees.

    python benchmarks/splink_reference.py RECORDS.parquet LINKS.parquet [--threshold 0.9]

Run it with a Python that has Splink (it pins its own DuckDB and SQL stack, so it lives
in its own environment: ``python -m venv /tmp/splink && /tmp/splink/bin/pip install splink``);
``benchmarks/identity.py --splink-python /tmp/splink/bin/python`` calls it and compares.

The model mirrors Plait's: the same cleaned columns, the same blocking rules, Splink's
library comparisons for the same fields (forename+surname with term frequencies, street,
postcode, birth date, email, phone), the prior from deterministic rules, ``u`` from 1 M
random pairs, ``m`` by EM over two blocking passes (Splink's documented workflow). Writes
the links at or above the threshold and prints one JSON line with the timings.
"""

from __future__ import annotations

import argparse
import json
import time

import pyarrow.parquet as pq


def main() -> None:
    import splink.comparison_library as cl
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("records")
    ap.add_argument("links")
    ap.add_argument("--threshold", type=float, default=0.9)
    a = ap.parse_args()
    table = pq.read_table(a.records).rename_columns(
        ["unique_id" if c == "rid" else c for c in pq.read_schema(a.records).names])
    t0 = time.perf_counter()
    db = DuckDBAPI()
    df = db.register(table, dataset_display_name="records")
    settings = SettingsCreator(
        link_type="dedupe_only",
        comparisons=[
            cl.ForenameSurnameComparison("first", "last"),
            cl.JaroWinklerAtThresholds("street", [0.9]),
            cl.PostcodeComparison("postcode"),
            cl.LevenshteinAtThresholds("birthday", [1]),
            cl.EmailComparison("email"),
            cl.ExactMatch("phone"),
        ],
        blocking_rules_to_generate_predictions=[
            block_on("postcode", "last"), block_on("postcode", "first_canon"), block_on("postcode", "street"),
            block_on("phone"), block_on("last", "birthday"), block_on("email_local"),
        ],
        retain_intermediate_calculation_columns=False,
    )
    linker = Linker(df, settings, log_level=40)
    linker.training.estimate_probability_two_random_records_match(
        [block_on("email"), block_on("phone")], recall=0.7)
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=0)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("postcode"), record_sample_proportion=1.0)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("last"), record_sample_proportion=1.0)
    trained = time.perf_counter() - t0
    preds = linker.inference.predict(threshold_match_probability=a.threshold)
    links = preds.as_duckdbpyrelation().select("unique_id_l AS rid_l, unique_id_r AS rid_r, match_probability").arrow()
    if hasattr(links, "read_all"):
        links = links.read_all()
    seconds = time.perf_counter() - t0
    pq.write_table(links, a.links)
    print(json.dumps({"library": "splink", "records": table.num_rows, "links": links.num_rows,
                      "train_seconds": round(trained, 2), "seconds": round(seconds, 2)}))


if __name__ == "__main__":
    main()
