"""Time and memory per chunk over a minute of speech on a CPU, for each hand-off between chunks (issue 17).

    python bench/bench_long_video.py          # tiny zoo, untrained checkpoint, 128x128, 49-frame chunks, 60 s

Generates ``--seconds`` of speech (espeak, repeated and cut) with every hand-off of docs/inference.md ("Long
speech"): ``frame`` (the decoded last frame, re-encoded), ``latent`` (the last m latent frames; the checkpoint claims
continuation training up to ``--trained_frames``), and ``latent`` with the ``portrait``, ``statistics`` and
``portrait+colour`` anchors.
Prints one JSON line: per hand-off the chunk count, compute seconds per video second, and for chunk 1 and chunk 15
(``--chunks``) the seconds and peak memory (the process's peak resident set, measured per chunk by the generator's
``chunk_memory``) with the ratio chunk 15 / chunk 1 (target: within 10 %), plus the median seconds of chunks 1-5 and
of the last five and their ratio (one chunk's seconds swing with the load of a shared machine; the medians less).
An untrained model says nothing about drift or seams (its frames are noise): those figures come from
``python -m avatar_gen.toy measure-long`` on the trained toy world.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

SENTENCE = "Hello, I am your avatar, and I will keep talking for a long while, one chunk after another."
# m is given where the default would differ from the figures in docs/inference.md (measured before the default
# became one frame beside the portrait); the last entry is the default setting.
HANDOFFS = {"frame": dict(handoff="frame"), "latent": dict(handoff="latent", anchor="none"),
            "latent+portrait": dict(handoff="latent", anchor="portrait", handoff_frames=2),
            "latent+statistics": dict(handoff="latent", anchor="statistics"),
            "latent+portrait+colour": dict(handoff="latent", anchor="portrait+colour")}


def long_speech(folder: Path, seconds: float) -> Path:
    """espeak speech of a sentence, repeated and cut to exactly ``seconds``, as a WAV."""
    from avatar_gen.audio.tts import synthesize
    from avatar_gen.media import write_wav

    speech = synthesize(SENTENCE)
    repeats = int(np.ceil(seconds * speech.sample_rate / len(speech.audio)))
    return write_wav(folder / "speech.wav", np.tile(speech.audio, repeats)[:int(seconds * speech.sample_rate)],
                     speech.sample_rate)


def chunk_figures(result, chunks: list[int]) -> dict:
    records = result.chunks
    figures = {"chunks": len(records), "s_per_video_s": round(result.timings["total"] / result.duration, 3),
               "memory_kind": result.memory_kind}
    for index in chunks:
        if index < len(records):
            figures[f"chunk_{index}"] = {"seconds": records[index]["seconds"],
                                         "peak_memory_mb": records[index]["peak_memory_mb"]}
    first, last = (f"chunk_{index}" for index in (chunks[0], chunks[-1]))
    if first in figures and last in figures:
        figures["seconds_ratio"] = round(figures[last]["seconds"] / figures[first]["seconds"], 3)
        figures["memory_ratio"] = round(figures[last]["peak_memory_mb"] / figures[first]["peak_memory_mb"], 4)
    seconds = [record["seconds"] for record in records]
    figures["median_seconds_first_5"] = round(statistics.median(seconds[1:6]), 4)
    figures["median_seconds_last_5"] = round(statistics.median(seconds[-5:]), 4)
    figures["median_seconds_ratio"] = round(figures["median_seconds_last_5"] / figures["median_seconds_first_5"], 3)
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="speech per video")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--chunk_frames", type=int, default=49, help="training clip length of the tiny checkpoint")
    parser.add_argument("--trained_frames", type=int, default=3,
                        help="continuation_max_frames the checkpoint records (the default hand-off length)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--start_sigma", type=float, default=1.0,
                        help="noise level denoising starts at (default 1: the whole schedule from pure noise, as the "
                             "recorded figures ran; docs/inference.md, \"Starting from the portrait\")")
    parser.add_argument("--chunks", type=int, nargs=2, default=[1, 15], help="the chunks to compare (from 0)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (see bench_inference.py)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from avatar_gen.audio.features import AudioEncoderSpec
    from avatar_gen.inference import AvatarGenerator
    from avatar_gen.synthetic.dataset import make_portrait
    from avatar_gen.tiny import build_tiny_zoo
    from avatar_gen.tiny.checkpoint import write_untrained_checkpoint

    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        build_tiny_zoo(folder / "zoo", seed=0)
        spec = AudioEncoderSpec(encoder="wav2vec2", name_or_path=str(folder / "zoo" / "wav2vec2"))
        checkpoint = write_untrained_checkpoint(
            folder / "run" / "step_000000", folder / "zoo" / "ltx-video", spec,
            {"height": args.size, "width": args.size, "num_frames": args.chunk_frames, "fps": 25.0},
            continuation_max_frames=args.trained_frames)
        generator = AvatarGenerator.load(checkpoint)
        portrait = make_portrait(folder / "face.png", seed=1, size=2 * args.size)
        speech = long_speech(folder, args.seconds)
        report = {"video": f"{args.size}x{args.size}@25, {args.seconds:g} s in chunks of <= {args.chunk_frames}",
                  "steps": args.steps, "guidance": args.guidance, "threads": args.threads, "handoffs": {}}
        for name, options in HANDOFFS.items():
            result = generator.generate(portrait, audio=speech, output=folder / f"{name}.mp4", steps=args.steps,
                                        guidance=args.guidance, seed=0, chunk_memory=True,
                                        start_sigma=args.start_sigma, **options)
            report["handoffs"][name] = {**result.handoff, **chunk_figures(result, args.chunks)}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
