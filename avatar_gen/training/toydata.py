"""Toy training data written straight in the stage formats (no VAE, no audio encoder), for tests and benchmarks.

Each chunk is a "face" whose "mouth" follows a per-frame loudness: latents [C, F', h, w] = a per-clip static
pattern + the loudness averaged over each latent frame's pixel frames (causal VAE windows) times a fixed
"mouth" direction on the bottom latent row.  The audio features [num_frames, D] carry that loudness in channel 0
(plus a little noise in the others), so the only way to predict the mouth is to read the audio.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from avatar_gen.ltx import LTX_SPATIAL_COMPRESSION, LTX_TEMPORAL_COMPRESSION
from avatar_gen.model.alignment import latent_frame_pixel_window
from avatar_gen.utils.io import atomic_path, atomic_write_json

TOY_ENCODER = {"encoder": "wav2vec2", "name_or_path": "toy-loudness", "layers": [0], "feature_dim": None}


def write_toy_chunks(root: str | Path, num_clips: int, chunks_per_clip: int = 1, num_frames: int = 33,
                     latent_channels: int = 8, latent_height: int = 2, latent_width: int = 2, feature_dim: int = 4,
                     fps: float = 25.0, mouth_strength: float = 2.0, seed: int = 0,
                     encoder: dict | None = None) -> Path:
    """Write ``root/vae_latents/<clip>_<k>.pt/.json`` and ``root/audio_latents/<clip>_<k>_ff.npy/_text.json``.

    Latents are stored raw with identity statistics (mean 0, std 1, scaling 1).  ``encoder``: the spec the
    ``_text.json`` records name (default: a toy one no loader knows).  Returns ``root``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    latent_frames = (num_frames - 1) // LTX_TEMPORAL_COMPRESSION + 1
    mouth_direction = rng.standard_normal(latent_channels).astype(np.float32)
    mouth_direction /= np.linalg.norm(mouth_direction) / np.sqrt(latent_channels)
    encoder = dict(encoder or TOY_ENCODER, feature_dim=feature_dim)
    vae = {"name_or_path": "toy", "revision": None, "dtype": "float32", "latents_mean": [0.0] * latent_channels,
           "latents_std": [1.0] * latent_channels, "scaling_factor": 1.0}
    for clip in range(num_clips):
        clip_id = f"toyclip{clip:03d}"
        face = rng.standard_normal((latent_channels, 1, latent_height, latent_width)).astype(np.float32) * 0.5
        for chunk in range(chunks_per_clip):
            key = f"{clip_id}_{chunk}"
            loudness = np.clip(np.convolve(rng.random(num_frames + 4), np.ones(5) / 5, mode="valid"), 0, 1)
            loudness = (loudness - loudness.mean()) / (loudness.std() + 1e-6)
            latents = np.repeat(face, latent_frames, axis=1).copy()
            # The mouth of latent frame f: loudness averaged over the pixel frames that frame encodes, rescaled
            # to unit spread (averaging 8 frames would otherwise shrink the signal), on the bottom latent row.
            mouth = np.array([loudness[start:end + 1].mean()
                              for start, end in map(latent_frame_pixel_window, range(latent_frames))])
            mouth = (mouth - mouth.mean()) / (mouth.std() + 1e-6)
            latents[:, :, -1, :] += mouth_strength * mouth[None, :, None] * mouth_direction[:, None, None]
            with atomic_path(root / "vae_latents" / f"{key}.pt") as tmp:
                torch.save({"latents": torch.from_numpy(latents)}, tmp)
            atomic_write_json(root / "vae_latents" / f"{key}.json", {
                "clip_id": clip_id, "chunk": chunk, "video_path": f"clips/{clip_id}.mp4",
                "start_frame": chunk * num_frames, "num_frames": num_frames, "fps": fps,
                "start_time": chunk * num_frames / fps, "end_time": (chunk + 1) * num_frames / fps,
                "height": latent_height * LTX_SPATIAL_COMPRESSION, "width": latent_width * LTX_SPATIAL_COMPRESSION,
                "latent_shape": [latent_channels, latent_frames, latent_height, latent_width], "vae": vae})
            features = rng.standard_normal((num_frames, feature_dim)).astype(np.float32) * 0.1
            features[:, 0] = loudness
            with atomic_path(root / "audio_latents" / f"{key}_ff.npy") as tmp:
                np.save(tmp, features)
            atomic_write_json(root / "audio_latents" / f"{key}_text.json", {
                "text": "toy", "words": [], "audio_source": "toy", "tts": None, "encoder": encoder, "fps": fps,
                "num_frames": num_frames})
    return root
