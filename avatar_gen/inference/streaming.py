"""Chunk-by-chunk generation as a stream of decoded chunks: the engine under ``AvatarGenerator.stream``.

Speech longer than one chunk is generated chunk by chunk (:mod:`avatar_gen.inference.schedule`): chunk ``k + 1``
continues chunk ``k`` from what ``hand_over`` takes of it (its last latent frames, or its decoded last frame:
:mod:`avatar_gen.inference.handoff`).  :func:`stream_chunks` runs that loop and yields every chunk's new frames as
soon as they are final, so a caller can make them playable (an MP4 segment, the web page) while the next chunk is
denoised.  Per chunk it keeps only what the next one needs (the hand-off and the frames the two share), so time and
memory per chunk do not grow with the length of the speech.

Overlap (``overlap=True``)
    The loop runs in a worker thread and hands each decoded chunk over through a queue: whatever the caller does
    with chunk ``k`` (H.264 + AAC encoding of its segment, feeding the final MP4's encoder, sending it to a browser)
    runs while chunk ``k + 1`` is denoised.  The VAE decode of chunk ``k`` itself stays before chunk ``k + 1``: with
    the frame hand-off that chunk starts from chunk ``k``'s decoded last frame (and the LTX decoder's temporal
    receptive field spans most of a chunk, so no cheaper partial decode gives the same frame); with the latent
    hand-off the frames the two chunks share are cross-faded from both decodes.  The model sees exactly the same
    calls in the same order with or without overlap (one ``torch.Generator``, used by the loop alone), so the frames
    are identical.

This module needs only torch and numpy (and the chunk plan), so that ``python -m bench.gpu`` can drive it on a
machine without the media stack.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from avatar_gen.inference.handoff import cross_fade
from avatar_gen.inference.schedule import ChunkPlan
from avatar_gen.utils.memory import PeakMemory

# denoise(index, condition, inputs, plan, on_step(step)) -> latents (anything decode takes); the condition of chunk 0
# is the caller's first_condition, of chunk k + 1 what hand_over made of chunk k
DenoiseChunk = Callable[[int, Any, Any, ChunkPlan, Callable[[int], None]], Any]
# decode(latents, plan) -> uint8 frames [plan.num_frames, H, W, 3]
DecodeChunk = Callable[[Any, ChunkPlan], np.ndarray]
# hand_over(latents, frames, plan) -> the next chunk's condition
HandOver = Callable[[Any, np.ndarray, ChunkPlan], Any]

# Decoded chunks the worker may run ahead of a slow consumer (each holds one chunk of frames in memory).
MAX_CHUNKS_AHEAD = 2


def last_decoded_frame(latents: Any, frames: np.ndarray, plan: ChunkPlan) -> np.ndarray:
    """The frame hand-off: the next chunk starts from this chunk's decoded last frame (a copy, so that the chunk's
    frames are not kept alive by it)."""
    return frames[-1].copy()


class GenerationCancelled(Exception):
    """The consumer stopped reading the stream: the worker ends at the next denoising step."""


@dataclass
class DecodedChunk:
    """One chunk's frames that became final, in output order.

    frames: uint8 [n, H, W, 3], output frames ``start_frame .. start_frame + n - 1``: chunk 0's frames; a later
    chunk's from its first shared frame (cross-faded with the previous chunk's, ``blend``) or from its first new one;
    without the frames the next chunk will share when those are cross-faded (they come with the next chunk); the last
    chunk cut at the speech's frame count.  seconds: ``denoising`` and ``decoding`` wall time of this chunk.
    peak_memory_mb: the peak while it was denoised and decoded (see :class:`avatar_gen.utils.memory.PeakMemory`;
    None unless measured).
    """

    index: int
    plan: ChunkPlan
    frames: np.ndarray
    start_frame: int
    seconds: dict[str, float] = field(default_factory=dict)
    peak_memory_mb: float | None = None

    @property
    def end_frame(self) -> int:
        return self.start_frame + len(self.frames)


def stream_chunks(chunks: Sequence[ChunkPlan], conditioning: Sequence[Any], first_condition: Any,
                  total_frames: int, denoise: DenoiseChunk, decode: DecodeChunk,
                  hand_over: HandOver = last_decoded_frame, blend: bool = False, overlap: bool = True,
                  on_step: Callable[[int, int], None] | None = None,
                  memory: PeakMemory | None = None) -> Iterator[DecodedChunk]:
    """Denoise and decode ``chunks`` in order; yield each one's final frames (see :class:`DecodedChunk`).

    ``conditioning[k]`` is passed to ``denoise`` for chunk ``k`` (read when the chunk starts, so a lazy sequence
    keeps one chunk's inputs alive at a time); ``first_condition`` conditions chunk 0 and ``hand_over(latents,
    frames, plan)`` of chunk ``k`` conditions chunk ``k + 1`` (default: its decoded last frame).  A chunk's
    ``plan.lead`` first frames are dropped; its ``plan.overlap`` frames shared with the previous chunk are cross-faded
    from the previous chunk's to its own with ``blend`` (:func:`avatar_gen.inference.handoff.cross_fade`), else the
    previous chunk's stay.  ``on_step(chunk_index, step)`` is called after every denoising step (from the worker
    thread when ``overlap``); ``memory`` (a :class:`PeakMemory`) measures each chunk's peak.  Closing the iterator
    early cancels the work.
    """
    if len(chunks) != len(conditioning):
        raise ValueError(f"{len(chunks)} chunks but {len(conditioning)} conditionings")
    cancel = threading.Event()

    def produce() -> Iterator[DecodedChunk]:
        condition, shared = first_condition, None  # shared: this chunk's frames the next one will cross-fade
        for index, plan in enumerate(chunks):
            def step_done(step: int, chunk_index: int = index) -> None:
                if cancel.is_set():
                    raise GenerationCancelled()
                if on_step is not None:
                    on_step(chunk_index, step)

            if memory is not None:
                memory.reset()
            started = time.perf_counter()
            latents = denoise(index, condition, conditioning[index], plan, step_done)
            denoised = time.perf_counter()
            frames = decode(latents, plan)
            decoded = time.perf_counter()
            following = chunks[index + 1] if index + 1 < len(chunks) else None
            condition = hand_over(latents, frames, plan) if following is not None else None
            del latents  # the next chunk holds only what hand_over took
            first, own = plan.start + plan.lead, frames[plan.lead:]  # own: output frames first .. plan.end - 1
            if plan.overlap and blend:
                own = np.concatenate([cross_fade(shared, own[:plan.overlap]), own[plan.overlap:]])
            elif plan.overlap:
                first, own = first + plan.overlap, own[plan.overlap:]
            stop = min(plan.end, total_frames)
            shared = None
            if following is not None and following.overlap and blend:
                # Held back for the next chunk to cross-fade (already faded where, with a hand-off longer than the
                # new frames, the two windows meet), so every frame is delivered once.
                shared = own[len(own) - following.overlap:].copy()
                stop = plan.end - following.overlap
            yield DecodedChunk(index=index, plan=plan, frames=own[:max(0, stop - first)], start_frame=first,
                               seconds={"denoising": denoised - started, "decoding": decoded - denoised},
                               peak_memory_mb=None if memory is None else memory.read())

    if not overlap:
        yield from produce()
        return

    ready: queue.Queue = queue.Queue(maxsize=MAX_CHUNKS_AHEAD)
    finished = object()

    def put(item) -> bool:
        """Hand ``item`` over unless the consumer has gone (then give up instead of blocking forever)."""
        while not cancel.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for chunk in produce():
                if not put(chunk):
                    return
            put(finished)
        except GenerationCancelled:
            return
        except BaseException as exc:  # handed to the consumer, which re-raises it in its own thread
            put(exc)

    worker = threading.Thread(target=work, name="avatar-chunks", daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is finished:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cancel.set()
        worker.join()
