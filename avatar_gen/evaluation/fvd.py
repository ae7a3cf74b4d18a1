"""Fréchet Video Distance: Fréchet distance between Gaussians fitted to video features.

FVD (Unterthiner et al., 2018) uses an I3D network trained on Kinetics-400 as the feature extractor.
This module does not ship or re-implement I3D: it runs a **TorchScript** feature extractor given by
path (``torch.jit.load``), e.g. the ``i3d_torchscript.pt`` used by StyleGAN-V and the fvd-comparison
study.  What it must accept and return:

- input: float32 [B, 3, T, 224, 224], RGB, values in [-1, 1], T = :data:`FVD_CLIP_FRAMES` frames
  (the first 16 frames of each clip, resized to 224x224 without keeping the aspect ratio);
- when its ``forward`` has ``rescale``/``resize``/``return_features`` arguments (the StyleGAN-V export),
  it is called with ``rescale=False, resize=False, return_features=True``; otherwise ``model(video)``;
- output: [B, D] features (anything with more dimensions is averaged over the extra ones).

A TorchScript archive holds TorchScript code and tensors, not arbitrary pickled Python; load only
files you trust all the same.  Numbers are comparable with published FVD only when the extractor is
that I3D and the clip length / resolution match the paper's protocol (16 frames, 224 px).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import scipy.linalg
import torch

from avatar_gen.errors import UserError

log = logging.getLogger(__name__)

FVD_CLIP_FRAMES = 16
FVD_SIZE = 224


def frechet_distance(mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray) -> float:
    """``|mu_a - mu_b|^2 + Tr(C_a + C_b - 2 (C_a C_b)^(1/2))`` for Gaussians N(mu, C) of dimension D."""
    mean_a, mean_b = np.atleast_1d(mean_a).astype(np.float64), np.atleast_1d(mean_b).astype(np.float64)
    cov_a, cov_b = np.atleast_2d(cov_a).astype(np.float64), np.atleast_2d(cov_b).astype(np.float64)
    covariance_root = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covariance_root).all():
        # Singular products (fewer samples than dimensions) make sqrtm unstable: regularise slightly.
        offset = np.eye(len(cov_a)) * 1e-6
        covariance_root = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    covariance_root = np.real(covariance_root)  # imaginary parts are numerical noise
    difference = mean_a - mean_b
    distance = float(difference @ difference + np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.trace(covariance_root))
    return max(distance, 0.0)  # a true distance is >= 0; tiny negatives are rounding in sqrtm


def gaussian_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and covariance [D, D] of features [N, D] (N >= 2)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f"need features [N >= 2, D], got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def feature_frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance between two feature sets [N_a, D] and [N_b, D]."""
    mean_a, cov_a = gaussian_statistics(features_a)
    mean_b, cov_b = gaussian_statistics(features_b)
    return frechet_distance(mean_a, np.atleast_2d(cov_a), mean_b, np.atleast_2d(cov_b))


class VideoFeatureExtractor:
    """A TorchScript video feature extractor loaded from ``path`` (see the module docstring for the contract)."""

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cpu"):
        path = Path(path)
        if not path.is_file():
            raise UserError(f"I3D/feature-extractor model not found: {path}")
        try:
            self.model = torch.jit.load(str(path), map_location=device).eval()
        except (RuntimeError, ValueError) as exc:
            raise UserError(f"{path} is not a TorchScript model ({str(exc).splitlines()[0][:200]}); "
                            "FVD needs a TorchScript feature extractor, see docs/evaluation.md") from None
        self.device = torch.device(device)
        self.path = str(path)
        arguments = {argument.name for argument in self.model.forward.schema.arguments}
        self.call_kwargs = ({"rescale": False, "resize": False, "return_features": True}
                            if {"rescale", "resize", "return_features"} <= arguments else {})

    @staticmethod
    def prepare(frames: np.ndarray, num_frames: int = FVD_CLIP_FRAMES) -> np.ndarray | None:
        """uint8 RGB [T, H, W, 3] -> float32 [3, num_frames, 224, 224] in [-1, 1]; None if T < num_frames."""
        if len(frames) < num_frames:
            return None
        resized = np.stack([cv2.resize(frame, (FVD_SIZE, FVD_SIZE), interpolation=cv2.INTER_AREA)
                            for frame in frames[:num_frames]])
        return (resized.astype(np.float32) / 127.5 - 1.0).transpose(3, 0, 1, 2)

    @torch.inference_mode()
    def features(self, clip: np.ndarray) -> np.ndarray:
        """Features [D] of one prepared clip [3, T, 224, 224]."""
        batch = torch.from_numpy(np.ascontiguousarray(clip))[None].to(self.device)
        output = self.model(batch, **self.call_kwargs)
        if output.ndim > 2:
            output = output.flatten(2).mean(dim=2)
        return output[0].float().cpu().numpy()
