"""Stage 3: per video chunk, 16 kHz speech for its exact window and per-frame audio features
(see docs/audio_latents.md).

    python preprocessing/save_text_latents.py --latents_dir ./data/vae_latents \
        --transcripts ./data/video_transcripts.json --audio_out ./data/audio_wav --ff_out ./data/audio_latents
    python preprocessing/save_text_latents.py ... --audio_source original --encoder faceformer \
        --faceformer_ckpt ./models/vocaset.pth --device cuda --batch_size 16 --shard 0/4
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from avatar_gen.audio.features import DEFAULT_WAV2VEC2, LOGMEL_NAME, AudioEncoderSpec
from avatar_gen.audio.pipeline import AUDIO_SOURCES, make_config, parse_layers, save_audio_latents
from avatar_gen.errors import UserError
from avatar_gen.utils.cli import add_common_arguments, parse_shard, run_main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Make each chunk's speech (original, TTS or word-aligned TTS) and per-frame audio features.")
    parser.add_argument("--latents_dir", type=Path, required=True, help="the VAE stage's folder of <clip>_<k>.json")
    parser.add_argument("--transcripts", type=Path, help="video_transcripts.json (required for the tts sources)")
    parser.add_argument("--audio_out", type=Path, required=True, help="where <key>.wav (16 kHz mono) go")
    parser.add_argument("--ff_out", type=Path, required=True, help="where <key>_ff.npy and <key>_text.json go")
    parser.add_argument("--audio_source", choices=AUDIO_SOURCES, default="tts_aligned",
                        help="original: the clip's sound; tts: TTS of the chunk's text; tts_aligned: each word's "
                             "TTS stretched into its transcript timing (default, lines up with the lips)")
    parser.add_argument("--tts", choices=("espeak", "gtts"), default="espeak",
                        help="TTS back-end: espeak (offline, default) or gtts (needs the network)")
    parser.add_argument("--voice", default="en-us", help="espeak voice or gTTS language (default en-us)")
    parser.add_argument("--encoder", choices=("faceformer", "wav2vec2", "logmel"),
                        help="audio encoder (default: faceformer when --faceformer_ckpt is given, else wav2vec2; "
                             "logmel needs no weights: log-mel energies, the toy world's encoder)")
    parser.add_argument("--mel_bands", type=int, default=None,
                        help="mel bands of --encoder logmel (default 40)")
    parser.add_argument("--faceformer_ckpt", help="official FaceFormer checkpoint (vocaset.pth or biwi.pth)")
    parser.add_argument("--wav2vec2", default=DEFAULT_WAV2VEC2,
                        help=f"wav2vec2 hub id or folder for --encoder wav2vec2 (default {DEFAULT_WAV2VEC2})")
    parser.add_argument("--layers", default="-1",
                        help="wav2vec2 hidden states to keep: 0 = transformer input, k = layer k, -1 = last "
                             "(default); several as 1,2,...,12")
    parser.add_argument("--layer_reduce", choices=("concat", "mean"), default="concat",
                        help="how several --layers become one vector per frame (default concat)")
    parser.add_argument("--device", default="cpu", help="torch device for the encoder (default cpu)")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default="float32",
                        help="encoder precision (default float32)")
    parser.add_argument("--save_dtype", choices=("float32", "float16"), default="float32",
                        help="dtype of the saved _ff.npy (default float32)")
    parser.add_argument("--batch_size", type=int, default=8, help="chunks encoded together (default 8)")
    parser.add_argument("--shard", help="I/N: process shard I of N (default RANK/WORLD_SIZE, else 0/1)")
    parser.add_argument("--overwrite", action="store_true", help="redo chunks that are already complete")
    add_common_arguments(parser)
    return parser


def _absolute_if_local(name_or_path: str) -> str:
    """Record local weights by absolute path: the spec travels into checkpoints, and inference may run elsewhere."""
    local = Path(os.path.expanduser(name_or_path))
    return str(local.resolve()) if local.exists() else name_or_path


def encoder_spec(args: argparse.Namespace) -> AudioEncoderSpec:
    """The encoder the flags ask for."""
    encoder = args.encoder or ("faceformer" if args.faceformer_ckpt else "wav2vec2")
    layers = parse_layers(args.layers)
    if encoder == "faceformer":
        if not args.faceformer_ckpt:
            raise UserError("--encoder faceformer needs --faceformer_ckpt (an official vocaset.pth or biwi.pth)")
        if layers != [-1]:
            raise UserError("--layers applies to --encoder wav2vec2; FaceFormer features come from its last layer")
        return AudioEncoderSpec(encoder="faceformer", name_or_path=_absolute_if_local(args.faceformer_ckpt))
    if encoder == "logmel":
        if layers != [-1]:
            raise UserError("--layers applies to --encoder wav2vec2; logmel has one feature layer")
        return AudioEncoderSpec(encoder="logmel", name_or_path=LOGMEL_NAME, mel_bands=args.mel_bands)
    if args.mel_bands is not None:
        raise UserError("--mel_bands applies to --encoder logmel")
    return AudioEncoderSpec(encoder="wav2vec2", name_or_path=_absolute_if_local(args.wav2vec2), layers=layers,
                            layer_reduce=args.layer_reduce)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        shard_index, shard_count = parse_shard(args.shard)
        try:
            spec = encoder_spec(args)
        except ValueError as exc:  # pydantic's validation of the spec
            raise UserError(f"invalid encoder settings: {exc}") from None
        config = make_config(
            latents_dir=args.latents_dir, transcripts=args.transcripts, audio_out=args.audio_out,
            ff_out=args.ff_out, audio_source=args.audio_source, tts_backend=args.tts, voice=args.voice,
            encoder=spec, device=args.device, dtype=args.dtype, save_dtype=args.save_dtype,
            batch_size=args.batch_size, shard_index=shard_index, shard_count=shard_count, overwrite=args.overwrite,
        )
        summary = save_audio_latents(config)
        return 1 if summary.total and summary.failed and not summary.done and not summary.skipped_existing else 0

    return run_main(body, verbose=args.verbose)


if __name__ == "__main__":
    raise SystemExit(main())
