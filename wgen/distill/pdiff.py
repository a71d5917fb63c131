"""`wgen distill --target pdiff`: progressive distillation of p-diff's latent DDPM.

Stage 2 only (Salimans & Ho, ICLR 2022, as Meng et al. use it): p-diff's DDPM is
unconditional, so there is no guidance to distil. The teacher is the trained p-diff model
(``<out>/pdiff/<setting>/model``) sampled with `distill.pdiff_steps` DDIM steps; each round
a student with half its teacher's steps, initialised from its teacher, learns x̃ from two
DDIM half-steps of the teacher (`wgen.distill.targets.progressive_loss`, with no w, its
loss where the student's step lands: the DDPM predicts ε), on the zoo's latents (encoded by
the autoencoder, scaled as the DDPM saw them), down to 1 step:

    <out>/distill/pdiff/<setting>-steps-N/   p-diff model folders (`wgen.pdiff.fit.PdiffModel`:
                                             the teacher's autoencoder, codec and latent
                                             scale, the student's denoiser), N = pdiff_steps/2,
                                             ..., 1; each samples with N steps by default
                                             (its pdiff.sample_steps)
    <out>/distill/pdiff/rounds.json          each round's teacher, epochs, losses, wall time
    <out>/distill/pdiff/samplers.json        every sampler's sampling time and the held-out
                                             accuracy of the models it generates

Each round is one Ray Train run (p-diff's resources and checkpoint settings,
`wgen.pdiff.fit.fit_rows`) named from its teacher and the distillation settings: a finished
round is skipped, an interrupted one resumes from its last reported epoch.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wgen.config import Config, PdiffConfig
from wgen.core.errors import InputFileError
from wgen.core.runfolder import fingerprint
from wgen.core.runtime import (
    atomic_dir,
    init_ray,
    print0,
    read_json,
    torch_threads,
    write_json,
)
from wgen.diffusion import NoiseSchedule
from wgen.distill.fit import DISTILL_DIR, ROUNDS_FILE, Round
from wgen.distill.targets import check_power_of_two, progressive_loss
from wgen.generator.fit import (
    RAY_RESULTS_DIR,
    TRAIN_STATE_FILE,
    TrainState,
    load_optimizer,
    save_optimizer,
)
from wgen.pdiff import analysis
from wgen.pdiff.data import load_images
from wgen.pdiff.fit import (
    AE_FILE,
    CODEC_FILE,
    DENOISER_FILE,
    MANIFEST_FILE,
    STATE_FILE,
    PdiffModel,
    build_latent_denoiser,
    check_batch,
    epoch_loss,
    fit_rows,
    latent_schedule,
    shard_rows,
)
from wgen.pdiff.stage import SAMPLE_KEY, evaluate, model_folder
from wgen.pdiff.zoo import derived_seed, read_zoo

PDIFF_TARGET = "pdiff"  # <out>/distill/pdiff/
SAMPLERS_FILE = "samplers.json"
MODEL_FILES = (AE_FILE, DENOISER_FILE, CODEC_FILE, MANIFEST_FILE, STATE_FILE, "info.json")
LOSS_METRICS = ("train_loss", "fixed_loss", "initial_fixed_loss")
TIMING_REPEATS = 5  # sampling is timed this many times; the fastest counts (a shared machine)


def pdiff_rounds(teacher_steps: int) -> list[Round]:
    """One progressive round per halving of the teacher's DDIM steps, down to 1."""
    steps = check_power_of_two(teacher_steps)
    rounds = []
    while steps > 1:
        steps //= 2
        rounds.append(Round(f"steps-{steps}", steps, progressive=True))
    return rounds


def round_folder(out: Path, setting: str, round_: Round) -> Path:
    return Path(out) / DISTILL_DIR / PDIFF_TARGET / f"{setting}-{round_.name}"


def prepare_pdiff_distill(config: Config, out: Path) -> dict[str, Path]:
    """Checks before Ray starts: every setting of pdiff.settings has a trained p-diff model
    in ``out`` whose schedule has room for the first teacher's steps, and the batch divides
    by the workers. Returns each setting's teacher folder."""
    teachers = {}
    for setting in config.pdiff.settings:
        folder = model_folder(out, setting)
        missing = [name for name in MODEL_FILES if not (folder / name).exists()]
        if missing:
            raise InputFileError(
                folder,
                "no p-diff model here" if not folder.is_dir() else f"incomplete, missing {missing}",
                f"run `wgen pdiff --out {out}` first (or name the settings it trained: "
                "--set pdiff.settings=[convnet])",
            )
        cfg = PdiffConfig(**read_json(folder / "info.json")["pdiff"])
        steps = config.distill.pdiff_steps
        if steps > cfg.train_timesteps:
            raise InputFileError(
                folder,
                f"its DDPM has pdiff.train_timesteps={cfg.train_timesteps}, fewer than the "
                f"teacher's distill.pdiff_steps={steps} DDIM steps",
                "lower distill.pdiff_steps",
            )
        check_batch(student_pdiff_config(cfg, config, steps))
        teachers[setting] = folder
    return teachers


def student_pdiff_config(teacher: PdiffConfig, config: Config, steps: int) -> PdiffConfig:
    """The teacher's networks and batch; sampling with ``steps``; this command's Ray Train
    resources."""
    resources = {k: getattr(config.pdiff, k) for k in ("workers", "cpus_per_worker", "threads")}
    return dataclasses.replace(teacher, sample_steps=steps, **resources)


@torch.no_grad()
def zoo_latents(model: PdiffModel, vectors: np.ndarray) -> np.ndarray:
    """The zoo's rows as the DDPM was trained on them: standardised, encoded without noise,
    divided by the latent scale. (M, latent_channels, length)."""
    z = model.ae.encode(torch.from_numpy(model.codec.encode(vectors)))
    return (z / model.state.latent_scale).numpy()


LOSS_SPACE = "z"  # the DDPM predicts ε: its x̂ is ill-conditioned near t = T (`progressive_loss`)


def round_loss(
    student, teacher: PdiffModel, schedule: NoiseSchedule, steps: int, z0: torch.Tensor, generator
) -> torch.Tensor:
    """The progressive loss of one batch of latents (every value real, no condition, no w:
    both denoisers are called as they are), in LOSS_SPACE."""
    return progressive_loss(
        student, teacher.denoiser, schedule, steps, z0, None, generator, space=LOSS_SPACE
    )


def fixed_loss(student, teacher: PdiffModel, steps: int, z0: torch.Tensor, seed: int) -> float:
    """The round's loss on all of ``z0`` at a fixed seed (same t, noise): comparable across
    epochs and between the student and its initialisation (the teacher)."""
    schedule = latent_schedule(teacher.cfg)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return float(round_loss(student, teacher, schedule, steps, z0, generator))


def pdiff_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """The Ray Train worker of one round: the student starts as its teacher's denoiser; each
    epoch is one shuffled pass of the progressive loss over this worker's latents; every
    pdiff.report_every-th epoch (and the last) rank 0 reports a checkpoint that is a whole
    p-diff model folder plus the optimizer and epoch, so a failure or a re-run resumes."""
    import ray.train
    import ray.train.torch

    config = Config.from_dict(loop_config["config"])
    round_ = Round(**loop_config["round"])
    teacher = PdiffModel.load(Path(loop_config["teacher"]))
    cfg = student_pdiff_config(teacher.cfg, config, round_.steps)
    torch.set_num_threads(cfg.threads)
    context = ray.train.get_context()
    rank = context.get_world_rank()
    z0 = shard_rows()
    for p in teacher.denoiser.parameters():
        p.requires_grad_(False)
    student = build_latent_denoiser(cfg, teacher.ae.latent_shape)
    student.load_state_dict(teacher.denoiser.state_dict())
    # No weight decay: a student that already matches its teacher must stay where it is.
    optimizer = torch.optim.AdamW(
        student.parameters(), lr=config.distill.pdiff_lr, weight_decay=0.0
    )
    state, checkpoint = TrainState(), ray.train.get_checkpoint()
    initial = fixed_loss(student, teacher, round_.steps, z0, cfg.seed)  # the student = teacher
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            student.load_state_dict(PdiffModel.load(Path(folder)).denoiser.state_dict())
            load_optimizer(optimizer, Path(folder))
            state = TrainState(**read_json(Path(folder) / TRAIN_STATE_FILE))
    parallel = ray.train.torch.prepare_model(student)
    schedule = latent_schedule(cfg)
    batch, epochs = check_batch(cfg), config.distill.pdiff_epochs
    start, first = time.perf_counter(), state.epoch + 1
    for epoch in range(first, epochs + 1):
        generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch * 1_009 + rank)

        def loss_fn(model, rows, generator=generator):
            return round_loss(model, teacher, schedule, round_.steps, rows, generator)

        loss = epoch_loss(parallel, optimizer, z0, batch, generator, loss_fn)
        state.epoch = epoch
        if epoch % cfg.report_every and epoch != epochs:
            continue
        student.eval()
        metrics = {
            "epoch": epoch,
            "train_loss": loss,
            "fixed_loss": fixed_loss(student, teacher, round_.steps, z0, cfg.seed),
            "initial_fixed_loss": initial,
            "first_epoch": first,  # > 1: this worker group resumed from a checkpoint
        }
        student.train()
        state.history.append(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            attached = None
            if rank == 0:
                info = {
                    "run_name": loop_config["run_name"],
                    "distill": loop_config["record"],
                    "epochs_trained": epoch,
                    "metrics": metrics,
                }
                PdiffModel(
                    cfg, teacher.ae, student, teacher.codec, teacher.manifest, teacher.state, info
                ).save(Path(tmp))
                student.train()  # PdiffModel puts its networks in eval mode
                save_optimizer(optimizer, Path(tmp))
                write_json(Path(tmp) / TRAIN_STATE_FILE, dataclasses.asdict(state))
                attached = ray.train.Checkpoint.from_directory(tmp)
                left = (time.perf_counter() - start) / (epoch - first + 1) * (epochs - epoch)
                print0(
                    f"distill pdiff {loop_config['setting']}-{round_.name}: epoch "
                    f"{epoch}/{epochs} ({left / 60:.1f} min left) loss {loss:.3e} · fixed-seed "
                    f"{metrics['fixed_loss']:.3e} (initial {initial:.3e})"
                )
            ray.train.report(metrics, checkpoint=attached)


def round_complete(folder: Path, name: str, epochs: int) -> bool:
    path = Path(folder) / "info.json"
    if not path.exists():
        return False
    info = read_json(path)
    return info.get("run_name") == name and info.get("epochs_trained", 0) >= epochs


def round_name(teacher_run: str, setting: str, config: Config, round_: Round) -> str:
    """The Ray Train run name: the teacher's run and what shapes the student (not the
    epochs: more epochs continue the same run)."""
    dist = config.distill
    shaping = {"lr": dist.pdiff_lr, "loss": LOSS_SPACE, "round": dataclasses.asdict(round_)}
    return (
        f"distill-pdiff-{setting}-{round_.name}-{fingerprint({'teacher': teacher_run, **shaping})}"
    )


def export_round(checkpoint, folder: Path) -> PdiffModel:
    """The student of a Ray Train checkpoint, rebuilt and written to ``folder`` atomically."""
    with checkpoint.as_directory() as source:
        model = PdiffModel.load(Path(source))
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(folder) as tmp:
        model.save(tmp)
    return model


def run_pdiff_distill(config: Config, out: Path, force: bool = False) -> dict[str, Any]:
    """Distil every setting's p-diff model round by round, then time and score every sampler."""
    out = Path(out).resolve()
    teachers = prepare_pdiff_distill(config, out)
    rounds = pdiff_rounds(config.distill.pdiff_steps)
    folder = out / DISTILL_DIR / PDIFF_TARGET
    earlier = {
        r["run_name"]: r
        for r in (
            read_json(folder / ROUNDS_FILE)["rounds"] if (folder / ROUNDS_FILE).exists() else []
        )
    }  # wall times of rounds finished by an earlier command
    records: list[dict[str, Any]] = []
    print0(
        f"distill pdiff: teacher DDIM {config.distill.pdiff_steps} steps, rounds "
        + " → ".join(r.name for r in rounds)
        + f", {config.distill.pdiff_epochs} epochs each, settings {list(teachers)}"
    )
    for setting, first_teacher in teachers.items():
        teacher = first_teacher
        teacher_run = read_json(teacher / "info.json").get("fit_digest", str(teacher))
        latents = None
        for round_ in rounds:
            target = round_folder(out, setting, round_)
            name = round_name(teacher_run, setting, config, round_)
            record = {
                "setting": setting,
                "round": round_.name,
                "steps": round_.steps,
                "teacher": str(teacher),
                "teacher_steps": 2 * round_.steps,
            }
            if force:
                shutil.rmtree(folder / RAY_RESULTS_DIR / name, ignore_errors=True)
            if not force and round_complete(target, name, config.distill.pdiff_epochs):
                info = {**earlier.get(name, {}), **read_json(target / "info.json")}
                print0(f"distill pdiff: {target} is complete (run {name}); skipping")
            else:
                if latents is None:
                    init_ray()
                    latents = zoo_latents(
                        PdiffModel.load(first_teacher), read_zoo(out, setting).vectors
                    )
                start = time.perf_counter()
                loop_config = {
                    "config": config.to_dict(),
                    "round": dataclasses.asdict(round_),
                    "teacher": str(teacher),
                    "setting": setting,
                    "run_name": name,
                    "record": record,
                }
                student_cfg = student_pdiff_config(
                    PdiffModel.load(teacher).cfg, config, round_.steps
                )
                result = fit_rows(
                    pdiff_loop_per_worker, loop_config, student_cfg, name,
                    folder / RAY_RESULTS_DIR, latents,
                )  # fmt: skip
                if result.checkpoint is None:
                    raise RuntimeError(f"run {name} reported no checkpoint; see {folder}")
                info = export_round(result.checkpoint, target).info
                info["job_seconds"] = round(time.perf_counter() - start, 2)
                losses = [info.get("metrics", {}).get(k, math.nan) for k in LOSS_METRICS]
                print0(
                    f"distill pdiff: {setting}-{round_.name} → {target} in "
                    f"{info['job_seconds']:.1f} s (loss {losses[0]:.3e}, fixed-seed "
                    f"{losses[1]:.3e}, before training {losses[2]:.3e})"
                )
            summary = {
                k: info[k] for k in ("epochs_trained", "job_seconds", "metrics") if k in info
            }
            records.append({**record, "run_name": name, **summary})
            write_json(folder / ROUNDS_FILE, {"rounds": records})
            teacher, teacher_run = target, name  # the next round distils this one
    samplers = {s: evaluate_samplers(config, out, s, rounds) for s in teachers}
    write_json(folder / SAMPLERS_FILE, samplers)
    print0(f"distill pdiff: samplers → {folder / SAMPLERS_FILE}")
    return {"rounds": records, "samplers": samplers}


# ---------------------------------------------------------------------------------------
# Every sampler: time and held-out accuracy
# ---------------------------------------------------------------------------------------


def sampler_list(config: Config, out: Path, setting: str, rounds: list[Round]):
    """(label, folder, steps): the teacher with its full chain (T DDIM steps), p-diff's
    pdiff.sample_steps, distillation's pdiff_steps and, as the control, each student's step
    count undistilled; then each student with its own steps."""
    teacher = model_folder(out, setting)
    cfg = PdiffModel.load(teacher).cfg
    steps = [cfg.train_timesteps, cfg.sample_steps, config.distill.pdiff_steps]
    steps += [r.steps for r in rounds]
    listed = [(f"teacher DDIM {n}", teacher, n) for n in dict.fromkeys(steps)]
    return listed + [(f"student {r.steps}", round_folder(out, setting, r), r.steps) for r in rounds]


def evaluate_samplers(
    config: Config, out: Path, setting: str, rounds: list[Round]
) -> list[dict[str, Any]]:
    """Each sampler's wall time to generate pdiff.samples models (the fastest of
    TIMING_REPEATS, decoding included) and the held-out accuracy of those models, plus
    their mean L2 distance (raw parameters) to the teacher's distillation-teacher samples
    from the same noise."""
    cfg = PdiffModel.load(model_folder(out, setting)).cfg  # its data, seed, samples
    data = load_images(cfg)
    zoo = read_zoo(out, setting)
    seed = derived_seed(cfg.seed, SAMPLE_KEY)
    y_heldout = data.y_heldout.numpy()
    rows, reference = [], None
    with torch_threads(config.pdiff.threads):
        reference = PdiffModel.load(model_folder(out, setting)).sample(
            cfg.samples, seed, config.distill.pdiff_steps
        )
        for label, folder, steps in sampler_list(config, out, setting, rounds):
            if not folder.is_dir():
                continue
            model = PdiffModel.load(folder)
            seconds = []
            for _ in range(TIMING_REPEATS):
                start = time.perf_counter()
                vectors = model.sample(cfg.samples, seed, steps)
                seconds.append(time.perf_counter() - start)
            _, heldout = evaluate(zoo, model.cfg, setting, data, vectors)
            accuracy = analysis.summary((heldout == y_heldout).mean(1))
            distance = float(np.linalg.norm(vectors - reference, axis=1).mean())
            rows.append(
                {
                    "sampler": label,
                    "steps": steps,
                    "folder": str(folder),
                    "sampling_s": min(seconds),
                    "heldout_acc": accuracy,
                    "distance_to_teacher": distance,
                }
            )
            print0(
                f"distill pdiff: {setting} {label}: {min(seconds) * 1000:.0f} ms / "
                f"{cfg.samples} models, held-out best {accuracy['best']:.4f} mean "
                f"{accuracy['mean']:.4f}, L2 to teacher {distance:.4f}"
            )
    return rows
