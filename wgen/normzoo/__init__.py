"""A second base-model family: the norm layers of a small digit classifier, one per class subset.

wgen's generator learns the selected parameters of a frozen base model from a zoo of
per-concept weights (docs/architecture.md, "Base models"). This package is that zoo for a
classifier instead of the GAN:

- `wgen.normzoo.concepts`: a concept is a subset of the ten digit classes, named in text
  ("digits 2, 5 and 7"), split into train / val / heldout like the GAN's concepts;
- `wgen.normzoo.base_model`: `NormClassifierBaseModel`, the family "classifier-norm" of
  `wgen.models.base.BASE_MODELS` (a ConvNet-3 with frozen BatchNorm statistics whose norm
  layers' affine parameters are what wgen generates);
- `wgen.normzoo.zoo`: builds a run folder that `wgen train` reads (``concepts.jsonl``,
  ``base/``, ``weights/``): the base trained once, then each concept's norm layers fine-tuned
  on its classes' images as a Ray task, K checkpoints per concept.

The classifier, the digits and its training step are p-diff's (`wgen.models.classifiers`,
`wgen.pdiff.data`, `wgen.pdiff.zoo`); p-diff varies the same layers without text.
"""
