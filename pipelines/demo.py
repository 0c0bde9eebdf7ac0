"""`make demo`: the whole chain on the bundled sample, with the DirectRunner, in a few minutes.

Builds a sample of training photos at real MP-16 locations with simulated visual features and the real
Im2GPS3k test coordinates (``pipelines.sample_data``; the feature model is documented there and in the
README), then runs ``pipelines.run_all``: bucket -> geoclass sets -> examples -> train -> partitions ->
batch predict -> evaluate, and prints the accuracy table and where the maps and plots are.

    python -m pipelines.demo [--workdir out/demo] [--n_train 40000] [--seed 0]
"""

from __future__ import annotations

import argparse
import glob
import os
import time
from collections.abc import Sequence

from partition_gen.evaluation import to_markdown
from pipelines import run_all, sample_data

DEFAULT_WORKDIR = os.path.join("out", "demo")
DEFAULT_N_TRAIN = 40_000


def run(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=DEFAULT_WORKDIR)
    parser.add_argument("--n_train", type=int, default=DEFAULT_N_TRAIN)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test_set", default="im2gps3k", choices=sample_data.TEST_SETS)
    args, beam_args = parser.parse_known_args(argv)
    run_all.configure_logging()
    started = time.time()

    sample_dir = os.path.join(args.workdir, "sample")
    paths = sample_data.make_sample(sample_dir, n_train=args.n_train, seed=args.seed, test_sets=(args.test_set,))
    report = run_all.run_chain(
        train=paths["train"],
        test=paths[f"test_{args.test_set}"],
        workdir=os.path.join(args.workdir, "run"),
        config=run_all.RunConfig(seed=args.seed),
        beam_args=beam_args,
    )
    run_dir = os.path.join(args.workdir, "run")
    print()
    print(to_markdown(report, f"Demo: {args.n_train:,} simulated training photos, {args.test_set} test locations "
                              "-- accuracies [%]"))
    print(f"Finished in {time.time() - started:.0f} s. Artifacts under {os.path.abspath(args.workdir)}:")
    for label, pattern in (
        ("evaluation", os.path.join(run_dir, "evaluation.*")),
        ("accuracy plot", os.path.join(run_dir, "accuracy.png")),
        ("Figure 4 for one photo", os.path.join(run_dir, "figure4_*.png")),
        ("geoclass maps", os.path.join(run_dir, "sets", "maps", "*.png")),
        ("training curves", os.path.join(run_dir, "train", "*.png")),
        ("feature model", os.path.join(sample_dir, "*.png")),
    ):
        found = sorted(glob.glob(pattern))
        if found:
            print(f"  {label}: " + ", ".join(found[:8]) + (" ..." if len(found) > 8 else ""))
    return report


if __name__ == "__main__":
    run()
