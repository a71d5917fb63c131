"""Which torch device a process trains on, and whether it may use mixed precision.

One place for it (docs/architecture.md, rule 6): GAN training (base, LoRA, scratch), the
Fréchet feature extractor, the generator's training and `wgen generate` ask
`current_device()` and never read Ray's GPU assignment or CUDA themselves.

- Inside a Ray Train worker: Ray Train's own ``ray.train.torch.get_device()`` (the worker's
  GPU when ``train.use_gpu``, else the CPU).
- Inside a Ray task or actor that was given GPUs (``collect.gpus_per_actor``, the base GAN's
  task): the first GPU Ray assigned it (``ray.get_gpu_ids()``), found in
  ``CUDA_VISIBLE_DEVICES`` as Ray set it for the process.
- Anywhere else (the driver, CPU-only actors, a laptop): the CPU.

A process given GPUs where torch sees none (a driver/CUDA mismatch, or a test that declares
GPUs on a CPU machine) runs on the CPU with one warning, rather than failing a long collection.

Mixed precision (``autocast``) is used only on CUDA: bf16 where the GPU supports it, else fp16
with a gradient scaler; on the CPU it is off, so CPU results are exactly those of fp32 code.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

CPU = torch.device("cpu")
_warned: set[str] = set()


def device_for_gpu_ids(
    gpu_ids: Sequence[int | str], visible_devices: str | None, cuda_count: int
) -> torch.device:
    """The torch device for a process that Ray assigned ``gpu_ids`` (pure; see module doc).

    Ray sets ``CUDA_VISIBLE_DEVICES`` to the assigned ids, so the first one is usually
    ``cuda:0``; where the variable lists more GPUs (Ray told not to set it), the assigned
    id's position in it is the torch index.
    """
    if not gpu_ids or cuda_count < 1:
        return CPU
    first = str(gpu_ids[0])
    visible = [v.strip() for v in (visible_devices or "").split(",") if v.strip()]
    index = visible.index(first) if first in visible else 0
    return torch.device("cuda", min(index, cuda_count - 1))


def _train_worker_device() -> torch.device | None:
    """Ray Train's device inside a training function, None anywhere else."""
    try:
        import ray.train.torch

        return ray.train.torch.get_device()
    except (ImportError, RuntimeError):  # RuntimeError: not inside `trainer.fit()`
        return None


def _assigned_gpu_ids() -> list[int | str]:
    try:
        import ray

        return list(ray.get_gpu_ids()) if ray.is_initialized() else []
    except Exception:  # noqa: BLE001 - no Ray worker context: no GPUs assigned
        return []


def current_device() -> torch.device:
    """The device this process should put its models and batches on (see module doc)."""
    device = _train_worker_device()
    if device is not None:
        return device
    gpu_ids = _assigned_gpu_ids()
    cuda_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    device = device_for_gpu_ids(gpu_ids, os.environ.get("CUDA_VISIBLE_DEVICES"), cuda_count)
    if gpu_ids and device.type == "cpu" and "no-cuda" not in _warned:
        _warned.add("no-cuda")
        warnings.warn(
            f"Ray assigned GPU(s) {gpu_ids} to this process but torch sees no CUDA device; "
            "training on the CPU (check the node's CUDA driver and the installed torch build)",
            RuntimeWarning,
            stacklevel=2,
        )
    return device


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on a CUDA device that supports it, fp16 on an older one, None (off) elsewhere."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


@dataclass
class Precision:
    """Mixed precision for one training loop: ``with precision.autocast():`` around the
    forward passes and losses, ``precision.backward(loss, optimizer)`` for the update.

    With ``dtype=None`` (CPU) both are plain fp32 code: no autocast, no scaling.
    """

    device: torch.device
    dtype: torch.dtype | None

    def __post_init__(self) -> None:
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    def autocast(self) -> Any:
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """zero_grad, backward (scaled for fp16) and the optimizer step."""
        optimizer.zero_grad(set_to_none=True)
        if not self.scaler.is_enabled():
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()


def precision_for(device: torch.device, enabled: bool = True) -> Precision:
    """The `Precision` a loop on ``device`` uses (``enabled=False``: always fp32)."""
    return Precision(device, autocast_dtype(device) if enabled else None)
