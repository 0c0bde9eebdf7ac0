"""Artifact directories, local or ``gs://``: one file API, one commit protocol, one verification.

Every artifact of the project (features, cells, photos, geoclass sets, examples, partitions, model, predictions,
dead letters) is a directory completed by a ``_SUCCESS`` marker. The marker is JSON::

    {"format": 1, "files": {"relative/name": {"size": N, "sha256": "..."}, ...}, ...job summary...}

Writers follow one protocol: remove the marker, write the files, write the marker (with the checksum of every
file) last. ``commit_staged`` does it for a directory written elsewhere first (a ``*.staging-*`` sibling or a
local temporary directory): local paths swap by rename, object stores copy the files and write the marker
last. Readers call ``verify``: no marker -> ``IncompleteArtifactError``; a file missing, of another size or
(``full=True``, for the small artifacts: sets, partitions, model files, manifests) with another SHA-256 ->
``ArtifactChecksumError`` naming the artifact and the file.

The file API goes through Beam's ``FileSystems`` for URIs (``gs://`` ...) and plain ``os`` for local paths.
Object stores have no directories, only name prefixes: ``exists(dir)`` is False for a prefix and
``FileSystems.delete([dir])`` deletes nothing, so ``list_files``/``delete_tree`` list ``dir/**`` and act on
each object. That is handled here, once.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Mapping

SUCCESS_MARKER = "_SUCCESS"
MARKER_FORMAT = 1
_CHUNK = 8 << 20


class ArtifactError(Exception):
    """An artifact cannot be used as it is (a data problem: the command exits with status 1)."""


class IncompleteArtifactError(ArtifactError, RuntimeError, FileNotFoundError):
    """A directory artifact has no _SUCCESS marker (its job died or is still running): no complete artifact."""


class ArtifactChecksumError(ArtifactError, ValueError):
    """A file of an artifact differs from what its marker recorded (edited, truncated or half replaced)."""


# ------------------------------------------------------------------------------------------------ files


def is_remote(path: str) -> bool:
    """A URI for Beam's FileSystems (``gs://``, ``s3://`` ...) rather than a local path."""
    return "://" in str(path)


def absolute(path: str) -> str:
    """Local paths made absolute (workers may run in another directory); URIs unchanged."""
    path = str(path)
    return path if is_remote(path) else os.path.abspath(path)


def join(path: str, *names: str) -> str:
    path = str(path)
    if is_remote(path):
        return "/".join([path.rstrip("/"), *[n.strip("/") for n in names]])
    return os.path.join(path, *names)


def _fs():
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def exists(path: str) -> bool:
    """A file (or, locally, a directory) exists. On object stores a bare prefix does not "exist"."""
    return _fs().exists(path) if is_remote(path) else os.path.exists(path)


def open_read(path: str):
    if is_remote(path):
        return _fs().open(path, compression_type="uncompressed")
    return open(path, "rb")


def create(path: str):
    """A binary handle writing ``path`` (parents created locally; an object appears whole on close)."""
    if is_remote(path):
        return _fs().create(path, compression_type="uncompressed")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    return open(path, "wb")


def read_bytes(path: str) -> bytes:
    with open_read(path) as handle:
        return handle.read()


def write_bytes(path: str, data: bytes) -> None:
    with create(path) as handle:
        handle.write(data)


def read_json(path: str):
    return json.loads(read_bytes(path).decode("utf-8"))


def write_json(path: str, value) -> None:
    write_bytes(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def list_files(directory: str) -> list[str]:
    """Every file under ``directory`` (recursive), full paths, sorted; [] when there is none."""
    directory = str(directory).rstrip("/")
    if is_remote(directory):
        result = _fs().match([directory + "/**"])[0]
        return sorted(m.path for m in result.metadata_list)
    if not os.path.isdir(directory):
        return []
    found = []
    for root, _, files in os.walk(directory):
        found.extend(os.path.join(root, name) for name in files)
    return sorted(found)


def relative(path: str, directory: str) -> str:
    return path[len(str(directory).rstrip("/")) + 1 :]


def delete_tree(directory: str) -> None:
    """Remove a directory and everything under it (on object stores: every object under the prefix)."""
    directory = str(directory).rstrip("/")
    if is_remote(directory):
        files = list_files(directory)
        if files:
            _fs().delete(files)
        return
    shutil.rmtree(directory, ignore_errors=True)


def delete_file(path: str) -> None:
    if is_remote(path):
        if _fs().exists(path):
            _fs().delete([path])
    elif os.path.exists(path):
        os.remove(path)


def copy_file(source: str, destination: str) -> None:
    with open_read(source) as src, create(destination) as dst:
        while True:
            chunk = src.read(_CHUNK)
            if not chunk:
                break
            dst.write(chunk)


def size_and_sha256(path: str) -> tuple[int, str]:
    digest, size = hashlib.sha256(), 0
    with open_read(path) as handle:
        while True:
            chunk = handle.read(_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            digest.update(chunk)
    return size, digest.hexdigest()


def staging_dir_for(final_dir: str) -> str:
    """A fresh sibling name ``FINAL.staging-<id>`` (nothing is created)."""
    return f"{absolute(final_dir).rstrip('/')}.staging-{uuid.uuid4().hex[:12]}"


# ------------------------------------------------------------------------------------------------ markers


def _content_files(directory: str) -> list[str]:
    return [f for f in list_files(directory) if relative(f, directory) != SUCCESS_MARKER]


def file_checksums(directory: str, files: Iterable[str] | None = None) -> dict:
    files = _content_files(directory) if files is None else files
    out = {}
    for path in files:
        size, sha = size_and_sha256(path)
        out[relative(path, directory)] = {"size": size, "sha256": sha}
    return out


def write_marker(directory: str, meta: Mapping | None = None) -> dict:
    """Write ``_SUCCESS`` with the checksum of every file under ``directory`` (the last step of a writer)."""
    marker = {"format": MARKER_FORMAT, **dict(meta or {}), "files": file_checksums(directory)}
    write_json(join(directory, SUCCESS_MARKER), marker)
    return marker


def remove_marker(directory: str) -> None:
    """First step of writing in place: the directory stops being complete before any file changes."""
    delete_file(join(directory, SUCCESS_MARKER))


def read_marker(directory: str, what: str = "artifact") -> dict:
    """The parsed marker; ``IncompleteArtifactError`` naming the artifact when there is none.

    An empty marker (made by hand for an input folder, or by an older version) reads as ``{}``: complete,
    nothing to verify.
    """
    path = join(directory, SUCCESS_MARKER)
    if not exists(path):
        raise IncompleteArtifactError(
            f"{what} {directory}: no {SUCCESS_MARKER} marker; the job that writes it did not finish (rerun it)"
        )
    data = read_bytes(path).strip()
    if not data:
        return {}
    try:
        marker = json.loads(data.decode("utf-8"))
    except ValueError as error:
        raise ArtifactChecksumError(f"{what} {directory}: unreadable {SUCCESS_MARKER} marker ({error})") from None
    return marker if isinstance(marker, dict) else {}


def verify(directory: str, what: str = "artifact", *, full: bool = True, require_checksums: bool = False) -> dict:
    """Check the artifact against its marker; returns the marker.

    ``full``: compare SHA-256 of every file (small artifacts); otherwise sizes only (large sharded tables, whose
    readers would otherwise read everything twice). ``require_checksums``: refuse an empty marker.
    """
    directory = str(directory).rstrip("/")
    marker = read_marker(directory, what)
    files = marker.get("files")
    if files is None:
        if require_checksums:
            raise ArtifactChecksumError(
                f"{what} {directory}: its {SUCCESS_MARKER} marker has no checksums; rewrite it with this version"
            )
        return marker
    for rel, want in sorted(files.items()):
        path = join(directory, rel)
        if not exists(path):
            raise ArtifactChecksumError(f"{what} {directory}: {rel} is missing; rebuild the {what}")
        if full:
            size, sha = size_and_sha256(path)
        else:
            size, sha = _size(path), want.get("sha256")
        if size != want.get("size") or sha != want.get("sha256"):
            raise ArtifactChecksumError(
                f"{what} {directory}: {rel} changed after the {what} was written (its checksum differs from "
                f"{SUCCESS_MARKER}); rebuild the {what} instead of editing it"
            )
    return marker


def _size(path: str) -> int:
    if is_remote(path):
        return int(_fs().match([path])[0].metadata_list[0].size_in_bytes)
    return os.path.getsize(path)


# ------------------------------------------------------------------------------------------------ commit


def commit_staged(staging: str, final: str, meta: Mapping | None = None) -> dict:
    """Publish a finished staging directory at ``final`` with its marker; returns the marker.

    Local -> local: the marker goes into the staging directory, which is renamed into place (the previous
    artifact moved aside first and put back if the rename fails). Anything involving an object store: the
    final marker is removed, the old objects deleted, the new files copied, the staging directory deleted, and
    the marker written last, so a reader sees the old artifact, nothing complete, or the new one.
    """
    staging, final = str(staging).rstrip("/"), str(final).rstrip("/")
    if not is_remote(staging) and not is_remote(final):
        os.makedirs(staging, exist_ok=True)
        marker = write_marker(staging, meta)
        _swap_local(staging, final)
        return marker
    files = _content_files(staging)
    checksums = file_checksums(staging, files)
    remove_marker(final)
    delete_tree(final)
    for path in files:
        copy_file(path, join(final, relative(path, staging)))
    delete_tree(staging)
    marker = {"format": MARKER_FORMAT, **dict(meta or {}), "files": checksums}
    write_json(join(final, SUCCESS_MARKER), marker)
    return marker


def _swap_local(staging_dir: str, final_dir: str) -> None:
    final_dir = os.path.abspath(final_dir)
    os.makedirs(os.path.dirname(final_dir), exist_ok=True)
    old = None
    if os.path.exists(final_dir):
        old = f"{final_dir}.old-{uuid.uuid4().hex}"
        os.replace(final_dir, old)
    try:
        os.replace(staging_dir, final_dir)
    except BaseException:
        if old:  # put the previous complete artifact back rather than leave nothing at the final path
            os.replace(old, final_dir)
        raise
    if old:
        shutil.rmtree(old, ignore_errors=True)


def local_staging(final: str) -> str:
    """A local directory to write ``final`` into before ``commit_staged``: a sibling for local finals, a
    temporary directory for object stores (which are then filled by copying)."""
    if is_remote(final):
        import tempfile

        return tempfile.mkdtemp(prefix="cplanet-artifact-")
    path = staging_dir_for(final)
    os.makedirs(path)
    return path


# ------------------------------------------------------------------------------------------- model manifest

MODEL_MANIFEST = "manifest.json"
MODEL_MANIFEST_KEYS = ("model_id", "embedding_dim", "set_names", "n_classes", "sets_checksum")


def read_model_manifest(model_dir: str) -> dict:
    """A model artifact's ``manifest.json`` (``trainer.export``), after checking the model is complete (a killed
    export has no marker) and unchanged since the export (checksums in the marker)."""
    path = join(model_dir, MODEL_MANIFEST)
    if not exists(path):
        raise FileNotFoundError(f"model {model_dir}: no {MODEL_MANIFEST} (is it a trainer export?)")
    verify(model_dir, "model", full=True)
    manifest = read_json(path)
    missing = [k for k in MODEL_MANIFEST_KEYS if k not in manifest]
    if missing:
        raise ValueError(f"model {model_dir}: {MODEL_MANIFEST} lacks the keys {missing}")
    return manifest


# ------------------------------------------------------------------------------------------ geoclass sets

SETS_JSON = "sets.json"
SETS_FORMAT = 1


class MalformedArtifactError(ArtifactError, ValueError):
    """An artifact's metadata file lacks what its readers need (written by another version, or by hand)."""


def sets_json_path(sets: str) -> str:
    """``sets.json`` of a geoclass-sets artifact given its directory or that file itself."""
    sets = str(sets).rstrip("/")
    return sets if sets.rsplit("/", 1)[-1] == SETS_JSON else join(sets, SETS_JSON)


def read_sets_json(sets: str, *, full: bool = True) -> dict:
    """The parsed ``sets.json`` of a geoclass-sets artifact (``partition_gen.geoclass_sets``), the one reader.

    ``sets`` is the artifact directory or its ``sets.json``. The directory's marker is verified first (``full``:
    every file's SHA-256, so an edited ``assignments.parquet`` is refused before anyone labels with it). Checks
    the format and the keys every reader needs: ``checksum`` and a non-empty ``sets`` list whose entries have
    ``name`` and ``n_classes``; ``level``, ``n_nodes`` and ``params`` are there for the readers that use them.
    """
    path = sets_json_path(sets)
    directory = path[: -len(SETS_JSON)].rstrip("/") or "."
    verify(directory, "geoclass sets", full=full)
    try:
        document = read_json(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"geoclass sets {directory}: no {SETS_JSON}") from None
    except ValueError as error:
        raise MalformedArtifactError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(document, dict) or document.get("format") != SETS_FORMAT:
        got = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise MalformedArtifactError(f"{path}: format {got!r}, this code reads format {SETS_FORMAT}")
    missing = [key for key in ("checksum", "sets") if key not in document]
    if missing:
        raise MalformedArtifactError(f"{path} lacks the keys {missing} (has {sorted(document)})")
    if not isinstance(document["sets"], list) or not document["sets"]:
        raise MalformedArtifactError(f"{path}: no sets")
    for entry in document["sets"]:
        if not isinstance(entry, dict) or "name" not in entry or "n_classes" not in entry:
            raise MalformedArtifactError(f"{path}: a set entry without name and n_classes ({entry!r})")
    return document
