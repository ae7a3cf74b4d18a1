"""LTX-Video VAE latents: loading the VAE, chunking clips, encoding/decoding, normalisation (stage 2)."""

from avatar_gen.latents.chunks import Chunk, ClipReport, stream_chunks
from avatar_gen.latents.encode import LatentsConfig, RunSummary, chunk_key, encode_dataset
from avatar_gen.latents.sources import ClipSource, collect_clips, stable_shard
from avatar_gen.latents.vae import (DEFAULT_PRETRAINED, LoadedVae, decode_latents, denormalize_latents, encode_frames,
                                    frames_to_pixels, latent_shape, load_vae, normalize_latents, pixels_to_frames,
                                    vae_metadata)

__all__ = [
    "Chunk", "ClipReport", "ClipSource", "DEFAULT_PRETRAINED", "LatentsConfig", "LoadedVae", "RunSummary", "chunk_key",
    "collect_clips", "decode_latents", "denormalize_latents", "encode_dataset", "encode_frames", "frames_to_pixels",
    "latent_shape", "load_vae", "normalize_latents", "pixels_to_frames", "stable_shard",
    "stream_chunks", "vae_metadata",
]
