"""Stage 2 (VAE latents) on the tiny LTX VAE of the model zoo: shapes, metadata, decoding, resume, shards,
bad inputs and CLI errors.  Videos are small (96x128 source, 64x96 target, 9-frame chunks) so the whole
file runs in well under a minute on a CPU."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar_gen.config import validate_config
from avatar_gen.latents import (LatentsConfig, decode_latents, denormalize_latents, encode_dataset, encode_frames,
                                load_vae, normalize_latents, stable_shard, stream_chunks)
from avatar_gen.latents.chunks import ClipReport
from avatar_gen.media import fit_frames, read_frames, run_ffmpeg, write_video, write_wav

REPO = Path(__file__).resolve().parent.parent
# The stage script is loaded from its file, as a user runs it (preprocessing/ is not a package).
_spec = importlib.util.spec_from_file_location("save_vae_latents", REPO / "preprocessing" / "save_vae_latents.py")
save_vae_latents = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(save_vae_latents)

HEIGHT, WIDTH, NUM_FRAMES, FPS = 64, 96, 9, 25
DESIGN_FIELDS = {"clip_id", "chunk", "video_path", "start_frame", "num_frames", "fps", "start_time", "end_time",
                 "height", "width", "latent_shape", "vae"}
VAE_FIELDS = {"name_or_path", "revision", "dtype", "latents_mean", "latents_std", "scaling_factor",
              "temporal_compression", "spatial_compression"}


def _moving_frames(num_frames: int, seed: int, height: int = 96, width: int = 128) -> np.ndarray:
    """Blocky random texture sliding sideways: every frame differs, and H.264 keeps it recognisable."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (height // 8, width // 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    return np.stack([np.roll(base, shift=3 * i, axis=1) for i in range(num_frames)])


def _write_clip(path: Path, num_frames: int, seed: int) -> Path:
    return write_video(path, _moving_frames(num_frames, seed), FPS, preset="ultrafast")


@pytest.fixture(scope="module")
def ltx_dir(tiny_zoo) -> Path:
    return tiny_zoo / "ltx-video"


@pytest.fixture(scope="module")
def tiny_vae(ltx_dir):
    return load_vae(str(ltx_dir), dtype="fp32", device="cpu")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """data/raw_videos with clips of 30 frames (3 chunks of 9 + 3 left over) and 20 frames (2 chunks + 2)."""
    root = tmp_path_factory.mktemp("data")
    raw = root / "raw_videos"
    _write_clip(raw / "clip_a.mp4", 30, seed=1)
    _write_clip(raw / "clip_b.mp4", 20, seed=2)
    return root


def _run_cli(*args: str) -> int:
    return save_vae_latents.main(list(args))


def _cli_args(inputs: Path, output: Path, ltx_dir: Path, **flags: str) -> list[str]:
    """Arguments for the stage script: the small test settings, overridden/extended by ``flags``."""
    values = {"inputs": str(inputs), "output_dir": str(output), "pretrained": str(ltx_dir), "height": str(HEIGHT),
              "width": str(WIDTH), "num_frames": str(NUM_FRAMES), "dtype": "fp32", "device": "cpu", **flags}
    return [item for name, value in values.items() for item in (f"--{name}", value)]


def _config(inputs: Path, output: Path, ltx_dir: Path, **overrides):
    values = dict(inputs=inputs, output_dir=output, pretrained=str(ltx_dir), height=HEIGHT, width=WIDTH,
                  num_frames=NUM_FRAMES, dtype="fp32", device="cpu")
    values.update(overrides)
    return validate_config(LatentsConfig, values)


def _chunk_files(folder: Path) -> list[str]:
    return sorted(path.stem for path in folder.glob("*.json") if not path.name.startswith("_"))


def test_cli_writes_latents_with_shapes_and_exact_metadata(data_root, ltx_dir, tiny_vae):
    output = data_root / "vae_latents"
    assert _run_cli(*_cli_args(data_root / "raw_videos", output, ltx_dir, batch_size="2")) == 0

    assert _chunk_files(output) == ["clip_a_0", "clip_a_1", "clip_a_2", "clip_b_0", "clip_b_1"]
    expected_vae = {
        "name_or_path": str(ltx_dir), "revision": None, "dtype": "fp32",
        "latents_mean": tiny_vae.vae.latents_mean.tolist(), "latents_std": tiny_vae.vae.latents_std.tolist(),
        "scaling_factor": 1.0,
    }
    for key in _chunk_files(output):
        clip_id, chunk = key.rsplit("_", 1)
        chunk = int(chunk)
        latents = torch.load(output / f"{key}.pt", weights_only=True)["latents"]
        # (C, (F - 1) / 8 + 1, H / 32, W / 32) with the tiny VAE's 8 channels
        assert tuple(latents.shape) == (8, 2, 2, 3)
        assert latents.dtype == torch.float32 and torch.isfinite(latents).all()
        metadata = json.loads((output / f"{key}.json").read_text())
        assert set(metadata) == DESIGN_FIELDS and set(metadata["vae"]) == VAE_FIELDS
        vae_metadata = metadata.pop("vae")
        assert {name: vae_metadata[name] for name in ("name_or_path", "revision", "dtype", "scaling_factor")} == {
            name: expected_vae[name] for name in ("name_or_path", "revision", "dtype", "scaling_factor")}
        assert vae_metadata["latents_mean"] == pytest.approx(expected_vae["latents_mean"])
        assert vae_metadata["latents_std"] == pytest.approx(expected_vae["latents_std"])
        assert metadata == {
            "clip_id": clip_id, "chunk": chunk, "video_path": f"raw_videos/{clip_id}.mp4",
            "start_frame": 9 * chunk, "num_frames": 9, "fps": 25.0,
            "start_time": pytest.approx(0.36 * chunk), "end_time": pytest.approx(0.36 * (chunk + 1)),
            "height": HEIGHT, "width": WIDTH, "latent_shape": [8, 2, 2, 3],
        }
    clip_state = json.loads((output / "_clips" / "clip_a.json").read_text())
    assert clip_state["status"] == "done" and clip_state["total_frames"] == 30
    assert clip_state["dropped_tail"] == {"start_frame": 27, "num_frames": 3}
    assert json.loads((output / "_skipped.json").read_text()) == []
    assert not list(output.glob(".tmp-*"))


def test_latent_frames_follow_num_frames(data_root, ltx_dir, tiny_vae, tmp_path):
    summary = encode_dataset(_config(data_root / "raw_videos" / "clip_a.mp4", tmp_path / "out", ltx_dir,
                                     num_frames=17, height=32, width=64), loaded_vae=tiny_vae)
    assert summary.chunks_written == 1  # 30 frames hold one 17-frame chunk
    latents = torch.load(tmp_path / "out" / "clip_a_0.pt", weights_only=True)["latents"]
    assert tuple(latents.shape) == (8, 3, 1, 2)


def test_stored_latents_are_the_vae_encoding_of_the_chunk_frames(data_root, ltx_dir, tiny_vae):
    output = data_root / "vae_latents"
    if not (output / "clip_a_1.json").exists():
        assert _run_cli(*_cli_args(data_root / "raw_videos", output, ltx_dir)) == 0
    frames = read_frames(data_root / "raw_videos" / "clip_a.mp4", fps=FPS)[9:18]
    expected = encode_frames(tiny_vae.vae, fit_frames(frames, HEIGHT, WIDTH))
    stored = torch.load(output / "clip_a_1.pt", weights_only=True)["latents"]
    torch.testing.assert_close(stored, expected, rtol=1e-4, atol=1e-5)


def test_decoding_stored_latents_gives_frames_of_the_requested_size(data_root, ltx_dir, tiny_vae):
    output = data_root / "vae_latents"
    if not (output / "clip_b_0.json").exists():
        assert _run_cli(*_cli_args(data_root / "raw_videos", output, ltx_dir)) == 0
    latents = torch.load(output / "clip_b_0.pt", weights_only=True)["latents"]
    frames = decode_latents(tiny_vae.vae, latents)
    assert frames.shape == (9, HEIGHT, WIDTH, 3) and frames.dtype == np.uint8
    resized = decode_latents(tiny_vae.vae, latents, height=80, width=120)
    assert resized.shape == (9, 80, 120, 3)
    batched = decode_latents(tiny_vae.vae, torch.stack([latents, latents]))
    assert batched.shape == (2, 9, HEIGHT, WIDTH, 3)
    assert np.abs(batched[0].astype(int) - frames).max() <= 1  # batched float maths may round differently


def test_rerun_skips_finished_work_and_overwrite_redoes_it(data_root, ltx_dir, tiny_vae, tmp_path):
    output = tmp_path / "latents"
    config = _config(data_root / "raw_videos", output, ltx_dir)
    first = encode_dataset(config, loaded_vae=tiny_vae)
    assert first.chunks_written == 5 and first.clips_done == 2
    stamps = {path.name: path.stat().st_mtime_ns for path in output.glob("clip_*")}

    again = encode_dataset(config, loaded_vae=tiny_vae)
    assert again.chunks_written == 0 and again.clips_already_finished == 2
    assert {path.name: path.stat().st_mtime_ns for path in output.glob("clip_*")} == stamps

    # An interrupted run: one chunk lost its .json (the completion mark), a temporary file was left behind.
    (output / "clip_a_1.json").unlink()
    (output / ".tmp-clip_a_2-x.pt").write_bytes(b"half")
    resumed = encode_dataset(config, loaded_vae=tiny_vae)
    assert resumed.chunks_written == 1 and resumed.chunks_skipped_done == 2
    assert (output / "clip_a_1.json").exists() and not list(output.glob(".tmp-*"))
    assert _chunk_files(output) == ["clip_a_0", "clip_a_1", "clip_a_2", "clip_b_0", "clip_b_1"]

    # Other settings do not count as done: another frame rate redoes the chunks.
    changed = encode_dataset(_config(data_root / "raw_videos", output, ltx_dir, fps=20), loaded_vae=tiny_vae)
    assert changed.chunks_written == 3  # 1.2 s and 0.8 s at 20 fps: 24 and 16 frames, 2 + 1 chunks of 9
    assert json.loads((output / "clip_a_0.json").read_text())["fps"] == 20.0

    redone = encode_dataset(_config(data_root / "raw_videos", output, ltx_dir, fps=20, overwrite=True),
                            loaded_vae=tiny_vae)
    assert redone.chunks_written == changed.chunks_written and redone.clips_already_finished == 0


def test_prefetching_gives_the_same_latents_as_serial_decoding(data_root, ltx_dir, tiny_vae, tmp_path):
    outputs = {}
    for prefetch in (0, 3):
        output = tmp_path / f"prefetch{prefetch}"
        encode_dataset(_config(data_root / "raw_videos", output, ltx_dir, prefetch=prefetch, batch_size=2),
                       loaded_vae=tiny_vae)
        outputs[prefetch] = {path.stem: torch.load(path, weights_only=True)["latents"]
                             for path in sorted(output.glob("clip_*.pt"))}
    assert list(outputs[0]) == list(outputs[3]) and len(outputs[0]) == 5
    for key, latents in outputs[0].items():
        assert torch.equal(latents, outputs[3][key]), key


def test_two_shards_are_disjoint_and_complete(ltx_dir, tiny_vae, tmp_path, monkeypatch):
    raw = tmp_path / "raw_videos"
    clip_ids = [f"speaker{i}" for i in range(6)]
    assert {stable_shard(clip_id, 2) for clip_id in clip_ids} == {0, 1}  # both shards get work
    for seed, clip_id in enumerate(clip_ids):
        _write_clip(raw / f"{clip_id}.mp4", 10, seed=seed)
    output = tmp_path / "vae_latents"
    written = []
    for shard in ("0/2", "1/2"):
        before = set(_chunk_files(output)) if output.exists() else set()
        assert _run_cli(*_cli_args(raw, output, ltx_dir, shard=shard)) == 0
        written.append(set(_chunk_files(output)) - before)
    assert written[0] and written[1] and not written[0] & written[1]
    assert written[0] | written[1] == {f"{clip_id}_0" for clip_id in clip_ids}
    assert written[0] == {f"{c}_0" for c in clip_ids if stable_shard(c, 2) == 0}

    # Under torchrun the shard comes from RANK / WORLD_SIZE.
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    torchrun_output = tmp_path / "torchrun"
    assert _run_cli(*_cli_args(raw, torchrun_output, ltx_dir)) == 0
    assert set(_chunk_files(torchrun_output)) == written[1]


def test_bad_inputs_are_recorded_and_the_run_goes_on(ltx_dir, tmp_path):
    raw = tmp_path / "raw_videos"
    _write_clip(raw / "good.mp4", 12, seed=3)
    _write_clip(raw / "too_short.mp4", 5, seed=4)
    (raw / "text.mp4").write_text("this is not a video\n")
    (raw / "zero.mp4").write_bytes(b"")
    tone = (0.1 * np.sin(np.arange(16000) / 16000 * 2 * np.pi * 440)).astype(np.float32)
    wav = write_wav(tmp_path / "tone.wav", tone)
    run_ffmpeg(["-y", "-i", str(wav), "-c:a", "aac", "-f", "mp4", str(raw / "audio_only.mp4")])
    truncated = (raw / "good.mp4").read_bytes()
    (raw / "truncated.mp4").write_bytes(truncated[: len(truncated) // 3])
    # A download cut off at 70 %: the frames that are there decode quietly; the complete chunks are kept.
    cut = _write_clip(tmp_path / "long.mp4", 60, seed=5).read_bytes()
    (raw / "cut_off.mp4").write_bytes(cut[: int(len(cut) * 0.7)])
    output = tmp_path / "vae_latents"

    assert _run_cli(*_cli_args(raw, output, ltx_dir)) == 0

    skipped = {entry["clip_id"]: entry for entry in json.loads((output / "_skipped.json").read_text())}
    assert set(skipped) == {"too_short", "text", "zero", "audio_only", "truncated", "cut_off"}
    partial = skipped.pop("cut_off")
    assert partial["status"] == "partial" and partial["chunks"] >= 1
    assert partial["reason"].startswith(f"truncated or corrupt: decoded {partial['total_frames']} frames")
    assert _chunk_files(output) == [f"cut_off_{k}" for k in range(partial["chunks"])] + ["good_0"]
    assert all(entry["status"] == "skipped" and entry["chunks"] == 0 for entry in skipped.values())
    assert "too short: 5 frames" in skipped["too_short"]["reason"]
    assert "not a readable video" in skipped["text"]["reason"]
    assert "empty file" in skipped["zero"]["reason"]
    assert "no video stream" in skipped["audio_only"]["reason"]
    assert skipped["truncated"]["reason"]
    # A re-run does not decode the bad files again (nothing changed), and still lists them.
    assert _run_cli(*_cli_args(raw, output, ltx_dir)) == 0
    assert {e["clip_id"] for e in json.loads((output / "_skipped.json").read_text())} == {*skipped, "cut_off"}


def test_transcripts_select_kept_clips_and_centre_the_crop_on_the_face(data_root, ltx_dir, tiny_vae, tmp_path):
    records = [
        {"clip_id": "clip_a", "video_path": "raw_videos/clip_a.mp4", "language": "en", "duration": 1.2, "fps": 25,
         "source": {"youtube_id": "abcdefghijk", "start": 0.0, "end": 1.2, "face_x": 0.75, "face_y": 0.5},
         "transcript": []},
    ]
    transcripts = data_root / "video_transcripts_test.json"
    transcripts.write_text(json.dumps(records))
    output = tmp_path / "vae_latents"
    summary = encode_dataset(_config(data_root / "raw_videos", output, ltx_dir, transcripts=transcripts),
                             loaded_vae=tiny_vae)
    assert summary.clips == 1 and _chunk_files(output) == ["clip_a_0", "clip_a_1", "clip_a_2"]
    state = json.loads((output / "_clips" / "clip_a.json").read_text())
    assert state["face_center"] == [0.75, 0.5]
    # 96x128 source, 64x96 target: the largest 3:2 box spans the full width, so only y is centred (on 0.5).
    assert state["crop"] == [5, 0, 85, 128]
    tall = encode_dataset(_config(None, tmp_path / "tall", ltx_dir, transcripts=transcripts, height=64, width=32),
                          loaded_vae=tiny_vae)
    assert tall.chunks_written == 3
    crop = json.loads((tmp_path / "tall" / "_clips" / "clip_a.json").read_text())["crop"]
    assert crop == [0, 72, 96, 48]  # a 1:2 box centred on x = 0.75 * 128 = 96 (a centred crop has left = 40)


def test_stream_chunks_overlapping_and_gapped_strides(data_root):
    path = data_root / "raw_videos" / "clip_a.mp4"  # 30 frames
    overlapping = list(stream_chunks(path, "clip_a", FPS, HEIGHT, WIDTH, num_frames=9, stride=4))
    assert [chunk.start_frame for chunk in overlapping] == [0, 4, 8, 12, 16, 20]
    np.testing.assert_array_equal(overlapping[0].frames[4:], overlapping[1].frames[:5])
    report = ClipReport()
    gapped = list(stream_chunks(path, "clip_a", FPS, HEIGHT, WIDTH, num_frames=9, stride=12, report=report))
    assert [chunk.start_frame for chunk in gapped] == [0, 12]
    np.testing.assert_array_equal(gapped[1].frames[0], overlapping[3].frames[0])
    assert report.total_frames == 30 and report.dropped_tail(9, 12) == {"start_frame": 24, "num_frames": 6}
    skipping = list(stream_chunks(path, "clip_a", FPS, HEIGHT, WIDTH, num_frames=9, stride=9,
                                  wanted=lambda index: index != 1))
    assert [chunk.index for chunk in skipping] == [0, 2]


def test_load_vae_accepts_pipeline_and_bare_vae_folders(ltx_dir, tiny_vae):
    bare = load_vae(str(ltx_dir / "vae"), dtype="fp32", device="cpu")
    pixels = torch.rand(1, 3, 9, 32, 32) * 2 - 1
    torch.testing.assert_close(encode_frames(bare.vae, pixels), encode_frames(tiny_vae.vae, pixels))
    assert bare.metadata()["latents_std"] == tiny_vae.metadata()["latents_std"]


def test_normalisation_round_trip(tiny_vae):
    latents = torch.randn(2, 8, 2, 2, 3)
    stats = tiny_vae.metadata()
    normalised = normalize_latents(latents, stats["latents_mean"], stats["latents_std"], 1.0)
    expected = (latents[:, 0] - stats["latents_mean"][0]) / stats["latents_std"][0]
    torch.testing.assert_close(normalised[:, 0], expected)
    torch.testing.assert_close(denormalize_latents(normalised, stats["latents_mean"], stats["latents_std"], 1.0),
                               latents, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("flags, message", [
    ({"height": "100"}, "error: --height 100 and --width 96 must be multiples of 32: the VAE "),
    ({"num_frames": "96"}, "error: --num_frames 96 must be 8k+1 (9, 17, 25, ...): the VAE "),
    ({"shard": "2/2"}, "error: --shard 2/2: need 0 <= I < N"),
    ({"pretrained": "./no/such/folder"}, "error: LTX-Video VAE folder not found: ./no/such/folder"),
    ({"pretrained": "no-such-org/no-such-model"},
     "error: cannot load the LTX-Video VAE from Hugging Face hub id 'no-such-org/no-such-model'"),
])
def test_cli_errors_are_one_line_with_exit_2(data_root, ltx_dir, tmp_path, capsys, flags, message):
    assert _run_cli(*_cli_args(data_root / "raw_videos", tmp_path / "out", ltx_dir, **flags)) == 2
    error_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and error_lines[0].startswith(message), error_lines
    assert not (tmp_path / "out").exists()  # nothing written before the settings and the model are good


def test_cli_missing_inputs_is_a_user_error(ltx_dir, tmp_path, capsys):
    assert _run_cli("--inputs", str(tmp_path / "nothing"), "--output_dir", str(tmp_path / "o"),
                    "--pretrained", str(ltx_dir)) == 2
    assert capsys.readouterr().err.strip().endswith(f"--inputs not found: {tmp_path / 'nothing'}")


def test_synthetic_talking_clip_from_transcripts(synthetic_dataset, ltx_dir, tiny_vae, tmp_path):
    """A scraper-style record for a synthetic talking clip: face-centred crop, every complete chunk encoded."""
    _, clips = synthetic_dataset
    clip = next(clip for clip in clips if clip.kind == "speech")
    raw = tmp_path / "raw_videos"
    raw.mkdir()
    shutil.copy(clip.video_path, raw / clip.video_path.name)  # the shared fixture stays untouched
    record = {"clip_id": clip.clip_id, "video_path": f"raw_videos/{clip.video_path.name}", "language": "en",
              "duration": clip.duration, "fps": clip.fps, "transcript": [],
              "source": {"youtube_id": clip.clip_id, "start": 0.0, "end": clip.duration,
                         "face_x": clip.face_x, "face_y": clip.face_y}}
    transcripts = tmp_path / "video_transcripts.json"
    transcripts.write_text(json.dumps([record]))
    output = tmp_path / "vae_latents"
    summary = encode_dataset(_config(None, output, ltx_dir, transcripts=transcripts, height=64, width=32,
                                     num_frames=33), loaded_vae=tiny_vae)
    expected_chunks = (clip.num_frames - 33) // 33 + 1
    assert summary.chunks_written == expected_chunks and summary.clips_done == 1
    latents = torch.load(output / f"{clip.clip_id}_0.pt", weights_only=True)["latents"]
    assert tuple(latents.shape) == (8, 5, 2, 1)
    metadata = json.loads((output / f"{clip.clip_id}_{expected_chunks - 1}.json").read_text())
    assert metadata["video_path"] == f"raw_videos/{clip.video_path.name}"
    assert metadata["end_time"] == pytest.approx(expected_chunks * 33 / clip.fps)
    state = json.loads((output / "_clips" / f"{clip.clip_id}.json").read_text())
    top, left, crop_height, crop_width = state["crop"]
    size = state["source_size"][1]
    expected_left = min(max(clip.face_x * size - crop_width / 2, 0), size - crop_width)
    assert abs(left - expected_left) <= 1 and crop_height == size  # a 1:2 box, full height, centred on the face
    assert state["dropped_tail"] == {"start_frame": expected_chunks * 33,
                                     "num_frames": clip.num_frames - expected_chunks * 33}


def test_clip_ids_that_would_escape_the_output_folder_are_left_out(data_root, tmp_path):
    from avatar_gen.latents import collect_clips

    records = [{"clip_id": clip_id, "video_path": "raw_videos/clip_a.mp4"}
               for clip_id in ("../escape", ".hidden", "ok_clip", "a\\b")]
    transcripts = data_root / "video_transcripts_unsafe.json"
    transcripts.write_text(json.dumps(records))
    assert [clip.clip_id for clip in collect_clips(None, transcripts)] == ["ok_clip"]


@pytest.mark.slow  # a fresh interpreter importing torch + diffusers: 15-50 s on 2 busy cores
def test_seed_command_runs_as_written_in_a_subprocess(data_root, ltx_dir, tmp_path):
    """``python preprocessing/save_vae_latents.py --inputs ./data/raw_videos --output_dir ./data/vae_latents``
    from the project folder, with only the model and the small size added."""
    (tmp_path / "data").mkdir()
    shutil.copytree(data_root / "raw_videos", tmp_path / "data" / "raw_videos")
    completed = subprocess.run(
        [sys.executable, str(REPO / "preprocessing" / "save_vae_latents.py"), "--inputs", "./data/raw_videos",
         "--output_dir", "./data/vae_latents", "--pretrained", str(ltx_dir), "--height", "64", "--width", "64",
         "--num_frames", "17", "--dtype", "fp32"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert _chunk_files(tmp_path / "data" / "vae_latents") == ["clip_a_0", "clip_b_0"]
    metadata = json.loads((tmp_path / "data" / "vae_latents" / "clip_b_0.json").read_text())
    assert metadata["video_path"] == "raw_videos/clip_b.mp4" and metadata["latent_shape"] == [8, 3, 2, 2]


def test_bf16_default_dtype_stores_bf16_latents(data_root, ltx_dir, tmp_path):
    output = tmp_path / "bf16"
    config = _config(data_root / "raw_videos" / "clip_b.mp4", output, ltx_dir, dtype="bf16", height=32, width=32)
    assert encode_dataset(config).chunks_written == 2  # loads the VAE itself, in bf16
    latents = torch.load(output / "clip_b_0.pt", weights_only=True)["latents"]
    assert latents.dtype == torch.bfloat16 and tuple(latents.shape) == (8, 2, 1, 1)
    assert json.loads((output / "clip_b_0.json").read_text())["vae"]["dtype"] == "bf16"


def test_a_vae_of_another_geometry_encodes_trains_and_generates(tmp_path, capsys):
    """A patch-only VAE (4x in space, none in time, as the toy world's): the stage takes any sides that are multiples
    of 4 and any frame count, refuses others after loading the VAE in one line; training and inference read its
    factors from the chunks and the checkpoint, not LTX's."""
    from avatar_gen.audio.features import AudioEncoderSpec
    from avatar_gen.audio.pipeline import AudioLatentsConfig, save_audio_latents
    from avatar_gen.errors import UserError
    from avatar_gen.inference import AvatarGenerator
    from avatar_gen.synthetic.dataset import make_portrait
    from avatar_gen.tiny.ltx import write_tiny_ltx
    from avatar_gen.training.config import TrainConfig
    from avatar_gen.training.trainer import Trainer

    pipeline = write_tiny_ltx(tmp_path, patch_only_vae=True, folder="ltx-patch4")
    tone = (0.3 * np.sin(np.arange(19200) / 16000 * 2 * np.pi * 220) * (np.arange(19200) % 4000 < 2000))
    write_video(tmp_path / "raw_videos" / "clip_p.mp4", _moving_frames(30, seed=3), FPS, audio=tone.astype(np.float32),
                preset="ultrafast")
    settings = {"height": "48", "width": "48", "num_frames": "6"}  # neither LTX's 32 nor 8k+1
    assert _run_cli(*_cli_args(tmp_path / "raw_videos", tmp_path / "bad", pipeline, **dict(settings, width="50"))) == 2
    assert "error: --height 48 and --width 50 must be multiples of 4: the VAE " in capsys.readouterr().err
    assert _run_cli(*_cli_args(tmp_path / "raw_videos", tmp_path / "vae_latents", pipeline, **settings)) == 0
    chunk = json.loads((tmp_path / "vae_latents" / "clip_p_0.json").read_text())
    assert chunk["latent_shape"] == [8, 6, 12, 12] and len(list((tmp_path / "vae_latents").glob("*.pt"))) == 5
    assert (chunk["vae"]["temporal_compression"], chunk["vae"]["spatial_compression"]) == (1, 4)

    save_audio_latents(validate_config(AudioLatentsConfig, {
        "latents_dir": tmp_path / "vae_latents", "audio_out": tmp_path / "audio_wav",
        "ff_out": tmp_path / "audio_latents", "audio_source": "original",
        "encoder": AudioEncoderSpec(encoder="logmel", mel_bands=8)}))
    config = validate_config(TrainConfig, {
        "output_dir": str(tmp_path / "run"), "model": {"pretrained": str(pipeline), "dtype": "float32"},
        "lora": {"train_mode": "full"}, "audio": {"feature_dim": 8, "hidden_dim": 16, "input_norm": "none"},
        "data": {"vae_latents": str(tmp_path / "vae_latents"), "audio_latents": str(tmp_path / "audio_latents"),
                 "held_out_fraction": 0.0, "batch_size": 2, "num_workers": 0},
        "optimization": {"max_steps": 2, "warmup_steps": 0}, "validation": {"held_out_chunks": 0},
        "acceleration": {"device": "cpu", "mixed_precision": "fp32", "gradient_checkpointing": False},
        "logging": {"tensorboard": False}})
    trained = Trainer(config).train()
    metadata = json.loads((trained.checkpoint / "avatar_checkpoint.json").read_text())
    assert (metadata["temporal_compression"], metadata["spatial_compression"]) == (1, 4)
    assert all(np.isfinite(row["loss"]) for row in trained.history if row["kind"] == "train")

    generator = AvatarGenerator.load(trained.checkpoint)
    portrait = make_portrait(tmp_path / "face.png", seed=1, size=96)
    with pytest.raises(UserError, match="multiples of 4"):  # whole latents: 4x VAE x transformer patch 1
        generator.generate(portrait, text="Hi.", output=tmp_path / "no.mp4", steps=2, height=50)
    # the trained 48 px (diffusers' pipeline needed 32k; the project's own loop needs whole latents and tokens)
    result = generator.generate(portrait, text="Hi there.", output=tmp_path / "yes.mp4", steps=2)
    assert (result.height, result.width) == (48, 48)
    assert result.num_chunks > 1 and result.video_path.is_file()  # chunks of 6 frames, any count with t = 1


def test_face_track_mouth_boxes_find_each_talking_mouth_in_the_encoded_frames(synthetic_dataset, ltx_dir, tiny_vae,
                                                                              tmp_path, capsys):
    """preprocessing/save_mouth_boxes.py on face-centred crops of the synthetic clips: each talking clip's box (in
    the encoded frames) holds its true mouth, mapped through the latents stage's crop, and is a small part of the
    frame; a re-run keeps what exists; a record that leads outside the data root, or a corrupt one, gets no box and a
    non-zero exit, and the other clips still get theirs."""
    from avatar_gen.latents.regions import read_mouth_box
    from avatar_gen.synthetic import load_ground_truth

    spec = importlib.util.spec_from_file_location("save_mouth_boxes", REPO / "preprocessing" / "save_mouth_boxes.py")
    save_mouth_boxes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(save_mouth_boxes)
    _, clips = synthetic_dataset
    raw = tmp_path / "raw_videos"
    raw.mkdir()
    records = []
    for clip in clips:
        shutil.copy(clip.video_path, raw / clip.video_path.name)
        records.append({"clip_id": clip.clip_id, "video_path": f"raw_videos/{clip.video_path.name}", "language": "en",
                        "duration": clip.duration, "fps": clip.fps, "transcript": [],
                        "source": {"youtube_id": clip.clip_id, "start": 0.0, "end": clip.duration,
                                   "face_x": clip.face_x, "face_y": clip.face_y}})
    (tmp_path / "video_transcripts.json").write_text(json.dumps(records))
    latents = tmp_path / "vae_latents"
    encode_dataset(_config(None, latents, ltx_dir, transcripts=tmp_path / "video_transcripts.json", height=160,
                           width=128, num_frames=9), loaded_vae=tiny_vae)
    boxes = tmp_path / "mouth_boxes"
    assert save_mouth_boxes.main(["--latents_dir", str(latents), "--out", str(boxes)]) == 0
    for clip in clips:
        truth = load_ground_truth(clip.ground_truth_path)
        box = read_mouth_box(boxes / f"{clip.clip_id}.json")
        assert (box.width, box.height) == (128, 160)
        if clip.kind == "silent":
            continue  # a closed mouth: whatever the detector says, there is nothing to check against
        state = json.loads((latents / "_clips" / f"{clip.clip_id}.json").read_text())
        top, left, crop_height, crop_width = state["crop"]
        mouth_x = (truth["mouth"]["x"] * truth["width"] - left) / crop_width
        mouth_y = (truth["mouth"]["y"] * truth["height"] - top) / crop_height
        if clip.kind == "two_faces" and box.box is None:
            continue  # the crop cuts into the second figure; the detector may find too few faces: then no box
        assert box.box is not None, (clip.kind, box.reason)
        box_left, box_top, box_right, box_bottom = box.box
        assert box_left < mouth_x < box_right and box_top < mouth_y < box_bottom, (clip.kind, box.box, mouth_x, mouth_y)
        assert (box_right - box_left) * (box_bottom - box_top) < 0.15
    written = {path: path.stat().st_mtime_ns for path in boxes.glob("*.json")}
    assert save_mouth_boxes.main(["--latents_dir", str(latents), "--out", str(boxes)]) == 0
    assert {path: path.stat().st_mtime_ns for path in boxes.glob("*.json")} == written
    state_path = latents / "_clips" / f"{clips[0].clip_id}.json"
    state = json.loads(state_path.read_text())
    state_path.write_text(json.dumps(dict(state, video_path="../../../etc/passwd")))
    (latents / "_clips" / f"{clips[1].clip_id}.json").write_text("{not json")  # a state cut off mid-write
    assert save_mouth_boxes.main(["--latents_dir", str(latents), "--out", str(tmp_path / "again")]) == 1
    assert not (tmp_path / "again" / f"{clips[0].clip_id}.json").exists()
    assert not (tmp_path / "again" / f"{clips[1].clip_id}.json").exists()
    assert len(list((tmp_path / "again").glob("*.json"))) == len(clips) - 2  # the others were written
    assert save_mouth_boxes.main(["--latents_dir", str(tmp_path / "nothing"), "--out", str(boxes)]) == 2
    assert "no clip states" in capsys.readouterr().err
