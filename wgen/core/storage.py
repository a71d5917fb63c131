"""Where a run folder lives: a local path (NFS included) or a filesystem URI (``s3://``, ...).

``--out`` is resolved once, by the driver, into a `RunStorage`:

- **A path** (relative, ``~``, or ``file://``) becomes an absolute path: every actor, task and
  Ray Train worker gets the same folder, never one relative to its own working directory.
  Stages read and write it directly; on a cluster it must be storage every node shares.
- **A URI** is opened with ``pyarrow.fs.FileSystem.from_uri`` (S3, GCS, HDFS, ...), or through
  fsspec for a scheme pyarrow does not know. Before any expensive work the driver writes and
  deletes a probe object there: an unknown scheme, a missing bucket, or credentials the store
  refuses are one-line `OutputError`s. Stages then work on a *staging copy* of the run folder
  on the driver's host (``$WGEN_STAGING_DIR`` or the temp folder, then
  ``wgen-staging/<hash of the URI>``): `pull` brings the stage folders a stage reads, the
  stage runs on local paths, and `push` mirrors the folders it wrote back. What runs on other
  nodes goes to the URI itself: Ray Data reads and writes the pairs' Parquet there, Ray Train
  keeps its checkpoints there (``storage_path`` + ``storage_filesystem``), and a collection
  actor pushes each concept's files as soon as it finishes the concept (the base GAN and the
  manifest it needs, it pulls). So a collection across nodes without a shared disk ends with
  every finished concept in the bucket, and a re-run against the same URI resumes from it.

S3 credentials and endpoint come from what pyarrow reads: the ``AWS_*`` environment
variables (and ``~/.aws``, instance roles) on *every* node, or the URI itself
(``s3://KEY:SECRET@bucket/run?endpoint_override=host:port&scheme=http&region=...``).
Printed URIs hide the secret.

What is guaranteed for a URI, and what is not:

- A stage folder holds ``_SUCCESS.json`` at the URI only once all of it is there: a push
  deletes the old one first and uploads the new one last, so a reader that sees it sees a
  complete folder (object stores are read-after-write consistent; S3 since 2020).
- A concept's status file is uploaded after its weight file, so a concept that looks
  finished in the bucket has its weights there.
- The run folder's lock (``_LOCK.json``) lives in the staging copy: it keeps two commands on
  *one host* apart, not two hosts. Object stores have no atomic create-if-absent that pyarrow
  exposes; run one driver per URI at a time.
- A push mirrors the stage's folder: files the stage deleted locally (``--force``, a damaged
  concept) are deleted at the URI too. Anything written at the URI by another writer during
  the stage, in the folders this stage owns, may be overwritten or deleted.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from wgen.core.errors import OutputError
from wgen.core.runtime import SUCCESS_FILE

STAGING_ENV = "WGEN_STAGING_DIR"  # where URIs' staging copies go (default: the temp folder)
SYNCED_FILE = "_SYNCED.json"  # in the staging copy: what was last pulled or pushed, per file
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")


def is_uri(out: str | Path) -> bool:
    """``s3://...``, ``gs://...`` and the like; a plain path or ``file://`` is not one."""
    match = _URI.match(str(out))
    return bool(match) and match.group(1).lower() != "file"


def redacted(uri: str) -> str:
    """The URI with its secret key (``KEY:SECRET@``) hidden, for messages and logs."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@functools.lru_cache(maxsize=8)
def open_filesystem(uri: str) -> tuple[Any, str]:
    """``(pyarrow FileSystem, path inside it)`` for a URI; an unknown scheme is an
    `OutputError`. Cached per process: the S3 client is built once."""
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except ValueError as err:  # pyarrow.ArrowInvalid: a scheme pyarrow has no filesystem for
        pyarrow_error = str(err)
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as err:
        raise OutputError(
            f"--out {redacted(uri)}: no filesystem for this URI ({pyarrow_error}; fsspec: {err}); "
            "give a local folder or an s3://, gs:// or hdfs:// URI"
        ) from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def staging_folder(uri: str) -> Path:
    """The staging copy of a URI's run folder on this host (the same path on every host)."""
    root = Path(os.environ.get(STAGING_ENV) or tempfile.gettempdir()) / "wgen-staging"
    return root / hashlib.sha256(uri.encode()).hexdigest()[:16]


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


@dataclasses.dataclass(frozen=True)
class RunStorage:
    """A resolved ``--out``: ``local`` is the folder stages read and write; ``uri`` is where
    the run folder really lives when it is not that folder (None for a path)."""

    local: Path
    uri: str | None = None

    # -- resolving ------------------------------------------------------------------------

    @classmethod
    def resolve(cls, out: str | Path, check: bool = True) -> RunStorage:
        """What the driver does once with ``--out``. ``check``: for a URI, write and delete
        a probe object now, so a bad URI fails before Ray starts."""
        text = str(out)
        if not is_uri(text):
            if text.lower().startswith("file://"):
                text = urlsplit(text).path
            return cls(Path(text).expanduser().resolve())
        storage = cls(staging_folder(text), text)
        if check:
            storage.check_writable()
        return storage

    @property
    def remote(self) -> bool:
        return self.uri is not None

    def __str__(self) -> str:
        return redacted(self.uri) if self.uri else str(self.local)

    def filesystem(self) -> tuple[Any, str]:
        """``(FileSystem, root path)`` of the URI."""
        assert self.uri is not None, "a local run folder has no remote filesystem"
        fs, root = open_filesystem(self.uri)
        return fs, root.rstrip("/")

    def check_writable(self) -> None:
        """Write and delete a probe object at the URI; any failure is one `OutputError`."""
        import pyarrow.fs as pafs

        fs, root = self.filesystem()
        where = f"--out {self}"
        try:
            if fs.type_name == "s3":  # a missing bucket says so, rather than "access denied"
                bucket = root.split("/", 1)[0]
                if fs.get_file_info(bucket).type == pafs.FileType.NotFound:
                    raise OutputError(
                        f"{where}: bucket {bucket!r} does not exist at this endpoint (or these "
                        "credentials cannot see it); create it, or fix the URI"
                    )
            probe = f"{root}/.wgen-write-test-{uuid.uuid4().hex[:8]}"
            with fs.open_output_stream(probe) as stream:
                stream.write(b"")
            fs.delete_file(probe)
        except OSError as err:
            raise OutputError(
                f"{where} cannot be written ({_first_line(err)}); check the endpoint, the "
                "credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or KEY:SECRET@ in the URI) "
                "and the permissions"
            ) from None

    # -- where Ray reads and writes -------------------------------------------------------

    def target(self, name: str) -> tuple[str, Any]:
        """``(path, filesystem)`` of ``name`` in the run folder, for Ray Data's
        ``read_parquet``/``write_parquet`` and Ray Train's ``storage_path``/
        ``storage_filesystem``: the URI's when remote, the local folder's (None) otherwise."""
        if not self.remote:
            return str(self.local / name), None
        fs, root = self.filesystem()
        return f"{root}/{name}", fs

    # -- synchronising the staging copy ---------------------------------------------------

    def pull(self, names: Iterable[str], merge: bool = False, record: bool = True) -> None:
        """Make the staging copy of each named file or folder equal to the URI's (a name
        absent there is removed here). ``merge``: only add and update files, remove none.
        Files unchanged on both sides since the last pull or push are not copied again.
        ``record=False`` (a worker, beside the driver): leave the driver's record alone."""
        if not self.remote:
            return
        fs, root = self.filesystem()
        synced = self._synced()
        for name in names:
            remote = self._remote_files(fs, f"{root}/{name}")
            local_root = self.local / name
            for rel, info in remote.items():
                target = local_root / rel if rel else local_root
                key = f"{name}/{rel}" if rel else name
                if _unchanged(synced.get(key), target, info):
                    continue
                _download(fs, info.path, target)
                synced[key] = _stamp(target, info)
            if not merge:
                for rel in set(_local_files(local_root)) - set(remote):
                    (local_root / rel if rel else local_root).unlink()
                    synced.pop(f"{name}/{rel}" if rel else name, None)
                if not remote and local_root.is_dir():
                    shutil.rmtree(local_root)
        if record:
            self._save_synced(synced)

    def push(self, names: Iterable[str]) -> None:
        """Mirror each named file or folder of the staging copy to the URI, in order: files
        the stage removed are removed there too; a folder's ``_SUCCESS.json`` is deleted
        first and uploaded last, so it marks a complete folder at the URI as it does here."""
        if not self.remote:
            return
        fs, root = self.filesystem()
        synced = self._synced()
        for name in names:
            local_root = self.local / name
            remote_root = f"{root}/{name}"
            local = _local_files(local_root)
            remote = self._remote_files(fs, remote_root)
            if SUCCESS_FILE in remote:
                fs.delete_file(remote[SUCCESS_FILE].path)
            for rel in sorted(local, key=lambda r: r == SUCCESS_FILE):  # _SUCCESS.json last
                key = f"{name}/{rel}" if rel else name
                if rel != SUCCESS_FILE and _unchanged(synced.get(key), local[rel], remote.get(rel)):
                    continue
                path = f"{remote_root}/{rel}" if rel else remote_root
                _upload(fs, local[rel], path)
                synced[key] = _stamp(local[rel], fs.get_file_info(path))
            for rel in set(remote) - set(local) - {SUCCESS_FILE}:
                fs.delete_file(remote[rel].path)
                synced.pop(f"{name}/{rel}" if rel else name, None)
        self._save_synced(synced)

    def upload(self, paths: Iterable[Path]) -> None:
        """Upload files of the staging copy as they are, in order (a worker's finished
        concept: weights first, status last). Nothing is deleted or recorded."""
        if not self.remote:
            return
        fs, root = self.filesystem()
        for path in paths:
            _upload(fs, Path(path), f"{root}/{Path(path).relative_to(self.local).as_posix()}")

    def fetch_missing(self, names: Iterable[str]) -> None:
        """On a worker's host: copy each named file or folder from the URI if the staging
        copy lacks it (the driver's host already has it). Safe with several workers at once:
        each copies aside and renames into place; the first one there wins."""
        if not self.remote:
            return
        fs, root = self.filesystem()
        for name in names:
            final = self.local / name
            if final.exists():
                continue
            tmp = final.with_name(f".{final.name}.fetch-{uuid.uuid4().hex[:8]}")
            for rel, info in self._remote_files(fs, f"{root}/{name}").items():
                _download(fs, info.path, tmp / rel if rel else tmp)
            if not tmp.exists():
                continue  # not at the URI either
            try:
                os.rename(tmp, final)
            except OSError:  # another worker on this host was first
                shutil.rmtree(tmp, ignore_errors=True)
                Path(tmp).unlink(missing_ok=True)

    def remove(self, name: str) -> None:
        """Delete ``name`` (a file or a folder) at the URI, if there."""
        if not self.remote:
            return
        import pyarrow.fs as pafs

        fs, root = self.filesystem()
        info = fs.get_file_info(f"{root}/{name}")
        if info.type == pafs.FileType.Directory:
            fs.delete_dir(info.path)
        elif info.type == pafs.FileType.File:
            fs.delete_file(info.path)

    # -- internals --------------------------------------------------------------------------

    @staticmethod
    def _remote_files(fs: Any, path: str) -> dict[str, Any]:
        """``{relative path: FileInfo}`` of the files under ``path`` ("" if it is a file)."""
        import pyarrow.fs as pafs

        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            return {"": info}
        if info.type != pafs.FileType.Directory:
            return {}
        found = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        return {
            i.path[len(path) + 1 :]: i
            for i in found
            if i.type == pafs.FileType.File and not i.base_name.startswith(".wgen-write-test")
        }

    def _synced(self) -> dict[str, list[int]]:
        try:
            return json.loads((self.local / SYNCED_FILE).read_text())
        except (OSError, ValueError):
            return {}

    def _save_synced(self, synced: dict[str, list[int]]) -> None:
        self.local.mkdir(parents=True, exist_ok=True)
        tmp = self.local / f".{SYNCED_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(synced, sort_keys=True))
        os.replace(tmp, self.local / SYNCED_FILE)


def _local_files(root: Path) -> dict[str, Path]:
    if root.is_file():
        return {"": root}
    if not root.is_dir():
        return {}
    return {
        p.relative_to(root).as_posix(): p
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def _stamp(local: Path, remote: Any) -> list[int]:
    """What says a file is unchanged on both sides: local size and mtime, remote size and
    mtime (an object store's mtime changes with every upload)."""
    stat = local.stat()
    return [stat.st_size, stat.st_mtime_ns, remote.size, remote.mtime_ns or 0]


def _unchanged(stamp: list[int] | None, local: Path, remote: Any) -> bool:
    if stamp is None or remote is None or not local.is_file():
        return False
    return stamp == _stamp(local, remote)


def _download(fs: Any, path: str, target: Path) -> None:
    """Copy one object to ``target``, through a temporary name: a reader never sees half."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part-{uuid.uuid4().hex[:8]}")
    with fs.open_input_stream(path) as stream, open(tmp, "wb") as file:
        shutil.copyfileobj(stream, file, 1 << 20)
    os.replace(tmp, target)


def _upload(fs: Any, source: Path, path: str) -> None:
    with fs.open_output_stream(path) as stream, open(source, "rb") as file:
        shutil.copyfileobj(file, stream, 1 << 20)
