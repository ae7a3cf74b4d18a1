"""Inference: a portrait and a sentence (or an audio file) -> a talking video with its speech.

    from avatar_gen.inference import AvatarGenerator
    generator = AvatarGenerator.load("outputs/run/checkpoints/latest", device="cuda", dtype="bf16")
    result = generator.generate("face.png", text="Hello, I am your avatar.", output="talking.mp4")

See docs/inference.md.  The names below are imported on first use, so that ``avatar_gen.inference.streaming``,
``.sampler`` and ``.speed`` (torch only) can be imported without the media stack (``python -m bench.gpu`` on a bare
GPU machine).
"""

import importlib

_HOMES = {
    "AvatarGenerator": "generator", "DEFAULT_GUIDANCE": "generator", "DEFAULT_GUIDANCE_REGION": "generator",
    "DEFAULT_START_SIGMA": "generator",
    "DEFAULT_STEPS": "generator",
    "GenerationResult": "generator", "STAGES": "generator", "Segment": "generator",
    "MAX_SPEECH_SECONDS": "inputs", "REQUEST_TEXT_MAX_CHARS": "inputs", "MIN_IMAGE_SIDE": "inputs",
    "load_portrait": "inputs", "load_speech": "inputs",
    "DISTILLED_TIMESTEPS": "schedule", "ChunkPlan": "schedule", "plan_chunks": "schedule",
    "ChunkConditioning": "sampler", "ChunkSampler": "sampler",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
