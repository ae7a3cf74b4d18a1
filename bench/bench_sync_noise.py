"""Does frame-to-frame noise in the latents alone take the offline sync score away? The toy VAE's ceiling under noise.

    python bench/bench_sync_noise.py                        # 6 fresh held-out-style clips, the committed toy VAE
    python bench/bench_sync_noise.py --held_out outputs/toy-pretrain/synthetic/held_out --clips 6

The toy world's generated videos flicker far more than the truth (docs/results.md, "The toy world") and score a far
lower offline sync@0.  This separates the two: each clip is encoded by the VAE (posterior mode), every latent frame
but the first (which generation is given) gets its own Gaussian noise of ``level`` times the latents' per-channel
standard deviation, and the result is decoded.  Per noise level it prints the flicker (mean absolute difference of
consecutive frames, 0..255) and the offline sync@0 of the decode against the clip's speech, mean and spread over the
clips.  If the sync holds while the flicker rises past the generated videos', the grain is not what keeps their sync
low: their mouths' movement is.  Without ``--held_out`` it writes ``--clips`` close-up clips with the held-out
voices of ``configs/toy-pretrain.yaml`` (a seed no toy training set uses) into a temporary folder.  Prints one JSON
line; docs/results.md keeps the measured figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BASE = ROOT / "models" / "toy-ltx-video"
TOY_CONFIG = ROOT / "configs" / "toy-pretrain.yaml"
CLIP_SEED = 7_000_001  # other figures and sentences than the toy's training and held-out sets
MAX_FRAMES = 97  # at most the first ~4 s of each clip (fewer where the VAE needs 1 + t k frames)

log = logging.getLogger("bench.sync_noise")


def fresh_clips(folder: Path, count: int) -> Path:
    """``count`` close-up synthetic clips at the toy's size and rate, spoken with its held-out voices."""
    from avatar_gen.config import load_config
    from avatar_gen.synthetic import generate_dataset
    from avatar_gen.toy.config import ToyPretrainConfig

    data = load_config(ToyPretrainConfig, TOY_CONFIG).data
    generate_dataset(folder, num_clips=count, seed=CLIP_SEED, size=data.size, fps=data.fps,
                     min_seconds=data.min_seconds, max_seconds=data.max_seconds,
                     framing="close_up", voices=data.held_out_voices)
    return folder


@torch.no_grad()
def measure(vae, clips, fps: float, levels: list[float], seed: int) -> dict[str, dict[str, float | int | None]]:
    from avatar_gen.evaluation.quality import frame_differences
    from avatar_gen.latents.vae import decode_latents, vae_compression
    from avatar_gen.media import read_frames
    from avatar_gen.toy.measure import reconstructable_frames
    from avatar_gen.toy.vae import offline_sync
    from avatar_gen.utils.progress import progress

    temporal, _ = vae_compression(vae)
    rows: dict[float, list[tuple[float, float | None]]] = {level: [] for level in levels}
    for clip in progress(clips, desc="clips", unit="clip"):
        frames = read_frames(clip.video_path)
        frames = frames[:reconstructable_frames(min(len(frames), MAX_FRAMES), temporal)]
        pixels = torch.from_numpy(frames).float().div(127.5).sub(1.0).permute(3, 0, 1, 2)[None]
        latents = vae.encode(pixels).latent_dist.mode()
        spread = latents.std(dim=(0, 2, 3, 4), keepdim=True)
        speech = clip.speech_16k()
        for level in levels:
            noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed))
            noisy = latents + level * spread * noise
            noisy[:, :, 0] = latents[:, :, 0]  # the first frame is given in generation
            decoded = np.asarray(decode_latents(vae, noisy)[0])
            flicker = float(frame_differences(decoded).mean())  # the evaluation's flicker
            rows[level].append((flicker, offline_sync(decoded, speech, fps)))

    def summary(values: list[float]) -> dict[str, float | int | None]:
        return {"mean": round(float(np.mean(values)), 4) if values else None,
                "std": round(float(np.std(values)), 4) if values else None, "n": len(values)}

    return {str(level): {"flicker": summary([flicker for flicker, _ in rows[level]]),
                         "sync": summary([sync for _, sync in rows[level] if sync is not None])}
            for level in levels}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default=str(DEFAULT_BASE), help="LTX-Video folder or hub id whose VAE is used "
                        "(default: the committed toy base)")
    parser.add_argument("--held_out", type=Path, default=None,
                        help="synthetic clip folder (default: fresh clips in a temporary folder)")
    parser.add_argument("--clips", type=int, default=6, help="clips measured (default: 6)")
    parser.add_argument("--levels", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.5],
                        help="noise levels, in units of the latents' per-channel standard deviation")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    if args.clips < 1 or any(level < 0 for level in args.levels):
        parser.error("--clips must be >= 1 and every --levels value >= 0")
    from avatar_gen.errors import UserError
    from avatar_gen.latents.vae import load_vae
    from avatar_gen.toy.measure import read_held_out

    torch.set_num_threads(2)
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folder = args.held_out if args.held_out is not None else fresh_clips(Path(tmp) / "clips", args.clips)
            held_out = read_held_out(folder)
            clips = held_out.clips[:args.clips]
            vae = load_vae(args.base, None, dtype="fp32", device="cpu").vae.eval()
            figures = measure(vae, clips, held_out.fps, args.levels, args.seed)
    except UserError as exc:
        sys.stderr.write(f"bench_sync_noise: {exc}\n")
        return 2
    for level, row in figures.items():
        log.info("noise %s: flicker %.2f ± %.2f, sync@0 %s ± %s (n = %d)", level, row["flicker"]["mean"],
                 row["flicker"]["std"], row["sync"]["mean"], row["sync"]["std"], row["sync"]["n"])
    print(json.dumps({"base": str(args.base), "clips": len(clips), "frames_per_clip": MAX_FRAMES,
                      "held_out": str(folder) if args.held_out is not None else "fresh", "levels": figures,
                      "seconds": round(time.perf_counter() - started, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
