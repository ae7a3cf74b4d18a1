"""Inference speed: time per stage, and the cost of our sampling loop against calling the diffusers pipeline.

    python bench/bench_inference.py                  # tiny zoo, CPU, untrained checkpoint (a few minutes)
    python bench/bench_inference.py --checkpoint outputs/run/checkpoints/latest --device cuda --dtype bf16 \
        --height 512 --width 768 --steps 40          # a real model on a GPU

Figures (one JSON line):
- ``stages_s``: seconds per stage of one :meth:`AvatarGenerator.generate` (median over ``--repeats``; torch on
  ``--threads`` CPU threads, default 1): TTS
  (``speech``), audio encoding + projection (``audio_features``), ``denoising``, VAE ``decoding``, H.264 + AAC
  ``writing`` (muxing), and ``total``;
- ``seconds_per_video_second``: ``total`` / the speech's duration (below 1 = faster than real time);
- ``pipeline_overhead_wall`` / ``_cpu``: one chunk made the way ``generate`` makes it (our sampling loop ``denoise``
  with its per-step progress callback, then ``decode``) over the same chunk from a plain ``LTXImageToVideoPipeline``
  call with the same components, inputs and seed (``output_type="np"``; for patch size 1 both compute the same
  latents): the median over ``--pairs`` back-to-back pairs (alternating
  which goes first) of ours / plain, in wall time and in this process's CPU time; a pair sees one machine load, so
  the ratio resists busy neighbours better than a ratio of separate medians.  Target <= 1.05.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

TEXT = "Hello, I am your avatar."  # about 1.4 s of espeak speech: one chunk at 25 fps when chunks are >= 41 frames


def build_tiny_checkpoint(folder: Path, height: int, width: int, chunk_frames: int) -> Path:
    from avatar_gen.audio.features import AudioEncoderSpec
    from avatar_gen.tiny.checkpoint import write_untrained_checkpoint
    from avatar_gen.tiny import build_tiny_zoo

    zoo = build_tiny_zoo(folder / "zoo", seed=0)
    spec = AudioEncoderSpec(encoder="wav2vec2", name_or_path=str(zoo["wav2vec2"]))
    return write_untrained_checkpoint(folder / "checkpoint", zoo["ltx-video"], spec,
                                      {"height": height, "width": width, "num_frames": chunk_frames, "fps": 25.0})


def timed(work) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of ``work()``.

    CPU time is what a busy shared machine distorts least."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu


def plain_pipeline_call(generator, frame, inputs, num_frames: int, height: int, width: int, fps: float, steps: int,
                        guidance: float, seed: int):
    """One chunk through a plain LTXImageToVideoPipeline built from the generator's own components."""
    from diffusers import FlowMatchEulerDiscreteScheduler, LTXImageToVideoPipeline
    from PIL import Image

    pipeline = LTXImageToVideoPipeline(
        vae=generator.vae, text_encoder=None, tokenizer=None, transformer=generator.transformer,
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(generator.sampler.scheduler_config))
    pipeline.set_progress_bar_config(disable=True)
    with_guidance = guidance > 1.0
    return pipeline(image=Image.fromarray(frame), height=height, width=width, num_frames=num_frames, frame_rate=fps,
                    num_inference_steps=steps, guidance_scale=guidance,
                    generator=torch.Generator(device=generator.device).manual_seed(seed),
                    prompt_embeds=inputs.prompt_embeds, prompt_attention_mask=inputs.prompt_attention_mask,
                    negative_prompt_embeds=inputs.negative_prompt_embeds if with_guidance else None,
                    negative_prompt_attention_mask=inputs.negative_prompt_attention_mask if with_guidance else None,
                    output_type="np")


def our_chunk_call(generator, frame, inputs, num_frames: int, height: int, width: int, fps: float, steps: int,
                   guidance: float, seed: int):
    """The same chunk the way ``generate`` makes it: ``denoise`` (with a per-step progress callback) + ``decode``."""
    from avatar_gen.utils.progress import progress

    random = torch.Generator(device=generator.device).manual_seed(seed)
    with progress(total=steps, desc="denoising", unit="step", disable=True) as bar:
        latents = generator.denoise(frame, inputs, num_frames, height, width, fps, steps, guidance, random,
                                    on_step=lambda step: bar.update(1))
    return generator.decode(latents, num_frames, height, width, random)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="a trained checkpoint (default: untrained, tiny zoo)")
    parser.add_argument("--pretrained", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--start_sigma", type=float, default=1.0,
                        help="noise level denoising starts at (default 1: the whole schedule from pure noise, as the "
                             "recorded figures ran; docs/inference.md, \"Starting from the portrait\")")
    parser.add_argument("--repeats", type=int, default=3, help="generate() runs for the stage timings")
    parser.add_argument("--pairs", type=int, default=21, help="back-to-back chunk runs, ours and plain (overhead)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a machine shared with other jobs, OpenMP threads that "
                             "spin while waiting for a descheduled sibling make multi-thread timings erratic)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from avatar_gen.inference import AvatarGenerator
    from avatar_gen.inference.inputs import fit_portrait, load_portrait, load_speech
    from avatar_gen.inference.schedule import frames_for_duration, plan_chunks
    from avatar_gen.synthetic.dataset import make_portrait

    with tempfile.TemporaryDirectory(prefix="bench-inference-") as scratch:
        folder = Path(scratch)
        checkpoint = args.checkpoint or build_tiny_checkpoint(folder, args.height, args.width, chunk_frames=49)
        started = time.perf_counter()
        generator = AvatarGenerator.load(checkpoint, pretrained=args.pretrained, device=args.device, dtype=args.dtype)
        load_seconds = time.perf_counter() - started
        portrait = make_portrait(folder / "face.png", seed=5, size=256)
        settings = dict(steps=args.steps, guidance=args.guidance, height=args.height, width=args.width, seed=0,
                        start_sigma=args.start_sigma)
        generator.generate(portrait, text=TEXT, output=folder / "warmup.mp4", **settings)  # first-call costs

        # The plain pipeline's inputs: the chunk generate() makes, with the same conditioning.
        fps = generator.default_fps
        speech = load_speech(TEXT, fps=fps)
        chunks = plan_chunks(frames_for_duration(speech.duration, fps), generator.chunk_frames)
        if len(chunks) != 1:
            sys.exit(f"the benchmark text needs {len(chunks)} chunks with this checkpoint; the overhead "
                     "comparison needs one")
        frame, _ = fit_portrait(load_portrait(portrait), args.height, args.width)
        inputs = generator.chunk_conditioning(speech.audio_16k, chunks, fps, args.height, args.width)[0]

        results, ours, plain = [], [], []
        chunk_arguments = (frame, inputs, chunks[0].num_frames, args.height, args.width, fps, args.steps,
                           args.guidance, 0)
        for repeat in range(args.repeats):
            results.append(generator.generate(portrait, text=TEXT, output=folder / f"run{repeat}.mp4", **settings))
        for repeat in range(args.pairs):
            # Alternate which side goes first, so that neither always inherits the other's warm caches.
            pair = [lambda: ours.append(timed(lambda: our_chunk_call(generator, *chunk_arguments))),
                    lambda: plain.append(timed(lambda: plain_pipeline_call(generator, *chunk_arguments)))]
            for run in pair if repeat % 2 == 0 else pair[::-1]:
                run()
    stages = {stage: round(statistics.median(result.timings[stage] for result in results), 3)
              for stage in results[0].timings}
    duration = results[0].duration
    median = {name: [statistics.median(run[index] for run in runs) for index in (0, 1)]
              for name, runs in (("ours", ours), ("plain", plain))}
    print(json.dumps({
        "model": "tiny zoo, untrained" if args.checkpoint is None else str(args.checkpoint),
        "device": str(generator.device), "dtype": args.dtype, "gpu": torch.cuda.is_available(),
        "torch_threads": torch.get_num_threads(),
        "video": f"{args.width}x{args.height}@{fps:g} {results[0].num_frames} frames ({duration:.2f} s)",
        "steps": args.steps, "guidance": args.guidance, "load_s": round(load_seconds, 2),
        "stages_s": stages,
        "seconds_per_video_second": round(stages["total"] / duration, 2),
        "chunk_wall_s": {"ours": round(median["ours"][0], 3), "pipeline": round(median["plain"][0], 3)},
        "chunk_cpu_s": {"ours": round(median["ours"][1], 3), "pipeline": round(median["plain"][1], 3)},
        "pipeline_overhead_wall": round(statistics.median(mine[0] / theirs[0] for mine, theirs in zip(ours, plain)), 3),
        "pipeline_overhead_cpu": round(statistics.median(mine[1] / theirs[1] for mine, theirs in zip(ours, plain)), 3),
    }))


if __name__ == "__main__":
    main()
