"""Training on CPU with the tiny LTX-Video zoo and toy latent/audio data: config, data, resume, LoRA, masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar_gen.config import validate_config
from avatar_gen.errors import ConfigError, UserError
from avatar_gen.model.checkpoint import load_avatar_checkpoint, resolve_checkpoint
from avatar_gen.training.config import TrainConfig, load_train_config
from avatar_gen.training.dataset import ResumableShardSampler, held_out_score, scan_chunks, split_clips
from avatar_gen.training.toydata import write_toy_chunks
from avatar_gen.training.trainer import NonFiniteLossError, Trainer

REPO = Path(__file__).resolve().parent.parent
FEATURE_DIM = 4


@pytest.fixture(autouse=True)
def one_thread():
    """Two shared cores: torch's thread pool fighting other processes makes tiny steps 30x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> Path:
    return write_toy_chunks(tmp_path_factory.mktemp("toy"), num_clips=6, chunks_per_clip=2, feature_dim=FEATURE_DIM)


def make_config(output_dir: Path, tiny_zoo: Path, data_root: Path, **sections) -> TrainConfig:
    """A tiny CPU config; ``sections`` update the defaults section by section."""
    data = {
        "output_dir": str(output_dir),
        "model": {"pretrained": str(tiny_zoo / "ltx-video"), "dtype": "float32"},
        "lora": {"train_mode": "full", "rank": 4, "alpha": 4},
        "audio": {"feature_dim": FEATURE_DIM, "hidden_dim": 32},
        "data": {"vae_latents": str(data_root / "vae_latents"), "audio_latents": str(data_root / "audio_latents"),
                 "held_out_fraction": 0.2, "batch_size": 2, "num_workers": 0},
        "flow": {"shift": 1.0},
        "conditioning": {"first_frame_probability": 1.0},
        "optimization": {"learning_rate": 2e-3, "weight_decay": 0.0, "warmup_steps": 2, "max_steps": 6, "seed": 0},
        "acceleration": {"device": "cpu", "mixed_precision": "fp32", "gradient_checkpointing": False},
        "checkpoints": {"every_n_steps": 3, "keep_last": 2},
        "validation": {"every_n_steps": None, "held_out_chunks": 2, "num_draws": 2},
        "logging": {"log_every_n_steps": 1, "tensorboard": False},
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            data.setdefault(section, {}).update(values)
        else:
            data[section] = values
    return validate_config(TrainConfig, data)


def trainable_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {name: parameter.detach().clone() for name, parameter in trainer.model.named_parameters()
            if parameter.requires_grad}


# ------------------------------------------------------------------------------------------ configs and data

def test_shipped_configs_load_with_paths_relative_to_the_file():
    real = load_train_config(REPO / "configs" / "train-avatars.yaml")
    assert real.model.pretrained == "Lightricks/LTX-Video" and real.lora.train_mode == "lora"
    assert real.lora.target_modules == ["attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0"]
    assert real.audio.max_tokens <= 128 and real.acceleration.mixed_precision == "bf16"
    assert real.distributed.deepspeed_config == REPO / "configs" / "deepspeed" / "zero2.json"
    assert json.loads(real.distributed.deepspeed_config.read_text())["zero_optimization"]["stage"] == 2
    assert real.data.vae_latents == REPO / "data" / "vae_latents"
    tiny = load_train_config(REPO / "configs" / "train-tiny.yaml")
    assert tiny.model.pretrained == str(REPO / "models" / "tiny" / "ltx-video")
    assert tiny.lora.train_mode == "full" and tiny.acceleration.device == "cpu"


def test_config_errors_are_one_clear_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("output_dir: out\nmodel: {pretrained: x, dtyp: float32}\n")
    with pytest.raises(ConfigError, match=r"model.dtyp: unknown key"):
        load_train_config(tmp_path / "bad.yaml")
    base = {"output_dir": "o", "model": {"pretrained": "x"}, "data": {"vae_latents": "v", "audio_latents": "a"},
            "optimization": {"max_steps": 1}}
    with pytest.raises(ConfigError, match="global alignment needs frame-position"):
        validate_config(TrainConfig, dict(base, audio={"feature_dim": 4, "position_embedding": "none",
                                                        "alignment": "global"}))
    with pytest.raises(ConfigError, match="feature_dim is required with conditioning: features"):
        validate_config(TrainConfig, dict(base, audio={}))
    with pytest.raises(ConfigError, match="audio_dropout needs audio.conditioning: features"):
        validate_config(TrainConfig, dict(base, audio={"conditioning": "fixed_caption"},
                                          conditioning={"audio_dropout": 0.1}))
    with pytest.raises(ConfigError, match="deepspeed_config"):
        validate_config(TrainConfig, dict(base, audio={"feature_dim": 4}, distributed={"backend": "deepspeed"}))
    with pytest.raises(ConfigError, match="mouth_loss_weight > 1 needs data.mouth_boxes"):
        validate_config(TrainConfig, dict(base, audio={"feature_dim": 4}, flow={"mouth_loss_weight": 4}))


def test_dataset_pairs_and_fails_loudly(tmp_path, toy_root):
    records = scan_chunks(toy_root / "vae_latents", toy_root / "audio_latents", FEATURE_DIM)
    assert len(records) == 12 and records[0].audio_encoder["feature_dim"] == FEATURE_DIM
    with pytest.raises(UserError, match=r"feature width != audio.feature_dim=5 .*toyclip000_0"):
        scan_chunks(toy_root / "vae_latents", toy_root / "audio_latents", 5)
    broken = write_toy_chunks(tmp_path / "broken", num_clips=3, feature_dim=FEATURE_DIM)
    np.save(broken / "audio_latents" / "toyclip001_0_ff.npy", np.zeros((30, FEATURE_DIM), np.float32))
    with pytest.raises(UserError,
                       match=r"audio rows != chunk num_frames .*toyclip001_0 \(audio \[30, 4\], chunk has 33"):
        scan_chunks(broken / "vae_latents", broken / "audio_latents", FEATURE_DIM)
    (broken / "audio_latents" / "toyclip001_0_ff.npy").unlink()
    with pytest.raises(UserError, match=r"1 chunk\(s\) .* have no _ff.npy .*toyclip001_0"):
        scan_chunks(broken / "vae_latents", broken / "audio_latents", FEATURE_DIM)
    assert len(scan_chunks(broken / "vae_latents", broken / "audio_latents", FEATURE_DIM,
                           allow_missing_audio=True)) == 2


def test_held_out_split_is_by_clip_and_stable():
    clips = [f"clip{i}" for i in range(200)]
    train, held_out = split_clips(clips, 0.1)
    assert 8 <= len(held_out) <= 35 and not set(train) & set(held_out) and len(train) + len(held_out) == 200
    new_held_out = {"new_clip"} if held_out_score("new_clip") < 0.1 else set()
    assert split_clips(clips + ["new_clip"], 0.1)[1] == sorted(set(held_out) | new_held_out)
    assert len(split_clips(["a", "b"], 0.01)[1]) == 1  # a fraction > 0 always holds out something


def test_sampler_is_disjoint_per_rank_deterministic_and_resumable():
    ranks = [ResumableShardSampler(10, rank, 2, seed=3) for rank in range(2)]
    for sampler in ranks:
        sampler.set_epoch(1)
    first, second = list(ranks[0]), list(ranks[1])
    assert len(first) == len(second) == 5 and not set(first) & set(second)
    assert list(ranks[0]) == first  # same epoch, same order
    ranks[0].set_epoch(2)
    assert list(ranks[0]) != first
    ranks[0].set_epoch(1)
    ranks[0].set_position(3)
    assert list(ranks[0]) == first[3:]


def test_mismatched_latents_and_caption_width_are_clear_errors(tmp_path, tiny_zoo, toy_root):
    with pytest.raises(UserError, match="caption_channels=16 but the transformer's caption_channels is 32"):
        Trainer(make_config(tmp_path / "a", tiny_zoo, toy_root, audio={"caption_channels": 16}))
    other_vae = write_toy_chunks(tmp_path / "c16", num_clips=3, latent_channels=16, feature_dim=FEATURE_DIM)
    with pytest.raises(UserError, match="latents have 16 channels, the transformer expects in_channels=8"):
        Trainer(make_config(tmp_path / "b", tiny_zoo, other_vae))


# ------------------------------------------------------------------------------------------ training runs

def test_resume_continues_exactly(tmp_path, tiny_zoo, toy_root):
    """6 steps straight == 3 steps, stop, resume: parameters (incl. LoRA dropout RNG, Adam state, data order)."""
    sections = {"lora": {"train_mode": "lora", "dropout": 0.1}, "optimization": {"max_steps": 6, "learning_rate": 5e-3}}
    straight = Trainer(make_config(tmp_path / "straight", tiny_zoo, toy_root, **sections))
    straight_result = straight.train()
    first_half = Trainer(make_config(tmp_path / "split", tiny_zoo, toy_root, **sections))
    first_half.train(stop_after_step=3)
    resumed = Trainer(make_config(tmp_path / "split", tiny_zoo, toy_root, checkpoints={"resume": "latest"}, **sections))
    assert resumed.step == 3
    resumed_result = resumed.train()
    assert resumed_result.step == straight_result.step == 6
    expected, actual = trainable_state(straight), trainable_state(resumed)
    assert expected.keys() == actual.keys() and any(".lora_" in name for name in expected)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], atol=1e-6, rtol=0, msg=name)
    steps = [row["step"] for row in resumed_result.history if row["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]  # the metrics file has no duplicated or lost rows
    split_file = json.loads((tmp_path / "split" / "data_split.json").read_text())
    assert split_file["held_out_clips"] and not set(split_file["held_out_clips"]) & set(split_file["train_clips"])
    assert (tmp_path / "split" / "config.yaml").is_file()
    with pytest.raises(UserError, match="audio projection .* differs from this config"):
        Trainer(make_config(tmp_path / "split", tiny_zoo, toy_root, checkpoints={"resume": "latest"},
                            audio={"hidden_dim": 16}, **sections))


@pytest.fixture(scope="module")
def lora_checkpoint(tmp_path_factory, tiny_zoo, toy_root) -> Path:
    output = tmp_path_factory.mktemp("lora_run")
    config = make_config(output, tiny_zoo, toy_root, lora={"train_mode": "lora", "rank": 4, "alpha": 8},
                         optimization={"max_steps": 4, "learning_rate": 2e-2, "warmup_steps": 0},
                         audio={"alignment": "local", "local_margin_frames": 1})
    return Trainer(config).train().checkpoint


def test_lora_checkpoint_loads_into_diffusers_pipeline_and_changes_output(lora_checkpoint, tiny_zoo):
    from diffusers import LTXImageToVideoPipeline

    assert sorted(path.name for path in lora_checkpoint.iterdir()) == [
        "audio_projection.json", "audio_projection.safetensors", "avatar_checkpoint.json",
        "pytorch_lora_weights.safetensors", "training_state"]
    pipeline = LTXImageToVideoPipeline.from_pretrained(tiny_zoo / "ltx-video", text_encoder=None, tokenizer=None)
    pipeline.set_progress_bar_config(disable=True)
    torch.manual_seed(0)
    embeds, mask = torch.randn(1, 9, 32), torch.ones(1, 9)
    image = torch.rand(1, 3, 64, 64)

    def generate() -> torch.Tensor:
        return pipeline(image=image, prompt_embeds=embeds, prompt_attention_mask=mask, height=64, width=64,
                        num_frames=9, num_inference_steps=2, guidance_scale=1.0, output_type="latent",
                        generator=torch.Generator().manual_seed(0)).frames

    before = generate()
    pipeline.load_lora_weights(str(lora_checkpoint))
    after = generate()
    assert (after - before).abs().max() > 1e-4


def test_load_avatar_checkpoint_and_wrong_base(lora_checkpoint, tiny_zoo, tmp_path):
    from diffusers import LTXVideoTransformer3DModel

    loaded = load_avatar_checkpoint(lora_checkpoint.parent)  # the run's checkpoints/ folder means its latest
    assert loaded.path == lora_checkpoint.resolve() and loaded.metadata["step"] == 4
    assert loaded.alignment == "local" and loaded.metadata["video"]["num_frames"] == 33
    assert loaded.audio_encoder["feature_dim"] == FEATURE_DIM
    assert any(".lora_" in name for name, _ in loaded.transformer.named_parameters())
    other = LTXVideoTransformer3DModel(in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=8,
                                       cross_attention_dim=16, num_layers=1, caption_channels=32)
    other.save_pretrained(tmp_path / "other" / "transformer")
    with pytest.raises(UserError, match="different base model: attention_head_dim 16 vs base 8"):
        load_avatar_checkpoint(lora_checkpoint, pretrained=tmp_path / "other")
    with pytest.raises(UserError, match="checkpoint not found"):
        load_avatar_checkpoint(tmp_path / "missing")


def test_local_alignment_gives_zero_attention_outside_the_window(lora_checkpoint, monkeypatch):
    """Record the real attn2 weights (from the query, key and mask the processor hands to attention)."""
    import diffusers.models.transformers.transformer_ltx as ltx

    loaded = load_avatar_checkpoint(lora_checkpoint)
    from avatar_gen.model.denoiser import AvatarDenoiser

    denoiser = AvatarDenoiser(loaded.transformer, loaded.audio_projection, alignment="local", local_margin_frames=1)
    recorded = []
    original = ltx.dispatch_attention_fn

    def recording_attention(query, key, value, attn_mask=None, **kwargs):
        if attn_mask is not None:  # only attn2 gets a mask
            scores = torch.einsum("bqhd,bkhd->bhqk", query.float(), key.float()) / query.shape[-1] ** 0.5
            recorded.append(scores.masked_fill(~attn_mask, float("-inf")).softmax(dim=-1))
        return original(query, key, value, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(ltx, "dispatch_attention_fn", recording_attention)
    frames, height, width, num_frames = 5, 2, 2, 33
    with torch.no_grad():
        denoiser(torch.randn(1, frames * height * width, 8), torch.randn(1, num_frames, FEATURE_DIM),
                 torch.full((1, frames * height * width), 500.0), frames, height, width, 25.0)
    assert len(recorded) == 2  # one attn2 per transformer block
    for weights in recorded:
        assert weights.shape == (1, 2, frames * height * width, num_frames)
        for latent_frame in range(frames):
            window = (list(range(0, 2)) if latent_frame == 0
                      else list(range(8 * latent_frame - 8, min(8 * latent_frame + 2, 33))))
            outside = [token for token in range(num_frames) if token not in window]
            rows = weights[0, :, latent_frame * height * width:(latent_frame + 1) * height * width]
            assert rows[..., outside].abs().max() == 0.0
            assert torch.allclose(rows[..., window].sum(-1), torch.ones(()))


def test_nonfinite_losses_stop_with_a_usable_checkpoint(tmp_path, tiny_zoo):
    root = write_toy_chunks(tmp_path / "nan", num_clips=4, feature_dim=FEATURE_DIM)
    for latents_file in (root / "vae_latents").glob("*.pt"):
        stored = torch.load(latents_file, weights_only=True)
        torch.save({"latents": torch.full_like(stored["latents"], float("nan"))}, latents_file)
    trainer = Trainer(make_config(tmp_path / "run", tiny_zoo, root, data={"held_out_fraction": 0.0},
                                  validation={"held_out_chunks": 0},
                                  optimization={"max_consecutive_nonfinite": 3}))
    with pytest.raises(NonFiniteLossError, match="NaN/inf 3 times in a row at step 0"):
        trainer.train()
    assert trainer.nonfinite_total == 3
    loaded = load_avatar_checkpoint(resolve_checkpoint(tmp_path / "run"))
    assert all(torch.isfinite(parameter).all() for parameter in loaded.transformer.parameters())


def test_a_second_training_on_the_same_folder_stops_with_one_line(tmp_path, tiny_zoo, toy_root):
    config = make_config(tmp_path / "run", tiny_zoo, toy_root)
    first = Trainer(config)
    with pytest.raises(UserError, match=f"another training is running in {tmp_path / 'run'}"):
        Trainer(config)
    first.train(stop_after_step=1)  # undisturbed, and it frees the folder when it is done
    resumed = Trainer(make_config(tmp_path / "run", tiny_zoo, toy_root, checkpoints={"resume": "latest"}))
    assert resumed.step == 1
    resumed.release_run_folder()


def test_resume_applies_the_new_learning_rate_and_a_diverged_run_never_saves(tmp_path, tiny_zoo, toy_root, caplog):
    """Resumed with another learning rate, the run uses it (as config.yaml says) and logs the change; a far too large
    one makes the next losses NaN, and the run stops without saving the diverged weights: latest stays on the last
    checkpoint that gave finite losses."""
    run = tmp_path / "run"
    sections = {"lora": {"train_mode": "lora"}, "checkpoints": {"every_n_steps": 1, "keep_last": 5}}
    Trainer(make_config(run, tiny_zoo, toy_root, **sections)).train(stop_after_step=2)
    huge = make_config(run, tiny_zoo, toy_root, lora={"train_mode": "lora"},
                       optimization={"learning_rate": 1e37, "warmup_steps": 0, "max_consecutive_nonfinite": 2},
                       checkpoints={"every_n_steps": 10, "keep_last": 5, "resume": "latest"})
    with caplog.at_level("INFO", logger="avatar_gen.training.trainer"):
        resumed = Trainer(huge)
    assert "learning_rate 0.002 -> 1e+37" in caplog.text
    assert resumed.stepper.optimizer.param_groups[0]["lr"] > 1e36  # what runs is what config.yaml records
    assert "learning_rate: 1.0e+37" in (run / "config.yaml").read_text()
    with pytest.raises(NonFiniteLossError, match=r"the weights of step 3 are not saved .*/step_000002 stays"):
        resumed.train()
    assert resolve_checkpoint(run).name == "step_000002"
    loaded = load_avatar_checkpoint(resolve_checkpoint(run))
    assert all(torch.isfinite(parameter).all() for parameter in loaded.transformer.parameters())


def test_weights_that_are_no_longer_numbers_are_never_saved(tmp_path, tiny_zoo, toy_root):
    trainer = Trainer(make_config(tmp_path / "run", tiny_zoo, toy_root))
    with torch.no_grad():
        next(parameter for parameter in trainer.model.parameters() if parameter.requires_grad).fill_(float("inf"))
    with pytest.raises(NonFiniteLossError, match="became NaN/inf by step 0 .* not saved, no checkpoint was saved"):
        trainer.save_checkpoint()
    assert not list((tmp_path / "run" / "checkpoints").glob("step_*"))
    trainer.release_run_folder()


class _RunsCode:
    def __reduce__(self):
        return exec, ("raise SystemExit('unpickling ran code')",)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on the payload it then refuses
def test_a_training_state_holding_python_objects_is_refused_unread(tmp_path, tiny_zoo, toy_root):
    """A checkpoint's optimizer state is a pickle: one that holds anything but tensors stops the resume with one line
    (torch's own message suggests loading it with weights_only=False, which would run it)."""
    import pickle

    run = tmp_path / "run"
    Trainer(make_config(run, tiny_zoo, toy_root)).train(stop_after_step=1)
    with open(run / "checkpoints" / "step_000001" / "training_state" / "optimizer.pt", "wb") as payload:
        pickle.dump({"optimizer": _RunsCode()}, payload)
    with pytest.raises(UserError, match="optimizer state .* holds Python objects other than tensors and was not "
                                        "loaded") as raised:
        Trainer(make_config(run, tiny_zoo, toy_root, checkpoints={"resume": "latest"}))
    assert "weights_only" not in str(raised.value)


def test_a_restart_before_the_first_checkpoint_logs_each_step_once(tmp_path, tiny_zoo, toy_root, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    config = make_config(run, tiny_zoo, toy_root, logging={"log_every_n_steps": 1, "tensorboard": True},
                         optimization={"max_steps": 3}, checkpoints={"every_n_steps": 3, "resume": "latest"})
    killed = Trainer(config)

    def killed_at_the_first_checkpoint():
        killed.metrics.flush()  # what a killed run leaves: the events written so far
        raise KeyboardInterrupt

    monkeypatch.setattr(killed, "save_checkpoint", killed_at_the_first_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        killed.train()
    Trainer(config).train()  # starts again from step 0: no checkpoint was written
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [event.step for event in events.Scalars("train/loss")] == [1, 2, 3]


def test_stage_script_runs_and_reports_errors(tmp_path, tiny_zoo, toy_root, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("training_script", REPO / "ltx_video" / "training.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    from avatar_gen.media import probe_video, write_wav

    for latents_file in (toy_root / "vae_latents").glob("*.pt"):  # speech to mux into the sample videos
        write_wav(toy_root / "audio_wav" / f"{latents_file.stem}.wav",
                  np.sin(np.arange(21120, dtype=np.float32) / 16000 * 2 * np.pi * 220) * 0.3, 16000)
    config = make_config(tmp_path / "run", tiny_zoo, toy_root, logging={"tensorboard": True},
                         validation={"every_n_steps": 2, "sample_videos": True, "sample_chunks": 1, "sample_steps": 2})
    path = tmp_path / "train.yaml"
    path.write_text(json.dumps(config.model_dump(mode="json")))  # JSON is YAML
    assert script.main(["--config", str(path), "--override", "optimization.max_steps=2", "--local_rank=0"]) == 0
    assert resolve_checkpoint(tmp_path / "run").name == "step_000002"
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["kind"] for row in rows] == ["train", "train", "validation"] and "val_audio_gain_std" in rows[-1]
    videos = list((tmp_path / "run" / "samples" / "step_000002").glob("*.mp4"))
    info = probe_video(videos[0]) if len(videos) == 1 else None
    assert info is not None and info.num_frames == 33 and info.has_audio
    assert script.main(["--config", str(path), "--override", "optimization.max_step=2"]) == 2
    assert "optimization.max_step: unknown key" in capsys.readouterr().err


def test_overfit_and_audio_reaches_the_model(tmp_path, tiny_zoo):
    """Full fine-tuning on toy clips whose mouth follows the loudness feature: the loss falls well below its
    start and the in-sample audio-conditioning gain (shuffled / true audio loss) passes 1.5.

    Local alignment: LTX's attn2 queries carry no position (RoPE is only in attn1), so with global attention a
    video token must first learn which frame it is in; the frame mask hands it its own audio (docs/results.md).
    """
    root = write_toy_chunks(tmp_path / "toy", num_clips=6, feature_dim=FEATURE_DIM, mouth_strength=3.0, seed=0)
    config = make_config(tmp_path / "run", tiny_zoo, root, data={"held_out_fraction": 0.0, "batch_size": 3},
                         audio={"alignment": "local", "local_margin_frames": 2},
                         validation={"held_out_chunks": 0, "train_chunks": 6, "num_draws": 3},
                         optimization={"max_steps": 400, "learning_rate": 3e-3, "warmup_steps": 20},
                         checkpoints={"every_n_steps": 1000}, logging={"log_every_n_steps": 50})
    trainer = Trainer(config)
    trainer.model.eval()
    start = trainer.audio_gain(trainer.train_records)
    trainer.model.train()
    result = trainer.train()
    trainer.model.eval()
    end = trainer.audio_gain(trainer.train_records)
    print(f"loss {start['loss_true']:.3f} -> {end['loss_true']:.3f}, audio gain {start['audio_gain']:.3f} -> "
          f"{end['audio_gain']:.3f} +- {end['audio_gain_std']:.3f}")
    assert end["loss_true"] < 0.3 * start["loss_true"]
    assert end["audio_gain"] >= 1.5
    assert result.step == 400


# ------------------------------------------------------------------------------------------ fidelity (issue 13)

def test_lora_and_projection_train_in_fp32_over_a_bf16_base(tmp_path, tiny_zoo, toy_root):
    """peft gives adapters the base layer's dtype; the trainer upcasts what it trains, so AdamW updates fp32."""
    trainer = Trainer(make_config(tmp_path / "run", tiny_zoo, toy_root, model={"dtype": "bfloat16"},
                                  lora={"train_mode": "lora"}, acceleration={"mixed_precision": "bf16"},
                                  optimization={"max_steps": 1, "warmup_steps": 0}))
    trained = {name: parameter for name, parameter in trainer.model.named_parameters() if parameter.requires_grad}
    frozen = [parameter for parameter in trainer.model.parameters() if not parameter.requires_grad]
    assert any(".lora_" in name for name in trained) and any("audio_projection" in name for name in trained)
    assert {parameter.dtype for parameter in trained.values()} == {torch.float32}
    assert {parameter.dtype for parameter in frozen} == {torch.bfloat16}
    before = {name: parameter.detach().clone() for name, parameter in trained.items()}
    trainer.train()
    lora_b = [name for name in trained if ".lora_B" in name]
    assert all(not torch.equal(before[name], trained[name]) for name in lora_b)  # zero-initialised, now updated
    assert {parameter.dtype for parameter in trained.values()} == {torch.float32}


def test_a_batch_may_mix_frame_rates(tmp_path, tiny_zoo):
    """Each item keeps its own frame rate for RoPE: a mixed batch predicts what its items predict alone."""
    from avatar_gen.model.denoiser import AvatarDenoiser

    root = write_toy_chunks(tmp_path / "toy", num_clips=4, feature_dim=FEATURE_DIM)
    for clip in ("toyclip001", "toyclip003"):
        for path in (root / "vae_latents" / f"{clip}_0.json", root / "audio_latents" / f"{clip}_0_text.json"):
            path.write_text(json.dumps(dict(json.loads(path.read_text()), fps=30.0)))
    trainer = Trainer(make_config(tmp_path / "run", tiny_zoo, root, data={"held_out_fraction": 0.0},
                                  validation={"held_out_chunks": 0}, optimization={"max_steps": 2}))
    seen = []
    real_forward = AvatarDenoiser.forward

    def recording_forward(model, *args):
        seen.append((args[-1], [float(fps) for fps in args[-1]] if isinstance(args[-1], torch.Tensor) else None))
        return real_forward(model, *args)

    AvatarDenoiser.forward = recording_forward
    try:
        batches = trainer._batches()
        batch = next(batches)
        trainer.training_step(trainer.model, batch["latents"], batch["audio"], batch["fps"], torch.Generator(), 1.0)
    finally:
        AvatarDenoiser.forward = real_forward
    expected = [trainer.train_records[int(index)].fps for index in batch["index"]]
    assert seen[-1][1] == expected
    # the denoiser: a batch at 25 and 30 fps == each item alone at its own rate
    model = trainer.model.eval()
    torch.manual_seed(0)
    noisy, audio = torch.randn(2, 20, 8), torch.randn(2, 33, FEATURE_DIM)
    timestep = torch.full((2, 20), 400.0)
    with torch.no_grad():
        mixed = model(noisy, audio, timestep, 5, 2, 2, torch.tensor([25.0, 30.0]))
        alone = [model(noisy[i:i + 1], audio[i:i + 1], timestep[i:i + 1], 5, 2, 2, fps)
                 for i, fps in enumerate((25.0, 30.0))]
        at_25 = model(noisy[1:], audio[1:], timestep[1:], 5, 2, 2, 25.0)
    torch.testing.assert_close(mixed, torch.cat(alone), atol=1e-5, rtol=1e-5)
    assert (alone[1] - at_25).abs().max() > 1e-4  # the rate matters


def test_preview_samples_what_inference_samples(tmp_path, tiny_zoo, toy_root):
    """The trainer's preview latents == LTXImageToVideoPipeline's from the same start (the inference schedule,
    shift_terminal included)."""
    from diffusers import LTXImageToVideoPipeline

    from avatar_gen.model.flow import first_frame_token_mask
    from avatar_gen.training.dataset import LatentAudioDataset

    trainer = Trainer(make_config(tmp_path / "run", tiny_zoo, toy_root, flow={"shift": 1.0}))
    model = trainer.model.eval()
    record, steps = trainer.held_out_records[0], 3
    item = LatentAudioDataset([record])[0]
    preview = trainer.samples.sample_latents(record, item["audio"], steps, seed=0)

    latents = item["latents"][None]
    frames, height, width = model.token_grid(latents)
    clean = model.pack(latents)
    keep = first_frame_token_mask(1, frames, height * width, torch.ones(1, dtype=torch.bool))[..., None]
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    pipeline = LTXImageToVideoPipeline.from_pretrained(tiny_zoo / "ltx-video", text_encoder=None, tokenizer=None,
                                                       transformer=model.transformer)
    pipeline.set_progress_bar_config(disable=True)
    with torch.no_grad():
        embeds = model.audio_projection(item["audio"][None])
        mask = model.attention_mask(1, record.num_frames, frames, height, width, torch.device("cpu"))
        out = pipeline(latents=keep * clean + (1 - keep) * noise, prompt_embeds=embeds, prompt_attention_mask=mask,
                       height=record.height, width=record.width, num_frames=record.num_frames,
                       frame_rate=record.fps, num_inference_steps=steps, guidance_scale=1.0,
                       output_type="latent").frames
    assert pipeline.scheduler.config.shift_terminal  # the schedule the old uniform preview ignored
    assert torch.equal(preview, model.unpack(out, frames, height, width)[0])


def test_preview_video_without_its_wav_names_the_missing_file(tmp_path, tiny_zoo, caplog):
    root = write_toy_chunks(tmp_path / "toy", num_clips=3, feature_dim=FEATURE_DIM)
    trainer = Trainer(make_config(tmp_path / "run", tiny_zoo, root, validation={"sample_steps": 2}))
    record = trainer.held_out_records[0]
    wav = root / "audio_wav" / f"{record.key}.wav"
    assert not wav.exists()
    with caplog.at_level("WARNING", logger="avatar_gen.training.validation"):
        written = trainer.samples.write([record], step=0)
    assert len(written) == 1 and written[0].is_file()
    assert f"sample video {record.key} has no sound: {wav} is missing" in caplog.text


# ------------------------------------------------------------------------------------------ the toy world (issue 14)

def test_audio_dropout_trains_on_inference_negative(tmp_path, tiny_zoo):
    """With audio_dropout, dropped samples get exactly the features inference feeds as the guidance negative (the
    silence the audio stage wrote for their length); the checkpoint records the probability."""
    from avatar_gen.audio.features import AudioEncoderSpec, load_audio_encoder
    from avatar_gen.audio.pipeline import write_silence_features
    from avatar_gen.inference import AvatarGenerator, plan_chunks
    from avatar_gen.model.denoiser import AvatarDenoiser

    encoder = load_audio_encoder(AudioEncoderSpec(encoder="wav2vec2", name_or_path=str(tiny_zoo / "wav2vec2")))
    dim = encoder.feature_dim
    root = write_toy_chunks(tmp_path / "toy", num_clips=3, feature_dim=dim, encoder=encoder.spec.model_dump())
    config = make_config(tmp_path / "run", tiny_zoo, root, audio={"feature_dim": dim},
                         conditioning={"audio_dropout": 1.0}, optimization={"max_steps": 1, "warmup_steps": 0})
    with pytest.raises(UserError, match=r"audio_dropout needs the features of silence .*silence/33f_25fps_ff.npy"):
        Trainer(config)
    write_silence_features(root / "audio_latents", encoder, 33, 25.0)
    trainer = Trainer(config)
    seen = []
    real_forward = AvatarDenoiser.forward

    def recording_forward(model, noisy, audio, *args):
        seen.append(audio.detach().clone())
        return real_forward(model, noisy, audio, *args)

    AvatarDenoiser.forward = recording_forward
    try:
        result = trainer.train()
    finally:
        AvatarDenoiser.forward = real_forward
    assert result.checkpoint is not None and json.loads(
        (result.checkpoint / "avatar_checkpoint.json").read_text())["audio_dropout"] == 1.0
    generator = AvatarGenerator.load(result.checkpoint)
    negative = generator.silence_features(33, 25.0)
    assert seen[0].shape == (2, 33, dim)
    for row in seen[0]:
        np.testing.assert_array_equal(row.numpy(), negative)
    speech = np.random.default_rng(0).standard_normal(21120).astype(np.float32) * 0.1
    inputs = generator.chunk_conditioning(speech, plan_chunks(33, 33), 25.0, 64, 64)[0]
    torch.testing.assert_close(inputs.negative_prompt_embeds, generator.audio_projection(seen[0][:1]))


def test_audio_free_base_trains_resumes_and_is_refused_by_inference(tmp_path, tiny_zoo):
    """audio.conditioning fixed_caption: no audio files, a fixed seeded caption, the whole transformer trained; the
    held-out flow loss is reported, the checkpoint resumes exactly, its transformer/ is a diffusers folder the avatar
    recipe can start from, and inference refuses it in one line."""
    import shutil

    from diffusers import LTXVideoTransformer3DModel

    from avatar_gen.inference import AvatarGenerator

    root = write_toy_chunks(tmp_path / "toy", num_clips=4, feature_dim=FEATURE_DIM)
    shutil.rmtree(root / "audio_latents")
    sections = {"audio": {"conditioning": "fixed_caption", "fixed_caption_tokens": 4},
                "data": {"audio_latents": None}, "optimization": {"max_steps": 3},
                "validation": {"every_n_steps": 3, "held_out_chunks": 1, "num_draws": 1}}
    straight = Trainer(make_config(tmp_path / "straight", tiny_zoo, root, **sections))
    result = straight.train()
    assert result.step == 3 and all(np.isfinite(row["loss"]) for row in result.history if row["kind"] == "train")
    assert set(result.validation) == {"val_loss", "val_loss_std", "val_chunks"}
    assert np.isfinite(result.validation["val_loss"])
    metadata = json.loads((result.checkpoint / "avatar_checkpoint.json").read_text())
    assert metadata["conditioning"] == "fixed_caption" and metadata["audio_projection"] is None
    assert metadata["fixed_caption"]["tokens"] == 4 and metadata["transformer_training"] == "full"
    assert metadata["audio_encoder"] is None
    exported = LTXVideoTransformer3DModel.from_pretrained(result.checkpoint / "transformer")
    for name, value in exported.state_dict().items():
        torch.testing.assert_close(value, straight.model.transformer.state_dict()[name])

    first = Trainer(make_config(tmp_path / "split", tiny_zoo, root, **sections))
    first.train(stop_after_step=2)
    resumed = Trainer(make_config(tmp_path / "split", tiny_zoo, root, checkpoints={"resume": "latest"}, **sections))
    assert resumed.step == 2
    resumed.train()
    for name, value in trainable_state(straight).items():
        torch.testing.assert_close(trainable_state(resumed)[name], value, atol=1e-6, rtol=0)

    with pytest.raises(UserError, match="is an audio-free base .* no speech input"):
        AvatarGenerator.load(result.checkpoint)
    # the avatar recipe starts from the exported transformer
    toy = write_toy_chunks(tmp_path / "speech", num_clips=3, feature_dim=FEATURE_DIM)
    recipe = Trainer(make_config(tmp_path / "recipe", tiny_zoo, toy, lora={"train_mode": "lora"},
                                 model={"pretrained": str(result.checkpoint / "transformer"), "dtype": "float32"},
                                 optimization={"max_steps": 1}))
    assert recipe.train().step == 1


def test_training_shift_counts_latents_as_the_pipeline_does(tmp_path, tiny_zoo, toy_root, monkeypatch):
    """With a patch-2 transformer (4 latents per token), the sigma shift follows the latent count (pre-patch), the
    sequence length LTXImageToVideoPipeline computes its schedule from at inference."""
    from diffusers import LTXVideoTransformer3DModel

    import avatar_gen.training.trainer as trainer_module

    transformer = LTXVideoTransformer3DModel(in_channels=32, out_channels=32, patch_size=2, patch_size_t=1,
                                             num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
                                             num_layers=1, caption_channels=32)
    trainer = Trainer(make_config(tmp_path / "run", tiny_zoo, toy_root, flow={"shift": "auto"}),
                      transformer=transformer)
    shifts = []
    real = trainer_module.sample_sigmas
    monkeypatch.setattr(trainer_module, "sample_sigmas", lambda size, shift, *args, **kwargs: shifts.append(shift)
                        or real(size, shift, *args, **kwargs))
    item = trainer.train_dataset[0]
    trainer.training_step(trainer.model, item["latents"][None], item["audio"][None], 25.0, torch.Generator(), 1.0)
    assert shifts == [pytest.approx(trainer.config.flow.shift_for(5 * 2 * 2))]  # latents [8, 5, 2, 2]: 20, 5 tokens


def test_uniform_noise_share_and_a_fixed_noise_level_reach_the_noising(tmp_path, tiny_zoo, toy_root, monkeypatch):
    """``flow.uniform_fraction`` is what the sigma draw gets; a fixed ``sigma`` (the measurement's loss by noise
    level) is the level of every noised token, whatever was drawn."""
    import avatar_gen.training.trainer as trainer_module

    trainer = Trainer(make_config(tmp_path / "run", tiny_zoo, toy_root, flow={"uniform_fraction": 1.0}))
    fractions, inputs = [], []
    real_sample, real_inputs = trainer_module.sample_sigmas, trainer_module.make_flow_inputs
    monkeypatch.setattr(trainer_module, "sample_sigmas", lambda *args, **kwargs: fractions.append(
        kwargs.get("uniform_fraction")) or real_sample(*args, **kwargs))
    monkeypatch.setattr(trainer_module, "make_flow_inputs", lambda *args: inputs.append(real_inputs(*args))
                        or inputs[-1])
    item = trainer.train_dataset[0]
    latents, audio = item["latents"][None], item["audio"][None]
    trainer.training_step(trainer.model, latents, audio, 25.0, torch.Generator().manual_seed(0), 1.0)
    trainer_module.rectified_flow_loss(trainer.model, latents, audio, 25.0, torch.Generator().manual_seed(0), 1.0,
                                       trainer.config.flow, trainer.device, sigma=0.25)
    assert fractions == [1.0, 1.0]
    drawn, fixed = inputs
    assert drawn.sigmas.item() != pytest.approx(0.25) and fixed.sigmas.tolist() == [0.25]
    noised = fixed.loss_weight > 0
    assert noised.any() and torch.allclose(fixed.timestep[noised], torch.tensor(250.0))
    assert torch.equal(fixed.target, drawn.target)  # the same noise: only the level differs


def test_continuation_training_gives_the_first_m_latent_frames_clean(tmp_path, tiny_zoo, toy_root, monkeypatch):
    """With continuation_probability 1, every conditioned sample gets its first m (2..max) latent frames clean,
    with timestep 0 and no loss, as a chunk continuing the previous one's last frames is sampled; the checkpoint
    says how many frames training gave."""
    from avatar_gen.model import flow

    masks = []
    real = flow.make_flow_inputs

    def recording(clean, noise, sigmas, condition_mask):
        masks.append(condition_mask.clone())
        return real(clean, noise, sigmas, condition_mask)

    monkeypatch.setattr("avatar_gen.training.trainer.make_flow_inputs", recording)
    config = make_config(tmp_path / "run", tiny_zoo, toy_root, optimization={"max_steps": 6, "warmup_steps": 0},
                         conditioning={"continuation_probability": 1.0, "continuation_max_frames": 3},
                         checkpoints={"every_n_steps": 6})
    result = Trainer(config).train()
    frames = masks[0].shape[1] // 4  # the tiny zoo's 33x64x64 chunks: 5 latent frames of 2x2 tokens
    clean_frames = torch.cat([mask.view(mask.shape[0], frames, 4)[..., 0].sum(dim=1) for mask in masks])
    assert set(clean_frames.tolist()) <= {2.0, 3.0} and len(set(clean_frames.tolist())) == 2
    for mask in masks:  # whole leading frames, nothing after them
        per_frame = mask.view(mask.shape[0], frames, 4)
        assert torch.all(per_frame.amin(dim=2) == per_frame.amax(dim=2))
        assert torch.all(per_frame[:, 1:] <= per_frame[:, :-1])
    metadata = json.loads((result.checkpoint / "avatar_checkpoint.json").read_text())
    assert metadata["continuation_max_frames"] == 3
    mask = flow.leading_frames_token_mask(3, 2, torch.tensor([0, 1, 3]))
    assert mask.tolist() == [[0] * 6, [1, 1, 0, 0, 0, 0], [1] * 6]


def test_mouth_weighted_loss_weighs_the_tokens_over_each_clips_mouth_box(tmp_path, tiny_zoo, toy_root, monkeypatch):
    """flow.mouth_loss_weight puts that weight on the tokens over a clip's mouth box (1 elsewhere, 0 on the clean
    first frame) in the loss that trains; a clip without a box, or a box drawn on frames of another size, is refused
    with one line."""
    from avatar_gen.latents.regions import MouthBox, write_mouth_box
    import avatar_gen.training.trainer as trainer_module

    records = scan_chunks(toy_root / "vae_latents", toy_root / "audio_latents", FEATURE_DIM)
    size = (records[0].height, records[0].width)
    boxes = tmp_path / "mouth_boxes"
    clips = sorted({record.clip_id for record in records})
    for clip_id in clips:  # the top-left quarter of the frame: the first of the 2x2 tokens of each latent frame
        write_mouth_box(boxes, clip_id, MouthBox(box=(0.0, 0.0, 0.5, 0.5), width=size[1], height=size[0]))

    def config(folder: str):
        return make_config(folder, tiny_zoo, toy_root, flow={"shift": 1.0, "mouth_loss_weight": 5.0},
                           data={"mouth_boxes": str(boxes)}, optimization={"max_steps": 2, "warmup_steps": 0},
                           checkpoints={"every_n_steps": 2})

    weights = []
    real = trainer_module.flow_loss
    monkeypatch.setattr(trainer_module, "flow_loss", lambda prediction, inputs: weights.append(inputs.loss_weight)
                        or real(prediction, inputs))
    assert Trainer(config(tmp_path / "run")).train().step == 2
    weight = weights[0].view(weights[0].shape[0], -1, 4)  # [B, 5 latent frames, 2x2 tokens]
    assert torch.all(weight[:, 0] == 0)  # the clean first frame has no loss
    assert torch.all(weight[:, 1:, 0] == 5.0) and torch.all(weight[:, 1:, 1:] == 1.0)

    # a clip whose file says no mouth was found (a face-track writer's verdict) weighs every token 1
    trainer = Trainer(config(tmp_path / "no-mouth"))
    index, record = next((i, r) for i, r in enumerate(trainer.train_records))
    write_mouth_box(boxes, record.clip_id, MouthBox(box=None, width=size[1], height=size[0], reason="no face"))
    trainer = Trainer(config(tmp_path / "no-mouth-2"))
    latents = trainer.train_dataset[index]["latents"][None]
    assert torch.all(trainer.mouth_token_weight(latents, torch.tensor([index])) == 1.0)

    (boxes / f"{clips[0]}.json").unlink()
    with pytest.raises(UserError, match=r"mouth box for every training clip; .* none for 1 clip"):
        Trainer(config(tmp_path / "missing"))
    write_mouth_box(boxes, clips[0], MouthBox(box=(0.0, 0.0, 0.5, 0.5), width=2 * size[1], height=2 * size[0]))
    with pytest.raises(UserError, match=rf"describes {2 * size[1]}x{2 * size[0]} frames, but chunk"):
        Trainer(config(tmp_path / "other-size"))
    (boxes / f"{clips[0]}.json").write_text("{not json")
    with pytest.raises(UserError, match=r"bad mouth box"):
        Trainer(config(tmp_path / "corrupt"))
