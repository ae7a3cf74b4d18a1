"""The guards around a training run (avatar_gen.training.safeguards), one by one; the trainer's use of them is
tested in test_training.py."""

from __future__ import annotations

import pytest
import torch

from avatar_gen.errors import UserError
from avatar_gen.training.safeguards import apply_optimizer_settings, lock_run_folder, nonfinite_weights


def test_a_run_folder_takes_one_training_at_a_time(tmp_path):
    held = lock_run_folder(tmp_path / "run")
    with pytest.raises(UserError, match=f"another training is running in {tmp_path / 'run'}"):
        lock_run_folder(tmp_path / "run")
    held.close()
    lock_run_folder(tmp_path / "run").close()


def _optimizer(learning_rate: float, weight_decay: float = 0.0):
    parameter = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([parameter], lr=learning_rate, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    return parameter, optimizer, scheduler


def test_resumed_optimizer_takes_the_config_settings_at_its_place_in_the_schedule():
    parameter, optimizer, scheduler = _optimizer(2e-3)
    for _ in range(3):
        parameter.grad = torch.ones(3)
        optimizer.step()
        scheduler.step()
    saved = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}

    _, resumed, resumed_scheduler = _optimizer(1e-4, weight_decay=0.05)
    resumed.load_state_dict(saved["optimizer"])
    resumed_scheduler.load_state_dict(saved["scheduler"])
    assert resumed.param_groups[0]["lr"] == pytest.approx(2e-3 / 4)  # the saved run's rate: what used to run
    changes = apply_optimizer_settings(resumed, resumed_scheduler, 1e-4, (0.9, 0.999), 1e-8, 0.05)
    assert changes == ["learning_rate 0.002 -> 0.0001", "weight_decay 0.0 -> 0.05"]
    assert resumed.param_groups[0]["lr"] == pytest.approx(1e-4 / 4)
    assert resumed_scheduler.get_last_lr() == [pytest.approx(1e-4 / 4)]
    resumed_scheduler.step()
    assert resumed.param_groups[0]["lr"] == pytest.approx(1e-4 / 5)
    assert apply_optimizer_settings(resumed, resumed_scheduler, 1e-4, (0.9, 0.999), 1e-8, 0.05) == []


def test_nonfinite_trainable_weights_are_named():
    model = torch.nn.Linear(2, 2)
    assert nonfinite_weights(model.named_parameters()) == []
    with torch.no_grad():
        model.bias[0] = float("inf")
    assert nonfinite_weights(model.named_parameters()) == ["bias"]
    model.bias.requires_grad_(False)  # frozen tensors belong to the base model
    assert nonfinite_weights(model.named_parameters()) == []
