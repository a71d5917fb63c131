"""The ``wgen`` command line. Each command is thin: build and validate the config, check the
run folder, call the stage. ``python -m rayjobs.<stage>`` runs the same commands with the
same flags.

User mistakes are the project's own error types (`wgen.core.errors`): validated before Ray
starts and printed as one line naming the key or the file, exit code 2 (3: collection
finished below ``collect.min_converged``; 130: interrupted). Anything else is a bug in wgen
and keeps its traceback (exit 1).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from wgen.config import Config, load_config
from wgen.core.errors import ConfigError, InputFileError, Interrupted, OutputError, WgenError
from wgen.core.stages import STAGES, validate_stage

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="wgen: collect trained LoRA weights on Ray, learn to generate them, fine-tune new concepts fast.",
)

PresetOption = Annotated[
    str,
    typer.Option("--preset", help="tiny (tests) | demo (default) | bench | cluster (GPU cluster)"),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a config field: section.key=value (repeatable)"),
]
OutOption = Annotated[
    str,
    typer.Option(
        "--out",
        help="run folder shared by all stages: a path (shared by every node on a cluster) or a "
        "URI such as s3://bucket/run (pairs, collect, train, bench)",
    ),
]
ForceOption = Annotated[
    bool,
    typer.Option("--force", help="redo this stage (replacing its output), even if complete"),
]
VerboseOption = Annotated[
    bool, typer.Option("--verbose", help="also show Ray's own log lines and progress bars")
]
GeneratorOption = Annotated[
    Path, typer.Option("--generator", help="generator folder (<run>/generator from wgen train)")
]
ConceptOption = Annotated[str, typer.Option("--concept", help="the new concept, in words")]
AdapterOutOption = Annotated[
    Path, typer.Option("--out", help="adapter folder to write (peft format)")
]
ReplaceOption = Annotated[bool, typer.Option("--force", help="replace an existing --out")]
MaxSideOption = Annotated[
    int,
    typer.Option(
        "--max-side", help="edit photos at their own size, scaled down to this long side (px)"
    ),
]
StrategyOption = Annotated[
    str,
    typer.Option(
        "--strategy",
        help="how the edit reaches full size: guided (default) | bands | affine | residual | "
        "fullres | tiles | upscaled; measured in docs/results/apply/README.md",
    ),
]


@contextmanager
def reported() -> Iterator[None]:
    """The project's user errors become their one-line message and exit code; Ctrl-C says
    what is kept. Every other exception propagates with its traceback (a bug: exit 1)."""
    try:
        yield
    except Interrupted as err:
        typer.secho(str(err), fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(err.exit_code) from None
    except WgenError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(err.exit_code) from None
    except KeyboardInterrupt:
        typer.secho(
            "interrupted; finished stages are kept, re-run the same command to resume",
            fg=typer.colors.YELLOW,
            err=True,
        )
        raise typer.Exit(Interrupted.exit_code) from None


def set_verbose(flag: bool) -> None:
    from wgen.core.runtime import VERBOSE_ENV, quiet_logging

    if flag:
        os.environ[VERBOSE_ENV] = "1"
    quiet_logging()


def resolve_config(preset: str, overrides: list[str], stage: str) -> Config:
    """Defaults, preset, ``--set``; then every value ``stage`` will use is checked."""
    config = load_config(preset, overrides)
    validate_stage(config, stage)
    return config


def run_stage_command(
    stage: str,
    preset: str,
    overrides: list[str],
    out: str | Path,
    force: bool = False,
    retry: bool = False,
    verbose: bool = False,
) -> None:
    """What every stage command (`wgen.core.stages.STAGES`) shares: validate before Ray starts,
    check the run folder, hold its lock, run the stage's entry function."""
    from wgen.core.runfolder import check_out_folder, run_lock
    from wgen.core.storage import RunStorage
    from wgen.pipeline import run_stage, synced

    with reported():
        set_verbose(verbose)
        config = resolve_config(preset, overrides, stage)
        # Resolved once, here: every actor, task and Ray Train worker gets this absolute path,
        # never one relative to its own working directory (a job's is a temporary copy). A URI
        # is opened and written to once now, so a bad one fails before Ray starts.
        storage = RunStorage.resolve(out, check=False)
        if storage.remote and STAGES[stage].pulls is None:
            remote = [name for name, spec in STAGES.items() if spec.pulls is not None]
            raise OutputError(
                f"--out {storage}: `wgen {stage}` runs on a local or shared folder only; URIs "
                f"work with {', '.join(remote)} (run those stages one by one)"
            )
        if storage.remote:
            storage.check_writable()
        out = storage.local
        check_out_folder(out)
        options = {"force": force, "retry": retry, "overrides": overrides, "storage": storage}
        with run_lock(out), synced(storage, stage):
            if STAGES[stage].recorded:
                run_stage(stage, config, out, **options)
            else:
                STAGES[stage].run(config, out, **options)


@app.command()
def concepts(preset: PresetOption = "demo", set_: SetOption = None) -> None:
    """Print the concepts of a preset, one a line: split, tab, text."""
    from wgen.data.concepts import make_concepts

    with reported():
        config = load_config(preset, set_ or [])
        try:
            listed = make_concepts(config.data)
        except ValueError as err:  # impossible counts for the vocabulary
            raise ConfigError(str(err)) from None
    for concept in listed:
        typer.echo(f"{concept.split}\t{concept.text}")


@app.command()
def vocabulary() -> None:
    """Print the words and phrases the procedural editor understands."""
    from wgen.data.editors.procedural import describe_vocabulary

    typer.echo(describe_vocabulary())


@app.command()
def pairs(
    preset: PresetOption = "demo",
    set_: SetOption = None,
    out: OutOption = "runs/demo",
    images: Annotated[
        Path | None, typer.Option("--images", help="folder of your own JPEG/PNG photos")
    ] = None,
    force: ForceOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Edit source crops for every concept on Ray Data; write <out>/pairs/*.parquet."""
    overrides = list(set_ or []) + ([f"data.images_dir={images}"] if images else [])
    run_stage_command("pairs", preset, overrides, out, force=force, verbose=verbose)


@app.command()
def collect(
    preset: PresetOption = "demo",
    set_: SetOption = None,
    out: OutOption = "runs/demo",
    force: ForceOption = False,
    retry: Annotated[
        bool,
        typer.Option("--retry", help="train again concepts recorded as not converged or failed"),
    ] = False,
    verbose: VerboseOption = False,
) -> None:
    """Train the base GAN, then every concept's LoRA on a Ray actor pool; write <out>/weights/.

    Exits with code 3 (and a summary) when fewer than collect.min_converged of the concepts
    converged."""
    run_stage_command(
        "collect", preset, list(set_ or []), out, force=force, retry=retry, verbose=verbose
    )


@app.command()
def train(
    preset: PresetOption = "demo",
    set_: SetOption = None,
    out: OutOption = "runs/demo",
    force: ForceOption = False,
    verbose: VerboseOption = False,
    from_tune: Annotated[
        Path | None,
        typer.Option(
            "--from-tune",
            help="train with the best trial of `wgen tune --out DIR`: the search's --preset "
            "(pass the same one) and --set values plus the best searched values; --set goes on top",
        ),
    ] = None,
) -> None:
    """Fit the weight generator on <out>/weights with Ray Train; write <out>/generator/."""
    overrides = list(set_ or [])
    if from_tune is not None:
        from wgen.tune.results import best_overrides

        with reported():
            search_preset, best = best_overrides(from_tune)
            if preset != search_preset:
                raise ConfigError(
                    f"--from-tune {from_tune}: the search ran with --preset {search_preset}; pass it"
                )
        typer.echo(f"train: from the search in {from_tune}: {' '.join(best)}")
        overrides = best + overrides
    run_stage_command("train", preset, overrides, out, force=force, verbose=verbose)


@app.command()
def tune(
    preset: PresetOption = "demo",
    set_: SetOption = None,
    out: OutOption = "runs/demo",
    force: ForceOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Search tune.space (b, d, lr, ...) with Ray Tune + ASHA on <out>/weights; write <out>/tune/.
    Run it again to resume an interrupted search."""
    run_stage_command("tune", preset, list(set_ or []), out, force=force, verbose=verbose)


@app.command()
def demo(
    out: OutOption = "runs/demo",
    preset: PresetOption = "demo",
    set_: SetOption = None,
    force: ForceOption = False,
    verbose: VerboseOption = False,
) -> None:
    """The whole pipeline on the embedded offline default: pairs → weights → generator → a new concept."""
    run_stage_command("demo", preset, list(set_ or []), out, force=force, verbose=verbose)


@app.command()
def bench(
    preset: PresetOption = "demo",
    set_: SetOption = None,
    out: OutOption = "runs/demo",
    concepts: Annotated[
        Path | None,
        typer.Option(
            "--concepts",
            help="file with one held-out concept text per line (default: the preset's held-out "
            "concepts); a training concept's text is flagged and left out",
        ),
    ] = None,
    methods: Annotated[
        str | None,
        typer.Option(
            "--methods",
            help="comma-separated methods (default: all): scratch, scratch-identity, lora-zero, mean, "
            "nearest, knn, ridge, hyper, nearest-edit, wgen-1, wgen-ddim",
        ),
    ] = None,
    generator: Annotated[
        Path | None,
        typer.Option(
            "--generator", help="generator folder for wgen-1/wgen-ddim (default: OUT/generator)"
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="discard finished bench runs and start anew")
    ] = False,
    verbose: VerboseOption = False,
) -> None:
    """Fine-tune held-out concepts from every method's initial weights on a Ray actor pool;
    write <out>/bench/results.json, report.md and plots. Re-run to resume."""
    overrides = list(set_ or [])
    if concepts is not None:
        overrides.append(f"bench.concepts_file={concepts}")
    if methods is not None:
        overrides.append(f"bench.methods={methods}")
    if generator is not None:
        overrides.append(f"bench.generator_dir={generator}")
    run_stage_command("bench", preset, overrides, out, force=force, verbose=verbose)


@app.command()
def distill(
    preset: PresetOption = "demo",
    set_: SetOption = None,
    out: OutOption = "runs/demo",
    target: Annotated[
        str,
        typer.Option("--target", help="what to distil: generator, or pdiff (p-diff's DDPM)"),
    ] = "generator",
    force: ForceOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Guided distillation (Meng et al.) of <out>/generator, trained with denoiser.cond_drop > 0:
    a student that takes the guidance weight w, then progressive rounds down to 1 step, each a
    Ray Train run; write <out>/distill/<round>/ generator folders. Re-run to resume."""
    overrides = [*(set_ or []), f"distill.target={target}"]
    run_stage_command("distill", preset, overrides, out, force=force, verbose=verbose)


@app.command()
def finetune(
    generator: GeneratorOption,
    concept: ConceptOption,
    images: Annotated[Path, typer.Option("--images", help="folder of your JPEG/PNG photos")],
    out: AdapterOutOption,
    force: ReplaceOption = False,
    max_side: MaxSideOption = 1024,
    strategy: StrategyOption = "guided",  # wgen.gan.fullsize.DEFAULT_STRATEGY (torch-free import here)
) -> None:
    """Generate a LoRA for a new concept, then fine-tune it on pairs made from your photos
    until converged; prints the held-back quality against time and writes the adapter, with
    your photos edited at their own size in <out>/preview/."""
    from wgen.bench.finetune import run_finetune
    from wgen.generator.checkpoint import GeneratorFolderError
    from wgen.models.base import BASE_DIR

    with reported():
        set_verbose(False)
        check_apply_options(max_side, strategy)
        check_generator_and_concept(generator, concept)
        photos = read_apply_photos(images)
        check_new_output(out, force, "files (an adapter?)")
        try:
            run_finetune(generator, concept.strip(), images, out)
        except GeneratorFolderError as err:
            raise InputFileError(generator, str(err)) from None
        grid = write_edits(out, generator / BASE_DIR, photos, out / "preview", strategy, max_side)
    typer.echo(f"finetune: your photos edited at their own size → {grid.parent}")


# ---------------------------------------------------------------------------------------
# Reading what other commands wrote: a damaged file is named, with the command that remakes it
# ---------------------------------------------------------------------------------------


def check_readable_folder(folder: Path, what: str, remake: str) -> None:
    """Open every file under ``folder`` as `wgen.core.integrity.check_format` does, and each
    config YAML as a config of this version, so a truncated or foreign file is an
    `InputFileError` naming it, not a traceback."""
    import yaml

    from wgen.core.integrity import check_format

    if not folder.is_dir():
        problem = "is a file, not a folder" if folder.exists() else "does not exist"
        raise InputFileError(folder, f"{problem} (expected {what})", remake)
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        check_format(path, remake)
        if path.suffix in (".yaml", ".yml") and path.name.startswith("config"):
            try:
                Config.from_dict(yaml.safe_load(path.read_text()))
            except Exception as err:  # noqa: BLE001 - a YAML that is not a config of this wgen
                raise InputFileError(
                    path, f"not a wgen config of this version ({err})", remake
                ) from None


def check_generator_and_concept(generator: Path, concept: str) -> None:
    """What `wgen generate` and `wgen finetune` read first: a concept text and a generator."""
    if not concept.strip():
        raise ConfigError("--concept: concept text is empty; describe the edit in words")
    remake = "make it again with `wgen train --out RUN --force` (it writes RUN/generator)"
    check_readable_folder(generator, "a generator folder from `wgen train`", remake)


def check_new_output(out: Path, force: bool, what: str) -> None:
    """Refuse to overwrite a non-empty ``out`` unless ``force``, and a path that cannot
    become a folder; nothing is created here, so a later error leaves no empty folder."""
    from wgen.core.runfolder import check_out_folder

    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputError(
            f"--out {out} already holds {what}; pass --force to replace it, or choose another folder"
        )
    check_out_folder(out, create=False)


@app.command()
def generate(
    generator: GeneratorOption,
    concept: ConceptOption,
    out: AdapterOutOption,
    steps: Annotated[
        int | None,
        typer.Option("--steps", help="1 = the paper's single direct step; N > 1 = N DDIM steps"),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="noise seed")] = None,
    guidance: Annotated[
        float | None,
        typer.Option(
            "--guidance",
            help="classifier-free guidance weight w >= 0 (0 = unguided; default: the "
            "generator's own); a distilled student (wgen distill) takes w as its input",
        ),
    ] = None,
    base: Annotated[
        Path | None,
        typer.Option(
            "--base", help="base GAN folder the adapter is for (checked: same fingerprint)"
        ),
    ] = None,
    force: ReplaceOption = False,
) -> None:
    """Generate a LoRA for a new concept and write it as a peft adapter; prints the time."""
    from wgen.generator.checkpoint import GeneratorFolderError
    from wgen.generator.generate import run_generate
    from wgen.weights.format import WeightFormatError

    with reported():
        set_verbose(False)
        if steps is not None and steps < 1:
            raise ConfigError(f"--steps must be at least 1, got {steps}")
        if guidance is not None and not guidance >= 0:  # (NaN too)
            raise ConfigError(f"--guidance must be a weight w >= 0 (0 = unguided), got {guidance}")
        check_generator_and_concept(generator, concept)
        if base is not None:
            check_readable_folder(base, "a base GAN folder (RUN/base)", "`wgen collect` makes it")
        check_new_output(out, force, "files (an adapter?)")
        try:
            run_generate(
                generator, concept, out, steps=steps, seed=seed, base_dir=base, guidance=guidance
            )
        except GeneratorFolderError as err:  # a file missing from the generator folder
            raise InputFileError(generator, str(err)) from None
        except WeightFormatError as err:  # --base (or weights) of another base GAN
            raise InputFileError(base or generator, str(err)) from None
        except FileExistsError as err:  # --force on a folder that is not an adapter
            raise OutputError(str(err)) from None


@app.command()
def pdiff(
    preset: PresetOption = "demo",
    set_: SetOption = None,
    out: OutOption = "runs/demo",
    force: ForceOption = False,
    verbose: VerboseOption = False,
) -> None:
    """p-diff: a classifier zoo on Ray, a parameter autoencoder + latent DDPM (Ray Train), the
    memorisation analysis; write <out>/pdiff/report.md, results.json, scatter.png."""
    run_stage_command("pdiff", preset, list(set_ or []), out, force=force, verbose=verbose)


@app.command()
def apply(
    adapter: Annotated[
        Path, typer.Option("--adapter", help="adapter folder (from wgen generate / wgen demo)")
    ],
    images: Annotated[Path, typer.Option("--images", help="folder of your JPEG/PNG photos")],
    out: Annotated[Path, typer.Option("--out", help="folder for the edited images and grid.png")],
    base: Annotated[
        Path | None,
        typer.Option(
            "--base",
            help="base GAN folder the adapter is for; default: RUN/base of the run folder "
            "the adapter sits in (RUN/adapters/ID)",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="replace an existing --out")] = False,
    max_side: MaxSideOption = 1024,
    strategy: StrategyOption = "guided",  # wgen.gan.fullsize.DEFAULT_STRATEGY (torch-free import here)
) -> None:
    """Edit your own photos with an adapter, each at its own size and aspect ratio (long side
    at most --max-side): writes <out>/<name>.png and a before/after grid."""
    with reported():
        check_apply_options(max_side, strategy)
        base = base or find_base(adapter)
        check_readable_folder(adapter, "an adapter folder from `wgen generate`", "")
        check_readable_folder(base, "a base GAN folder (RUN/base)", "`wgen collect` makes it")
        photos = read_apply_photos(images)
        check_new_output(out, force, "files")
        written = write_edits(adapter, base, photos, out, strategy, max_side)
    typer.echo(f"apply: {len(photos)} image(s) edited → {out} (before/after grid: {written})")


def find_base(adapter: Path) -> Path:
    for candidate in (adapter.parent.parent / "base", adapter.parent.parent / "generator" / "base"):
        if (candidate / "base.json").is_file():
            return candidate
    raise ConfigError(
        f"no base GAN found next to the adapter {adapter} (looked for RUN/base and "
        "RUN/generator/base); pass --base RUN/base"
    )


def read_photos(images: Path) -> list:
    from wgen.data.images import folder_photos

    try:
        return folder_photos(images)
    except ValueError as err:
        raise InputFileError(images, str(err).replace(f"images folder {images} ", "")) from None


def read_apply_photos(images: Path) -> list:
    """`read_photos`, with the files that could not be read named in one line (they are
    skipped) instead of a Python warning with its source line."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        photos = read_photos(images)
    for warning in caught:
        typer.secho(f"warning: {warning.message}", fg=typer.colors.YELLOW, err=True)
    return photos


def check_apply_options(max_side: int, strategy: str) -> None:
    from wgen.gan.fullsize import STRATEGIES

    if max_side < 1:
        raise ConfigError(f"--max-side must be at least 1 pixel, got {max_side}")
    if strategy not in STRATEGIES:
        raise ConfigError(f"--strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")


def write_edits(
    adapter: Path, base_dir: Path, photos: list, out: Path, strategy: str, max_side: int
) -> Path:
    """Edit every photo at its own size (`wgen.gan.fullsize`) with the base GAN and the
    adapter; ``out`` appears with every image and the grid, or not at all."""
    import numpy as np
    from PIL import Image

    from wgen.core.runtime import atomic_dir, torch_threads
    from wgen.gan.fullsize import edit_full_size, fit_side
    from wgen.gan.lora import load_adapter
    from wgen.gan.training import BaseGAN
    from wgen.models.gan import GAN_SIZES

    base = BaseGAN.load(base_dir)
    try:
        model = load_adapter(base.build_generator(), adapter, base.fingerprint)
    except ValueError as err:  # made for another base GAN: name both folders
        raise InputFileError(adapter, f"does not fit the base GAN in {base_dir} ({err})") from None
    image_size = GAN_SIZES[base.size].image_size
    rows = []
    out.parent.mkdir(parents=True, exist_ok=True)
    # One torch thread: the demo GAN has too little work per op to share; on this busy 2-core
    # machine a 512 px photo took 0.6-1.0 s on one thread and 1.6-3.9 s on two.
    with atomic_dir(out) as tmp, torch_threads(1):
        for name, photo in photos:
            source = fit_side(photo, max_side)
            if source.shape != photo.shape:
                h, w = photo.shape[:2]
                typer.echo(
                    f"{name}: {w}x{h} is over --max-side {max_side}; edited at "
                    f"{source.shape[1]}x{source.shape[0]}"
                )
            edited = edit_full_size(model.eval(), source, image_size, strategy)
            Image.fromarray(edited).save(tmp / f"{name}.png")
            rows.append(np.concatenate([source, edited], axis=1))
        width = max(row.shape[1] for row in rows)  # rows of other widths: padded with black
        grid = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows])
        Image.fromarray(grid).save(tmp / "grid.png")
    return out / "grid.png"


def main() -> None:  # pragma: no cover - console entry point
    """The `wgen` process: the app, and after Ctrl-C an exit without interpreter finalisation
    (`exit_after_interrupt`). Here and not in `reported`, so that a caller running the app
    in its own process (a test's CliRunner, a notebook) gets its exit code and carries on."""
    try:
        app(prog_name="wgen")
    except SystemExit as done:
        if done.code == Interrupted.exit_code:
            from wgen.core.runtime import exit_after_interrupt

            exit_after_interrupt(Interrupted.exit_code)
        raise


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
