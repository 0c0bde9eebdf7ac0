"""Reading and writing table artifacts (Parquet) the same way in every stage, local or ``gs://``.

An artifact is a single Parquet file, or a directory of Parquet shards completed by a ``_SUCCESS`` marker.
Readers refuse a directory without the marker: a killed job must never be read as complete.
Writers write into a temporary sibling and rename it into place, so the marker and the rename are the
commit point.
"""

from __future__ import annotations

import contextlib
import glob
import os
import uuid

import pyarrow as pa
import pyarrow.parquet as pq

from schemas.artifacts import (  # noqa: F401 - re-exported: one definition in schemas.artifacts
    SUCCESS_MARKER,
    ArtifactChecksumError,
    ArtifactError,
    IncompleteArtifactError,
    is_remote,
    verify,
)
from schemas.artifacts import exists as path_exists  # noqa: F401
from schemas.artifacts import join as join_path  # noqa: F401
from schemas.artifacts import open_read as open_for_read


def read_bytes(path: str) -> bytes:
    with open_for_read(path) as handle:
        return handle.read()


PARQUET_SUFFIXES = (".parquet",)
# What a job accepts as input (``pipelines.reading.ReadTableBatches``).
TABLE_SUFFIXES = (".parquet", ".csv", ".csv.gz")


def list_table_files(
    path: str, suffixes: tuple[str, ...] = PARQUET_SUFFIXES, *, allow_empty: bool = False
) -> list[str]:
    """The table files of an artifact or input: one file, a glob, or a directory completed by ``_SUCCESS``.

    Files are those ending in one of ``suffixes``, sorted. Raises ``FileNotFoundError`` (naming the path) for a
    missing file or a glob matching nothing, ``IncompleteArtifactError`` for a directory without its marker, and
    ``FileNotFoundError`` for a completed directory without such files unless ``allow_empty``. Jobs call it at
    launch, so a wrong input fails before any worker starts.
    """
    kinds = " or ".join(suffixes)
    if any(ch in path for ch in "*?["):
        if is_remote(path):
            from apache_beam.io.filesystems import FileSystems

            files = [m.path for r in FileSystems.match([path]) for m in r.metadata_list]
        else:
            files = glob.glob(path)
        files = sorted(f for f in files if f.endswith(suffixes))
        if not files:
            raise FileNotFoundError(f"no files match {path} (looking for {kinds})")
        return files
    if path.endswith(suffixes) or (not is_remote(path) and os.path.isfile(path)):
        if not path_exists(path):
            raise FileNotFoundError(f"input table {path} does not exist")
        return [path]
    directory = path.rstrip("/")
    if not is_remote(directory) and not os.path.exists(directory):
        raise FileNotFoundError(f"input {path} does not exist")
    verify(directory, "table", full=False)
    pattern = join_path(directory, "*" + suffixes[0] if len(suffixes) == 1 else "*")
    if is_remote(directory):
        from apache_beam.io.filesystems import FileSystems

        files = [m.path for r in FileSystems.match([pattern]) for m in r.metadata_list]
    else:
        files = glob.glob(pattern)
    files = sorted(f for f in files if f.endswith(suffixes))
    if not files and not allow_empty:
        raise FileNotFoundError(f"{path}: no {kinds} files in the artifact")
    return files


def read_table(path: str, columns: list[str] | None = None) -> pa.Table:
    """Read a whole artifact into one Arrow table (schemas unified across shards)."""
    files = list_table_files(path)
    tables = [_read_parquet_file(f, columns) for f in files]
    return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]


@contextlib.contextmanager
def _naming_damaged_file(path: str):
    """Re-raise Arrow's error about a damaged or non-Parquet file with the file's path in front (same type)."""
    try:
        yield
    except (pa.ArrowInvalid, OSError) as error:
        if path in str(error):
            raise
        raise type(error)(f"{path}: {error}") from error


def _read_parquet_file(path: str, columns: list[str] | None) -> pa.Table:
    with _naming_damaged_file(path), open_for_read(path) as handle:
        return pq.read_table(handle, columns=columns)


@contextlib.contextmanager
def parquet_file(path: str, **options):
    """One local or remote Parquet file as a ``pq.ParquetFile`` (for metadata and streamed batches); a
    damaged file's error names it."""
    with _naming_damaged_file(path), open_for_read(path) as handle:
        yield pq.ParquetFile(handle, **options)


def write_table_atomic(table: pa.Table, path: str) -> None:
    """Write one Parquet file so that readers see the old file or the new one, never half of it."""
    if is_remote(path):
        from apache_beam.io.filesystems import FileSystems

        # GCS object writes are atomic on close.
        with FileSystems.create(path) as handle:
            pq.write_table(table, handle)
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        # A failed write must not leave a stray half file next to the artifact.
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def replace_directory_atomic(staging_dir: str, final_dir: str, meta: dict | None = None) -> None:
    """Swap a finished staging directory into place with its checksummed marker (``schemas.artifacts``).

    The final path is a rename away at every instant, so a reader sees either the previous complete
    artifact or the new complete one.
    """
    from schemas.artifacts import commit_staged

    commit_staged(staging_dir, final_dir, meta)


def staging_path(final_dir: str) -> str:
    """A fresh sibling directory to write an artifact into before ``replace_directory_atomic``."""
    final_dir = os.path.abspath(final_dir)
    path = f"{final_dir}.staging-{uuid.uuid4().hex}"
    os.makedirs(path)
    return path
