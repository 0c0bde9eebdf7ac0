"""Evaluate predictions against ground truth: accuracy at 1 ... 2500 km per method (the paper's Table 2).

Reads a predictions artifact of ``pipelines.batch_predict`` (``OUT/run_date=YYYY-MM-DD/``, one row per photo and
method) and a ground-truth table (CSV or Parquet with photo_id, lat, lng; other column names through
``--truth_columns``), and writes ``evaluation.json``, ``evaluation.md`` (Table-2 layout) and ``accuracy.png``.
The scoring itself is ``partition_gen.evaluation``; this is only I/O, so it is a plain CLI, not a Beam job
(a test set is thousands of rows).

Local::

    python -m pipelines.evaluate --predictions out/predictions/run_date=2024-05-01 \\
        --truth data/im2gps3k_places365.csv --truth_columns IMG_ID,LAT,LON --out out/evaluation

Predictions on ``gs://`` are read through Beam's FileSystems, so the same command works after a Dataflow run.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from partition_gen.evaluation import evaluate, to_markdown, write_report
from schemas import artifacts
from schemas import columns as c
from schemas.cli import Parser, UsageError
from schemas.io import read_table

LOG = logging.getLogger(__name__)


def read_truth(path: str, id_column: str = c.PHOTO_ID, lat_column: str = c.LAT, lng_column: str = c.LNG) -> pa.Table:
    """Ground truth as a table with the canonical photo_id, lat, lng columns."""
    if path.endswith((".csv", ".csv.gz")):
        if not artifacts.exists(path):
            raise FileNotFoundError(f"ground truth {path}: no such file")
        table = pacsv.read_csv(artifacts.open_read(path), convert_options=pacsv.ConvertOptions(column_types={id_column: pa.string()}))
    else:
        table = read_table(path)
    missing = [n for n in (id_column, lat_column, lng_column) if n not in table.column_names]
    if missing:
        raise ValueError(f"ground truth {path}: missing columns {missing} (has: {', '.join(table.column_names)})")
    return pa.table(
        {
            c.PHOTO_ID: table.column(id_column).cast(pa.string()),
            c.LAT: table.column(lat_column).cast(pa.float64()),
            c.LNG: table.column(lng_column).cast(pa.float64()),
        }
    )


def evaluate_files(
    predictions: str, truth: pa.Table, methods: Sequence[str] | None = None
) -> dict:
    table = read_table(predictions)
    radius_columns = [n for n in (c.RADIUS50_KM, c.RADIUS90_KM) if n in table.column_names]
    table = table.select([c.PHOTO_ID, c.METHOD, c.LAT, c.LNG] + radius_columns)
    if methods:
        wanted = np.isin(table.column(c.METHOD).to_numpy(zero_copy_only=False), list(methods))
        table = table.filter(pa.array(wanted))

    def col(t, name):
        return t.column(name).to_numpy(zero_copy_only=False)

    def radii(name):
        # Confidence radii (batch_predict with a model's refine/); null where a row has none.
        return table.column(name).to_numpy(zero_copy_only=False).astype(np.float64) if name in radius_columns else None

    return evaluate(
        col(table, c.PHOTO_ID), col(table, c.METHOD), col(table, c.LAT), col(table, c.LNG),
        col(truth, c.PHOTO_ID), col(truth, c.LAT), col(truth, c.LNG),
        pred_radius50_km=radii(c.RADIUS50_KM), pred_radius90_km=radii(c.RADIUS90_KM),
    )


def run(argv: Sequence[str] | None = None) -> dict:
    parser = Parser(prog="pipelines.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", required=True, help="predictions artifact directory, file or glob")
    parser.add_argument("--truth", required=True, help="ground truth CSV/Parquet")
    parser.add_argument(
        "--truth_columns", default=f"{c.PHOTO_ID},{c.LAT},{c.LNG}", help="id,lat,lng column names of the truth table"
    )
    parser.add_argument("--methods", nargs="*", default=None, help="only these methods (default: all)")
    parser.add_argument("--title", default="Geolocational accuracies [%]")
    parser.add_argument("--out", required=True, help="directory for evaluation.json/.md and accuracy.png")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    columns = [s.strip() for s in args.truth_columns.split(",")]
    if len(columns) != 3:
        raise UsageError(f"--truth_columns needs three names (id,lat,lng), got '{args.truth_columns}'")
    report = evaluate_to(args.predictions, args.truth, args.out, columns, args.methods, args.title)
    print(to_markdown(report, args.title))
    LOG.info("evaluated %d methods on %d ground-truth photos -> %s", len(report["methods"]), report["n_truth"],
             args.out)
    return report


def evaluate_to(predictions: str, truth_path: str, out: str, truth_columns: Sequence[str] | None = None,
                methods: Sequence[str] | None = None, title: str = "Geolocational accuracies [%]") -> dict:
    """Evaluate and write evaluation.json/.md and accuracy.png into ``out`` (local or gs://); returns the report."""
    truth = read_truth(truth_path, *(truth_columns or (c.PHOTO_ID, c.LAT, c.LNG)))
    report = evaluate_files(predictions, truth, methods)
    report["predictions"] = predictions
    report["truth"] = truth_path
    if not artifacts.is_remote(out):
        write_report(report, out, title)
        return report
    # The report writer works on local files; on gs:// it writes to a temporary folder copied through FileSystems.
    with tempfile.TemporaryDirectory() as local:
        for path in write_report(report, local, title).values():
            artifacts.copy_file(path, artifacts.join(out, os.path.basename(path)))
    return report


if __name__ == "__main__":
    from schemas.cli import main

    main("pipelines.evaluate")
