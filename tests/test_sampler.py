"""The project's sampling loop: one schedule function (bit-equal to diffusers' scheduler), transformers with patch
sizes diffusers' pipeline cannot run (end to end, with training's geometry), and chunks conditioned on m latent frames.

The loop equals ``LTXImageToVideoPipeline`` for patch size 1: tests/test_inference.py
(``test_denoising_equals_the_diffusers_pipeline``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar_gen.audio.features import AudioEncoderSpec
from avatar_gen.inference import AvatarGenerator, plan_chunks
from avatar_gen.model.sampling import euler_sample, sigma_schedule, start_at
from avatar_gen.tiny.checkpoint import write_untrained_checkpoint
from avatar_gen.tiny.ltx import tiny_ltx_components, write_tiny_ltx

FPS = 25.0
SIZE = 128  # 4 x 4 latents of the tiny 32x VAE: whole tokens for patch 2
# patch 2: LTX's VAE geometry (32x, 8x; the tiny zoo's), local alignment, chunks of 17 frames, 128 px;
# patch 4: the toy world's (a patch-only VAE: 4x in space, none in time), global alignment, chunks of 5 frames, 32 px
PATCHED = {2: dict(patch_only_vae=False, alignment="local", chunk=17, size=SIZE),
           4: dict(patch_only_vae=True, alignment="global", chunk=5, size=32)}
LTX_SCHEDULER = dict(use_dynamic_shifting=True, base_shift=0.95, max_shift=2.05, base_image_seq_len=1024,
                     max_image_seq_len=4096, shift_terminal=0.1)


# ------------------------------------------------------------------------------------------------ the schedule

@pytest.mark.parametrize("config", [LTX_SCHEDULER, dict(use_dynamic_shifting=True), dict(shift=3.0),
                                    dict(shift=1.0, shift_terminal=0.05),
                                    dict(use_dynamic_shifting=True, time_shift_type="linear")],
                         ids=["ltx", "dynamic", "fixed-shift", "terminal-only", "linear"])
def test_schedule_is_the_schedulers_bit_for_bit(config):
    """What LTXImageToVideoPipeline makes its scheduler compute (linspace, mu from the latent count), for every
    shifting mode: the same float32 sigmas and timesteps."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.ltx.pipeline_ltx_image2video import calculate_shift

    scheduler = FlowMatchEulerDiscreteScheduler(**config)
    cfg = scheduler.config
    for steps in (2, 3, 8, 40):
        for latents in (8, 300, 6144, 20000):
            mu = calculate_shift(latents, cfg.base_image_seq_len, cfg.max_image_seq_len, cfg.base_shift, cfg.max_shift)
            scheduler.set_timesteps(steps, sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
            ours = sigma_schedule(cfg, latents, steps)
            assert torch.equal(ours.sigmas, scheduler.sigmas) and torch.equal(ours.timesteps, scheduler.timesteps)
            assert ours.num_steps == steps and ours.sigmas[-1] == 0


def test_fixed_schedule_is_used_as_given_and_bad_schedules_are_refused():
    fixed = sigma_schedule(LTX_SCHEDULER, 300, fixed_timesteps=[1000, 993, 725, 0.03])
    assert fixed.timesteps.tolist() == pytest.approx([1000.0, 993.0, 725.0, 0.03])
    assert fixed.sigmas.tolist() == pytest.approx([1.0, 0.993, 0.725, 0.00003, 0.0])
    with pytest.raises(ValueError, match="at least 2 steps"):
        sigma_schedule(LTX_SCHEDULER, 300, 1)  # the shift_terminal stretch of [1.0] is 0 / 0
    with pytest.raises(ValueError, match="decreasing"):
        sigma_schedule(LTX_SCHEDULER, 300, fixed_timesteps=[500, 900])
    with pytest.raises(ValueError, match="use_karras_sigmas"):
        sigma_schedule(dict(LTX_SCHEDULER, use_karras_sigmas=True), 300, 8)
    # LTX's shift, extrapolated far past max_image_seq_len, rounds every sigma to 1: one clear error, not NaN frames
    with pytest.raises(ValueError, match="not finite"):
        sigma_schedule(LTX_SCHEDULER, 60000, 2)


def test_a_run_from_a_start_noise_level_is_the_tail_of_its_schedule():
    schedule = sigma_schedule(LTX_SCHEDULER, 300, 10)
    tail = start_at(schedule, 0.8)
    first = int((schedule.sigmas[:-1] > 0.8).sum())
    assert 0 < first < 10 and float(tail.sigmas[0]) <= 0.8 < float(schedule.sigmas[first - 1])
    assert torch.equal(tail.sigmas, schedule.sigmas[first:]) and torch.equal(tail.timesteps, schedule.timesteps[first:])
    assert tail.num_steps == 10 - first
    whole = start_at(schedule, 1.0)
    assert torch.equal(whole.sigmas, schedule.sigmas) and torch.equal(whole.timesteps, schedule.timesteps)
    lowest = float(schedule.sigmas[-2])
    assert start_at(schedule, lowest).num_steps == 1
    with pytest.raises(ValueError, match="no step of the 10-step schedule"):
        start_at(schedule, lowest / 2)
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError, match=r"start_sigma must be a noise level in \(0, 1\]"):
            start_at(schedule, bad)


def test_euler_loop_keeps_given_tokens_and_gives_them_timestep_zero():
    schedule = sigma_schedule(LTX_SCHEDULER, 6, 3)
    noise, clean = torch.randn(1, 6, 4), torch.randn(1, 6, 4)
    given = torch.tensor([[1.0, 1.0, 0, 0, 0, 0]])
    seen, steps = [], []

    def velocity(latents, timestep):
        seen.append(timestep.clone())
        return torch.ones_like(latents)

    result = euler_sample(velocity, noise, schedule, clean=clean, condition_mask=given, on_step=steps.append)
    assert steps == [0, 1, 2]
    assert torch.equal(result[:, :2], clean[:, :2])
    # velocity 1 everywhere: each free token moves by the sum of the sigma steps, from noise at sigma 1 to 0
    torch.testing.assert_close(result[:, 2:], noise[:, 2:] - 1.0)
    for step, timestep in enumerate(seen):
        assert torch.equal(timestep[:, :2], torch.zeros(1, 2))
        assert torch.equal(timestep[:, 2:], schedule.timesteps[step].expand(1, 4))


# ------------------------------------------------------------------------------------------------ patch sizes > 1

@pytest.fixture(scope="module")
def patched_generators(tiny_zoo, tmp_path_factory) -> dict[int, AvatarGenerator]:
    """Untrained LoRA checkpoints over tiny LTX bases whose transformer has patch size 2 and 4 (:data:`PATCHED`)."""
    from avatar_gen.latents.vae import vae_compression

    spec = AudioEncoderSpec(encoder="wav2vec2", name_or_path=str(tiny_zoo / "wav2vec2"))
    folder = tmp_path_factory.mktemp("patched")
    generators = {}
    for patch, case in PATCHED.items():
        base = write_tiny_ltx(folder, patch_only_vae=case["patch_only_vae"], transformer_patch_size=patch,
                              folder=f"ltx-video-patch{patch}")
        temporal, spatial = vae_compression(tiny_ltx_components(patch_only_vae=case["patch_only_vae"])["vae"])
        video = {"height": case["size"], "width": case["size"], "num_frames": case["chunk"], "fps": FPS}
        checkpoint = write_untrained_checkpoint(folder / f"ckpt-patch{patch}" / "step_000000", base, spec, video,
                                                alignment=case["alignment"], local_margin_frames=1,
                                                temporal_compression=temporal, spatial_compression=spatial)
        generators[patch] = AvatarGenerator.load(checkpoint)
    return generators


def _speech_16k(seconds: float = 0.6) -> np.ndarray:
    time_axis = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 180 * time_axis) * (0.5 + 0.5 * np.sin(2 * np.pi * 5 * time_axis))) \
        .astype(np.float32)


def test_diffusers_pipeline_cannot_run_a_patch_2_transformer(patched_generators):
    """Why the project has its own loop: diffusers 0.42's i2v pipeline passes the un-patched latent grid to the
    transformer's RoPE.  (If a diffusers upgrade makes this pass, docs/inference.md "Sampling" needs a look.)"""
    from diffusers import FlowMatchEulerDiscreteScheduler, LTXImageToVideoPipeline
    from PIL import Image

    generator = patched_generators[2]
    inputs = generator.chunk_conditioning(_speech_16k(), plan_chunks(9, 17), FPS, SIZE, SIZE)[0]
    pipeline = LTXImageToVideoPipeline(vae=generator.vae, text_encoder=None, tokenizer=None,
                                       transformer=generator.transformer,
                                       scheduler=FlowMatchEulerDiscreteScheduler.from_config(
                                           generator.sampler.scheduler_config))
    pipeline.set_progress_bar_config(disable=True)
    with pytest.raises(RuntimeError, match="must match the size"):
        pipeline(image=Image.new("RGB", (SIZE, SIZE)), height=SIZE, width=SIZE, num_frames=9, frame_rate=FPS,
                 num_inference_steps=2, guidance_scale=1.0, prompt_embeds=inputs.prompt_embeds,
                 prompt_attention_mask=torch.ones(1, inputs.prompt_embeds.shape[1]), output_type="latent")


@pytest.mark.parametrize("patch", [2, 4])
def test_patched_transformer_generates_end_to_end(patched_generators, patch, tmp_path):
    from avatar_gen.media import probe_video, read_frames
    from avatar_gen.synthetic.dataset import make_portrait

    generator, size = patched_generators[patch], PATCHED[patch]["size"]
    portrait = make_portrait(tmp_path / "face.png", seed=1, size=160)
    seen = []
    hook = generator.transformer.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append((kwargs["num_frames"], kwargs["height"], kwargs["width"],
                                                  kwargs["hidden_states"].shape)), with_kwargs=True)
    try:
        result = generator.generate(portrait, text="Hello there.", output=tmp_path / "patched.mp4", steps=2, seed=3)
    finally:
        hook.remove()
    info = probe_video(result.video_path)
    assert (info.width, info.height, info.num_frames) == (size, size, result.num_frames) and info.has_audio
    assert result.num_chunks >= 2  # the hand-off between chunks runs too
    sampler = generator.sampler
    tokens_side = size // sampler.spatial_compression // patch
    latent_frames = (generator.chunk_frames - 1) // sampler.temporal_compression + 1
    # the transformer sees the token grid (RoPE), with 8 x patch^2 channels per token, two at a time (guidance)
    assert (latent_frames, tokens_side, tokens_side, torch.Size([2, latent_frames * tokens_side**2, 8 * patch**2])) \
        in seen
    assert read_frames(result.video_path).std() > 0  # not a constant (e.g. black) video
    if patch == 4:  # 4x VAE at 512 px: 82k latent positions, where LTX's dynamic shift leaves no finite schedule
        from avatar_gen.errors import UserError

        with pytest.raises(UserError, match="cannot sample 512x512 video .* not finite"):
            generator.generate(portrait, text="Hi.", output=tmp_path / "huge.mp4", steps=2, height=512, width=512)
        assert not (tmp_path / "huge.mp4").exists()


def test_sampling_velocity_is_the_training_forward(patched_generators):
    """Patch 2, local alignment: the velocity the loop steps with (caption tokens projected once per chunk) equals
    AvatarDenoiser.forward as the trainer calls it (features projected in the call), and both give the transformer
    the same grid, RoPE scale and 3-D mask."""
    generator = patched_generators[2]
    audio = _speech_16k()
    chunk = plan_chunks(17, 17)[0]
    inputs = generator.chunk_conditioning(audio, [chunk], FPS, SIZE, SIZE)[0]
    features = torch.from_numpy(generator.audio_encoder.encode(audio, chunk.end, FPS)[chunk.start:chunk.end])[None]
    grid = generator.sampler.grid(chunk.num_frames, SIZE, SIZE)
    assert grid.token_grid == (3, 2, 2) and grid.num_latents == 3 * 4 * 4
    latents = torch.randn(1, 12, 32, generator=torch.Generator().manual_seed(0))
    timestep = torch.full((1, 12), 700.0)
    timestep[:, :4] = 0.0
    calls = []
    hook = generator.transformer.register_forward_pre_hook(lambda module, args, kwargs: calls.append(kwargs),
                                                           with_kwargs=True)
    try:
        with torch.no_grad():
            sampled = generator.sampler.velocity(inputs, grid, FPS, guidance=1.0)(latents, timestep)
            trained = generator.denoiser(latents, features, timestep, *grid.token_grid, FPS)
    finally:
        hook.remove()
    assert torch.equal(sampled, trained)
    for name in ("num_frames", "height", "width", "rope_interpolation_scale"):
        assert calls[0][name] == calls[1][name]
    assert calls[0]["rope_interpolation_scale"] == (8 / FPS, 32, 32)
    mask = calls[0]["encoder_attention_mask"]
    assert mask.dtype == torch.bool and mask.shape == (1, 12, 17)
    assert torch.equal(mask, calls[1]["encoder_attention_mask"])


def test_guidance_applies_only_inside_its_interval_of_noise_levels(patched_generators, monkeypatch):
    """Inside the interval a step is the classifier-free guided velocity (a batch of two); outside it is the
    conditional velocity alone, one pass of batch one; the full interval is guidance at every step."""
    from avatar_gen.errors import UserError
    from avatar_gen.inference.generator import resolve_settings
    from avatar_gen.inference.guidance import check_guidance_interval

    generator = patched_generators[2]
    chunk = plan_chunks(17, 17)[0]
    inputs = generator.chunk_conditioning(_speech_16k(), [chunk], FPS, SIZE, SIZE)[0]
    grid = generator.sampler.grid(chunk.num_frames, SIZE, SIZE)
    latents = torch.randn(1, 12, 32, generator=torch.Generator().manual_seed(0))
    batches = []
    real_predict = generator.denoiser.predict

    def spy(noisy, *args):
        batches.append(noisy.shape[0])
        return real_predict(noisy, *args)

    monkeypatch.setattr(generator.denoiser, "predict", spy)
    plain = generator.sampler.velocity(inputs, grid, FPS, guidance=1.0)
    full = generator.sampler.velocity(inputs, grid, FPS, guidance=3.0)
    limited = generator.sampler.velocity(inputs, grid, FPS, guidance=3.0, guidance_interval=(0.5, 0.9))
    with torch.no_grad():
        for sigma, inside in ((0.95, False), (0.9, True), (0.7, True), (0.5, True), (0.3, False)):
            timestep = torch.full((1, 12), sigma * 1000.0)
            timestep[:, :4] = 0.0  # given tokens carry timestep 0: the step's level is the free tokens'
            batches.clear()
            got = limited(latents, timestep)
            assert batches == ([2] if inside else [1]), sigma
            expected = full(latents, timestep) if inside else plain(latents, timestep)
            assert torch.allclose(got, expected, atol=1e-6), sigma
            if inside:  # guidance does change the velocity here (the test would pass vacuously otherwise)
                assert not torch.allclose(got, plain(latents, timestep), atol=1e-4)
    # bad intervals: a ValueError from the sampler, one line for a user
    for bad in ((0.5, 0.5), (0.9, 0.1), (-0.1, 1.0), (0.0, 1.5), (0.5,), "ab"):
        with pytest.raises(ValueError, match="guidance interval"):
            check_guidance_interval(bad)
        with pytest.raises(UserError, match="guidance interval"):
            resolve_settings(guidance_interval=bad)
    assert resolve_settings(guidance_interval=[0, 1]).guidance_interval == (0.0, 1.0)


def test_guidance_applies_only_to_the_tokens_of_its_cells(patched_generators):
    """With guidance cells, the tokens of those cells (in every frame) take the guided velocity and all others the
    conditional one from the same pass; cells of another grid are refused."""
    generator = patched_generators[2]
    chunk = plan_chunks(17, 17)[0]
    inputs = generator.chunk_conditioning(_speech_16k(), [chunk], FPS, SIZE, SIZE)[0]
    grid = generator.sampler.grid(chunk.num_frames, SIZE, SIZE)  # 3 frames of 2 x 2 tokens
    cells = np.array([[False, False], [True, False]])  # the bottom-left token of each frame
    latents = torch.randn(1, 12, 32, generator=torch.Generator().manual_seed(0))
    timestep = torch.full((1, 12), 700.0)
    with torch.no_grad():
        got = generator.sampler.velocity(inputs, grid, FPS, 3.0, guidance_cells=cells)(latents, timestep)
        guided = generator.sampler.velocity(inputs, grid, FPS, 3.0)(latents, timestep)
        plain = generator.sampler.velocity(inputs, grid, FPS, 1.0)(latents, timestep)
    inside = torch.tensor([2, 6, 10])  # frame-major token order: (frame, row, column)
    outside = torch.tensor([index for index in range(12) if index not in inside.tolist()])
    assert torch.equal(got[:, inside], guided[:, inside])
    assert torch.allclose(got[:, outside], plain[:, outside], atol=1e-6)
    assert not torch.allclose(guided[:, outside], plain[:, outside], atol=1e-4)  # guidance would have moved them
    with pytest.raises(ValueError, match="token grid of 2x2"):
        generator.sampler.velocity(inputs, grid, FPS, 3.0, guidance_cells=np.ones((4, 4), bool))


def test_mouth_region_is_found_in_a_portrait_and_the_whole_frame_without_a_face(tmp_path, caplog):
    from avatar_gen.inference.guidance import guidance_region
    from avatar_gen.inference.inputs import load_portrait
    from avatar_gen.synthetic.dataset import make_portrait

    portrait = load_portrait(make_portrait(tmp_path / "face.png", seed=1, size=256))
    region = guidance_region("mouth", portrait, 16, 16)
    assert region.region == "mouth" and region.reason is None
    from avatar_gen.media.faces import detect_faces

    x, y, width, height = detect_faces(portrait)[0] / 256 * 16  # the face box in tokens
    rows, cols = np.nonzero(region.cells)
    # the mouth: a few tokens of the face's lower half (none of the eyes' rows), around the face's middle
    assert 2 <= region.cells.sum() <= 16
    assert rows.min() + 1 > y + height / 2 and rows.max() < y + height + 1
    assert abs(cols.mean() + 0.5 - (x + width / 2)) <= 1
    assert region.summary()["tokens_per_frame"] == int(region.cells.sum())
    assert guidance_region("frame", portrait, 16, 16).cells is None
    with caplog.at_level("WARNING", logger="avatar_gen.inference.guidance"):
        blank = guidance_region("mouth", np.full((256, 256, 3), 128, np.uint8), 16, 16)
    assert blank.region == "frame" and blank.cells is None and "no mouth found" in blank.reason
    assert "whole frame" in caplog.text
    with pytest.raises(ValueError, match="guidance region must be one of mouth, frame"):
        guidance_region("eyes", portrait, 16, 16)
    # the tokens a start from the portrait leaves to pure noise: the same mouth, or every token without a face
    from avatar_gen.inference.guidance import noise_start_region

    assert np.array_equal(noise_start_region("outside_mouth", portrait, 16, 16).cells, region.cells)
    assert noise_start_region("frame", portrait, 16, 16) is None
    with caplog.at_level("WARNING", logger="avatar_gen.inference.guidance"):
        everywhere = noise_start_region("outside_mouth", np.full((256, 256, 3), 128, np.uint8), 16, 16)
    assert everywhere.cells.all() and everywhere.cells.shape == (16, 16) and "no mouth found" in everywhere.reason
    assert "every token starts from pure noise" in caplog.text
    with pytest.raises(ValueError, match="start region must be one of outside_mouth, frame"):
        noise_start_region("mouth", portrait, 16, 16)


def test_generated_video_records_where_it_was_guided(patched_generators, tmp_path):
    from avatar_gen.errors import UserError
    from avatar_gen.media import read_frames
    from avatar_gen.synthetic.dataset import make_portrait

    generator = patched_generators[2]
    portrait = make_portrait(tmp_path / "face.png", seed=1, size=256)
    size = dict(height=256, width=256)  # 4 x 4 tokens: the mouth is some of them
    mouth = generator.generate(portrait, text="Hi.", output=tmp_path / "mouth.mp4", steps=2, seed=3, guidance=5.0,
                               **size)
    frame = generator.generate(portrait, text="Hi.", output=tmp_path / "frame.mp4", steps=2, seed=3, guidance=5.0,
                               guidance_region="frame", **size)
    assert mouth.summary()["guidance_region"]["region"] == "mouth"
    assert 1 <= mouth.guidance_region["tokens_per_frame"] < 16
    assert frame.summary()["guidance_region"] == {"region": "frame"}
    assert not np.array_equal(read_frames(mouth.video_path), read_frames(frame.video_path))
    unguided = generator.generate(portrait, text="Hi.", output=tmp_path / "off.mp4", steps=2, seed=3, guidance=1.0)
    assert unguided.guidance_region == {"region": "frame", "reason": "no guidance"}
    with pytest.raises(UserError, match="guidance region"):
        generator.generate(portrait, text="Hi.", output=tmp_path / "bad.mp4", steps=2, guidance_region="lips")


def _spied_chunk_runs(generator, monkeypatch, guidance: float):
    """One 17-frame chunk (3 latent frames of 4 x 4, 2 x 2 tokens each; its first latent frame given) denoised in 10
    steps at ``guidance`` by ``run(**start_options)``, every model call's (input, timestep) in ``calls`` (cleared per
    run); with the given latents and the start latents ``start`` [1, 8, 1, 4, 4]."""
    chunk = plan_chunks(17, 17)[0]
    inputs = generator.chunk_conditioning(_speech_16k(), [chunk], FPS, SIZE, SIZE)[0]
    given = torch.randn(1, 8, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    start = torch.randn(1, 8, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    calls = []
    real_predict = generator.denoiser.predict

    def spy(noisy, tokens, mask, timestep, *args):
        calls.append((noisy.clone(), timestep.clone()))
        return real_predict(noisy, tokens, mask, timestep, *args)

    def run(**start_options):
        calls.clear()
        return generator.denoise(None, inputs, chunk.num_frames, SIZE, SIZE, FPS, 10, guidance,
                                 torch.Generator().manual_seed(2), condition_latents=given, **start_options)

    monkeypatch.setattr(generator.denoiser, "predict", spy)
    return run, calls, given, start


def test_denoising_from_the_portrait_starts_at_its_noise_level(patched_generators, monkeypatch):
    """Below pure noise the free latent frames start as the start latents noised to the first noise level run (the
    same noise draw as from pure noise), and only the schedule's steps from there down run; at 1 nothing changes."""
    generator = patched_generators[2]
    run, calls, given, start = _spied_chunk_runs(generator, monkeypatch, guidance=1.0)
    from_noise = run()
    assert len(calls) == 10
    from_one = run(start_sigma=1.0, start_latents=start)
    assert torch.equal(from_one, from_noise)  # 1 is pure noise: the start latents are not used
    packed = run(start_sigma=0.8, start_latents=start)
    schedule = start_at(generator.sampler.schedule(generator.sampler.grid(17, SIZE, SIZE), 10), 0.8)
    assert len(calls) == schedule.num_steps < 10
    sigma = float(schedule.sigmas[0])
    noise = torch.randn(1, 8, 3, 4, 4, generator=torch.Generator().manual_seed(2))  # the chunk's draw
    expected = generator.denoiser.pack((1 - sigma) * start.expand(1, 8, 3, 4, 4) + sigma * noise)
    first_input, first_timestep = calls[0]
    torch.testing.assert_close(first_input[:, 4:], expected[:, 4:])  # the free tokens (the first 4 are given)
    assert torch.equal(first_input[:, :4], generator.denoiser.pack(torch.cat([given, given, given], 2))[:, :4])
    assert torch.allclose(first_timestep[:, 4:], torch.full((1, 8), sigma * 1000.0))
    assert not torch.equal(packed, from_noise)
    with pytest.raises(ValueError, match="start latents must be"):
        run(start_sigma=0.8)


def test_noise_cells_start_from_pure_noise_while_the_rest_waits_on_the_portraits_noising_line(
        patched_generators, monkeypatch):
    """With noise cells the whole schedule runs: those tokens start from the chunk's noise and are denoised all
    along; every other free token sits on (1 - σ) still + σ noise at each step above the start level, and reaches the
    first step at or below it where a start from there would have put it.  All cells: a start from pure noise."""
    generator = patched_generators[2]
    run, calls, _, start = _spied_chunk_runs(generator, monkeypatch, guidance=3.0)

    def model_input(step: int) -> torch.Tensor:  # guided: a batch of two, its halves the same latents
        return calls[step][0][:1]

    from_noise = run()
    run(start_sigma=0.8, start_latents=start)
    whole_start = model_input(0).clone()  # the whole frame from the portrait: its first step's input
    cells = np.array([[False, False], [True, False]])  # the bottom-left token of each frame
    partial = run(start_sigma=0.8, start_latents=start, noise_cells=cells)
    schedule = generator.sampler.schedule(generator.sampler.grid(17, SIZE, SIZE), 10)
    held_steps = schedule.num_steps - start_at(schedule, 0.8).num_steps
    assert len(calls) == 10 and 0 < held_steps < 10  # the whole schedule ran
    noise = generator.denoiser.pack(torch.randn(1, 8, 3, 4, 4, generator=torch.Generator().manual_seed(2)))
    still = generator.denoiser.pack(start.expand(1, 8, 3, 4, 4).contiguous())
    noise_tokens = [6, 10]  # frame-major (frame, row, column); frame 0's tokens 0-3 are given
    held = [index for index in range(4, 12) if index not in noise_tokens]
    assert torch.equal(model_input(0)[:, noise_tokens], noise[:, noise_tokens])
    for step in range(held_steps):
        sigma = float(schedule.sigmas[step])
        torch.testing.assert_close(model_input(step)[:, held], ((1 - sigma) * still + sigma * noise)[:, held])
    torch.testing.assert_close(model_input(held_steps)[:, held], whole_start[:, held])
    assert not torch.allclose(model_input(held_steps)[:, noise_tokens], whole_start[:, noise_tokens])  # moved
    assert not torch.equal(partial, from_noise)
    everywhere = run(start_sigma=0.8, start_latents=start, noise_cells=np.ones((2, 2), bool))
    assert torch.equal(everywhere, from_noise)
    with pytest.raises(ValueError, match="token grid of 2x2"):
        run(start_sigma=0.8, start_latents=start, noise_cells=np.ones((4, 4), bool))


def test_generation_from_the_portrait_records_its_start_and_the_steps_it_ran(patched_generators, tmp_path):
    from avatar_gen.errors import UserError
    from avatar_gen.media import read_frames
    from avatar_gen.synthetic.dataset import make_portrait

    generator = patched_generators[2]
    portrait = make_portrait(tmp_path / "face.png", seed=1, size=SIZE)
    reported = []
    full = generator.generate(portrait, text="Hi.", output=tmp_path / "full.mp4", steps=6, seed=3, start_sigma=1.0)
    started = generator.generate(portrait, text="Hi.", output=tmp_path / "start.mp4", steps=6, seed=3,
                                 start_sigma=0.7, start_region="frame",
                                 progress=lambda stage, fraction: reported.append((stage, fraction)))
    assert full.summary()["start_sigma"] == 1.0 and full.steps_run == 6 * full.num_chunks
    assert full.start_region is None
    assert started.summary()["start_sigma"] == 0.7 and started.summary()["start_region"] is None
    assert 0 < started.steps_run < full.steps_run and started.num_chunks == full.num_chunks
    denoising = [fraction for stage, fraction in reported if stage == "denoising"]
    assert len(denoising) == started.steps_run + 1 and denoising[-1] == pytest.approx(1.0)  # the bar ends full
    mouth = generator.generate(portrait, text="Hi.", output=tmp_path / "mouth.mp4", steps=6, seed=3,
                               start_sigma=0.7, height=256, width=256)  # 4 x 4 tokens: the mouth is some of them
    # the default region: the mouth from pure noise, and the whole schedule runs
    assert mouth.steps_run == 6 * mouth.num_chunks and mouth.summary()["start_region"]["region"] == "mouth"
    assert 1 <= mouth.start_region["tokens_per_frame"] < 16
    blank = np.full((SIZE, SIZE, 3), 128, np.uint8)  # no face: every token from pure noise, as a start from 1
    no_face = generator.generate(blank, text="Hi.", output=tmp_path / "blank.mp4", steps=6, seed=3, start_sigma=0.7)
    assert no_face.start_region["region"] == "frame" and "no mouth found" in no_face.start_region["reason"]
    from_one = generator.generate(blank, text="Hi.", output=tmp_path / "blank1.mp4", steps=6, seed=3)
    assert np.array_equal(read_frames(no_face.video_path), read_frames(from_one.video_path))
    with pytest.raises(UserError, match="start region must be one of outside_mouth, frame"):
        generator.generate(portrait, text="Hi.", output=tmp_path / "bad.mp4", steps=6, start_sigma=0.7,
                           start_region="lips")
    for bad in (0.0, 1.5, "soon"):
        with pytest.raises(UserError, match=r"start_sigma must be a noise level in \(0, 1\]"):
            generator.generate(portrait, text="Hi.", output=tmp_path / "bad.mp4", steps=6, start_sigma=bad)
    with pytest.raises(UserError, match="no step of the 6-step schedule"):
        generator.generate(portrait, text="Hi.", output=tmp_path / "bad.mp4", steps=6, start_sigma=0.01)
    assert not (tmp_path / "bad.mp4").exists()


# ------------------------------------------------------------------------------------------------ m latent frames

@pytest.mark.parametrize("given_frames", [1, 2])
def test_first_m_latent_frames_come_out_exactly_as_given(patched_generators, given_frames, monkeypatch,
                                                          caplog):
    generator = patched_generators[2]  # chunks of 17 frames: 3 latent frames of 4 x 4, 2 x 2 tokens each
    chunk = plan_chunks(17, 17)[0]
    inputs = generator.chunk_conditioning(_speech_16k(), [chunk], FPS, SIZE, SIZE)[0]
    given = torch.randn(1, 8, given_frames, 4, 4, generator=torch.Generator().manual_seed(1))
    timesteps = []
    real_predict = generator.denoiser.predict

    def spy(noisy, tokens, mask, timestep, *args):
        timesteps.append(timestep.clone())
        return real_predict(noisy, tokens, mask, timestep, *args)

    monkeypatch.setattr(generator.denoiser, "predict", spy)
    with caplog.at_level("WARNING", logger="avatar_gen.inference.generator"):
        packed = generator.denoise(None, inputs, chunk.num_frames, SIZE, SIZE, FPS, 2, 3.0,
                                   torch.Generator().manual_seed(2), condition_latents=given)
    monkeypatch.undo()
    # the untrained checkpoint records no continuation training: more than one given frame is worth a warning
    assert ("was trained with at most 1" in caplog.text) == (given_frames > 1)
    latents = generator.latent_frames(packed, chunk.num_frames, SIZE, SIZE)
    assert latents.shape == (1, 8, 3, 4, 4)
    assert torch.equal(latents[:, :, :given_frames], given)
    assert not torch.equal(latents[:, :, given_frames:], torch.zeros_like(latents[:, :, given_frames:]))
    given_tokens = given_frames * 4
    assert len(timesteps) == 2
    for timestep in timesteps:  # [2 (guidance), tokens]
        assert torch.equal(timestep[:, :given_tokens], torch.zeros(2, given_tokens))
        assert bool((timestep[:, given_tokens:] > 0).all())
    # a whole chunk given leaves nothing to generate; the image path and this path are exclusive
    with pytest.raises(ValueError, match="given latent frames"):
        generator.denoise(None, inputs, chunk.num_frames, SIZE, SIZE, FPS, 2, 1.0, torch.Generator(),
                          condition_latents=torch.zeros(1, 8, 3, 4, 4))
    with pytest.raises(ValueError, match="either an image or condition_latents"):
        generator.denoise(np.zeros((SIZE, SIZE, 3), np.uint8), inputs, chunk.num_frames, SIZE, SIZE, FPS, 2, 1.0,
                          torch.Generator(), condition_latents=given)
