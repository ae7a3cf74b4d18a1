"""How a generation is cut into chunks, and the denoising schedules (regular and distilled).

Chunks
    The LTX VAE takes 8k + 1 frames, and the model was trained on chunks of ``video.num_frames`` frames.  Speech of
    ``N = round(duration * fps)`` frames that fits in one chunk is generated as the shortest 8k + 1 frames covering it.
    Longer speech is generated chunk by chunk: chunk ``j + 1`` starts on the last frame of chunk ``j`` (its first frame
    is that frame, given as the image condition) and adds up to ``chunk_frames - 1`` new frames.  Every chunk reads
    the rows of one feature sequence computed over the whole speech, so the audio timing runs on without a jump at a
    chunk boundary, and the frames are concatenated without the repeated boundary frame and cut to ``N``.

Distilled schedule
    LTX-Video's distilled checkpoints (0.9.6+) sample in a few fixed steps without guidance; diffusers documents
    ``[1000, 993, 987, 981, 975, 909, 725, 0.03]`` for 0.9.7-distilled (the first pass before up-scaling).  Only a
    model fine-tuned from a distilled base should be sampled this way.  A fixed schedule is used as given (sigma =
    timestep / 1000, no resolution shift: a distilled schedule is already the final one); the sigmas of every
    schedule come from :func:`avatar_gen.model.sampling.sigma_schedule`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from avatar_gen.errors import UserError
from avatar_gen.ltx import LTX_TEMPORAL_COMPRESSION



def min_chunk_frames(temporal_compression: int = LTX_TEMPORAL_COMPRESSION) -> int:
    """The shortest chunk: one latent frame besides the given first one (LTX: 9 frames)."""
    return temporal_compression + 1


DISTILLED_TIMESTEPS = (1000.0, 993.0, 987.0, 981.0, 975.0, 909.0, 725.0, 0.03)
DISTILLED_GUIDANCE = 1.0  # distilled LTX models were distilled with guidance folded in


@dataclass(frozen=True)
class ChunkPlan:
    """One chunk: output frames ``start .. start + num_frames - 1`` (``num_frames`` = t k + 1, LTX: 8k + 1)."""

    start: int
    num_frames: int

    @property
    def end(self) -> int:
        return self.start + self.num_frames


def frames_for_duration(duration: float, fps: float) -> int:
    """Frames of a video that lasts ``duration`` s at ``fps`` (at least one)."""
    return max(1, int(round(duration * fps)))


def covering_frame_count(frames: int, temporal_compression: int = LTX_TEMPORAL_COMPRESSION) -> int:
    """The smallest t k + 1 (k >= 1; LTX: t = 8) that is at least ``frames``."""
    blocks = max(1, math.ceil((frames - 1) / temporal_compression))
    return blocks * temporal_compression + 1


def plan_chunks(total_frames: int, chunk_frames: int,
                temporal_compression: int = LTX_TEMPORAL_COMPRESSION) -> list[ChunkPlan]:
    """Chunks covering ``total_frames`` output frames, each at most ``chunk_frames`` (t k + 1) long, for a VAE that
    compresses ``temporal_compression`` = t x in time.

    Consecutive chunks share one frame (the last of one is the first of the next); the last chunk is the shortest
    t k + 1 that reaches ``total_frames``.  The final chunk may run past ``total_frames``; the caller trims.
    """
    if total_frames < 1:
        raise ValueError(f"total_frames must be >= 1, got {total_frames}")
    if chunk_frames < min_chunk_frames(temporal_compression) or (chunk_frames - 1) % temporal_compression:
        raise ValueError(f"chunk_frames must be {temporal_compression}k + 1 with k >= 1, got {chunk_frames}")
    chunks = [ChunkPlan(0, min(chunk_frames, covering_frame_count(total_frames, temporal_compression)))]
    while chunks[-1].end < total_frames:
        start = chunks[-1].end - 1
        remaining = total_frames - start
        chunks.append(ChunkPlan(start, min(chunk_frames, covering_frame_count(remaining, temporal_compression))))
    return chunks


def check_timesteps(timesteps: Sequence[float], num_train_timesteps: int = 1000) -> list[float]:
    """Validate a fixed schedule: strictly decreasing values in (0, num_train_timesteps]."""
    values = [float(value) for value in timesteps]
    if not values:
        raise UserError("timesteps must not be empty")
    if any(not 0.0 < value <= num_train_timesteps for value in values):
        raise UserError(f"timesteps must lie in (0, {num_train_timesteps}], got {values}")
    if any(later >= earlier for earlier, later in zip(values, values[1:])):
        raise UserError(f"timesteps must be strictly decreasing, got {values}")
    return values
