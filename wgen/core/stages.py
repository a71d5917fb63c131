"""The stages of wgen in one table that every caller reads.

A stage is named once, here: the config sections that shape what it writes, the checks of its
values, the finished stages it reads, the folder and files it writes, what a run folder at a
URI moves for it, and its entry function. The command line (`wgen.cli`), the run-folder
records (`wgen.core.runfolder`), the input checks (`wgen.core.integrity`), the pipeline and
``rayjobs`` all look a stage up in `STAGES`.

The table imports no stage package: checks and entry functions are named ``module:function``
and imported when called, so that this module stays in the bottom layer and importing it
costs nothing (docs/architecture.md, "Packages and layers").
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# What the command line hands a stage's entry function besides (config, out): each stage's
# `Stage.options` names the ones it takes.
OPTIONS = ("force", "retry", "overrides", "storage")


@dataclass(frozen=True)
class Stage:
    """One stage of wgen; see the module docstring."""

    name: str
    folder: str  # its folder under the run folder ("" for demo: the run folder itself)
    # "module:function" called as entry(config, out, **{option: value for each of `options`})
    entry: str
    options: tuple[str, ...] = ()  # which of `OPTIONS` the entry takes
    # "module:function" checks, each check(config), run in order before Ray starts; the first
    # problem is a `ConfigError` naming the key. A stage checks its own section in its package.
    checks: tuple[str, ...] = ()
    # Finished stages whose files it reads (checked against their records before it runs);
    # the last one is the input it needs finished and made with the same settings.
    reads: tuple[str, ...] = ()
    # Config sections that shape its output, its inputs' too: the fields of its record in
    # ``_SUCCESS.json`` (`wgen.core.runfolder`). () = no such record; the stage's entry keeps
    # its own (tune's search, the bench's record, distill's run names).
    sections: tuple[str, ...] = ()
    files: tuple[str, ...] = ()  # what it writes for later stages, as patterns in the run folder
    # For a run folder at a URI: what it reads into the staging copy before it runs (its
    # inputs, and its own folder to resume or skip) and what it sends back after, in this
    # order. None = it runs on a local or shared folder only.
    pulls: tuple[str, ...] | None = None
    pushes: tuple[str, ...] = ()
    # A recorded stage found finished with the same record: "module:function"(done, config,
    # out, retry) -> whether to skip it (None: always); then check_done(summary, config), also
    # after a run (collection's share of converged concepts).
    can_skip: str | None = None
    check_done: str | None = None
    runs: tuple[str, ...] = ()  # a command that runs other stages (demo): their names, in order

    @property
    def recorded(self) -> bool:
        """Whether `wgen.pipeline.run_stage` keeps its record (refuse, skip, save config)."""
        return bool(self.sections)

    @property
    def input(self) -> str | None:
        """The stage whose finished output it needs, made with the same settings."""
        return self.reads[-1] if self.reads else None

    def run(self, config: Any, out: Any, **options: Any) -> Any:
        """Call the entry function with the options it takes (the others are not its own)."""
        taken = {key: value for key, value in options.items() if key in self.options}
        return load(self.entry)(config, out, **taken)


def load(name: str) -> Callable[..., Any]:
    """The function that ``module:function`` names, imported now."""
    module, function = name.split(":")
    return getattr(importlib.import_module(module), function)


_DATA = "wgen.data.validate:validate"
_COLLECT = "wgen.collect.validate:validate"
_TRAIN = "wgen.generator.validate:validate_train"
_GENERATE = "wgen.generator.validate:validate_generate"

STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        Stage(
            "pairs",
            folder="pairs",
            entry="wgen.data.pairs:run_pairs",
            options=("force", "storage"),
            checks=(_DATA,),
            sections=("data",),
            files=("concepts.jsonl", "pairs/*.parquet"),
            pulls=("concepts.jsonl", "pairs/_SUCCESS.json"),
            pushes=("concepts.jsonl", "config.pairs.yaml", "pairs/_SUCCESS.json"),
        ),
        Stage(
            "collect",
            folder="weights",
            entry="wgen.collect.stage:run_collect",
            options=("force", "retry", "storage"),
            checks=(_COLLECT,),
            reads=("pairs",),
            sections=("data", "gan", "lora", "collect"),
            # collection's _status/ and _attempts/ are its own bookkeeping, rewritten by a
            # re-run and read by no one else
            files=("base/*", "weights/_manifest.json", "weights/*.parquet"),
            pulls=("concepts.jsonl", "pairs", "base", "weights"),
            pushes=("config.collect.yaml", "base", "weights"),
            can_skip="wgen.collect.stage:can_skip",
            check_done="wgen.collect.stage:check_min_converged",
        ),
        Stage(
            "train",
            folder="generator",
            entry="wgen.generator.fit:train_stage",
            options=("force", "storage"),
            checks=(_TRAIN, _GENERATE),
            reads=("pairs", "collect"),
            sections=("data", "gan", "lora", "collect", "denoiser", "train"),
            files=("generator/**/*",),
            pulls=("concepts.jsonl", "pairs", "base", "weights", "generator"),
            pushes=("config.train.yaml", "generator"),
            can_skip="wgen.generator.fit:can_skip",
        ),
        Stage(
            "tune",
            folder="tune",
            entry="wgen.tune.search:run_tune",
            options=("force", "overrides"),
            checks=("wgen.tune.space:parse_space",),
            reads=("pairs", "collect"),
        ),
        Stage(
            "bench",
            folder="bench",
            entry="wgen.bench.stage:run_bench",
            options=("force", "overrides", "storage"),
            checks=(_COLLECT, _GENERATE, "wgen.bench.validate:validate"),
            reads=("pairs", "collect", "train"),
            pulls=("concepts.jsonl", "pairs", "base", "weights", "generator", "bench"),
            pushes=("bench",),
        ),
        Stage(
            "distill",
            folder="distill",
            entry="wgen.distill.stage:run_distill",
            options=("force", "overrides"),
            checks=(_GENERATE, "wgen.distill.validate:validate"),
            reads=("pairs", "collect", "train"),
        ),
        # p-diff checks pdiff.* where it starts (`wgen.pdiff.stage.check_settings`)
        Stage("pdiff", folder="pdiff", entry="wgen.pdiff.stage:run_pdiff", options=("force",)),
        Stage(
            "demo",
            folder="",
            entry="wgen.pipeline:run_demo",
            options=("force", "overrides"),
            runs=("pairs", "collect", "train", "bench", "distill"),
        ),
    )
}


def validate_stage(config: Any, name: str) -> None:
    """Check every value the stage ``name`` (and the stages it runs, for ``demo``) will use;
    the first problem is a `ConfigError` naming the key and what would be right."""
    checks: list[str] = []
    for stage in STAGES[name].runs or (name,):
        checks += [check for check in STAGES[stage].checks if check not in checks]
    for check in checks:
        load(check)(config)
