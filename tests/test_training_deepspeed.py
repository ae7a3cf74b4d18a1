"""Two CPU ranks through the real ``deepspeed`` launcher (gloo): disjoint data, one loadable checkpoint, resume;
ZeRO stage 3 refused."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from avatar_gen.model.checkpoint import load_avatar_checkpoint
from avatar_gen.training.dataset import ResumableShardSampler
from avatar_gen.training.toydata import write_toy_chunks

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(config: Path, *extra: str) -> subprocess.CompletedProcess:
    launcher = Path(sys.executable).parent / "deepspeed"
    command = [str(launcher), "--num_gpus", "2", "--master_port", str(free_port()), "training.py",
               "--config", str(config), *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(command, cwd=REPO / "ltx_video", env=env, capture_output=True, text=True, timeout=280)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_deepspeed_two_cpu_ranks_train_and_resume(tmp_path, tiny_zoo):
    data = write_toy_chunks(tmp_path / "data", num_clips=5, chunks_per_clip=2, feature_dim=4)
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps({
        "output_dir": str(tmp_path / "run"),
        "model": {"pretrained": str(tiny_zoo / "ltx-video"), "dtype": "float32"},
        "lora": {"train_mode": "lora", "rank": 4, "alpha": 4},
        "audio": {"feature_dim": 4, "hidden_dim": 32},
        "data": {"vae_latents": str(data / "vae_latents"), "audio_latents": str(data / "audio_latents"),
                 "held_out_fraction": 0.2, "batch_size": 2, "num_workers": 0},
        "optimization": {"learning_rate": 2e-3, "warmup_steps": 1, "max_steps": 4, "seed": 0},
        "acceleration": {"device": "cpu", "mixed_precision": "bf16", "gradient_checkpointing": True, "cpu_threads": 1},
        "distributed": {"deepspeed_config": str(REPO / "configs" / "deepspeed" / "zero2.json")},
        "checkpoints": {"every_n_steps": 2, "keep_last": 2},
        "validation": {"every_n_steps": 2, "held_out_chunks": 2, "num_draws": 1},
        "logging": {"log_every_n_steps": 1, "tensorboard": False},
    }))
    # ZeRO-3 shards the weights rank 0 exports and validates: refused on every rank, one line, before any training.
    refused = launch(config, "--override", "distributed.zero_stage=3")
    assert refused.returncode != 0 and not (tmp_path / "run" / "checkpoints").exists()
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and all("ZeRO stage 3" in line and "is not supported" in line for line in errors)
    assert "Traceback" not in refused.stderr
    first = launch(config, "--override", "optimization.max_steps=2")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    resumed = launch(config, "--resume", "latest")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout + resumed.stderr

    state = json.loads((tmp_path / "run" / "checkpoints" / "latest" / "training_state" / "trainer.json").read_text())
    assert state["step"] == 4 and state["world_size"] == 2 and state["deepspeed"]
    for rank in range(2):
        assert (tmp_path / "run" / "checkpoints" / "latest" / "training_state" / f"rank_{rank:03d}.pt").is_file()
    loaded = load_avatar_checkpoint(tmp_path / "run")
    assert loaded.metadata["step"] == 4 and loaded.metadata["transformer_training"] == "lora"
    assert any(".lora_" in name for name, _ in loaded.transformer.named_parameters())

    split = json.loads((tmp_path / "run" / "data_split.json").read_text())
    train_chunks = len(split["train_chunks"])
    per_rank = [set(ResumableShardSampler(train_chunks, rank, 2, seed=0).epoch_indices()) for rank in range(2)]
    assert per_rank[0] and per_rank[1] and not per_rank[0] & per_rank[1]
