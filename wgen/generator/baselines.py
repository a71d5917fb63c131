"""The simple text → weights predictors every generator must beat (docs/architecture.md,
"The benchmark").

A sceptical reviewer's first questions about a weight generator are whether it does better
than averaging, looking up, or linearly mapping the training checkpoints ("Generative
Modeling of Weights: Generalization or Memorization?", 2025). Each predictor here maps a
text embedding to one flat weight vector (all groups back to back, the weight format's
order) and is fitted on the same `TrainingSet` as the generator — the training concepts'
checkpoints and every wording of their texts (own text + grammar paraphrases):

    mean      the mean of the training concepts' checkpoints (ignores the text)
    nearest   the training concept whose closest wording is nearest by cosine
    knn       the k nearest concepts, averaged with weights ∝ their (positive) cosine
    ridge     a linear map embedding → weights (ridge regression, one sample per wording)
    hyper     a small MLP embedding → normalised blocks, trained through the base model with
              the function-space loss (`wgen.generator.funcspace`): the strongest simple
              model of the zero-shot study (Text-to-LoRA's hypernetwork, in small)

Pure of Ray; the benchmarks and `wgen bench` call them. Text embeddings are pooled,
L2-normalised sentence vectors (`TextEncoder.encode`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from wgen.generator.funcspace import FunctionSpaceLoss
from wgen.generator.schedule import epoch_lr


@dataclass
class TrainingSet:
    """What the baselines learn from.

    Attributes:
        concept_ids: the training concepts, in row order.
        targets: (C, total) float32, each concept's mean checkpoint as one flat vector.
        wordings: per concept, (W_c, dim) pooled embeddings of its wordings (own text first).
    """

    concept_ids: list[str]
    targets: np.ndarray
    wordings: list[np.ndarray]

    def __post_init__(self) -> None:
        if len(self.concept_ids) != len(self.targets) or len(self.targets) != len(self.wordings):
            raise ValueError("concept_ids, targets and wordings must have one entry per concept")
        if not self.concept_ids:
            raise ValueError("a training set needs at least one concept")

    def similarities(self, embedding: np.ndarray) -> np.ndarray:
        """(C,) cosine of ``embedding`` with each concept's closest wording."""
        return np.array([float(np.max(w @ embedding)) for w in self.wordings])


def mean_prediction(data: TrainingSet) -> np.ndarray:
    return data.targets.mean(axis=0)


def nearest_prediction(data: TrainingSet, embedding: np.ndarray) -> np.ndarray:
    return data.targets[int(np.argmax(data.similarities(embedding)))]


def knn_prediction(data: TrainingSet, embedding: np.ndarray, k: int = 5) -> np.ndarray:
    """Similarity-weighted mean of the k nearest concepts (weights ∝ max(cos, 0); a text
    unlike every training text falls back to their plain mean)."""
    similarity = data.similarities(embedding)
    top = np.argsort(-similarity)[: min(k, len(similarity))]
    weights = np.maximum(similarity[top], 0.0)
    if weights.sum() <= 0:
        weights = np.ones_like(weights)
    return (weights[:, None] * data.targets[top]).sum(axis=0) / weights.sum()


@dataclass
class Ridge:
    """A linear map embedding → weights, fitted in closed form on centred data."""

    x_mean: np.ndarray
    y_mean: np.ndarray
    coef: np.ndarray

    @classmethod
    def fit(cls, data: TrainingSet, alpha: float = 1.0) -> Ridge:
        """One sample per wording, each with its concept's target (paraphrase augmentation)."""
        x = np.concatenate(data.wordings).astype(np.float64)
        y = np.concatenate(
            [
                np.repeat(t[None], len(w), axis=0)
                for t, w in zip(data.targets, data.wordings, strict=True)
            ]
        ).astype(np.float64)
        x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
        xc = x - x_mean
        coef = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - y_mean))
        return cls(x_mean, y_mean, coef)

    def predict(self, embedding: np.ndarray) -> np.ndarray:
        return (self.y_mean + (embedding - self.x_mean) @ self.coef).astype(np.float32)


class Hyper(nn.Module):
    """embedding → hidden → all N normalised blocks; decoded by the function-space loss's
    codec. The last layer starts at zero, so an untrained model predicts the codec's centre
    (the mean checkpoint) and training moves it only where the base model's output improves."""

    def __init__(self, text_dim: int, n_values: int, hidden: int = 256) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(text_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU()
        )
        self.out = nn.Linear(hidden, n_values)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.out(self.net(embedding))


def train_hyper(
    data: TrainingSet,
    tasks: dict[str, tuple[np.ndarray, np.ndarray]],
    func_loss: FunctionSpaceLoss,
    epochs: int = 40,
    lr: float = 1e-3,
    seed: int = 0,
    lr_schedule: str = "constant",
) -> Hyper:
    """Fit `Hyper` with the function-space loss on each concept's TRAINING data
    (``tasks[concept_id]`` = stored inputs, targets: `TaskData.train_*`; for the GAN uint8
    sources and edited images), one random wording per concept and
    step, one concept per step; the rate follows ``lr_schedule`` over the epochs as the
    generator's does (`wgen.generator.schedule.epoch_lr`)."""
    layout = func_loss.codec.layout
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Hyper(data.wordings[0].shape[1], layout.n_blocks * layout.block_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    tensors = {c: func_loss.base.tensors(*tasks[c]) for c in data.concept_ids}
    for epoch in range(1, epochs + 1):
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr(lr, lr_schedule, epoch, epochs)
        for c in torch.randperm(len(data.concept_ids), generator=generator).tolist():
            wordings = data.wordings[c]
            pick = int(torch.randint(len(wordings), (1,), generator=generator))
            blocks = model(torch.from_numpy(wordings[pick]))
            loss = func_loss(blocks.reshape(layout.n_blocks, 1, -1), *tensors[data.concept_ids[c]])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def hyper_prediction(
    model: Hyper, func_loss: FunctionSpaceLoss, embedding: np.ndarray
) -> np.ndarray:
    """The flat weight vector `Hyper` predicts for ``embedding``."""
    blocks = model(torch.from_numpy(np.asarray(embedding, dtype=np.float32)))
    layout = func_loss.codec.layout
    return func_loss.codec.decode_tensor(blocks.reshape(layout.n_blocks, -1)).numpy()
