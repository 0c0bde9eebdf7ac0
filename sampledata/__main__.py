"""Command line of the samples: ``python -m sampledata --out DIR [--n_train N --seed S --dim D | --scene]``."""

from __future__ import annotations

import argparse
import logging

import sampledata
from sampledata.field import FeatureModel
from sampledata.writer import make_sample, make_scene_sample


def run(argv=None) -> dict[str, str]:
    parser = argparse.ArgumentParser(
        prog="python -m sampledata", description=sampledata.__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--n_train", type=int, default=100_000, help="training photos (simulated sample)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    parser.add_argument("--dim", type=int, default=FeatureModel.dim, help="embedding size (simulated sample)")
    parser.add_argument("--scene", action="store_true", help="write the YFCC25600 scene-label sample instead")
    parser.add_argument("--test_fraction", type=float, default=0.2, help="held-out share (scene sample)")
    parser.add_argument("--no_plot", action="store_true", help="skip feature_model.png")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.scene:
            return make_scene_sample(args.out, args.seed, args.test_fraction)
        model = FeatureModel(dim=args.dim)
        return make_sample(args.out, args.n_train, args.seed, model, plot=not args.no_plot, progress=True)
    except (ValueError, FileNotFoundError) as error:  # bad flag or bad bundled file: one line, exit 2
        parser.error(str(error))


if __name__ == "__main__":
    run()
