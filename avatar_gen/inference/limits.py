"""Bounds on one generation request: the one table that the Python API, the command line and the web page share.

Each bound keeps a request's memory and time in proportion to what it asks for, and is checked before the work it
bounds starts (the number of steps before the scheduler allocates its schedule, the video size before the portrait is
resized, the length of a recording from its header before it is decoded).
"""

from __future__ import annotations

from avatar_gen.errors import UserError

MIN_STEPS = 2  # the pipeline's one-step regular schedule divides by zero (one step needs a fixed schedule)
MAX_STEPS = 100  # LTX-Video samples well in 30-50 steps; far more only costs time
MIN_GUIDANCE, MAX_GUIDANCE = 1.0, 20.0  # 1 = no classifier-free guidance
MAX_FPS = 60.0
MAX_SIDE = 1280  # px, video height and width: LTX-Video is trained up to 720 x 1280
# frames x height x width of one video: the size of a two-minute video at 25 fps at the 2B model's 768 x 512.  It
# bounds a request's work, and its memory where all frames are held at once (3.5 GB of uint8 RGB at the bound: the
# generator without overlap, and evaluation, which takes anything inference can make).
MAX_VIDEO_PIXELS = 3000 * 768 * 512
MAX_SEED = 2**64 - 1  # torch.Generator takes a 64-bit seed
MIN_IMAGE_SIDE = 64  # px, shorter side: below this a portrait holds too little of a face to animate
MAX_IMAGE_SIDE = 8192  # px, longer side: a 48-megapixel phone photo fits; larger ones only cost decoding memory
MAX_TEXT_CHARS = 1000  # about 170 words, a minute of speech at espeak's 175 words per minute
MAX_SPEECH_SECONDS = 120.0  # longer speech would be generated chunk by chunk; this bounds one request's cost


def check_video_pixels(num_frames: int, height: int, width: int) -> None:
    """UserError when a video of ``num_frames`` frames of ``height`` x ``width`` exceeds :data:`MAX_VIDEO_PIXELS`."""
    if num_frames * height * width > MAX_VIDEO_PIXELS:
        raise UserError(f"the video would be {num_frames} frames of {width}x{height} "
                        f"({num_frames * height * width / 1e9:.2f} gigapixels; the limit is "
                        f"{MAX_VIDEO_PIXELS / 1e9:.2f}): use shorter speech, a lower fps or a smaller size")
