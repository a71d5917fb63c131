"""Running stages on a run folder: the checks every stage command shares, and `wgen demo`.

`run_stage` is what `wgen pairs | collect | train` and `wgen demo` call: it refuses a run
folder made with other settings (naming the fields), skips a finished stage without writing
anything, and otherwise writes the resolved config beside the outputs and runs the stage.
The caller validates the config and holds the run folder's lock (`wgen.cli`). For a run
folder at a URI, `synced` brings what a stage reads into the staging copy and sends back what
it wrote (`wgen.core.storage`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from wgen.config import Config
from wgen.core.integrity import verify_inputs
from wgen.core.runfolder import check_input, check_own, command_args, stage_folder
from wgen.core.runtime import print0
from wgen.core.stages import STAGES, load
from wgen.core.storage import RunStorage


@contextmanager
def synced(storage: RunStorage, stage: str) -> Iterator[None]:
    """Pull what ``stage`` reads into the staging copy, run the block, push what it wrote,
    also when it failed or was interrupted (what it finished is kept, as on a local path).
    Nothing to do for a local run folder."""
    if not storage.remote:
        yield
        return
    print0(f"{stage}: run folder {storage}, staged in {storage.local}")
    storage.pull(list(STAGES[stage].pulls or ()))
    try:
        yield
    finally:
        storage.push(list(STAGES[stage].pushes))


def run_stage(
    stage: str,
    config: Config,
    out: Path,
    force: bool = False,
    retry: bool = False,
    overrides: Sequence[str] = (),
    storage: RunStorage | None = None,
) -> dict[str, Any]:
    """Run ``stage``, one whose record this keeps (`wgen.core.stages.Stage.recorded`: pairs,
    collect, train), on the run folder ``out`` (the staging copy of ``storage`` when that is
    a URI)."""
    out = Path(out)
    check_input(out, stage, config, overrides)
    verify_inputs(out, stage, command_args(config, out, overrides))
    done = check_own(out, stage, config, force)
    folder = stage_folder(out, stage)
    spec = STAGES[stage]
    if done is not None and (
        spec.can_skip is None or load(spec.can_skip)(done, config, out, retry)
    ):
        print0(
            f"{stage}: {folder} is complete (preset {config.preset}, same settings); "
            "skipping (--force redoes it)"
        )
        summary = done
    else:
        path = config.save(out / f"config.{stage}.yaml")
        print0(f"{stage}: preset {config.preset}, resolved config written to {path}")
        summary = spec.run(config, out, force=force, retry=retry, storage=storage)
    if spec.check_done is not None:
        load(spec.check_done)(summary, config)
    return summary


def run_demo(config: Config, out: Path, force: bool = False, overrides: Sequence[str] = ()) -> None:
    out = Path(out)
    print0(f"demo: run folder {out.resolve()}")
    # the recorded stages (pairs, collect, train) in full; the bench after them is a small one
    for stage in (name for name in STAGES["demo"].runs if STAGES[name].recorded):
        run_stage(stage, config, out, force=force, overrides=overrides)
    generate_heldout_example(out)
    demo_bench(config, out, overrides)
    demo_distill(config, out, force=force, overrides=overrides)


# The demo's generator is trained without text dropout (denoiser.cond_drop 0: measured better
# unguided, docs/results/distill/README.md), so its distillation is the progressive half alone:
# DDIM 2 steps → 1, one Ray Train round. With --set denoiser.cond_drop=0.1 the demo distils
# guidance too, with the preset's distill.* values.
DEMO_UNGUIDED_DISTILL = {"w_min": 0.0, "w_max": 0.0, "start_steps": 2}


def demo_distill(
    config: Config, out: Path, force: bool = False, overrides: Sequence[str] = ()
) -> dict[str, Any]:
    """A short `wgen distill` at the end of the demo; prints where its students are."""
    import dataclasses

    from wgen.distill.fit import DISTILL_DIR
    from wgen.distill.stage import run_distill

    if config.denoiser.cond_drop <= 0:
        distill = dataclasses.replace(config.distill, **DEMO_UNGUIDED_DISTILL)
        config = dataclasses.replace(config, distill=distill)
        print0("demo: distillation of the generator's steps (no text dropout, so no guidance)")
    results = run_distill(config, out, force=force, overrides=overrides)
    for record in results["rounds"]:
        steps = record["steps"]
        folder = Path(out) / DISTILL_DIR / record["round"]
        print0(
            f"demo: distilled student {folder} ({steps} step{'s' * (steps > 1)}): "
            f"wgen generate --generator {folder} --concept TEXT --out ADAPTER"
        )
    return results


# The demo's bench: the main methods on a few held-out concepts, one seed (a few minutes on
# 2 cores); `wgen bench --out DIR` on the same folder continues it with every method.
DEMO_BENCH = {"methods": ["scratch", "lora-zero", "mean", "ridge", "wgen-1"], "seeds": 1}
DEMO_BENCH_CONCEPTS = 3


def demo_bench(config: Config, out: Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """A small `wgen bench` at the end of the demo; prints its summary and where the report is."""
    import dataclasses

    from wgen.bench.stage import BENCH_DIR, run_bench

    concepts = min(config.bench.max_concepts or DEMO_BENCH_CONCEPTS, DEMO_BENCH_CONCEPTS)
    bench = dataclasses.replace(
        config.bench, **DEMO_BENCH, max_concepts=concepts, concepts_file=None
    )
    print0(
        f"demo: bench of {', '.join(bench.methods)} on {concepts} held-out concept(s) "
        f"(the full bench: wgen bench --preset {config.preset} --out {out})"
    )
    results = run_bench(dataclasses.replace(config, bench=bench), out, overrides=overrides)
    print0(f"demo: bench report {Path(out) / BENCH_DIR / 'report.md'}")
    return results


def generate_heldout_example(out: Path) -> dict | None:
    """A LoRA for the first held-out concept (never collected, never trained on), written to
    ``<out>/adapters/<concept id>`` with the generator's default sampling; kept if present."""
    from wgen.core.errors import RunFolderError
    from wgen.data.pairs import CONCEPTS_FILE, load_concepts
    from wgen.generator.fit import GENERATOR_DIR
    from wgen.generator.generate import run_generate

    out = Path(out)
    heldout = [c for c in load_concepts(out / CONCEPTS_FILE) if c.split == "heldout"]
    if not heldout:
        raise RunFolderError(f"{out / CONCEPTS_FILE} lists no held-out concept to generate for")
    concept = heldout[0]
    adapter = out / "adapters" / concept.id
    if (adapter / "adapter_config.json").exists():
        print0(f"demo: {adapter} exists (LoRA for {concept.text!r}); kept")
        return None
    return run_generate(out / GENERATOR_DIR, concept.text, adapter)
