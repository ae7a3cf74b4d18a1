"""Fréchet Video Distance: Fréchet distance between Gaussians fitted to video features.

FVD (Unterthiner et al., 2018) uses an I3D network trained on Kinetics-400 as the feature extractor.
The extractor is given by path, in one of two forms:

- an **I3D state dict** (``torch.load(weights_only=True)``) with the key names of the PyTorch Kinetics I3D port
  (e.g. its ``rgb_imagenet.pt``): run by our :class:`avatar_gen.evaluation.i3d.InceptionI3d`, features = its
  400 logits;
- any **TorchScript** module (``torch.jit.load``), e.g. the ``i3d_torchscript.pt`` export used by StyleGAN-V and
  the fvd-comparison study.  When its ``forward`` has ``rescale``/``resize``/``return_features`` arguments it is
  called with ``rescale=False, resize=False, return_features=True``, otherwise ``model(video)``; it must return
  [B, D] features (anything with more dimensions is averaged over the extra ones).

Both get float32 [B, 3, T, 224, 224], RGB, values in [-1, 1], T = :data:`FVD_CLIP_FRAMES` frames (the first 16
frames of each clip, resized to 224x224 without keeping the aspect ratio).  A TorchScript archive holds
TorchScript code and tensors, not arbitrary pickled Python; load only files you trust all the same.  Numbers
are comparable with published FVD only when the extractor is the TF-Hub I3D (or its TorchScript export) and
the clip length / resolution match the protocol (16 frames, 224 px).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import scipy.linalg
import torch

from avatar_gen.errors import UserError, first_line
from avatar_gen.utils.datafiles import load_tensor_file
from avatar_gen.evaluation.i3d import i3d_from_state_dict, looks_like_i3d_state_dict

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
        self.device = torch.device(device)
        self.path = str(path)
        self.call_kwargs: dict[str, bool] = {}
        try:
            self.model = torch.jit.load(str(path), map_location=self.device).eval()
            self.kind = "torchscript"
        except (RuntimeError, ValueError) as torchscript_error:
            self.model = self._load_i3d_state_dict(path, torchscript_error).to(self.device)
            self.kind = "i3d_state_dict"
            return
        arguments = {argument.name for argument in self.model.forward.schema.arguments}
        if {"rescale", "resize", "return_features"} <= arguments:
            self.call_kwargs = {"rescale": False, "resize": False, "return_features": True}

    @staticmethod
    def _load_i3d_state_dict(path: Path, torchscript_error: Exception) -> torch.nn.Module:
        try:
            state = load_tensor_file(path, "I3D weights")
        except UserError:
            state = None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not (isinstance(state, dict) and looks_like_i3d_state_dict(state)):
            raise UserError(f"{path} is neither a TorchScript model ({first_line(torchscript_error)[:120]}) "
                            "nor an I3D state dict; see docs/evaluation.md (FVD)") from None
        try:
            return i3d_from_state_dict(state)
        except ValueError as exc:
            raise UserError(f"{path}: {exc}") from None

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
