"""SyncNet (Chung & Zisserman, 2016) and the LSE-D / LSE-C lip-sync metrics.

The network is the one of ``syncnet_python``'s ``SyncNetModel.py``, with the same module names
(``netcnnaud``, ``netfcaud``, ``netcnnlip``, ``netfclip``) so that its released ``syncnet_v2.model``
state dict loads as is.  Inputs, exactly as the released model was trained:

- audio: MFCC windows [N, 1, 13, 20] (13 coefficients x 20 frames at 100 Hz = 0.2 s = 5 video frames
  at 25 fps), from :func:`avatar_gen.evaluation.mfcc.mfcc`;
- video: 5 consecutive face crops [N, 3, 5, 224, 224], **BGR** channel order, float pixel values 0..255
  (syncnet_python read them with ``cv2.imread``; no normalisation);
- both encoders end in 1024-d embeddings; in-sync pairs are close in Euclidean distance.

LSE (as in Wav2Lip's evaluation, which runs syncnet_python): for every 5-frame window i, the distance
between its video embedding and the audio embeddings of windows i-15 .. i+15 (zero vectors outside
the clip); averaged over i this gives one mean distance per offset.  LSE-D is the smallest mean
distance, LSE-C the median minus that minimum, and the AV offset is ``15 - argmin`` (official sign:
a negative offset means the sound comes late).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from avatar_gen.errors import UserError
from avatar_gen.utils.datafiles import load_tensor_file
from avatar_gen.evaluation.faces import FaceTrack, crop_region
from avatar_gen.evaluation.mfcc import mfcc

log = logging.getLogger(__name__)

SYNCNET_FPS = 25.0  # the released model saw 25 fps video ...
SYNCNET_SAMPLE_RATE = 16_000  # ... and 16 kHz audio
SYNCNET_CROP_SIZE = 224
SYNCNET_WINDOW_FRAMES = 5  # video frames per window
MFCC_FRAMES_PER_VIDEO_FRAME = 4  # 100 Hz MFCC / 25 fps video
SYNCNET_MFCC_WINDOW = 20  # MFCC frames per window
DEFAULT_MAX_OFFSET = 15  # frames, the offset search of syncnet_python
CROP_SCALE = 0.4  # syncnet_python's run_pipeline pads the face box by this much before resizing
CROP_PAD_VALUE = 110  # ... and fills outside the frame with this grey
EMBEDDING_DIM = 1024


def _conv_block(conv: nn.Module, batch_norm: nn.Module, *tail: nn.Module) -> list[nn.Module]:
    return [conv, batch_norm, nn.ReLU(inplace=True), *tail]


class SyncNet(nn.Module):
    """Two-stream SyncNet: ``forward_aud`` [N,1,13,20] -> [N,1024], ``forward_lip`` [N,3,5,224,224] -> [N,1024].

    The ``nn.Sequential`` index layout matters: state-dict keys such as ``netcnnaud.0.weight`` or
    ``netcnnlip.25.running_mean`` must line up with the released weights.
    """

    def __init__(self, embedding_dim: int = EMBEDDING_DIM):
        super().__init__()
        # Audio: 13x20 MFCC "image" -> 512 x 1 x 1.
        self.netcnnaud = nn.Sequential(
            *_conv_block(nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1), nn.BatchNorm2d(64),
                         nn.MaxPool2d(kernel_size=1, stride=1)),
            *_conv_block(nn.Conv2d(64, 192, kernel_size=3, stride=1, padding=1), nn.BatchNorm2d(192),
                         nn.MaxPool2d(kernel_size=3, stride=(1, 2))),
            *_conv_block(nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.BatchNorm2d(384)),
            *_conv_block(nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.BatchNorm2d(256)),
            *_conv_block(nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.BatchNorm2d(256),
                         nn.MaxPool2d(kernel_size=3, stride=2)),
            nn.Conv2d(256, 512, kernel_size=(5, 4), padding=0),
            nn.BatchNorm2d(512),
            nn.ReLU(),
        )
        self.netfcaud = nn.Sequential(
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embedding_dim),
        )
        self.netfclip = nn.Sequential(
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embedding_dim),
        )
        # Video: 5 x 224 x 224 colour frames -> 512 x 1 x 1 x 1.
        self.netcnnlip = nn.Sequential(
            *_conv_block(nn.Conv3d(3, 96, kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=0), nn.BatchNorm3d(96),
                         nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2))),
            *_conv_block(nn.Conv3d(96, 256, kernel_size=(1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),
                         nn.BatchNorm3d(256),
                         nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))),
            *_conv_block(nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256)),
            *_conv_block(nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256)),
            *_conv_block(nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)), nn.BatchNorm3d(256),
                         nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2))),
            *_conv_block(nn.Conv3d(256, 512, kernel_size=(1, 6, 6), padding=0), nn.BatchNorm3d(512)),
        )

    def forward_aud(self, mfcc_windows: torch.Tensor) -> torch.Tensor:
        """[N, 1, 13, 20] MFCC windows -> [N, 1024] audio embeddings."""
        features = self.netcnnaud(mfcc_windows)
        return self.netfcaud(features.flatten(1))

    def forward_lip(self, face_windows: torch.Tensor) -> torch.Tensor:
        """[N, 3, 5, 224, 224] BGR 0..255 face crops -> [N, 1024] video embeddings."""
        features = self.netcnnlip(face_windows)
        return self.netfclip(features.flatten(1))


# Prefixes other tools add in front of the official names (SyncNetInstance's ``__S__``, DataParallel's ``module``).
_KNOWN_PREFIXES = ("__S__.", "module.", "model.")


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    for prefix in _KNOWN_PREFIXES:
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
    return state


def load_syncnet(path: str | os.PathLike, device: str | torch.device = "cpu") -> SyncNet:
    """Load SyncNet weights from a state-dict file (``torch.load(weights_only=True)``), in eval mode.

    Accepted: a plain ``{name: tensor}`` dict with the official key names (what ``syncnet_v2.model``
    holds), optionally under a ``"state_dict"``/``"model"`` key or with an ``__S__.``/``module.`` prefix.
    Old files may lack BatchNorm ``num_batches_tracked`` entries; they are not needed in eval mode.
    A pickled whole model cannot be loaded safely: re-save its ``state_dict()`` once (docs/evaluation.md).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"SyncNet weights not found: {path}")
    try:
        loaded = load_tensor_file(path, "SyncNet weights")
    except UserError as exc:
        raise UserError(f"{exc}; a pickled whole model must be converted into a state dict (convert it once with "
                        "docs/evaluation.md, 'SyncNet weights')") from None
    if isinstance(loaded, dict):
        for wrapper_key in ("state_dict", "model"):
            if wrapper_key in loaded and isinstance(loaded[wrapper_key], dict):
                loaded = loaded[wrapper_key]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise UserError(f"{path} does not hold a state dict of tensors (got {type(loaded).__name__})")
    state = _strip_prefixes(dict(loaded))
    model = SyncNet()
    expected = model.state_dict()
    unexpected = sorted(set(state) - set(expected))
    missing = sorted(key for key in set(expected) - set(state) if not key.endswith("num_batches_tracked"))
    if unexpected or missing:
        raise UserError(f"{path} is not a SyncNet state dict: missing {missing[:4]}, unexpected {unexpected[:4]}"
                        f" ({len(missing)} missing, {len(unexpected)} unexpected keys)")
    wrong_shapes = [key for key in state if state[key].shape != expected[key].shape]
    if wrong_shapes:
        key = wrong_shapes[0]
        raise UserError(f"{path}: {key} has shape {tuple(state[key].shape)}, "
                        f"SyncNet wants {tuple(expected[key].shape)}")
    model.load_state_dict(state, strict=False)
    return model.to(device).eval()


@dataclass(frozen=True)
class LSEResult:
    """LSE-D (lower is better), LSE-C (higher is better), offset and the distance curve over offsets."""

    lse_d: float
    lse_c: float
    av_offset: int  # official syncnet_python sign: max_offset - argmin; negative = audio late
    offsets: list[int]  # audio shift of each entry of mean_distances (frames; +k compares video i with audio i+k)
    mean_distances: list[float]
    num_windows: int

    @property
    def audio_delay_frames(self) -> int:
        """Frames by which the sound comes after the matching mouth movement (the project-wide lag sign)."""
        return -self.av_offset


def syncnet_face_crops(frames: np.ndarray, track: FaceTrack) -> np.ndarray:
    """Face crops the way syncnet_python's pipeline makes them: uint8 BGR [T, 224, 224, 3].

    The box is square around the face centre, half-side ``s = max(w, h) / 2``, reaching ``s`` above the
    centre and ``s * (1 + 2 * 0.4)`` below it (so the chin and mouth are well inside).
    """
    crops = np.empty((len(frames), SYNCNET_CROP_SIZE, SYNCNET_CROP_SIZE, 3), dtype=np.uint8)
    for index, (frame, (x, y, w, h)) in enumerate(zip(frames, track.boxes)):
        half = max(w, h) / 2
        centre_x, centre_y = x + w / 2, y + h / 2
        side = 2 * half * (1 + CROP_SCALE)
        box = (centre_x - half * (1 + CROP_SCALE), centre_y - half, side, side)
        crop = crop_region(frame, box, SYNCNET_CROP_SIZE, SYNCNET_CROP_SIZE, pad_value=CROP_PAD_VALUE)
        crops[index] = crop[..., ::-1]  # RGB -> BGR
    return crops


@torch.inference_mode()
def compute_lse(model: SyncNet, face_crops_bgr: np.ndarray, audio: np.ndarray,
                max_offset: int = DEFAULT_MAX_OFFSET, batch_size: int = 16) -> LSEResult:
    """LSE-D / LSE-C of 25 fps BGR face crops [T, 224, 224, 3] against 16 kHz mono ``audio``.

    Raises ValueError when fewer than 6 frames of both video and audio are available (one window needs 5).
    """
    device = next(model.parameters()).device
    samples_per_frame = int(SYNCNET_SAMPLE_RATE / SYNCNET_FPS)
    usable_frames = min(len(face_crops_bgr), len(audio) // samples_per_frame)
    num_windows = usable_frames - SYNCNET_WINDOW_FRAMES  # as syncnet_python: the last full window is dropped
    if num_windows < 1:
        raise ValueError(f"too short for SyncNet: {usable_frames} frames of video+audio, need at least 6")
    cepstra = mfcc(audio).T.astype(np.float32)  # [13, num_mfcc_frames]
    video = torch.from_numpy(np.ascontiguousarray(face_crops_bgr[:usable_frames])).to(device)
    video = video.permute(3, 0, 1, 2).float()  # [3, T, 224, 224]
    video_embeddings, audio_embeddings = [], []
    for start in range(0, num_windows, batch_size):
        window_starts = range(start, min(num_windows, start + batch_size))
        lips = torch.stack([video[:, i:i + SYNCNET_WINDOW_FRAMES] for i in window_starts])
        mfcc_windows = np.stack([
            cepstra[:, i * MFCC_FRAMES_PER_VIDEO_FRAME:i * MFCC_FRAMES_PER_VIDEO_FRAME + SYNCNET_MFCC_WINDOW]
            for i in window_starts])
        video_embeddings.append(model.forward_lip(lips).cpu())
        audio_embeddings.append(model.forward_aud(torch.from_numpy(mfcc_windows)[:, None].to(device)).cpu())
    video_features = torch.cat(video_embeddings)
    audio_features = torch.cat(audio_embeddings)
    padded_audio = torch.nn.functional.pad(audio_features, (0, 0, max_offset, max_offset))
    num_offsets = 2 * max_offset + 1
    # distances[i, j]: video window i vs audio window i + (j - max_offset) (zero vector outside the clip).
    distances = torch.stack([
        torch.nn.functional.pairwise_distance(video_features[i:i + 1].expand(num_offsets, -1),
                                              padded_audio[i:i + num_offsets])
        for i in range(num_windows)])
    mean_distances = distances.mean(dim=0)
    min_distance, min_index = torch.min(mean_distances, dim=0)
    confidence = torch.median(mean_distances) - min_distance
    return LSEResult(
        lse_d=float(min_distance), lse_c=float(confidence), av_offset=int(max_offset - int(min_index)),
        offsets=list(range(-max_offset, max_offset + 1)), mean_distances=[float(d) for d in mean_distances],
        num_windows=num_windows,
    )
