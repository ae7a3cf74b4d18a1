"""The audio-latents stage end to end on synthetic clips with the tiny encoders (CPU, offline)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from avatar_gen.audio.alignment import fit_speech_to_window, time_stretch, trim_silence, tts_aligned
from avatar_gen.audio.features import AudioEncoderSpec, load_audio_encoder
from avatar_gen.audio.pipeline import AudioLatentsConfig, save_audio_latents, words_in_window
from avatar_gen.config import validate_config
from avatar_gen.errors import ConfigError
from avatar_gen.media.audio import SAMPLE_RATE, read_audio, rms_envelope
from avatar_gen.media.video import write_video

def make_config(**values) -> AudioLatentsConfig:
    return validate_config(AudioLatentsConfig, values)


SCRIPT_DIR = Path(__file__).resolve().parent.parent / "preprocessing"
CHUNK_FRAMES = 33  # 1.32 s at 25 fps, an 8k+1 chunk as the VAE stage makes them


@pytest.fixture(autouse=True)
def _restore_logging():
    """The stage script configures logging for the process; put the test runner's handlers back after it,
    so that no handler keeps writing to a captured stream that pytest has closed."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _import_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("save_text_latents", SCRIPT_DIR / "save_text_latents.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _chunk_record(clip_id: str, index: int, video_path: str, start_frame: int, num_frames: int, fps: float) -> dict:
    """A VAE-stage ``<clip>_<k>.json`` with the fields of DESIGN.md."""
    return {"clip_id": clip_id, "chunk": index, "video_path": video_path, "start_frame": start_frame,
            "num_frames": num_frames, "fps": fps, "start_time": start_frame / fps,
            "end_time": (start_frame + num_frames) / fps, "height": 64, "width": 64, "latent_shape": [8, 5, 2, 2]}


def _transcript_record(clip, truth: dict) -> dict:
    """A scraper ``video_transcripts.json`` record built from a synthetic clip's ground truth."""
    words = [{"word": word["word"], "start": word["start"], "end": word["end"], "probability": 1.0}
             for word in truth["words"]]
    segments = [{"start": words[0]["start"], "end": words[-1]["end"], "text": truth["text"], "words": words}] \
        if words else []
    return {"clip_id": clip.clip_id, "video_path": f"raw_videos/{clip.clip_id}.mp4", "source": {},
            "language": "en", "duration": clip.duration, "fps": clip.fps, "transcript": segments}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, synthetic_dataset):
    """A data folder as the earlier stages leave it: raw_videos/, video_transcripts.json, vae_latents/.

    Chunks: two 33-frame chunks of every talking clip at 25 fps, one 31-frame chunk read at 30 fps
    (odd length, other rate), and the silent clip's first chunk (empty transcript window)."""
    _, clips = synthetic_dataset
    root = tmp_path_factory.mktemp("audio_data")
    (root / "raw_videos").mkdir()
    latents = root / "vae_latents"
    latents.mkdir()
    transcripts = []
    for clip in clips:
        if clip.kind == "two_faces":
            continue
        shutil.copy(clip.video_path, root / "raw_videos" / f"{clip.clip_id}.mp4")
        truth = json.loads(Path(clip.ground_truth_path).read_text())
        transcripts.append(_transcript_record(clip, truth))
        starts = [0] if clip.kind == "silent" else [0, CHUNK_FRAMES]
        for index, start in enumerate(starts):
            record = _chunk_record(clip.clip_id, index, f"raw_videos/{clip.clip_id}.mp4", start, CHUNK_FRAMES, 25.0)
            (latents / f"{clip.clip_id}_{index}.json").write_text(json.dumps(record))
    talking = next(clip for clip in clips if clip.kind == "speech")
    odd = _chunk_record(talking.clip_id, 7, f"raw_videos/{talking.clip_id}.mp4", 9, 31, 30.0)
    (latents / f"{talking.clip_id}_7.json").write_text(json.dumps(odd))
    (root / "video_transcripts.json").write_text(json.dumps(transcripts))
    return root


def _run_script(root: Path, *extra: str, ff_out: str = "audio_latents", audio_out: str = "audio_wav") -> int:
    return _import_script().main([
        "--latents_dir", str(root / "vae_latents"), "--transcripts", str(root / "video_transcripts.json"),
        "--audio_out", str(root / audio_out), "--ff_out", str(root / ff_out), *extra])


def test_stage_script_end_to_end_and_resume(data_root, tiny_zoo):
    wav2vec2 = str(tiny_zoo / "wav2vec2")
    assert _run_script(data_root, "--audio_source", "original", "--encoder", "wav2vec2", "--wav2vec2", wav2vec2,
                       "--layers", "1,2", "--batch_size", "3") == 0
    records = sorted((data_root / "vae_latents").glob("*.json"))
    assert len(records) == 10  # 4 talking clips x 2 chunks, the 30 fps chunk, the silent clip
    for record_path in records:
        chunk = json.loads(record_path.read_text())
        key = record_path.stem
        features = np.load(data_root / "audio_latents" / f"{key}_ff.npy")
        assert features.shape == (chunk["num_frames"], 64)  # two 32-d layers concatenated
        audio = read_audio(data_root / "audio_wav" / f"{key}.wav")
        assert len(audio) == round(chunk["num_frames"] / chunk["fps"] * SAMPLE_RATE)
        text = json.loads((data_root / "audio_latents" / f"{key}_text.json").read_text())
        assert text["num_frames"] == chunk["num_frames"] and text["fps"] == chunk["fps"]
        assert text["audio_source"] == "original" and text["tts"] is None
        assert text["encoder"] == {"encoder": "wav2vec2", "name_or_path": wav2vec2, "layers": [1, 2],
                                   "layer_reduce": "concat", "feature_dim": 64, "mel_bands": None}
        for word in text["words"]:  # chunk-relative times that overlap the window
            assert word["end"] > 0 and word["start"] < chunk["num_frames"] / chunk["fps"]
    silent = next(path.stem for path in records if not json.loads(
        (data_root / "audio_latents" / f"{path.stem}_text.json").read_text())["words"])
    assert "empty_window" in json.loads((data_root / "audio_latents" / f"{silent}_text.json").read_text())["flags"]

    # The chunk's wav is exactly the clip's audio over the window.
    first = json.loads(records[0].read_text())
    from avatar_gen.media.audio import extract_audio

    expected = extract_audio(data_root / first["video_path"], SAMPLE_RATE, first["start_time"],
                             first["num_frames"] / first["fps"])
    np.testing.assert_allclose(read_audio(data_root / "audio_wav" / f"{records[0].stem}.wav"), expected, atol=1e-3)

    # Resume: nothing is redone; --overwrite redoes; another encoder into the same folder is refused.
    stamps = {path: path.stat().st_mtime_ns for path in (data_root / "audio_latents").iterdir()}
    assert _run_script(data_root, "--audio_source", "original", "--wav2vec2", wav2vec2, "--layers", "1,2") == 0
    assert stamps == {path: path.stat().st_mtime_ns for path in (data_root / "audio_latents").iterdir()}
    assert _run_script(data_root, "--audio_source", "original", "--wav2vec2", wav2vec2, "--layers", "2") == 2
    assert _run_script(data_root, "--audio_source", "original", "--wav2vec2", wav2vec2, "--layers", "2",
                       "--overwrite") == 0
    assert np.load(data_root / "audio_latents" / f"{records[0].stem}_ff.npy").shape[1] == 32


def test_logmel_run_with_default_bands_resumes(data_root):
    """The logmel spec records its band count even when left to the default, so the same command run again
    resumes instead of refusing the folder as made "with another encoder"."""
    arguments = ("--audio_source", "original", "--encoder", "logmel")
    assert _run_script(data_root, *arguments, ff_out="audio_latents_logmel", audio_out="audio_wav_logmel") == 0
    folder = data_root / "audio_latents_logmel"
    text = json.loads(next(folder.glob("*_text.json")).read_text())
    assert text["encoder"]["mel_bands"] == 40
    stamps = {path: path.stat().st_mtime_ns for path in folder.iterdir()}
    assert _run_script(data_root, *arguments, ff_out="audio_latents_logmel", audio_out="audio_wav_logmel") == 0
    assert stamps == {path: path.stat().st_mtime_ns for path in folder.iterdir()}


def test_stage_cli_mistakes_are_one_line_errors(data_root, tiny_zoo, capsys):
    assert _run_script(data_root, "--encoder", "faceformer") == 2
    assert "--faceformer_ckpt" in capsys.readouterr().err
    assert _run_script(data_root, "--layers", "last") == 2
    assert _import_script().main(["--latents_dir", str(data_root / "absent"), "--audio_out", "a", "--ff_out", "b",
                                  "--audio_source", "original"]) == 2
    with pytest.raises(ConfigError, match="needs transcripts"):
        make_config(latents_dir=data_root / "vae_latents", audio_out=data_root / "a", ff_out=data_root / "b",
                    audio_source="tts")


def test_shards_are_disjoint_and_complete(data_root, tiny_zoo):
    spec = AudioEncoderSpec(encoder="faceformer", name_or_path=str(tiny_zoo / "faceformer.pth"))
    encoder = load_audio_encoder(spec)
    made = []
    for index in range(2):
        config = make_config(latents_dir=data_root / "vae_latents", transcripts=data_root / "video_transcripts.json",
                             audio_out=data_root / "shard_wav", ff_out=data_root / f"shard_{index}",
                             audio_source="original", encoder=spec, shard_index=index, shard_count=2)
        summary = save_audio_latents(config, encoder)
        assert summary.done == summary.total and not summary.failed
        made.append({path.name[: -len("_ff.npy")] for path in (data_root / f"shard_{index}").glob("*_ff.npy")})
    assert not made[0] & made[1]
    assert made[0] | made[1] == {path.stem for path in (data_root / "vae_latents").glob("*.json")}


def test_faults_are_recorded_per_chunk(tmp_path, data_root, tiny_zoo, monkeypatch):
    root = tmp_path / "faults"
    shutil.copytree(data_root / "raw_videos", root / "raw_videos")
    latents = root / "vae_latents"
    latents.mkdir()
    transcripts = json.loads((data_root / "video_transcripts.json").read_text())
    talking = next(record for record in transcripts if record["transcript"])
    # A clip without an audio stream, one missing from the transcripts, non-ASCII and absurdly long text.
    write_video(root / "raw_videos" / "mute.mp4", np.zeros((CHUNK_FRAMES, 64, 64, 3), np.uint8), 25.0)
    mute = {**talking, "clip_id": "mute", "video_path": "raw_videos/mute.mp4"}
    accented = json.loads(json.dumps(talking))
    accented["clip_id"] = "accented"
    accented["transcript"][0]["words"][0]["word"] = "Café"
    shutil.copy(root / "raw_videos" / f"{talking['clip_id']}.mp4", root / "raw_videos" / "accented.mp4")
    accented["video_path"] = "raw_videos/accented.mp4"
    chatty = {**talking, "clip_id": "chatty", "transcript": [
        {"start": 0.0, "end": 1.0, "text": "word " * 300,
         "words": [{"word": "word", "start": i / 300, "end": (i + 1) / 300} for i in range(300)]}]}
    (root / "video_transcripts.json").write_text(json.dumps(transcripts + [mute, accented, chatty]))
    for clip_id, video in [("mute", "raw_videos/mute.mp4"), ("unknown", f"raw_videos/{talking['clip_id']}.mp4"),
                           ("accented", "raw_videos/accented.mp4"),
                           ("chatty", f"raw_videos/{talking['clip_id']}.mp4"),
                           ("gone", "raw_videos/gone.mp4")]:
        (latents / f"{clip_id}_0.json").write_text(json.dumps(_chunk_record(clip_id, 0, video, 0, CHUNK_FRAMES, 25.0)))
    (latents / "broken_0.json").write_text("{not json")
    encoder = load_audio_encoder(AudioEncoderSpec(encoder="wav2vec2", name_or_path=str(tiny_zoo / "wav2vec2")))

    def run(source: str):
        return save_audio_latents(make_config(
            latents_dir=latents, transcripts=root / "video_transcripts.json", audio_out=root / f"wav_{source}",
            ff_out=root / f"ff_{source}", audio_source=source, encoder=encoder.spec.model_copy(
                update={"feature_dim": None})), encoder)

    original = run("original")
    assert set(original.failed) == {"mute_0", "gone_0"}
    assert "no audio stream" in original.failed["mute_0"] and "video not found" in original.failed["gone_0"]
    assert "no_transcript" in original.flagged["unknown_0"]
    assert {"text_too_long", "text_too_fast"} <= set(original.flagged["chatty_0"])
    assert "broken_0.json" in original.bad_records
    failed_record = json.loads((root / "ff_original" / "mute_0_failed.json").read_text())
    assert failed_record["clip_id"] == "mute" and "no audio stream" in failed_record["reason"]
    assert not (root / "ff_original" / "mute_0_ff.npy").exists()

    tts = run("tts")
    assert set(tts.failed) == {"unknown_0", "gone_0", "chatty_0"}  # mute_0 needs no audio track for TTS
    assert "not in the transcripts" in tts.failed["unknown_0"] and "characters" in tts.failed["chatty_0"]
    assert "non_ascii_text" in tts.flagged["accented_0"]
    accented_text = json.loads((root / "ff_tts" / "accented_0_text.json").read_text())
    assert accented_text["text"].startswith("Café") and accented_text["tts"] == {"backend": "espeak", "voice": "en-us"}
    assert {"speech_seconds", "stretch", "offset_seconds"} <= set(accented_text["notes"]["fit"])
    # gTTS on a machine without network: each chunk fails with the back-end's message, the run goes on.
    import socket

    def no_network(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with monkeypatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", no_network)
        offline = save_audio_latents(make_config(
            latents_dir=latents, transcripts=root / "video_transcripts.json", audio_out=root / "wav_gtts",
            ff_out=root / "ff_gtts", audio_source="tts_aligned", tts_backend="gtts", voice="en",
            encoder=encoder.spec.model_copy(update={"feature_dim": None})), encoder)
    assert offline.done == 0 and set(offline.failed) == set(tts.failed) | {"mute_0", "accented_0"}
    assert "gTTS needs network" in offline.failed["accented_0"]

    # A re-run retries failures and keeps their records; a fixed chunk loses its _failed.json.
    (root / "raw_videos" / "gone.mp4").write_bytes((root / "raw_videos" / "accented.mp4").read_bytes())
    again = run("original")
    assert set(again.failed) == {"mute_0"} and not (root / "ff_original" / "gone_0_failed.json").exists()


def _envelope_correlation(reference: np.ndarray, other: np.ndarray, fps: float = 25.0) -> float:
    frames = int(len(reference) / SAMPLE_RATE * fps)
    return float(np.corrcoef(rms_envelope(reference, SAMPLE_RATE, fps, frames),
                             rms_envelope(other, SAMPLE_RATE, fps, frames))[0, 1])


def test_tts_aligned_follows_the_original_speech_better_than_plain_tts(data_root, tiny_zoo):
    """On the synthetic talking clips: the loudness envelope of word-aligned TTS correlates with the
    clip's own speech far better than TTS of the same text placed at the first word."""
    spec = AudioEncoderSpec(encoder="wav2vec2", name_or_path=str(tiny_zoo / "wav2vec2"))
    encoder = load_audio_encoder(spec)
    for source in ("original", "tts", "tts_aligned"):
        save_audio_latents(make_config(
            latents_dir=data_root / "vae_latents", transcripts=data_root / "video_transcripts.json",
            audio_out=data_root / f"env_{source}", ff_out=data_root / f"env_ff_{source}", audio_source=source,
            encoder=spec), encoder)
    aligned_scores, plain_scores = [], []
    for wav in sorted((data_root / "env_original").glob("*.wav")):
        text = json.loads((data_root / "env_ff_original" / f"{wav.stem}_text.json").read_text())
        if len(text["words"]) < 3:
            continue
        original = read_audio(wav)
        aligned_scores.append(_envelope_correlation(original, read_audio(data_root / "env_tts_aligned" / wav.name)))
        plain_scores.append(_envelope_correlation(original, read_audio(data_root / "env_tts" / wav.name)))
    assert len(aligned_scores) >= 4
    print(f"envelope correlation with the original speech: tts_aligned {np.mean(aligned_scores):.3f}, "
          f"tts {np.mean(plain_scores):.3f} over {len(aligned_scores)} chunks")
    assert np.mean(aligned_scores) > np.mean(plain_scores) + 0.2
    assert np.mean(aligned_scores) > 0.5


def test_time_stretch_keeps_pitch_and_length():
    tone = (0.5 * np.sin(2 * np.pi * 220 * np.arange(8000) / SAMPLE_RATE)).astype(np.float32)
    for length in (3000, 8000, 20_000):
        stretched = time_stretch(tone, length)
        assert stretched.shape == (length,)
        spectrum = np.abs(np.fft.rfft(stretched * np.hanning(length)))
        peak_hz = np.fft.rfftfreq(length, 1 / SAMPLE_RATE)[np.argmax(spectrum)]
        assert abs(peak_hz - 220) < 6
        assert 0.4 < np.abs(stretched[500:-500]).max() < 0.6
    assert time_stretch(tone[:100], 50).shape == (50,)


def test_alignment_helpers():
    audio = np.concatenate([np.zeros(1600), 0.3 * np.ones(800), np.zeros(1600)]).astype(np.float32)
    assert len(trim_silence(audio)) == 800
    placed, info = fit_speech_to_window(audio, duration=0.5, start=0.45)
    assert info["offset_seconds"] == pytest.approx(0.45, abs=1e-3)  # fits: starts at the first word, ends at 0.5
    placed, info = fit_speech_to_window(np.tile(audio, 8), duration=0.2)
    assert info["stretch"] < 1 and placed.shape == (3200,)

    spoken = []
    result = tts_aligned([{"word": "hello,", "start": -0.1, "end": 0.3}, {"word": "—", "start": 0.3, "end": 0.4},
                          {"word": "world", "start": 0.5, "end": 0.9}, {"word": "x", "start": 0.9, "end": 0.905}],
                         duration=1.0, synthesize_word=lambda text: spoken.append(text) or audio)
    assert spoken == ["hello", "world"]
    assert [word["word"] for word in result.placed] == ["hello", "world"]
    assert len(result.skipped) == 2 and result.audio.shape == (16_000,)
    envelope = rms_envelope(result.audio, SAMPLE_RATE, 25.0, 25)
    assert envelope[3] > 0.1 and envelope[10] < 1e-3 and envelope[17] > 0.1 and envelope[24] < 1e-3


def test_words_in_window_spreads_segments_without_word_times():
    transcript = {"transcript": [{"start": 1.0, "end": 2.0, "text": "aa bbbb"},
                                 {"start": 3.0, "end": 3.5, "text": "late", "words": [
                                     {"word": " late", "start": 3.0, "end": 3.5}]}]}
    words = words_in_window(transcript, start=1.2, duration=2.0)
    assert [word["word"] for word in words] == ["aa", "bbbb", "late"]
    assert words[0]["start"] == pytest.approx(-0.2) and words[1]["start"] == pytest.approx(1 / 3 - 0.2, abs=1e-3)
    assert words_in_window(transcript, start=5.0, duration=1.0) == []


@pytest.mark.parametrize("encoder_name", ["wav2vec2", "faceformer"])
def test_stage_rows_are_the_rows_inference_feeds(data_root, tiny_zoo, tmp_path, encoder_name):
    """The rows the stage writes for a clip's chunks == the rows inference feeds for the same speech (one encoding
    of the whole speech, cut per chunk; both encoders attend over their whole input, so encoding each chunk's window
    alone would differ), and its silence file == inference's guidance negative for a chunk of that length."""
    from avatar_gen.audio.pipeline import AudioLatentsStage, group_by_clip, read_chunks, silence_paths
    from avatar_gen.inference import AvatarGenerator
    from avatar_gen.inference.schedule import ChunkPlan
    from avatar_gen.tiny.checkpoint import write_untrained_checkpoint

    spec = (AudioEncoderSpec(encoder="wav2vec2", name_or_path=str(tiny_zoo / "wav2vec2")) if encoder_name == "wav2vec2"
            else AudioEncoderSpec(encoder="faceformer", name_or_path=str(tiny_zoo / "faceformer.pth")))
    config = make_config(latents_dir=data_root / "vae_latents", transcripts=data_root / "video_transcripts.json",
                         audio_out=tmp_path / "wav", ff_out=tmp_path / "ff", audio_source="original", encoder=spec)
    encoder = load_audio_encoder(spec)
    save_audio_latents(config, encoder)
    clip = next(clip for clip in group_by_clip(read_chunks(data_root / "vae_latents")[0]) if len(clip.chunks) == 2)
    speech, _ = AudioLatentsStage(config, encoder).clip_audio(clip)
    tiled = np.concatenate([read_audio(tmp_path / "wav" / f"{chunk.key}.wav") for chunk in clip.chunks])
    np.testing.assert_allclose(tiled, speech, atol=2 / 2**15)  # the chunk WAVs are that speech, cut

    checkpoint = write_untrained_checkpoint(tmp_path / "ckpt", tiny_zoo / "ltx-video", spec,
                                            {"height": 64, "width": 64, "num_frames": CHUNK_FRAMES, "fps": clip.fps})
    generator = AvatarGenerator.load(checkpoint)
    fed = generator.chunk_features(speech, [ChunkPlan(chunk.start_frame, chunk.num_frames) for chunk in clip.chunks],
                                   clip.fps)
    for chunk, rows in zip(clip.chunks, fed):
        np.testing.assert_allclose(np.load(tmp_path / "ff" / f"{chunk.key}_ff.npy"), rows, rtol=1e-5, atol=1e-5)
    silence = np.load(silence_paths(tmp_path / "ff", CHUNK_FRAMES, clip.fps)["features"])
    np.testing.assert_array_equal(silence, generator.silence_features(CHUNK_FRAMES, clip.fps))


def test_a_long_clip_is_cut_into_speeches_no_longer_than_a_request():
    """Inference encodes at most one request's speech; the stage cuts a longer clip's chunks into such speeches."""
    from avatar_gen.audio.pipeline import Chunk, group_by_clip

    def chunk(clip_id: str, index: int, fps: float = 25.0) -> Chunk:
        return Chunk(key=f"{clip_id}_{index}", clip_id=clip_id, index=index, num_frames=CHUNK_FRAMES, fps=fps,
                     start_time=index * CHUNK_FRAMES / fps, video_path=None, record={})

    speeches = group_by_clip([chunk("long", k) for k in (2, 0, 1, 3)] + [chunk("short", 0), chunk("long", 4, 30.0)],
                             max_seconds=3.0)
    assert [(speech.clip_id, speech.fps, [c.index for c in speech.chunks]) for speech in speeches] == [
        ("long", 25.0, [0, 1]), ("long", 25.0, [2, 3]), ("long", 30.0, [4]), ("short", 25.0, [0])]
    second = speeches[1]
    assert (second.start_frame, second.num_frames) == (2 * CHUNK_FRAMES, 2 * CHUNK_FRAMES)
    assert second.window(second.chunks[1]) == (CHUNK_FRAMES, CHUNK_FRAMES)


def test_a_clip_id_starting_with_an_underscore_is_a_chunk_not_bookkeeping(tmp_path):
    """YouTube ids may start with _; only the VAE stage's own _skipped.json is bookkeeping (a toy run lost 4 clips)."""
    from avatar_gen.audio.pipeline import read_chunks
    from avatar_gen.layout import VAE_SKIPPED_FILE
    from avatar_gen.utils.io import atomic_write_json

    record = {"clip_id": "_7k7UBfT2Mw", "chunk": 0, "num_frames": 25, "fps": 25.0, "start_time": 0.0}
    atomic_write_json(tmp_path / "_7k7UBfT2Mw_0.json", record)
    atomic_write_json(tmp_path / VAE_SKIPPED_FILE, [{"clip_id": "x", "reason": "too short"}])
    chunks, bad = read_chunks(tmp_path)
    assert [chunk.key for chunk in chunks] == ["_7k7UBfT2Mw_0"] and not bad
