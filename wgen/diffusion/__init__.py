"""The diffusion core: noising, the training loss and samplers on plain tensors.

`schedule` holds the forward process (ᾱ_t, α_t, σ_t, q-sample), what the model learns to
output for each prediction type and how its output reads as x̂0, and the masked MSE training
loss; `samplers` holds classifier-free guidance, the one-step direct reconstruction and DDIM.

A model is any callable ``model(x_t, t, **cond)``. The core forwards ``cond`` (keyword
tensors) without reading it, and knows nothing of GANs, weight blocks or text: the weight
generator (`wgen.generator.diffusion`), p-diff's latent DDPM (`wgen.pdiff.fit`) and the
distilled students (`wgen.distill`) share it as they are.
"""

from wgen.diffusion.samplers import (
    ddim_scheduler,
    guided_prediction,
    sample_ddim,
    sample_single_step,
)
from wgen.diffusion.schedule import (
    PREDICTION_TYPES,
    DenoisingModel,
    NoiseSchedule,
    masked_mse,
)

__all__ = [
    "PREDICTION_TYPES",
    "DenoisingModel",
    "NoiseSchedule",
    "ddim_scheduler",
    "guided_prediction",
    "masked_mse",
    "sample_ddim",
    "sample_single_step",
]
