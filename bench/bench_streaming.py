"""Streamed generation on a CPU: time to the first playable second of 12 s of speech, and the request-level levers.

    python bench/bench_streaming.py          # tiny zoo, untrained checkpoint, 128x128, 8 steps, guidance 3 (~3 min)

Prints one JSON line:
- ``first_second_s`` / ``total_s``: a streamed request (segments written to a folder, as the web page and
  ``--stream_dir`` do) — seconds until the video's first second is a playable MP4 segment, and until the final MP4
  is complete; ``first_second_fraction`` is their ratio (target <= 0.35);
- ``frame_identical``: the streamed request's MP4 and a plain ``generate()`` without overlap decode to the same
  frames (same seed);
- ``levers`` (off / on, same inputs, median of ``--pairs`` back-to-back pairs alternating which runs first):
  ``overlap`` (segment k encoded while chunk k+1 denoises vs strictly in turn), ``conditioning_once`` (speech
  features for all chunks from one encoder pass vs each chunk's own audio window), ``distilled`` (regular
  ``--regular_steps`` steps with guidance vs the distilled 8-step schedule), with the distilled video's quality
  against the regular one measured by the evaluation (``avatar_gen.evaluation``: PSNR/SSIM and temporal metrics).
The GPU-only levers (compile, attention backend, VAE tiling, FP8) are in ``python -m bench.gpu``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SPEECH_SECONDS = 12.0
SENTENCE = "Hello, I am your avatar, and I will keep talking for a while so that the video has many chunks."


def twelve_seconds_of_speech(folder: Path) -> Path:
    """espeak speech of a sentence, repeated and cut to exactly ``SPEECH_SECONDS``, as a WAV."""
    from avatar_gen.audio.tts import synthesize
    from avatar_gen.media import write_wav

    speech = synthesize(SENTENCE)
    repeats = int(np.ceil(SPEECH_SECONDS * speech.sample_rate / len(speech.audio)))
    audio = np.tile(speech.audio, repeats)[:int(SPEECH_SECONDS * speech.sample_rate)]
    return write_wav(folder / "speech.wav", audio, speech.sample_rate)


def paired_ratio(off, on, pairs: int) -> tuple[float, list[float], list[float]]:
    """Median of off/on over back-to-back pairs (alternating which goes first); also the raw seconds."""
    offs, ons, ratios = [], [], []
    for index in range(pairs):
        order = [(offs, off), (ons, on)] if index % 2 == 0 else [(ons, on), (offs, off)]
        for store, work in order:
            started = time.perf_counter()
            work()
            store.append(time.perf_counter() - started)
        ratios.append(offs[-1] / ons[-1])
    return statistics.median(ratios), offs, ons


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--chunk_frames", type=int, default=49, help="training clip length of the tiny checkpoint")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--start_sigma", type=float, default=1.0,
                        help="noise level denoising starts at (default 1: the whole schedule from pure noise, as the "
                             "recorded figures ran; docs/inference.md, \"Starting from the portrait\")")
    parser.add_argument("--regular_steps", type=int, default=30, help="the regular schedule the distilled one beats")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (see bench_inference.py)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from avatar_gen.evaluation.pipeline import evaluate_clip
    from avatar_gen.evaluation.quality import psnr
    from avatar_gen.inference import AvatarGenerator
    from avatar_gen.inference.inputs import load_speech
    from avatar_gen.inference.schedule import ChunkPlan, frames_for_duration, plan_chunks
    from avatar_gen.media import read_frames
    from avatar_gen.synthetic.dataset import make_portrait
    from bench_inference import build_tiny_checkpoint  # beside this script, on sys.path when it runs

    with tempfile.TemporaryDirectory(prefix="bench-streaming-") as scratch:
        folder = Path(scratch)
        checkpoint = build_tiny_checkpoint(folder, args.size, args.size, chunk_frames=args.chunk_frames)
        generator = AvatarGenerator.load(checkpoint)
        portrait = make_portrait(folder / "face.png", seed=5, size=256)
        speech_file = twelve_seconds_of_speech(folder)
        request = dict(audio=speech_file, steps=args.steps, guidance=args.guidance, seed=0,
                       start_sigma=args.start_sigma)
        generator.generate(portrait, text="Warm up.", output=folder / "warmup.mp4", steps=2)

        def streamed(overlap: bool = True, name: str = "streamed"):
            segment = None
            for segment in generator.stream(  # noqa: B007 - the last segment carries the result
                    portrait, output=folder / f"{name}.mp4", segment_dir=folder / name, overlap=overlap, **request):
                pass
            return segment.result

        # Time to the first playable second: median over the overlap-on runs of the lever's pairs.
        results = []
        overlap_ratio, _, _ = paired_ratio(lambda: streamed(overlap=False, name="sequential"),
                                           lambda: results.append(streamed()), args.pairs)
        first_second = statistics.median(result.timings["first_second"] for result in results)
        total = statistics.median(result.timings["total"] for result in results)
        plain = generator.generate(portrait, output=folder / "plain.mp4", overlap=False, **request)
        identical = bool(np.array_equal(read_frames(folder / "streamed.mp4"), read_frames(plain.video_path)))

        # Conditioning once per request (one encoder pass over the whole speech) vs per chunk (each chunk's window).
        speech = load_speech(audio=speech_file, fps=generator.default_fps)
        chunks = plan_chunks(frames_for_duration(speech.duration, generator.default_fps), generator.chunk_frames)
        samples_per_frame = 16_000 / generator.default_fps

        def once():
            generator.chunk_conditioning(speech.audio_16k, chunks, generator.default_fps, args.size, args.size)

        def per_chunk():
            for chunk in chunks:
                window = speech.audio_16k[int(chunk.start * samples_per_frame):int(chunk.end * samples_per_frame)]
                generator.chunk_conditioning(window, [ChunkPlan(0, chunk.num_frames)], generator.default_fps,
                                             args.size, args.size)

        conditioning_ratio, per_chunk_s, once_s = paired_ratio(per_chunk, once, args.pairs)

        # Distilled 8 steps vs the regular schedule with guidance, and what the evaluation says of the difference.
        short = dict(text="Hello, I am your avatar.", seed=0)
        regular_path, distilled_path = folder / "regular.mp4", folder / "distilled.mp4"
        distilled_ratio, _, _ = paired_ratio(
            lambda: generator.generate(portrait, output=regular_path, steps=args.regular_steps,
                                       guidance=args.guidance, start_sigma=args.start_sigma, **short),
            lambda: generator.generate(portrait, output=distilled_path, distilled=True, **short), args.pairs)
        regular_record, _ = evaluate_clip(regular_path)
        distilled_record, _ = evaluate_clip(distilled_path, reference_path=regular_path)
        quality = {
            "distilled_vs_regular": distilled_record["reference"],
            "psnr_db": round(psnr(read_frames(distilled_path), read_frames(regular_path)), 2),
            "temporal_regular": regular_record["temporal"], "temporal_distilled": distilled_record["temporal"],
            "offline_sync_regular": regular_record["offline_sync"],
            "offline_sync_distilled": distilled_record["offline_sync"],
        }

    print(json.dumps({
        "model": "tiny zoo, untrained", "torch_threads": torch.get_num_threads(),
        "video": f"{args.size}x{args.size}@{plain.fps:g}, {plain.num_frames} frames ({plain.duration:.1f} s) in "
                 f"{plain.num_chunks} chunks of <= {generator.chunk_frames}", "steps": args.steps,
        "guidance": args.guidance,
        "first_second_s": round(first_second, 3), "total_s": round(total, 3),
        "first_second_fraction": round(first_second / total, 3), "frame_identical": identical,
        "stages_s": {stage: round(seconds, 3) for stage, seconds in results[-1].timings.items()},
        "levers": {"overlap_off_over_on": round(overlap_ratio, 3),
                   "conditioning_per_chunk_over_once": round(conditioning_ratio, 3),
                   "conditioning_s": {"once": round(statistics.median(once_s), 4),
                                      "per_chunk": round(statistics.median(per_chunk_s), 4)},
                   f"regular_{args.regular_steps}_over_distilled_8": round(distilled_ratio, 3)},
        "distilled_quality": quality,
    }, default=float))


if __name__ == "__main__":
    main()
