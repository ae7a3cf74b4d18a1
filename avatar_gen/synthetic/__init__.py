"""Synthetic talking-face data for the demo and the tests, and a loopback HTTP server to "download" it.

:func:`generate_dataset` writes clips + ground truth + an AVSpeech CSV; :func:`make_portrait` writes one
unseen face image; :func:`serve_directory` serves a folder over HTTP with Range support.
See docs/synthetic.md.
"""

from avatar_gen.synthetic.dataset import (
    KINDS, SyntheticClip, clip_id_for, generate_dataset, load_ground_truth, make_portrait, mouth_from_envelope,
)
from avatar_gen.synthetic.server import RangeRequestHandler, parse_range, serve_directory

__all__ = [
    "KINDS", "SyntheticClip", "clip_id_for", "generate_dataset", "load_ground_truth", "make_portrait",
    "mouth_from_envelope", "RangeRequestHandler", "parse_range", "serve_directory",
]
