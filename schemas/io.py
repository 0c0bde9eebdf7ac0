"""Reading and writing table artifacts (Parquet) the same way in every stage, local or ``gs://``.

An artifact is a single Parquet file, or a directory of Parquet shards completed by a ``_SUCCESS`` marker.
Readers refuse a directory without the marker: a killed job must never be read as complete.
Writers write into a temporary sibling and rename it into place, so the marker and the rename are the
commit point.
"""

from __future__ import annotations

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


def list_parquet_files(path: str) -> list[str]:
    """The Parquet files of an artifact: a file, a glob, or a completed directory of shards."""
    if is_remote(path):
        from apache_beam.io.filesystems import FileSystems

        is_directory = not path.endswith(".parquet") and not any(ch in path for ch in "*?[")
        if is_directory:
            verify(path, "table", full=False)
        pattern = path.rstrip("/") + "/*.parquet" if is_directory else path
        return sorted(m.path for r in FileSystems.match([pattern]) for m in r.metadata_list)
    if os.path.isdir(path):
        verify(path, "table", full=False)
        return sorted(glob.glob(os.path.join(path, "*.parquet")))
    if any(ch in path for ch in "*?["):
        files = sorted(glob.glob(path))
        if not files:
            raise FileNotFoundError(f"no files match {path}")
        return files
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    return [path]


def read_table(path: str, columns: list[str] | None = None) -> pa.Table:
    """Read a whole artifact into one Arrow table (schemas unified across shards)."""
    files = list_parquet_files(path)
    if not files:
        raise FileNotFoundError(f"{path}: no Parquet files")
    if is_remote(path):
        from apache_beam.io.filesystems import FileSystems

        tables = []
        for f in files:
            with FileSystems.open(f) as handle:
                tables.append(pq.read_table(handle, columns=columns))
    else:
        tables = [pq.read_table(f, columns=columns) for f in files]
    return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]


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
