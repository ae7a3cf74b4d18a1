"""SyncNet: the official state-dict layout loads, LSE-C/D run on a short clip, bad weight files fail clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar_gen.errors import UserError
from avatar_gen.evaluation.faces import FaceTrack
from avatar_gen.evaluation.mfcc import mfcc
from avatar_gen.evaluation.syncnet import compute_lse, load_syncnet, syncnet_face_crops

# The layer layout of syncnet_python's SyncNetModel.S, written out independently of our module:
# (sequential name, index, kind, weight shape).  BatchNorm entries carry weight/bias/running stats.
OFFICIAL_LAYERS = [
    ("netcnnaud", 0, "conv", (64, 1, 3, 3)), ("netcnnaud", 1, "bn", (64,)),
    ("netcnnaud", 4, "conv", (192, 64, 3, 3)), ("netcnnaud", 5, "bn", (192,)),
    ("netcnnaud", 8, "conv", (384, 192, 3, 3)), ("netcnnaud", 9, "bn", (384,)),
    ("netcnnaud", 11, "conv", (256, 384, 3, 3)), ("netcnnaud", 12, "bn", (256,)),
    ("netcnnaud", 14, "conv", (256, 256, 3, 3)), ("netcnnaud", 15, "bn", (256,)),
    ("netcnnaud", 18, "conv", (512, 256, 5, 4)), ("netcnnaud", 19, "bn", (512,)),
    ("netfcaud", 0, "linear", (512, 512)), ("netfcaud", 1, "bn", (512,)), ("netfcaud", 3, "linear", (1024, 512)),
    ("netfclip", 0, "linear", (512, 512)), ("netfclip", 1, "bn", (512,)), ("netfclip", 3, "linear", (1024, 512)),
    ("netcnnlip", 0, "conv", (96, 3, 5, 7, 7)), ("netcnnlip", 1, "bn", (96,)),
    ("netcnnlip", 4, "conv", (256, 96, 1, 5, 5)), ("netcnnlip", 5, "bn", (256,)),
    ("netcnnlip", 8, "conv", (256, 256, 1, 3, 3)), ("netcnnlip", 9, "bn", (256,)),
    ("netcnnlip", 11, "conv", (256, 256, 1, 3, 3)), ("netcnnlip", 12, "bn", (256,)),
    ("netcnnlip", 14, "conv", (256, 256, 1, 3, 3)), ("netcnnlip", 15, "bn", (256,)),
    ("netcnnlip", 18, "conv", (512, 256, 1, 6, 6)), ("netcnnlip", 19, "bn", (512,)),
]


def official_state_dict(seed: int = 0, with_batch_counts: bool = False) -> dict[str, torch.Tensor]:
    """Random weights under the official key names (as in syncnet_v2.model, which predates num_batches_tracked)."""
    generator = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for sequential, index, kind, shape in OFFICIAL_LAYERS:
        prefix = f"{sequential}.{index}"
        if kind == "bn":
            state[f"{prefix}.weight"] = 1 + 0.1 * torch.randn(shape, generator=generator)
            state[f"{prefix}.bias"] = 0.1 * torch.randn(shape, generator=generator)
            state[f"{prefix}.running_mean"] = 0.1 * torch.randn(shape, generator=generator)
            state[f"{prefix}.running_var"] = 1 + torch.rand(shape, generator=generator)
            if with_batch_counts:
                state[f"{prefix}.num_batches_tracked"] = torch.tensor(100)
        else:
            fan_in = int(np.prod(shape[1:]))
            state[f"{prefix}.weight"] = torch.randn(shape, generator=generator) / fan_in ** 0.5
            state[f"{prefix}.bias"] = torch.zeros(shape[0])
    return state


@pytest.fixture(scope="module")
def syncnet_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("syncnet") / "syncnet_v2_state.pt"
    torch.save(official_state_dict(), path)
    return path


def test_syncnet_loads_official_key_names(syncnet_file, tmp_path):
    model = load_syncnet(syncnet_file)
    loaded = model.state_dict()
    expected = official_state_dict()
    for key, value in expected.items():
        assert torch.equal(loaded[key], value), key
    assert not model.training
    # The same weights wrapped the way SyncNetInstance saves them (``__S__.`` prefix) load too.
    wrapped = tmp_path / "wrapped.pt"
    torch.save({f"__S__.{key}": value for key, value in official_state_dict(with_batch_counts=True).items()}, wrapped)
    assert torch.equal(load_syncnet(wrapped).state_dict()["netcnnlip.0.weight"], expected["netcnnlip.0.weight"])
    with torch.no_grad():
        assert model.forward_aud(torch.zeros(2, 1, 13, 20)).shape == (2, 1024)
        assert model.forward_lip(torch.zeros(1, 3, 5, 224, 224)).shape == (1, 1024)


def test_syncnet_rejects_bad_weight_files(tmp_path):
    missing_key = official_state_dict()
    del missing_key["netfclip.3.weight"]
    torch.save(missing_key, tmp_path / "missing.pt")
    with pytest.raises(UserError, match="not a SyncNet state dict"):
        load_syncnet(tmp_path / "missing.pt")
    # A pickled whole model (a custom class) is refused by weights_only loading, with the conversion hint.
    torch.save(torch.nn.Linear(2, 2), tmp_path / "whole_model.pt")
    with pytest.raises(UserError, match="convert it once"):
        load_syncnet(tmp_path / "whole_model.pt")
    with pytest.raises(UserError, match="not found"):
        load_syncnet(tmp_path / "absent.pt")


def test_lse_runs_on_short_clip(syncnet_file):
    model = load_syncnet(syncnet_file)
    rng = np.random.default_rng(0)
    num_frames = 12  # 0.48 s at 25 fps -> 7 windows of 5 frames
    frames = rng.integers(0, 255, size=(num_frames, 96, 96, 3), dtype=np.uint8)
    track = FaceTrack(boxes=np.tile([24.0, 16.0, 48.0, 48.0], (num_frames, 1)), detected=np.ones(num_frames, bool))
    crops = syncnet_face_crops(frames, track)
    assert crops.shape == (num_frames, 224, 224, 3) and crops.dtype == np.uint8
    audio = (0.1 * rng.standard_normal(num_frames * 640)).astype(np.float32)
    result = compute_lse(model, crops, audio, max_offset=15)
    assert result.num_windows == num_frames - 5
    assert len(result.mean_distances) == 31 and result.offsets == list(range(-15, 16))
    assert np.isfinite(result.lse_d) and result.lse_d > 0
    assert result.lse_c >= 0 and result.lse_d == pytest.approx(min(result.mean_distances))
    assert -15 <= result.av_offset <= 15 and result.audio_delay_frames == -result.av_offset
    with pytest.raises(ValueError, match="too short"):
        compute_lse(model, crops[:5], audio, max_offset=15)


def test_mfcc_layout_matches_syncnet_expectations():
    sample_rate = 16_000
    seconds = 1.0
    time = np.arange(int(seconds * sample_rate)) / sample_rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * time)).astype(np.float32)
    cepstra = mfcc(tone)
    # python_speech_features framing: 1 + ceil((N - 400) / 160) frames of 13 coefficients -> 4 per 25 fps frame.
    assert cepstra.shape == (1 + int(np.ceil((len(tone) - 400) / 160)), 13)
    # Coefficient 0 is the log power-spectrum energy of the pre-emphasised int16-scaled frame.
    scaled = tone.astype(np.float64) * 32768
    emphasised = np.append(scaled[0], scaled[1:] - 0.97 * scaled[:-1])
    frame = emphasised[160 * 10:160 * 10 + 400]
    energy = (np.abs(np.fft.rfft(frame, 512)) ** 2 / 512).sum()
    assert cepstra[10, 0] == pytest.approx(np.log(energy), rel=1e-9)
    # Silence hits the eps floor instead of -inf.
    assert np.isfinite(mfcc(np.zeros(1600, np.float32))).all()
