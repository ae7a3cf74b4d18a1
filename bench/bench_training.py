"""Training step time, peak memory and the trainer's overhead over a bare forward/backward/step, on CPU.

    python bench/bench_training.py [--steps 4] [--skip-full-size]

Two cases: the tiny zoo transformer (full fine-tuning, as configs/train-tiny.yaml) and the full-size LTX-Video
2B architecture (``LTXVideoTransformer3DModel()`` defaults, random weights, fp32 LoRA rank 64 on attn2 over a
frozen base: bf16 + autocast on CUDA as in configs/train-avatars.yaml, fp32 on CPU, which lacks fast bf16) on
tiny 2x4x4 latents (9 frames of 128x128).  The overhead ratio is
the median trainer step (data loading, noise/sigma sampling, masks, clipping, LR schedule, NaN checks) over the
median bare step (the same model, fixed inputs: forward, MSE, backward, AdamW step), timed alternately so that
load from other processes hits both alike.  Prints one JSON line.  No GPU here: samples/s at 768x512x97 in bf16
needs a CUDA machine (run the same script there with --device cuda).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch

from avatar_gen.config import validate_config
from avatar_gen.model.flow import first_frame_token_mask, make_flow_inputs, pack_latents
from avatar_gen.training.config import TrainConfig
from avatar_gen.training.toydata import write_toy_chunks
from avatar_gen.training.metrics import peak_memory_mb
from avatar_gen.training.trainer import Trainer

FEATURE_DIM = 64


def bench_case(work: Path, name: str, pretrained: str, transformer: torch.nn.Module | None, train_mode: str,
               mixed_precision: str, latent_channels: int, steps: int, device: str) -> dict:
    data_root = write_toy_chunks(work / f"data-{name}", num_clips=4, num_frames=9, latent_channels=latent_channels,
                                 latent_height=4, latent_width=4, feature_dim=FEATURE_DIM)
    config = validate_config(TrainConfig, {
        "output_dir": str(work / f"run-{name}"),
        "model": {"pretrained": pretrained, "dtype": "bfloat16"},
        "lora": {"train_mode": train_mode, "rank": 64, "alpha": 64},
        "audio": {"feature_dim": FEATURE_DIM, "hidden_dim": 256},
        "data": {"vae_latents": str(data_root / "vae_latents"), "audio_latents": str(data_root / "audio_latents"),
                 "held_out_fraction": 0.0, "batch_size": 1, "num_workers": 0},
        "optimization": {"max_steps": 1000, "warmup_steps": 0, "learning_rate": 1e-4},
        "acceleration": {"device": device, "mixed_precision": mixed_precision, "gradient_checkpointing": False},
        "checkpoints": {"every_n_steps": 1000},
        "validation": {"every_n_steps": None, "held_out_chunks": 0},
        "logging": {"tensorboard": False},
    })
    started = time.perf_counter()
    trainer = Trainer(config, transformer=transformer)
    build_s = time.perf_counter() - started
    batches = trainer._batches()

    # The bare loop: same model and parameters, inputs prepared once, no trainer machinery.
    sample = next(trainer._batches())
    latents = sample["latents"]
    frames, height, width = latents.shape[2:]
    clean = pack_latents(latents).to(trainer.device)
    inputs = make_flow_inputs(clean, torch.randn_like(clean), torch.full((1,), 0.5, device=trainer.device),
                              first_frame_token_mask(1, frames, height * width,
                                                     torch.ones(1, dtype=torch.bool)).to(trainer.device))
    audio = sample["audio"].to(trainer.device)
    bare_optimizer = torch.optim.AdamW(trainer.trainable, lr=1e-12)

    def bare_step() -> None:
        with trainer.stepper.autocast():
            prediction = trainer.model(inputs.noisy, audio, inputs.timestep, frames, height, width, 25.0)
        loss = (prediction.float() - inputs.target).pow(2).mean()
        loss.backward()
        bare_optimizer.step()
        bare_optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()

    trainer.optimizer_step(batches)  # warm-up: allocations, first-call overheads
    bare_step()
    trainer_times, bare_times = [], []
    for _ in range(steps):
        sync()
        started = time.perf_counter()
        trainer.optimizer_step(batches)
        sync()
        trainer_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        bare_step()
        sync()
        bare_times.append(time.perf_counter() - started)
    trainer_step, bare = statistics.median(trainer_times), statistics.median(bare_times)
    return {
        "trainable_params_m": round(sum(p.numel() for p in trainer.trainable) / 1e6, 3),
        "total_params_m": round(sum(p.numel() for p in trainer.model.parameters()) / 1e6, 1),
        "latent_shape": list(latents.shape[1:]), "video_tokens": int(clean.shape[1]), "mode": train_mode,
        "precision": mixed_precision, "build_s": round(build_s, 2),
        "trainer_step_s": round(trainer_step, 4), "bare_step_s": round(bare, 4),
        "overhead_ratio": round(trainer_step / bare, 3), "samples_per_s": round(1.0 / trainer_step, 3),
        "peak_memory_mb": round(peak_memory_mb(trainer.device), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="timed steps per case")
    parser.add_argument("--skip-full-size", action="store_true", help="only the tiny model")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", choices=["bf16", "fp32"],
                        help="full-size case (default: bf16 on cuda, fp32 on cpu)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from diffusers import LTXVideoTransformer3DModel

    from avatar_gen.tiny import build_tiny_zoo

    results: dict = {"device": args.device, "torch_threads": torch.get_num_threads(),
                     "note": "CPU only here (no GPU lent); overhead ratio target <= 1.05"}
    with tempfile.TemporaryDirectory(prefix="bench-training-") as folder:
        work = Path(folder)
        zoo = build_tiny_zoo(work / "zoo", only=["ltx-video"])["ltx-video"]
        results["tiny"] = bench_case(work, "tiny", str(zoo), None, "full", "fp32", 8, args.steps * 5, args.device)
        if not args.skip_full_size:
            torch.manual_seed(0)
            # 2B, caption_channels 4096, 128 latent channels.  CPUs without native bf16 emulate it (minutes per
            # step), so on CPU the base stays fp32 unless --precision bf16 asks otherwise.
            precision = args.precision or ("bf16" if args.device == "cuda" else "fp32")
            full_size = LTXVideoTransformer3DModel()
            if precision == "bf16":
                full_size = full_size.to(torch.bfloat16)
            results["ltx_2b"] = bench_case(work, "ltx2b", "Lightricks/LTX-Video", full_size, "lora", precision, 128,
                                           args.steps, args.device)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
