"""`wgen finetune`: a new concept from the user's photos in seconds — generate its LoRA with
the weight generator, then fine-tune it with the collection's loop until converged.

Pairs are made from the photos with the generator's configured editor (seeded crops, the
last `collect.eval_pairs` held back for evaluation), the LoRA comes from
`WeightGenerator.generate` (one direct step unless `generate.steps` says otherwise), and the
fine-tuning is `wgen.gan.training.train_lora` under the bench's rule
(`wgen.bench.stage.bench_monitor`), printing the held-back paired L1 against time, and ends
with the best model on the held-back pairs. Those pairs both stop the run and score it here
(a user's few photos leave no third split), so the printed final L1 is optimistic; `wgen
bench` keeps the two apart. The result is a standard peft adapter folder, as `wgen generate`
writes it (`BaseModel.export`).

Like the bench's loop, the fine-tuning is the GAN's own: another family is refused in one
line (`wgen.bench.stage.FINE_TUNED_FAMILY`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from wgen.bench.stage import (
    FINE_TUNED_FAMILY,
    ProbeL1,
    bench_monitor,
    bench_rule,
    file_concept_id,
    make_pairs,
    parse_text,
)
from wgen.core.errors import ConfigError, InputFileError
from wgen.core.runtime import atomic_dir, print0, torch_threads


def run_finetune(generator_dir: Path, text: str, images: Path, out_dir: Path) -> dict[str, Any]:
    """Write the fine-tuned adapter for ``text`` to ``out_dir``; returns the curve and times."""
    from wgen.gan.metrics import build_feature_extractor
    from wgen.gan.training import Evaluator, concept_seed, cpu_trainable_state_dict, train_lora
    from wgen.generator.checkpoint import WeightGenerator

    generator = WeightGenerator.load(Path(generator_dir))
    if generator.base.family != FINE_TUNED_FAMILY:
        raise ConfigError(
            f"wgen finetune fine-tunes the {FINE_TUNED_FAMILY} base model only; the generator "
            f"in {generator_dir} is for the {generator.base.family!r} family"
        )
    config = dataclasses.replace(
        generator.config,
        data=dataclasses.replace(generator.config.data, images_dir=str(images)),
    )
    parse_text(config.data, Path("--concept"), 1, text)  # a word the editor does not know
    concept_id = file_concept_id(text)
    try:
        (pairs,) = make_pairs(config, [(concept_id, text)])
    except ValueError as err:  # no readable photos
        raise InputFileError(images, str(err)) from None
    if len(pairs.train_sources) < 1:
        raise InputFileError(
            images,
            f"gives {len(pairs.train_sources) + len(pairs.eval_sources)} crops; fine-tuning "
            f"needs more than collect.eval_pairs={config.collect.eval_pairs} (add photos)",
        )
    rule = bench_rule(config)
    with torch_threads(config.gan.threads):
        generator.encoder  # noqa: B018 - load τ before the clock
        state, gen_seconds = generator.generate(text)
        probe = ProbeL1(pairs, rule.bench.eval_every, set())
        extractor = build_feature_extractor(config.collect.feature_extractor)
        run = train_lora(
            generator.base.gan,
            rule,
            pairs,
            extractor,
            init=state,
            k_checkpoints=0,
            seed=concept_seed(config.data.seed, concept_id),
            evaluate=probe,
            monitor=bench_monitor(rule.bench),
        )
        final = Evaluator(pairs.eval_sources, pairs.eval_targets, extractor)(probe.generator)
    print0(f"finetune: LoRA generated for {text!r} in {gen_seconds * 1000:.0f} ms")
    for h in run.history:
        print0(
            f"finetune: step {h['step']:5d}  {gen_seconds + h['train_seconds']:7.2f} s  "
            f"held-back L1 {h['l1']:.4f}  PSNR {h['psnr']:.2f} dB"
        )
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out_dir) as tmp:
        generator.base.export(cpu_trainable_state_dict(probe.generator), tmp)
    end = run.history[-1]
    verdict = (
        f"converged at step {run.converged_step}"
        if run.converged
        else f"stopped without converging ({run.reason})"
    )
    print0(
        f"finetune: {verdict}, {gen_seconds + end['train_seconds']:.1f} s "
        f"(generation + training, evaluation excluded); L1 {run.history[0]['l1']:.4f} → "
        f"{final['l1']:.4f}, FD {final['fd']:.3f} → {out_dir}"
    )
    return {
        "adapter": str(out_dir),
        "generation_seconds": gen_seconds,
        "status": run.status,
        "converged_step": run.converged_step,
        "history": run.history,
        "final": final,
    }
