"""Frame quality against a reference (PSNR, SSIM) and temporal stability (flicker, identity drift).

Frames are uint8 RGB [T, H, W, 3] (or one frame [H, W, 3]); pixel values are compared on the 0..255 scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from avatar_gen.evaluation.faces import FaceTrack, crop_region, detect_faces

PIXEL_MAX = 255.0
SSIM_SIGMA = 1.5  # Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03
SSIM_WINDOW = 11
SSIM_K1, SSIM_K2 = 0.01, 0.03
DRIFT_SIZE = 64  # face crops are compared at 64x64 grey: identity, not pixel-exact texture


def psnr(frames: np.ndarray, reference: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB over all pixels of same-shaped arrays; ``inf`` when identical."""
    if frames.shape != reference.shape:
        raise ValueError(f"psnr: shapes differ {frames.shape} vs {reference.shape}")
    mse = float(np.mean((frames.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(PIXEL_MAX ** 2 / mse)


def _gaussian_blur(image: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(image, (SSIM_WINDOW, SSIM_WINDOW), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)


def _ssim_channel(a: np.ndarray, b: np.ndarray) -> float:
    blur = _gaussian_blur
    c1, c2 = (SSIM_K1 * PIXEL_MAX) ** 2, (SSIM_K2 * PIXEL_MAX) ** 2
    mean_a, mean_b = blur(a), blur(b)
    var_a = blur(a * a) - mean_a ** 2
    var_b = blur(b * b) - mean_b ** 2
    covariance = blur(a * b) - mean_a * mean_b
    ssim_map = ((2 * mean_a * mean_b + c1) * (2 * covariance + c2)) / (
        (mean_a ** 2 + mean_b ** 2 + c1) * (var_a + var_b + c2))
    # Like scikit-image, leave out the border where the window reaches outside the image.
    margin = (SSIM_WINDOW - 1) // 2
    if ssim_map.shape[0] > 2 * margin and ssim_map.shape[1] > 2 * margin:
        ssim_map = ssim_map[margin:-margin, margin:-margin]
    return float(ssim_map.mean())


def ssim(frame: np.ndarray, reference: np.ndarray) -> float:
    """Structural similarity of two uint8 images [H, W] or [H, W, C] (mean over channels), 1.0 when equal."""
    if frame.shape != reference.shape:
        raise ValueError(f"ssim: shapes differ {frame.shape} vs {reference.shape}")
    # float32 is plenty for 8-bit images and halves the blur cost; identical inputs still give exactly 1.0.
    a = frame.astype(np.float32)
    b = reference.astype(np.float32)
    if a.ndim == 2:
        return _ssim_channel(a, b)
    return float(np.mean([_ssim_channel(a[..., c], b[..., c]) for c in range(a.shape[-1])]))


@dataclass(frozen=True)
class ReferenceComparison:
    """PSNR/SSIM of a clip against its reference over their common frames."""

    psnr_db: float  # over all compared pixels (inf when identical)
    psnr_db_mean_per_frame: float  # mean of per-frame PSNR (frames equal to the reference count as inf)
    ssim: float  # mean of per-frame SSIM
    ssim_per_frame: list[float]
    frames_compared: int
    frames_generated: int
    frames_reference: int
    resized_reference: bool  # the reference was resized to the generated frame size


def compare_to_reference(frames: np.ndarray, reference: np.ndarray) -> ReferenceComparison:
    """Frame-by-frame PSNR/SSIM; frames are paired by index, the longer clip's tail is left out (and recorded)."""
    compared = min(len(frames), len(reference))
    if compared == 0:
        raise ValueError("compare_to_reference: a clip has no frames")
    resized = reference.shape[1:3] != frames.shape[1:3]
    height, width = frames.shape[1:3]
    per_frame_ssim, per_frame_psnr, squared_errors = [], [], 0.0
    for index in range(compared):
        ref = reference[index]
        if resized:
            ref = cv2.resize(ref, (width, height), interpolation=cv2.INTER_AREA)
        per_frame_ssim.append(ssim(frames[index], ref))
        per_frame_psnr.append(psnr(frames[index], ref))
        squared_errors += float(np.mean((frames[index].astype(np.float64) - ref.astype(np.float64)) ** 2))
    mse = squared_errors / compared
    return ReferenceComparison(
        psnr_db=math.inf if mse == 0 else 10.0 * math.log10(PIXEL_MAX ** 2 / mse),
        psnr_db_mean_per_frame=float(np.mean(per_frame_psnr)),
        ssim=float(np.mean(per_frame_ssim)), ssim_per_frame=per_frame_ssim, frames_compared=compared,
        frames_generated=len(frames), frames_reference=len(reference), resized_reference=resized,
    )


@dataclass(frozen=True)
class TemporalStability:
    """Flicker: mean absolute difference between consecutive frames (0..255 scale), its mean/std/max over
    the clip.  Drift: SSIM of the face region (64x64 grey) of every frame against the anchor (the input
    image when given, else frame 0); ``drift_ssim_last`` is the last frame's, ``drift_ssim_min`` the worst."""

    flicker_mean: float
    flicker_std: float
    flicker_max: float
    drift_ssim_mean: float
    drift_ssim_min: float
    drift_ssim_last: float
    drift_region: str  # "face" or "frame" (no face found)
    drift_anchor: str  # "input_image" or "first_frame"
    drift_per_frame: list[float]


def frame_differences(frames: np.ndarray) -> np.ndarray:
    """Mean absolute difference of each frame to the previous one, float [T - 1] (0..255 scale)."""
    # Frame by frame: a whole-clip int16 copy of an HD clip would cost gigabytes.
    return np.array([cv2.absdiff(frames[index], frames[index - 1]).mean() for index in range(1, len(frames))],
                    dtype=np.float64)


def temporal_stability(frames: np.ndarray, track: FaceTrack | None = None,
                       anchor_image: np.ndarray | None = None) -> TemporalStability:
    """Flicker and identity drift of uint8 RGB frames [T, H, W, 3].

    ``anchor_image`` (uint8 RGB, any size) is the input portrait; it is resized to the frame size and
    its face region is taken at frame 0's box.  Without a face track the whole frame is compared.
    """
    differences = frame_differences(frames)
    height, width = frames.shape[1:3]
    anchor_frame = frames[0]
    if anchor_image is not None:
        anchor_frame = cv2.resize(anchor_image, (width, height), interpolation=cv2.INTER_AREA)

    def region(frame: np.ndarray, index: int) -> np.ndarray:
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        box = track.boxes[index] if track is not None else (0, 0, width, height)
        return crop_region(grey, box, DRIFT_SIZE, DRIFT_SIZE)

    anchor_region = region(anchor_frame, 0)
    drift = [ssim(region(frame, index), anchor_region) for index, frame in enumerate(frames)]
    return TemporalStability(
        flicker_mean=float(differences.mean()) if differences.size else 0.0,
        flicker_std=float(differences.std()) if differences.size else 0.0,
        flicker_max=float(differences.max()) if differences.size else 0.0,
        drift_ssim_mean=float(np.mean(drift)), drift_ssim_min=float(np.min(drift)),
        drift_ssim_last=float(drift[-1]), drift_region="face" if track is not None else "frame",
        drift_anchor="input_image" if anchor_image is not None else "first_frame", drift_per_frame=drift,
    )


@dataclass(frozen=True)
class PortraitIdentity:
    """SSIM (64x64 grey) of every frame's region at the portrait's own face box to the portrait's face.

    ``region``: "face" (the detector found a face in the portrait) or "frame" (it did not: whole frames compared).
    ``box``: that region in the frames' pixels ``(x, y, width, height)``.
    """

    per_frame: list[float]
    region: str
    box: tuple[float, float, float, float]


def identity_at_portrait_face(frames: np.ndarray, portrait: np.ndarray) -> PortraitIdentity:
    """How much every frame of uint8 RGB ``frames`` [T, H, W, 3] still shows the portrait's face where the portrait
    shows it.

    Unlike :func:`temporal_stability`'s drift, which crops each frame at its tracked box, the region here is fixed:
    the face the detector finds in the portrait itself (resized to the frame size), compared at the same place in
    every frame.  Why: a long video's drift is read as the ratio of two windows a minute apart, and a tracked box on
    generated faces changes scale wherever the detector starts or stops finding the face (interpolated boxes are
    held from the nearest detection), which moves SSIM with no change in the picture.  A face that moves off, grows
    or shrinks from the portrait's place still lowers this figure, which is right for a talking head generated from
    that portrait with a still camera.
    """
    height, width = frames.shape[1:3]
    portrait = cv2.resize(portrait, (width, height), interpolation=cv2.INTER_AREA)
    found = detect_faces(portrait)
    box = tuple(float(value) for value in found[0]) if len(found) else (0.0, 0.0, float(width), float(height))

    def region(frame: np.ndarray) -> np.ndarray:
        return crop_region(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), box, DRIFT_SIZE, DRIFT_SIZE)

    reference = region(portrait)
    return PortraitIdentity(per_frame=[ssim(region(frame), reference) for frame in frames],
                            region="face" if len(found) else "frame", box=box)
