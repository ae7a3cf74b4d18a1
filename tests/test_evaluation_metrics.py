"""Frame metrics (PSNR, SSIM, flicker, drift), long-video seams and colour shift, Fréchet distance / FVD extractors
(TorchScript, I3D), held-out."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from avatar_gen.errors import UserError
from avatar_gen.evaluation import evaluate_clip
from avatar_gen.evaluation.faces import FaceTrack, detect_faces, track_face
from avatar_gen.evaluation.fvd import VideoFeatureExtractor, feature_frechet_distance, frechet_distance
from avatar_gen.evaluation.heldout import matches_heldout, read_heldout_ids
from avatar_gen.evaluation.lipsync import lagged_correlation
from avatar_gen.evaluation.long_video import boundary_flicker, edge_windows, lab_colour_shift
from avatar_gen.evaluation.quality import (
    compare_to_reference, identity_at_portrait_face, psnr, ssim, temporal_stability)
from avatar_gen.media import read_frames, write_video


@pytest.fixture(scope="module")
def talking_frames(synthetic_dataset):
    _, clips = synthetic_dataset
    clip = next(clip for clip in clips if clip.kind == "speech")
    return clip, read_frames(clip.video_path, fps=25, max_frames=24)


def noisy(frames: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(frames + rng.normal(0, sigma, frames.shape), 0, 255).astype(np.uint8)


def test_psnr_ssim_perfect_on_itself_and_fall_with_noise(talking_frames):
    _, frames = talking_frames
    itself = compare_to_reference(frames, frames.copy())
    assert itself.psnr_db == math.inf and itself.psnr_db_mean_per_frame == math.inf
    assert itself.ssim == 1.0 and itself.frames_compared == len(frames)
    light, heavy = compare_to_reference(frames, noisy(frames, 5)), compare_to_reference(frames, noisy(frames, 25))
    assert 30 < light.psnr_db < 40 and 15 < heavy.psnr_db < 22  # sigma 5 -> ~34 dB, sigma 25 -> ~20 dB
    assert 1.0 > light.ssim > heavy.ssim and heavy.ssim < 0.6
    # A reference of another size is resized to the generated frames, and says so.
    half = np.stack([frame[::2, ::2] for frame in frames])
    assert compare_to_reference(frames, half).resized_reference


def test_psnr_ssim_through_files(talking_frames, tmp_path):
    clip, frames = talking_frames
    write_video(tmp_path / "noisy.mp4", noisy(frames, 20), 25)
    write_video(tmp_path / "clean.mp4", frames, 25)
    record, _ = evaluate_clip(tmp_path / "clean.mp4", tmp_path / "clean.mp4")
    assert record["reference"]["psnr_db"] == math.inf and record["reference"]["ssim"] == 1.0
    record, _ = evaluate_clip(tmp_path / "clean.mp4", tmp_path / "noisy.mp4")
    assert record["reference"]["psnr_db"] < 30 and record["reference"]["ssim"] < 0.9


def test_ssim_known_values():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(48, 48), dtype=np.uint8)
    assert ssim(image, image) == 1.0
    assert ssim(image, 255 - image) < 0
    assert psnr(image, image) == math.inf
    shifted = np.clip(image.astype(int) + 10, 0, 255).astype(np.uint8)
    mse = np.mean((shifted.astype(int) - image.astype(int)) ** 2)
    assert psnr(image, shifted) == pytest.approx(10 * math.log10(255 ** 2 / mse))


def test_temporal_stability_flicker_and_drift(talking_frames):
    _, frames = talking_frames
    track = track_face(frames)
    assert track is not None
    static = np.repeat(frames[:1], 10, axis=0)
    steady = temporal_stability(static, track=None)
    assert steady.flicker_mean == 0.0 and steady.drift_ssim_min == 1.0
    flickering = static.copy()
    flickering[1::2] = np.clip(flickering[1::2].astype(int) + 40, 0, 255).astype(np.uint8)
    assert temporal_stability(flickering).flicker_mean > 30
    # Identity drift: the face region of later frames against an unrelated "input image" is dissimilar.
    own = temporal_stability(frames, track)
    other = temporal_stability(frames, track, anchor_image=np.full_like(frames[0], 90))
    assert own.drift_region == "face" and own.drift_anchor == "first_frame" and own.drift_per_frame[0] == 1.0
    assert other.drift_anchor == "input_image" and other.drift_ssim_mean < own.drift_ssim_mean - 0.3


def test_identity_at_the_portraits_face_stays_put_where_a_tracked_box_changes_scale(talking_frames):
    _, frames = talking_frames
    portrait = frames[0]
    still = np.repeat(portrait[None], 12, axis=0)
    found = detect_faces(portrait)
    assert len(found)
    identity = identity_at_portrait_face(still, portrait)
    assert identity.region == "face" and identity.box == pytest.approx(tuple(found[0]))
    assert identity.per_frame == [1.0] * 12
    # The tracked drift of the same unchanged frames falls when the track's box shrinks by 15 % half-way (as it does
    # where a detector starts finding a face it missed): the figure moved, the picture did not.
    x, y, w, h = found[0]
    smaller = (x + 0.075 * w, y + 0.075 * h, 0.85 * w, 0.85 * h)
    boxes = np.array([found[0]] * 6 + [smaller] * 6, dtype=np.float64)
    track = FaceTrack(boxes=boxes, detected=np.ones(12, dtype=bool))
    tracked = temporal_stability(still, track, anchor_image=portrait).drift_per_frame
    assert tracked[0] == 1.0 and max(tracked[6:]) < 0.9
    # A face that moved off the portrait's place, or turned into something else, does lower it.
    moved = np.roll(still, shift=portrait.shape[1] // 6, axis=2)
    assert max(identity_at_portrait_face(moved, portrait).per_frame) < 0.8
    faceless = still.copy()
    left, top, size = int(x), int(y), int(w)
    faceless[:, top:top + size, left:left + size] = portrait[top:top + size, left:left + size].mean(axis=(0, 1))
    assert max(identity_at_portrait_face(faceless, portrait).per_frame) < 0.5
    # Without a face in the portrait the whole frame is compared, and it says so.
    blank = np.full_like(portrait, 90)
    whole = identity_at_portrait_face(still, blank)
    assert whole.region == "frame" and whole.box == (0.0, 0.0, float(portrait.shape[1]), float(portrait.shape[0]))


def test_lagged_correlation_sign_convention():
    rng = np.random.default_rng(0)
    mouth = rng.standard_normal(120)
    sound_late = np.concatenate([np.zeros(3), mouth])[:120]  # loudness[t + 3] == mouth[t]
    lags, correlations = lagged_correlation(mouth, sound_late, max_lag=6)
    assert lags[np.nanargmax(correlations)] == 3 and np.nanmax(correlations) > 0.99


def test_frechet_distance_closed_form():
    # 1-D Gaussians: (mu_a - mu_b)^2 + (sigma_a - sigma_b)^2.
    assert frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([3.0]), np.array([[1.0]])) == \
        pytest.approx(4.0 + 1.0)
    rng = np.random.default_rng(0)
    features = rng.standard_normal((200, 8))
    assert feature_frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)
    assert feature_frechet_distance(features, features + 2.0) == pytest.approx(8 * 4.0, rel=1e-6)


class TinyVideoFeatures(torch.nn.Module):
    """A stand-in for I3D with the StyleGAN-V export's signature."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 6, kernel_size=(3, 8, 8), stride=(2, 8, 8))

    def forward(self, video: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = True) -> torch.Tensor:
        return self.conv(video).mean(dim=(2, 3, 4))


def test_fvd_extractor_from_torchscript(talking_frames, tmp_path):
    _, frames = talking_frames
    torch.manual_seed(0)
    path = tmp_path / "tiny_i3d.pt"
    torch.jit.script(TinyVideoFeatures()).save(str(path))
    extractor = VideoFeatureExtractor(path)
    assert extractor.call_kwargs == {"rescale": False, "resize": False, "return_features": True}
    clip = extractor.prepare(frames)
    assert clip.shape == (3, 16, 224, 224) and clip.min() >= -1 and clip.max() <= 1
    assert extractor.prepare(frames[:10]) is None
    clean = np.stack([extractor.features(extractor.prepare(np.roll(frames, k, axis=0))) for k in range(4)])
    degraded = np.stack([extractor.features(extractor.prepare(noisy(np.roll(frames, k, axis=0), 60, seed=k)))
                         for k in range(4)])
    assert clean.shape == (4, 6)
    assert feature_frechet_distance(clean, clean) == pytest.approx(0.0, abs=1e-6)
    mean_shift = float(np.sum((clean.mean(axis=0) - degraded.mean(axis=0)) ** 2))
    assert mean_shift > 1e-6 and feature_frechet_distance(clean, degraded) >= mean_shift * (1 - 1e-6)
    (tmp_path / "not_torchscript.pt").write_bytes(b"garbage")
    with pytest.raises(UserError, match="neither a TorchScript model"):
        VideoFeatureExtractor(tmp_path / "not_torchscript.pt")


def test_i3d_state_dict_with_port_key_names(talking_frames, tmp_path):
    from avatar_gen.evaluation.i3d import InceptionI3d

    _, frames = talking_frames
    torch.manual_seed(0)
    state = {key: value for key, value in InceptionI3d().state_dict().items()
             if not key.endswith("num_batches_tracked")}  # old files lack these counters
    # Key names and shapes of the PyTorch Kinetics-I3D port (rgb_imagenet.pt), written out independently.
    for key, shape in {"Conv3d_1a_7x7.conv3d.weight": (64, 3, 7, 7, 7), "Conv3d_2c_3x3.bn.running_var": (192,),
                       "Mixed_3b.b1b.conv3d.weight": (128, 96, 3, 3, 3), "Mixed_4f.b3b.bn.bias": (128,),
                       "Mixed_5c.b2b.conv3d.weight": (128, 48, 3, 3, 3), "logits.conv3d.weight": (400, 1024, 1, 1, 1),
                       "logits.conv3d.bias": (400,)}.items():
        assert tuple(state[key].shape) == shape, key
    torch.save(state, tmp_path / "rgb_imagenet.pt")
    extractor = VideoFeatureExtractor(tmp_path / "rgb_imagenet.pt")
    assert extractor.kind == "i3d_state_dict"
    features = extractor.features(extractor.prepare(frames))
    assert features.shape == (400,) and np.isfinite(features).all()
    del state["Mixed_5c.b0.conv3d.weight"]
    torch.save(state, tmp_path / "broken_i3d.pt")
    with pytest.raises(UserError, match="not an I3D state dict"):
        VideoFeatureExtractor(tmp_path / "broken_i3d.pt")


def test_heldout_file_formats(tmp_path):
    (tmp_path / "ids.txt").write_text("a_1_2\n\n# comment\nb_3_4  # trailing\na_1_2\n")
    assert read_heldout_ids(tmp_path / "ids.txt") == ["a_1_2", "b_3_4"]
    (tmp_path / "ids.json").write_text(json.dumps({"heldout": ["x", "y"]}))
    assert read_heldout_ids(tmp_path / "ids.json") == ["x", "y"]
    (tmp_path / "records.json").write_text(json.dumps([{"clip_id": "z"}]))
    assert read_heldout_ids(tmp_path / "records.json") == ["z"]
    (tmp_path / "bad.json").write_text(json.dumps({"something": 1}))
    with pytest.raises(UserError, match="expected one of the keys"):
        read_heldout_ids(tmp_path / "bad.json")
    # What training records in its run folder (a run folder works as --heldout too).
    from avatar_gen.layout import SPLIT_FILE

    run = tmp_path / "run"
    run.mkdir()
    (run / SPLIT_FILE).write_text(json.dumps({"held_out_fraction": 0.5, "held_out_clips": ["c1"],
                                              "train_clips": ["c2"], "held_out_chunks": ["c1_0"]}))
    assert read_heldout_ids(run) == ["c1"] == read_heldout_ids(run / SPLIT_FILE)
    with pytest.raises(UserError, match="without the training split"):
        read_heldout_ids(tmp_path)
    assert matches_heldout("a_1_2", {"a_1_2"}) == "a_1_2"
    assert matches_heldout("a_1_2_3", {"a_1_2"}) == "a_1_2"  # chunk 3 of clip a_1_2
    assert matches_heldout("a_1", {"a_1_2"}) is None


def test_face_detection_rate_counts_the_frames_the_detector_ran_on(talking_frames):
    """With detection on every 2nd frame (evaluation's default), a face found in each of them has rate 1, not 0.5."""
    _, frames = talking_frames
    every, alternate = track_face(frames, detect_every=1), track_face(frames, detect_every=2)
    assert every.detection_rate > 0.9
    assert abs(alternate.detection_rate - every.detection_rate) < 0.1
    assert int(alternate.sampled.sum()) == (len(frames) + 1) // 2


def test_boundary_flicker_finds_the_seams():
    """Frames that drift slowly inside chunks and jump where a chunk starts: boundary / inside = jump / drift."""
    starts = [0, 10, 20]
    levels = [100 + index + 30 * sum(index >= start for start in starts[1:]) for index in range(30)]
    frames = np.stack([np.full((8, 8, 3), level, dtype=np.uint8) for level in levels])
    seams = boundary_flicker(frames, starts)
    assert seams.num_boundaries == 2 and seams.num_inside == 27
    assert seams.boundary == pytest.approx(31.0) and seams.inside == pytest.approx(1.0)
    assert seams.ratio == pytest.approx(31.0)
    assert boundary_flicker(frames, [0]).ratio is None  # one chunk: no seam to measure


def test_lab_colour_shift_and_edge_windows():
    grey = np.full((5, 4, 4, 3), 128, dtype=np.uint8)
    assert lab_colour_shift(grey, grey) == pytest.approx(0.0, abs=1e-6)
    tinted = grey.copy()
    tinted[..., 0] = 160  # redder
    assert lab_colour_shift(grey, tinted) > 10  # well above a just noticeable difference (~2.3)
    assert edge_windows(100, 25.0, 1.0) == (slice(0, 25), slice(75, 100), False)
    assert edge_windows(40, 25.0, 1.0)[2]  # a video shorter than two windows: they overlap
