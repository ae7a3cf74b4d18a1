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

from avatar_gen.audio.features import LOGMEL_NAME, AudioEncoderSpec
from avatar_gen.audio.pipeline import AUDIO_SOURCES, AudioLatentsConfig, parse_layers, save_audio_latents
from avatar_gen.config import add_field_flag, config_from_flags
from avatar_gen.errors import UserError
from avatar_gen.utils.cli import add_common_arguments, parse_shard, run_main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Make each chunk's speech (original, TTS or word-aligned TTS) and per-frame audio features.")

    def flag(name: str, help: str, model: type = AudioLatentsConfig, **kwargs) -> None:
        add_field_flag(parser, model, name, help, **kwargs)

    flag("latents_dir", "the VAE stage's folder of <clip>_<k>.json", type=Path, required=True)
    flag("transcripts", "video_transcripts.json (required for the tts sources)", type=Path)
    flag("audio_out", "where <key>.wav (16 kHz mono) go", type=Path, required=True)
    flag("ff_out", "where <key>_ff.npy and <key>_text.json go", type=Path, required=True)
    flag("audio_source", "original: the clip's sound; tts: TTS of the chunk's text; tts_aligned: each word's TTS "
         "stretched into its transcript timing (lines up with the lips)", choices=AUDIO_SOURCES)
    flag("tts_backend", "TTS back-end: espeak (offline) or gtts (needs the network)", flag="--tts",
         choices=("espeak", "gtts"))
    flag("voice", "espeak voice or gTTS language")
    parser.add_argument("--encoder", choices=("faceformer", "wav2vec2", "logmel"),
                        help="audio encoder (default: faceformer when --faceformer_ckpt is given, else wav2vec2; "
                             "logmel needs no weights: log-mel energies, the toy world's encoder)")
    flag("mel_bands", "mel bands of --encoder logmel (default 40)", model=AudioEncoderSpec, type=int)
    parser.add_argument("--faceformer_ckpt", help="official FaceFormer checkpoint (vocaset.pth or biwi.pth)")
    flag("name_or_path", "wav2vec2 hub id or folder for --encoder wav2vec2", model=AudioEncoderSpec, flag="--wav2vec2")
    parser.add_argument("--layers", help="wav2vec2 hidden states to keep: 0 = transformer input, k = layer k, "
                                         "-1 = last (default); several as 1,2,...,12")
    flag("layer_reduce", "how several --layers become one vector per frame", model=AudioEncoderSpec,
         choices=("concat", "mean"))
    flag("device", "torch device for the encoder")
    flag("dtype", "encoder precision", choices=("float32", "float16", "bfloat16"))
    flag("save_dtype", "dtype of the saved _ff.npy", choices=("float32", "float16"))
    flag("batch_size", "clips encoded together (those whose speech has one length)", type=int)
    parser.add_argument("--shard", help="I/N: process shard I of N (default RANK/WORLD_SIZE, else 0/1)")
    flag("overwrite", "redo chunks that are already complete", action="store_true")
    add_common_arguments(parser)
    return parser


def _absolute_if_local(name_or_path: str | None) -> str | None:
    """Record local weights by absolute path: the spec travels into checkpoints, and inference may run elsewhere."""
    if name_or_path is None:
        return None
    local = Path(os.path.expanduser(name_or_path))
    return str(local.resolve()) if local.exists() else name_or_path


def encoder_spec(args: argparse.Namespace) -> AudioEncoderSpec:
    """The encoder the flags ask for."""
    encoder = args.encoder or ("faceformer" if args.faceformer_ckpt else "wav2vec2")
    layers = None if args.layers is None else parse_layers(args.layers)
    if encoder == "faceformer":
        if not args.faceformer_ckpt:
            raise UserError("--encoder faceformer needs --faceformer_ckpt (an official vocaset.pth or biwi.pth)")
        if layers not in (None, [-1]):
            raise UserError("--layers applies to --encoder wav2vec2; FaceFormer features come from its last layer")
        return AudioEncoderSpec(encoder="faceformer", name_or_path=_absolute_if_local(args.faceformer_ckpt))
    if encoder == "logmel":
        if layers not in (None, [-1]):
            raise UserError("--layers applies to --encoder wav2vec2; logmel has one feature layer")
        return config_from_flags(AudioEncoderSpec, args, encoder="logmel", name_or_path=LOGMEL_NAME, layers=None)
    return config_from_flags(AudioEncoderSpec, args, flags={"name_or_path": "--wav2vec2"}, encoder="wav2vec2",
                             name_or_path=_absolute_if_local(args.name_or_path), layers=layers)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        shard_index, shard_count = parse_shard(args.shard)
        config = config_from_flags(AudioLatentsConfig, args, flags={"tts_backend": "--tts"}, encoder=encoder_spec(args),
                                   shard_index=shard_index, shard_count=shard_count)
        summary = save_audio_latents(config)
        return 1 if summary.total and summary.failed and not summary.done and not summary.skipped_existing else 0

    return run_main(body, verbose=args.verbose)


if __name__ == "__main__":
    raise SystemExit(main())
