"""Draw where a run's photos were predicted to be: a density map of the predictions (world and densest region).

    python -m pipelines.draw_predictions_map --predictions out/predictions/run_date=2026-11-30 \\
        [--method "CPlaNet[1-5,PlaNet]"] [--out predictions_map.png]

PREDICTIONS is a ``pipelines.batch_predict`` run folder (or a Parquet file or glob of its predictions). One
method's top-1 locations are drawn (default: the method with the most sets, NormalizedSum first), counted per
grid cell over coastlines and borders (``partition_gen.maps.draw_prediction_density``); nothing is downloaded.
The PNG defaults to ``predictions_map_<run folder>.png`` in the current directory (never inside the committed
predictions artifact).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

from schemas.cli import Parser

LOG = logging.getLogger("cplanet.draw_predictions_map")


def prediction_files(path: str) -> list[str]:
    """Parquet files of predictions under ``path`` (a folder, searched recursively; dead letters excluded)."""
    import glob

    if os.path.isdir(path):
        files = sorted(glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True))
        files = [f for f in files if "dead_letters" not in os.path.relpath(f, path).split(os.sep)]
    else:
        files = sorted(glob.glob(path)) if any(ch in path for ch in "*?[") else [path]
    if not files or not all(os.path.exists(f) for f in files):
        raise SystemExit(f"--predictions: no prediction Parquet files at {path}")
    return files


def pick_method(methods: Sequence[str]) -> str:
    """The method with the most sets, NormalizedSum (CPlaNet) before SimpleSum before single sets."""
    rank = {"CPlaNet": 0, "SimpleSum": 1}

    def key(name: str):
        return (rank.get(name.split("[", 1)[0], 2), -name.count(",") - name.count("-"), name)

    return sorted(set(methods), key=key)[0]


def run(argv: Sequence[str] | None = None) -> str:
    parser = Parser(prog="pipelines.draw_predictions_map", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--predictions", required=True, help="batch_predict run folder, Parquet file or glob")
    parser.add_argument("--method", default=None, help="method to draw (default: the one with the most sets)")
    parser.add_argument("--out", default=None, help="PNG path (default: ./predictions_map_<run folder>.png)")
    parser.add_argument("--title", default=None, help="map title (default: method, photo count and folder)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from partition_gen.maps import draw_prediction_density
    from schemas import columns as c

    tables = []
    for path in prediction_files(args.predictions):
        names = pq.ParquetFile(path).schema_arrow.names
        missing = [col for col in (c.METHOD, c.LAT, c.LNG) if col not in names]
        if missing:
            raise SystemExit(f"--predictions: {path} has no column(s) {', '.join(missing)}")
        tables.append(pq.read_table(path, columns=[c.METHOD, c.LAT, c.LNG]))
    table = pa.concat_tables(tables)
    methods = table.column(c.METHOD).unique().to_pylist()
    method = args.method or pick_method(methods)
    if method not in methods:
        raise SystemExit(f"--method: '{method}' is not in {args.predictions}; it has {sorted(methods)}")
    rows = table.filter(pc.equal(table.column(c.METHOD), method))
    lat = rows.column(c.LAT).to_numpy(zero_copy_only=False).astype(np.float64)
    lng = rows.column(c.LNG).to_numpy(zero_copy_only=False).astype(np.float64)
    base = args.predictions if os.path.isdir(args.predictions) else os.path.dirname(os.path.abspath(args.predictions))
    out = args.out or f"predictions_map_{os.path.basename(os.path.normpath(base))}.png"
    title = args.title or f"{method}: {lat.size:,} photos predicted ({os.path.basename(os.path.normpath(base))})"
    path = draw_prediction_density(out, lat, lng, title=title)
    LOG.info("drew %d predictions of %s", lat.size, method)
    print(f"predictions map: {path}", flush=True)
    return path


if __name__ == "__main__":
    from schemas.cli import main

    main("pipelines.draw_predictions_map")
