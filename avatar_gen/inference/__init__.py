"""Inference: a portrait and a sentence (or an audio file) -> a talking video with its speech.

    from avatar_gen.inference import AvatarGenerator
    generator = AvatarGenerator.load("outputs/run/checkpoints/latest", device="cuda", dtype="bf16")
    result = generator.generate("face.png", text="Hello, I am your avatar.", output="talking.mp4")

See docs/inference.md.
"""

from avatar_gen.inference.generator import (DEFAULT_GUIDANCE, DEFAULT_STEPS, STAGES, AvatarGenerator,
                                            GenerationResult)
from avatar_gen.inference.inputs import (MAX_SPEECH_SECONDS, REQUEST_TEXT_MAX_CHARS, MIN_IMAGE_SIDE, load_portrait,
                                         load_speech)
from avatar_gen.inference.schedule import DISTILLED_TIMESTEPS, ChunkPlan, plan_chunks

__all__ = [
    "AvatarGenerator", "ChunkPlan", "DEFAULT_GUIDANCE", "DEFAULT_STEPS", "DISTILLED_TIMESTEPS", "GenerationResult",
    "MAX_SPEECH_SECONDS", "REQUEST_TEXT_MAX_CHARS", "MIN_IMAGE_SIDE", "STAGES", "load_portrait", "load_speech",
    "plan_chunks",
]
