"""Generate geoclass sets on Beam: one element per parameter set, so the sets are built in parallel.

Reads a cells artifact (``schemas.CELLS``, from ``pipelines.bucket_cells``), builds every geoclass set of the
spec list (sets 1 and 2 of Table 1, seeded sampled sets, optionally a PlaNet set) with the same code as
``partition_gen.geoclass_sets.generate_geoclass_sets``, and writes the geoclass-sets artifact
(docs/ARTIFACTS.md: ``sets.json``, ``assignments.parquet``, ``classes.parquet``, ``maps/*.png``, ``_SUCCESS``).

The initial graph is rebuilt once per worker process (``DoFn.setup`` through ``apache_beam.utils.shared``,
so threads of one process share it) instead of being shipped as a side input: a 2.8M-node graph with
2048-d features is several GB to serialise to every worker, while rebuilding it from the cells artifact
is one Parquet read and one convex hull, deterministic for the same input, so all workers agree.

Bad parameter sets (more classes than nodes, feature dimensions the cells do not have, repeated names) are
configuration errors: the launcher refuses them before the pipeline starts, naming the set and the cells.
Accounting: rows in = parameter sets read, rows out = sets written; there are no per-row dead letters.

Run locally (offline runner)::

    python -m pipelines.generate_geoclass_sets --cells out/cells --output out/geoclass_sets \\
        --n_classes 9969 --n_sampled 3 --seed 7 --planet 50,5000

or with an explicit list (JSON: ``[{"name": "set1", "kind": "merge", "n_classes": 500, "params": {...}}]``)::

    python -m pipelines.generate_geoclass_sets --cells out/cells --output out/sets --specs specs.json

On Dataflow, add the usual options; each worker needs memory for one graph plus one set's working copy
(measured: 3.0 GB peak for 2.8M nodes with 128-d features, plus N x D x 4 bytes of local disk for the
spilled features; use highmem machines for 2048-d)::

    python -m pipelines.generate_geoclass_sets --cells gs://B/cells --output gs://B/geoclass_sets \\
        --n_classes 9969 --n_sampled 3 --runner DataflowRunner --project P --region R \\
        --temp_location gs://B/tmp --setup_file ./setup.py --machine_type n2-highmem-8
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import replace

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.utils.shared import Shared

from partition_gen.geoclass_sets import empty_sets_from_cells, generate_set, write_artifact_files
from partition_gen.graph import (
    InitialGraph,
    graph_from_cells_table,
    with_streamed_feature_means,
)
from partition_gen.params import MERGE, GeoclassSetSpec, check_unique_names, default_specs
from pipelines.common import (
    ROWS_IN,
    ROWS_OUT,
    StagedOutput,
    add_job_flags,
    ledger,
    parse_job_args,
    path_flag,
    run_job,
)
from schemas import columns as c
from schemas.cli import Parser
from schemas.io import list_table_files, parquet_file, read_table

JOB = "generate_geoclass_sets"
LOG = logging.getLogger(__name__)
NODE_COLUMNS = [c.CELL_ID, c.LEVEL, c.N_IMAGES, c.X_SUM, c.Y_SUM, c.Z_SUM]


class _GraphHolder:
    """The worker's graph (weak-referenceable, as ``Shared`` requires), and how each set is built on it.

    Memory: a merge needs its own N x D feature sums, which it changes as nodes merge. Instead of copying
    the graph's features for every set (1.4 GB at 2.8M nodes x 128-d, which put a worker above 3.5 GB),
    the holder writes them once to a raw file on the worker's local disk (N x D x 4 bytes), lets a
    full-dimension merge work on the graph's own array and a sampled set's merge on its gathered columns
    (the full array dropped meanwhile), and reads the file back afterwards. Sets of one process therefore
    run one after another (the lock); workers (processes) still run in parallel, each with its own graph.
    The classes are those of ``generate_set`` on a fresh graph (tests/test_geoclass_job_memory.py).
    """

    def __init__(self, graph: InitialGraph):
        self.graph = graph
        self.lock = threading.Lock()
        self._spill = None

    def build(self, spec: GeoclassSetSpec) -> np.ndarray:
        if not (spec.kind == MERGE and spec.beta[0] > 0):
            return generate_set(self.graph, spec)
        features = self.graph.features
        if self._spill is None:
            # An unnamed file: gone when the process ends, however it ends.
            self._spill = tempfile.TemporaryFile(prefix="geoclass-features-")
            features.tofile(self._spill)
            self._spill.flush()
        if spec.feature_dims is None:
            labels = generate_set(self.graph, spec, in_place=True)
        else:
            shape, dtype = features.shape, features.dtype
            self.graph = replace(self.graph, features=None)
            del features  # before the columns are read: the two never share memory
            columns = _read_columns(self._spill, shape, dtype, np.asarray(spec.feature_dims, dtype=np.int64))
            subset = replace(self.graph, features=columns)
            del columns
            LOG.info("%s: merging on %d of %d feature dimensions", spec.name, subset.embedding_dim, shape[1])
            labels = generate_set(subset, replace(spec, feature_dims=None), in_place=True)
            del subset
            features = np.empty(shape, dtype=dtype)
        self._spill.seek(0)
        if self._spill.readinto(memoryview(features).cast("B")) != features.nbytes:
            raise OSError("the spilled graph features could not be read back in full")
        self.graph = replace(self.graph, features=features)
        return labels


def _read_columns(handle, shape: tuple, dtype, dims: np.ndarray, rows_per_block: int = 65_536) -> np.ndarray:
    """Columns ``dims`` of the raw C-order (N, D) array in file ``handle``, in C order, a block of rows at a time."""
    out = np.empty((shape[0], dims.size), dtype=dtype)
    handle.seek(0)
    for lo in range(0, shape[0], rows_per_block):
        rows = min(rows_per_block, shape[0] - lo)
        block = np.fromfile(handle, dtype=dtype, count=rows * shape[1]).reshape(rows, shape[1])
        out[lo : lo + rows] = block[:, dims]
    return out


def load_graph(cells_path: str, with_features: bool) -> InitialGraph:
    """The initial graph of a cells artifact, built once per worker process.

    The hull is built from the node columns alone; the feature sums are then streamed in record batches
    and turned into float32 means, so the float64 sums column (2.9 GB for 2.8M cells x 128) is never held
    whole, nor next to Qhull's working memory.
    """
    graph = graph_from_cells_table(read_table(cells_path, columns=NODE_COLUMNS), with_features=False)
    if not with_features:
        return graph
    return with_streamed_feature_means(graph, _feature_batches(cells_path))


def _feature_batches(cells_path: str, rows_per_batch: int = 65_536):
    for path in list_table_files(cells_path):
        # pre_buffer=False: pre-buffering held ~2.4 GB of column chunks at 2.8M x 128-d (measured 0.6 GB
        # without), which set the worker's peak memory while the features were read.
        with parquet_file(path, pre_buffer=False) as parquet:
            yield from parquet.iter_batches(batch_size=rows_per_batch, columns=[c.CELL_ID, c.FEATURE_SUM])


class _BuildSetFn(beam.DoFn):
    def __init__(self, cells_path: str, with_features: bool):
        self._cells_path, self._with_features = cells_path, with_features
        self._shared = Shared()
        self._holder = None
        self._sets_in = Metrics.counter(JOB, ROWS_IN)

    def setup(self):
        self._holder = self._shared.acquire(
            lambda: _GraphHolder(load_graph(self._cells_path, self._with_features)),
            tag=f"{self._cells_path}|{self._with_features}",
        )

    def process(self, spec_json: dict):
        self._sets_in.inc()
        spec = GeoclassSetSpec.from_json(spec_json)
        with self._holder.lock:
            labels = self._holder.build(spec)
        yield spec.name, labels


class BuildGeoclassSets(beam.PTransform):
    """Spec dicts (``GeoclassSetSpec.to_json``) -> (set name, int32 class id per node), one set per element."""

    def __init__(self, cells_path: str, with_features: bool = True):
        super().__init__()
        self._cells_path, self._with_features = cells_path, with_features

    def expand(self, specs):
        return (
            specs
            | "Spread the parameter sets over workers" >> beam.Reshuffle()
            | "Merge the graph into each set's geoclasses"
            >> beam.ParDo(_BuildSetFn(self._cells_path, self._with_features))
        )


def write_artifact(
    labelled: list, cells_path: str, spec_jsons: Sequence[dict], directory: str, maps: bool = True
) -> int:
    """Assemble the sets in spec order and write the artifact files into ``directory`` (a staging path)."""
    sets = empty_sets_from_cells(read_table(cells_path, columns=NODE_COLUMNS))
    by_name = dict(labelled)
    for record in spec_jsons:
        spec = GeoclassSetSpec.from_json(record)
        sets.add(spec, by_name[spec.name])
    if "://" in directory:
        with tempfile.TemporaryDirectory() as local:
            write_artifact_files(sets, local, maps=maps)
            for root, _, files in os.walk(local):
                for name in files:
                    rel = os.path.relpath(os.path.join(root, name), local)
                    with (
                        open(os.path.join(root, name), "rb") as src,
                        FileSystems.create(f"{directory}/{rel}") as dst,
                    ):
                        dst.write(src.read())
    else:
        os.makedirs(directory, exist_ok=True)
        write_artifact_files(sets, directory, maps=maps)
    Metrics.counter(JOB, ROWS_OUT).inc(len(sets.set_names))
    LOG.info("wrote %d geoclass sets (checksum %s) to %s", len(sets.set_names), sets.checksum[:12], directory)
    return len(sets.set_names)


def build_pipeline(
    pipeline: beam.Pipeline,
    cells_path: str,
    specs: Sequence[GeoclassSetSpec],
    staging_dir: str,
    maps: bool = True,
):
    spec_jsons = [s.to_json() for s in specs]
    with_features = any(s.kind == MERGE and s.beta[0] > 0 for s in specs)
    book = ledger(pipeline)
    specs_in = pipeline | "Start from the parameter sets" >> beam.Create(spec_jsons)
    book.tally(ROWS_IN, specs_in, "Count the parameter sets")
    written = (
        specs_in
        | "Build every geoclass set" >> BuildGeoclassSets(cells_path, with_features)
        | "Gather the sets in one place" >> beam.combiners.ToList()
        | "Write the geoclass-sets artifact"
        >> beam.Map(write_artifact, cells_path, spec_jsons, staging_dir, maps)
    )
    book.tally_by(written, _sets_written, "Count the sets written")
    return written


def _sets_written(count: int) -> tuple[str, int]:
    return ROWS_OUT, int(count)


def cells_shape(cells_path: str) -> tuple[int, int]:
    """(number of nodes, embedding dimension) of a cells artifact, from metadata and its first row."""
    files = list_table_files(cells_path)
    n_nodes, dim = 0, 0
    for f in files:
        with parquet_file(f) as parquet:
            n_nodes += parquet.metadata.num_rows
            if not dim and parquet.metadata.num_rows:
                first = parquet.read_row_group(0, columns=[c.FEATURE_SUM]).column(0)
                dim = len(first[0].as_py())
    return n_nodes, dim


def specs_from_args(args: argparse.Namespace, embedding_dim: int) -> list[GeoclassSetSpec]:
    if args.specs:
        with FileSystems.open(args.specs) if "://" in args.specs else open(args.specs) as handle:
            records = json.loads(handle.read())
        return [GeoclassSetSpec.from_json(r) for r in records]
    if args.n_classes is None:
        from schemas.cli import UsageError

        raise UsageError("give --specs FILE or --n_classes N (with --n_sampled, --seed, --class_range, --planet)")
    class_range = tuple(int(x) for x in args.class_range.split(",")) if args.class_range else None
    planet = tuple(int(x) for x in args.planet.split(",")) if args.planet else None
    n_sampled = args.n_sampled if embedding_dim else 0
    if args.n_sampled and not embedding_dim:
        LOG.warning("the cells hold no features: sampled sets need them, generating none")
    return default_specs(args.n_classes, n_sampled, args.seed, max(embedding_dim, 1), class_range, planet)


def check_specs(specs: Sequence[GeoclassSetSpec], n_nodes: int, embedding_dim: int, cells_path: str) -> None:
    check_unique_names(specs)
    for spec in specs:
        try:
            spec.check_against(n_nodes, embedding_dim)
        except ValueError as err:
            raise ValueError(f"{err} (cells: {cells_path})") from None


def run(argv: Sequence[str] | None = None):
    args, options = parse_job_args(parser(), argv)
    return launch(args, options)


def parser() -> argparse.ArgumentParser:
    """The job's flags, declared once (``run`` parses argv with it, ``run_all`` fills it through ``job_args``)."""
    parser = Parser(prog="pipelines.generate_geoclass_sets", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", required=True, type=path_flag,
                        help="cells artifact (directory with _SUCCESS, or Parquet)")
    parser.add_argument("--output", required=True, type=path_flag, help="geoclass-sets artifact directory to write")
    parser.add_argument("--specs", type=path_flag, help="JSON list of parameter sets (GeoclassSetSpec.to_json records)")
    parser.add_argument("--n_classes", type=int, help="classes of sets 1 and 2")
    parser.add_argument("--n_sampled", type=int, default=3, help="sampled sets after sets 1 and 2")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampled sets")
    parser.add_argument(
        "--class_range", help="low,high class count of sampled sets (default n_classes..1.3x)"
    )
    parser.add_argument("--planet", help="t_min,t_max: add a PlaNet set")
    parser.add_argument("--no_maps", action="store_true", help="skip the PNG maps")
    return add_job_flags(parser)


def launch(args: argparse.Namespace, options):
    """Build and run the job from typed arguments (``parser()``'s flags) and ``PipelineOptions``."""
    n_nodes, dim = cells_shape(args.cells)
    specs = specs_from_args(args, dim)
    check_specs(specs, n_nodes, dim, args.cells)
    LOG.info("%s: %d sets over %d nodes: %s", JOB, len(specs), n_nodes, ", ".join(s.name for s in specs))
    output = StagedOutput(args.output)
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, args.cells, specs, output.path, maps=not args.no_maps)
    return run_job(pipeline, JOB, [output], args=args)


if __name__ == "__main__":
    from schemas.cli import main

    main("pipelines.generate_geoclass_sets")
