"""The ``wgen`` command line. Each command is thin: build the config, print and save it, call
the stage. ``python -m rayjobs.<stage>`` runs the same commands with the same flags."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from wgen.config import Config, ConfigError, load_config

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
OutOption = Annotated[Path, typer.Option("--out", help="run folder shared by all stages")]
ForceOption = Annotated[
    bool, typer.Option("--force", help="redo this stage even if its output is complete")
]


def resolve_config(
    preset: str, overrides: list[str] | None, out: Path | None, stage: str
) -> Config:
    """Build the config; a bad preset/key/value exits with the message instead of a traceback."""
    with exits_on(ConfigError):
        config = load_config(preset, overrides or [])
    if out is not None:
        path = config.save(Path(out) / f"config.{stage}.yaml")
        typer.echo(f"{stage}: preset {preset}, resolved config written to {path}")
    return config


def fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@contextmanager
def exits_on(*errors: type[Exception]) -> Iterator[None]:
    """Bad input raised as one of ``errors`` becomes a one-line message and exit code 2."""
    try:
        yield
    except errors as err:
        fail(str(err))


@app.command()
def concepts(preset: PresetOption = "demo", set_: SetOption = None) -> None:
    """Print the concepts of a preset, one a line: split, tab, text."""
    from wgen.data.concepts import make_concepts

    config = resolve_config(preset, set_, None, "concepts")
    with exits_on(ValueError):
        for concept in make_concepts(config.data):
            typer.echo(f"{concept.split}\t{concept.text}")


@app.command()
def pairs(
    preset: PresetOption = "demo",
    set_: SetOption = None,
    out: OutOption = Path("runs/demo"),
    images: Annotated[
        Path | None, typer.Option("--images", help="folder of your own JPEG/PNG photos")
    ] = None,
    force: ForceOption = False,
) -> None:
    """Edit source crops for every concept on Ray Data; write <out>/pairs/*.parquet."""
    from wgen.data.pairs import run_pairs

    overrides = list(set_ or []) + ([f"data.images_dir={images}"] if images else [])
    config = resolve_config(preset, overrides, out, "pairs")
    with exits_on(ValueError):
        run_pairs(config, out, force=force)


@app.command()
def collect(
    preset: PresetOption = "demo",
    set_: SetOption = None,
    out: OutOption = Path("runs/demo"),
    force: ForceOption = False,
    retry: Annotated[
        bool,
        typer.Option("--retry", help="train again concepts recorded as not converged or failed"),
    ] = False,
) -> None:
    """Train the base GAN, then every concept's LoRA on a Ray actor pool; write <out>/weights/."""
    from wgen.collect.stage import run_collect

    config = resolve_config(preset, set_, out, "collect")
    with exits_on(ValueError, FileNotFoundError):
        run_collect(config, out, force=force, retry=retry)


@app.command()
def train(
    preset: PresetOption = "demo",
    set_: SetOption = None,
    out: OutOption = Path("runs/demo"),
    force: ForceOption = False,
) -> None:
    """Fit the weight generator on <out>/weights with Ray Train; write <out>/generator/."""
    from wgen.generator.fit import run_train

    config = resolve_config(preset, set_, out, "train")
    with exits_on(ValueError, FileNotFoundError):
        run_train(config, out, force=force)


@app.command()
def generate(
    generator: Annotated[
        Path, typer.Option("--generator", help="generator folder (<run>/generator from wgen train)")
    ],
    concept: Annotated[str, typer.Option("--concept", help="the new concept, in words")],
    out: Annotated[Path, typer.Option("--out", help="adapter folder to write (peft format)")],
    steps: Annotated[
        int | None,
        typer.Option("--steps", help="1 = the paper's single direct step; N > 1 = N DDIM steps"),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="noise seed")] = None,
    base: Annotated[
        Path | None,
        typer.Option(
            "--base", help="base GAN folder the adapter is for (checked: same fingerprint)"
        ),
    ] = None,
) -> None:
    """Generate a LoRA for a new concept and write it as a peft adapter; prints the time."""
    from wgen.generator.generate import run_generate

    if steps is not None and steps < 1:
        fail(f"--steps must be at least 1, got {steps}")
    with exits_on(ValueError, FileNotFoundError, FileExistsError):
        run_generate(generator, concept, out, steps=steps, seed=seed, base_dir=base)


@app.command()
def pdiff(
    preset: PresetOption = "demo",
    set_: SetOption = None,
    out: OutOption = Path("runs/demo"),
    force: ForceOption = False,
) -> None:
    """p-diff: a classifier zoo on Ray, a parameter autoencoder + latent DDPM (Ray Train), the
    memorisation analysis; write <out>/pdiff/report.md, results.json, scatter.png."""
    from wgen.pdiff.stage import run_pdiff

    config = resolve_config(preset, set_, out, "pdiff")
    with exits_on(ValueError, FileNotFoundError):
        run_pdiff(config, out, force=force)


@app.command()
def demo(
    out: OutOption = Path("runs/demo"),
    preset: PresetOption = "demo",
    set_: SetOption = None,
) -> None:
    """The whole pipeline on the embedded offline default: pairs → weights → generator → a new concept."""
    from wgen.pipeline import run_demo

    config = resolve_config(preset, set_, out, "demo")
    with exits_on(ValueError, FileNotFoundError):
        run_demo(config, out)


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="wgen")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
