"""Bounds on one generation request: the one table that the Python API, the command line and the web page share
(and evaluation, which takes any video inference makes).  Numbers only, no imports, so any layer may read them.

Each bound keeps a request's memory and time in proportion to what it asks for, and is checked before the work it
bounds starts (the number of steps before the scheduler allocates its schedule, the video size before the portrait is
resized, the length of a recording from its header before it is decoded): see avatar_gen.inference.generator.
"""

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
REQUEST_TEXT_MAX_CHARS = 1000  # about 170 words, a minute of speech at espeak's 175 words per minute
MAX_SPEECH_SECONDS = 120.0  # longer speech would be generated chunk by chunk; this bounds one request's cost
