"""Training throughput of the CPlaNet heads on this CPU, and the share of step time spent waiting on input.

Setup (paper scale per example): 2048-d features (Inception v3 bottleneck), 5 heads of 10,000 classes each
(~102M parameters), RMSprop, batch 256, written as GZIP TFRecord shards by
``trainer.inputs.write_examples_from_arrays`` to a temp dir and read back through ``trainer.inputs``'s
tf.data pipeline (read, GZIP, shuffle, batch, parse, prefetch), exactly as ``trainer.train`` does.

Method, after a warm-up fit (graph tracing); every run covers the same number of steps:
1. *fit*: ``model.fit`` over the pipeline, as the trainer runs; a callback clocks every batch end. This
   gives the headline examples/s.
2. *wait*: the same pipeline consumed by hand, ``next(iterator)`` then ``model.train_on_batch``; the time
   blocked in ``next`` is time waiting on input (prefetch has had the whole previous step to get the
   batch ready). Wait share = blocked time / loop time, measured in one run so that load from other jobs
   on the machine affects both terms alike.
3. *cached*: ``model.fit`` over the very same batches already materialised in memory: compute alone.
4. *input only*: iterating the pipeline without training, one whole pass including start-up: how fast
   input is produced (read, GZIP, parse) on this machine.
Runs 1-3 are repeated ``--repeats`` times (default 1, to fit make bench's 1.5 minutes: a step is ~3 s on 2
cores) and the faster of each counts (other jobs share this machine's cores). Steady
state excludes the first step, which also carries the pipeline start-up (filling the shuffle buffer, once
per epoch in a real run); the start-up is reported on its own and the wait share is given with and without it.
The shuffle buffer is a quarter of the rows, so reading runs alongside the timed steps as in a long epoch.

    python -m benchmarks.bench_training [--steps 6] [--repeats 1] [--batch_size 256] [--heads 5] [--classes 10000]
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time

import numpy as np

from schemas.cli import Parser

log = logging.getLogger("bench_training")

# A quarter of the rows, not the trainer's 10,000: with a buffer larger than this small data set, the whole
# pass would be read while filling it before the first step, and the timed steps would never read or
# decompress anything. In a long epoch the buffer is refilled as it drains, so reading runs alongside
# training; a buffer smaller than the data reproduces that.
SHUFFLE_BUFFER_SHARE = 0.25


def _write_examples(directory: str, n_rows: int, dim: int, n_classes: dict[str, int], seed: int) -> None:
    from trainer import inputs

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_rows, dim)).astype(np.float32)
    labels = {name: rng.integers(0, k, size=n_rows) for name, k in n_classes.items()}
    eval_rows = 256
    splits = {"train": (x, labels), "eval": (x[:eval_rows], {n: v[:eval_rows] for n, v in labels.items()})}
    inputs.write_examples_from_arrays(directory, splits, n_classes, "bench", shards_per_split=4)


def _steady(ends: list[float]) -> float:
    """Seconds per step after the first one."""
    return (ends[-1] - ends[0]) / max(1, len(ends) - 1)


def _timed_fit(model, dataset, steps: int) -> dict:
    import keras

    ends: list[float] = []

    class StepClock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            ends.append(time.perf_counter())

    started = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, shuffle=False, callbacks=[StepClock()])
    return {"total": time.perf_counter() - started, "first": ends[0] - started, "step": _steady(ends)}


def _timed_manual_loop(model, dataset) -> dict:
    """Blocked-on-input time per step, from a hand-written loop over the same pipeline."""
    iterator = iter(dataset)
    waits, ends = [], []
    started = time.perf_counter()
    while True:
        before = time.perf_counter()
        try:
            x, y = next(iterator)
        except StopIteration:
            break
        waits.append(time.perf_counter() - before)
        model.train_on_batch(x, y)
        ends.append(time.perf_counter())
    total = ends[-1] - started
    steady_total = ends[-1] - ends[0]
    return {
        "wait_share": sum(waits[1:]) / steady_total if steady_total > 0 else 0.0,
        "wait_share_with_startup": sum(waits) / total,
        "first_wait": waits[0],
        "step": _steady(ends),
    }


def measure(
    steps: int, batch_size: int, n_heads: int, n_classes: int, dim: int = 2048, seed: int = 0, repeats: int = 1
) -> dict:
    import tensorflow as tf

    from trainer import inputs
    from trainer.model import build_model
    from trainer.train import seed_everything

    sets = {f"set{i + 1}": n_classes for i in range(n_heads)}
    workdir = tempfile.mkdtemp(prefix="bench-training-")
    try:
        n_rows = steps * batch_size
        started = time.perf_counter()
        _write_examples(workdir, n_rows, dim, sets, seed)
        shard_mib = sum(os.path.getsize(p) for p in inputs.list_shards(workdir, "train")) / 2**20
        log.info(
            "wrote %d examples (%.0f MiB of train shards) in %.1fs",
            n_rows,
            shard_mib,
            time.perf_counter() - started,
        )

        seed_everything(seed)
        info = inputs.read_examples_info(workdir)
        files = inputs.list_shards(workdir, "train")

        shuffle_buffer = max(1, int(n_rows * SHUFFLE_BUFFER_SHARE))

        def pipeline(epoch: int):
            return inputs.train_dataset(
                files, info, list(sets), batch_size, seed, epoch, shuffle_buffer, steps=steps
            )

        model = build_model(dim, sets, seed=seed)
        n_params = int(model.count_params())
        log.info(
            "model: %d heads x %d classes on %d-d features, %.1fM parameters",
            n_heads,
            n_classes,
            dim,
            n_params / 1e6,
        )
        warmup = _timed_fit(model, pipeline(0).take(2), 2)
        log.info("warm-up (tracing + 2 steps): %.1fs", warmup["total"])
        cached = pipeline(1).cache()
        for _ in cached:  # fill the cache, so the cached runs read memory only
            pass

        runs: dict[str, list[dict]] = {"fit": [], "wait": [], "cached": []}
        for repeat in range(repeats):
            runs["fit"].append(_timed_fit(model, pipeline(2 + 3 * repeat), steps))
            runs["wait"].append(_timed_manual_loop(model, pipeline(3 + 3 * repeat)))
            runs["cached"].append(_timed_fit(model, cached.prefetch(tf.data.AUTOTUNE), steps))
            log.info(
                "round %d: fit %.3fs/step (first step %.2fs); hand loop %.3fs/step, %.1f%% waiting on input; "
                "cached %.3fs/step; load average %.2f",
                repeat + 1, runs["fit"][-1]["step"], runs["fit"][-1]["first"], runs["wait"][-1]["step"],
                100 * runs["wait"][-1]["wait_share"], runs["cached"][-1]["step"], os.getloadavg()[0],
            )  # fmt: skip

        started = time.perf_counter()
        arrivals = [time.perf_counter() for _ in pipeline(9)]
        input_first = arrivals[0] - started
        input_seconds = arrivals[-1] - started
        log.info(
            "input only: %d batches in %.2fs, the first after %.2fs (shuffle-buffer fill)",
            len(arrivals), input_seconds, input_first,
        )  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    fit = min(runs["fit"], key=lambda r: r["step"])
    wait = min(runs["wait"], key=lambda r: r["step"])
    cached_run = min(runs["cached"], key=lambda r: r["step"])
    return {
        "method": (
            "examples/s: model.fit over the GZIP TFRecord tf.data pipeline, steady state (first step excluded), "
            f"best of {repeats} after a warm-up; input wait share: time blocked in next(iterator) / step time in a "
            "next()+train_on_batch loop over the same pipeline; cached: fit over the same batches held in "
            "memory; input only: iterating the pipeline without training"
        ),
        "heads": n_heads,
        "classes_per_head": n_classes,
        "embedding_dim": dim,
        "parameters": n_params,
        "batch_size": batch_size,
        "steps_per_run": steps,
        "repeats": repeats,
        "examples_per_s": batch_size / fit["step"],
        "seconds_per_step": fit["step"],
        "examples_per_s_cached_input": batch_size / cached_run["step"],
        "input_wait_share": wait["wait_share"],
        "input_wait_share_with_startup": wait["wait_share_with_startup"],
        "pipeline_startup_seconds": input_first,
        "input_only_examples_per_s": n_rows / input_seconds,
        "train_shards_mib": shard_mib,
        "shuffle_buffer": shuffle_buffer,
        "op_determinism": True,
        "load_average_1min_at_end": os.getloadavg()[0],
    }


def main(argv: list[str] | None = None) -> dict:
    from benchmarks.results import record

    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6, help="steps per timed run (the first is not counted)")
    parser.add_argument("--repeats", type=int, default=1, help="timed rounds; the fastest counts")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--heads", type=int, default=5)
    parser.add_argument("--classes", type=int, default=10_000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from trainer.train import enable_op_determinism

    # The trainer's default (HParams.deterministic), so the figure is what a default run gets.
    enable_op_determinism(True)
    figures = measure(args.steps, args.batch_size, args.heads, args.classes, repeats=args.repeats)
    record("training", figures)
    print(__doc__.split("\n\n")[2])
    print(
        f"training: {figures['examples_per_s']:.0f} examples/s over TFRecords "
        f"({figures['examples_per_s_cached_input']:.0f} with the batches cached in memory; input alone "
        f"{figures['input_only_examples_per_s']:.0f} examples/s, first batch after "
        f"{figures['pipeline_startup_seconds']:.1f}s); {100 * figures['input_wait_share']:.1f}% of step time waiting on input "
        f"({100 * figures['input_wait_share_with_startup']:.1f}% counting the start-up); "
        f"{figures['heads']} heads x {figures['classes_per_head']} classes on {figures['embedding_dim']}-d, "
        f"batch {figures['batch_size']}"
    )
    return figures


if __name__ == "__main__":
    main()
