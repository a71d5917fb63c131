"""p-diff's two networks trained in one Ray Train run: the parameter autoencoder, then the
latent DDPM; and `PdiffModel`, the folder that rebuilds both and samples parameters.

Standardisation (`ParamCodec`). Each tensor of the selection is standardised with the mean
and std of all its values over the zoo (p-diff's latest code does the same per tensor), so
BatchNorm scales near 1 and weights near 0 share one range. The noise on the input
(`input_noise`) is in these units.

Worker (`train_loop_per_worker`), the driver pattern of `wgen.generator.fit`:
1. take this worker's shard of the standardised zoo rows from Ray Data and hold it in memory
   (200 rows of a few thousand values: re-streaming it every epoch would cost more than the
   epoch);
2. autoencoder: V' = f_dec(f_enc(V + ξ_V) + ξ_Z), loss ‖V − V'‖², `ae_epochs` epochs;
3. encode the rows (no noise) and scale the latents to unit std over all workers (the DDPM
   assumes data of about that scale, as Stable Diffusion's VAE scaling factor does);
4. DDPM on the scaled latents with the diffusion core (`wgen.diffusion`: diffusers'
   DDPMScheduler, ε-prediction, an unconditional model), `ddpm_epochs` epochs.
Rank 0 attaches a checkpoint to every `report_every`-th report. After a worker failure the
new group restores the networks and the epochs done and goes on (the optimizers restart:
a few hundred small steps, not worth a safetensors round trip here).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from wgen.config import Config, PdiffConfig
from wgen.core.runfolder import fingerprint
from wgen.core.runtime import (
    atomic_dir,
    fit_interruptibly,
    print0,
    read_json,
    train_logging_config,
    write_json,
)
from wgen.diffusion import NoiseSchedule, masked_mse, sample_ddim
from wgen.models.param_autoencoder import LatentDenoiser, ParamAutoencoder
from wgen.pdiff.data import PdiffError
from wgen.weights.format import Manifest

AE_FILE = "autoencoder.safetensors"
DENOISER_FILE = "denoiser.safetensors"
CODEC_FILE = "codec.safetensors"
MANIFEST_FILE = "manifest.json"
STATE_FILE = "state.json"
# Fields that shape the trained networks; the rest (sampling, baselines) can change freely.
FIT_FIELDS = (
    "token", "ae_channels", "ae_downsample", "latent_channels", "input_noise", "latent_noise",
    "ae_epochs", "ae_lr", "ddpm_channels", "ddpm_blocks", "ddpm_epochs", "ddpm_lr",
    "train_batch", "train_timesteps", "beta_schedule", "seed",
)  # fmt: skip


# ---------------------------------------------------------------------------------------
# Standardisation and network construction (pure)
# ---------------------------------------------------------------------------------------


@dataclass
class ParamCodec:
    """Per-tensor standardisation of flat vectors, stored expanded to one (mean, std) per value."""

    mean: np.ndarray  # (P,)
    std: np.ndarray  # (P,)

    @classmethod
    def fit(cls, vectors: np.ndarray, manifest: Manifest) -> ParamCodec:
        mean, std = np.empty(vectors.shape[1], np.float32), np.empty(vectors.shape[1], np.float32)
        start = 0
        for group in manifest.groups:
            for entry in group.entries:
                part = slice(start + entry.offset, start + entry.offset + entry.numel)
                values = vectors[:, part]
                mean[part] = values.mean()
                std[part] = max(float(values.std()), 1e-8)  # a constant tensor stays finite
            start += group.numel
        return cls(mean, std)

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        return ((vectors - self.mean) / self.std).astype(np.float32)

    def decode(self, standardised: np.ndarray) -> np.ndarray:
        return (standardised * self.std + self.mean).astype(np.float32)


def build_autoencoder(cfg: PdiffConfig, numel: int) -> ParamAutoencoder:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return ParamAutoencoder(
            numel, cfg.token, list(cfg.ae_channels), cfg.ae_downsample, cfg.latent_channels
        )


def build_latent_denoiser(cfg: PdiffConfig, latent_shape: tuple[int, int]) -> LatentDenoiser:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 1)
        return LatentDenoiser(latent_shape, cfg.ddpm_channels, cfg.ddpm_blocks)


def latent_schedule(cfg: PdiffConfig) -> NoiseSchedule:
    """The latent DDPM's schedule: ε-prediction over pdiff.train_timesteps."""
    return NoiseSchedule("epsilon", cfg.train_timesteps, cfg.beta_schedule)


def autoencoder_loss(
    model: ParamAutoencoder, v: torch.Tensor, cfg: PdiffConfig, generator: torch.Generator
) -> torch.Tensor:
    """p-diff's loss ‖V − f_dec(f_enc(V + ξ_V) + ξ_Z)‖² on standardised rows V."""
    out = model(v, cfg.input_noise, cfg.latent_noise, generator)
    return masked_mse(out, v)


def latent_ddpm_loss(
    model: LatentDenoiser, schedule: NoiseSchedule, z0: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """The DDPM loss E‖ε − ε̂θ(z_t, t)‖² on scaled latents z0 (B, C, L)."""
    return schedule.training_loss(model, z0, generator=generator)


def fit_digest(cfg: PdiffConfig, setting: str) -> str:
    fields = {k: getattr(cfg, k) for k in FIT_FIELDS}
    return fingerprint({"setting": setting, **fields}, length=10)


# ---------------------------------------------------------------------------------------
# The worker
# ---------------------------------------------------------------------------------------


@dataclass
class FitState:
    ae_epoch: int = 0
    ddpm_epoch: int = 0
    latent_scale: float = 1.0
    seconds: dict[str, float] = field(default_factory=lambda: {"autoencoder": 0.0, "ddpm": 0.0})
    history: list[dict[str, Any]] = field(default_factory=list)


def all_reduce_sum(values: list[float]) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(tensor)
    return tensor.tolist()


def save_networks(folder: Path, ae: ParamAutoencoder, den: LatentDenoiser, state: FitState) -> None:
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in ae.state_dict().items()},
        str(folder / AE_FILE),
    )
    save_file(
        {k: v.detach().cpu().contiguous() for k, v in den.state_dict().items()},
        str(folder / DENOISER_FILE),
    )
    write_json(folder / STATE_FILE, dataclasses.asdict(state))


def epoch_loss(model, optimizer, rows: torch.Tensor, batch: int, generator, loss_fn) -> float:
    """One shuffled pass; the mean loss over all workers' batches."""
    total, count = 0.0, 0
    for index in torch.randperm(len(rows), generator=generator).split(batch):
        loss = loss_fn(model, rows[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total, count = total + loss.item(), count + 1
    total, count = all_reduce_sum([total, count])
    return total / max(count, 1)


def shard_rows() -> torch.Tensor:
    """This Ray Train worker's rows of dataset "train", held in memory (a few hundred small
    rows: re-streaming them every epoch would cost more than the epoch)."""
    import ray.train

    shard = ray.train.get_dataset_shard("train")
    return torch.cat([b["data"] for b in shard.iter_torch_batches(batch_size=1024)]).float()


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    cfg = Config.from_dict(loop_config["config"]).pdiff
    torch.set_num_threads(cfg.threads)
    context = ray.train.get_context()
    rank, workers = context.get_world_rank(), context.get_world_size()
    batch = cfg.train_batch // workers

    # 1. this worker's rows, once
    rows = shard_rows()

    ae = build_autoencoder(cfg, rows.shape[1])
    den = build_latent_denoiser(cfg, ae.latent_shape)
    state = FitState()
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            ae.load_state_dict(load_file(str(Path(folder) / AE_FILE)))
            den.load_state_dict(load_file(str(Path(folder) / DENOISER_FILE)))
            state = FitState(**read_json(Path(folder) / STATE_FILE))
    generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + rank + 7919 * state.ae_epoch)

    def report(metrics: dict[str, Any], due: bool) -> None:
        if not due:
            return
        state.history.append(metrics)
        with tempfile.TemporaryDirectory() as tmp:
            attached = None
            if rank == 0:
                save_networks(Path(tmp), ae, den, state)
                attached = ray.train.Checkpoint.from_directory(tmp)
                print0(
                    f"pdiff: {loop_config['setting']} {metrics['phase']} epoch "
                    f"{metrics['epoch']} loss {metrics['loss']:.5f}"
                )
            ray.train.report(metrics, checkpoint=attached)

    # 2. the autoencoder
    def ae_loss(model, v):
        return autoencoder_loss(model, v, cfg, generator)

    parallel = ray.train.torch.prepare_model(ae)
    optimizer = torch.optim.AdamW(ae.parameters(), lr=cfg.ae_lr)
    for epoch in range(state.ae_epoch + 1, cfg.ae_epochs + 1):
        start = time.perf_counter()
        loss = epoch_loss(parallel, optimizer, rows, batch, generator, ae_loss)
        state.ae_epoch = epoch
        state.seconds["autoencoder"] += time.perf_counter() - start
        due = epoch % cfg.report_every == 0 or epoch == cfg.ae_epochs
        report({"phase": "autoencoder", "epoch": epoch, "loss": loss}, due)

    # 3. latents, scaled to unit std over every worker's rows
    ae.eval()
    with torch.no_grad():
        z = ae.encode(rows)
    total, squares, count = all_reduce_sum([float(z.sum()), float((z**2).sum()), z.numel()])
    mean = total / count
    state.latent_scale = math.sqrt(max(squares / count - mean**2, 1e-12))
    z = z / state.latent_scale

    # 4. the latent DDPM
    schedule = latent_schedule(cfg)

    def ddpm_loss(model, z0):
        return latent_ddpm_loss(model, schedule, z0, generator)

    parallel = ray.train.torch.prepare_model(den)
    optimizer = torch.optim.AdamW(den.parameters(), lr=cfg.ddpm_lr)
    for epoch in range(state.ddpm_epoch + 1, cfg.ddpm_epochs + 1):
        start = time.perf_counter()
        loss = epoch_loss(parallel, optimizer, z, batch, generator, ddpm_loss)
        state.ddpm_epoch = epoch
        state.seconds["ddpm"] += time.perf_counter() - start
        due = epoch % cfg.report_every == 0 or epoch == cfg.ddpm_epochs
        report({"phase": "ddpm", "epoch": epoch, "loss": loss}, due)


# ---------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------


def fit_pdiff(config: Config, setting: str, standardised: np.ndarray, storage: Path):
    """One TorchTrainer run over the standardised zoo rows; returns Ray Train's Result.
    The run name is a digest of the fit settings, so a re-submitted job resumes its run."""
    cfg = config.pdiff
    check_batch(cfg)
    return fit_rows(
        train_loop_per_worker,
        {"config": config.to_dict(), "setting": setting},
        cfg,
        f"pdiff-{setting}-{fit_digest(cfg, setting)}",
        storage,
        standardised,
    )


def check_batch(cfg: PdiffConfig) -> int:
    """Rows per worker batch; a global batch that does not divide by the workers is refused."""
    if cfg.workers < 1 or cfg.train_batch % cfg.workers:
        raise PdiffError(
            f"pdiff.train_batch={cfg.train_batch} must divide by pdiff.workers={cfg.workers}"
        )
    return cfg.train_batch // cfg.workers


def fit_rows(loop, loop_config: dict, cfg: PdiffConfig, name: str, storage: Path, rows: np.ndarray):
    """A TorchTrainer of ``loop`` on ``rows`` (dataset "train") with p-diff's resources,
    fault tolerance and checkpoint settings (`wgen.distill.pdiff` trains its students so too);
    returns Ray Train's Result. The same ``name`` and ``storage`` resume the run."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ray.data.DataContext.get_current().enable_progress_bars = False
    trainer = TorchTrainer(
        loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=cfg.workers, resources_per_worker={"CPU": cfg.cpus_per_worker}
        ),
        run_config=RunConfig(
            name=name,
            storage_path=str(Path(storage).resolve()),
            failure_config=FailureConfig(max_failures=2),
            logging_config=train_logging_config(),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
        datasets={"train": ray.data.from_numpy(rows)},
    )
    return fit_interruptibly(trainer)


# ---------------------------------------------------------------------------------------
# The trained model: a folder that rebuilds itself and samples parameters
# ---------------------------------------------------------------------------------------


class PdiffModel:
    """Autoencoder + latent denoiser + codec + manifest: everything to sample a flat vector."""

    def __init__(
        self,
        cfg: PdiffConfig,
        ae: ParamAutoencoder,
        denoiser: LatentDenoiser,
        codec: ParamCodec,
        manifest: Manifest,
        state: FitState,
        info: dict[str, Any],
    ) -> None:
        self.cfg, self.ae, self.denoiser = cfg, ae.eval(), denoiser.eval()
        self.codec, self.manifest, self.state, self.info = codec, manifest, state, info

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        save_networks(folder, self.ae, self.denoiser, self.state)
        save_file(
            {"mean": torch.from_numpy(self.codec.mean), "std": torch.from_numpy(self.codec.std)},
            str(folder / CODEC_FILE),
        )
        (folder / MANIFEST_FILE).write_text(self.manifest.to_json())
        write_json(folder / "info.json", {"pdiff": dataclasses.asdict(self.cfg), **self.info})

    @classmethod
    def load(cls, folder: Path) -> PdiffModel:
        folder = Path(folder)
        info = read_json(folder / "info.json")
        cfg = PdiffConfig(**info.pop("pdiff"))
        codec_tensors = load_file(str(folder / CODEC_FILE))
        codec = ParamCodec(codec_tensors["mean"].numpy(), codec_tensors["std"].numpy())
        ae = build_autoencoder(cfg, len(codec.mean))
        ae.load_state_dict(load_file(str(folder / AE_FILE)))
        den = build_latent_denoiser(cfg, ae.latent_shape)
        den.load_state_dict(load_file(str(folder / DENOISER_FILE)))
        manifest = Manifest.from_json((folder / MANIFEST_FILE).read_text())
        return cls(cfg, ae, den, codec, manifest, FitState(**read_json(folder / STATE_FILE)), info)

    @classmethod
    def from_checkpoint(cls, checkpoint, cfg, codec, manifest, info) -> PdiffModel:
        with checkpoint.as_directory() as folder:
            state = FitState(**read_json(Path(folder) / STATE_FILE))
            ae = build_autoencoder(cfg, len(codec.mean))
            ae.load_state_dict(load_file(str(Path(folder) / AE_FILE)))
            den = build_latent_denoiser(cfg, ae.latent_shape)
            den.load_state_dict(load_file(str(Path(folder) / DENOISER_FILE)))
        return cls(cfg, ae, den, codec, manifest, state, info)

    @torch.no_grad()
    def reconstruct(self, vectors: np.ndarray) -> np.ndarray:
        """f_dec(f_enc(V)) without noise, in raw parameter units."""
        v = torch.from_numpy(self.codec.encode(vectors))
        return self.codec.decode(self.ae.decode(self.ae.encode(v)).numpy())

    @torch.no_grad()
    def sample(self, count: int, seed: int, steps: int | None = None) -> np.ndarray:
        """``count`` flat parameter vectors: DDIM from noise in latent space, decode, un-standardise."""
        generator = torch.Generator().manual_seed(seed)
        shape = (count, *self.ae.latent_shape)
        steps = steps or self.cfg.sample_steps
        z = sample_ddim(latent_schedule(self.cfg), self.denoiser, steps, shape, generator)
        v = self.ae.decode(z * self.state.latent_scale)
        return self.codec.decode(v.numpy())


def export(
    checkpoint, cfg: PdiffConfig, codec: ParamCodec, manifest: Manifest, folder: Path, info: dict
) -> PdiffModel:
    """Rebuild the model from a Ray Train checkpoint and write it to ``folder`` atomically."""
    model = PdiffModel.from_checkpoint(checkpoint, cfg, codec, manifest, info)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(folder) as tmp:
        model.save(tmp)
    return model


def model_complete(folder: Path, cfg: PdiffConfig, setting: str) -> bool:
    path = Path(folder) / "info.json"
    return path.exists() and read_json(path).get("fit_digest") == fit_digest(cfg, setting)


def remove_run(storage: Path, cfg: PdiffConfig, setting: str) -> None:
    shutil.rmtree(Path(storage) / f"pdiff-{setting}-{fit_digest(cfg, setting)}", ignore_errors=True)
