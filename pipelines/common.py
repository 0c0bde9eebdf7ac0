"""The shared plumbing of every Beam job, by concern (this module re-exports it for the jobs):

- ``pipelines.options``: runner defaults, the flags every job shares, strict flag parsing, typed job arguments;
- ``pipelines.reading``: CSV/Parquet/artifact input -> Arrow batches, row validation;
- ``pipelines.dead_letters``: dead-letter records, repeated photo ids, the dead-letter writer;
- ``pipelines.commit``: in-pipeline accounting, writers that report their files, staged outputs, ``run_job``.

In the order a job uses it: ``parse_job_args`` -> ``ReadTableBatches`` -> ``ValidateBatches`` ->
``DropDuplicatePhotoIds`` -> ``CountRowsOut`` + ``WriteBatchesToParquet`` / ``WriteDeadLetters`` into
``StagedOutput.path`` -> ``run_job`` (adds the commit step, runs, prints the summary line).
"""

from __future__ import annotations

from pipelines.commit import (  # noqa: F401
    DEAD_PREFIX,
    ROWS_IN,
    ROWS_OUT,
    CommitPolicy,
    CountRowsOut,
    JobCheckError,
    JobFailedError,
    JobSummary,
    StagedOutput,
    UnbalancedJobError,
    WriteBatchesToParquet,
    add_commit_step,
    ledger,
    run_job,
    summarize,
    to_output_table,
)
from pipelines.dead_letters import (  # noqa: F401
    DEAD,
    VALID,
    DropDuplicatePhotoIds,
    DropRepeatedPhotoIds,
    FindRepeatedPhotoIds,
    WriteDeadLetters,
    batch_row,
    dead_letter,
    row_file_and_index,
    stable_photo_hash,
)
from pipelines.options import (  # noqa: F401
    DEFAULT_BATCH_ROWS,
    DEFAULT_MAX_DEAD_LETTER_FRACTION,
    OFFLINE_RUNNER,
    add_job_flags,
    job_args,
    local_pipeline,
    offline_pipeline_args,
    parse_job_args,
    path_flag,
    pipeline_options,
)
from pipelines.reading import (  # noqa: F401
    TABLE_SUFFIXES,
    ReadTableBatches,
    ValidateBatches,
    ValidateRows,
    list_table_files,
    normalize_batch,
    read_unit_batches,
    row_problems,
    suspicious_rows,
    table_schema,
)
