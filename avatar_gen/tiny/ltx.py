"""A tiny LTX-Video in the diffusers pipeline folder format (VAE, transformer, scheduler; no text encoder)."""

from __future__ import annotations

from pathlib import Path

import torch

from avatar_gen.utils.io import atomic_folder

TINY_LTX_FOLDER = "ltx-video"
# The tiny transformer's caption width: what the audio projection must output for it.
TINY_CAPTION_CHANNELS = 32


def tiny_ltx_components(seed: int = 0, patch_only_vae: bool = False, transformer_patch_size: int = 1) -> dict:
    """A tiny LTX-Video: VAE with the real 32x spatial / 8x temporal compression (patch 4, three
    2x2x2 down-samplings), 8 latent channels and timestep-conditioned decoding (as LTX-Video 0.9.1+, so the decode
    timestep and noise code runs), and a 2-layer transformer with head dim 16.

    ``patch_only_vae``: a VAE of another geometry instead, patch 4 and no down-sampling (4x spatial, no temporal
    compression, like the toy world's), for tests that no code assumes LTX's factors.
    ``transformer_patch_size``: latents per token side (LTX-Video's is 1; the toy world's 4): the transformer then
    takes 8 x patch^2 channels per token.
    """
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXVideoTransformer3DModel

    torch.manual_seed(seed)
    if patch_only_vae:
        vae = AutoencoderKLLTXVideo(
            in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8,), decoder_block_out_channels=(8,),
            layers_per_block=(1, 1), decoder_layers_per_block=(1, 1), spatio_temporal_scaling=(False,),
            decoder_spatio_temporal_scaling=(False,), decoder_inject_noise=(False, False), upsample_residual=(False,),
            upsample_factor=(1,), timestep_conditioning=False, patch_size=4, patch_size_t=1, encoder_causal=True,
            decoder_causal=False,
        )
    else:
        vae = AutoencoderKLLTXVideo(
            in_channels=3, out_channels=3, latent_channels=8,
            block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
            layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1),
            spatio_temporal_scaling=(True, True, True, False),
            decoder_spatio_temporal_scaling=(True, True, True, False),
            decoder_inject_noise=(False, False, False, False, False),
            upsample_residual=(False, False, False, False), upsample_factor=(1, 1, 1, 1),
            timestep_conditioning=True, patch_size=4, patch_size_t=1, encoder_causal=True, decoder_causal=False,
        )
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    # Real VAEs ship per-channel statistics so that normalised latents have unit scale; give the tiny
    # one statistics measured on smooth random video, so the same normalisation code is exercised.
    with torch.no_grad():
        smooth = torch.nn.functional.interpolate(torch.rand(2, 3, 9, 8, 8) * 2 - 1, size=(9, 64, 64), mode="trilinear")
        latents = vae.encode(smooth).latent_dist.mean
        vae.latents_mean.copy_(latents.mean(dim=(0, 2, 3, 4)))
        vae.latents_std.copy_(latents.std(dim=(0, 2, 3, 4)).clamp_min(1e-3))
    torch.manual_seed(seed + 1)
    token_channels = 8 * transformer_patch_size**2
    transformer = LTXVideoTransformer3DModel(
        in_channels=token_channels, out_channels=token_channels, patch_size=transformer_patch_size, patch_size_t=1,
        num_attention_heads=2, attention_head_dim=16, cross_attention_dim=32, num_layers=2,
        caption_channels=TINY_CAPTION_CHANNELS,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024,
        max_image_seq_len=4096, shift_terminal=0.1,
    )
    return {"vae": vae, "transformer": transformer, "scheduler": scheduler}


def write_tiny_ltx(out_dir: Path, seed: int = 0, patch_only_vae: bool = False, folder: str = TINY_LTX_FOLDER,
                   transformer_patch_size: int = 1) -> Path:
    """Write a diffusers ``LTXImageToVideoPipeline`` folder without text encoder/tokenizer at ``out_dir/folder``."""
    from diffusers import LTXImageToVideoPipeline

    components = tiny_ltx_components(seed, patch_only_vae, transformer_patch_size)
    pipeline = LTXImageToVideoPipeline(text_encoder=None, tokenizer=None, **components)
    target = Path(out_dir) / folder
    with atomic_folder(target) as staging:  # a killed run leaves no half model
        pipeline.save_pretrained(str(staging))
    return target
