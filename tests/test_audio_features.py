"""Audio encoders: frame counts, time alignment, batching, FaceFormer checkpoint compatibility (tiny zoo, CPU)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from avatar_gen.audio.faceformer import (BIWI_CONFIG, VOCASET_CONFIG, FaceFormer, faceformer_from_state_dict,
                                         load_faceformer)
from avatar_gen.audio.features import AudioEncoderSpec, load_audio_encoder
from avatar_gen.audio.framing import FrontEndTiming, frame_weights
from avatar_gen.tiny.faceformer import tiny_faceformer
from avatar_gen.errors import UserError

SAMPLE_RATE = 16_000


@pytest.fixture(scope="module")
def wav2vec2_encoder(tiny_zoo):
    return load_audio_encoder(AudioEncoderSpec(encoder="wav2vec2", name_or_path=str(tiny_zoo / "wav2vec2")))


@pytest.fixture(scope="module")
def faceformer_encoder(tiny_zoo):
    return load_audio_encoder(AudioEncoderSpec(encoder="faceformer", name_or_path=str(tiny_zoo / "faceformer.pth")))


@pytest.fixture(scope="module")
def logmel_encoder():
    return load_audio_encoder(AudioEncoderSpec(encoder="logmel"))


@pytest.fixture(params=["wav2vec2", "faceformer", "logmel"])
def encoder(request, wav2vec2_encoder, faceformer_encoder, logmel_encoder):
    return {"wav2vec2": wav2vec2_encoder, "faceformer": faceformer_encoder, "logmel": logmel_encoder}[request.param]


def test_logmel_features_carry_the_loudness_and_not_the_gain(logmel_encoder):
    """The weight-free encoder: a frame's mean log-mel follows the speech's loudness envelope (what moves the
    mouth), a quieter recording of the same speech gives the same features, and its spec records the bands."""
    from avatar_gen.audio.tts import synthesize
    from avatar_gen.media.audio import rms_envelope

    speech = synthesize("Hello there, this sentence checks the loudness features.", sample_rate=SAMPLE_RATE)
    num_frames = int(len(speech.audio) / SAMPLE_RATE * 25)
    features = logmel_encoder.encode(speech.audio, num_frames, 25.0)
    assert features.shape == (num_frames, 40) and logmel_encoder.spec.mel_bands == 40
    loudness = np.log(rms_envelope(speech.audio, SAMPLE_RATE, 25.0, num_frames) + 1e-4)
    assert np.corrcoef(features.mean(axis=1), loudness)[0, 1] > 0.8
    np.testing.assert_allclose(logmel_encoder.encode(speech.audio * 0.05, num_frames, 25.0), features, atol=1e-3)
    with pytest.raises(ValueError, match="mel_bands"):
        AudioEncoderSpec(encoder="wav2vec2", mel_bands=40)


def _burst_audio(num_samples: int, centre_seconds: float, seed: int = 0) -> np.ndarray:
    """Silence with 20 ms of loud noise centred at ``centre_seconds``."""
    audio = np.zeros(num_samples, dtype=np.float32)
    burst = np.random.default_rng(seed).standard_normal(320).astype(np.float32) * 0.5
    start = int(round(centre_seconds * SAMPLE_RATE)) - 160
    audio[start:start + 320] = burst
    return audio


def test_frontend_timing_of_wav2vec2():
    timing = FrontEndTiming.from_conv_stack((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2))
    assert timing.hop_samples == 320 and timing.receptive_field_samples == 400
    assert timing.frame_rate == 50.0
    assert timing.first_frame_time == pytest.approx(0.0125, abs=1e-4)
    assert timing.num_frames(16_000) == 49


def test_frame_weights_put_each_video_frame_at_its_time():
    timing = FrontEndTiming.from_conv_stack((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2))
    feature_times = timing.first_frame_time + np.arange(49) / timing.frame_rate
    for fps in (25.0, 30.0, 24.0, 60.0):
        num_frames = int(fps)  # one second
        weights = frame_weights(49, timing, num_frames, fps).numpy()
        assert weights.shape == (num_frames, 49)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)
        centre_of_mass = weights @ feature_times
        inside = (np.arange(num_frames) / fps >= feature_times[0] + 1 / fps) & \
                 (np.arange(num_frames) / fps <= feature_times[-1] - 1 / fps)
        # Exact when the filter width is a whole number of feature frames (25, 60 fps), within 2 ms
        # (a twentieth of a frame) otherwise.
        np.testing.assert_allclose(centre_of_mass[inside], (np.arange(num_frames) / fps)[inside], atol=2e-3)


@pytest.mark.parametrize("fps,num_frames,num_samples", [
    (25.0, 49, 31_360),   # exactly the chunk's 1.96 s
    (30.0, 61, 32_533),   # 2.0333 s, not a whole number of samples per frame
    (25.0, 17, 10_000),   # audio shorter than the chunk: padded with silence
    (30.0, 33, 40_001),   # audio longer than the chunk and an odd sample count
    (25.0, 1, 100),       # a single frame from less audio than one receptive field
    (29.97, 7, 4_000),
])
def test_feature_rows_equal_frame_count(encoder, fps, num_frames, num_samples):
    audio = np.random.default_rng(1).standard_normal(num_samples).astype(np.float32) * 0.1
    features = encoder.encode(audio, num_frames, fps)
    assert features.shape == (num_frames, encoder.feature_dim)
    assert features.dtype == np.float32 and np.all(np.isfinite(features))


@pytest.mark.parametrize("fps,num_frames,first,second", [(25.0, 49, 0.80, 1.40), (30.0, 61, 0.50, 1.20),
                                                         (25.0, 37, 0.52, 1.00)])
def test_burst_changes_rows_at_its_frame_and_not_far_away(encoder, fps, num_frames, first, second):
    """Moving a burst from ``first`` to ``second`` seconds changes the rows at both times (+-1 frame), and
    rows far from both stay the same: features are local in time and row i is at time i / fps."""
    num_samples = int(round(num_frames / fps * SAMPLE_RATE))
    features_first = encoder.encode(_burst_audio(num_samples, first), num_frames, fps)
    features_second = encoder.encode(_burst_audio(num_samples, second), num_frames, fps)
    change = np.linalg.norm(features_first - features_second, axis=1)
    frames = np.array([first * fps, second * fps])
    peaks = np.argsort(-change)[:2]
    for frame in frames:
        assert np.min(np.abs(peaks - frame)) <= 1, (frame, peaks, np.round(change / change.max(), 2))
    distance = np.min(np.abs(np.arange(num_frames)[:, None] - frames[None, :]), axis=1)
    # The tiny models' positional convolution spans 16 transformer frames (8 each side; FaceFormer runs its
    # transformer at the video rate), so rows more than 10 frames away must not change.
    assert change[distance > 10].max() < 0.05 * change.max(), np.round(change / change.max(), 2)

    # Against pure silence: beyond the clip-wide shift that wav2vec2's group-norm front end gives every
    # row, the largest change is at the burst's frame.
    silence = encoder.encode(np.zeros(num_samples, dtype=np.float32), num_frames, fps)
    excess = np.abs(np.linalg.norm(features_first - silence, axis=1) -
                    np.median(np.linalg.norm(features_first - silence, axis=1)))
    assert abs(int(np.argmax(excess)) - first * fps) <= 1


def test_encode_batch_equals_one_by_one(encoder):
    rng = np.random.default_rng(2)
    audios = [rng.standard_normal(20_000).astype(np.float32) * 0.1 for _ in range(3)]
    batched = encoder.encode_batch(audios, 31, 25.0)
    for audio, features in zip(audios, batched):
        np.testing.assert_allclose(features, encoder.encode(audio, 31, 25.0), atol=1e-4)
    mixed = encoder.encode_batch([audios[0], audios[1][:15_000]], 31, 25.0)
    assert [features.shape for features in mixed] == [(31, encoder.feature_dim)] * 2
    assert encoder.encode_batch([], 31, 25.0) == []


def test_wav2vec2_layer_stack(tiny_zoo):
    folder = str(tiny_zoo / "wav2vec2")
    concat = load_audio_encoder(AudioEncoderSpec(encoder="wav2vec2", name_or_path=folder, layers=[0, 1, 2]))
    mean = load_audio_encoder(AudioEncoderSpec(encoder="wav2vec2", name_or_path=folder, layers=[1, 2],
                                               layer_reduce="mean"))
    last = load_audio_encoder(AudioEncoderSpec(encoder="wav2vec2", name_or_path=folder, layers=[2]))
    audio = np.random.default_rng(3).standard_normal(16_000).astype(np.float32) * 0.1
    assert concat.feature_dim == 96 and concat.spec.feature_dim == 96 and mean.feature_dim == 32
    stacked = concat.encode(audio, 25, 25.0)
    np.testing.assert_allclose(stacked[:, 64:], last.encode(audio, 25, 25.0), atol=1e-5)
    with pytest.raises(UserError, match="out of range"):
        load_audio_encoder(AudioEncoderSpec(encoder="wav2vec2", name_or_path=folder, layers=[3]))
    with pytest.raises(UserError, match="feature_dim"):
        load_audio_encoder(AudioEncoderSpec(encoder="wav2vec2", name_or_path=folder, feature_dim=7))


def test_spec_round_trips_through_json(wav2vec2_encoder):
    spec = wav2vec2_encoder.spec
    assert AudioEncoderSpec.model_validate_json(spec.model_dump_json()) == spec
    with pytest.raises(ValueError):
        AudioEncoderSpec(encoder="faceformer", name_or_path="x.pth", layers=[3])
    with pytest.raises(ValueError):
        AudioEncoderSpec(encoder="wav2vec2", layers=[1, 1])


def test_missing_models_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_audio_encoder(AudioEncoderSpec(encoder="wav2vec2", name_or_path=str(tmp_path / "absent")))
    with pytest.raises(UserError, match="facebook/wav2vec2-base-960h"):
        load_audio_encoder(AudioEncoderSpec(encoder="wav2vec2"))  # the hub is unreachable in tests
    with pytest.raises(UserError, match="FaceFormer checkpoint not found"):
        load_audio_encoder(AudioEncoderSpec(encoder="faceformer", name_or_path=str(tmp_path / "vocaset.pth")))
    not_a_checkpoint = tmp_path / "notes.pth"
    torch.save({"hello": torch.zeros(2)}, not_a_checkpoint)
    with pytest.raises(UserError, match="not a FaceFormer checkpoint"):
        load_faceformer(not_a_checkpoint)


def test_tiny_faceformer_file_uses_official_names_and_round_trips(tiny_zoo):
    state_dict = torch.load(tiny_zoo / "faceformer.pth", map_location="cpu", weights_only=True)
    assert "audio_encoder.encoder.pos_conv_embed.conv.weight_g" in state_dict
    assert not any("parametrizations" in key for key in state_dict)
    model = load_faceformer(tiny_zoo / "faceformer.pth")
    reference = tiny_faceformer(seed=0)
    audio = torch.randn(1, 16_000) * 0.1
    torch.testing.assert_close(model.audio_features(audio, 25, 25.0), reference.audio_features(audio, 25, 25.0))
    vertices = model.predict(audio, torch.zeros(1, model.config.vertice_dim), torch.eye(3)[:1], num_frames=6)
    assert vertices.shape == (1, 6, model.config.vertice_dim) and torch.isfinite(vertices).all()


def _official_faceformer_state_dict(feature_dim: int, vertice_dim: int, period: int, n_subjects: int) -> dict:
    """A state dict with the key names and shapes of the official FaceFormer checkpoints (transformers 4.6
    naming of wav2vec2-base, old torch weight-norm names), written out independently of our model code."""
    hidden, conv, layers, ffn = 768, 512, 12, 3072
    tensors = {"audio_encoder.masked_spec_embed": (hidden,)}
    for index, kernel in enumerate((10, 3, 3, 3, 3, 2, 2)):
        tensors[f"audio_encoder.feature_extractor.conv_layers.{index}.conv.weight"] = (conv, 1 if index == 0 else conv,
                                                                                       kernel)
    tensors["audio_encoder.feature_extractor.conv_layers.0.layer_norm.weight"] = (conv,)
    tensors["audio_encoder.feature_extractor.conv_layers.0.layer_norm.bias"] = (conv,)
    tensors["audio_encoder.feature_projection.layer_norm.weight"] = (conv,)
    tensors["audio_encoder.feature_projection.layer_norm.bias"] = (conv,)
    tensors["audio_encoder.feature_projection.projection.weight"] = (hidden, conv)
    tensors["audio_encoder.feature_projection.projection.bias"] = (hidden,)
    tensors["audio_encoder.encoder.pos_conv_embed.conv.weight_g"] = (1, 1, 128)
    tensors["audio_encoder.encoder.pos_conv_embed.conv.weight_v"] = (hidden, hidden // 16, 128)
    tensors["audio_encoder.encoder.pos_conv_embed.conv.bias"] = (hidden,)
    tensors["audio_encoder.encoder.layer_norm.weight"] = (hidden,)
    tensors["audio_encoder.encoder.layer_norm.bias"] = (hidden,)
    for layer in range(layers):
        prefix = f"audio_encoder.encoder.layers.{layer}."
        for projection in ("k_proj", "v_proj", "q_proj", "out_proj"):
            tensors[prefix + f"attention.{projection}.weight"] = (hidden, hidden)
            tensors[prefix + f"attention.{projection}.bias"] = (hidden,)
        for norm in ("layer_norm", "final_layer_norm"):
            tensors[prefix + f"{norm}.weight"] = (hidden,)
            tensors[prefix + f"{norm}.bias"] = (hidden,)
        tensors[prefix + "feed_forward.intermediate_dense.weight"] = (ffn, hidden)
        tensors[prefix + "feed_forward.intermediate_dense.bias"] = (ffn,)
        tensors[prefix + "feed_forward.output_dense.weight"] = (hidden, ffn)
        tensors[prefix + "feed_forward.output_dense.bias"] = (hidden,)
    tensors["audio_feature_map.weight"] = (feature_dim, hidden)
    tensors["audio_feature_map.bias"] = (feature_dim,)
    tensors["vertice_map.weight"] = (feature_dim, vertice_dim)
    tensors["vertice_map.bias"] = (feature_dim,)
    decoder = "transformer_decoder.layers.0."
    for attention in ("self_attn", "multihead_attn"):
        tensors[decoder + f"{attention}.in_proj_weight"] = (3 * feature_dim, feature_dim)
        tensors[decoder + f"{attention}.in_proj_bias"] = (3 * feature_dim,)
        tensors[decoder + f"{attention}.out_proj.weight"] = (feature_dim, feature_dim)
        tensors[decoder + f"{attention}.out_proj.bias"] = (feature_dim,)
    tensors[decoder + "linear1.weight"] = (2 * feature_dim, feature_dim)
    tensors[decoder + "linear1.bias"] = (2 * feature_dim,)
    tensors[decoder + "linear2.weight"] = (feature_dim, 2 * feature_dim)
    tensors[decoder + "linear2.bias"] = (feature_dim,)
    for norm in ("norm1", "norm2", "norm3"):
        tensors[decoder + f"{norm}.weight"] = (feature_dim,)
        tensors[decoder + f"{norm}.bias"] = (feature_dim,)
    tensors["vertice_map_r.weight"] = (vertice_dim, feature_dim)
    tensors["vertice_map_r.bias"] = (vertice_dim,)
    tensors["obj_vector.weight"] = (feature_dim, n_subjects)
    generator = torch.Generator().manual_seed(0)
    state_dict = {key: torch.randn(shape, generator=generator) * 0.02 for key, shape in tensors.items()}
    # The periodic positional encoding buffer: sin/cos of the position within a period, repeated.
    position = torch.arange(period, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, feature_dim, 2).float() * (-math.log(10000.0) / feature_dim))
    one_period = torch.zeros(period, feature_dim)
    one_period[:, 0::2] = torch.sin(position * frequency)
    one_period[:, 1::2] = torch.cos(position * frequency)
    state_dict["PPE.pe"] = one_period.repeat(600 // period + 1, 1)[None]
    return state_dict


@pytest.mark.parametrize("official", [VOCASET_CONFIG, pytest.param(BIWI_CONFIG, marks=pytest.mark.slow)],
                         ids=["vocaset", "biwi"])
def test_official_full_size_state_dict_loads_strictly(official):
    state_dict = _official_faceformer_state_dict(official.feature_dim, official.vertice_dim, official.period,
                                                 official.n_subjects)
    model = faceformer_from_state_dict(state_dict, source=f"{official.dataset} (in memory)")
    assert model.config == official
    assert model.audio_encoder.config.hidden_size == 768 and model.audio_encoder.config.num_hidden_layers == 12
    assert model.audio_encoder.config.num_attention_heads == 12
    loaded = model.state_dict()
    torch.testing.assert_close(loaded["audio_encoder.encoder.pos_conv_embed.conv.parametrizations.weight.original1"],
                               state_dict["audio_encoder.encoder.pos_conv_embed.conv.weight_v"])
    torch.testing.assert_close(loaded["obj_vector.weight"], state_dict["obj_vector.weight"])
    # Our own module, built directly, has exactly the official keys (modulo weight-norm naming).
    from avatar_gen.audio.faceformer import to_official_key_names

    with torch.device("meta"):
        assert set(to_official_key_names(FaceFormer(official).state_dict())) == set(state_dict)


def test_state_dict_missing_a_key_is_refused(tiny_zoo):
    state_dict = torch.load(tiny_zoo / "faceformer.pth", map_location="cpu", weights_only=True)
    del state_dict["transformer_decoder.layers.0.norm3.bias"]
    with pytest.raises(UserError, match="does not fit"):
        faceformer_from_state_dict(state_dict)


def test_biwi_style_model_runs_its_encoder_at_50_per_second():
    from avatar_gen.audio.faceformer import FaceFormerConfig, wav2vec2_base_config

    torch.manual_seed(0)
    small = wav2vec2_base_config(hidden_size=64, num_hidden_layers=1, num_attention_heads=1, intermediate_size=64,
                                 conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    model = FaceFormer(FaceFormerConfig(feature_dim=8, vertice_dim=6, period=25, n_subjects=2, audio_hidden_dim=64,
                                        dataset="BIWI"), small).eval()
    audio = torch.randn(1, 16_000) * 0.1
    assert model.audio_features(audio, 30, 30.0).shape == (1, 30, 8)
    vertices = model.predict(audio, torch.zeros(1, 6), torch.eye(2)[:1])
    assert vertices.shape == (1, 24, 6)  # 49 feature frames -> 24 motion frames at 25 fps, two audio frames each
