"""Draw the paper's Figure 4 for one photo: the top-scoring region as geoclass sets are added one by one.

Uses the artifacts of a finished run (model, geoclass sets, partitions) and a features file holding the photo
and its true location::

    python -m pipelines.draw_figure4 --workdir out/demo/run --features out/demo/sample/test_im2gps3k.parquet \\
        [--photo_id ID] [--out figure4.png]

``pipelines.run_all`` draws one such figure (the first test photo) at the end of every run. Local only: it
reads the artifacts with the same loaders as the Beam jobs, so ``gs://`` paths work too.
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Sequence

from pipelines.run_all import configure_logging, draw_progressive_map
from schemas.cli import Parser


def run(argv: Sequence[str] | None = None) -> str:
    parser = Parser(prog="pipelines.draw_figure4", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a run_all work dir (model/, sets/, partitions/)")
    parser.add_argument("--features", required=True, help="Parquet with photo_id, lat, lng, embedding")
    parser.add_argument("--photo_id", default=None, help="default: the file's first photo")
    parser.add_argument("--out", default=None, help="PNG path (default: WORKDIR/figure4_<photo id without image extension, @ and / as _>.png)")
    args = parser.parse_args(argv)
    configure_logging()
    path = draw_progressive_map(
        args.workdir, args.features, os.path.join(args.workdir, "model"), os.path.join(args.workdir, "sets"),
        os.path.join(args.workdir, "partitions"), args.photo_id,
    )
    if args.out:
        shutil.move(path, args.out)
        path = args.out
    print(path)
    return path


if __name__ == "__main__":
    from schemas.cli import main

    main("pipelines.draw_figure4")
