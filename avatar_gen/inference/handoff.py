"""How a chunk continues the previous one in long speech (issue 17): the hand-off and the identity anchor.

Hand-off (``handoff``)
    ``latent``: chunk ``j + 1`` is given chunk ``j``'s last *m* latent frames, clean (timestep 0), exactly as they were
    denoised: the motion of the previous chunk's end, not one still frame, and no decode/re-encode round trip whose
    error would carry into every later chunk.  Training teaches it (``conditioning.continuation_probability``); the
    checkpoint records the most frames it was taught (``continuation_max_frames``), the default *m* without the
    portrait anchor (beside it, one: :func:`resolve_handoff`).
    ``frame``: chunk ``j + 1`` is given chunk ``j``'s last decoded frame, re-encoded by the VAE as latent frame 0 (what
    every image-to-video checkpoint was trained for; the default for checkpoints without continuation training, and
    the baseline a long-video measurement compares against).

Identity anchor (``anchor``, latent hand-off only)
    ``portrait``: the portrait's latent (chunk 0's own condition) is put in front of the hand-off latents as one more
    clean frame, so that every chunk sees the person as they were given, not only the last generated frames.  The
    hand-off latents then sit at latent positions 1..m, where latents that stand for t frames belong (a VAE with
    temporal factor t encodes frame 0 alone and every later latent from t frames), and the portrait, a single-frame
    latent, sits at position 0 as in training.  Its decoded frame is no video.  Training-free: no sample in training
    shows a still portrait before a jump; the model sees it as the clip's first frame.
    ``statistics``: each channel of the hand-off latents gets the mean and standard deviation of the same channel of
    the portrait's latents (a still clip of the portrait, 1 + t frames, encoded with the posterior mode as the
    training latents are; its last latent frame, which stands for t frames like the hand-off latents do).  This pulls
    the lowest spatial frequency (the colour and contrast of the whole frame) back to the portrait after every chunk,
    so a slow colour drift cannot add up; it leaves the spatial layout (pose, mouth) alone.  Training-free.
    ``portrait+statistics``: both — the hand-off latents statistics-matched, then the portrait in front of them.
    ``colour``: the decoded frames of every chunk after the first are shifted in CIE L*a*b* so that their mean colour
    is chunk 0's (:func:`match_colour`).  An output correction, not a pull on the model: the latents the next chunk
    continues from are left as they were, so it hides a slow colour drift (the commonest complaint about long avatar
    videos) but does nothing for identity, and it would also flatten a real change of the whole frame's colour (a
    light switched on), which a talking head from one portrait does not have.  Training-free.
    ``portrait+colour``: the portrait's latent in front (identity) and the colour correction of the frames.
    ``none``: none of these.
    ``auto`` (the default): ``portrait+colour`` with one hand-off latent frame (unless m is given) when the chunks
    leave room for the portrait's frame, else ``none`` — the setting that held identity, colour, seams, sync and a
    flat cost per chunk over a minute of held-out speech on the toy world, on three seeds (docs/results.md, long
    videos).

Pixel frames
    With a VAE of temporal factor t, latent frame 0 decodes to one pixel frame and latent ``f > 0`` to pixels
    ``t (f - 1) + 1 .. t f``; a latent placed at position 0 decodes to the last frame it stood for.  So ``g`` given
    latent frames (``m``, plus one with the portrait anchor) are the first ``1 + t (g - 1)`` pixel frames of a chunk:
    the anchor's one frame (dropped) and ``overlap`` frames that repeat the previous chunk's last ones
    (:func:`avatar_gen.inference.schedule.plan_chunks`: ``1 + t (m - 1)`` frames, ``t m`` with the anchor, 1 for the
    frame hand-off).  Those shared frames are written once: with the latent hand-off they are cross-faded from the
    previous chunk's decode to the new chunk's (:func:`cross_fade`) — the same latents decoded twice, each decode best
    at the end where it has real neighbours (the LTX decoder pads a chunk's edges), so the fade hides the decoders'
    edge differences instead of cutting at one of them; with the frame hand-off the previous chunk's frame is kept
    (the new one is its re-encoding).

Numpy, and torch for the latents (imported when used, so that the option names load fast for command lines).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from avatar_gen.errors import UserError

if TYPE_CHECKING:
    import torch

HANDOFFS = ("auto", "latent", "frame")
ANCHORS = ("auto", "none", "portrait", "statistics", "portrait+statistics", "colour", "portrait+colour")
_PORTRAIT_FRAME = ("portrait", "portrait+statistics", "portrait+colour")  # put the portrait's latent in front
_STATISTICS = ("statistics", "portrait+statistics")  # anchors that match the hand-off's statistics to the portrait
_COLOUR = ("colour", "portrait+colour")  # anchors that shift the decoded frames' mean colour to chunk 0's
REFINE_ABOVE = 0.05  # ΔE left by gamut clipping beyond which the colour match refines its offset (0.1 is invisible)
# What ``auto`` resolves to with the latent hand-off, and the default m beside the portrait's frame: measured over a
# minute of held-out speech on the toy world (docs/results.md, long videos): one hand-off frame next to the portrait
# held identity on three seeds where three did not, and the colour correction took the colour drift below real
# footage's own; the price is a more visible seam, still under issue 17's bar.
AUTO_ANCHOR = "portrait+colour"
PORTRAIT_HANDOFF_FRAMES = 1


def handoff_defaults() -> dict[str, Any]:
    """What ``auto`` and an unset m resolve to, besides the checkpoint: a cache of videos made with the defaults keys
    on it, so that a change of defaults is not answered with videos made under the old ones."""
    return {"auto_anchor": AUTO_ANCHOR, "portrait_handoff_frames": PORTRAIT_HANDOFF_FRAMES}


@dataclass(frozen=True)
class Handoff:
    """A resolved hand-off: ``mode`` ``latent`` (the previous chunk's last ``latent_frames`` latent frames) or
    ``frame`` (its decoded last frame, re-encoded), and the identity ``anchor``."""

    mode: str
    latent_frames: int = 1
    anchor: str = "none"

    @property
    def given_latent_frames(self) -> int:
        """Clean latent frames at the start of every chunk after the first (g)."""
        return 1 if self.mode == "frame" else self.latent_frames + self.lead_frames

    @property
    def lead_frames(self) -> int:
        """Pixel frames at the start of a continuing chunk that are no video (the anchor's)."""
        return int(self.anchor in _PORTRAIT_FRAME)

    @property
    def matches_statistics(self) -> bool:
        """Whether the hand-off latents get the portrait's per-channel statistics."""
        return self.anchor in _STATISTICS

    @property
    def matches_colour(self) -> bool:
        """Whether the decoded frames of every chunk after the first get chunk 0's mean colour."""
        return self.anchor in _COLOUR

    @property
    def blends(self) -> bool:
        """Whether the frames two chunks share are cross-faded (latent) or the previous chunk's are kept (frame)."""
        return self.mode == "latent"

    def summary(self) -> dict[str, Any]:
        return {"handoff": self.mode, "latent_frames": self.latent_frames if self.mode == "latent" else None,
                "anchor": self.anchor, "given_latent_frames": self.given_latent_frames}


def resolve_handoff(handoff: str = "auto", latent_frames: int | None = None, anchor: str = "auto",
                    trained_frames: int = 0, chunk_latent_frames: int | None = None,
                    patch_size_t: int = 1) -> Handoff:
    """Check the options against a checkpoint and complete them.

    ``trained_frames``: the checkpoint's ``continuation_max_frames`` (0: never trained to continue).
    ``chunk_latent_frames``: latent frames of a full chunk (a continuing chunk needs one more than it is given).
    ``auto`` is ``latent`` for a checkpoint trained to continue (or when ``latent_frames`` or an anchor is asked
    for), else ``frame``.  The default m is :data:`PORTRAIT_HANDOFF_FRAMES` beside the portrait's frame (the
    portrait's share of what a chunk is given is what holds identity), else ``trained_frames``; at least 1 and capped
    to leave a new latent frame in every chunk.  Anchor ``auto`` is :data:`AUTO_ANCHOR` where the latent hand-off
    leaves room for the portrait's frame, else ``none``: it never refuses what ``none`` accepts.
    Raises UserError for unknown names, options that contradict each other, and an m that leaves no room.
    """
    if handoff not in HANDOFFS:
        raise UserError(f"handoff must be one of {', '.join(HANDOFFS)}, got {handoff!r}")
    if anchor not in ANCHORS:
        raise UserError(f"anchor must be one of {', '.join(ANCHORS)}, got {anchor!r}")
    if latent_frames is not None and (isinstance(latent_frames, bool) or int(latent_frames) != latent_frames
                                      or latent_frames < 1):
        raise UserError(f"handoff latent frames must be a whole number >= 1, got {latent_frames!r}")
    if handoff == "auto":
        asked_anchor = anchor not in ("none", "auto")
        handoff = "latent" if trained_frames >= 2 or latent_frames is not None or asked_anchor else "frame"
    if anchor == "auto":
        if handoff == "latent":
            try:
                return resolve_handoff(handoff, latent_frames, AUTO_ANCHOR, trained_frames, chunk_latent_frames,
                                       patch_size_t)
            except UserError:
                pass  # no room for the portrait's frame (or its patch parity): hand off without it
        anchor = "none"
    if handoff == "frame":
        if latent_frames is not None:
            raise UserError("handoff latent frames apply to the latent hand-off, not to handoff 'frame'")
        if anchor != "none":
            raise UserError(f"anchor {anchor!r} needs the latent hand-off (handoff 'latent')")
        return Handoff("frame")
    lead = int(anchor in _PORTRAIT_FRAME)
    room = None if chunk_latent_frames is None else chunk_latent_frames - 1 - lead  # the most m that leaves one new
    if latent_frames is None:
        latent_frames = PORTRAIT_HANDOFF_FRAMES if lead else max(1, trained_frames)
        if room is not None:
            latent_frames = min(latent_frames, room)
    latent_frames = int(latent_frames)
    if room is not None and latent_frames > room:
        raise UserError(f"chunks of {chunk_latent_frames} latent frames leave no new frame after {latent_frames} "
                        f"hand-off latent frames{' and the anchor' if lead else ''}: give at most {max(room, 0)}")
    if latent_frames < 1:
        raise UserError(f"chunks of {chunk_latent_frames} latent frames are too short for anchor {anchor!r}")
    resolved = Handoff("latent", latent_frames, anchor)
    if resolved.given_latent_frames % patch_size_t:
        raise UserError(f"{resolved.given_latent_frames} given latent frames do not fill the transformer's temporal "
                        f"patches of {patch_size_t}: choose another number of hand-off latent frames")
    return resolved


def match_statistics(latents: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``latents`` [B, C, F, h, w] with each channel's mean and standard deviation (over frames and space) set to
    those of the same channel of ``reference`` [B, C, F', h', w']."""
    dims = (2, 3, 4)
    mean, std = latents.mean(dim=dims, keepdim=True), latents.std(dim=dims, keepdim=True)
    target_mean, target_std = reference.mean(dim=dims, keepdim=True), reference.std(dim=dims, keepdim=True)
    return (latents - mean) / std.clamp_min(1e-6) * target_std + target_mean


def continuation_latents(previous: torch.Tensor, handoff: Handoff, portrait: torch.Tensor | None = None,
                         reference: torch.Tensor | None = None) -> torch.Tensor:
    """The clean latent frames [1, C, g, h, w] a chunk continues from: the last ``handoff.latent_frames`` of the
    previous chunk's normalised latents ``previous`` [1, C, F', h, w] (a copy: nothing of the previous chunk is kept
    alive), statistics-matched to ``reference`` (anchors ``statistics``, ``portrait+statistics``), after the
    ``portrait`` latent [1, C, 1, h, w] (anchors ``portrait``, ``portrait+statistics``)."""
    import torch

    given = previous[:, :, -handoff.latent_frames:].float().clone()
    if handoff.matches_statistics:
        given = match_statistics(given, reference.to(given))
    if handoff.lead_frames:
        given = torch.cat([portrait.to(given), given], dim=2)
    return given


def match_colour(frames: np.ndarray, reference: np.ndarray, measured: slice = slice(None),
                 refinements: int = 2) -> np.ndarray:
    """uint8 RGB ``frames`` [n, H, W, 3] shifted in CIE L*a*b* by one offset so that the mean colour of
    ``frames[measured]`` becomes ``reference`` (a mean L*a*b* colour, :func:`avatar_gen.evaluation.long_video.mean_lab`,
    which the long-video measurement's colour shift uses too); new uint8 frames.

    One offset for the whole chunk, not one per frame: the frames' own changes (the mouth opening, a blink) stay as
    they were, and only the chunk's overall colour moves.  Lab rather than RGB so that the shift is the perceptual
    colour difference a viewer (and the long-video measurement) sees.  Colours pushed out of the RGB gamut are
    clipped, which leaves part of the shift undone; up to ``refinements`` more passes add what is left to the offset
    (from the original frames, so nothing is clipped twice), while more than ``REFINE_ABOVE`` ΔE is left."""
    from avatar_gen.evaluation.long_video import mean_lab

    if not len(frames[measured]):  # nothing to measure the chunk's colour on: leave it as it is
        return frames.copy()
    target = np.asarray(reference, dtype=np.float64)
    offset = target - mean_lab(frames[measured])
    corrected = _shift_lab(frames, offset)
    for _ in range(refinements):
        left = target - mean_lab(corrected[measured])
        if np.linalg.norm(left) <= REFINE_ABOVE:  # the usual case: nothing was clipped enough to matter
            break
        offset = offset + left
        corrected = _shift_lab(frames, offset)
    return corrected


def _shift_lab(frames: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """uint8 RGB frames with ``offset`` added to every pixel's L*a*b* colour, clipped to the RGB gamut."""
    import cv2

    shift = np.asarray(offset, dtype=np.float32)
    shifted = np.empty_like(frames)
    for index, frame in enumerate(frames):  # frame by frame: no float copy of the whole chunk
        lab = cv2.cvtColor(frame.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB) + shift
        rgb = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
        shifted[index] = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)
    return shifted


class ColourAnchor:
    """The ``colour`` anchor over one generation: the first chunk's decoded frames set the reference (their mean
    L*a*b* colour, the anchor's frame left out) and every later chunk's frames are shifted to it (:func:`match_colour`).
    Call it with each chunk's decoded frames in order."""

    def __init__(self) -> None:
        self.reference: np.ndarray | None = None

    def __call__(self, frames: np.ndarray, lead: int = 0) -> np.ndarray:
        """``frames`` [n, H, W, 3] of the next chunk, whose first ``lead`` are no video (the portrait anchor's)."""
        from avatar_gen.evaluation.long_video import mean_lab

        video = slice(lead, None)
        if self.reference is None:
            self.reference = mean_lab(frames[video])
            return frames
        return match_colour(frames, self.reference, measured=video)


def cross_fade(previous: np.ndarray, new: np.ndarray) -> np.ndarray:
    """uint8 frames [n, H, W, 3] that two chunks share: frame ``i`` is ``(1 - w) previous + w new`` with
    ``w = (i + 1) / (n + 1)``, from mostly the previous chunk's decode to mostly the new one's."""
    count = len(previous)
    weights = (np.arange(1, count + 1, dtype=np.float32) / (count + 1))[:, None, None, None]
    mixed = (1.0 - weights) * previous.astype(np.float32) + weights * new.astype(np.float32)
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
