"""Process-level plumbing shared by every stage: starting Ray, printing once, atomic writes.

Distributed concerns (docs/architecture.md, rule 6) live here so models and pure stage code
never read ranks or environment variables.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Measured on 2-core machines (docs/architecture.md): usage stats cost a network timeout
# offline, and Ray Train's default 2 s health-check interval makes every `ray.train.report` wait 2 s.
SUCCESS_FILE = "_SUCCESS.json"  # written last into a finished stage folder: its summary

RAY_ENV_DEFAULTS = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    "RAY_DEDUP_LOGS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
# Only for a local head, and only where the user has not set it: everything a local run loads
# is on this disk. On a cluster a hub-named text encoder may need the hub, so it is left alone.
LOCAL_ENV_DEFAULTS = {"HF_HUB_OFFLINE": "1"}
# Ray binds its gRPC servers, agents and metrics endpoints to 127.0.0.1 only when the node's
# address is the loopback one, and resolves an explicit `_node_ip_address="127.0.0.1"` to the
# machine's external address. This switch (Ray's own, for single-machine macOS/Windows use)
# makes it pick the loopback address: measured with `ss -ltnp`, every port then listens on
# 127.0.0.1 instead of 0.0.0.0.
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
VERBOSE_ENV = "WGEN_VERBOSE"  # "1": Ray's own INFO logs and progress bars (wgen --verbose)
QUIET_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "filelock", "urllib3")
# Loggers named by their file's path (logging.getLogger(__file__)), outside the "ray" tree:
# Ray Train's worker context logs "Reporting training result N: TrainingReport(...)" at INFO
# on the worker's root logger, once per report.
PATH_NAMED_LOGGERS = ("train/v2/_internal/execution/context.py",)  # under ray's package folder
PLACEMENT_GROUP_CLEANER_LOGGER = (
    "ray.train.v2._internal.execution.controller.placement_group_cleaner"
)
# Warnings about what wgen does on purpose: Ray Data's bars are off (wgen prints a line per
# event), and a local head has no dashboard, so the cleaner's State API query always fails.
DELIBERATE_WARNINGS = ("ray.data._internal.progress", PLACEMENT_GROUP_CLEANER_LOGGER)
# Without --verbose: no hub/transformers progress bars ("Loading weights: 100%" on every
# `wgen generate`) and only their errors; set where the user has not chosen otherwise.
# RAY_DATA_LOG_LEVEL: Ray Data re-configures its logger (level DEBUG, console INFO) for every
# dataset in every worker, undoing a level set once; this variable is the level it then uses.
QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "RAY_DATA_LOG_LEVEL": "WARNING",
    # Tune's new output engine prints its experiment box, "View detailed results here" and a
    # TensorBoard hint even at verbose=0 (its experiment_started ignores the verbosity,
    # Ray 2.5x); the legacy engine honours verbose=0. wgen prints a line per trial itself.
    "RAY_AIR_NEW_OUTPUT": "0",
}


def set_ray_env_defaults(local: bool = False) -> None:
    """Apply RAY_ENV_DEFAULTS (and LOCAL_ENV_DEFAULTS for a local head) where unset."""
    for key, value in {**RAY_ENV_DEFAULTS, **(LOCAL_ENV_DEFAULTS if local else {})}.items():
        os.environ.setdefault(key, value)


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet_logging() -> None:
    """Ray's INFO lines off unless ``--verbose``: wgen prints one line per event itself."""
    import importlib.util
    import warnings

    if not verbose():
        for key, value in QUIET_ENV.items():
            os.environ.setdefault(key, value)

    level = logging.INFO if verbose() else logging.WARNING
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(level)
    if not verbose():
        # Ray's deprecation warnings about calls inside Ray itself (Ray Train's DatasetManager
        # passes `ExecutionOptions.exclude_resources`): nothing a wgen user can change.
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray\.")
    ray_folder = os.path.dirname(importlib.util.find_spec("ray").origin)  # without importing
    for relative in PATH_NAMED_LOGGERS:
        logging.getLogger(os.path.join(ray_folder, relative)).setLevel(level)
    for name in DELIBERATE_WARNINGS:  # see DELIBERATE_WARNINGS
        logging.getLogger(name).setLevel(logging.INFO if verbose() else logging.ERROR)


def train_logging_config():
    """Ray Train's own log level for a `RunConfig`: WARNING unless ``--verbose``.

    Ray Train configures the `ray.train` logger of its controller and workers itself, after
    any setup hook ran, so `quiet_logging` cannot reach it; this is Ray Train's switch. It
    drops the per-epoch "Reporting training result ...: TrainingReport(...)" and "Checkpoint
    successfully created" lines and the controller's start-up lines.
    """
    from ray.train import LoggingConfig

    return LoggingConfig(log_level="INFO" if verbose() else "WARNING")


FIT_THREAD = "ray-train-fit"


def fit_interruptibly(trainer: Any) -> Any:
    """``trainer.fit()`` for a Ray Train trainer, with Ctrl-C reaching wgen.

    Called on the main thread, Ray Train's `fit` installs its own SIGINT handler: Ctrl-C then
    aborts the run and the process exits 1 with nothing said (measured: `wgen train` and
    `wgen pdiff`), instead of wgen's "interrupted; ... re-run the same command to resume" and
    exit 130. On another thread Ray leaves SIGINT alone (as it does inside a Tune trial), so
    the fit runs on a daemon thread and the main thread waits in short joins, where the
    KeyboardInterrupt arrives. The checkpoints already written are what a re-run resumes
    from; the run's controller and workers are owned by this driver and end with it.
    """
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as err:  # re-raised on the calling thread, traceback intact
            outcome["error"] = err

    thread = threading.Thread(target=fit, name=FIT_THREAD, daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(timeout=0.5)
    except KeyboardInterrupt:
        # Leaving Ray ends this job's run: a local head stops with it, a cluster keeps going.
        # The fit thread may still be inside Ray after this; `exit_after_interrupt` is why.
        import ray

        ray.shutdown()
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def exit_after_interrupt(exit_code: int) -> None:
    """After Ctrl-C, end a process that has used Ray now, without interpreter finalisation
    (the caller has said what it had to say); a process without Ray carries on.

    Ray's native threads calling into a half-finalised interpreter killed the process with
    SIGSEGV after the Ctrl-C message, instead of exit 130: first while a `fit_interruptibly`
    thread was still inside Ray (1 in 4 full test runs, even with `ray.shutdown()` first),
    and once more after that thread had ended (a full test run beside a second Ray instance),
    so the rule is "Ray was loaded", not "a fit is running". `os._exit` skips finalisation;
    by then every `with` block and `finally` between the interrupt and here has run (the
    run lock is released). Ray is shut down first where it is still up (what its exit hook
    would have done: a local head stops with its driver).
    """
    if "ray" not in sys.modules:
        return
    import ray

    if ray.is_initialized():
        ray.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(exit_code)


def pin_own_cluster() -> None:
    """Every worker of a local head: RAY_ADDRESS = this cluster's own GCS.

    Ray Train's PlacementGroupCleaner asks the State API about the train controller with the
    address "auto". With another Ray instance on the machine, "auto" found THAT instance's
    dashboard, did not find our controller there, took it for dead and removed the running
    training's placement group (measured here: it killed a generator training at epoch 35
    while a test suite ran its own Ray). Pinned, the question goes to the right cluster.
    A local head has no dashboard, so that State API query always fails and the cleaner
    logged "Failed to query Ray Train Controller actor state" every few seconds: those
    warnings are only shown with --verbose.
    """

    import ray

    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    quiet_logging()  # Ray Data/Train INFO lines and the cleaner's warnings, in actors too


def remove_orphaned_placement_groups() -> int:
    """Remove this job's placement groups whose creating actor has died; returns how many.

    Why: a Ray Train controller reserves its worker group's placement group, scoped to the
    job. When Ray Tune stops a trial (ASHA) it kills the trial's actor and with it the
    controller, and the group stays reserved until the search's driver exits. Ray Train's
    PlacementGroupCleaner would remove it, but it asks the State API, which a head without
    a dashboard lacks (see `pin_own_cluster`). Measured on 2 cores (4 logical CPUs): after
    three trials had ended, 3.0 CPUs stayed reserved and the next two trials waited forever
    for the 1-CPU metadata tasks of their Parquet reads.

    A group whose creator is a live actor, the driver itself, or detached is left alone.
    """
    import ray
    from ray._private.state import state
    from ray.core.generated import gcs_pb2
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    job = ray.get_runtime_context().get_job_id()
    removed = 0
    for raw in state._connect_and_get_accessor().get_placement_group_table():
        data = gcs_pb2.PlacementGroupTableData.FromString(raw)
        # the driver's own groups (Tune's trial groups among them) have a nil creator actor
        made_by_an_actor = not ray.ActorID(data.creator_actor_id).is_nil()
        if (
            data.state == gcs_pb2.PlacementGroupTableData.REMOVED
            or data.is_detached
            or not made_by_an_actor
            or not data.creator_actor_dead
            or data.creator_job_id.hex() != job
        ):
            continue
        remove_placement_group(PlacementGroup(ray.PlacementGroupID(data.placement_group_id)))
        removed += 1
    return removed


@contextmanager
def releasing_orphaned_placement_groups(every_s: float = 5.0) -> Iterator[None]:
    """Run `remove_orphaned_placement_groups` every ``every_s`` seconds on a daemon thread
    while the block runs (a Tune search: trials are stopped while it goes on). A thread, not
    a Tune callback, because a restored search keeps the callbacks it was pickled with."""
    stop = threading.Event()

    def sweep() -> None:
        while not stop.wait(every_s):
            try:
                remove_orphaned_placement_groups()
            except Exception:  # noqa: BLE001 - a failed sweep must not end the search
                logging.getLogger(__name__).warning("placement group sweep failed", exc_info=True)

    thread = threading.Thread(target=sweep, name="wgen-pg-sweeper", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=every_s + 5)


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to a cluster (``address`` or $RAY_ADDRESS) or start a local Ray head of its
    own (never one found running on this machine: a cluster is used only when named).

    A local head listens on 127.0.0.1 only, with Ray's token authentication as Ray sets it.
    Idempotent: an already-initialised Ray (a test session's shared instance, or a job
    submitted with ``ray job submit``) is reused as it is.
    """
    address = address or os.environ.get("RAY_ADDRESS")
    set_ray_env_defaults(local=not address)
    quiet_logging()
    if not address:
        os.environ.setdefault(LOCAL_ONLY_ENV, "0")
    import ray

    quiet_logging()
    if ray.is_initialized():
        return
    # Inside a submitted job Ray merges this runtime env into the job's own and refuses a key
    # that both set (ray.init fails "Failed to merge the Job's runtime env"): the job's wins.
    job_env_vars = _job_runtime_env_vars()
    passed = [
        k
        for k in (*RAY_ENV_DEFAULTS, *LOCAL_ENV_DEFAULTS, *QUIET_ENV, VERBOSE_ENV)
        if k in os.environ and k not in job_env_vars
    ]
    # Workers inherit these so a local head behaves like the driver (offline, fast reports).
    runtime_env: dict[str, Any] = {"env_vars": {k: os.environ[k] for k in passed}}
    logging_level = "info" if verbose() else "warning"
    if address:
        ray.init(
            address=address,
            runtime_env=runtime_env,
            log_to_driver=True,
            logging_level=logging_level,
        )
    else:
        from ray._private import ray_constants

        # Read at import: `ray` may have been imported before the variable was set above.
        ray_constants.ENABLE_RAY_CLUSTER = os.environ[LOCAL_ONLY_ENV] not in ("0", "false")
        runtime_env["worker_process_setup_hook"] = f"{__name__}.{pin_own_cluster.__name__}"
        # Twice the cores as logical CPUs: compute-bound actors set their own torch threads,
        # and the light read/shuffle tasks beside them then always find a free slot (a pool
        # holding every logical CPU deadlocks a Ray Data pipeline, docs/architecture.md).
        # address="local": a new head of our own. Without an address Ray connects to any
        # cluster it finds on this machine (a `ray start --head`, another user's), and then
        # refuses num_cpus ("When connecting to an existing cluster, num_cpus ... must not
        # be provided"); a cluster is used only when named (--address, $RAY_ADDRESS).
        ray.init(
            address="local",
            num_cpus=num_cpus or 2 * (os.cpu_count() or 1),
            include_dashboard=False,
            dashboard_host="127.0.0.1",
            runtime_env=runtime_env,
            log_to_driver=True,
            logging_level=logging_level,
        )
    quiet_logging()


def _job_runtime_env_vars() -> dict[str, str]:
    """The ``env_vars`` of the runtime env a submitted job was given (``ray job submit
    --runtime-env...``), from the variable Ray sets in a job driver; {} outside a job."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return {}
    try:
        return dict((json.loads(raw).get("runtime_env") or {}).get("env_vars") or {})
    except (ValueError, AttributeError, TypeError):
        return {}


def print0(*args: Any, **kwargs: Any) -> None:
    """Print from the driver or from rank 0 of a Ray Train group only (EDM's print0)."""
    try:
        import ray.train

        context = ray.train.get_context()
        if context.get_world_rank() != 0:
            return
    except Exception:  # noqa: BLE001 - outside a Ray Train worker there is no context
        pass
    # Write, not print: inside a Ray Train worker `print` is patched to log AND tee to the
    # worker's redirected stdout, so every line reached the driver twice.
    stream = kwargs.get("file") or sys.stdout
    stream.write(kwargs.get("sep", " ").join(map(str, args)) + kwargs.get("end", "\n"))
    stream.flush()


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
