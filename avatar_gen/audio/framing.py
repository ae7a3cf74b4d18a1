"""Time alignment of audio feature sequences with video frames.

wav2vec 2.0's convolutional front end turns 16 kHz samples into feature frames with a hop of 320 samples
(20 ms, 50 frames/s) and a receptive field of 400 samples (25 ms).  Feature frame ``j`` therefore
describes the samples ``[320 j, 320 j + 400)``, whose centre lies at ``j / 50 + 0.0125`` seconds.  Video
frame ``i`` of a chunk is the picture at ``i / fps`` seconds.  :func:`resample_to_frames` maps one onto
the other by time, not by index, so row ``i`` of the result describes the audio around ``i / fps``.

The resampling is a tent (linear) filter whose half-width is the coarser of the two frame periods: when
the video rate is above the feature rate it is plain linear interpolation between the two nearest
feature frames; when it is below (50 -> 25 fps) each video frame averages the feature frames within
one video period of it, weighted by closeness, instead of dropping every other frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from avatar_gen.media.audio import SAMPLE_RATE


@dataclass(frozen=True)
class FrontEndTiming:
    """Where the feature frames of a strided convolution stack sit in time.

    hop_samples: input samples between consecutive feature frames (product of the strides).
    receptive_field_samples: input samples one feature frame sees.
    """

    hop_samples: int
    receptive_field_samples: int
    sample_rate: int = SAMPLE_RATE

    @classmethod
    def from_conv_stack(cls, kernels: tuple[int, ...] | list[int], strides: tuple[int, ...] | list[int],
                        sample_rate: int = SAMPLE_RATE) -> FrontEndTiming:
        receptive_field, jump = 1, 1
        for kernel, stride in zip(kernels, strides):
            receptive_field += (kernel - 1) * jump
            jump *= stride
        return cls(hop_samples=jump, receptive_field_samples=receptive_field, sample_rate=sample_rate)

    @property
    def frame_rate(self) -> float:
        """Feature frames per second (50.0 for wav2vec 2.0)."""
        return self.sample_rate / self.hop_samples

    @property
    def first_frame_time(self) -> float:
        """Time in seconds of the centre of feature frame 0's receptive field (0.0125 s for wav2vec 2.0)."""
        return (self.receptive_field_samples - 1) / 2.0 / self.sample_rate

    def num_frames(self, num_samples: int) -> int:
        """Feature frames the stack produces from ``num_samples`` samples (0 when shorter than one field)."""
        if num_samples < self.receptive_field_samples:
            return 0
        return (num_samples - self.receptive_field_samples) // self.hop_samples + 1

    def samples_to_cover(self, num_video_frames: int, fps: float) -> int:
        """Samples needed so that the feature frames reach past the last video frame's time (the
        chunk's own duration, ``num_video_frames / fps``, rounded up to whole samples)."""
        duration = num_video_frames / fps
        return max(self.receptive_field_samples, int(math.ceil(duration * self.sample_rate - 1e-6)))


def frame_weights(num_features: int, timing: FrontEndTiming, num_frames: int, fps: float) -> torch.Tensor:
    """Resampling matrix ``[num_frames, num_features]`` whose rows sum to 1.

    Row ``i`` holds the tent-filter weights of the feature frames around time ``i / fps`` (see the
    module docstring).  Video frames whose time lies outside the covered span take the nearest
    feature frame.
    """
    if num_features < 1:
        raise ValueError("no feature frames to resample (audio shorter than the front end's receptive field)")
    if num_frames < 1 or fps <= 0:
        raise ValueError(f"need num_frames >= 1 and fps > 0, got {num_frames} and {fps}")
    video_times = torch.arange(num_frames, dtype=torch.float64) / fps
    feature_times = timing.first_frame_time + torch.arange(num_features, dtype=torch.float64) / timing.frame_rate
    half_width = max(1.0 / fps, 1.0 / timing.frame_rate)
    distance = (video_times[:, None] - feature_times[None, :]).abs()
    weights = (1.0 - distance / half_width).clamp_min(0.0)
    # Exactly at a feature frame's time the tent gives only that frame (weight 1); between frames two or
    # more share.  Rows past either end of the feature span have no weight: use the nearest frame.
    empty = weights.sum(dim=1) <= 1e-9
    if bool(empty.any()):
        nearest = distance[empty].argmin(dim=1)
        weights[empty] = 0.0
        weights[empty.nonzero(as_tuple=True)[0], nearest] = 1.0
    return (weights / weights.sum(dim=1, keepdim=True)).to(torch.float32)


def resample_to_frames(features: torch.Tensor, timing: FrontEndTiming, num_frames: int, fps: float) -> torch.Tensor:
    """Resample ``features`` [batch, feature_frames, channels] to ``[batch, num_frames, channels]``,
    row ``i`` at time ``i / fps`` of the audio (see :func:`frame_weights`)."""
    weights = frame_weights(features.shape[1], timing, num_frames, fps).to(device=features.device,
                                                                            dtype=features.dtype)
    return torch.einsum("ft,btc->bfc", weights, features)
