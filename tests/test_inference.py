"""Inference on the tiny zoo (CPU, 64x64, 2 steps): the MP4, seeds, long speech in chunks, equality with diffusers."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

from avatar_gen.audio.features import AudioEncoderSpec
from avatar_gen.audio.tts import synthesize
from avatar_gen.inference import DEFAULT_GUIDANCE, DISTILLED_TIMESTEPS, STAGES, AvatarGenerator, plan_chunks
from avatar_gen.inference.generator import DEFAULT_START_SIGMA
from avatar_gen.inference.inputs import fit_portrait, load_portrait
from avatar_gen.inference.schedule import covering_frame_count
from avatar_gen.tiny.checkpoint import write_untrained_checkpoint
from avatar_gen.media import probe_video, read_audio, read_frames, run_ffmpeg
from avatar_gen.synthetic.dataset import make_portrait

SIZE = 64
FPS = 25.0
STEPS = 2
SHORT_TEXT = "Hello."
LONG_TEXT = "Hello, I am your avatar, and this sentence is longer than one chunk."


@pytest.fixture(scope="module")
def wav2vec2_spec(tiny_zoo) -> AudioEncoderSpec:
    return AudioEncoderSpec(encoder="wav2vec2", name_or_path=str(tiny_zoo / "wav2vec2"))


@pytest.fixture(scope="module")
def generator(tiny_zoo, wav2vec2_spec, tmp_path_factory) -> AvatarGenerator:
    """LoRA checkpoint, global alignment, chunks of 17 frames."""
    folder = write_untrained_checkpoint(tmp_path_factory.mktemp("ckpt") / "step_000000", tiny_zoo / "ltx-video",
                                        wav2vec2_spec, {"height": SIZE, "width": SIZE, "num_frames": 17, "fps": FPS})
    return AvatarGenerator.load(folder)


@pytest.fixture(scope="module")
def chunked_generator(tiny_zoo, tmp_path_factory) -> AvatarGenerator:
    """Full fine-tuning checkpoint, local (frame-aligned) attention, FaceFormer features, chunks of 9 frames."""
    spec = AudioEncoderSpec(encoder="faceformer", name_or_path=str(tiny_zoo / "faceformer.pth"))
    folder = write_untrained_checkpoint(tmp_path_factory.mktemp("ckpt-local") / "step_000000",
                                        tiny_zoo / "ltx-video", spec,
                                        {"height": SIZE, "width": SIZE, "num_frames": 9, "fps": FPS},
                                        alignment="local", lora_rank=None, local_margin_frames=1)
    return AvatarGenerator.load(folder)


@pytest.fixture(scope="module")
def portrait(tmp_path_factory) -> np.ndarray:
    """A synthetic face on a wide canvas, off-centre: the crop has to find it."""
    path = make_portrait(tmp_path_factory.mktemp("portrait") / "face.png", seed=3, size=128)
    canvas = np.full((150, 400, 3), 180, dtype=np.uint8)
    canvas[11:139, 260:388] = load_portrait(path)
    return canvas


def _frames(path) -> np.ndarray:
    return read_frames(path)


def test_video_has_both_streams_speech_duration_and_size(generator, portrait, tmp_path):
    output = tmp_path / "talking.mp4"
    stages = []
    result = generator.generate(portrait, text=SHORT_TEXT, output=output, steps=STEPS, seed=0,
                                progress=lambda stage, fraction: stages.append((stage, fraction)))
    info = probe_video(output)
    assert info.has_audio and info.audio_sample_rate == 44100
    assert (info.width, info.height) == (SIZE, SIZE) == (result.width, result.height)
    speech_seconds = synthesize(SHORT_TEXT).duration
    assert abs(result.duration - speech_seconds) < 1e-3
    assert abs(info.duration - speech_seconds) <= 1.0 / FPS
    assert abs(info.audio_duration - speech_seconds) <= 1.0 / FPS
    assert info.num_frames == result.num_frames == round(speech_seconds * FPS)
    assert result.num_chunks == 1 and result.steps == STEPS and result.guidance == DEFAULT_GUIDANCE
    assert result.face_center is not None and result.face_center[0] > 0.7  # the face sits right of centre
    assert set(result.timings) == {*STAGES, "first_second", "total"}
    assert all(value >= 0 for value in result.timings.values())
    # progress: every stage in order, denoising once per step, each stage ending at 1.0
    assert [stage for stage, _ in stages if _ == 0.0] == list(STAGES)
    denoising = [fraction for stage, fraction in stages if stage == "denoising"]
    assert denoising == sorted(denoising) and denoising[-1] == 1.0 and len(denoising) == result.steps_run + 1
    assert 1 <= result.steps_run <= STEPS
    assert not list(tmp_path.glob(".tmp-*"))


def test_same_seed_same_frames_other_seed_other_frames(generator, portrait, tmp_path):
    paths = [tmp_path / name for name in ("a.mp4", "b.mp4", "c.mp4")]
    for path, seed in zip(paths, (7, 7, 8)):
        generator.generate(portrait, text=SHORT_TEXT, output=path, steps=STEPS, seed=seed)
    first, again, other = (_frames(path) for path in paths)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_speech_longer_than_a_chunk_is_one_continuous_video(chunked_generator, portrait, tmp_path, monkeypatch):
    """Chunks of 9 frames: each starts on the previous chunk's last frame and reads its slice of the features."""
    conditions, decoded = [], []
    real_denoise, real_decode = chunked_generator.denoise, chunked_generator.decode

    def spy_denoise(condition_frame, *args, **kwargs):
        conditions.append(condition_frame.copy())
        return real_denoise(condition_frame, *args, **kwargs)

    def spy_decode(*args, **kwargs):
        decoded.append(real_decode(*args, **kwargs))
        return decoded[-1]

    monkeypatch.setattr(chunked_generator, "denoise", spy_denoise)
    monkeypatch.setattr(chunked_generator, "decode", spy_decode)
    output = tmp_path / "long.mp4"
    result = chunked_generator.generate(portrait, text=LONG_TEXT, output=output, steps=STEPS, seed=1)
    speech_seconds = synthesize(LONG_TEXT).duration
    expected_frames = round(speech_seconds * FPS)
    chunks = plan_chunks(expected_frames, 9)
    assert result.num_chunks == len(chunks) > 3
    info = probe_video(output)
    assert info.num_frames == result.num_frames == expected_frames
    assert abs(info.duration - speech_seconds) <= 1.0 / FPS
    for index in range(1, len(chunks)):
        assert np.array_equal(conditions[index], decoded[index - 1][-1])
    # the written video is the chunks joined without their repeated first frames: under H.264 loss, every written
    # frame is still nearest to its own generated frame
    joined = np.concatenate([decoded[0]] + [frames[1:] for frames in decoded[1:]])[:expected_frames].astype(np.int16)
    written = _frames(output).astype(np.int16)
    nearest = [int(np.argmin(np.abs(joined - frame).mean(axis=(1, 2, 3)))) for frame in written]
    assert nearest == list(range(expected_frames))


def test_streamed_mp4_is_frame_identical_and_segments_play_before_the_end(generator, portrait, tmp_path,
                                                                          monkeypatch):
    """stream() with segment files (denoising in a worker thread) and generate() without overlap: the same MP4
    frames; each segment is a playable MP4 with its slice of the speech, the first one ready while chunks remain."""
    denoised = []
    real_denoise = generator.denoise

    def counting_denoise(*args, **kwargs):
        denoised.append(1)
        return real_denoise(*args, **kwargs)

    monkeypatch.setattr(generator, "denoise", counting_denoise)
    streamed_path, plain_path = tmp_path / "streamed.mp4", tmp_path / "plain.mp4"
    segments, denoised_when_ready = [], []
    for segment in generator.stream(portrait, text=LONG_TEXT, output=streamed_path, segment_dir=tmp_path / "parts",
                                    steps=STEPS, seed=4):
        assert segment.path.is_file()
        assert streamed_path.exists() == (segment.result is not None)  # the MP4 appears with the last segment
        denoised_when_ready.append(len(denoised))
        segments.append(segment)
    result = segments[-1].result
    assert result is not None and all(segment.result is None for segment in segments[:-1])
    assert len(segments) == result.num_chunks > 3
    assert denoised_when_ready[0] < result.num_chunks  # the first segment came while chunks were still to denoise
    assert 0 < result.timings["first_second"] < result.timings["total"]

    plain = generator.generate(portrait, text=LONG_TEXT, output=plain_path, steps=STEPS, seed=4, overlap=False)
    assert np.array_equal(_frames(streamed_path), _frames(plain_path))
    assert plain.num_frames == result.num_frames == sum(segment.num_frames for segment in segments)

    # segments tile the video and the speech: consecutive frame ranges, each with its own audio
    assert [segment.start_frame for segment in segments] == \
        [0] + list(np.cumsum([segment.num_frames for segment in segments[:-1]]))
    audio_seconds, written = 0.0, []
    for segment in segments:
        info = probe_video(segment.path)
        assert info.num_frames == segment.num_frames and info.has_audio
        audio_seconds += len(read_audio(segment.path)) / 16000
        written.append(_frames(segment.path))
    assert abs(audio_seconds - result.duration) < 0.1
    # under H.264 loss every frame of the segment files is still nearest to its own generated frame
    generated = np.concatenate([segment.frames for segment in segments]).astype(np.int16)
    nearest = [int(np.argmin(np.abs(generated - frame).mean(axis=(1, 2, 3))))
               for frame in np.concatenate(written).astype(np.int16)]
    assert nearest == list(range(len(generated)))


def test_closing_a_stream_early_stops_the_work_and_writes_nothing(generator, portrait, tmp_path):
    import threading

    output = tmp_path / "stopped.mp4"
    stream = generator.stream(portrait, text=LONG_TEXT, output=output, steps=STEPS, seed=0)
    first = next(stream)
    assert first.index == 0 and first.result is None
    stream.close()
    assert not output.exists() and not list(tmp_path.glob(".tmp-*"))
    assert not [thread for thread in threading.enumerate() if thread.name.startswith("avatar-")]
    # the generator is free again
    assert generator.generate(portrait, text=SHORT_TEXT, output=output, steps=STEPS).video_path == output


def test_chunk_features_are_slices_of_one_sequence(chunked_generator):
    speech = synthesize(LONG_TEXT)
    audio = read_audio_16k(speech)
    chunks = plan_chunks(60, 9)
    conditioning = chunked_generator.chunk_conditioning(audio, chunks, FPS, SIZE, SIZE)
    features = chunked_generator.audio_encoder.encode(audio, chunks[-1].end, FPS)
    for chunk, inputs in zip(chunks, conditioning):
        expected = chunked_generator.audio_projection(torch.from_numpy(features[chunk.start:chunk.end])[None])
        torch.testing.assert_close(inputs.prompt_embeds, expected)
        # local alignment: a 3-D boolean mask [1, video tokens, audio tokens]
        latent_frames = (chunk.num_frames - 1) // 8 + 1
        assert inputs.prompt_attention_mask.shape == (1, latent_frames * 4, chunk.num_frames)
        assert inputs.prompt_attention_mask.dtype == torch.bool
        # the negative: silence at the chunk's length, the rows audio dropout trains with
        silence = chunked_generator.silence_features(chunk.num_frames, FPS)
        torch.testing.assert_close(inputs.negative_prompt_embeds,
                                   chunked_generator.audio_projection(torch.from_numpy(silence)[None]))
        assert not torch.equal(inputs.negative_prompt_embeds, inputs.prompt_embeds)


def read_audio_16k(speech) -> np.ndarray:
    from avatar_gen.media import resample_audio

    return resample_audio(speech.audio, speech.sample_rate, 16000)


@pytest.fixture(scope="module")
def short_speech_16k() -> np.ndarray:
    return read_audio_16k(synthesize(SHORT_TEXT))


def _plain_pipeline(generator, scheduler=None):
    from diffusers import FlowMatchEulerDiscreteScheduler, LTXImageToVideoPipeline

    scheduler = scheduler or FlowMatchEulerDiscreteScheduler.from_config(generator.sampler.scheduler_config)
    pipeline = LTXImageToVideoPipeline(vae=generator.vae, text_encoder=None, tokenizer=None,
                                       transformer=generator.transformer, scheduler=scheduler)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def _pinned_scheduler(config, timesteps: list[float]):
    """A scheduler that, inside the pipeline, samples the fixed ``timesteps``: what inference did before it had its
    own loop (its FixedScheduleFlowMatchScheduler: timesteps as given, sigma = timestep / 1000, then 0)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    class Pinned(FlowMatchEulerDiscreteScheduler):
        def set_timesteps(self, num_inference_steps=None, device=None, sigmas=None, mu=None, timesteps=None):
            fixed = torch.tensor(pinned, dtype=torch.float32)
            self.num_inference_steps = len(fixed)
            self.timesteps = fixed.to(device)
            self.sigmas = torch.cat([fixed / self.config.num_train_timesteps, torch.zeros(1)]).to(device)
            self._step_index = self._begin_index = None

    pinned = timesteps
    return Pinned.from_config(config)


@pytest.mark.parametrize("alignment, guidance, schedule", [  # every pair of the three factors' values
    ("global", 3.0, "regular"), ("global", 1.0, "fixed"), ("local", 3.0, "fixed"), ("local", 1.0, "regular")])
def test_denoising_equals_the_diffusers_pipeline(generator, chunked_generator, portrait, short_speech_16k, alignment,
                                                 guidance, schedule):
    """Transformer patch size 1: the project's loop gives LTXImageToVideoPipeline's latents bit for bit, with audio
    guidance (negative: silence) and without, with the regular schedule (dynamic shift from the latent count,
    shift_terminal) and a fixed one, with the 3-D local mask and the 2-D global one; same components, inputs, seed."""
    from PIL import Image

    model = generator if alignment == "global" else chunked_generator
    num_frames = model.chunk_frames
    frame, _ = fit_portrait(portrait, SIZE, SIZE)
    inputs = model.chunk_conditioning(short_speech_16k, plan_chunks(num_frames, num_frames), FPS, SIZE, SIZE,
                                      negative=guidance > 1)[0]
    assert inputs.prompt_attention_mask.ndim == (2 if alignment == "global" else 3)
    timesteps = [1000.0, 600.0, 200.0] if schedule == "fixed" else None
    ours = model.denoise(frame, inputs, num_frames, SIZE, SIZE, FPS, 3, guidance, torch.Generator().manual_seed(5),
                         timesteps=timesteps)
    pipeline = _plain_pipeline(model, None if timesteps is None else
                               _pinned_scheduler(model.sampler.scheduler_config, timesteps))
    theirs = pipeline(image=Image.fromarray(frame), height=SIZE, width=SIZE, num_frames=num_frames, frame_rate=FPS,
                      num_inference_steps=3, guidance_scale=guidance, generator=torch.Generator().manual_seed(5),
                      prompt_embeds=inputs.prompt_embeds, prompt_attention_mask=inputs.prompt_attention_mask,
                      negative_prompt_embeds=inputs.negative_prompt_embeds,
                      negative_prompt_attention_mask=inputs.negative_prompt_attention_mask, output_type="latent",
                      return_dict=False)[0]
    assert ours.dtype == theirs.dtype == torch.float32
    assert torch.equal(ours, theirs)


def test_decoding_equals_the_diffusers_pipeline(generator, portrait, short_speech_16k):
    """Denoise + decode give the frames of a plain pipeline call with output_type="np" and the same decode settings
    (within 1/255: its float frames are rounded here).

    The tiny VAE is timestep-conditioned (as LTX-Video 0.9.1+), so decoding mixes in noise drawn from the request's
    generator after the denoising draws and decodes at a timestep; the pipeline gets the same decode arguments and
    one generator for both, as a request uses one.
    """
    from PIL import Image

    from avatar_gen.inference.generator import DEFAULT_DECODE_NOISE_SCALE, DEFAULT_DECODE_TIMESTEP
    from avatar_gen.latents import decode_latents, denormalize_latents

    assert generator.vae.config.timestep_conditioning
    frame, _ = fit_portrait(portrait, SIZE, SIZE)
    inputs = generator.chunk_conditioning(short_speech_16k, plan_chunks(9, 17), FPS, SIZE, SIZE)[0]
    request_generator = torch.Generator().manual_seed(5)
    latents = generator.denoise(frame, inputs, 9, SIZE, SIZE, FPS, STEPS, 3.0, request_generator)
    decode_noise_state = request_generator.get_state()
    ours = generator.decode(latents, 9, SIZE, SIZE, request_generator)
    video = _plain_pipeline(generator)(
        image=Image.fromarray(frame), height=SIZE, width=SIZE, num_frames=9, frame_rate=FPS,
        num_inference_steps=STEPS, guidance_scale=3.0, generator=torch.Generator().manual_seed(5),
        prompt_embeds=inputs.prompt_embeds, prompt_attention_mask=inputs.prompt_attention_mask,
        negative_prompt_embeds=inputs.negative_prompt_embeds,
        negative_prompt_attention_mask=inputs.negative_prompt_attention_mask,
        decode_timestep=DEFAULT_DECODE_TIMESTEP, decode_noise_scale=DEFAULT_DECODE_NOISE_SCALE,
        output_type="np").frames[0]
    assert ours.shape == (9, SIZE, SIZE, 3)
    assert np.abs(ours.astype(np.int16) - np.round(video * 255).astype(np.int16)).max() <= 1
    # decode_latents (the trainer's preview videos) decodes the same way
    vae = generator.vae
    unpacked = generator.denoiser.unpack(latents, 2, SIZE // 32, SIZE // 32)[0]
    raw = denormalize_latents(unpacked, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
    request_generator.set_state(decode_noise_state)
    previewed = decode_latents(vae, raw, decode_timestep=DEFAULT_DECODE_TIMESTEP,
                               decode_noise_scale=DEFAULT_DECODE_NOISE_SCALE, generator=request_generator)
    assert np.abs(previewed.astype(np.int16) - ours.astype(np.int16)).max() <= 1
    # without the noise the frames differ: the decode-noise path did run
    plain_decode = decode_latents(vae, raw, decode_timestep=DEFAULT_DECODE_TIMESTEP)
    assert np.abs(plain_decode.astype(np.int16) - ours.astype(np.int16)).max() > 1


def test_audio_file_any_format_and_rate(generator, portrait, tmp_path):
    """A stereo 22.05 kHz MP3 drives the video; the MP4 lasts as long as the decoded speech."""
    speech = synthesize("Any format works.", sample_rate=22050)
    wav = tmp_path / "speech.wav"
    soundfile.write(str(wav), np.stack([speech.audio, speech.audio], axis=1), 22050)
    mp3 = tmp_path / "speech.mp3"
    run_ffmpeg(["-y", "-i", str(wav), "-c:a", "libmp3lame", "-b:a", "96k", str(mp3)])
    result = generator.generate(portrait, audio=mp3, output=tmp_path / "from-audio.mp4", steps=STEPS)
    seconds = len(read_audio(mp3)) / 16000
    info = probe_video(result.video_path)
    assert info.has_audio and abs(info.duration - seconds) <= 1.0 / FPS and abs(result.duration - seconds) < 1e-6
    assert result.speech_source == str(mp3) and result.words == []


def test_distilled_and_custom_schedules_reach_the_model(generator, portrait, tmp_path, monkeypatch):
    used = []
    real_predict = generator.denoiser.predict

    def spy(noisy, tokens, mask, timestep, *args):
        used.append(float(timestep.max()))
        return real_predict(noisy, tokens, mask, timestep, *args)

    monkeypatch.setattr(generator.denoiser, "predict", spy)
    result = generator.generate(portrait, text="Hi.", output=tmp_path / "fast.mp4", distilled=True)
    assert result.steps == len(DISTILLED_TIMESTEPS) and result.guidance == 1.0
    assert used == pytest.approx(list(DISTILLED_TIMESTEPS) * result.num_chunks)
    used.clear()
    result = generator.generate(portrait, text="Hi.", output=tmp_path / "custom.mp4", timesteps=[1000, 400],
                                guidance=2.0)
    assert result.steps == 2 and result.guidance == 2.0
    assert used == pytest.approx([1000.0, 400.0] * result.num_chunks)
    used.clear()
    result = generator.generate(portrait, text="Hi.", output=tmp_path / "regular.mp4", steps=3, start_sigma=1.0)
    # no fixed schedule stays behind: the regular one ends on the scheduler's shift_terminal (0.1)
    assert len(used) == 3 * result.num_chunks and used[2] == pytest.approx(100.0)


def test_failure_midway_leaves_nothing_at_output(generator, portrait, tmp_path, monkeypatch):
    output = tmp_path / "talking.mp4"
    output.write_bytes(b"previous video")

    def broken_decode(*args, **kwargs):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(generator, "decode", broken_decode)
    with pytest.raises(RuntimeError, match="decoder exploded"):
        generator.generate(portrait, text=SHORT_TEXT, output=output, steps=STEPS)
    assert output.read_bytes() == b"previous video"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["talking.mp4"]


@pytest.mark.parametrize("total, chunk, expected", [
    (1, 17, [(0, 9)]), (9, 17, [(0, 9)]), (10, 17, [(0, 17)]), (17, 17, [(0, 17)]),
    (18, 17, [(0, 17), (16, 9)]), (33, 17, [(0, 17), (16, 17)]), (34, 17, [(0, 17), (16, 17), (32, 9)]),
    (78, 121, [(0, 81)]),
])
def test_plan_chunks(total, chunk, expected):
    plans = plan_chunks(total, chunk)
    assert [(plan.start, plan.num_frames) for plan in plans] == expected
    assert plans[-1].end >= total and all(plan.num_frames <= max(chunk, 9) for plan in plans)
    assert all(later.start == earlier.end - 1 for earlier, later in zip(plans, plans[1:]))


def test_covering_frame_count():
    assert [covering_frame_count(n) for n in (1, 9, 10, 17, 18)] == [9, 9, 17, 17, 25]


def test_portrait_crop_centres_the_face(portrait):
    frame, center = fit_portrait(portrait, SIZE, SIZE)
    assert frame.shape == (SIZE, SIZE, 3)
    assert center[0] == pytest.approx(324 / 400, abs=0.03)
    # the crop is the full-height square around the face: it holds the face's skin, not the flat canvas
    assert frame.std() > 20
    plain = np.full((100, 300, 3), 90, dtype=np.uint8)
    plain[:, :150] = 200
    frame, center = fit_portrait(plain, SIZE, SIZE)
    assert center is None and frame[:, 0].mean() > 150 and frame[:, -1].mean() < 100  # no face: centre crop


def test_api_input_checks(tmp_path):
    from avatar_gen.errors import UserError
    from avatar_gen.inference.generator import check_output_path, resolve_settings
    from avatar_gen.inference.inputs import load_speech

    with pytest.raises(UserError, match="not both"):
        load_speech(text="Hello.", audio="speech.wav")
    with pytest.raises(UserError, match="either text"):
        load_speech()
    with pytest.raises(UserError, match="at least 64 px"):
        load_portrait(np.zeros((40, 200, 3), np.uint8))
    with pytest.raises(UserError, match="uint8"):
        load_portrait(np.zeros((100, 100, 3), np.float32))
    (tmp_path / "video.mp4").mkdir()
    with pytest.raises(UserError, match="is a folder"):
        check_output_path(tmp_path / "video.mp4")
    assert resolve_settings(distilled=True).steps == len(DISTILLED_TIMESTEPS)
    assert resolve_settings().guidance == DEFAULT_GUIDANCE and resolve_settings(timesteps=[900, 100]).guidance == 1.0
    # a fixed schedule runs whole by default; a regular one from the default start
    assert resolve_settings().start_sigma == DEFAULT_START_SIGMA and resolve_settings(distilled=True).start_sigma == 1.0
    assert resolve_settings(distilled=True, start_sigma=0.8).start_sigma == 0.8
    with pytest.raises(UserError, match="guidance"):
        resolve_settings(guidance=0.5)


def test_warns_when_the_vae_is_not_the_training_one(generator, caplog):
    from pathlib import Path

    from avatar_gen.inference.generator import _warn_if_other_vae

    vae = generator.vae
    same = {"latents": {"vae": {"latents_mean": vae.latents_mean.tolist(), "latents_std": vae.latents_std.tolist()}}}
    with caplog.at_level("WARNING", logger="avatar_gen.inference.generator"):
        _warn_if_other_vae(same, vae, Path("ckpt"), "base")
        assert not caplog.records
        other = {"latents": {"vae": {"latents_mean": [3.0] * 8, "latents_std": [1.0] * 8, "name_or_path": "other"}}}
        _warn_if_other_vae(other, vae, Path("ckpt"), "base")
    assert "not the one checkpoint ckpt was trained with (other)" in caplog.text
