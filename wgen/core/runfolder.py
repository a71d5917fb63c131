"""A run folder remembers how each stage was made, and has one writer at a time.

Every finished stage folder holds ``_SUCCESS.json`` with a ``record``: the preset, the
config fields that shaped the stage's output, and their fingerprint. A later command on the
same run folder compares its own fields with the record and refuses, naming the fields that
differ, instead of mixing two runs (``--force`` redoes the stage). A stage's fields include
those of the stages it reads, so a generator cannot be trained with settings other than the
ones its weights were collected with.

Fields that only say how the work is spread (actors, CPUs, batch sizes of editing) and the
budgets a re-run may raise (``collect.max_steps`` with ``--retry``, ``collect.max_concepts``,
``train.epochs``) are not part of the fingerprint: changing them continues the same run.

``<out>/_LOCK.json`` holds the pid and host of the one process writing the run folder; a
second writer is refused, and a lock whose process is gone (same host) is taken over.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from wgen.core.errors import InputFileError, OutputError, RunFolderError, RunFolderLocked
from wgen.core.runtime import SUCCESS_FILE, read_json, write_json
from wgen.core.stages import STAGES

LOCK_FILE = "_LOCK.json"
STARTED_FILE = "_STARTED.json"  # a stage folder that resumes (weights/) records itself at start

# Config fields that do not change a stage's output (how the work is spread), or budgets that a
# re-run may raise to continue the same run.
NOT_FINGERPRINTED = {
    "data": {
        "editor_actors",
        "editor_cpus",
        "editor_gpus",
        "editor_batch_size",
        "editor_max_batch",
        "rows_per_shard",
    },
    "gan": {"threads"},
    "lora": set(),
    "collect": {
        "max_concepts",
        "max_steps",
        "actors",
        "cpus_per_actor",
        "gpus_per_actor",
        "max_retries",
        "min_converged",
    },
    "denoiser": set(),
    "train": {
        "workers",
        "use_gpu",
        "cpus_per_worker",
        "worker_resources",
        "epochs",
        "quality_every",
        "max_failures",
        "threads",
    },
}


# Fields added after runs and searches were recorded, with the value that means "off" (the
# behaviour before they existed). Digests that name a run or a search leave such a field out
# while it is off, so an existing run folder keeps resuming after an upgrade of wgen.
LATER_FIELDS_OFF: dict[tuple[str, str], Any] = {
    ("collect", "restore_best"): False,
    ("collect", "gain_fraction"): 0.1,
    ("denoiser", "block_readout"): 0,
    ("train", "lr_schedule"): "constant",
    ("train", "max_train_concepts"): None,
    ("train", "export"): "last",
}


def without_later_fields_off(values: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``values`` ({section: {key: value}}, as `Config.to_dict`) without the
    `LATER_FIELDS_OFF` entries that are at their off value."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    for (section, key), off in LATER_FIELDS_OFF.items():
        if isinstance(out.get(section), dict) and out[section].get(key, off) == off:
            out[section].pop(key, None)
    return out


def stage_fields(config: Any, stage: str) -> dict[str, Any]:
    """The ``section.key: value`` fields that shape ``stage``'s output (its inputs' too)."""
    fields = {}
    for section in STAGES[stage].sections:
        values = dataclasses.asdict(getattr(config, section))
        for key, value in values.items():
            if key not in NOT_FINGERPRINTED[section]:
                fields[f"{section}.{key}"] = value
    return fields


def fingerprint(fields: dict[str, Any], length: int = 12) -> str:
    """The one digest of wgen's records and names (run-folder and bench records, the
    generator's run name, a search, a p-diff fit): sha256 of the JSON with sorted keys, its
    first ``length`` hex digits. Names made before this function keep theirs: the generator's
    run name and p-diff's fit digest were 10 digits and stay so."""
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:length]


def recorded_fields(record: dict[str, Any], stage: str) -> dict[str, Any]:
    """A record's fields, with each field added to wgen after the record was written
    (`LATER_FIELDS_OFF`) at the value that means the behaviour of that time."""
    fields = dict(record.get("fields", {}))
    for (section, key), off in LATER_FIELDS_OFF.items():
        if section in STAGES[stage].sections:
            fields.setdefault(f"{section}.{key}", off)
    return fields


def record_matches(record: dict[str, Any], config: Any, stage: str) -> bool:
    """Whether ``stage``'s record was made with ``config``'s fields (an older record counts
    the fields it predates as off)."""
    current = stage_fields(config, stage)
    if record["fingerprint"] == fingerprint(current):
        return True
    return "fields" in record and recorded_fields(record, stage) == current


def stage_record(config: Any, stage: str) -> dict[str, Any]:
    """What a finished stage writes into its ``_SUCCESS.json`` under ``record``."""
    fields = stage_fields(config, stage)
    return {
        "stage": stage,
        "preset": config.preset,
        "fingerprint": fingerprint(fields),
        "fields": fields,
    }


def stage_folder(out: Path, stage: str) -> Path:
    return Path(out) / STAGES[stage].folder


def read_success(out: Path, stage: str) -> dict[str, Any] | None:
    """The stage's ``_SUCCESS.json`` (None while unfinished); unreadable is an input error."""
    path = stage_folder(out, stage) / SUCCESS_FILE
    if not path.exists():
        return None
    try:
        value = read_json(path)
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        return value
    except (OSError, ValueError) as err:
        raise InputFileError(
            path, f"unreadable ({err})", f"redo the stage with `wgen {stage} --force`"
        ) from None


def read_record(out: Path, stage: str) -> dict[str, Any] | None:
    """The record of a finished stage, else of a started one (``_STARTED.json``), else None
    (an unfinished stage, or a run folder made before records existed)."""
    success = read_success(out, stage)
    if success is not None:
        return success.get("record")
    started = stage_folder(out, stage) / STARTED_FILE
    return read_json(started) if started.exists() else None


def write_started(out: Path, stage: str, config: Any) -> None:
    write_json(stage_folder(out, stage) / STARTED_FILE, stage_record(config, stage))


def command_args(config: Any, out: Path, overrides: Sequence[str] = ()) -> str:
    """``--preset ... --set ... --out ...``: the settings the user is using now."""
    sets = "".join(f" --set {item}" for item in overrides)
    return f"--preset {config.preset}{sets} --out {out}"


def command_hint(stage: str, config: Any, out: Path, overrides: Sequence[str] = ()) -> str:
    """The command that makes ``stage`` with the settings the user is using now."""
    return f"`wgen {stage} {command_args(config, out, overrides)}`"


def differences(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    keys = sorted(set(recorded) | set(current))
    return [
        f"{key}: {recorded.get(key, '(absent)')!r} → {current.get(key, '(absent)')!r}"
        for key in keys
        if recorded.get(key) != current.get(key)
    ]


def mismatch_message(
    where: Path, record: dict[str, Any], config: Any, stage: str, remedy: str
) -> str:
    diffs = differences(recorded_fields(record, stage), stage_fields(config, stage))
    shown = "; ".join(diffs[:4]) + (f"; and {len(diffs) - 4} more" if len(diffs) > 4 else "")
    preset = record.get("preset")
    if preset != config.preset:
        head = (
            f"{where} was made with --preset {preset}, this command uses --preset {config.preset}"
        )
    else:
        head = f"{where} was made with other settings"
    return f"{head} ({len(diffs)} field(s) differ: {shown}); {remedy}"


def check_input(out: Path, stage: str, config: Any, overrides: Sequence[str] = ()) -> None:
    """Refuse to run ``stage`` on a missing, unfinished or differently made input stage."""
    needed = STAGES[stage].input
    if needed is None:
        return
    folder = stage_folder(out, needed)
    success = read_success(out, needed)
    if success is None:
        state = "unfinished" if folder.exists() else "missing"
        raise RunFolderError(
            f"{stage} needs {folder}, which is {state}; make it with "
            f"{command_hint(needed, config, out, overrides)}"
        )
    record = success.get("record")
    if record is not None and not record_matches(record, config, needed):
        raise RunFolderError(
            mismatch_message(
                folder,
                record,
                config,
                needed,
                f"use --preset {record.get('preset')} (and the same --set values) to continue "
                f"this run, or redo it with `wgen {needed} --force`",
            )
        )


def check_own(out: Path, stage: str, config: Any, force: bool) -> dict[str, Any] | None:
    """Refuse to add to a stage folder made with other settings (unless ``force``).

    Returns the finished stage's ``_SUCCESS.json`` when it matches the config (a candidate
    for skipping), else None.
    """
    folder = stage_folder(out, stage)
    if force:
        return None
    record = read_record(out, stage)
    if record is None:
        return read_success(out, stage)
    if not record_matches(record, config, stage):
        raise RunFolderError(
            mismatch_message(
                folder,
                record,
                config,
                stage,
                f"use --preset {record.get('preset')} (and the same --set values) to continue, "
                f"or --force to redo {stage} (replaces {folder})",
            )
        )
    return read_success(out, stage)


# ---------------------------------------------------------------------------------------
# Output locations and the lock
# ---------------------------------------------------------------------------------------


def check_out_folder(out: Path, what: str = "--out", create: bool = True) -> Path:
    """Create ``out`` if needed (``create``); a file in the way or a folder that cannot be
    written is an `OutputError` naming the path (instead of a traceback from the first write).
    Without ``create`` only the nearest existing folder above ``out`` is checked."""
    out = Path(out)
    for parent in [out, *out.parents]:
        if parent.exists() and not parent.is_dir():
            where = "is a file" if parent == out else f"is under {parent}, which is a file"
            raise OutputError(f"{what} {out} {where}; give a folder path")
    if not create:
        existing = next(p for p in [out, *out.parents] if p.exists())
        if not os.access(existing, os.W_OK | os.X_OK):
            raise OutputError(f"{what} {out} cannot be written ({existing} is read-only)")
        return out
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".wgen-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OutputError(
            f"{what} {out} cannot be written ({err.strerror or err}); give a writable folder"
        ) from None
    return out


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@contextmanager
def run_lock(out: Path, command: str = "") -> Iterator[Path]:
    """Hold ``<out>/_LOCK.json`` for the block: one writer per run folder.

    A lock left by a process that no longer runs on this host is stale: it is taken over with
    a warning. A lock held by a live process, or by another host, is a `RunFolderLocked`.
    """
    path = Path(out) / LOCK_FILE
    host = socket.gethostname()
    holder = {
        "pid": os.getpid(),
        "host": host,
        "command": command or " ".join(sys.argv),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    # The lock appears with its content at once (written aside, then hard-linked into place),
    # so a reader never mistakes a lock being written for an empty, stale one.
    tmp = path.with_name(f".{LOCK_FILE}.{os.getpid()}")
    tmp.write_text(json.dumps(holder))
    try:
        for _ in range(2):
            try:
                os.link(tmp, path)
                break
            except FileExistsError:
                other = _read_lock(path)
                stale = other is None or (
                    other.get("host") == host and not pid_alive(int(other.get("pid", -1)))
                )
                if not stale:
                    raise RunFolderLocked(
                        f"{out} is in use by pid {other['pid']} on {other['host']} "
                        f"({other.get('command', '?')}, since {other.get('since', '?')}); wait "
                        f"for it to finish, or if that process is gone, delete {path}"
                    ) from None
                print(
                    f"warning: taking over the stale lock {path} (its process "
                    f"{other and other.get('pid')} on {other and other.get('host')} is gone)",
                    file=sys.stderr,
                )
                path.unlink(missing_ok=True)
        else:  # pragma: no cover - two processes racing for one stale lock
            raise RunFolderLocked(f"{out}: could not take the lock {path}; try again")
    finally:
        tmp.unlink(missing_ok=True)
    try:
        yield path
    finally:
        if (_read_lock(path) or {}).get("pid") == os.getpid():
            path.unlink(missing_ok=True)


def _read_lock(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
        return value if isinstance(value, dict) and "pid" in value else None
    except (OSError, ValueError):
        return None
