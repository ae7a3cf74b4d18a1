"""``python -m avatar_gen.toy measure`` / ``measure-long`` on the tiny random zoo and synthetic held-out clips.

The tiny models draw noise, so the figures here say nothing about learning: what is tested is that every section is
measured on what it says (n, held-out), that a video without a face is recorded as such, that the control scores a
video against another clip's speech, and that a re-run takes everything from the cache.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar_gen.audio.features import AudioEncoderSpec
from avatar_gen.errors import UserError
from avatar_gen.inference import DEFAULT_GUIDANCE
from avatar_gen.synthetic import generate_dataset
from avatar_gen.tiny.checkpoint import write_untrained_checkpoint
from avatar_gen.toy.__main__ import main
from avatar_gen.toy.measure_long import handoff_pairs
from avatar_gen.toy.measure import (
    describe_checkpoint, interleave_by_clip, mouth_token_weight, parse_checkpoint_flags, read_held_out,
    reconstructable_frames, run_flow_settings, score_video)

SIZE = 64  # generated video side; the held-out clips are 128 px close-ups (the size the toy world uses)
VIDEO = {"height": SIZE, "width": SIZE, "num_frames": 17, "fps": 25.0}
# One torch thread: the tiny models' matrices are so small that a second thread only adds waiting (10-100x slower on
# a loaded 2-core machine).
MEASURE_ARGUMENTS = ["--cases", "3", "--sweep_cases", "2", "--sweep_guidance", "1", "3", "--gain_chunks", "4",
                     "--num_draws", "2", "--steps", "2", "--vae_clips", "2", "--noise_levels", "0.5", "0.05",
                     "--noise_chunks", "3", "--cpu_threads", "1"]


@pytest.fixture(autouse=True, scope="module")
def _keep_torch_threads():
    """The measurement sets torch's thread count for its process (--cpu_threads): give the other tests theirs back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def held_out(tmp_path_factory) -> Path:
    """Three close-up talking clips with a voice of their own, and a silent clip (no lip-sync case)."""
    folder = tmp_path_factory.mktemp("toy_held_out")
    generate_dataset(folder, num_clips=3, seed=11, size=128, min_seconds=1.5, max_seconds=2.0, framing="close_up",
                     voices=["en-gb+f2"], silent_clips=1)
    return folder


@pytest.fixture(scope="module")
def checkpoints(tiny_zoo, tmp_path_factory) -> dict[str, Path]:
    """Two untrained LoRA checkpoints to compare: global alignment with logmel features, local with wav2vec2."""
    root = tmp_path_factory.mktemp("toy_runs")
    logmel = AudioEncoderSpec(encoder="logmel", name_or_path="logmel")
    wav2vec2 = AudioEncoderSpec(encoder="wav2vec2", name_or_path=str(tiny_zoo / "wav2vec2"))
    return {"global": write_untrained_checkpoint(root / "global" / "checkpoints" / "step_000000",
                                                 tiny_zoo / "ltx-video", logmel, VIDEO),
            "local": write_untrained_checkpoint(root / "local" / "checkpoints" / "step_000000",
                                                tiny_zoo / "ltx-video", wav2vec2, VIDEO, alignment="local",
                                                local_margin_frames=1)}


def _arguments(checkpoints: dict[str, Path], held_out: Path, out: Path) -> list[str]:
    flags = [flag for name, path in checkpoints.items() for flag in ("--checkpoint", f"{name}={path}")]
    return ["measure", *flags, "--held_out", str(held_out), "--out", str(out), *MEASURE_ARGUMENTS]


@pytest.fixture(scope="module")
def measured(checkpoints, held_out, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("toy_measure")
    assert main(_arguments(checkpoints, held_out, out)) == 0
    return out


def _count(summary: dict) -> int:
    assert set(summary) == {"mean", "std", "n", "of"}
    return summary["n"]


def test_report_has_every_section_with_numbers_and_n(measured, held_out):
    report = json.loads((measured / "measure.json").read_text())
    assert report["held_out"]["clips"] == 3 and report["held_out"]["voices"] == ["en-gb+f2"]  # the silent clip is out
    assert report["date"] and report["command"].startswith("python -m avatar_gen.toy measure")
    assert list(report["checkpoints"]) == ["global", "local"]
    for entry in report["checkpoints"].values():
        vae = entry["vae_ceiling"]
        assert vae["n_clips"] == 2 and vae["held_out"] and _count(vae["psnr"]) == 2 and vae["psnr"]["mean"] > 0
        assert _count(vae["sync_original"]) == 2 and vae["sync_original"]["mean"] > 0.5  # real faces, in sync
        gain = entry["audio_gain"]
        assert gain["n_chunks"] == 4 and gain["n_clips"] == 3 and gain["held_out"] and gain["num_draws"] == 2
        assert np.isfinite(gain["gain"]) and gain["std"] >= 0 and gain["chunk_frames"] == 17
        videos = entry["videos"]
        assert videos["n_cases"] == 3 and videos["held_out"] and videos["guidance"] == DEFAULT_GUIDANCE
        # Noise from random models: no face in any frame, recorded per case; sync cannot be scored without a face.
        assert videos["face_found_pct"] == {"mean": 0.0, "std": 0.0, "n": 3, "of": 3}
        assert [case["face_found_pct"] for case in videos["cases"]] == [0.0, 0.0, 0.0]
        assert _count(videos["sync"]) == 0 and videos["sync"]["of"] == 3 and videos["sync"]["mean"] is None
        for figure in ("identity_ssim", "flicker", "generation_seconds"):
            assert _count(videos[figure]) == 3 and np.isfinite(videos[figure]["mean"])
        for case in videos["cases"]:
            assert any((measured / "cache" / "models").glob(f"*/videos/{case['video']}"))
        sweep = entry["guidance_sweep"]
        assert sweep["n_cases"] == 2 and [row["guidance"] for row in sweep["rows"]] == [1.0, 3.0]
        for row in sweep["rows"]:
            assert row["n_cases"] == 2 and _count(row["identity_ssim"]) == 2 and _count(row["face_found_pct"]) == 2
        noise = entry["noise_levels"]
        assert noise["held_out"] and noise["n_chunks"] == 3 and [row["sigma"] for row in noise["rows"]] == [0.05, 0.5]
        for row in noise["rows"]:
            assert _count(row["loss"]) == 3 and np.isfinite(row["loss"]["mean"]) and row["loss"]["mean"] > 0
        assert len(noise["sampler_sigmas"]) == 2 and noise["sampler_sigmas"][0] == 1.0  # the 2 sampling steps
    assert report["checkpoints"]["local"]["checkpoint"]["alignment"] == "local"
    assert [(row["name"], row["alignment"], row["encoder"]) for row in report["comparison"]] == [
        ("global", "global", "logmel"), ("local", "local", "wav2vec2")]
    truth = report["ground_truth"]  # the held-out clips themselves: real faces whose mouths follow their speech
    assert truth["n_cases"] == 3 and truth["held_out"] and [case["clip_id"] for case in truth["cases"]] == [
        case["clip_id"] for case in report["checkpoints"]["global"]["videos"]["cases"]]
    assert truth["face_found_pct"]["mean"] > 90 and truth["sync"]["mean"] > 0.6 and _count(truth["sync"]) == 3
    assert truth["sync_control"]["mean"] < truth["sync"]["mean"] - 0.3
    markdown = (measured / "measure.md").read_text()
    assert "| ground truth: the held-out clips themselves |" in markdown
    assert "Held-out data: 3 synthetic clips" in markdown and "| global | global | logmel |" in markdown
    assert "n/a (n=0 of 3)" in markdown  # sync of the faceless videos, said as such
    assert "**Loss by noise level** on 3 held-out chunks" in markdown and "| 0.05 | " in markdown
    gain = report["checkpoints"]["global"]["audio_gain"]  # gains this close to 1 keep six decimals in the table
    assert f"| {gain['gain']:.6f} ± {gain['std']:.6f} (n=4) |" in markdown


def test_control_is_another_clips_speech(measured):
    report = json.loads((measured / "measure.json").read_text())
    cases = report["checkpoints"]["global"]["videos"]["cases"]
    assert [case["control_clip_id"] for case in cases] == [case["clip_id"] for case in cases[1:] + cases[:1]]


def test_control_scores_a_synced_face_near_zero(held_out):
    """On ground-truth clips (a face whose mouth follows its speech) the own speech scores high, another clip's low:
    the control measures the video against that other speech, not its own."""
    clips = read_held_out(held_out).clips
    own, other = clips[0], clips[1]
    scores = score_video(own.video_path, own.speech_16k(), other.speech_16k(), own.first_frame())
    assert scores["face_found_pct"] > 90 and scores["identity_ssim"] > 0.5
    assert scores["sync"] > 0.6 and abs(scores["sync_control"]) < scores["sync"] - 0.3


def test_rerun_takes_everything_from_the_cache(measured, checkpoints, held_out, monkeypatch):
    first = json.loads((measured / "measure.json").read_text())
    videos = {path: path.stat().st_mtime_ns for path in (measured / "cache").rglob("*.mp4")}
    # per checkpoint: 3 cases at the default guidance, and 2 sweep cases at each sweep guidance other than it
    sweep_only = sum(guidance != DEFAULT_GUIDANCE for guidance in (1.0, 3.0))
    assert len(videos) == 2 * (3 + 2 * sweep_only)

    def refuse(*args, **kwargs):
        raise AssertionError("a cached figure was computed again")

    import avatar_gen.inference.generator
    import avatar_gen.latents.vae
    import avatar_gen.model.checkpoint

    monkeypatch.setattr(avatar_gen.inference.generator.AvatarGenerator, "load", refuse)
    monkeypatch.setattr(avatar_gen.model.checkpoint, "load_avatar_checkpoint", refuse)
    monkeypatch.setattr(avatar_gen.latents.vae, "load_vae", refuse)  # the VAE ceiling's loader (the stage keeps its)
    assert main(_arguments(checkpoints, held_out, measured)) == 0
    again = json.loads((measured / "measure.json").read_text())
    assert {path: path.stat().st_mtime_ns for path in (measured / "cache").rglob("*.mp4")} == videos
    assert again["checkpoints"] == first["checkpoints"] and again["ground_truth"] == first["ground_truth"]
    # ... but not across a change of where guidance applies by default (a video guided elsewhere is another video)
    for name, value in (("DEFAULT_GUIDANCE_INTERVAL", (0.5, 1.0)), ("DEFAULT_GUIDANCE_REGION", "frame"),
                        ("DEFAULT_START_SIGMA", 0.8)):
        with monkeypatch.context() as patch:
            patch.setattr(avatar_gen.inference.generator, name, value)
            with pytest.raises(AssertionError, match="computed again"):
                main(_arguments(checkpoints, held_out, measured))
    # ... nor across a change of the default hand-off, which the (multi-chunk) videos were made with
    import avatar_gen.inference.handoff

    monkeypatch.setattr(avatar_gen.inference.handoff, "PORTRAIT_HANDOFF_FRAMES", 2)
    with pytest.raises(AssertionError, match="computed again"):
        main(_arguments(checkpoints, held_out, measured))


def test_a_start_region_is_part_of_a_videos_cache_key_only_below_pure_noise():
    from avatar_gen.inference.guidance import FULL_INTERVAL
    from avatar_gen.toy.measure import VideoSampling

    def sampling(start, region):
        return VideoSampling("mouth", FULL_INTERVAL, start, region)

    # from pure noise the region changes nothing: one key; a start of the whole frame keeps the key it had before
    assert sampling(1.0, "outside_mouth").key() == sampling(1.0, "frame").key() == {"guidance_region": "mouth"}
    assert sampling(0.8, "frame").key() == {"guidance_region": "mouth", "start_sigma": 0.8}
    assert sampling(0.8, "outside_mouth").key() == {"guidance_region": "mouth", "start_sigma": 0.8,
                                                    "start_region": "outside_mouth"}
    assert sampling(0.8, "outside_mouth").suffix() == "-mouth-start0.8-outside_mouth"
    assert sampling(0.8, "frame").suffix() == "-mouth-start0.8"


def test_long_report_measures_drift_per_chunk(checkpoints, held_out, tmp_path, monkeypatch):
    out = tmp_path / "long"
    arguments = ["measure-long", "--checkpoint", f"global={checkpoints['global']}", "--held_out", str(held_out),
                 "--out", str(out), "--portraits", "2", "--seconds", "2.5", "--identity_window", "1",
                 "--colour_window", "1", "--sync_window", "1", "--timing_chunks", "1", "3", "--steps", "2",
                 "--cpu_threads", "1", "--handoff", "latent", "--anchor", "statistics"]
    assert main(arguments) == 0
    report = json.loads((out / "measure-long.json").read_text())
    assert report["ground_truth"]["colour_shift"]["n"] == 3 and report["ground_truth"]["held_out"]
    entry = report["checkpoints"]["global"]
    assert entry["n_cases"] == 2 and entry["held_out"] and entry["speech_seconds"] == 2.5
    for case in entry["cases"]:
        assert abs(case["num_frames"] - 62.5) <= 1 and len(case["speech_clips"]) >= 2  # more than one clip's speech
        assert case["handoff"] == {"handoff": "latent", "latent_frames": 1, "anchor": "statistics",
                                   "given_latent_frames": 1}
        # one latent frame hands over one shared frame, cross-faded: 2 frame pairs span each hand-off
        assert case["num_boundaries"] == 2 * (case["num_chunks"] - 1) >= 6
        assert case["face_found_pct"] == 0.0 and case["sync_first"] is None
        for index in ("1", "3"):
            timing = case["chunk_timing"][index]
            assert timing["seconds"] > 0 and timing["peak_memory_mb"] > 0
    assert entry["sync_ratio_of_means"] == {"ratio": None, "n": 0, "of": 2}  # no face: no sync to compare
    for figure in ("boundary_flicker", "inside_flicker", "flicker_ratio", "identity_ratio", "identity_ratio_tracked",
                   "colour_shift"):
        assert _count(entry[figure]) == 2 and np.isfinite(entry[figure]["mean"])
    assert _count(entry["chunk_timing_ratio"]["seconds"]) == 2 and entry["chunk_timing_ratio"]["chunks"] == [1, 3]
    assert "boundary / inside" in (out / "measure-long.md").read_text()
    assert "hand-off latent, 1 latent frames, anchor statistics" in (out / "measure-long.md").read_text()

    import avatar_gen.inference.generator  # a re-run takes the long videos and their figures from the cache

    monkeypatch.setattr(avatar_gen.inference.generator.AvatarGenerator, "load", None)
    assert main(arguments) == 0
    assert json.loads((out / "measure-long.json").read_text())["checkpoints"] == report["checkpoints"]


def test_hand_off_pairs_span_each_hand_off():
    """The frame hand-off passes between chunks across one pair of frames; a cross-faded one over its whole window."""
    frame = [{"start": 0, "lead": 0, "overlap": 0, "first_frame": 0},
             {"start": 16, "lead": 0, "overlap": 1, "first_frame": 17}]
    latent = [frame[0], {"start": 8, "lead": 0, "overlap": 9, "first_frame": 8},
              {"start": 24, "lead": 1, "overlap": 8, "first_frame": 25}]
    assert handoff_pairs(frame) == [17]
    assert handoff_pairs(latent) == list(range(8, 18)) + list(range(25, 34))


def test_measure_mistakes_are_one_line_errors(checkpoints, held_out, tmp_path, capsys):
    ckpt = f"a={checkpoints['global']}"
    for arguments, message in (
            (["--checkpoint", ckpt, "--held_out", str(tmp_path), "--out", str(tmp_path / "o")], "synthetic clip"),
            (["--checkpoint", ckpt, "--checkpoint", ckpt, "--held_out", str(held_out), "--out", str(tmp_path)],
             "given twice"),
            (["--checkpoint", ckpt, "--held_out", str(held_out), "--out", str(tmp_path), "--cases", "2",
              "--sweep_cases", "3"], "sweep_cases"),
            (["--checkpoint", ckpt, "--held_out", str(held_out), "--out", str(tmp_path), "--guidance_interval",
              "0.9", "0.1"], "guidance interval"),
            (["--checkpoint", ckpt, "--held_out", str(held_out), "--out", str(tmp_path), "--start_sigma", "0"],
             "start_sigma"),
            (["--checkpoint", f"a={tmp_path / 'nothing'}", "--held_out", str(held_out), "--out", str(tmp_path)],
             "nothing")):
        assert main(["measure", *arguments]) == 2
        error = capsys.readouterr().err
        assert error.startswith("error: ") and message in error and error.count("\n") == 1


def test_held_out_guard_and_helpers(checkpoints, held_out, tmp_path):
    # A run that trained on a clip of the set is refused: its figures would not be held-out.
    clip_id = read_held_out(held_out).clips[0].clip_id
    split = checkpoints["global"].parent.parent / "data_split.json"
    split.write_text(json.dumps({"train_clips": [clip_id], "held_out_clips": []}))
    try:
        with pytest.raises(UserError, match="not held out"):
            from avatar_gen.toy.measure import MeasureConfig, prepare

            prepare(MeasureConfig(checkpoints={"g": checkpoints["global"]}, held_out=held_out, out=tmp_path))
    finally:
        split.unlink()
    # The gain's noise levels are those the run trained with (its config.yaml), else the defaults.
    config = checkpoints["global"].parent.parent / "config.yaml"
    config.write_text("output_dir: somewhere\nflow:\n  shift: 3.0\n")
    try:
        flow, source = run_flow_settings(describe_checkpoint("g", checkpoints["global"]))
        assert flow.shift == 3.0 and source == str(config)
    finally:
        config.unlink()
    assert run_flow_settings(describe_checkpoint("g", checkpoints["global"]))[0].shift == "auto"
    assert parse_checkpoint_flags([f"x={tmp_path}", str(checkpoints["local"])]) == {
        "x": tmp_path, "local": checkpoints["local"]}
    assert [reconstructable_frames(n, 8) for n in (50, 60, 75)] == [50, 59, 75]  # last chunk 8k+1 (or whole)
    assert reconstructable_frames(60, 1) == 60

    class Chunk:
        def __init__(self, key):
            self.key, self.clip_id = key, key.rpartition("_")[0]

    order = [chunk.key for chunk in interleave_by_clip([Chunk(k) for k in ("b_0", "a_1", "a_0", "b_1", "a_2")])]
    assert order == ["a_0", "b_0", "a_1", "b_1", "a_2"]


def test_mouth_tokens_are_those_that_meet_the_ground_truths_mouth_box():
    class PatchFour:  # the toy transformer's token grid: 4x4 latents per token
        def token_grid(self, latents):
            return latents.shape[2], latents.shape[3] // 4, latents.shape[4] // 4

    record = SimpleNamespace(height=128, width=128, latent_shape=(16, 25, 32, 32))
    truth = {"height": 128, "width": 128, "mouth": {"x": 0.5, "y": 0.68}, "head_radius": 38.9}
    weight = mouth_token_weight(PatchFour(), record, truth)
    assert weight.shape == (25 * 64,)
    frame = weight[:64].reshape(8, 8)  # 16x16-pixel tokens; box x 46.5-81.5, y 71.4-102.6 pixels
    assert frame.nonzero().tolist() == [[row, col] for row in (4, 5, 6) for col in (2, 3, 4, 5)]
    assert torch.equal(weight.reshape(25, 64), frame.flatten().repeat(25, 1))
    resized = SimpleNamespace(height=64, width=64, latent_shape=(16, 25, 16, 16))
    assert mouth_token_weight(PatchFour(), resized, truth) is None


def test_long_summary_reads_the_sync_bar_as_a_ratio_of_window_means():
    """A video whose first window scores near 0 gives a per-video ratio of 20; the ratio of the means over the
    videos with both windows scored does not explode with it."""
    from avatar_gen.toy.measure_long import LONG_FIGURES, summarise_long

    def record(first, last):
        figures = dict.fromkeys(LONG_FIGURES, 0.5)
        ratio = last / first if first is not None and last is not None else None
        return {**figures, "sync_first": first, "sync_last": last, "sync_ratio": ratio,
                "chunk_timing": {"1": {"seconds": 1.0, "peak_memory_mb": 900.0}}}

    summary = summarise_long([record(0.01, 0.2), record(0.3, 0.25), record(None, None)], timing_chunks=[1])
    assert summary["sync_ratio"]["mean"] == pytest.approx((20 + 0.25 / 0.3) / 2)
    assert summary["sync_ratio_of_means"] == {"ratio": pytest.approx(0.225 / 0.155), "n": 2, "of": 3}


@pytest.mark.parametrize("options, uses_defaults", [
    ({}, True), ({"handoff": "latent", "anchor": "portrait+colour"}, True),
    ({"handoff": "latent", "anchor": "auto", "handoff_frames": 1}, True),
    ({"handoff": "latent", "anchor": "portrait+colour", "handoff_frames": 1}, False),
    ({"handoff": "frame", "anchor": "none"}, False)])
def test_long_videos_made_with_default_hand_off_settings_are_keyed_on_the_defaults(tmp_path, options, uses_defaults):
    """A long video's cache key holds the hand-off defaults exactly when the request left something to them."""
    from avatar_gen.toy.measure_long import LongMeasureConfig, leaves_to_defaults

    config = LongMeasureConfig(checkpoints={"a": tmp_path}, held_out=tmp_path, out=tmp_path, **options)
    assert leaves_to_defaults(config) is uses_defaults


def test_a_second_measurement_into_the_same_out_is_refused(checkpoints, held_out, tmp_path, capsys):
    """Two runs into one --out would write the same cached videos at once: the second gets one line and exit 2,
    and writes nothing."""
    from avatar_gen.toy.measure import LOCK_FILE
    from avatar_gen.utils.io import acquire_exclusive_lock

    out = tmp_path / "busy"
    running = acquire_exclusive_lock(out / LOCK_FILE, "the first measurement")
    try:
        code = main(["measure-long", "--checkpoint", f"global={checkpoints['global']}", "--held_out", str(held_out),
                     "--out", str(out), "--portraits", "1", "--seconds", "1"])
    finally:
        running.close()
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1 and "another measurement is writing into" in error
    assert sorted(path.name for path in out.iterdir()) == [LOCK_FILE]
