"""Gradio web demo: upload a portrait, type a line (or upload speech), get a talking video.

:func:`build_app` lays out the page around an already loaded generator (anything with the
``AvatarGenerator.generate`` signature of :mod:`avatar_gen.inference`); :func:`serve` queues it (one
generation at a time), launches it on a loopback address and blocks until the server is stopped.
``app.py`` at the repository root is the command line around them (see docs/webapp.md).

Every input is checked here before it reaches the model: the page can be driven by any HTTP client, so
the browser's own limits (accepted file types, the text box's length) are not trusted.  A mistake is
shown on the page as a ``gr.Error`` with one clear line; the server keeps running.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
from PIL import Image, UnidentifiedImageError

from avatar_gen.errors import UserError
from avatar_gen.inference import DEFAULT_GUIDANCE, DEFAULT_GUIDANCE_REGION, DEFAULT_START_SIGMA, DEFAULT_STEPS
from avatar_gen.inference.guidance import GUIDANCE_REGIONS, check_guidance_region
# The bounds of a generation request are inference's own, so that the page, the command line and the Python API
# accept the same requests.
from avatar_gen.limits import (MAX_GUIDANCE, MAX_IMAGE_SIDE, MAX_SEED, MAX_SPEECH_SECONDS, MAX_STEPS,
                               MIN_GUIDANCE, MIN_IMAGE_SIDE, MIN_STEPS)
from avatar_gen.media.audio import declared_audio_duration
from avatar_gen.model.sampling import check_start_sigma

log = logging.getLogger(__name__)

# Limits of the page itself.  Gradio refuses larger uploads itself (``max_file_size``); the checks below repeat the
# limit for files that reach the handler another way.
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_UPLOAD_SIZE_TEXT = "20 MB"
IMAGE_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "WEBP": "WebP", "BMP": "BMP"}  # Pillow format -> display name
SPEECH_EXTENSIONS = (".wav", ".mp3", ".flac", ".ogg", ".m4a")
WEB_TEXT_MAX_CHARS = 300  # about 20 s of speech at espeak's default rate: a caption keeps the page's queue moving

TEXT_SOURCE = "Type text"
AUDIO_SOURCE = "Upload speech"
SPEECH_SOURCES = (TEXT_SOURCE, AUDIO_SOURCE)
# espeak-ng voices that ship with the espeakng-loader wheel: (label shown, voice passed to TTS).
VOICES: tuple[tuple[str, str], ...] = (
    ("English (US)", "en-us"),
    ("English (US), female variant", "en-us+f3"),
    ("English (UK)", "en-gb"),
    ("French", "fr-fr"),
    ("German", "de"),
    ("Spanish", "es"),
    ("Italian", "it"),
)
DEFAULT_VOICE = "en-us"
# Where the audio guidance acts (docs/inference.md "Audio guidance"): how the page names inference's regions.
GUIDANCE_REGION_LABELS = {"mouth": "the mouth", "frame": "the whole frame"}
# The start slider: 0.1 to 1 in steps of 0.05 (LTX-Video's schedules end at 0.1, shift_terminal: a start below it runs
# no step; the request checks accept any level in (0, 1] and the generator names a start that runs none).
START_SIGMA_MIN, START_SIGMA_STEP = 0.1, 0.05
EXAMPLE_TEXTS = (
    "Hello! I am a synthetic face, and this is what I sound like.",
    "One picture and one line of text are all it takes to make me speak.",
)
# Generated videos kept in the output folder; older ones are deleted (Gradio serves its own copies).
KEEP_OUTPUTS = 20
SEGMENTS_FOLDER = "segments"  # under the output folder: each request's playable pieces while it streams


@dataclass
class PageDefaults:
    """Initial values of the page's sampling controls (the user can change them per generation)."""

    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE
    seed: int = 0
    voice: str = DEFAULT_VOICE
    guidance_region: str = DEFAULT_GUIDANCE_REGION
    start_sigma: float = DEFAULT_START_SIGMA

    def __post_init__(self) -> None:
        if not MIN_STEPS <= self.steps <= MAX_STEPS:
            raise UserError(f"steps must be from {MIN_STEPS} to {MAX_STEPS}, got {self.steps}")
        if not MIN_GUIDANCE <= self.guidance <= MAX_GUIDANCE:
            raise UserError(f"guidance must be from {MIN_GUIDANCE} to {MAX_GUIDANCE}, got {self.guidance}")
        if not 0 <= self.seed <= MAX_SEED:
            raise UserError(f"seed must be from 0 to {MAX_SEED}, got {self.seed}")
        if self.voice not in [value for _, value in VOICES]:
            raise UserError(f"unknown voice {self.voice!r}; choose one of {', '.join(value for _, value in VOICES)}")
        check_region_choice(self.guidance_region)
        if not START_SIGMA_MIN <= check_start_sigma_choice(self.start_sigma) <= 1.0:  # the slider's range
            raise UserError(f"start_sigma must be from {START_SIGMA_MIN} to 1 on the page, got {self.start_sigma}")


@dataclass
class DemoExample:
    """One clickable example: a portrait file and the line it should speak."""

    image: Path
    text: str
    voice: str = DEFAULT_VOICE


@dataclass
class GenerationRequest:
    """The checked inputs of one generation; ``text`` and ``audio`` are exclusive."""

    image: Path
    text: str | None
    audio: Path | None
    voice: str
    steps: int
    guidance: float
    seed: int
    guidance_region: str = DEFAULT_GUIDANCE_REGION
    start_sigma: float = DEFAULT_START_SIGMA


# ----------------------------------------------------------------------------------------- validation

def uploaded_path(payload: Any) -> Path | None:
    """The server-side path of an uploaded file, from the raw payload Gradio sends (a dict with ``path``,
    when the event runs with ``preprocess=False``), a plain path string, or ``None``."""
    if payload is None or payload == "":
        return None
    if isinstance(payload, dict):
        path = payload.get("path")
        return Path(path) if path else None
    if isinstance(payload, (str, Path)):
        return Path(payload)
    raise UserError(f"unexpected upload payload of type {type(payload).__name__}")


def check_upload_size(path: Path, what: str) -> None:
    size = path.stat().st_size
    if size == 0:
        raise UserError(f"the {what} is an empty file")
    if size > MAX_UPLOAD_BYTES:
        raise UserError(f"the {what} is {size / 2**20:.1f} MB; the limit is {MAX_UPLOAD_SIZE_TEXT}")


def check_portrait(path: Path) -> tuple[int, int]:
    """Check that ``path`` is a PNG/JPEG/WebP/BMP image within the size limits; returns (width, height).

    Pillow reads only the header to learn the format and size, so a huge image is refused before it is
    decoded; the full decode afterwards catches truncated files.
    """
    if not path.is_file():
        raise UserError("the portrait upload did not arrive; upload it again")
    check_upload_size(path, "portrait")
    try:
        with Image.open(path) as image:
            image_format, (width, height) = image.format, image.size
            if image_format not in IMAGE_FORMATS:
                raise UserError(f"the portrait is a {image_format} image; use one of "
                                f"{', '.join(IMAGE_FORMATS.values())}")
            if max(width, height) > MAX_IMAGE_SIDE:
                raise UserError(f"the portrait is {width}x{height} pixels; the longest side may be at most "
                                f"{MAX_IMAGE_SIDE}")
            if min(width, height) < MIN_IMAGE_SIDE:
                raise UserError(f"the portrait is {width}x{height} pixels; both sides must be at least "
                                f"{MIN_IMAGE_SIDE}")
            image.load()
    except UnidentifiedImageError:
        raise UserError("the portrait is not an image file (use PNG, JPEG, WebP or BMP)") from None
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UserError(f"the portrait image cannot be decoded: {exc}") from None
    return width, height


def check_speech_file(path: Path) -> None:
    """Cheap checks of an uploaded speech file, the length its header declares included (a small compressed file can
    hold hours of audio); decoding errors, and a length that the header hides, come from the generator, which stops
    decoding at the same limit."""
    if not path.is_file():
        raise UserError("the speech upload did not arrive; upload it again")
    if path.suffix.lower() not in SPEECH_EXTENSIONS:
        raise UserError(f"the speech file must be one of {', '.join(SPEECH_EXTENSIONS)}, "
                        f"got {path.suffix or 'no extension'}")
    check_upload_size(path, "speech file")
    seconds = declared_audio_duration(path)
    if seconds is not None and seconds > MAX_SPEECH_SECONDS:
        raise UserError(f"the speech file lasts {seconds:.0f} s; the limit is {MAX_SPEECH_SECONDS:.0f} s")


def _number(value: Any, what: str) -> float:
    if value is None or value == "":
        raise UserError(f"{what} is empty")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UserError(f"{what} must be a number, got {value!r}") from None


def check_region_choice(region: Any) -> str:
    """One of inference's guidance regions, or :class:`UserError`."""
    try:
        return check_guidance_region(region)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def check_start_sigma_choice(start_sigma: Any) -> float:
    """A noise level to start denoising at, as inference accepts it, or :class:`UserError`."""
    try:
        return check_start_sigma(_number(start_sigma, "start noise level"))
    except ValueError as exc:
        raise UserError(str(exc)) from None


def validate_request(image: Any, speech_source: Any, text: Any, audio: Any, voice: Any, steps: Any,
                     guidance: Any, seed: Any, guidance_region: Any = DEFAULT_GUIDANCE_REGION,
                     start_sigma: Any = DEFAULT_START_SIGMA) -> GenerationRequest:
    """Turn the page's raw values into a :class:`GenerationRequest`, or raise :class:`UserError`."""
    image_path = uploaded_path(image)
    if image_path is None:
        raise UserError("upload a portrait first")
    check_portrait(image_path)

    if speech_source not in SPEECH_SOURCES:
        raise UserError(f"speech source must be one of {', '.join(SPEECH_SOURCES)}")
    spoken_text, speech_path = None, None
    if speech_source == TEXT_SOURCE:
        if text is not None and not isinstance(text, str):
            raise UserError("the text must be a string")
        spoken_text = (text or "").strip()
        if not spoken_text:
            raise UserError("type the text to speak (or choose 'Upload speech')")
        if len(spoken_text) > WEB_TEXT_MAX_CHARS:
            raise UserError(f"the text has {len(spoken_text)} characters; the limit is {WEB_TEXT_MAX_CHARS}")
    else:
        speech_path = uploaded_path(audio)
        if speech_path is None:
            raise UserError("upload a speech recording (or choose 'Type text')")
        check_speech_file(speech_path)

    known_voices = [value for _, value in VOICES]
    if voice not in known_voices:
        raise UserError(f"unknown voice {voice!r}; choose one of {', '.join(known_voices)}")
    steps_value = _number(steps, "steps")
    if not steps_value.is_integer() or not MIN_STEPS <= steps_value <= MAX_STEPS:
        raise UserError(f"steps must be a whole number from {MIN_STEPS} to {MAX_STEPS}, got {steps}")
    guidance_value = _number(guidance, "guidance")
    if not MIN_GUIDANCE <= guidance_value <= MAX_GUIDANCE:
        raise UserError(f"guidance must be between {MIN_GUIDANCE} and {MAX_GUIDANCE}, got {guidance}")
    seed_value = _number(seed, "seed")
    if not seed_value.is_integer() or not 0 <= seed_value <= MAX_SEED:
        raise UserError(f"seed must be a whole number from 0 to {MAX_SEED}, got {seed}")
    region = check_region_choice(guidance_region)
    start = check_start_sigma_choice(start_sigma)
    return GenerationRequest(image=image_path, text=spoken_text, audio=speech_path, voice=voice,
                             steps=int(steps_value), guidance=guidance_value, seed=int(seed_value),
                             guidance_region=region, start_sigma=start)


# ----------------------------------------------------------------------------------------- generation

def prune_outputs(output_dir: Path, keep: int = KEEP_OUTPUTS) -> None:
    """Delete all but the ``keep`` newest videos in ``output_dir`` (Gradio has its own copies to serve)."""
    videos = sorted(output_dir.glob("avatar-*.mp4"), key=lambda path: path.stat().st_mtime)
    for old in videos[:-keep] if keep else videos:
        old.unlink(missing_ok=True)


def describe_result(result: Any) -> str:
    """One Markdown line about a ``GenerationResult``: length, frames, size and where the time went."""
    fps = getattr(result, "fps", None) or (result.num_frames / result.duration if result.duration else 0.0)
    line = (f"**{result.duration:.2f} s** video, {result.num_frames} frames at {fps:.0f} fps, "
            f"{result.width}x{result.height} pixels.")
    region = getattr(result, "guidance_region", None) or {}
    if region.get("region") in GUIDANCE_REGION_LABELS:
        line += f" Audio guidance on {GUIDANCE_REGION_LABELS[region['region']]}"
        line += f": {region['reason']}." if region.get("reason") else "."
    start, steps_run = getattr(result, "start_sigma", None), getattr(result, "steps_run", None)
    if start is not None and steps_run is not None:
        from_noise = (getattr(result, "start_region", None) or {}) if start < 1.0 else {}
        if start >= 1.0:
            line += f" {steps_run} denoising steps from pure noise."
        elif from_noise.get("region") == "frame":  # the mouth was not found: every token started from pure noise
            line += (f" {steps_run} denoising steps from pure noise: the start from the portrait at {start:g} leaves "
                     f"the mouth to noise, and {from_noise.get('reason')}.")
        else:
            line += f" {steps_run} denoising steps from the portrait at noise level {start:g}" + \
                (", the mouth from pure noise." if from_noise.get("region") == "mouth" else ".")
    timings = getattr(result, "timings", None) or {}
    if timings:
        line += " Time: " + ", ".join(f"{stage.replace('_', ' ')} {seconds:.1f} s"
                                      for stage, seconds in timings.items()) + "."
    return line


def stream_generation(generator: Any, request: GenerationRequest, output_dir: Path,
                      progress: Callable[[str, float], None] | None = None
                      ) -> Iterator[tuple[Path, Path | None, str | None]]:
    """Generate one video for ``request`` into ``output_dir`` with ``generator.stream``.

    Yields ``(segment MP4, None, None)`` for every segment as soon as it is playable, and for the last one
    ``(segment MP4, final MP4, description)``.  The segment files live in ``output_dir/segments/<name>/`` until
    the stream has been read to its end (the page has its own copies by then) and are removed afterwards.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    prune_outputs(output_dir, keep=KEEP_OUTPUTS - 1)
    name = f"avatar-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
    output = output_dir / f"{name}.mp4"
    segment_dir = output_dir / SEGMENTS_FOLDER / name
    started = time.perf_counter()
    try:
        for segment in generator.stream(
                str(request.image), text=request.text, audio=None if request.audio is None else str(request.audio),
                output=str(output), segment_dir=str(segment_dir), tts="espeak", voice=request.voice,
                steps=request.steps, guidance=request.guidance, seed=request.seed,
                guidance_region=request.guidance_region, start_sigma=request.start_sigma, progress=progress):
            if segment.result is None:
                yield Path(segment.path), None, None
                continue
            log.info("generated %s in %.1f s (first second playable after %.1f s)", segment.result.video_path,
                     time.perf_counter() - started, segment.result.timings.get("first_second", float("nan")))
            yield Path(segment.path), Path(segment.result.video_path), describe_result(segment.result)
    finally:
        shutil.rmtree(segment_dir, ignore_errors=True)


def can_stream_video() -> bool:
    """Gradio's streaming video output muxes HLS segments with the ``ffmpeg`` and ``ffprobe`` on PATH."""
    return shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None


def make_generate_handler(generator: Any, output_dir: Path, streaming: bool = True) -> Callable[..., Iterator[tuple]]:
    """The Generate button's handler: raw page values in, (video, download, description) out, as a generator.

    With ``streaming`` the video output gets every segment as soon as it is playable (the page starts playing
    the first while the rest is generated); the download link and the description come with the last one.
    Without it the video comes once, whole.  It runs with ``preprocess=False`` so that an upload Pillow cannot
    open reaches :func:`check_portrait` (and becomes a clear message) instead of failing inside Gradio's own
    image decoding.
    """

    def generate(image, speech_source, text, audio, voice, steps, guidance, seed, guidance_region, start_sigma,
                 progress=gr.Progress()) -> Iterator[tuple[str | None, str | None, str]]:  # noqa: B008 - gradio injects it
        try:
            request = validate_request(image, speech_source, text, audio, voice, steps, guidance, seed,
                                       guidance_region, start_sigma)
            progress(0.0, desc="starting")

            def report(stage: str, fraction: float) -> None:
                progress(min(max(float(fraction), 0.0), 1.0), desc=stage)

            for segment, video, description in stream_generation(generator, request, output_dir, progress=report):
                if video is not None:
                    yield str(segment if streaming else video), str(video), description
                elif streaming:
                    yield str(segment), None, ""
        except UserError as exc:
            raise gr.Error(str(exc), title="Cannot generate", print_exception=False) from None
        except Exception as exc:
            # A bug, not a user mistake: keep the traceback in the server log, show one line on the page.
            log.exception("generation failed")
            raise gr.Error(f"generation failed ({type(exc).__name__}: {exc}); see the server log",
                           title="Generation failed", print_exception=False) from None

    return generate


def check_uploaded_portrait(image) -> None:
    """Immediate feedback when a portrait is uploaded (the Generate handler checks it again)."""
    path = uploaded_path(image)
    if path is None:
        return
    try:
        check_portrait(path)
    except UserError as exc:
        raise gr.Error(str(exc), title="Invalid portrait", print_exception=False) from None


def show_speech_input(speech_source: str) -> tuple[dict, dict, dict]:
    """Show the text box (and voice) or the speech upload, whichever the speech source asks for."""
    typed = speech_source != AUDIO_SOURCE
    return gr.update(visible=typed), gr.update(visible=typed), gr.update(visible=not typed)


# ----------------------------------------------------------------------------------------------- page

def prepare_examples(folder: str | Path, count: int = 2, size: int = 256) -> list[DemoExample]:
    """Write ``count`` synthetic portraits (the demo's faces, see :func:`avatar_gen.synthetic.make_portrait`)
    into ``folder`` and pair each with a line to speak."""
    from avatar_gen.synthetic import make_portrait

    folder = Path(folder)
    examples = []
    for index in range(count):
        image = folder / f"example_portrait_{index}.png"
        if not image.is_file():
            make_portrait(image, seed=index, size=size)
        examples.append(DemoExample(image=image, text=EXAMPLE_TEXTS[index % len(EXAMPLE_TEXTS)]))
    return examples


INTRO = f"""# Human Avatar Generator
Upload a portrait, type what the person should say (or upload a recording of the speech), and press
**Generate**: the model animates the portrait into a short video with the speech as its sound track.
One generation runs at a time; others wait in the queue.
Limits: PNG, JPEG, WebP or BMP up to {MAX_UPLOAD_SIZE_TEXT}, {MIN_IMAGE_SIDE} to {MAX_IMAGE_SIDE} pixels a side;
text up to {WEB_TEXT_MAX_CHARS} characters; speech as {', '.join(SPEECH_EXTENSIONS)} up to {MAX_UPLOAD_SIZE_TEXT}.
"""


def build_app(generator: Any, examples: list[DemoExample] | None = None, output_dir: str | Path | None = None,
              defaults: PageDefaults | None = None, title: str = "Human Avatar Generator") -> gr.Blocks:
    """Lay out the demo page around a loaded ``generator`` (see :mod:`avatar_gen.inference`).

    ``examples``: clickable examples (see :func:`prepare_examples`); ``output_dir``: where videos are
    written (default: a new temporary folder).  The caller queues and launches the returned Blocks
    (:func:`serve` does both).
    """
    defaults = defaults or PageDefaults()
    output_dir = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix="avatar-webapp-"))
    streaming = can_stream_video()
    if not streaming:
        log.warning("ffmpeg and ffprobe are not both on PATH: videos appear when complete instead of streaming")
    generate = make_generate_handler(generator, output_dir, streaming=streaming)
    # Gradio copies every served file into its cache; delete those copies after a day, checking hourly.
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 86400)) as app:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column():
                portrait = gr.Image(label="Portrait", type="filepath", sources=["upload", "clipboard"], height=320,
                                    elem_id="portrait")
                speech_source = gr.Radio(list(SPEECH_SOURCES), value=TEXT_SOURCE, label="Speech",
                                         elem_id="speech-source")
                text = gr.Textbox(label="Text to speak", lines=3, max_length=WEB_TEXT_MAX_CHARS, elem_id="text",
                                  placeholder="What should the person say?")
                voice = gr.Dropdown(list(VOICES), value=defaults.voice, label="Voice (espeak-ng)", elem_id="voice")
                speech_audio = gr.Audio(label="Speech recording", type="filepath", sources=["upload"], visible=False,
                                        elem_id="speech-audio")
                with gr.Row():
                    steps = gr.Slider(MIN_STEPS, MAX_STEPS, value=defaults.steps, step=1, label="Denoising steps",
                                      elem_id="steps")
                    guidance = gr.Slider(MIN_GUIDANCE, MAX_GUIDANCE, value=defaults.guidance, step=0.5,
                                         label="Guidance scale", elem_id="guidance")
                    seed = gr.Number(value=defaults.seed, precision=0, minimum=0, maximum=MAX_SEED, label="Seed",
                                     elem_id="seed")
                guidance_region = gr.Radio([(GUIDANCE_REGION_LABELS[region], region) for region in GUIDANCE_REGIONS],
                                           value=defaults.guidance_region,
                                           label="Audio guidance acts on", elem_id="guidance-region")
                start_sigma = gr.Slider(START_SIGMA_MIN, 1.0, value=defaults.start_sigma, step=START_SIGMA_STEP,
                                        label="Start noise level (1 = from pure noise; lower keeps the portrait "
                                              "outside the mouth, and the head stiller)", elem_id="start-sigma")
                generate_button = gr.Button("Generate", variant="primary", elem_id="generate")
            with gr.Column():
                video = gr.Video(label="Talking video", interactive=False, elem_id="result-video", streaming=streaming,
                                 autoplay=streaming)
                download = gr.File(label="Download the video", interactive=False, elem_id="download")
                summary = gr.Markdown(elem_id="summary")
        if examples:
            gr.Examples(
                examples=[[str(example.image), TEXT_SOURCE, example.text, example.voice] for example in examples],
                inputs=[portrait, speech_source, text, voice],
                label="Examples (synthetic faces): click one, then Generate",
                cache_examples=False,
            )

        speech_source.change(show_speech_input, inputs=speech_source, outputs=[text, voice, speech_audio],
                             queue=False, show_progress="hidden")
        # Queued (errors from unqueued events do not reach the page) but not limited, so that the check
        # does not wait behind a running generation.  A refused upload is then removed from the page.
        portrait.upload(check_uploaded_portrait, inputs=portrait, outputs=None, preprocess=False,
                        concurrency_limit=None, show_progress="hidden").failure(
            lambda: None, inputs=None, outputs=portrait, queue=False, show_progress="hidden")
        generate_button.click(
            generate, inputs=[portrait, speech_source, text, speech_audio, voice, steps, guidance, seed,
                              guidance_region, start_sigma],
            outputs=[video, download, summary], preprocess=False, concurrency_id="generate",
        )
    return app


def serve(generator: Any, host: str = "127.0.0.1", port: int = 7860, share: bool = False,
          work_dir: str | Path | None = None, defaults: PageDefaults | None = None, num_examples: int = 2,
          queue_size: int = 16) -> None:
    """Build the page, queue it (one generation at a time) and serve it until interrupted.

    ``work_dir`` holds the example portraits and generated videos; without it a temporary folder is
    used and removed when the server stops.  Blocks until Ctrl-C (or a KeyboardInterrupt raised by the
    caller's SIGTERM handler), then closes the server.
    """
    own_work_dir = work_dir is None
    work_dir = Path(tempfile.mkdtemp(prefix="avatar-webapp-")) if own_work_dir else Path(work_dir)
    try:
        examples = prepare_examples(work_dir / "examples", count=num_examples) if num_examples else []
        output_dir = work_dir / "outputs"
        app = build_app(generator, examples=examples, output_dir=output_dir, defaults=defaults)
        app.queue(default_concurrency_limit=1, max_size=queue_size)
        if host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("serving on %s: the demo is reachable from other machines on that network", host)
        if share:
            log.warning("--share: Gradio opens a public link through its tunnel servers")
        try:
            app.launch(server_name=host, server_port=port, share=share, max_file_size=MAX_UPLOAD_BYTES,
                       allowed_paths=[str(work_dir)], run_history=False, footer_links=[], ssr_mode=False,
                       mcp_server=False, show_error=False, quiet=False)
        except OSError as exc:
            raise UserError(f"cannot serve on {host}:{port}: {exc}") from None
        # launch() returns once interrupted, with the HTTP server closed but the queue still running.
        app.close(verbose=False)
        log.info("server stopped")
    finally:
        if own_work_dir:
            shutil.rmtree(work_dir, ignore_errors=True)
