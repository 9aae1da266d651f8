"""Manifests written on the spot for the data tests."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq


def write_rows(path, rows: list[dict]) -> str:
    """A manifest of ``rows`` in the format its suffix names (.jsonl, .csv, .parquet); returns the path."""
    path = str(path)
    if path.endswith(".jsonl"):
        with open(path, "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
    elif path.endswith(".csv"):
        names = list(dict.fromkeys(k for row in rows for k in row))
        with open(path, "w") as f:
            f.write(",".join(names) + "\n")
            f.writelines(",".join("" if row.get(k) is None else str(row[k]) for k in names) + "\n" for row in rows)
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path
