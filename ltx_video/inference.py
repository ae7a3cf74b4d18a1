"""Stage 5: a portrait and a sentence (or a speech recording) -> a talking video with the speech.

    python ltx_video/inference.py --image face.png --text "Hello, I am your avatar." \
        --checkpoint outputs/<run>/checkpoints/latest --output talking.mp4

``--help`` lists every flag; docs/inference.md explains the input limits and the schedules.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from avatar_gen.audio.tts import BACKENDS, DEFAULT_VOICE
from avatar_gen.errors import UserError
from avatar_gen.utils.cli import add_common_arguments, interrupt_on_sigterm, run_main

log = logging.getLogger("ltx_video.inference")


def build_parser() -> argparse.ArgumentParser:
    from avatar_gen.inference import DEFAULT_GUIDANCE, DEFAULT_STEPS, DISTILLED_TIMESTEPS, REQUEST_TEXT_MAX_CHARS
    from avatar_gen.inference.generator import (DEFAULT_GUIDANCE_INTERVAL, DEFAULT_GUIDANCE_REGION,
                                                DEFAULT_START_REGION, DEFAULT_START_SIGMA)
    from avatar_gen.inference.guidance import GUIDANCE_REGIONS, START_REGIONS
    from avatar_gen.inference.handoff import ANCHORS, HANDOFFS
    from avatar_gen.limits import MAX_FPS, MAX_SEED, MAX_SIDE, MAX_SPEECH_SECONDS, MAX_STEPS

    parser = argparse.ArgumentParser(description="Generate a talking video of the person in --image speaking "
                                                 "--text (or --audio) with a trained avatar checkpoint.")
    parser.add_argument("--image", required=True, help="portrait (PNG/JPEG/WebP/...; any size, >= 64 px per side)")
    speech = parser.add_mutually_exclusive_group(required=True)
    speech.add_argument("--text",
                        help=f"what the avatar says (spoken by --tts; at most {REQUEST_TEXT_MAX_CHARS} characters)")
    speech.add_argument("--audio",
                        help="speech recording to lip-sync instead of --text (WAV/MP3/FLAC/OGG/M4A, any rate, at most "
                             f"{MAX_SPEECH_SECONDS:g} s)")
    parser.add_argument("--checkpoint", required=True,
                        help="training checkpoint: step_XXXXXX folder, its 'latest' link, or the run folder")
    parser.add_argument("--output", default="talking.mp4", help="MP4 to write (default: talking.mp4)")
    parser.add_argument("--pretrained", default=None,
                        help="base LTX-Video (hub id or folder); default: the one recorded in the checkpoint")
    parser.add_argument("--tts", default="espeak", choices=BACKENDS, help="speech synthesis back-end (default espeak, "
                                                                         "offline; gtts needs the network)")
    parser.add_argument("--voice", default=DEFAULT_VOICE, help=f"TTS voice (default {DEFAULT_VOICE})")
    parser.add_argument("--steps", type=int, default=None,
                        help=f"denoising steps (default {DEFAULT_STEPS}, at most {MAX_STEPS})")
    parser.add_argument("--guidance", type=float, default=None,
                        help=f"audio classifier-free guidance scale, 1 = off (default {DEFAULT_GUIDANCE}; 1 with "
                             "--distilled)")
    parser.add_argument("--guidance_region", default=None, choices=GUIDANCE_REGIONS,
                        help="where the guidance applies: mouth (the tokens over the portrait's mouth, found by a face "
                             "detector; the whole frame when there is no face) or frame (every token); default "
                             f"{DEFAULT_GUIDANCE_REGION}")
    parser.add_argument("--guidance_interval", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                        help="apply the guidance only at the noise levels sigma from LOW to HIGH (0 <= LOW < HIGH "
                             "<= 1; the other steps run one unguided pass); default {:g} {:g}".format(
                                 *DEFAULT_GUIDANCE_INTERVAL))
    parser.add_argument("--start_sigma", type=float, default=None, metavar="SIGMA",
                        help="start denoising at this noise level from the portrait's still video instead of from "
                             "pure noise (0 < SIGMA <= 1; 1 = pure noise; lower keeps the face nearer the portrait and "
                             f"the head stiller); default {DEFAULT_START_SIGMA:g}")
    parser.add_argument("--start_region", default=None, choices=START_REGIONS,
                        help="with --start_sigma below 1, which tokens start from the portrait: outside_mouth (all but "
                             "the mouth's, found as for --guidance_region, which start from pure noise so that the "
                             "portrait's closed mouth is not where they start; the whole schedule runs) or frame "
                             "(every token; only the steps below the start run); default "
                             f"{DEFAULT_START_REGION}")
    parser.add_argument("--seed", type=int, default=0,
                        help=f"random seed from 0 to {MAX_SEED}; the same seed gives the same video")
    parser.add_argument("--height", type=int, default=None,
                        help=f"video height, a multiple of 32 (LTX-Video; in general the VAE's spatial factor x the "
                             f"transformer's patch size) up to {MAX_SIDE} (default: training's)")
    parser.add_argument("--width", type=int, default=None,
                        help=f"video width, a multiple of 32 (LTX-Video; in general the VAE's spatial factor x the "
                             f"transformer's patch size) up to {MAX_SIDE} (default: training's)")
    parser.add_argument("--fps", type=float, default=None,
                        help=f"frames per second, up to {MAX_FPS:g} (default: training's)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"), help="compute precision (default fp32)")
    parser.add_argument("--distilled", action="store_true",
                        help="few-step distilled schedule, timesteps "
                             + ", ".join(f"{t:g}" for t in DISTILLED_TIMESTEPS)
                             + " (for models fine-tuned from a distilled LTX-Video)")
    parser.add_argument("--timesteps", type=float, nargs="+", default=None,
                        help="a fixed schedule of your own (decreasing, in (0, 1000]); overrides --steps")
    parser.add_argument("--summary", default=None, help="also write the run's summary (sizes, timings) as JSON here")
    parser.add_argument("--stream_dir", default=None,
                        help="also write each chunk as a playable segment_NNNN.mp4 (with its speech) into this folder "
                             "as soon as it is made, before the whole video is done")
    parser.add_argument("--attention_backend", default=None,
                        help="diffusers attention backend, e.g. native (torch SDPA, default), _native_flash, "
                             "_native_cudnn, flash (needs flash-attn)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the transformer (the first step compiles; faster for long videos)")
    parser.add_argument("--fp8", action="store_true",
                        help="FP8 transformer weights (torchao; GPUs with compute capability >= 8.9 such as H100)")
    parser.add_argument("--vae_tiling", action="store_true",
                        help="decode in tiles (less memory at large sizes; frames differ slightly)")
    parser.add_argument("--no_overlap", action="store_true",
                        help="run denoising, decoding and writing strictly in turn (slower; for measurements)")
    parser.add_argument("--handoff", default="auto", choices=HANDOFFS,
                        help="how a chunk of long speech continues the previous one: latent (its last latent frames), "
                             "frame (its decoded last frame, re-encoded); auto (default): latent for a checkpoint "
                             "trained to continue (continuation_max_frames), else frame")
    parser.add_argument("--handoff_frames", type=int, default=None,
                        help="latent frames handed over with --handoff latent (default: 1 beside the portrait's "
                             "frame, else the checkpoint's continuation_max_frames)")
    parser.add_argument("--anchor", default="auto", choices=ANCHORS,
                        help="keep the portrait in view of every chunk (latent hand-off): portrait (its latent as a "
                             "clean frame in front of the hand-off), statistics (the hand-off's per-channel latent "
                             "mean and spread set to the portrait's), portrait+statistics (both), colour (every "
                             "later chunk's decoded frames shifted to the first chunk's mean colour: an output "
                             "correction), portrait+colour (portrait and colour), none; auto "
                             "(default): portrait+colour with the latent hand-off where the chunks leave room for "
                             "the portrait's frame, else none")
    parser.add_argument("--chunk_memory", action="store_true",
                        help="record each chunk's peak memory in the --summary (resets the process's peak counters)")
    add_common_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from avatar_gen.inference import AvatarGenerator
        from avatar_gen.inference.generator import check_output_path, checkpoint_side_multiple, resolve_settings
        from avatar_gen.inference.handoff import resolve_handoff
        from avatar_gen.inference.inputs import check_text, load_portrait, load_speech
        from avatar_gen.utils.io import atomic_write_json

        # Cheap checks first, so that a typo does not wait for the model to load.
        check_output_path(args.output)
        if args.stream_dir is not None and Path(args.stream_dir).is_file():
            raise UserError(f"--stream_dir {args.stream_dir} is a file, not a folder")
        resolve_settings(args.steps, args.guidance, args.height, args.width, args.fps, args.distilled, args.timesteps,
                         spatial_multiple=checkpoint_side_multiple(args.checkpoint), seed=args.seed,
                         guidance_interval=args.guidance_interval, guidance_region=args.guidance_region,
                         start_sigma=args.start_sigma, start_region=args.start_region)
        resolve_handoff(args.handoff, args.handoff_frames, args.anchor)  # the checkpoint's limits come once loaded
        load_portrait(args.image)
        if args.text is not None:
            check_text(args.text)
        else:
            load_speech(audio=args.audio, fps=args.fps)
        generator = AvatarGenerator.load(args.checkpoint, pretrained=args.pretrained, device=args.device,
                                         dtype=args.dtype, attention_backend=args.attention_backend,
                                         compile=args.compile, fp8=args.fp8, vae_tiling=args.vae_tiling)
        request = dict(text=args.text, audio=args.audio, output=args.output, tts=args.tts, voice=args.voice,
                       steps=args.steps, guidance=args.guidance, seed=args.seed, height=args.height, width=args.width,
                       fps=args.fps, distilled=args.distilled, timesteps=args.timesteps, overlap=not args.no_overlap,
                       handoff=args.handoff, handoff_frames=args.handoff_frames, anchor=args.anchor,
                       chunk_memory=args.chunk_memory, guidance_interval=args.guidance_interval,
                       guidance_region=args.guidance_region, start_sigma=args.start_sigma,
                       start_region=args.start_region)
        if args.stream_dir is None:
            result = generator.generate(args.image, **request)
        else:
            for segment in generator.stream(args.image, segment_dir=args.stream_dir, **request):
                log.info("segment %d playable: %s (%.2f-%.2f s)", segment.index, segment.path, segment.start_time,
                         segment.end_time)
            result = segment.result
        summary = result.summary()
        if args.summary:
            atomic_write_json(args.summary, summary)
        log.info("done: %s", json.dumps(summary))
        return 0

    with interrupt_on_sigterm():  # a terminated run stops its ffmpeg and removes its temporary video
        return run_main(body, verbose=args.verbose)


if __name__ == "__main__":
    raise SystemExit(main())
