"""Unit tests of avatar_gen.model: audio projection, flow maths, packing, alignment windows, checkpoint files."""

from __future__ import annotations

import os

import pytest
import torch

from avatar_gen.errors import UserError
from avatar_gen.model.alignment import encoder_attention_mask, latent_frame_audio_mask, latent_frame_pixel_window
from avatar_gen.model.audio_projection import AudioProjection, AudioProjectionConfig
from avatar_gen.model.checkpoint import (
    CHECKPOINT_METADATA, LATEST_LINK, finalize_checkpoint, list_checkpoints, resolve_checkpoint, staging_folder)
from avatar_gen.model.flow import (
    first_frame_token_mask, flow_loss, make_flow_inputs, pack_latents, sample_sigmas, shift_sigmas, token_count_shift,
    unpack_latents)


def test_audio_projection_shapes_positions_and_round_trip(tmp_path):
    config = AudioProjectionConfig(feature_dim=6, caption_channels=32, tokens_per_frame=2, max_tokens=40, hidden_dim=16)
    torch.manual_seed(0)
    projection = AudioProjection(config)
    features = torch.zeros(2, 17, 6)
    tokens = projection(features)
    assert tokens.shape == (2, 34, 32)
    assert projection.token_frame_index(17).tolist()[:6] == [0, 0, 1, 1, 2, 2]
    # Identical features in every frame still give different tokens per frame: the frame embedding.
    assert not torch.allclose(tokens[0, 0], tokens[0, 2])
    projection.save(tmp_path)
    loaded = AudioProjection.load(tmp_path)
    assert torch.equal(loaded(features), tokens)
    with pytest.raises(UserError, match="max_tokens"):
        projection(torch.zeros(1, 21, 6))
    with pytest.raises(UserError, match=r"\[batch, frames, 6\]"):
        projection(torch.zeros(1, 5, 7))


def test_audio_projection_without_input_norm_keeps_the_level_of_a_frame():
    """A per-frame LayerNorm maps features x and x + c to the same tokens: log-mel loudness (a shift of every band)
    would be lost. ``input_norm: none`` keeps it."""
    features = torch.randn(1, 5, 16)
    louder = features + 2.0
    for norm, same in (("layer", True), ("none", False)):
        torch.manual_seed(0)
        projection = AudioProjection(AudioProjectionConfig(feature_dim=16, caption_channels=32, hidden_dim=24,
                                                           input_norm=norm))
        with torch.no_grad():
            assert torch.allclose(projection(features), projection(louder), atol=1e-5) == same


def test_audio_projection_load_rejects_other_size(tmp_path):
    AudioProjection(AudioProjectionConfig(feature_dim=6, caption_channels=32, hidden_dim=16)).save(tmp_path)
    other = AudioProjectionConfig(feature_dim=6, caption_channels=32, hidden_dim=8)
    (tmp_path / "audio_projection.json").write_text(other.model_dump_json())
    with pytest.raises(UserError, match="projection size differs"):
        AudioProjection.load(tmp_path)


def test_shift_grows_with_token_count_and_sigmas_in_range():
    assert token_count_shift(1024) == pytest.approx(torch.tensor(0.95).exp().item())
    assert token_count_shift(4096) > token_count_shift(1024) > token_count_shift(64)
    sigmas = torch.linspace(0.01, 0.99, 50)
    assert torch.all(shift_sigmas(sigmas, 3.0) > sigmas)
    drawn = sample_sigmas(1000, 2.0, generator=torch.Generator().manual_seed(0))
    assert drawn.min() > 0 and drawn.max() < 1 and drawn.mean() > 0.55  # shift 2 pushes towards noise


def test_flow_inputs_keep_the_conditioning_frame_clean():
    clean, noise = torch.randn(2, 12, 8), torch.randn(2, 12, 8)
    mask = first_frame_token_mask(2, 3, 4, torch.tensor([True, False]))
    inputs = make_flow_inputs(clean, noise, torch.tensor([0.7, 0.3]), mask)
    assert torch.equal(inputs.noisy[0, :4], clean[0, :4])
    assert torch.allclose(inputs.noisy[0, 4:], 0.3 * clean[0, 4:] + 0.7 * noise[0, 4:])
    assert torch.allclose(inputs.noisy[1], 0.7 * clean[1] + 0.3 * noise[1])
    assert inputs.timestep[0, :4].eq(0).all() and torch.allclose(inputs.timestep[0, 4:], torch.tensor(700.0))
    assert torch.allclose(inputs.timestep[1], torch.tensor(300.0))
    perfect = inputs.target.clone()
    perfect[0, :4] += 100.0  # errors on conditioning tokens do not count
    assert flow_loss(perfect, inputs).item() == 0.0


@pytest.mark.parametrize("patch, patch_t", [(1, 1), (2, 1)])
def test_pack_unpack_round_trip(patch, patch_t):
    latents = torch.randn(2, 8, 3, 4, 6)
    tokens = pack_latents(latents, patch, patch_t)
    assert tokens.shape == (2, 3 * (4 // patch) * (6 // patch), 8 * patch * patch)
    assert torch.equal(unpack_latents(tokens, 3, 4 // patch, 6 // patch, patch, patch_t), latents)


def test_causal_vae_windows_and_masks():
    assert [latent_frame_pixel_window(f) for f in range(3)] == [(0, 0), (1, 8), (9, 16)]
    frames = torch.arange(17)
    mask = latent_frame_audio_mask(3, frames, margin_frames=1)
    assert mask[0].nonzero().flatten().tolist() == [0, 1]
    assert mask[2].nonzero().flatten().tolist() == list(range(8, 17))
    local = encoder_attention_mask("local", 2, 3, 4, frames, margin_frames=0)
    assert local.shape == (2, 12, 17) and local.dtype == torch.bool
    assert local[0, 4].nonzero().flatten().tolist() == list(range(1, 9))  # token 4 = latent frame 1
    assert encoder_attention_mask("global", 2, 3, 4, frames).shape == (2, 17)


def _fake_checkpoint(folder, step, content="weights"):
    staging = staging_folder(folder, step)
    (staging / CHECKPOINT_METADATA).write_text('{"format_version": 1}')
    (staging / "content").write_text(content)
    return staging


class _Killed(BaseException):
    """Stands for SIGKILL at one point of a checkpoint's finalisation."""


def test_resaving_a_step_never_leaves_latest_dangling(tmp_path, monkeypatch):
    """Re-saving an existing step (a resumed run that stops where it started), killed after any one filesystem
    operation: ``latest`` always names a complete checkpoint, the old or the new one."""
    from pathlib import Path

    from avatar_gen.model import checkpoint
    from avatar_gen.utils import io
    from avatar_gen.utils.io import exchange_paths

    probe_a, probe_b = tmp_path / "probe_a", tmp_path / "probe_b"
    probe_a.mkdir()
    probe_b.mkdir()
    if not exchange_paths(probe_a, probe_b):
        pytest.skip("this filesystem cannot exchange two paths atomically")
    real = {"exchange_paths": io.exchange_paths, "symlink": os.symlink, "replace": os.replace,
            "rmtree": checkpoint.shutil.rmtree, "rename": Path.rename}
    for kill_after in range(12):
        folder = tmp_path / f"run{kill_after}"
        finalize_checkpoint(folder, _fake_checkpoint(folder, 10, "old"), 10, keep_last=2)
        staging = _fake_checkpoint(folder, 10, "new")
        calls: list[str] = []

        def counted(name, calls=calls, kill_after=kill_after):
            def call(*args, **kwargs):
                if len(calls) == kill_after:
                    raise _Killed(name)
                calls.append(name)
                return real[name](*args, **kwargs)
            return call

        with monkeypatch.context() as patch:
            patch.setattr(io, "exchange_paths", counted("exchange_paths"))
            patch.setattr(checkpoint.os, "symlink", counted("symlink"))
            patch.setattr(checkpoint.os, "replace", counted("replace"))
            patch.setattr(checkpoint.shutil, "rmtree", counted("rmtree"))
            patch.setattr(Path, "rename", counted("rename"))
            try:
                finalize_checkpoint(folder, staging, 10, keep_last=2)
                finished = True
            except _Killed:
                finished = False
        latest = folder / LATEST_LINK
        assert (latest / CHECKPOINT_METADATA).is_file(), f"latest dangles after {calls}"
        assert (latest / "content").read_text() in ("old", "new")
        if finished:
            assert (latest / "content").read_text() == "new" and len(list(folder.iterdir())) == 2
            break
    else:
        pytest.fail("finalize_checkpoint never finished")


def test_checkpoint_rename_latest_and_pruning(tmp_path):
    for step in (10, 20, 30):
        finalize_checkpoint(tmp_path, _fake_checkpoint(tmp_path, step), step, keep_last=2)
    assert [step for step, _ in list_checkpoints(tmp_path)] == [20, 30]
    assert os.readlink(tmp_path / LATEST_LINK) == "step_000030"
    # A run killed while writing step 40 leaves a hidden staging folder: latest still names step 30.
    (staging_folder(tmp_path, 40) / "half_written.bin").write_bytes(b"\0")
    assert resolve_checkpoint(tmp_path).name == "step_000030"
    assert resolve_checkpoint(tmp_path / LATEST_LINK).name == "step_000030"
    # The next attempt at step 40 clears the leftover and completes.
    finalize_checkpoint(tmp_path, _fake_checkpoint(tmp_path, 40), 40, keep_last=2)
    assert not (tmp_path / "step_000040" / "half_written.bin").exists()
    assert resolve_checkpoint(tmp_path).name == "step_000040"
    with pytest.raises(UserError, match="not found"):
        resolve_checkpoint(tmp_path / "nope")


@pytest.mark.parametrize(("recorded", "expected"), [
    ("../../base", "BASE"), ("./inside", "INSIDE"), ("Lightricks/LTX-Video", "Lightricks/LTX-Video"),
    ("/abs/base", "/abs/base"),
])
def test_checkpoint_names_its_base_relative_to_itself_only_with_dot_prefixes(tmp_path, recorded, expected):
    """A checkpoint that travels with its base (the committed toy world) names it as ./ or ../ from its own folder;
    a hub id such as org/name, which looks relative too, and an absolute folder stay as recorded."""
    from avatar_gen.model.checkpoint import read_checkpoint_metadata
    from avatar_gen.utils.io import atomic_write_json

    folder = tmp_path / "run" / "step_000001"
    folder.mkdir(parents=True)
    atomic_write_json(folder / CHECKPOINT_METADATA, {"format_version": 1, "step": 1,
                                                     "base_model": {"pretrained": recorded, "revision": None}})
    resolved = {"BASE": str(tmp_path / "base"), "INSIDE": str(folder / "inside")}.get(expected, expected)
    assert read_checkpoint_metadata(folder)["base_model"]["pretrained"] == resolved


def test_a_uniform_share_of_sigmas_reaches_the_low_noise_levels():
    """Shift 3 almost never draws a sigma below 0.1; a uniform share of 0.3 puts ~3 % of the samples there, and a
    share of 0 leaves the random stream exactly as before (runs resume and reproduce)."""
    plain = sample_sigmas(20000, 3.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(plain, sample_sigmas(20000, 3.0, generator=torch.Generator().manual_seed(0),
                                            uniform_fraction=0.0))
    assert (plain < 0.1).float().mean() < 0.002
    mixed = sample_sigmas(20000, 3.0, generator=torch.Generator().manual_seed(0), uniform_fraction=0.3)
    assert 0.025 < (mixed < 0.1).float().mean() < 0.035
    assert mixed.min() >= 0 and mixed.max() < 1
    uniform = sample_sigmas(20000, 3.0, generator=torch.Generator().manual_seed(0), uniform_fraction=1.0)
    assert uniform.mean() == pytest.approx(0.5, abs=0.01) and (uniform < 0.1).float().mean() == pytest.approx(0.1,
                                                                                                               abs=0.01)
