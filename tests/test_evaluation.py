"""Evaluation on synthetic talking clips: the offline lip-sync score, the whole directory run, the report,
held-out filtering, resume, and bad inputs recorded per clip."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar_gen.evaluation import evaluate_directory
from avatar_gen.media import SAMPLE_RATE, extract_audio, read_frames, write_video

FPS = 25.0
SAMPLES_PER_FRAME = int(SAMPLE_RATE / FPS)
INJECTED_DELAY = 5  # frames: the sound comes late
INJECTED_ADVANCE = 4  # frames: the sound comes early
VARIANT_FRAMES = 125  # 5 s: enough for a clear lag curve, short enough for a quick test


def delayed(audio: np.ndarray, frames: int) -> np.ndarray:
    """``audio`` moved later by ``frames`` video frames (negative: earlier), same length, zero-filled."""
    shift = frames * SAMPLES_PER_FRAME
    if shift >= 0:
        return np.concatenate([np.zeros(shift, np.float32), audio])[:len(audio)]
    return np.concatenate([audio[-shift:], np.zeros(-shift, np.float32)])


def fitted(audio: np.ndarray, length: int) -> np.ndarray:
    return np.pad(audio, (0, max(0, length - len(audio))))[:length]


@pytest.fixture(scope="module")
def sync_variants(synthetic_dataset, tmp_path_factory):
    """One talking clip (its first 5 s) re-muxed with its own speech, delayed, advanced, and another clip's speech."""
    _, clips = synthetic_dataset
    speech_clips = [clip for clip in clips if clip.kind == "speech"]
    clip, other = speech_clips[0], speech_clips[1]
    folder = tmp_path_factory.mktemp("sync_variants")
    frames = read_frames(clip.video_path, fps=FPS, max_frames=VARIANT_FRAMES)
    audio = fitted(extract_audio(clip.video_path), len(frames) * SAMPLES_PER_FRAME)
    other_audio = fitted(extract_audio(other.video_path), len(audio))
    write_video(folder / "true.mp4", frames, FPS, audio=audio)
    write_video(folder / "delayed.mp4", frames, FPS, audio=delayed(audio, INJECTED_DELAY))
    write_video(folder / "advanced.mp4", frames, FPS, audio=delayed(audio, -INJECTED_ADVANCE))
    write_video(folder / "swapped.mp4", frames, FPS, audio=other_audio)
    out = tmp_path_factory.mktemp("sync_eval")
    metrics = evaluate_directory(folder, out)
    return metrics, out


def test_offline_sync_high_for_true_speech_low_when_shifted_or_swapped(sync_variants):
    metrics, _ = sync_variants
    scores = {clip_id: record["offline_sync"] for clip_id, record in metrics["clips"].items()}
    true = scores["true"]
    assert true["score"] > 0.6, true  # measured ~0.87-0.90 on these clips
    assert true["best_lag"] == 0
    for variant in ("delayed", "advanced", "swapped"):
        assert scores[variant]["score"] < 0.3, (variant, scores[variant]["score"])
        assert scores[variant]["score"] < true["score"] - 0.4, variant
    # Another clip's speech matches at no lag as well as the true one does at lag 0.
    assert scores["swapped"]["best_correlation"] < true["best_correlation"] - 0.3


def test_best_lag_recovers_injected_shift(sync_variants):
    metrics, _ = sync_variants
    assert abs(metrics["clips"]["delayed"]["offline_sync"]["best_lag"] - INJECTED_DELAY) <= 1
    assert abs(metrics["clips"]["advanced"]["offline_sync"]["best_lag"] + INJECTED_ADVANCE) <= 1
    # At the recovered lag the shifted clips correlate about as well as the true clip at lag 0.
    true = metrics["clips"]["true"]["offline_sync"]["best_correlation"]
    assert metrics["clips"]["delayed"]["offline_sync"]["best_correlation"] > true - 0.15


def test_report_renders(sync_variants):
    metrics, out = sync_variants
    report = (out / "report.md").read_text()
    assert "| true | ok |" in report and "## Summary" in report
    for name in ("sync_scores.png", "sync_score_distribution.png", "av_offset_curve.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    written = json.loads((out / "metrics.json").read_text())
    assert written["aggregates"]["num_clips"] == 4
    assert written["aggregates"]["offline_sync.score"]["count"] == 4
    assert len(written["clips"]["true"]["offline_sync"]["correlations"]) == 31


def test_rerun_reuses_cached_clips(sync_variants, monkeypatch):
    metrics, out = sync_variants
    from avatar_gen.evaluation import pipeline

    def must_not_run(*args, **kwargs):
        raise AssertionError("a cached clip was evaluated again")

    monkeypatch.setattr(pipeline, "evaluate_clip", must_not_run)
    again = evaluate_directory(Path(metrics["generated_dir"]), out)
    assert again["clips"] == metrics["clips"]


def test_bad_inputs_are_recorded_not_fatal(synthetic_dataset, tmp_path):
    out_dir, clips = synthetic_dataset
    generated, reference = tmp_path / "generated", tmp_path / "reference"
    generated.mkdir()
    reference.mkdir()
    speech = next(clip for clip in clips if clip.kind == "speech")
    silent = next(clip for clip in clips if clip.kind == "silent")
    frames = read_frames(speech.video_path, fps=FPS, max_frames=40)
    audio = extract_audio(speech.video_path, duration=len(frames) / FPS)
    # A talking clip without its audio track, a face-less clip with speech, a silent clip, a corrupt file,
    # and a clip whose reference is shorter (and one without any reference).
    write_video(generated / "no_audio.mp4", frames, FPS)
    blank = np.full((len(frames), 64, 64, 3), 128, np.uint8)
    blank[:, :, :32] = 40
    write_video(generated / "no_face.mp4", blank, FPS, audio=audio)
    shutil.copy(silent.video_path, generated / "silent.mp4")
    (generated / "corrupt.mp4").write_bytes(b"this is not a video" * 100)
    write_video(generated / "short_reference.mp4", frames, FPS, audio=audio)
    write_video(reference / "short_reference.mp4", frames[:30], FPS)
    for name in ("no_audio", "no_face", "silent", "corrupt"):
        (reference / f"{name}.mp4").symlink_to(generated / f"{name}.mp4")

    torch.manual_seed(0)
    extractor = torch.jit.script(torch.nn.Sequential(torch.nn.Conv3d(3, 4, (4, 16, 16), stride=(4, 16, 16)),
                                                     torch.nn.Flatten(2)))
    extractor.save(str(tmp_path / "tiny_extractor.pt"))
    metrics = evaluate_directory(generated, tmp_path / "out", reference_dir=reference,
                                 i3d_path=tmp_path / "tiny_extractor.pt")
    records = metrics["clips"]
    assert set(records) == {"no_audio", "no_face", "silent", "corrupt", "short_reference"}

    assert records["corrupt"]["status"] == "error"
    assert "unreadable video" in records["corrupt"]["problems"][0]

    assert records["no_audio"]["status"] == "partial"
    assert any("no audio track" in p for p in records["no_audio"]["problems"])
    assert records["no_audio"]["offline_sync"] is None
    assert records["no_audio"]["reference"]["psnr_db"] == "inf" and records["no_audio"]["reference"]["ssim"] == 1.0

    assert any("no face" in p for p in records["no_face"]["problems"])
    assert records["no_face"]["temporal"]["drift_region"] == "frame"

    assert any("silent" in p for p in records["silent"]["problems"])

    mismatch = records["short_reference"]
    assert mismatch["reference"]["frames_compared"] == 30
    assert (mismatch["reference"]["frames_generated"], mismatch["reference"]["frames_reference"]) == (40, 30)
    assert any("length mismatch" in p for p in mismatch["problems"])
    assert mismatch["offline_sync"] is not None  # the clip itself was fine
    assert metrics["aggregates"]["num_error"] == 1
    # FVD over the readable clips (all >= 16 frames) against their references.
    assert metrics["fvd"]["num_generated"] == 4 and metrics["fvd"]["num_reference"] == 4
    assert metrics["fvd"]["extractor_kind"] == "torchscript" and metrics["fvd"]["value"] > 0
    assert (tmp_path / "out" / "report.md").read_text().count("**corrupt**") == 1


def test_heldout_list_filters_clips(synthetic_dataset, tmp_path):
    out_dir, clips = synthetic_dataset
    generated = tmp_path / "generated"
    generated.mkdir()
    silent = next(clip for clip in clips if clip.kind == "silent")
    speech = next(clip for clip in clips if clip.kind == "speech")
    # A chunk-named video of the held-out silent clip, and a training clip that must be left out.
    shutil.copy(silent.video_path, generated / f"{silent.clip_id}_0.mp4")
    shutil.copy(speech.video_path, generated / f"{speech.clip_id}.mp4")
    heldout = tmp_path / "heldout.txt"
    heldout.write_text(f"# held-out clips\n{silent.clip_id}\nnever_generated\n")
    metrics = evaluate_directory(generated, tmp_path / "out", heldout=heldout)
    assert list(metrics["clips"]) == [f"{silent.clip_id}_0"]
    assert metrics["heldout"] == {"file": str(heldout), "num_ids": 2, "missing_generated": ["never_generated"]}


def test_cli_runs_in_process(sync_variants, tmp_path, capsys):
    import importlib.util

    script = Path(__file__).resolve().parent.parent / "ltx_video" / "evaluate.py"
    spec = importlib.util.spec_from_file_location("evaluate_script", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--generated", str(tmp_path / "absent"), "--out", str(tmp_path / "out")]) == 2
    assert "generated-video folder not found" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no videos here")
    assert module.main(["--generated", str(empty), "--out", str(tmp_path / "out")]) == 2
    assert "no videos" in capsys.readouterr().err
    # A real run (the clips' cached records are reused, the report is written again).
    metrics, out = sync_variants
    (out / "report.md").unlink()
    assert module.main(["--generated", metrics["generated_dir"], "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["clips"] == metrics["clips"]
    assert (out / "report.md").stat().st_size > 0
