"""Training: typed config, latent/audio dataset, the trainer (single process and DeepSpeed)."""
