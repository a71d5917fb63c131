"""`wgen distill`: the rounds of guided distillation on a run folder.

    <out>/distill/w/          stage 1: the w-student (one pass per step for any w), sampled
                              with distill.start_steps DDIM steps by default
    <out>/distill/steps-N/    stage 2: progressively distilled to N DDIM steps, N =
                              start_steps/2, ..., 1, each from the folder before it
    <out>/distill/rounds.json what each round was distilled from, its epochs and wall time

Every folder is a generator folder (`wgen.generator.checkpoint`) that records that its
denoiser takes w (`WeightGenerator.guidance_input`), so `wgen generate --generator
<out>/distill/steps-1 --guidance W` loads it like any other. Each round is one Ray Train run
(`wgen.distill.fit`) named from its teacher and the distillation settings: a finished round
is skipped, an interrupted one resumes from its checkpoint when the command runs again.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wgen.config import Config, DistillConfig
from wgen.core.errors import ConfigError, InputFileError
from wgen.core.integrity import verify_inputs
from wgen.core.runfolder import command_args, fingerprint
from wgen.core.runtime import init_ray, print0, read_json, write_json
from wgen.distill.fit import DISTILL_DIR, ROUNDS_FILE, Round, fit_round
from wgen.distill.targets import check_power_of_two
from wgen.generator.checkpoint import (
    CONFIG_YAML,
    INFO_FILE,
    GeneratorFolderError,
    check_generator_folder,
    missing_generator_files,
)
from wgen.generator.dataset import load_block_data
from wgen.generator.fit import (
    GENERATOR_DIR,
    RAY_RESULTS_DIR,
    export_generator,
    generator_complete,
    per_worker_batch,
)

W_STUDENT = "w"  # stage 1's folder


def guided(distill: DistillConfig) -> bool:
    """Whether the students learn guidance (w > 0 somewhere in the range). Unguided (w_max =
    0), stage 1 would only copy its teacher, so the rounds are progressive alone and the
    teacher needs no text dropout."""
    return distill.w_max > 0


def distill_rounds(start_steps: int, with_guidance: bool = True) -> list[Round]:
    """Stage 1 at ``start_steps`` (when the students learn guidance), then one progressive
    round per halving down to 1 step."""
    steps = check_power_of_two(start_steps)
    rounds = [Round(W_STUDENT, steps, progressive=False)] if with_guidance else []
    while steps > 1:
        steps //= 2
        rounds.append(Round(f"steps-{steps}", steps, progressive=True))
    return rounds


def student_folder(out: Path, steps: int) -> tuple[Path, int]:
    """The generator folder distilled to ``steps`` DDIM steps and the steps to sample it with:
    ``steps-N`` where that round ran, else the w-student (stage 1 distils guidance, not steps)."""
    folder = Path(out) / DISTILL_DIR / f"steps-{steps}"
    return (folder, steps) if folder.is_dir() else (Path(out) / DISTILL_DIR / W_STUDENT, steps)


def teacher_folder(distill: DistillConfig, out: Path) -> Path:
    return Path(distill.teacher_dir) if distill.teacher_dir else out / GENERATOR_DIR


def prepare_distill(config: Config, out: Path) -> tuple[Path, Config]:
    """Checks before Ray starts: the teacher's folder is a complete generator trained with
    text dropout (denoiser.cond_drop > 0: its null-text output is what guidance subtracts) and
    without a w input, and the first round fits its schedule. Returns the folder and its config."""
    teacher = teacher_folder(config.distill, out)
    try:
        check_generator_folder(teacher)
    except GeneratorFolderError:
        problem = (
            f"incomplete generator folder, missing {missing_generator_files(teacher)}"
            if teacher.is_dir()
            else "no generator folder here"
        )
        raise InputFileError(
            teacher,
            problem,
            "train the guided teacher with `wgen train --out RUN --set denoiser.cond_drop=0.1`, "
            "or pass --set distill.teacher_dir=DIR",
        ) from None
    teacher_config = Config.load(teacher / CONFIG_YAML)
    if teacher_config.denoiser.cond_drop <= 0 and guided(config.distill):
        raise ConfigError(
            f"the teacher {teacher} was trained with denoiser.cond_drop=0: its null text never "
            "learned the unconditional model guidance needs; train it with "
            "`wgen train --set denoiser.cond_drop=0.1` (or pass another distill.teacher_dir), "
            "or distil its steps alone with --set distill.w_max=0"
        )
    if read_json(teacher / INFO_FILE).get("guidance_input"):
        raise ConfigError(
            f"the teacher {teacher} is already a distilled student (it takes w); distil the "
            "guided generator it came from"
        )
    timesteps = teacher_config.denoiser.train_timesteps
    if 2 * config.distill.start_steps > timesteps:
        raise ConfigError(
            f"distill.start_steps={config.distill.start_steps}: the first round's teacher takes "
            f"{2 * config.distill.start_steps} DDIM steps, more than the teacher's "
            f"denoiser.train_timesteps={timesteps}"
        )
    return teacher, teacher_config


def student_config(teacher: Config, config: Config, round_: Round) -> Config:
    """The teacher's model and data settings; this command's distillation settings and Ray
    Train resources; sampling with the round's steps (a 1-step student from t = T − 1, where
    its one DDIM step starts: the same as the single step there)."""
    generate = dataclasses.replace(teacher.generate, steps=round_.steps, guidance=0.0)
    if round_.progressive and round_.steps == 1:
        generate.single_step_t = teacher.denoiser.train_timesteps - 1
    train = dataclasses.replace(
        teacher.train,
        **{k: getattr(config.train, k) for k in ("workers", "use_gpu", "cpus_per_worker")},
        **{k: getattr(config.train, k) for k in ("worker_resources", "threads", "max_failures")},
    )
    return dataclasses.replace(teacher, distill=config.distill, generate=generate, train=train)


def round_name(teacher_run: str, distill: DistillConfig, round_: Round) -> str:
    """The Ray Train run name of a round: its teacher's run (the generator's, or the round
    before) and the settings that shape the student (not the epochs: more epochs continue
    the same run)."""
    dist = dataclasses.asdict(distill)
    for key in ("epochs", "bench_guidance", "teacher_dir"):
        dist.pop(key)
    digest = fingerprint({"teacher": teacher_run, "round": dataclasses.asdict(round_), **dist})
    return f"distill-{round_.name}-{digest}"


def run_distill(
    config: Config, out: Path, force: bool = False, overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """Distil ``<out>/generator`` (or distill.teacher_dir) round by round into
    ``<out>/distill/<round>/``; a finished round is kept unless ``force``. ``overrides``: the
    command's ``--set`` values, for the command that remakes a damaged input. distill.target
    pdiff: p-diff's latent DDPM instead (`wgen.distill.pdiff`), which reads p-diff's model
    folders, not the generator's inputs."""
    if config.distill.target == "pdiff":
        from wgen.distill.pdiff import run_pdiff_distill

        return run_pdiff_distill(config, out, force=force)
    out = Path(out).resolve()
    # every file it reads is the one its stage wrote; the hint leaves distill's own flags out
    hint = [item for item in overrides if not item.startswith("distill.")]
    verify_inputs(out, "distill", command_args(config, out, hint))
    teacher, teacher_config = prepare_distill(config, out)
    rounds = distill_rounds(config.distill.start_steps, guided(config.distill))
    per_worker_batch(
        dataclasses.replace(config.train, batch_size=config.distill.batch_size)
    )  # the global batch divides by the workers, before anything starts
    folder = out / DISTILL_DIR
    records: list[dict[str, Any]] = []
    # wall times of rounds finished by an earlier command (the folder keeps no clock)
    earlier = {
        r["run_name"]: r
        for r in (
            read_json(folder / ROUNDS_FILE)["rounds"] if (folder / ROUNDS_FILE).exists() else []
        )
    }
    data = None
    teacher_run = read_json(teacher / INFO_FILE).get("info", {}).get("run_name", str(teacher))
    print0(
        f"distill: teacher {teacher} (cond_drop {teacher_config.denoiser.cond_drop}), "
        f"w ~ U[{config.distill.w_min}, {config.distill.w_max}], rounds "
        + " → ".join(f"{r.name} ({r.steps} step{'s' * (r.steps > 1)})" for r in rounds)
    )
    for round_ in rounds:
        target = folder / round_.name
        student = student_config(teacher_config, config, round_)
        name = round_name(teacher_run, config.distill, round_)
        record = {
            "round": round_.name,
            "steps": round_.steps,
            "progressive": round_.progressive,
            "teacher": str(teacher),
            "w_range": [config.distill.w_min, config.distill.w_max],
        }
        if force:
            shutil.rmtree(folder / RAY_RESULTS_DIR / name, ignore_errors=True)
        if not force and generator_complete(target, name, config.distill.epochs):
            info = {**earlier.get(name, {}), **read_json(target / INFO_FILE)["info"]}
            print0(f"distill: {target} is complete (run {name}); skipping (--force redoes it)")
        else:
            if data is None:
                init_ray()
                train = teacher_config.train
                data = load_block_data(
                    out, teacher_config.denoiser.block_size, train.text_encoder,
                    teacher_config.denoiser.center, text_view=teacher_config.denoiser.text,
                    n_paraphrases=train.paraphrases, seed=teacher_config.data.seed,
                    max_train_concepts=train.max_train_concepts,
                )  # fmt: skip
            start = time.perf_counter()
            result = fit_round(
                student, data, round_, teacher, name, folder / RAY_RESULTS_DIR, record
            )
            if result.checkpoint is None:
                raise RuntimeError(f"run {name} reported no checkpoint; see {folder}")
            generator = export_generator(result.checkpoint, target)
            info = {**generator.info, "job_seconds": round(time.perf_counter() - start, 2)}
            metrics = info.get("metrics", {})
            print0(
                f"distill: {round_.name} → {target} in {info['job_seconds']:.1f} s "
                f"(loss {metrics.get('train_loss', math.nan):.5f}, "
                f"val {metrics.get('val_loss', math.nan):.5f})"
            )
        records.append({**record, "run_name": name, **_summary(info)})
        write_json(folder / ROUNDS_FILE, {"rounds": records})  # each round's time, as it ends
        teacher, teacher_run = target, name  # the next round distils this one
    return {"rounds": records}


def _summary(info: dict[str, Any]) -> dict[str, Any]:
    return {k: info[k] for k in ("epochs_trained", "job_seconds", "metrics") if k in info}
