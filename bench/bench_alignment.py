"""Global vs local alignment of the audio tokens in cross-attention: the audio-conditioning gain on toy chunks.

    python bench/bench_alignment.py [--steps 400] [--clips 24] [--seed 0]

Data: ``avatar_gen.training.toydata`` chunks (33 frames, 8x5x2x2 latents, 4-d features) whose "mouth" latent row
follows a per-frame loudness carried in feature channel 0; a third of the clips (other faces, other loudness) is held
out.  Model: the tiny zoo's 2-layer transformer, trained in full (a random base cannot carry LoRA) with the audio
projection for ``--steps`` steps at batch 3, once per alignment, same seed.  Figures: the audio-conditioning gain
(loss with another chunk's audio / loss with the true audio, fixed draws; > 1 means the speech is used) on 8 training
chunks (in-sample) and on 8 held-out chunks, with its spread over 4 draws.  Prints one JSON line; docs/results.md
keeps the measured figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import torch

from avatar_gen.config import validate_config
from avatar_gen.tiny import build_tiny_zoo
from avatar_gen.training.config import TrainConfig
from avatar_gen.training.toydata import write_toy_chunks
from avatar_gen.training.trainer import Trainer

FEATURE_DIM = 4


def run(work: Path, zoo: Path, data: Path, alignment: str, steps: int, seed: int) -> dict:
    config = validate_config(TrainConfig, {
        "output_dir": str(work / f"run-{alignment}"),
        "model": {"pretrained": str(zoo / "ltx-video"), "dtype": "float32"},
        "lora": {"train_mode": "full"},
        "audio": {"feature_dim": FEATURE_DIM, "hidden_dim": 32, "alignment": alignment, "local_margin_frames": 2},
        "data": {"vae_latents": str(data / "vae_latents"), "audio_latents": str(data / "audio_latents"),
                 "held_out_fraction": 0.33, "batch_size": 3, "num_workers": 0},
        "flow": {"shift": 1.0},
        "conditioning": {"first_frame_probability": 1.0},
        "optimization": {"max_steps": steps, "learning_rate": 3e-3, "warmup_steps": 20, "weight_decay": 0.0,
                         "seed": seed},
        "acceleration": {"device": "cpu", "mixed_precision": "fp32", "gradient_checkpointing": False},
        "checkpoints": {"every_n_steps": steps},
        "validation": {"every_n_steps": None, "held_out_chunks": 8, "train_chunks": 8, "num_draws": 4},
        "logging": {"log_every_n_steps": steps, "tensorboard": False},
    })
    started = time.perf_counter()
    trainer = Trainer(config)
    trainer.train()
    figures = trainer.validate()
    return {"train_clips": len({record.clip_id for record in trainer.train_records}),
            "held_out_clips": len({record.clip_id for record in trainer.held_out_records}),
            "in_sample_gain": round(figures["train_eval_audio_gain"], 3),
            "in_sample_gain_std": round(figures["train_eval_audio_gain_std"], 3),
            "held_out_gain": round(figures["val_audio_gain"], 3),
            "held_out_gain_std": round(figures["val_audio_gain_std"], 3),
            "seconds": round(time.perf_counter() - started, 1)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="optimizer steps per alignment")
    parser.add_argument("--clips", type=int, default=24, help="toy clips (a third held out)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and the training")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        zoo = work / "zoo"
        build_tiny_zoo(zoo, only=["ltx-video"])
        data = write_toy_chunks(work / "data", num_clips=args.clips, feature_dim=FEATURE_DIM, mouth_strength=3.0,
                                seed=args.seed)
        results = {alignment: run(work, zoo, data, alignment, args.steps, args.seed)
                   for alignment in ("global", "local")}
    print(json.dumps({"steps": args.steps, "clips": args.clips, "seed": args.seed, **results}))


if __name__ == "__main__":
    main()
