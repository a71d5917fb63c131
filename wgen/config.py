"""Typed configuration: one dataclass per stage, presets as small overlays, ``--set`` overrides.

Every default lives here and nowhere else. A preset is a dict of ``"section.key": value``
overrides on top of these defaults; ``--set section.key=value`` on the command line goes on
top of the preset. Workers receive ``Config.to_dict()`` and rebuild the dataclass with
``Config.from_dict``; they never read module globals.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from wgen.core.errors import ConfigError

__all__ = ["PRESETS", "Config", "ConfigError", "load_config"]


@dataclass
class DataConfig:
    """Concepts, source images and the concept → image-pair stage."""

    seed: int = 0  # seeds concept generation, crop positions and the splits
    image_size: int = 32  # side of the square crops, pixels
    n_train_concepts: int = 200  # distinct training concepts
    n_val_concepts: int = 24  # validation concepts (seen primitives, new texts)
    n_heldout_concepts: int = 24  # held out: half unseen combinations, half unseen paraphrases
    pairs_per_concept: int = 24  # (source, edited) pairs made for every concept
    crops_per_photo: int = 64  # random crops cut from each source photo (the crop pool)
    images_dir: str | None = (
        None  # folder of the user's JPEG/PNG photos; None = photos shipped in scikit-image/learn
    )
    editor: str = "procedural"  # "procedural" (offline, CPU) or "instruct-pix2pix" (diffusers, GPU)
    editor_model_dir: str | None = (
        None  # local InstructPix2Pix folder; required by "instruct-pix2pix"
    )
    editor_steps: int = 20  # InstructPix2Pix denoising steps
    editor_guidance: float = 7.5  # InstructPix2Pix text guidance scale
    editor_image_guidance: float = (
        1.5  # InstructPix2Pix image guidance scale (higher = closer to the source)
    )
    editor_max_batch: int = 8  # images per InstructPix2Pix call (bounds GPU memory at 256 px)
    editor_actors: int = 2  # most editor actors in the Ray Data pool (the pool scales from 1)
    editor_cpus: float = (
        0.5  # logical CPUs per editor actor; fractional so read tasks are not starved
    )
    editor_gpus: float = 0.0  # GPUs per editor actor (1.0 for instruct-pix2pix on a cluster)
    editor_batch_size: int = 64  # pairs per batch handed to an editor actor
    rows_per_shard: int = 2048  # most pairs in one Parquet shard under <out>/pairs/


@dataclass
class GANConfig:
    """The E2GAN-like generator, the PatchGAN discriminator and their losses."""

    size: str = "demo"  # key into wgen.models.gan.GAN_SIZES
    lambda_l1: float = 100.0  # λ in the pix2pix loss: adversarial + λ·L1 (pix2pix uses 100)
    batch_size: int = 16  # pairs per optimisation step
    lr: float = 2e-4  # Adam learning rate for whole-network training (base, scratch)
    base_steps: int = 600  # steps of base-generator training on the mixture of training concepts
    base_concepts: int | None = None  # training concepts mixed into the base; None = all
    threads: int = 1  # torch threads per training process


@dataclass
class LoRAConfig:
    """LoRA adapters (peft) on the generator."""

    # rank 8, alpha/r = 2 and lr 5e-3 were measured to bring LoRA from the base level with
    # pix2pix from scratch at 32x32 (benchmarks/lora_vs_scratch.py); rank 4 at lr 1e-3
    # stayed far behind it.
    rank: int = 8  # r: LoRA A is c×r×kh×kw, B is r×f×1×1
    alpha: float = 16.0  # peft lora_alpha; the update is scaled by alpha / rank
    lr: float = 5e-3  # Adam learning rate for LoRA-only training
    targets: list[str] | None = (
        None  # module-name suffixes to adapt; None = the size preset's default
    )
    train_norms: bool = True  # also train (and store) the normalisation layers' affine parameters
    # LoRA A starts random (B = 0). One seed for every concept puts all concepts' weights in
    # one aligned space: with a per-concept init, A's rows end up in unrelated directions,
    # and the mean of two concepts' LoRA (or a generator's estimate of it) means nothing.
    init_seed: int | None = 0  # seed of LoRA A's init, shared by all concepts; None = global RNG
    # Even from one init, a trained A moves 1.3-1.8x its own norm (demo collection), and
    # B·A = (B·M)(M⁻¹·A) lets every concept land in its own basis. Freezing A at the shared
    # init (LoRA-FA, Zhang et al. 2023) makes the update linear in B, but measured on 96 demo
    # concepts it made each concept's LoRA 17% worse (val L1 0.0609 vs 0.0519) and did not
    # make the weights more predictable from the text (ridge 0.1249 vs 0.1166), so A trains.
    train_a: bool = True  # train LoRA A too (plain LoRA); False = A frozen at the shared init


@dataclass
class CollectConfig:
    """Per-concept LoRA training and the Ray actor pool that runs it."""

    max_concepts: int | None = 48  # train + validation concepts to collect; None = all of them
    heldout_concepts: int = (
        0  # held-out concepts also collected, only as a ceiling (never trained on)
    )
    eval_every: int = 25  # steps between evaluations on the held-back pairs
    eval_pairs: int = 8  # pairs of each concept held back for evaluation (never trained on)
    patience: int = 4  # evaluations without relative improvement above `tolerance` = converged
    tolerance: float = 0.01  # relative improvement of the smoothed metric that still counts
    min_delta: float = 5e-4  # smallest absolute improvement of the metric that counts (L1 on [0,1]: ~0.13 grey levels)
    # Progress must also exceed this share of the gain since the start: it ends a slow creep
    # of a LoRA that has made 90% of its gain (`wgen.gan.convergence`, rule 1).
    gain_fraction: float = 0.1
    smooth: int = 3  # evaluations averaged before comparing (GAN metrics swing 10-20%)
    max_steps: int = 1500  # budget per concept before it is recorded as not converged
    # A concept that leaves its best and stays away (no new best for 2 x patience evaluations,
    # outside the stable band) goes back to its best state and counts as converged there
    # (`wgen.gan.convergence`). Without it, 13 of the demo's 48 concepts peaked at step
    # 25-125, drifted 1.3-2.8x worse and ran to max_steps, 64% of collection's actor time.
    restore_best: bool = True
    k_checkpoints: int = 4  # K checkpoints saved after convergence
    checkpoint_every: int = 25  # steps between the K checkpoints
    actors: int = 2  # GAN-training actors in the pool
    cpus_per_actor: float = 1.0  # logical CPUs per actor
    gpus_per_actor: float = 0.0  # GPUs per actor (cluster)
    max_retries: int = 1  # retries of a concept whose actor died before it is recorded as failed
    feature_extractor: str = (
        "auto"  # Fréchet features: "inception" (weights must be local), "offline", "auto"
    )
    # Below this share of converged concepts `wgen collect` exits non-zero with a summary:
    # a generator trained on a few survivors would silently be a worse generator. Measured on
    # the demo preset (48 concepts, the window rule, before `restore_best`): 35-36 converged
    # within max_steps=1500; the other 12-13 had drifted away from an early best (L1
    # 0.01-0.08, as good as converged ones) and were left out of training. 0.8 failed the
    # demo then; 0.6 still catches a broken collection.
    min_converged: float = 0.6  # fraction of the selected concepts, 0-1 (0 = never fail)


@dataclass
class DenoiserConfig:
    """The block-conditioned 1D diffusion model over weight blocks."""

    size: str = "demo"  # key into wgen.models.denoiser.DENOISER_SIZES
    block_size: int = 64  # b: values per weight block (the paper chose 256 at its scale)
    index_dim: int = 64  # d: width of SinEnc(n, d), the block-index encoding
    # "sample" (x0), "epsilon" (the paper) or "v_prediction". x0: the function-space term then
    # reads the model's output directly; measured on the study run (docs/results/generator/quality_study
    # .json) x0 + whole-concept training beat epsilon + the block pass.
    prediction: str = "sample"
    train_timesteps: int = 1000  # T of the DDPM schedule
    beta_schedule: str = "linear"  # diffusers beta schedule name
    # How τ(T) enters: "tokens" = cross-attention over the encoder's token states with their
    # padding mask (the paper's way); "pooled" = one sentence vector projected to a few tokens.
    text: str = "tokens"
    # Also add the pooled text tokens to the t/n embedding (Imagen, SDXL), so the text
    # modulates every ResBlock; False = the text enters through cross-attention only.
    text_in_emb: bool = False
    # A per-block readout of the pooled text added to the output (`BlockReadout`): rank of
    # its text features; 0 = off (the UNet alone, the paper's model).
    block_readout: int = 0
    cond_drop: float = 0.0  # probability of replacing the text by the null embedding (guidance)
    center: bool = (
        True  # model each weight minus its mean over the training checkpoints (False = raw)
    )


@dataclass
class TrainConfig:
    """Ray Train fitting of the denoiser."""

    workers: int = 1  # data-parallel Ray Train workers
    use_gpu: bool = False  # one GPU per worker
    cpus_per_worker: float = 1.0  # logical CPUs per worker
    # Custom Ray resources each worker also asks for, e.g. {trainer: 1} to keep training on
    # the nodes that declare that resource (CPU and GPU are the two fields above).
    worker_resources: dict[str, float] = field(default_factory=dict)
    epochs: int = 30  # passes over the blocks of the training checkpoints
    batch_size: int = 256  # global batch of blocks; must divide by `workers`
    lr: float = 1e-3  # AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    seed: int = 0  # seeds the denoiser's init and every training draw (not the data)
    # "minilm" (offline, packaged), a local sentence-transformers folder (e.g. all-mpnet-base-v2)
    # or a CLIP folder / hub name
    text_encoder: str = "minilm"
    quality_every: int = (
        10  # epochs between GAN-quality evaluations of generated LoRA (0 = only at the end)
    )
    max_failures: int = 2  # worker failures Ray Train recovers from by resuming the last checkpoint
    threads: int = 1  # torch threads per Ray Train worker (1: workers share few cores evenly)
    shuffle_buffer: int = (
        8192  # blocks in each worker's local shuffle buffer, so a batch mixes concepts (0 = off)
    )
    # Paraphrase augmentation (the paper's LLM rewording; here the concept grammar writes
    # them): P extra wordings per training concept, one wording drawn per concept per step.
    paraphrases: int = 16  # P; 0 = each concept's own text only
    # Train on only N of the collected training concepts (coverage of the validation
    # concepts' edits first, then by id; a smaller N is a subset of a larger one): the
    # generator's learning curve over the number of concepts. None = every one collected.
    max_train_concepts: int | None = None
    # The function-space term L = L_diff + λ_f·L_func (wgen.generator.funcspace): whole
    # concepts, all N blocks denoised from pure noise as generation does, decoded and run
    # through the frozen base GAN on a few of the concept's training pairs.
    # L_func is an L1 on [0, 1] images (0.05-0.15) and L_diff an MSE on normalised weights
    # (0.3-1): λ_f = 1 left the function-space loss flat (tiny test and the demo's first
    # epochs); 30 lets it lead, as the study says it must.
    func_weight: float = 30.0  # λ_f; 0 = the diffusion loss alone
    func_pairs: int = 8  # training pairs per concept in the function-space term
    func_concepts: int = 4  # concepts per whole-concept step (global, split over workers)
    # An epoch = [a diffusion pass over every block of every checkpoint] + `concept_passes`
    # passes of whole-concept steps (L_diff on the concept's blocks + λ_f·L_func). The
    # function-space term only shapes the model if it gets a fair share of the updates:
    # with the block pass on, it got 20 of ~440 steps an epoch and did not move (measured).
    block_pass: bool = False  # the block pass (the paper's training); False = whole concepts only
    concept_passes: int = 1  # whole-concept passes per epoch (0 = none; needs block_pass)
    func_t: list[int] | None = (
        None  # [lo, hi] timesteps the term is applied at; None = the single step's t
    )
    # The learning rate over the epochs: "constant", or "cosine" (from train.lr down to
    # `wgen.generator.schedule.LR_FLOOR` × train.lr at the last epoch; set per epoch from
    # the epoch number, so a resumed run continues the same curve).
    lr_schedule: str = "constant"
    # Which epoch `wgen train` exports: "last", or "best" (the epoch with the lowest GAN
    # quality score of the validation probe, every `quality_every` epochs and the last).
    # The probe's concepts are then used for selection: report held-out concepts.
    export: str = "last"


@dataclass
class GenerateConfig:
    """Sampling a LoRA for a new concept."""

    steps: int = 1  # 1 = the paper's single direct-reconstruction step; >1 = DDIM steps
    single_step_t: int = 500  # noise-biased timestep for the single step (of train_timesteps)
    guidance: float = 0.0  # classifier-free guidance weight w (0 = conditional only)
    seed: int = 0  # noise seed
    threads: int = (
        1  # torch threads for generation (1: measured 30x faster than 2 on a busy 2-core CPU)
    )


def _default_space() -> dict[str, Any]:
    return {
        "denoiser.block_size": [32, 64, 128, 256],
        "denoiser.index_dim": [32, 64],
        "train.lr": {"loguniform": [3e-4, 3e-3]},
    }


@dataclass
class TuneConfig:
    """Ray Tune search over config fields of the generator (b, d, lr; any field can be searched)."""

    # config key → a list (a grid: every value is tried) or {dist: [low, high]} with dist one
    # of uniform, loguniform, randint (drawn `num_samples` times per grid point).
    space: dict[str, Any] = field(default_factory=_default_space)
    num_samples: int = 1  # draws of the sampled keys per grid point (the grid is repeated)
    # The score that ranks trials and drives ASHA: reported by `wgen train` at each quality
    # evaluation (the GAN with generated LoRA on validation concepts), so it does not depend
    # on b, unlike the denoising loss. The trial's iterations are these evaluations.
    metric: str = "quality_l1"
    mode: str = "min"  # "min" or "max": which way `metric` is better
    max_concurrent_trials: int = 2  # trials at once, each train.workers × train.cpus_per_worker
    # logical CPUs held by a trial's driver, which mostly waits on its TorchTrainer (the workers
    # hold their own); Ray needs more than 0 to place it
    trial_cpus: float = 0.1
    grace_period: int = 1  # ASHA: quality evaluations every trial gets before it may be stopped
    reduction_factor: float = 2.0  # ASHA η: about 1/η of the trials go on at each rung
    seed: int = 0  # seeds the draws of the sampled keys
    latency_repeats: int = 5  # timed 1-step generations per finished trial (the median is reported)


@dataclass
class PdiffConfig:
    """p-diff (Wang et al. 2024): a classifier zoo on Ray, a parameter autoencoder and a latent
    DDPM trained with Ray Train, sampling, and the memorisation analysis (Zeng et al. 2025)."""

    settings: list[str] = field(
        default_factory=lambda: ["convnet", "mlp"]
    )  # zoos to build: "convnet" (last two norms of a ConvNet-3) and/or "mlp" (whole MLP-3)
    dataset_dir: str | None = (
        None  # torchvision-style folder (one sub-folder per class); None = scikit-learn's digits
    )
    image_size: int = 8  # side images from dataset_dir are resized to (digits are 8x8), pixels
    heldout_fraction: float = 0.3  # share of the images held out: never trained on, only scored
    seed: int = 0  # seeds the split, every zoo model, the autoencoder, the DDPM and the sampling
    checkpoints: int = 200  # models in each zoo (p-diff: 200)
    batch_size: int = 64  # images per classifier training step
    convnet_width: int = 16  # channels of the ConvNet-3's first conv (then 2x, 2x)
    convnet_epochs: int = 20  # epochs of whole-network training from scratch
    convnet_lr: float = 3e-3  # Adam learning rate of whole-network training
    convnet_select: list[str] = field(
        default_factory=lambda: [r"^norm2\.", r"^norm3\."]
    )  # regexes on parameter names: what the zoo varies (p-diff: the last two norm layers)
    norm_epochs: int = 2  # epochs of training only the selected parameters; the last one is
    # cut into `checkpoints` steps with a checkpoint after each (p-diff's protocol)
    norm_lr: float = 1e-3  # Adam learning rate of that phase
    mlp_hidden: int = 32  # width of the MLP-3's two hidden layers
    mlp_epochs: int = 20  # epochs of whole-model training for every seed
    mlp_lr: float = 3e-3  # Adam learning rate of the MLP-3
    mlp_select: list[str] = field(default_factory=lambda: [".*"])  # the whole model
    zoo_tasks: int = 8  # Ray tasks (one Parquet file each) the MLP seeds are split over
    task_cpus: float = 1.0  # logical CPUs per zoo task
    token: int = 16  # values per token: the standardised vector is folded into (token, P/token)
    ae_channels: list[int] = field(default_factory=lambda: [64, 64, 64, 64])  # p-diff: 4 layers
    ae_downsample: int = 2  # how many of those layers halve the length (the rest keep it)
    latent_channels: int = 4  # channels of the latent z
    input_noise: float = 0.001  # σ of ξ_V, noise on the standardised input parameters
    latent_noise: float = 0.1  # σ of ξ_Z, noise on the latent (p-diff v1 code: 0.5)
    ae_epochs: int = 300  # autoencoder epochs over the zoo
    ae_lr: float = 1e-3  # AdamW learning rate of the autoencoder
    ddpm_channels: int = 64  # channels of the latent denoiser's ResBlocks
    ddpm_blocks: int = 4  # ResBlocks of the latent denoiser
    ddpm_epochs: int = 600  # DDPM epochs over the zoo's latents
    ddpm_lr: float = 1e-3  # AdamW learning rate of the DDPM
    train_batch: int = 50  # zoo rows per autoencoder / DDPM step (global; divides by workers)
    train_timesteps: int = 1000  # T of the latent DDPM schedule
    beta_schedule: str = "linear"  # diffusers beta schedule name
    sample_steps: int = 100  # DDIM steps when sampling latents
    # a p-diff model folder to sample from instead of the fitted one, e.g. a distilled student
    # "RUN/distill/pdiff/{setting}-steps-4" ({setting}: each setting's name); None = the fitted
    sampler_dir: str | None = None
    samples: int = 100  # models generated (and drawn for every baseline) per setting
    noise_scales: list[float] = field(
        default_factory=lambda: [0.05, 0.2]
    )  # σ of the noise added to originals, in units of each tensor's std over the zoo
    average_of: int = 16  # checkpoints averaged into one model of the averaging baseline
    report_every: int = 50  # epochs between Ray Train reports (each costs a checkpoint)
    workers: int = 1  # Ray Train workers (data-parallel over zoo rows)
    cpus_per_worker: float = 1.0  # logical CPUs per Ray Train worker
    threads: int = 1  # torch threads per process (zoo task, Ray Train worker, driver)


@dataclass
class BenchConfig:
    """`wgen bench`: fine-tuning held-out concepts from every method's initial weights."""

    # method names from wgen.bench.methods.METHODS, in report order; lora-zero is always run
    # (its converged quality is every method's common target)
    methods: list[str] = field(
        default_factory=lambda: [
            "scratch",
            "scratch-identity",
            "lora-zero",
            "mean",
            "nearest",
            "knn",
            "ridge",
            "hyper",
            "nearest-edit",
            "wgen-1",
            "wgen-ddim",
        ]
    )
    concepts_file: str | None = None  # one held-out concept text per line; None = the preset's
    generator_dir: str | None = None  # trained generator folder; None = <out>/generator
    # held-out concepts benchmarked, half unseen combinations and half unseen wordings (the
    # first of each kind by id); None = all
    max_concepts: int | None = 12
    seeds: int = 2  # fine-tuning seeds per (concept, method); wgen's noise seed follows it
    # Three splits of each benchmarked concept's pairs: the last collect.eval_pairs (by image
    # id) are the TEST pairs, read only by the report; the `selection_pairs` before them are
    # the only pairs the rule and the restoring of the best model read; the rest are trained on.
    selection_pairs: int = 8
    # The rule (`wgen.gan.convergence.GrowingWindowMonitor`), the same for every method:
    # converged once the smoothed best on the selection pairs improved by at most `tolerance`
    # of itself (or min_delta) over the last max(window_steps, window_fraction x steps run)
    # steps; every run then ends at its best evaluation. Chosen on docs/results/bench/
    # history/bench_preset_fixed (1,500-step curves): 60 / 0.5 / 2% let scratch converge in
    # 14 of 16 runs within 1,500 steps, within 0.2% of its 1,500-step best (median step 820).
    eval_every: int = 5  # steps between evaluations (selection and test pairs)
    window_steps: int = 60  # the shortest window, steps (a run stops at step 60 at the soonest)
    window_fraction: float = 0.5  # the window grows to this share of the steps run so far
    tolerance: float = 0.02  # relative improvement of the best that still counts as progress
    min_delta: float = 5e-4  # smallest absolute improvement that counts (L1 on [0, 1])
    smooth: int = 3  # evaluations averaged for the rule and for the curves' time readings
    max_steps: int = 3000  # the cap: a run the rule has not stopped by then "never" converged
    # Time to converge is read after the run: the first step at which the smoothed selection
    # curve comes within `converge_delta` (relative) of the run's converged value, not the
    # step at which the window ran out (which alone would cap every ratio near the floor).
    converge_delta: float = 0.05
    budgets: list[int] = field(
        default_factory=lambda: [0, 10, 25, 50, 100]
    )  # steps at which the quality is reported (multiples of eval_every)
    auc_steps: int = 100  # area under the quality-vs-steps curve over steps 0..auc_steps
    grid_step: int = 25  # the small budget shown in the image grid (a multiple of eval_every)
    ddim_steps: int = 10  # DDIM steps of the wgen-ddim method
    knn_k: int = 5  # neighbours averaged by the knn method
    ridge_alpha: float = 1.0  # ridge regression's L2 penalty
    # The clock times are read on: "normalised" (each method's median cost per step and
    # generation time, so the load of a shared machine does not decide a paired ratio) or
    # "wall" (each run's own). Report-only: changing it re-reads the same runs.
    clock: str = "normalised"
    # The hyper baseline gets the generator's recipe: its epochs and learning-rate schedule
    # (None = the generator's train.epochs / train.lr_schedule, read from its folder).
    hyper_epochs: int | None = None
    hyper_lr_schedule: str | None = None
    # Wordings per training concept the text baselines are fitted on; None = the generator's
    # train.paraphrases. A value other than the generator's is refused (unequal data).
    paraphrases: int | None = None
    actors: int = 2  # Ray actors, one concept (all its methods and seeds) at a time each
    cpus_per_actor: float = 1.0  # logical CPUs per actor
    gpus_per_actor: float = 0.0  # GPUs per actor (cluster: fine-tuning on the GPU)


@dataclass
class DistillConfig:
    """`wgen distill`: guided distillation (Meng et al., CVPR 2023) of a trained generator.

    Stage 1: a student that takes the guidance weight w as an input learns the teacher's
    guided x̂^w in one pass. Stage 2 (progressive distillation, Salimans & Ho): each round a
    student with N/2 DDIM steps learns two steps of its N-step teacher, from `start_steps`
    down to 1. Each stage and round is one Ray Train run (`train.workers` workers).
    """

    target: str = "generator"  # what is distilled: "generator" or "pdiff" (p-diff's latent DDPM)
    teacher_dir: str | None = None  # the guided teacher's generator folder; None = <out>/generator
    w_min: float = 0.0  # smallest guidance weight w the students learn (0 = unguided)
    # largest w; each training sample draws w ~ U[w_min, w_max]. 1, not the paper's 4: on the
    # demo run guidance only hurt beyond w = 0.5, and a student trained up to w = 4 ended
    # worse than the mean checkpoint (docs/results/distill/README.md)
    w_max: float = 1.0
    # N of the first progressive round's teacher (the w-student run with N DDIM steps), a
    # power of two; rounds halve it down to 1 step: log2(start_steps) rounds after stage 1.
    start_steps: int = 4
    epochs: int = 2  # passes over the training blocks per stage / round
    # AdamW learning rate of every student; 1e-3 measured better than 1e-4 on the demo run
    # (held-out L1 0.1961 vs 0.2436 with the w range above)
    lr: float = 1e-3
    batch_size: int = 256  # global batch of blocks; must divide by train.workers
    # Stage 1 also trains at what single-step generation feeds the model (pure noise at
    # generate.single_step_t), this share of each batch; 0 = Meng et al.'s data-noised z_t only.
    single_step_share: float = 0.5
    bench_guidance: float = 1.0  # w of the bench's wgen-cfg method (the guided teacher)
    # target pdiff: DDIM steps of the first teacher (the p-diff model), a power of two; rounds
    # halve it down to 1 step. Each round trains pdiff_epochs passes over the zoo's latents
    # (1000: the demo ConvNet's 4-step student 0.013 from the 64-step samples, 300: 0.020)
    # with AdamW at pdiff_lr (1e-3 made the 64 → 32 student worse than its teacher on the demo
    # zoo; 1e-4 and 1e-5 closer to the 64-step samples than the teacher's 32 steps)
    # (docs/results/distill/pdiff.md)
    pdiff_steps: int = 64
    pdiff_epochs: int = 1000
    pdiff_lr: float = 1e-4


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    gan: GANConfig = field(default_factory=GANConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    collect: CollectConfig = field(default_factory=CollectConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    pdiff: PdiffConfig = field(default_factory=PdiffConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    preset: str = "demo"  # the preset these values started from (for the record)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        sections = {f.name: f.type for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for name, value in values.items():
            if name not in sections:
                raise ConfigError(f"unknown config section {name!r}; valid: {sorted(sections)}")
            if name == "preset":
                kwargs[name] = value
            else:
                section_cls = _SECTION_CLASSES[name]
                _check_keys(name, section_cls, value)
                kwargs[name] = section_cls(**value)
        return cls(**kwargs)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Config:
        return cls.from_dict(yaml.safe_load(Path(path).read_text()))


# section name → its dataclass, read off `Config` (a new section is one field there)
_SECTION_CLASSES: dict[str, type] = {
    f.name: f.default_factory
    for f in dataclasses.fields(Config)
    if f.default_factory is not dataclasses.MISSING
}

# Presets are overlays on the defaults above. `demo` is the defaults themselves.
# The generator of the demo-sized presets: the per-block readout of the pooled text beside the
# UNet, trained one concept per whole-concept step (hyper's 3,160 updates in 40 epochs).
# Measured on the 79-concept study run (docs/results/generator/quality_readout.json): gap closed
# 25% → 40% (val) and 11-25% → 46% (held-out), wins over the best of ridge and hyper
# 5 → 9 and 4 → 14 of 24. Off in the defaults (the paper's UNet alone) and on the cluster
# preset, where it was not measured.
READOUT_GENERATOR: dict[str, Any] = {"denoiser.block_readout": 64, "train.func_concepts": 1}

PRESETS: dict[str, dict[str, Any]] = {
    "demo": {**READOUT_GENERATOR},
    # tiny: every stage in seconds, for tests.
    "tiny": {
        "data.n_train_concepts": 8,
        "data.n_val_concepts": 2,
        "data.n_heldout_concepts": 2,
        "data.pairs_per_concept": 12,
        "data.crops_per_photo": 8,
        "data.image_size": 16,
        "data.editor_batch_size": 16,
        "data.rows_per_shard": 64,
        "gan.size": "tiny",
        "gan.batch_size": 4,
        "gan.base_steps": 20,
        "collect.max_concepts": 4,
        "collect.eval_every": 5,
        "collect.eval_pairs": 4,
        "collect.patience": 2,
        "collect.tolerance": 0.05,
        "collect.smooth": 1,
        "collect.max_steps": 40,
        "collect.k_checkpoints": 2,
        "collect.checkpoint_every": 5,
        "collect.cpus_per_actor": 0.5,
        "collect.feature_extractor": "offline",
        "denoiser.size": "tiny",
        "denoiser.block_size": 32,
        "denoiser.index_dim": 16,
        "denoiser.train_timesteps": 100,
        "train.epochs": 2,
        "train.batch_size": 32,
        "train.quality_every": 0,
        "train.paraphrases": 2,
        "train.func_pairs": 2,
        "train.func_concepts": 2,
        "generate.single_step_t": 50,
        "tune.space": {"denoiser.block_size": [16, 32], "denoiser.index_dim": [8, 16]},
        "pdiff.settings": ["convnet", "mlp"],
        "pdiff.checkpoints": 8,
        "pdiff.convnet_width": 4,
        "pdiff.convnet_epochs": 2,
        "pdiff.mlp_hidden": 8,
        "pdiff.mlp_epochs": 2,
        "pdiff.zoo_tasks": 2,
        "pdiff.task_cpus": 0.5,
        "pdiff.ae_channels": [16, 16],
        "pdiff.ae_downsample": 1,
        "pdiff.ae_epochs": 30,
        "pdiff.ddpm_channels": 16,
        "pdiff.ddpm_blocks": 1,
        "pdiff.ddpm_epochs": 10,
        "pdiff.train_batch": 4,
        "pdiff.train_timesteps": 100,
        "pdiff.sample_steps": 5,
        "pdiff.samples": 6,
        "pdiff.average_of": 4,
        "pdiff.report_every": 10,
        "pdiff.cpus_per_worker": 0.5,
        "bench.max_concepts": 2,
        "bench.seeds": 1,
        "bench.eval_every": 5,
        "bench.window_steps": 10,
        "bench.smooth": 1,
        "bench.max_steps": 40,
        "bench.selection_pairs": 3,
        "bench.budgets": [0, 5, 10],
        "bench.auc_steps": 10,
        "bench.grid_step": 5,
        "bench.ddim_steps": 2,
        "bench.hyper_epochs": 1,
        "bench.cpus_per_actor": 0.5,
        "distill.start_steps": 2,
        "distill.epochs": 1,
        "distill.batch_size": 32,
    },
    # bench: the headline benchmark, more pairs per concept so held-out training can converge,
    # and twice the demo's collected concepts: the generator study (docs/architecture.md)
    # found every text -> weights map still improving from 40 to 79 training concepts. 60 generator
    # epochs, not 30: measured better at 80 training concepts (val L1 0.098 -> 0.093,
    # held-out 0.171 -> 0.163, docs/results/generator/epochs_bench.json) and at 167 with
    # train.func_weight=150 (val 0.0925 -> 0.0824, held-out 0.155 -> 0.143; seed 1: 0.0835, 0.143;
    # docs/results/generator/quality_bench192_e60.json). λ_f 30 and a constant rate stay: λ_f 150 with a
    # cosine rate is better at 167 training concepts (held-out 0.143 -> 0.133 / 0.135 over two
    # seeds; docs/results/generator/quality_bench192_e60cos*.json) but not at this preset's 80 (the
    # coverage-first subset of the same data, two seeds): val 0.1045 / 0.0995 -> 0.0937 / 0.0977,
    # held-out 0.1537 / 0.1556 -> 0.1590 / 0.1593 (docs/results/generator/quality_bench192_n80*.json).
    # With 160+ training concepts use --set train.func_weight=150 --set train.lr_schedule=cosine.
    # docs/results/bench/history/bench_preset was measured with 30 epochs (`--set
    # train.epochs=30` reproduces it).
    "bench": {
        **READOUT_GENERATOR,
        # 40 pairs: the collection trains on 32 and scores on 8; the bench cuts each held-out
        # concept's 40 into 24 to train on, 8 to select by (its rule) and 8 to test on.
        "data.pairs_per_concept": 40,
        "collect.max_concepts": 96,
        # scratch-identity and wgen-ddim (worse than wgen-1 on every generator measured) are
        # left out of the preset's bench to keep the pipeline near 75 minutes on 2 cores;
        # --methods adds them back.
        "bench.methods": [
            m for m in BenchConfig().methods if m not in ("scratch-identity", "wgen-ddim")
        ],
        "train.epochs": 60,
        # The rule's shortest window: at 60 steps it stopped 4 of 8 scratch and 5 of 8
        # lora-zero runs early (one lora-zero run at test L1 0.029 that reaches 0.014 when let
        # run; GAN curves rise before they fall). 300 lets them run, at several times the
        # steps of a fast run (docs/results.md, "The rule's window").
        "bench.window_steps": 300,
    },
    # cluster: paper-like sizes on a GPU cluster.
    "cluster": {
        "data.image_size": 256,
        "data.n_train_concepts": 1000,
        "data.n_val_concepts": 50,
        "data.n_heldout_concepts": 50,
        "data.pairs_per_concept": 100,
        "data.editor": "instruct-pix2pix",
        "data.editor_gpus": 1.0,
        "data.editor_cpus": 2.0,
        "data.editor_actors": 8,
        "data.rows_per_shard": 512,
        "gan.size": "cluster",
        "gan.batch_size": 8,
        "gan.base_steps": 20000,
        "gan.threads": 4,
        "lora.lr": 1e-3,
        "collect.max_concepts": None,
        "collect.max_steps": 10000,
        "collect.eval_every": 200,
        "collect.checkpoint_every": 200,
        "collect.k_checkpoints": 8,
        "collect.actors": 16,
        "collect.cpus_per_actor": 4.0,
        "collect.gpus_per_actor": 0.5,
        "bench.gpus_per_actor": 0.5,
        "collect.feature_extractor": "inception",
        "denoiser.size": "cluster",
        "denoiser.block_size": 256,
        "denoiser.index_dim": 128,
        "train.workers": 4,
        "train.use_gpu": True,
        "train.cpus_per_worker": 4.0,
        "train.epochs": 200,
        "train.batch_size": 1024,
        "train.text_encoder": "openai/clip-vit-large-patch14",
    },
}


def _check_keys(section: str, section_cls: type, values: dict[str, Any]) -> None:
    valid = {f.name for f in dataclasses.fields(section_cls)}
    unknown = set(values) - valid
    if unknown:
        raise ConfigError(
            f"unknown key(s) {sorted(f'{section}.{k}' for k in unknown)}; "
            f"valid keys in [{section}]: {sorted(valid)}"
        )


def _field_type(section: str, key: str) -> Any:
    if section not in _SECTION_CLASSES:
        raise ConfigError(
            f"unknown config section {section!r} in {section}.{key}; valid sections: {sorted(_SECTION_CLASSES)}"
        )
    section_cls = _SECTION_CLASSES[section]
    hints = typing.get_type_hints(section_cls)
    if key not in hints:
        raise ConfigError(
            f"unknown config key {section}.{key}; valid keys in [{section}]: "
            f"{sorted(f.name for f in dataclasses.fields(section_cls))}"
        )
    return hints[key]


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Turn ``value`` (a string from the command line, or a preset value) into ``hint``."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, value, arg)
            except ConfigError:
                continue  # try the union's next type
        raise ConfigError(f"{name}: cannot read {value!r} as {hint}")
    if origin is dict:
        # A mapping from a preset, or YAML from the command line: "{a.b: [1, 2]}".
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError as err:
                problem = " ".join(str(err).split())  # one line
                raise ConfigError(f"{name}: cannot read {value!r} as YAML: {problem}") from None
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping like {{key: [values]}}, got {value!r}")
        return dict(value)
    if origin is list:
        (item_type,) = args
        if isinstance(value, str) and value.strip().startswith("["):
            # YAML's flow list, as a preset writes it: [a, b] or ["a", "b"]
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                raise ConfigError(
                    f"{name}: cannot read {value!r} as a list; write a,b or [a, b]"
                ) from None
        if isinstance(value, str):
            items = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise ConfigError(f"{name}: expected a comma-separated list, got {value!r}")
        return [_coerce(name, v, item_type) for v in items]
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        try:
            number = float(value) if isinstance(value, str) else value
            if isinstance(number, float) and not number.is_integer():
                raise ValueError
            return int(number)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected an integer, got {value!r}") from None
    if hint is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name}: expected a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected text, got {value!r}")
        return value
    raise ConfigError(f"{name}: unsupported type {hint}")


def apply_override(config: Config, dotted: str, value: Any) -> None:
    """Set ``section.key`` to ``value`` (coerced to the field's type) in place."""
    if dotted.count(".") != 1:
        raise ConfigError(
            f"override {dotted!r} must look like section.key=value; sections: {sorted(_SECTION_CLASSES)}"
        )
    section, key = dotted.split(".")
    hint = _field_type(section, key)
    setattr(getattr(config, section), key, _coerce(dotted, value, hint))


def parse_set(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(
            f"--set {item!r} must look like section.key=value (e.g. collect.actors=2)"
        )
    key, value = item.split("=", 1)
    return key.strip(), value.strip()


def load_config(preset: str = "demo", overrides: list[str] | None = None) -> Config:
    """Defaults, then the preset overlay, then ``--set section.key=value`` overrides."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; valid presets: {sorted(PRESETS)}")
    config = Config(preset=preset)
    for dotted, value in PRESETS[preset].items():
        apply_override(config, dotted, value)
    for item in overrides or []:
        apply_override(config, *parse_set(item))
    return config


# ---------------------------------------------------------------------------------------
# Checks of values, for each stage's own validation (`wgen.core.stages`)
# ---------------------------------------------------------------------------------------


def need(ok: bool, key: str, value: Any, what: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r}: {what}")


def at_least(section: Any, name: str, low: float, why: str = "") -> None:
    value = getattr(section, name)
    key = f"{_section_name(section)}.{name}"
    need(value >= low, key, value, f"must be at least {low}" + (f" ({why})" if why else ""))


def positive(section: Any, name: str, why: str = "") -> None:
    value = getattr(section, name)
    key = f"{_section_name(section)}.{name}"
    need(value > 0, key, value, "must be more than 0" + (f" ({why})" if why else ""))


def _section_name(section: Any) -> str:
    return next(name for name, cls in _SECTION_CLASSES.items() if isinstance(section, cls))
