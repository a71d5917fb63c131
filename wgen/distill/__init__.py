"""Stage 6: guided distillation of the weight generator (Meng et al., CVPR 2023).

`targets` holds the pure pieces (stage 1's w-student loss, stage 2's progressive target and
loss) on plain tensors; `fit` runs one stage or round as a Ray Train run through the same
driver pieces as `wgen train`; `stage` chains the rounds on a run folder (`wgen distill`).
`pdiff` distils p-diff's latent DDPM with the same progressive loss (`--target pdiff`).
"""
