"""Stage records that prove their files, and the check every reader makes of them.

A finished stage lists, in its ``_SUCCESS.json`` under ``files``, every file it wrote (its
path in the run folder, size and sha256). A stage checks the files it reads against those
lists before Ray starts: present, same size, readable in their format (a Parquet footer, a
safetensors header, JSON and JSONL that parse) and the same sha256. A record written before
the lists existed gets what can be checked without one: the format of each file the stage
writes. Any failure is one `InputFileError` naming the file and the command that remakes it,
worded the same by every reader (`damaged`).

sha256 and not a cheaper digest: with the CPU's SHA instructions it hashes about 1 GB/s on
this 2-core machine (zlib's crc32 1.9 GB/s, blake2b 0.8 GB/s), so the bench preset's pairs
(26 MB) cost about 30 ms; a check that a stage's inputs are the bytes it was given is worth
a digest that no accident can match.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from wgen.core.errors import InputFileError
from wgen.core.runfolder import read_success, stage_folder
from wgen.core.runtime import SUCCESS_FILE
from wgen.core.stages import STAGES

DIGEST = "sha256"
# Files that `wgen collect --retry` remakes alone (a damaged concept is trained again);
# everything else a stage wrote is remade with `--force` on that stage.
RETRAINED = "weights/*.parquet"


def file_entry(path: Path) -> dict[str, Any]:
    """What a record lists for one file: its size in bytes and its digest."""
    digest = hashlib.new(DIGEST)
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return {"bytes": path.stat().st_size, DIGEST: digest.hexdigest()}


def stage_files(out: Path, stage: str, folder: Path | None = None) -> dict[str, dict[str, Any]]:
    """``{path in the run folder: entry}`` for every file ``stage`` wrote into ``out``.
    ``folder``: where the stage's folder is while not yet in place (pairs are written to a
    temporary folder that is renamed when complete)."""
    out = Path(out)
    entries = {}
    for rel, path in _matching(out, stage, folder).items():
        entries[rel] = file_entry(path)
    return entries


def verify_inputs(out: Path, stage: str, args: str) -> None:
    """Check every finished stage that ``stage`` reads (`Stage.reads`) against its record;
    one without a record (never run) is not checked.
    ``args``: the command's own ``--preset ... --set ... --out ...``, for the remedy."""
    for needed in STAGES[stage].reads:
        verify_stage(out, needed, args)


def verify_stage(out: Path, stage: str, args: str) -> None:
    """Check the files a finished ``stage`` wrote against its ``_SUCCESS.json``; nothing to
    check while it is unfinished."""
    out = Path(out)
    success = read_success(out, stage)
    if success is None:
        return
    record = stage_folder(out, stage) / SUCCESS_FILE
    listed = success.get("files")
    if listed is None:  # a record from before the lists: check what exists, by its format
        listed = {rel: None for rel in _matching(out, stage)}
    for rel, entry in sorted(listed.items()):
        remake = remake_command(stage, rel, args)
        path = out / rel
        if not path.is_file():
            raise InputFileError(path, f"missing (listed in {record})", remake)
        if entry is not None and path.stat().st_size != entry["bytes"]:
            raise damaged(
                path,
                f"{path.stat().st_size} bytes where {record} lists {entry['bytes']} (truncated "
                "or changed since it was written)",
                remake,
            )
        check_format(path, remake)
        if entry is not None and file_entry(path)[DIGEST] != entry.get(DIGEST):
            raise damaged(
                path, f"its {DIGEST} differs from the one {record} lists (changed since)", remake
            )


def remake_command(stage: str, rel: str, args: str) -> str:
    flag = "--retry" if Path(rel).match(RETRAINED) else "--force"
    return f"remake it with `wgen {stage} {args} {flag}`"


def check_format(path: Path, remake: str) -> None:
    """Open ``path`` as its suffix says, as far as telling a whole file from a damaged one
    takes: a Parquet footer, a safetensors header (it checks that the file covers every
    tensor), JSON, every line of JSONL, YAML. Other files are not looked into."""
    import pyarrow.parquet as pq
    import yaml
    from safetensors import safe_open

    try:
        if path.suffix == ".parquet":
            pq.read_metadata(path)
        elif path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt"):
                pass
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            for line in path.read_text().splitlines():
                if line.strip():
                    json.loads(line)
        elif path.suffix in (".yaml", ".yml"):
            yaml.safe_load(path.read_text())
    except Exception as err:  # noqa: BLE001 - any failure to read this file is the file's
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise damaged(path, f"cannot be read as {path.suffix[1:]} ({reason})", remake) from None


def damaged(path: Path, problem: str, remake: str) -> InputFileError:
    """The one wording of a damaged or missing input file, in every reader:
    ``<path>: damaged: <problem>; <remake>``."""
    return InputFileError(path, f"damaged: {problem}", remake)


def _matching(out: Path, stage: str, folder: Path | None = None) -> dict[str, Path]:
    """``{path in the run folder: where it is now}`` for the files of ``stage`` in ``out``."""
    found = {}
    own = STAGES[stage].folder
    for pattern in STAGES[stage].files:
        root, rest = out, pattern
        if folder is not None and pattern.startswith(f"{own}/"):
            root, rest = folder, pattern[len(own) + 1 :]
        for path in sorted(root.glob(rest)):
            name = path.relative_to(root).as_posix()
            rel = name if root == out else f"{own}/{name}"
            if path.is_file() and path.name != SUCCESS_FILE and not path.name.startswith("."):
                found[rel] = path
    return found
