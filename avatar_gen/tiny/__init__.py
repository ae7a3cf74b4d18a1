"""Test tooling: tiny, seeded, random models in the real on-disk formats, and an untrained avatar checkpoint.

Only tests, benchmarks and the demo import this package (``make test`` checks it); production code never does.
``python -m avatar_gen.tiny --out models/tiny`` writes the zoo (:mod:`avatar_gen.tiny.zoo`).
"""

from avatar_gen.tiny.ltx import TINY_CAPTION_CHANNELS, TINY_LTX_FOLDER, tiny_ltx_components, write_tiny_ltx
from avatar_gen.tiny.zoo import TINY_MODEL_WRITERS, build_tiny_zoo, main

__all__ = ["TINY_CAPTION_CHANNELS", "TINY_LTX_FOLDER", "TINY_MODEL_WRITERS", "build_tiny_zoo", "main",
           "tiny_ltx_components", "write_tiny_ltx"]
