"""`wgen pdiff`: zoo → autoencoder + latent DDPM → samples → memorisation analysis → report.

Writes under ``<out>/pdiff/``: ``<setting>/zoo/`` (`wgen.pdiff.zoo`), ``<setting>/model/``
(`wgen.pdiff.fit.PdiffModel`), ``ray_results/``, and ``report.md``, ``results.json``,
``scatter.png`` (held-out accuracy versus maximum similarity to the originals, every
method: the p-diff / Zeng et al. figure). The zoo resumes shard by shard; a trained model
with the same fit settings is reused; ``force`` starts over.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from wgen.config import Config, PdiffConfig
from wgen.core.runtime import init_ray, print0, torch_threads, write_json
from wgen.pdiff import analysis
from wgen.pdiff.data import ImageData, PdiffError, load_images
from wgen.pdiff.fit import (
    ParamCodec,
    PdiffModel,
    export,
    fit_digest,
    fit_pdiff,
    model_complete,
    remove_run,
)
from wgen.pdiff.plots import scatter_methods
from wgen.pdiff.zoo import (
    PDIFF_DIR,
    Zoo,
    check_settings,
    derived_seed,
    load_vector,
    predict,
    read_zoo,
    run_zoo,
)

RAY_RESULTS = "ray_results"
SAMPLE_KEY, _BASELINE_KEY = 9, 10  # seed purposes (p-diff's samples: also `wgen.distill.pdiff`)


def evaluate(zoo: Zoo, cfg: PdiffConfig, setting: str, data: ImageData, vectors: np.ndarray):
    """Predictions of each vector loaded into the base classifier: (train, held-out)."""
    model = zoo.model(cfg, setting, data, zoo.vectors[0])
    train, heldout = [], []
    for vector in vectors:
        load_vector(model, zoo.manifest, vector)
        train.append(predict(model, data.x_train))
        heldout.append(predict(model, data.x_heldout))
    return np.stack(train), np.stack(heldout)


def model_folder(out: Path, setting: str) -> Path:
    """Where a setting's trained model (`PdiffModel`) lives in a run folder."""
    return Path(out) / PDIFF_DIR / setting / "model"


def sampler_folder(cfg: PdiffConfig, setting: str) -> Path | None:
    """pdiff.sampler_dir for ``setting``; a folder that holds no p-diff model is refused."""
    if cfg.sampler_dir is None:
        return None
    folder = Path(cfg.sampler_dir.replace("{setting}", setting))
    if not (folder / "info.json").is_file():
        raise PdiffError(
            f"pdiff.sampler_dir={cfg.sampler_dir}: {folder} holds no p-diff model (a "
            "`wgen pdiff` model folder or a `wgen distill --target pdiff` round)"
        )
    return folder


def sampler_model(cfg: PdiffConfig, setting: str, fitted: PdiffModel) -> PdiffModel:
    """The model the generated parameters come from: the fitted one or pdiff.sampler_dir's,
    which must generate the same parameters."""
    folder = sampler_folder(cfg, setting)
    if folder is None:
        return fitted
    sampler = PdiffModel.load(folder)
    if sampler.manifest.to_json() != fitted.manifest.to_json():
        raise PdiffError(
            f"pdiff.sampler_dir: {folder} generates other parameters than {setting}'s zoo"
        )
    print0(f"pdiff: {setting}: sampling from {folder}, {cfg.sample_steps} DDIM steps")
    return sampler


def fit_or_load(config: Config, out: Path, setting: str, zoo: Zoo) -> tuple[PdiffModel, float]:
    """The trained model of this setting (reused if its fit settings match); wall seconds."""
    cfg = config.pdiff
    folder = model_folder(out, setting)
    start = time.perf_counter()
    if model_complete(folder, cfg, setting):
        print0(f"pdiff: {setting} model {folder} matches these settings; reusing it")
        model = PdiffModel.load(folder)
        return model, float(model.info["fit_seconds"])
    codec = ParamCodec.fit(zoo.vectors, zoo.manifest)
    storage = out / PDIFF_DIR / RAY_RESULTS
    remove_run(storage, cfg, setting)  # a finished run would be restored, not trained
    result = fit_pdiff(config, setting, codec.encode(zoo.vectors), storage)
    if result.checkpoint is None:
        raise RuntimeError(f"p-diff fit of {setting} reported no checkpoint; see {storage}")
    seconds = time.perf_counter() - start
    info = {"fit_digest": fit_digest(cfg, setting), "fit_seconds": seconds}
    return export(result.checkpoint, cfg, codec, zoo.manifest, folder, info), seconds


def run_setting(config: Config, out: Path, setting: str, data: ImageData) -> dict[str, Any]:
    cfg = config.pdiff
    timings: dict[str, float] = {}
    zoo_run = run_zoo(config, out, setting)
    timings["zoo_s"] = zoo_run["seconds"]
    zoo = read_zoo(out, setting)
    originals = zoo.vectors
    model, timings["fit_s"] = fit_or_load(config, out, setting, zoo)
    timings["autoencoder_s"] = model.state.seconds["autoencoder"]
    timings["ddpm_s"] = model.state.seconds["ddpm"]

    with torch_threads(cfg.threads):
        start = time.perf_counter()
        sampler = sampler_model(cfg, setting, model)
        # this command's pdiff.sample_steps, not the one saved with a reused model
        seed = derived_seed(cfg.seed, SAMPLE_KEY)
        generated = sampler.sample(cfg.samples, seed, cfg.sample_steps)
        timings["sampling_s"] = time.perf_counter() - start

        rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, _BASELINE_KEY]))
        methods: dict[str, np.ndarray] = {"original": originals, "p-diff": generated}
        for scale in cfg.noise_scales:
            methods[f"noise {scale:g}"] = analysis.noise_added(
                originals, model.codec.std, scale, cfg.samples, rng
            )
        methods[f"average of {cfg.average_of}"] = analysis.averaged(
            originals, cfg.average_of, cfg.samples, rng
        )
        methods["gaussian fit"] = analysis.gaussian_fitted(originals, cfg.samples, rng)
        methods["ae reconstruction"] = model.reconstruct(originals)

        start = time.perf_counter()
        predictions = {m: evaluate(zoo, cfg, setting, data, v) for m, v in methods.items()}
        timings["evaluation_s"] = time.perf_counter() - start

    y_train, y_heldout = data.y_train.numpy(), data.y_heldout.numpy()
    wrong_originals = analysis.wrong_sets(predictions["original"][1], y_heldout)
    stats, points = {}, {}
    for method, vectors in methods.items():
        train_pred, heldout_pred = predictions[method]
        same = method == "original"
        heldout_acc = (heldout_pred == y_heldout).mean(1)
        similarity = analysis.max_similarity(
            analysis.wrong_sets(heldout_pred, y_heldout), wrong_originals, same
        )
        distance = analysis.nearest_distance(vectors, originals, same)
        stats[method] = analysis.method_stats(
            heldout_acc, (train_pred == y_train).mean(1), similarity, distance
        )
        points[method] = {
            "heldout_acc": heldout_acc.tolist(),
            "max_similarity": similarity.tolist(),
        }

    noise = [m for m in methods if m.startswith("noise")]
    novelty = analysis.matched_similarity(
        np.asarray(points["p-diff"]["heldout_acc"]),
        np.asarray(points["p-diff"]["max_similarity"]),
        np.concatenate([points[m]["heldout_acc"] for m in noise]),
        np.concatenate([points[m]["max_similarity"] for m in noise]),
        tolerance=1.0 / len(y_heldout) + 1e-9,  # one held-out example
    )
    between = analysis.pairwise_distances(originals, originals)[np.triu_indices(len(originals), 1)]
    print0(
        f"pdiff: {setting}: original mean {stats['original']['heldout_acc']['mean']:.4f}, "
        f"p-diff mean {stats['p-diff']['heldout_acc']['mean']:.4f} (best "
        f"{stats['p-diff']['heldout_acc']['best']:.4f}); times {json.dumps({k: round(v, 1) for k, v in timings.items()})}"
    )
    return {
        "zoo_models": int(len(originals)),
        "parameters": int(originals.shape[1]),
        "sampler": {
            "folder": str(sampler_folder(cfg, setting) or model_folder(out, setting)),
            "steps": cfg.sample_steps,
        },  # fmt: skip
        "latent_shape": list(model.ae.latent_shape),
        "zoo_shards_trained": zoo_run["shards_trained"],
        "timings_s": timings,
        "final_losses": {
            phase: next(
                (h["loss"] for h in reversed(model.state.history) if h["phase"] == phase), None
            )
            for phase in ("autoencoder", "ddpm")
        },
        "methods": stats,
        "distances_between_originals": analysis.summary(between) if len(between) else {},
        "novelty_vs_noise_at_equal_accuracy": novelty,
        "points": points,
    }


def verdicts(result: dict[str, Any], average_key: str) -> list[str]:
    """Plain sentences computed from the numbers (nothing here is written in advance)."""
    m = result["methods"]
    gen, orig, avg = (
        m["p-diff"]["heldout_acc"],
        m["original"]["heldout_acc"],
        m[average_key]["heldout_acc"],
    )
    novelty = result["novelty_vs_noise_at_equal_accuracy"]

    def cmp(a: float, b: float) -> str:
        return ">=" if a >= b else "<"

    lines = [
        f"p-diff's claim, generated >= original: best {gen['best']:.4f} {cmp(gen['best'], orig['best'])} "
        f"{orig['best']:.4f}, mean {gen['mean']:.4f} {cmp(gen['mean'], orig['mean'])} {orig['mean']:.4f}.",
        f"Against averaging ({average_key}): best {gen['best']:.4f} {cmp(gen['best'], avg['best'])} "
        f"{avg['best']:.4f}, mean {gen['mean']:.4f} {cmp(gen['mean'], avg['mean'])} {avg['mean']:.4f}.",
    ]
    if novelty["matched"]:
        word = "less" if novelty["mean_gap"] > 0 else "more"
        lines.append(
            f"At equal held-out accuracy (±1 example), {novelty['matched']}/{novelty['of']} generated "
            f"models have a noise-added match; their max similarity to the originals is {word} than "
            f"the noise-added models' by {abs(novelty['mean_gap']):.3f} IoU on average "
            f"({'more' if novelty['mean_gap'] > 0 else 'not more'} novel)."
        )
    else:
        lines.append(
            "No noise-added model matches a generated model's accuracy within one example."
        )
    return lines


def write_report(results: dict[str, Any], folder: Path) -> None:
    lines = [
        "# p-diff on wgen",
        "",
        f"Dataset {results['dataset']} ({results['train_images']} training / "
        f"{results['heldout_images']} held-out images). Accuracy is on the held-out images; "
        "similarity = IoU of wrong held-out predictions, maximum over the original checkpoints "
        "(for originals: over the other originals); distance = L2 to the nearest original in "
        "weight space.",
    ]
    for setting, r in results["settings"].items():
        average_key = next(k for k in r["methods"] if k.startswith("average"))
        lines += [
            "",
            f"## {setting}: {r['zoo_models']} models, {r['parameters']} parameters each, latent {r['latent_shape']}",
            "",
            f"p-diff's models: {r['sampler']['folder']}, {r['sampler']['steps']} DDIM steps.",
            "",
            "| method | models | best | mean | median | picked on train | max sim. mean | max sim. median | nearest dist. median |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for method, s in r["methods"].items():
            a, sim, dist = s["heldout_acc"], s["max_similarity"], s["nearest_distance"]
            lines.append(
                f"| {method} | {s['models']} | {a['best']:.4f} | {a['mean']:.4f} | {a['median']:.4f} | "
                f"{s['selected_on_train']['heldout_acc']:.4f} | {sim['mean']:.3f} | {sim['median']:.3f} | "
                f"{dist['median']:.4g} |"
            )
        between = r["distances_between_originals"]
        if between:
            lines += [
                "",
                f"Distances between originals: median {between['median']:.4g}, min {between['min']:.4g}, max {between['best']:.4g}.",
            ]
        lines += ["", *[f"- {v}" for v in verdicts(r, average_key)]]
        lines += [
            "",
            "Wall times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in r["timings_s"].items()),
        ]
        lines += [f"Final losses: {r['final_losses']}"]
    lines += ["", "![accuracy vs similarity](scatter.png)", ""]
    (folder / "report.md").write_text("\n".join(lines))
    write_json(folder / "results.json", results)
    scatter_methods(
        {s: r["points"] for s, r in results["settings"].items()}, folder / "scatter.png"
    )


def run_pdiff(config: Config, out: Path, force: bool = False) -> dict[str, Any]:
    """The whole p-diff stage for every configured setting; returns results.json's content."""
    out = Path(out)
    cfg = config.pdiff
    start = time.perf_counter()
    data = load_images(cfg)  # a bad dataset folder fails here, before Ray starts
    check_settings(config, data)  # and a bad setting or selection spec
    for setting in cfg.settings:
        sampler_folder(cfg, setting)  # and a sampler folder that is not there
    folder = out / PDIFF_DIR
    if force:
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    init_ray()
    results: dict[str, Any] = {
        "dataset": data.name,
        "train_images": int(len(data.y_train)),
        "heldout_images": int(len(data.y_heldout)),
        "torch_threads": cfg.threads,
        "settings": {},
    }
    for setting in cfg.settings:
        with torch_threads(cfg.threads):
            results["settings"][setting] = run_setting(config, out, setting, data)
        results["total_s"] = time.perf_counter() - start
        # after every setting, so a long run that is stopped still leaves what it measured
        write_report(results, folder)
    print0(f"pdiff: report → {folder / 'report.md'} ({results['total_s']:.0f} s)")
    return results


__all__ = ["run_pdiff", "run_setting", "verdicts"]
