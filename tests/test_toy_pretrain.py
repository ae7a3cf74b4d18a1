"""Toy pretraining pieces that decide what the latents hold (docs/toy.md): the per-frame VAE and the guard that keeps
latents of an older VAE from being reused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from avatar_gen.errors import ConfigError, UserError
from avatar_gen.toy.config import ToyPretrainConfig, ToyVaeSection
from avatar_gen.toy.pretrain import pretrain
from avatar_gen.toy.vae import build_toy_vae, fold_temporal_kernels, reconstruct

REPO = Path(__file__).resolve().parent.parent


def _random_vae():
    torch.manual_seed(0)
    vae = build_toy_vae(ToyVaeSection(encoder_channels=8, decoder_channels=8, latent_channels=4, crop=16)).eval()
    with torch.no_grad():  # a trained VAE's time taps differ from each other; a fresh one's do too, at random
        for parameter in vae.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return vae


def _clip(frames: int = 6) -> np.ndarray:
    """uint8 [T, 16, 16, 3] whose frames differ a lot (a square moving across)."""
    clip = np.full((frames, 16, 16, 3), 40, dtype=np.uint8)
    for index in range(frames):
        clip[index, 4:10, 2 * index:2 * index + 5] = 230
    return clip


def test_folded_vae_codes_each_frame_as_it_codes_that_frame_alone():
    vae, clip = _random_vae(), _clip()
    alone = np.stack([reconstruct(vae, clip[index:index + 1])[0] for index in range(len(clip))])
    unfolded = reconstruct(vae, clip)
    assert np.abs(unfolded.astype(int) - alone).max() > 2  # unfolded, neighbouring frames leak into each other

    assert fold_temporal_kernels(vae) > 0
    folded_alone = np.stack([reconstruct(vae, clip[index:index + 1])[0] for index in range(len(clip))])
    assert np.abs(folded_alone.astype(int) - alone).max() <= 1  # what single-frame training taught is kept
    assert np.abs(reconstruct(vae, clip).astype(int) - alone).max() <= 1  # and a clip is coded frame by frame


def _config(tmp_path: Path) -> ToyPretrainConfig:
    return ToyPretrainConfig(work_dir=tmp_path / "work", output=tmp_path / "out",
                             transformer={"base_config": REPO / "configs" / "toy-base.yaml"})


@pytest.mark.parametrize("marker", [None, '{"vae_sha256": "another"}', "[1, 2]"])
def test_latents_of_another_vae_are_refused_not_reused(tmp_path, marker):
    work = tmp_path / "work"
    (work / "vae").mkdir(parents=True)
    (work / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"new weights")
    latents = work / "synthetic" / "train" / "vae_latents"
    latents.mkdir(parents=True)
    (latents / "clip_0.pt").write_bytes(b"old latents")
    if marker is not None:
        (latents.parent / "vae_latents.vae.json").write_text(marker)
    with pytest.raises(UserError, match="latents of another VAE"):
        pretrain(_config(tmp_path), stages=["latents"])
    assert (latents / "clip_0.pt").read_bytes() == b"old latents"


def _per_frame_chunks(root: Path, speech_follows_mouth: bool, clips: int = 40, frames: int = 9) -> Path:
    """Chunks of a VAE without temporal compression: a 2x2 latent mouth that opens with the ground truth's mouth
    opening, noise elsewhere; speech features that carry the opening, or not."""
    from avatar_gen.utils.io import atomic_write_json

    rng = np.random.default_rng(0)
    vae = {"name_or_path": "toy", "revision": None, "dtype": "float32", "latents_mean": [0.0] * 4,
           "latents_std": [1.0] * 4, "scaling_factor": 1.0}
    for clip in range(clips):
        clip_id, opening = f"clip{clip:02d}", rng.random(frames)
        latents = np.repeat(rng.standard_normal((4, 1, 4, 4)), frames, axis=1)
        latents += 0.3 * rng.standard_normal(latents.shape)  # motion no speech explains
        latents[:, :, 2:4, 1:3] += 4.0 * opening[None, :, None, None]  # at most 94 % of the box explainable
        torch.save({"latents": torch.from_numpy(latents.astype(np.float32))}, root / "vae_latents" / f"{clip_id}_0.pt")
        atomic_write_json(root / "vae_latents" / f"{clip_id}_0.json", {
            "clip_id": clip_id, "chunk": 0, "start_frame": 0, "num_frames": frames, "fps": 25.0, "height": 16,
            "width": 16, "latent_shape": [4, frames, 4, 4], "vae": vae})
        features = rng.standard_normal((frames, 3)).astype(np.float32)
        if speech_follows_mouth:
            features[:, 0] = opening
        np.save(root / "audio_latents" / f"{clip_id}_0_ff.npy", features)
        atomic_write_json(root / "audio_latents" / f"{clip_id}_0_text.json", {
            "text": "toy", "words": [], "audio_source": "toy", "tts": None, "fps": 25.0, "num_frames": frames,
            "encoder": {"encoder": "logmel", "name_or_path": "logmel", "feature_dim": 3}})
        atomic_write_json(root / "ground_truth" / f"{clip_id}.json", {
            "clip_id": clip_id, "width": 16, "height": 16, "mouth": {"x": 0.5, "y": 0.75}, "head_radius": 4.0,
            "mouth_open": opening.tolist()})
    return root


@pytest.mark.parametrize("speech_follows_mouth", [True, False])
def test_speech_ceiling_finds_what_the_speech_explains_and_where(tmp_path, speech_follows_mouth):
    from avatar_gen.toy.ceiling import speech_ceiling

    for folder in ("vae_latents", "audio_latents", "ground_truth"):
        (tmp_path / folder).mkdir()
    report = speech_ceiling(_per_frame_chunks(tmp_path, speech_follows_mouth), feature_dim=3, held_out_fraction=0.3,
                            ridge=1.0)
    assert report["scored_clips"] > 0 and report["fit_clips"] > 0 and report["mouth_box_share"] == 4 / 16
    assert report["mouth_opening"]["share_explained_in_mouth_box"] > 0.8  # the box is where the mouth is
    assert report["mouth_opening"]["share_explained"] < report["mouth_opening"]["share_explained_in_mouth_box"]
    speech = report["speech"]["share_explained_in_mouth_box"]
    assert (speech > 0.8) if speech_follows_mouth else (speech < 0.1), speech
    # The mouth opens frame by frame here: the frame's own features carry it; an equal-weight average over the +-2
    # window (what position-blind cross-attention hands a token) blurs it with four neighbours' openings.
    own = report["speech_own_frame"]["share_explained_in_mouth_box"]
    average = report["speech_window_average"]["share_explained_in_mouth_box"]
    if speech_follows_mouth:
        assert own > 0.8 and average < own - 0.2, (own, average)
    else:
        assert own < 0.1 and average < 0.1, (own, average)


def test_trained_vae_comes_back_folded_and_resumes(tmp_path, caplog):
    from diffusers.models.autoencoders.autoencoder_kl_ltx import LTXVideoCausalConv3d

    from avatar_gen.toy.vae import ClipFrames, train_toy_vae

    clips = [ClipFrames(clip_id=f"c{index}", frames=_clip(4), mouth_x=8.0, mouth_y=10.0, head_radius=6.0)
             for index in range(2)]
    settings = ToyVaeSection(encoder_channels=8, decoder_channels=8, latent_channels=4, crop=16, steps=2,
                             batch_size=2, warmup_steps=1, checkpoint_every=1)
    with caplog.at_level("INFO", logger="avatar_gen.toy.vae"):
        vae = train_toy_vae(settings, clips, tmp_path, seed=0, held_out=clips[:1])
    assert "held-out PSNR" in caplog.text and (tmp_path / "training_state.pt").is_file()
    for module in vae.modules():
        if isinstance(module, LTXVideoCausalConv3d) and module.kernel_size[0] > 1:
            own = module.kernel_size[0] - 1 if module.is_causal else (module.kernel_size[0] - 1) // 2
            others = [tap for tap in range(module.kernel_size[0]) if tap != own]
            assert float(module.conv.weight[:, :, others].abs().max()) == 0.0
    caplog.clear()
    with caplog.at_level("INFO", logger="avatar_gen.toy.vae"):
        train_toy_vae(settings.model_copy(update={"steps": 3}), clips, tmp_path, seed=0)
    assert "resuming at step 2 of 3" in caplog.text


class _RecordingTrainer:
    """Stands in for the project's trainer in the base stage: records each run and "trains" by adding 1 to the
    transformer's output bias, saved as the run's checkpoint (what the next phase and ``assemble`` read)."""

    runs: list = []

    def __init__(self, config):
        self.config = config

    def train(self):
        from avatar_gen.model.checkpoint import CHECKPOINT_METADATA, load_base_transformer

        self.runs.append((Path(self.config.output_dir).name, Path(self.config.model.pretrained).name,
                          self.config.optimization.learning_rate))
        transformer = load_base_transformer(Path(self.config.model.pretrained) / "transformer", None, torch.float32)
        with torch.no_grad():
            transformer.proj_out.bias.add_(1.0)
        step = Path(self.config.output_dir) / "checkpoints" / "step_000001"
        transformer.save_pretrained(step / "transformer")
        (step / CHECKPOINT_METADATA).write_text("{}")


def test_continue_phases_start_from_the_previous_run_and_resume_without_repeating_it(tmp_path, monkeypatch):
    import avatar_gen.training.trainer as trainer_module
    from avatar_gen.model.checkpoint import load_base_transformer

    config = ToyPretrainConfig(
        work_dir=tmp_path / "work", output=tmp_path / "out",
        transformer={"base_config": REPO / "configs" / "toy-base.yaml", "num_layers": 1, "num_attention_heads": 1,
                     "attention_head_dim": 16, "caption_channels": 8, "patch_size": 1,
                     "continue_phases": [["optimization.learning_rate=2.5e-4"]]})
    _random_vae().save_pretrained(tmp_path / "work" / "vae")
    monkeypatch.setattr(trainer_module, "Trainer", _RecordingTrainer)
    monkeypatch.setattr(_RecordingTrainer, "runs", [])

    pretrain(config, stages=["base", "assemble"])
    assert _RecordingTrainer.runs == [("base-run", "init-pipeline", 1e-3), ("base-run-2", "init-pipeline-2", 2.5e-4)]

    def bias(folder: Path) -> torch.Tensor:
        return load_base_transformer(folder / "transformer", None, torch.float32).proj_out.bias.detach()

    fresh, second_start = bias(tmp_path / "work" / "init-pipeline"), bias(tmp_path / "work" / "init-pipeline-2")
    assert torch.allclose(second_start, fresh + 1)  # phase 2 starts where phase 1 ended
    assert torch.allclose(bias(tmp_path / "out"), fresh + 2)  # the pipeline holds the last phase's weights

    _RecordingTrainer.runs.clear()  # a re-run: phase 1 is finished (phase 2's start exists), phase 2 resumes
    pretrain(config, stages=["base"])
    assert [run[0] for run in _RecordingTrainer.runs] == ["base-run-2"]

    mistyped = config.model_copy(update={"transformer": config.transformer.model_copy(
        update={"continue_phases": [["optimization.learning_rat=1e-4"]]})})
    _RecordingTrainer.runs.clear()  # a mistyped later phase is refused before any phase trains
    with pytest.raises(ConfigError, match="learning_rat"):
        pretrain(mistyped, stages=["base"])
    assert _RecordingTrainer.runs == []


def test_a_transformer_narrower_than_its_tokens_is_refused():
    """LTX's transformer has no skip from input to output: with a width below a token's numbers, the sampler's
    initial noise outside the output projection's span is never removed (the first toy base: width 128 for 256)."""
    from pydantic import ValidationError

    transformer = {"base_config": REPO / "configs" / "toy-base.yaml", "patch_size": 4, "num_attention_heads": 4}
    with pytest.raises(ValidationError, match=r"width \(4 heads x 32 = 128\) is narrower than its tokens"):
        ToyPretrainConfig(work_dir=Path("w"), output=Path("o"), transformer={**transformer, "attention_head_dim": 32})
    ToyPretrainConfig(work_dir=Path("w"), output=Path("o"), transformer={**transformer, "attention_head_dim": 64})
