"""The tiny model zoo is written in the real diffusers formats and loads through from_pretrained."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from avatar_gen.tiny import TINY_CAPTION_CHANNELS, TINY_LTX_FOLDER, main


def test_tiny_vae_loads_and_compresses_32x_8x(tiny_zoo):
    from diffusers import AutoencoderKLLTXVideo

    vae = AutoencoderKLLTXVideo.from_pretrained(tiny_zoo / TINY_LTX_FOLDER, subfolder="vae")
    with torch.no_grad():
        latents = vae.encode(torch.randn(1, 3, 9, 64, 64)).latent_dist.mode()
    assert latents.shape == (1, 8, (9 - 1) // 8 + 1, 64 // 32, 64 // 32)
    assert torch.all(vae.latents_std > 0)


def test_tiny_pipeline_folder_loads_without_text_encoder(tiny_zoo):
    from diffusers import LTXImageToVideoPipeline

    pipeline = LTXImageToVideoPipeline.from_pretrained(tiny_zoo / TINY_LTX_FOLDER, text_encoder=None, tokenizer=None)
    assert pipeline.transformer.config.caption_channels == TINY_CAPTION_CHANNELS
    index = json.loads((tiny_zoo / TINY_LTX_FOLDER / "model_index.json").read_text())
    assert index["_class_name"] == "LTXImageToVideoPipeline"


def test_same_seed_gives_same_weights(tmp_path):
    from avatar_gen.tiny import tiny_ltx_components

    first = tiny_ltx_components(seed=3)["transformer"].state_dict()
    second = tiny_ltx_components(seed=3)["transformer"].state_dict()
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_unknown_model_name_is_one_line_error(capsys):
    assert main(["--out", "unused", "--only", "no-such-model"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown tiny model") and err.count("\n") == 1


def test_cli_writes_the_zoo(tmp_path):
    result = subprocess.run([sys.executable, "-m", "avatar_gen.tiny", "--out", str(tmp_path),
                             "--only", TINY_LTX_FOLDER],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / TINY_LTX_FOLDER / "vae" / "diffusion_pytorch_model.safetensors").is_file()
