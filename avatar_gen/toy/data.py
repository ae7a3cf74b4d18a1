"""The toy world's clips: synthetic close-up talkers, a training set and a held-out set.

The held-out set has its own seed (other figures, backgrounds and sentences) and speaks with voices no training clip
uses, so every held-out figure in docs/toy.md is on an unseen figure, an unseen sentence and an unseen voice.
"""

from __future__ import annotations

import logging
from pathlib import Path

from avatar_gen.media import read_frames
from avatar_gen.synthetic import generate_dataset
from avatar_gen.synthetic.dataset import CLIPS_DIR, GROUND_TRUTH_DIR, load_ground_truth
from avatar_gen.toy.config import ToyDataSection
from avatar_gen.toy.vae import ClipFrames

log = logging.getLogger(__name__)

TRAIN_FOLDER = "train"
HELD_OUT_FOLDER = "held_out"
HELD_OUT_SEED_OFFSET = 1_000_003  # a seed no training set of a nearby seed uses


def write_toy_clips(settings: ToyDataSection, seed: int, synthetic_dir: Path) -> dict[str, Path]:
    """Write (or keep, when complete) the training and held-out clips; returns their folders."""
    folders = {}
    for name, count, voices, split_seed in (
            (TRAIN_FOLDER, settings.train_clips, settings.train_voices, seed),
            (HELD_OUT_FOLDER, settings.held_out_clips, settings.held_out_voices, seed + HELD_OUT_SEED_OFFSET)):
        folders[name] = synthetic_dir / name
        generate_dataset(folders[name], num_clips=count, seed=split_seed, size=settings.size, fps=settings.fps,
                         min_seconds=settings.min_seconds, max_seconds=settings.max_seconds, framing="close_up",
                         voices=voices)
    return folders


def load_clip_frames(folder: Path) -> list[ClipFrames]:
    """Every clip of a synthetic folder, decoded (the frames the VAE stage will see) with its mouth position."""
    clips = []
    for truth_path in sorted((folder / GROUND_TRUTH_DIR).glob("*.json")):
        truth = load_ground_truth(truth_path)
        frames = read_frames(folder / CLIPS_DIR / f"{truth['clip_id']}.mp4")
        clips.append(ClipFrames(clip_id=truth["clip_id"], frames=frames, mouth_x=truth["mouth"]["x"] * truth["width"],
                                mouth_y=truth["mouth"]["y"] * truth["height"], head_radius=truth["head_radius"]))
    log.info("loaded %d clips (%d frames) from %s", len(clips), sum(len(c.frames) for c in clips), folder)
    return clips
