"""Process-level plumbing shared by every stage: starting Ray, printing once, atomic writes.

Distributed concerns live here (STYLE.md point 6) so models and pure stage code never read
ranks or environment variables.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Measured on 2-core machines (DESIGN.md): usage stats cost a network timeout offline, and
# Ray Train's default 2 s health-check interval makes every `ray.train.report` wait 2 s.
SUCCESS_FILE = "_SUCCESS.json"  # written last into a finished stage folder: its summary

RAY_ENV_DEFAULTS = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    "RAY_DEDUP_LOGS": "1",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def set_ray_env_defaults() -> None:
    """Apply RAY_ENV_DEFAULTS where the user has not set the variable already."""
    for key, value in RAY_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to a cluster (``address`` or $RAY_ADDRESS) or start a local Ray head.

    Idempotent: an already-initialised Ray (a test session's shared instance, or a job
    submitted with ``ray job submit``) is reused as it is.
    """
    import ray

    set_ray_env_defaults()
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    # Workers inherit these so a local head behaves like the driver (offline, fast reports).
    runtime_env = {"env_vars": {k: os.environ[k] for k in RAY_ENV_DEFAULTS}}
    if address:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
    else:
        # Twice the cores as logical CPUs: compute-bound actors set their own torch threads,
        # and the light read/shuffle tasks beside them then always find a free slot (a pool
        # holding every logical CPU deadlocks a Ray Data pipeline, DESIGN.md).
        ray.init(
            num_cpus=num_cpus or 2 * (os.cpu_count() or 1),
            include_dashboard=False,
            runtime_env=runtime_env,
            log_to_driver=True,
        )


def print0(*args: Any, **kwargs: Any) -> None:
    """Print from the driver or from rank 0 of a Ray Train group only (EDM's print0)."""
    try:
        import ray.train

        context = ray.train.get_context()
        if context.get_world_rank() != 0:
            return
    except Exception:  # noqa: BLE001 - outside a Ray Train worker there is no context
        pass
    print(*args, **kwargs)
    sys.stdout.flush()


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch on ``n`` threads inside the block, then restore the previous number.

    More threads than free cores make OpenMP spin-wait: with the actors busy, the 20 tiny
    base-GAN steps in the collect driver took 76 s on torch's default 2 threads.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def torch_seed(seed: int) -> Iterator[None]:
    """Run the block with torch's global RNG seeded by ``seed``, then restore the caller's.

    For randomness that takes no ``torch.Generator`` (module init, dropout): the block is
    deterministic per seed and the caller's draws are unchanged. CUDA generators are forked
    and seeded too once CUDA is initialised; before that, they are left alone rather than
    starting CUDA in a CPU-only process.
    """
    import torch

    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(seed)
        if devices:
            torch.cuda.manual_seed_all(seed)
        yield


@contextmanager
def scoped_data_context(**changes: Any) -> Iterator[Any]:
    """Set fields of Ray Data's current ``DataContext`` inside the block, then restore them.

    The context is a process-wide singleton that every later dataset of the process copies
    when it is created, so a stage that changed it for good would change every other stage's
    datasets (and a test's next test). Datasets created inside the block keep the changes
    while they run. Yields the context. An unknown field is an ``AttributeError``, not a
    silently added attribute.
    """
    from ray.data import DataContext

    context = DataContext.get_current()
    unknown = sorted(name for name in changes if not hasattr(context, name))
    if unknown:
        raise AttributeError(f"ray.data.DataContext has no field(s) {unknown}")
    before = {name: getattr(context, name) for name in changes}
    for name, value in changes.items():
        setattr(context, name, value)
    try:
        yield context
    finally:
        for name, value in before.items():
            setattr(context, name, value)


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling folder that becomes ``final`` only if the block succeeds.

    A crash or an exception leaves ``final`` untouched (absent, or as it was before), so a
    re-run never mistakes half-written output for finished output.
    """
    final = Path(final)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling path that replaces ``path`` atomically if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(Path(path), (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())
