"""The job commits its own output: in-pipeline row accounting, checks, ``_SUCCESS`` with checksums.

A job's transforms register what the commit needs in the pipeline's ``Ledger``: tallies (``rows_in`` from
``ReadTableBatches``, ``rows_out`` from ``CountRowsOut``, one per dead-letter reason from ``WriteDeadLetters``, and
any job figure such as ``cell_images``) and the names of the files its writers finalized. ``run_job`` adds the
last step, "Check the accounting and commit the outputs", fed those as side inputs, so it runs after every
write and sees counts computed from the data, not runner metrics (some runners have none, and a launcher that
returns after submission -- a Flex Template, Airflow's operators, ``--wait_until_finish=false`` -- never sees
them). The step:

1. checks rows in = rows out + dead letters, at least one row read (unless ``--allow_empty``), the dead-letter
   share at most ``--max_dead_letter_fraction``, and the job's own cross-checks;
2. checks every finalized file is in its staging folder, and that no output is missing or empty while rows
   were written (workers that resolved a relative path elsewhere would leave exactly that);
3. runs ``before_commit(summary)`` (manifests with counts) and commits each ``StagedOutput`` with the summary and
   file checksums in ``_SUCCESS`` (``schemas.artifacts.commit_staged``).

Any failure deletes the staging folders and fails the job: nothing is committed, the previous output stays.
Beam counters are still incremented for monitoring. With ``--wait_until_finish`` (default) the launcher
waits, reads the summary back from the committed marker and prints its one line.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.runner import PipelineResult, PipelineState

from pipelines import progress
from pipelines.options import DEFAULT_MAX_DEAD_LETTER_FRACTION
from schemas import Reason
from schemas.artifacts import absolute, commit_staged, delete_tree, list_files, read_marker, staging_dir_for
from schemas.cli import JOB_CHECK_TAG

LOG = logging.getLogger(__name__)

ROWS_IN = "rows_in"
ROWS_OUT = "rows_out"
DEAD_PREFIX = "dead_letters:"


# ----------------------------------------------------------------------------------------------- ledger


def _size(element) -> int:
    """Rows in one element: a RecordBatch/Table counts its rows, anything else (a dict row, an example) one."""
    rows = getattr(element, "num_rows", None)
    return int(rows) if rows is not None else 1


def _tally(element, name: str) -> tuple[str, int]:
    return name, _size(element)


class Ledger:
    """What a pipeline's commit step needs: (name, count) tallies and finalized file names."""

    def __init__(self, pipeline: beam.Pipeline):
        self.pipeline = pipeline
        self.tallies: list = []
        self.files: list = []

    def tally(self, name: str, pcoll, label: str | None = None):
        """Count ``pcoll``'s rows under ``name`` (batches count their rows, other elements one each)."""
        self.tallies.append(pcoll | (label or f"Tally {name}") >> beam.Map(_tally, name))
        return pcoll

    def tally_by(self, pcoll, key_fn: Callable, label: str):
        """Tally ``key_fn(element) -> (name, count)`` per element."""
        self.tallies.append(pcoll | label >> beam.Map(key_fn))
        return pcoll

    def written(self, file_names):
        """A writer's output: the names of the files it finalized."""
        self.files.append(file_names)
        return file_names


def ledger(pipeline: beam.Pipeline, job: str | None = None) -> Ledger:
    """The pipeline's ledger (one job per pipeline)."""
    found = getattr(pipeline, "_cplanet_ledger", None)
    if found is None:
        found = Ledger(pipeline)
        pipeline._cplanet_ledger = found
    return found


# ----------------------------------------------------------------------------------------------- writing


def _count_rows(batch, counter, job: str = ""):
    counter.inc(_size(batch))
    if job:
        progress.advance(job, "written", _size(batch))
    return batch


class CountRowsOut(beam.PTransform):
    """Pass elements through, tallying their rows as the job's ``rows_out`` (and a counter for monitoring)."""

    def __init__(self, job: str):
        super().__init__()
        self._job = job

    def expand(self, batches):
        counted = batches | "Count rows out" >> beam.Map(_count_rows, Metrics.counter(self._job, ROWS_OUT), self._job)
        ledger(batches.pipeline).tally(ROWS_OUT, counted, "Tally rows out")
        return counted


def to_output_table(batch: pa.RecordBatch, schema: pa.Schema) -> pa.Table:
    """The batch's columns of ``schema`` (internal ones dropped), cast to it."""
    arrays = [batch.column(f.name).cast(f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


class WriteBatchesToParquet(beam.PTransform):
    """RecordBatches -> Parquet shards ``part-SSSSS-of-NNNNN.parquet`` in ``directory`` (with Beam's finalize step,
    so a retried bundle never leaves a duplicate shard); the finalized names go to the commit step."""

    def __init__(self, directory: str, schema: pa.Schema, num_shards: int = 0, prefix: str = "part"):
        super().__init__()
        self._directory, self._schema, self._num_shards, self._prefix = directory, schema, num_shards, prefix

    def expand(self, batches):
        schema = self._schema
        written = (
            batches
            | "Keep the artifact's columns" >> beam.Map(to_output_table, schema)
            | "Write Parquet shards"
            >> beam.io.WriteToParquetBatched(
                FileSystems.join(self._directory, self._prefix),
                schema=schema,
                codec="snappy",
                file_name_suffix=".parquet",
                num_shards=self._num_shards,
            )
        )
        return ledger(batches.pipeline).written(written)


# ----------------------------------------------------------------------------------------------- outputs


class StagedOutput:
    """An output directory written into a staging sibling ``FINAL.staging-<id>`` and published by ``commit``.

    Readers refuse a directory without the marker, so a killed job leaves either the previous artifact or a
    ``*.staging-*`` directory nobody reads. Local paths are made absolute here, at launch, so workers running in
    another directory write where the launcher means. ``hidden`` names the staging folder ``_FINAL.staging-<id>``
    inside the same parent, so dataset readers over the parent (pyarrow, BigQuery) skip it.
    """

    def __init__(self, final_dir: str, hidden: bool = False):
        self.final = absolute(final_dir).rstrip("/")
        path = staging_dir_for(self.final)
        if hidden:
            parent, name = path.rsplit("/", 1)
            path = f"{parent}/_{name}"
        # Nothing is created until the pipeline writes, so a job refused at launch leaves no trace.
        self.path = path

    def commit(self, meta: dict | None = None) -> dict:
        return commit_staged(self.path, self.final, meta)

    def abort(self) -> None:
        delete_tree(self.path)

    def staged_files(self) -> list[str]:
        return list_files(self.path)


# ----------------------------------------------------------------------------------------------- summary


@dataclass
class JobSummary:
    """Row accounting of one job run, from the in-pipeline tallies."""

    job: str
    rows_in: int
    rows_out: int
    dead_letters: dict[str, int] = field(default_factory=dict)
    # Every tally of the job, for job-specific figures (e.g. examples per split).
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def dead_total(self) -> int:
        return sum(self.dead_letters.values())

    @property
    def balanced(self) -> bool:
        return self.rows_in == self.rows_out + self.dead_total

    def line(self) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.dead_letters.items()) if v) or "none"
        verdict = "balanced" if self.balanced else "UNBALANCED"
        return (
            f"{self.job}: rows in {self.rows_in}, rows out {self.rows_out}, "
            f"dead letters {self.dead_total} ({reasons}); {verdict}"
        )

    @classmethod
    def from_counts(cls, job: str, counts: dict) -> JobSummary:
        dead = {k[len(DEAD_PREFIX) :]: int(v) for k, v in counts.items() if k.startswith(DEAD_PREFIX) and v}
        others = {k: int(v) for k, v in counts.items() if not k.startswith(DEAD_PREFIX)}
        return cls(job, others.get(ROWS_IN, 0), others.get(ROWS_OUT, 0), dead, {**others, **dead})

    def to_meta(self) -> dict:
        return {
            "job": self.job,
            ROWS_IN: self.rows_in,
            ROWS_OUT: self.rows_out,
            "dead_letters": dict(self.dead_letters),
            "counters": dict(self.counters),
        }

    @classmethod
    def from_meta(cls, meta: dict) -> JobSummary:
        return cls(meta["job"], int(meta[ROWS_IN]), int(meta[ROWS_OUT]), dict(meta.get("dead_letters", {})),
                   dict(meta.get("counters", {})))


def summarize(result: PipelineResult, job: str) -> JobSummary:
    """The job's Beam counters (monitoring only: correctness never depends on them)."""
    totals: dict[str, int] = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace(job))["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + int(value or 0)
    dead = {reason: totals[reason] for reason in Reason.ALL if totals.get(reason)}
    return JobSummary(job, totals.get(ROWS_IN, 0), totals.get(ROWS_OUT, 0), dead, totals)


class JobCheckError(RuntimeError):
    """The job's final checks failed; nothing was committed."""


class UnbalancedJobError(JobCheckError):
    """rows in != rows out + dead letters: some rows were lost; outputs were not committed."""


class JobFailedError(RuntimeError):
    """The runner reports the job failed or was cancelled."""


@dataclass(frozen=True)
class CommitPolicy:
    allow_empty: bool = False
    max_dead_letter_fraction: float = DEFAULT_MAX_DEAD_LETTER_FRACTION

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CommitPolicy:
        """The policy a job's ``--allow_empty`` and ``--max_dead_letter_fraction`` flags ask for."""
        return cls(
            allow_empty=bool(getattr(args, "allow_empty", False)),
            max_dead_letter_fraction=float(getattr(args, "max_dead_letter_fraction", DEFAULT_MAX_DEAD_LETTER_FRACTION)),
        )


def accounting_problem(summary: JobSummary, policy: CommitPolicy) -> str | None:
    if not summary.balanced:
        return f"{summary.line()}; not committed"
    if summary.rows_in == 0 and not policy.allow_empty:
        return f"{summary.job}: read no rows; not committed (pass --allow_empty if an empty input is expected)"
    if summary.rows_in and summary.dead_total / summary.rows_in > policy.max_dead_letter_fraction:
        share = summary.dead_total / summary.rows_in
        return (
            f"{summary.line()}; {share:.0%} of the rows are dead letters, more than --max_dead_letter_fraction "
            f"{policy.max_dead_letter_fraction}; not committed (read the dead letters, fix the input)"
        )
    return None


def check_written(outputs: Sequence[StagedOutput], files: Sequence[str], summary: JobSummary) -> None:
    """Every finalized file is where the commit will look, and no output that got rows is empty."""
    for i, output in enumerate(outputs):
        prefix = output.path.rstrip("/") + "/"
        mine = [f for f in files if f.startswith(prefix)]
        present = set(output.staged_files())
        lost = [f for f in mine if f not in present]
        if lost:
            raise JobCheckError(
                f"{summary.job}: {len(lost)} written file(s) are not in {output.path} (e.g. {lost[0]}); "
                "workers wrote somewhere else; not committed"
            )
        if i == 0 and summary.rows_out and not present:
            raise JobCheckError(
                f"{summary.job}: staging folder {output.path} is missing or empty although {summary.rows_out} rows "
                "were written (workers resolved the path elsewhere?); not committed"
            )


def _commit_outputs(_, job, outputs, policy, checks, before_commit, counts, files, announce=True):
    summary = JobSummary.from_counts(job, dict(counts))
    try:
        problem = accounting_problem(summary, policy)
        if problem:
            raise (UnbalancedJobError if not summary.balanced else JobCheckError)(problem)
        for check in checks:
            check(summary)
        check_written(outputs, list(files), summary)
        if before_commit is not None:
            before_commit(summary)
        meta = summary.to_meta()
        for output in outputs:
            output.commit(meta)
    except Exception as error:
        for output in outputs:
            output.abort()
        LOG.error("%s", error)
        # The tag survives the runner's wrapping of worker errors, so the launcher can show this one line.
        raise JobCheckError(f"{JOB_CHECK_TAG} {error}") from error
    # A launcher that waits prints the summary itself; one that returned after submission has only this line.
    LOG.log(logging.INFO if announce else logging.DEBUG, "%s (committed %s)", summary.line(),
            ", ".join(o.final for o in outputs))
    yield summary.to_meta()


def add_commit_step(
    pipeline: beam.Pipeline,
    job: str,
    outputs: Sequence[StagedOutput],
    policy: CommitPolicy | None = None,
    checks: Sequence[Callable[[JobSummary], None]] = (),
    before_commit: Callable[[JobSummary], None] | None = None,
    announce: bool = True,
):
    """The pipeline's last step: accounting checks, then the commit (see the module docstring).

    ``announce``: log the summary from the worker (False when the launcher waits and prints it itself)."""
    book = ledger(pipeline)
    seeds = pipeline | "Start the tallies at zero" >> beam.Create([(ROWS_IN, 0), (ROWS_OUT, 0)])
    counts = (
        [seeds, *book.tallies]
        | "Gather the tallies" >> beam.Flatten()
        | "Sum the tallies" >> beam.CombinePerKey(sum)
    )
    if book.files:
        files = book.files | "Gather the written file names" >> beam.Flatten()
    else:
        files = pipeline | "No written file names" >> beam.Create([])
    return (
        pipeline
        | "Once every write is done" >> beam.Create([None])
        | "Check the accounting and commit the outputs"
        >> beam.FlatMap(
            _commit_outputs,
            job,
            list(outputs),
            policy or CommitPolicy(),
            list(checks),
            before_commit,
            counts=beam.pvalue.AsDict(counts),
            files=beam.pvalue.AsList(files),
            announce=announce,
        )
    )


def _job_error(error: BaseException) -> BaseException:
    """The tagged one-line check failure hidden in a runner's wrapped error, as its own exception."""
    text = str(error)
    for line in text.splitlines():
        if JOB_CHECK_TAG in line:
            message = line[line.index(JOB_CHECK_TAG) + len(JOB_CHECK_TAG) :].strip()
            message = re.sub(r"\s*\[while running '[^']*'\]$", "", message)
            cls = UnbalancedJobError if "UNBALANCED" in message else JobCheckError
            return cls(message)
    return error


_FINISHED_BADLY = {PipelineState.FAILED, PipelineState.CANCELLED, PipelineState.STOPPED, PipelineState.DRAINED}


def run_job(
    pipeline: beam.Pipeline,
    job: str,
    outputs: Sequence[StagedOutput] = (),
    before_commit: Callable[[JobSummary], None] | None = None,
    checks: Sequence[Callable[[JobSummary], None]] = (),
    args: argparse.Namespace | None = None,
    policy: CommitPolicy | None = None,
    wait: bool | None = None,
) -> JobSummary | None:
    """Add the commit step, submit, and (``--wait_until_finish``, the default) wait and print the summary.

    Returns the summary read back from the committed ``_SUCCESS`` marker, or None when the launcher returned
    before the job finished (the job then commits, or refuses to, by itself).
    """
    if args is not None:
        policy = policy or CommitPolicy.from_args(args)
        wait = getattr(args, "wait_until_finish", True) if wait is None else wait
    wait = True if wait is None else wait
    add_commit_step(pipeline, job, outputs, policy, checks, before_commit, announce=not wait)

    def abort():
        for output in outputs:
            output.abort()

    # Progress totals are per process: a second job in it (run_all's test features after the train ones) counts
    # its own rows from zero.
    progress.reset()
    try:
        result = pipeline.run()
        state = result.wait_until_finish() if wait else getattr(result, "state", None)
    except BaseException as error:
        abort()
        converted = _job_error(error)
        if converted is error:
            raise
        raise converted from None
    if state in _FINISHED_BADLY:
        abort()
        raise JobFailedError(f"{job}: the job ended {state}; outputs not committed")
    if state not in (None, PipelineState.DONE):
        where = ", ".join(o.final for o in outputs)
        LOG.info("%s: submitted (state %s); the job checks and commits its own output: %s", job, state, where)
        print(f"{job}: submitted; it commits {where} when done", flush=True)
        return None
    if not outputs:
        return None
    summary = JobSummary.from_meta(read_marker(outputs[0].final, job))
    # The one summary line (stdout, for people and schedulers), with where the job wrote.
    print(f"{summary.line()}; wrote {', '.join(o.final for o in outputs)}", flush=True)
    return summary
