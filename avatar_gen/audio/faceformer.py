"""FaceFormer (Fan et al., "FaceFormer: Speech-Driven 3D Facial Animation with Transformers", CVPR 2022).

Our own implementation of the published architecture, with parameter names and shapes equal to the
official checkpoints (``vocaset.pth``, ``biwi.pth``: plain ``state_dict``s), so that they load with
``strict=True``:

- ``audio_encoder``: wav2vec 2.0 (transformers' ``Wav2Vec2Model``, wav2vec2-base: hidden 768, 12 layers).
  As in the official code, the CNN features (50 frames/s) are resampled to the motion frame rate
  *before* the feature projection and the transformer encoder, so the encoder runs at the motion rate.
  BIWI checkpoints keep the 50 frames/s features (two audio frames per 25 fps motion frame).
- ``audio_feature_map``: Linear(768, feature_dim) — the audio memory the motion decoder attends to.
- ``vertice_map`` (motion encoder), ``PPE`` (periodic positional encoding, buffer ``pe``),
  ``transformer_decoder`` (one ``nn.TransformerDecoderLayer``, batch_first, 4 heads, feed-forward
  2 x feature_dim) with the ALiBi-like periodic temporal bias and the audio alignment mask,
  ``vertice_map_r`` (motion decoder), ``obj_vector`` (speaker style, Linear(n_subjects, feature_dim, no bias)).

Official checkpoint shapes: vocaset feature_dim 64, vertice_dim 15069, period 30, 8 training subjects;
BIWI 128, 70110, 25, 6.  A checkpoint is a bare state dict, so :func:`faceformer_config_from_state_dict`
reads the architecture from the tensor shapes (period from the periodicity of ``PPE.pe``); the wav2vec2
part is wav2vec2-base's configuration with the sizes found in the weights (attention heads: hidden/64,
as in every released wav2vec2), so loading needs no model hub.

Checkpoints written with torch's old ``weight_norm`` name the positional convolution's weights
``weight_g``/``weight_v``; current transformers uses ``parametrizations.weight.original0/original1``.
:func:`convert_weight_norm_keys` maps either way.

For avatar generation we keep only the audio path: :meth:`FaceFormer.audio_features` gives the
``audio_feature_map`` output resampled to the video's frame rate (see avatar_gen.audio.features).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from avatar_gen.audio.framing import FrontEndTiming, resample_to_frames
from avatar_gen.errors import UserError, first_line
from avatar_gen.utils.datafiles import load_tensor_file

# wav2vec2-base's convolutional front end; its strides cannot be read from the weights.
WAV2VEC2_CONV_KERNELS = (10, 3, 3, 3, 3, 2, 2)
WAV2VEC2_CONV_STRIDES = (5, 2, 2, 2, 2, 2, 2)
WAV2VEC2_HEAD_DIM = 64
DECODER_HEADS = 4  # fixed in the official code
MAX_SEQ_LEN = 600  # motion frames covered by the positional encoding and the temporal bias (official value)
BIWI_VERTICE_DIM = 70110  # 23370 vertices x 3: the only thing that tells a BIWI checkpoint apart
AUDIO_ENCODER_PREFIX = "audio_encoder."

_WEIGHT_NORM_LEGACY = ("weight_g", "weight_v")
_WEIGHT_NORM_PARAMETRIZED = ("parametrizations.weight.original0", "parametrizations.weight.original1")


@dataclass(frozen=True)
class FaceFormerConfig:
    """Sizes of a FaceFormer (see the module docstring for the official values).

    dataset: ``"vocaset"`` (audio resampled to the motion rate before the encoder, one audio frame per
    motion frame) or ``"BIWI"`` (audio kept at 50 frames/s, two audio frames per motion frame).
    """

    feature_dim: int = 64
    vertice_dim: int = 15069
    period: int = 30
    n_subjects: int = 8
    audio_hidden_dim: int = 768
    num_decoder_layers: int = 1
    dataset: Literal["vocaset", "BIWI"] = "vocaset"

    @property
    def motion_fps(self) -> float:
        """Frame rate the model was trained at (VOCASET 30 fps, BIWI 25 fps)."""
        return 25.0 if self.dataset == "BIWI" else 30.0

    def to_dict(self) -> dict:
        return asdict(self)


VOCASET_CONFIG = FaceFormerConfig(feature_dim=64, vertice_dim=15069, period=30, n_subjects=8, dataset="vocaset")
BIWI_CONFIG = FaceFormerConfig(feature_dim=128, vertice_dim=70110, period=25, n_subjects=6, dataset="BIWI")


def wav2vec2_base_config(**overrides):
    """wav2vec2-base(-960h)'s architecture (transformers' ``Wav2Vec2Config()`` defaults), built offline."""
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config(**overrides)


class PeriodicPositionalEncoding(nn.Module):
    """Sinusoidal encoding of the position within a period, repeated: ``pe`` [1, period*(max_len//period+1), d]."""

    def __init__(self, d_model: int, period: int, max_seq_len: int = MAX_SEQ_LEN, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        position = torch.arange(period, dtype=torch.float32).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        one_period = torch.zeros(period, d_model)
        one_period[:, 0::2] = torch.sin(position * div_term)
        one_period[:, 1::2] = torch.cos(position * div_term)
        repeats = max_seq_len // period + 1
        self.register_buffer("pe", one_period.unsqueeze(0).repeat(1, repeats, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [batch, frames, d_model]."""
        return self.dropout(x + self.pe[:, : x.shape[1]])


def periodic_temporal_bias(n_head: int, max_seq_len: int, period: int) -> torch.Tensor:
    """Causal self-attention mask with an ALiBi-style bias that grows by one step per period of distance.

    Returns float [n_head, max_seq_len, max_seq_len]: 0/negative bias on and below the diagonal, -inf above.
    """
    def slopes(n: int) -> list[float]:
        def power_of_two_slopes(m: int) -> list[float]:
            start = 2 ** (-(2 ** -(math.log2(m) - 3)))
            return [start * start ** i for i in range(m)]
        if math.log2(n).is_integer():
            return power_of_two_slopes(n)
        closest = 2 ** math.floor(math.log2(n))
        return power_of_two_slopes(closest) + slopes(2 * closest)[0::2][: n - closest]

    head_slopes = torch.tensor(slopes(n_head), dtype=torch.float32)
    steps = torch.arange(max_seq_len) // period  # period index of each distance
    distance = torch.arange(max_seq_len)[:, None] - torch.arange(max_seq_len)[None, :]  # query - key
    bias = -steps[distance.clamp_min(0)].float()
    causal = torch.zeros(max_seq_len, max_seq_len).masked_fill(distance < 0, float("-inf"))
    return causal.unsqueeze(0) + head_slopes[:, None, None] * bias.masked_fill(distance < 0, 0.0).unsqueeze(0)


def audio_alignment_mask(dataset: str, motion_frames: int, audio_frames: int, device=None) -> torch.Tensor:
    """Bool [motion_frames, audio_frames], True = masked: motion frame t sees only its own audio frame(s)."""
    mask = torch.ones(motion_frames, audio_frames, dtype=torch.bool, device=device)
    per_frame = 2 if dataset == "BIWI" else 1
    for frame in range(motion_frames):
        mask[frame, frame * per_frame: frame * per_frame + per_frame] = False
    return mask


class FaceFormer(nn.Module):
    """FaceFormer with the official parameter names (see the module docstring)."""

    def __init__(self, config: FaceFormerConfig = VOCASET_CONFIG, wav2vec2_config=None):
        super().__init__()
        from transformers import Wav2Vec2Model

        self.config = config
        wav2vec2_config = wav2vec2_config or wav2vec2_base_config()
        if wav2vec2_config.hidden_size != config.audio_hidden_dim:
            raise ValueError(f"wav2vec2 hidden size {wav2vec2_config.hidden_size} != audio_hidden_dim "
                             f"{config.audio_hidden_dim}")
        self.audio_encoder = Wav2Vec2Model(wav2vec2_config)
        self.audio_feature_map = nn.Linear(config.audio_hidden_dim, config.feature_dim)
        self.vertice_map = nn.Linear(config.vertice_dim, config.feature_dim)
        self.PPE = PeriodicPositionalEncoding(config.feature_dim, period=config.period)
        # Not a parameter and not in the official state dict: rebuilt from the period.
        self.register_buffer("biased_mask", periodic_temporal_bias(DECODER_HEADS, MAX_SEQ_LEN, config.period),
                             persistent=False)
        decoder_layer = nn.TransformerDecoderLayer(d_model=config.feature_dim, nhead=DECODER_HEADS,
                                                   dim_feedforward=2 * config.feature_dim, batch_first=True)
        self.transformer_decoder = nn.TransformerDecoder(decoder_layer, num_layers=config.num_decoder_layers)
        self.vertice_map_r = nn.Linear(config.feature_dim, config.vertice_dim)
        self.obj_vector = nn.Linear(config.n_subjects, config.feature_dim, bias=False)
        nn.init.zeros_(self.vertice_map_r.weight)
        nn.init.zeros_(self.vertice_map_r.bias)
        self.timing = FrontEndTiming.from_conv_stack(wav2vec2_config.conv_kernel, wav2vec2_config.conv_stride)

    def encode_audio(self, input_values: torch.Tensor, num_frames: int, fps: float) -> torch.Tensor:
        """Audio encoder output resampled to ``fps``: [batch, num_frames, audio_hidden_dim].

        input_values: [batch, samples] normalised 16 kHz audio (zero mean, unit variance per utterance).
        Row i is at time i / fps.  vocaset-style models resample the CNN features to ``fps`` before the
        transformer encoder (the official forward does the same to 30 fps); BIWI-style models run the
        encoder at 50 frames/s, as trained, and the output is resampled afterwards.
        """
        encoder = self.audio_encoder
        cnn_features = encoder.feature_extractor(input_values).transpose(1, 2)  # [B, T50, conv_dim]
        if self.config.dataset == "BIWI":
            projected, _ = encoder.feature_projection(cnn_features)
            hidden = encoder.encoder(projected).last_hidden_state
            return resample_to_frames(hidden, self.timing, num_frames, fps)
        at_frame_rate = resample_to_frames(cnn_features, self.timing, num_frames, fps)
        projected, _ = encoder.feature_projection(at_frame_rate)
        return encoder.encoder(projected).last_hidden_state

    def audio_features(self, input_values: torch.Tensor, num_frames: int, fps: float) -> torch.Tensor:
        """The audio memory of the motion decoder, ``audio_feature_map(encode_audio(...))``:
        [batch, num_frames, feature_dim], row i at time i / fps."""
        return self.audio_feature_map(self.encode_audio(input_values, num_frames, fps))

    @torch.no_grad()
    def predict(self, input_values: torch.Tensor, template: torch.Tensor, one_hot: torch.Tensor,
                num_frames: int | None = None) -> torch.Tensor:
        """Autoregressive mesh animation, as the official ``predict``.

        input_values: [batch, samples] normalised 16 kHz audio; template: [batch, vertice_dim] neutral mesh;
        one_hot: [batch, n_subjects] speaking style.  Returns vertices [batch, num_frames, vertice_dim] at
        the model's motion rate (default: the audio's duration at that rate).
        """
        fps = self.config.motion_fps
        if num_frames is None:
            num_frames = max(1, int(input_values.shape[1] / self.timing.sample_rate * fps))
        if num_frames > MAX_SEQ_LEN:
            raise UserError(f"FaceFormer animates at most {MAX_SEQ_LEN} frames ({MAX_SEQ_LEN / fps:.0f} s) at once")
        if self.config.dataset == "BIWI":
            encoder = self.audio_encoder
            cnn_features = encoder.feature_extractor(input_values).transpose(1, 2)
            cnn_features = cnn_features[:, : 2 * num_frames]
            projected, _ = encoder.feature_projection(cnn_features)
            memory = self.audio_feature_map(encoder.encoder(projected).last_hidden_state)
            num_frames = min(num_frames, memory.shape[1] // 2)
        else:
            memory = self.audio_features(input_values, num_frames, fps)
        style = self.obj_vector(one_hot).unsqueeze(1)  # [B, 1, feature_dim]
        motion_tokens = style
        batch = input_values.shape[0]
        for _ in range(num_frames):
            decoder_input = self.PPE(motion_tokens)
            length = decoder_input.shape[1]
            # nn.MultiheadAttention wants a 3-D mask as [batch * heads, L, L].
            self_mask = self.biased_mask[:, :length, :length].repeat(batch, 1, 1).to(decoder_input.dtype)
            memory_mask = audio_alignment_mask(self.config.dataset, length, memory.shape[1], memory.device)
            decoded = self.transformer_decoder(decoder_input, memory, tgt_mask=self_mask, memory_mask=memory_mask)
            vertices = self.vertice_map_r(decoded)
            next_token = self.vertice_map(vertices[:, -1]).unsqueeze(1) + style
            motion_tokens = torch.cat([motion_tokens, next_token], dim=1)
        return vertices + template.unsqueeze(1)


def convert_weight_norm_keys(state_dict: Mapping[str, torch.Tensor], target_keys: set[str]) -> dict[str, torch.Tensor]:
    """Rename weight-norm tensors to the naming ``target_keys`` uses (``weight_g``/``weight_v`` <->
    ``parametrizations.weight.original0/1``); every other key is kept as is."""
    converted = {}
    for key, value in state_dict.items():
        new_key = key
        if key not in target_keys:
            for legacy, parametrized in zip(_WEIGHT_NORM_LEGACY, _WEIGHT_NORM_PARAMETRIZED):
                if key.endswith("." + legacy) and key[: -len(legacy)] + parametrized in target_keys:
                    new_key = key[: -len(legacy)] + parametrized
                elif key.endswith("." + parametrized) and key[: -len(parametrized)] + legacy in target_keys:
                    new_key = key[: -len(parametrized)] + legacy
        converted[new_key] = value
    return converted


def to_official_key_names(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict with weight-norm tensors named as in the official checkpoints (``weight_g``/``weight_v``)."""
    renamed = {}
    for key, value in state_dict.items():
        for legacy, parametrized in zip(_WEIGHT_NORM_LEGACY, _WEIGHT_NORM_PARAMETRIZED):
            if key.endswith("." + parametrized):
                key = key[: -len(parametrized)] + legacy
        renamed[key] = value
    return renamed


def _require(state_dict: Mapping[str, torch.Tensor], key: str, source: str) -> torch.Tensor:
    if key not in state_dict:
        raise UserError(f"{source} is not a FaceFormer checkpoint: it has no {key!r}")
    return state_dict[key]


def _period_of(pe: torch.Tensor, source: str) -> int:
    """The period of a ``PPE.pe`` buffer [1, period*(600//period+1), d]: the smallest p that fits its
    length and after which the rows repeat."""
    length = pe.shape[1]
    for period in range(1, length + 1):
        if period * (MAX_SEQ_LEN // period + 1) == length and torch.equal(pe[0, period:], pe[0, :-period]):
            return period
    raise UserError(f"{source}: cannot tell the period of PPE.pe with shape {tuple(pe.shape)}")


def wav2vec2_config_from_state_dict(state_dict: Mapping[str, torch.Tensor], prefix: str = AUDIO_ENCODER_PREFIX,
                                    source: str = "checkpoint"):
    """wav2vec2-base's configuration with the sizes found in the weights under ``prefix``.

    Reads conv widths/kernels/bias, norm type, hidden and feed-forward sizes, layer count and the
    positional convolution; attention heads are hidden/64 (true of every released wav2vec2).
    """
    conv_weights = []
    while f"{prefix}feature_extractor.conv_layers.{len(conv_weights)}.conv.weight" in state_dict:
        conv_weights.append(state_dict[f"{prefix}feature_extractor.conv_layers.{len(conv_weights)}.conv.weight"])
    if not conv_weights:
        raise UserError(f"{source}: no wav2vec2 feature extractor weights under {prefix!r}")
    kernels = tuple(int(weight.shape[2]) for weight in conv_weights)
    if kernels != WAV2VEC2_CONV_KERNELS:
        raise UserError(f"{source}: wav2vec2 conv kernels {kernels} differ from wav2vec2-base's "
                        f"{WAV2VEC2_CONV_KERNELS}")
    hidden = int(_require(state_dict, f"{prefix}feature_projection.projection.weight", source).shape[0])
    num_layers = 0
    while f"{prefix}encoder.layers.{num_layers}.attention.q_proj.weight" in state_dict:
        num_layers += 1
    intermediate = int(_require(state_dict, f"{prefix}encoder.layers.0.feed_forward.intermediate_dense.weight",
                                source).shape[0])
    pos_conv = None
    for name in ("weight_v", "parametrizations.weight.original1", "weight"):
        pos_conv = state_dict.get(f"{prefix}encoder.pos_conv_embed.conv.{name}")
        if pos_conv is not None:
            break
    if pos_conv is None:
        raise UserError(f"{source}: no wav2vec2 positional convolution weights")
    layer_norm_everywhere = f"{prefix}feature_extractor.conv_layers.1.layer_norm.weight" in state_dict
    has_masked_embed = f"{prefix}masked_spec_embed" in state_dict
    return wav2vec2_base_config(
        hidden_size=hidden,
        num_hidden_layers=num_layers,
        num_attention_heads=max(1, hidden // WAV2VEC2_HEAD_DIM),
        intermediate_size=intermediate,
        conv_dim=tuple(int(weight.shape[0]) for weight in conv_weights),
        conv_kernel=kernels,
        conv_stride=WAV2VEC2_CONV_STRIDES,
        conv_bias=f"{prefix}feature_extractor.conv_layers.0.conv.bias" in state_dict,
        feat_extract_norm="layer" if layer_norm_everywhere else "group",
        do_stable_layer_norm=layer_norm_everywhere,
        num_conv_pos_embeddings=int(pos_conv.shape[2]),
        num_conv_pos_embedding_groups=hidden // int(pos_conv.shape[1]),
        # The masking embedding only exists when SpecAugment is configured; match the checkpoint.
        mask_time_prob=0.05 if has_masked_embed else 0.0,
        mask_feature_prob=0.0,
    )


def faceformer_config_from_state_dict(state_dict: Mapping[str, torch.Tensor],
                                      source: str = "checkpoint") -> FaceFormerConfig:
    feature_dim, audio_hidden_dim = _require(state_dict, "audio_feature_map.weight", source).shape
    vertice_dim = int(_require(state_dict, "vertice_map.weight", source).shape[1])
    n_subjects = int(_require(state_dict, "obj_vector.weight", source).shape[1])
    period = _period_of(_require(state_dict, "PPE.pe", source), source)
    num_decoder_layers = 0
    while f"transformer_decoder.layers.{num_decoder_layers}.linear1.weight" in state_dict:
        num_decoder_layers += 1
    if num_decoder_layers == 0:
        raise UserError(f"{source}: no transformer_decoder layers")
    return FaceFormerConfig(feature_dim=int(feature_dim), vertice_dim=vertice_dim, period=period,
                            n_subjects=n_subjects, audio_hidden_dim=int(audio_hidden_dim),
                            num_decoder_layers=num_decoder_layers,
                            dataset="BIWI" if vertice_dim == BIWI_VERTICE_DIM else "vocaset")


def faceformer_from_state_dict(state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> FaceFormer:
    """Build a FaceFormer of the checkpoint's shape and load it with ``strict=True`` (weight-norm names mapped)."""
    config = faceformer_config_from_state_dict(state_dict, source)
    wav2vec2_config = wav2vec2_config_from_state_dict(state_dict, source=source)
    # Built without memory or random initialisation (every weight comes from the checkpoint): a full-size
    # model costs seconds of initialisation otherwise.
    with torch.device("meta"):
        model = FaceFormer(config, wav2vec2_config)
    converted = convert_weight_norm_keys(state_dict, set(model.state_dict()))
    try:
        model.load_state_dict(converted, strict=True, assign=True)
    except RuntimeError as exc:
        raise UserError(f"{source} does not fit FaceFormer: {first_line(exc)} ...") from None
    # The temporal bias is not in the checkpoint: compute it for real.
    model.biased_mask = periodic_temporal_bias(DECODER_HEADS, MAX_SEQ_LEN, config.period)
    return model.eval()


def load_faceformer(path: str | os.PathLike, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> FaceFormer:
    """Load an official FaceFormer checkpoint (``vocaset.pth``/``biwi.pth``, a state dict) with no hub access."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"FaceFormer checkpoint not found: {path} (download vocaset.pth from the official "
                        "FaceFormer repository, see docs/audio_latents.md)")
    state_dict = load_tensor_file(path, "FaceFormer checkpoint")
    if isinstance(state_dict, dict) and "state_dict" in state_dict and isinstance(state_dict["state_dict"], dict):
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict):
        raise UserError(f"{path} is not a FaceFormer state dict")
    model = faceformer_from_state_dict(state_dict, source=str(path))
    return model.to(device=device, dtype=dtype)
