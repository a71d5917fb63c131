"""p-diff (Wang et al. 2024, "Neural Network Diffusion") on wgen's weight layer and Ray.

data (digits or an image folder) → zoo (Ray tasks, Parquet weight format) → fit (parameter
autoencoder + latent DDPM, one Ray Train run) → sample → analysis (memorisation, Zeng et
al. 2025) → report. `wgen.pdiff.stage.run_pdiff` runs them in order.
"""
