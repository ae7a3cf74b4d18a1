"""Per-video-frame speech features: the audio side of the model's caption slot.

``load_audio_encoder(spec)`` loads the model once; ``encoder.encode(audio_16k, num_frames, fps)`` gives
``[num_frames, feature_dim]`` float32 with row ``i`` describing the audio around ``i / fps`` seconds
(the timing is explained in :mod:`avatar_gen.audio.framing`).  Three encoders:

``wav2vec2``
    transformers' ``Wav2Vec2Model.from_pretrained(name_or_path)`` (hub id or local folder; default
    ``facebook/wav2vec2-base-960h``).  Features are the hidden states of ``layers`` (indices into
    ``hidden_states``: 0 = the transformer's input, k = output of layer k, negative from the end; the
    default ``[-1]`` is the last layer), computed at 50 frames/s and then resampled to the video rate.
    Several layers (Hallo keeps all 12) are concatenated (``layer_reduce="concat"``, D = 768 x len(layers))
    or averaged (``"mean"``, D = 768).

``faceformer``
    An official FaceFormer checkpoint (``name_or_path`` = ``vocaset.pth`` or ``biwi.pth``), see
    :mod:`avatar_gen.audio.faceformer`.  Features are the audio memory its motion decoder reads:
    ``audio_feature_map`` of the (fine-tuned) wav2vec2 encoder's last hidden state, with the CNN
    features resampled to the *video* frame rate before the transformer encoder, as FaceFormer does for
    its 30 fps meshes.  D = feature_dim (64 for vocaset, 128 for BIWI).  This is the part of FaceFormer
    trained to predict lip and jaw motion, compact and speaker-independent; ``layers`` must be ``[-1]``.

``logmel``
    No weights: scaled log-mel band energies (``mel_bands`` bands, 10 ms hop), see :mod:`avatar_gen.audio.logmel`.
    D = ``mel_bands``.  The encoder of the toy world (docs/toy.md), and a baseline for the learned ones.

Audio is normalised per clip to zero mean and unit variance (what wav2vec2's feature extractor does
with ``do_normalize``) and zero-padded at the end to cover the chunk's duration.  ``encode_batch``
runs equal-length clips (every chunk of a stage run has the same length) as one exact batch; clips of
different lengths are zero-padded to the longest, which for wav2vec2-base (group-norm front end, trained
without attention masks) changes their features slightly, as in the reference implementation.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from avatar_gen.audio.framing import FrontEndTiming, resample_to_frames
from avatar_gen.config import StrictModel
from avatar_gen.errors import UserError
from avatar_gen.utils.pretrained import loading_error, resolve_pretrained
from avatar_gen.media.audio import SAMPLE_RATE

log = logging.getLogger(__name__)

DEFAULT_WAV2VEC2 = "facebook/wav2vec2-base-960h"
ENCODERS = ("faceformer", "wav2vec2", "logmel")
LOGMEL_NAME = "logmel"
# Variance floor of the per-clip normalisation (the value wav2vec2's feature extractor uses).
NORMALISE_EPSILON = 1e-7


class AudioEncoderSpec(StrictModel):
    """Which audio encoder made a set of features: written into every ``<key>_text.json`` and training
    checkpoint so that inference rebuilds exactly the same encoder."""

    encoder: Literal["faceformer", "wav2vec2", "logmel"] = "wav2vec2"
    name_or_path: str = Field(DEFAULT_WAV2VEC2, min_length=1,
                              description="wav2vec2: hub id or folder; faceformer: path of vocaset.pth/biwi.pth")
    layers: list[int] = Field(default_factory=lambda: [-1], min_length=1,
                              description="hidden_states indices to keep (0 = transformer input, -1 = last layer)")
    layer_reduce: Literal["concat", "mean"] = Field("concat", description="how several layers become one vector")
    feature_dim: int | None = Field(None, ge=1, description="D of the features; filled in when the model loads")
    mel_bands: int | None = Field(None, ge=8, le=128, description="logmel: number of mel bands (default 40)")

    @field_validator("layers")
    @classmethod
    def _distinct_layers(cls, layers: list[int]) -> list[int]:
        if len(set(layers)) != len(layers):
            raise ValueError(f"layers must be distinct, got {layers}")
        return layers

    @model_validator(mode="after")
    def _faceformer_uses_last_layer(self) -> "AudioEncoderSpec":
        if self.encoder in ("faceformer", "logmel") and self.layers != [-1]:
            raise ValueError(f"the {self.encoder} encoder has one feature layer: layers must be [-1]")
        if self.mel_bands is not None and self.encoder != "logmel":
            raise ValueError("mel_bands applies to the logmel encoder only")
        return self


def normalise_audio(audio: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance (silence stays zero), float32."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.size == 0:
        return audio
    centred = audio - audio.mean()
    return (centred / np.sqrt(centred.var() + NORMALISE_EPSILON)).astype(np.float32)


class AudioFeatureEncoder:
    """A loaded audio encoder; see the module docstring.  Build it with :func:`load_audio_encoder`."""

    def __init__(self, spec: AudioEncoderSpec, model: torch.nn.Module, timing: FrontEndTiming, feature_dim: int,
                 device: torch.device, dtype: torch.dtype, normalise: bool = True):
        self.spec = spec.model_copy(update={"feature_dim": feature_dim})
        self.model = model
        self.timing = timing
        self.feature_dim = feature_dim
        self.device = device
        self.dtype = dtype
        self.normalise = normalise

    def _prepare(self, audio: np.ndarray, num_frames: int, fps: float) -> np.ndarray:
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"audio must be mono [samples], got shape {audio.shape}")
        if not np.all(np.isfinite(audio)):
            raise ValueError("audio contains NaN or inf")
        if self.normalise:
            audio = normalise_audio(audio)
        needed = self.timing.samples_to_cover(num_frames, fps)
        if audio.size < needed:
            audio = np.pad(audio, (0, needed - audio.size))
        return audio

    def encode(self, audio_16k: np.ndarray, num_frames: int, fps: float) -> np.ndarray:
        """Features of one clip: float32 [num_frames, feature_dim], row i at time i / fps of ``audio_16k``
        (mono float32, 16 kHz; shorter audio is padded with silence)."""
        return self.encode_batch([audio_16k], num_frames, fps)[0]

    @torch.no_grad()
    def encode_batch(self, audios: Sequence[np.ndarray], num_frames: int, fps: float) -> list[np.ndarray]:
        """Features of several clips that share ``num_frames`` and ``fps``: one [num_frames, D] array each.

        Clips of equal length run as one batch (identical to encoding them one by one); a mixed-length
        batch is zero-padded to the longest (see the module docstring)."""
        if num_frames < 1 or fps <= 0:
            raise ValueError(f"need num_frames >= 1 and fps > 0, got {num_frames} and {fps}")
        if not audios:
            return []
        prepared = [self._prepare(audio, num_frames, fps) for audio in audios]
        longest = max(audio.size for audio in prepared)
        batch = np.stack([np.pad(audio, (0, longest - audio.size)) for audio in prepared])
        input_values = torch.from_numpy(batch).to(device=self.device, dtype=self.dtype)
        features = self._forward(input_values, num_frames, fps)
        return [row.float().cpu().numpy() for row in features]

    def _forward(self, input_values: torch.Tensor, num_frames: int, fps: float) -> torch.Tensor:
        if self.spec.encoder == "faceformer":
            return self.model.audio_features(input_values, num_frames, fps)
        if self.spec.encoder == "logmel":
            return resample_to_frames(self.model(input_values), self.timing, num_frames, fps)
        outputs = self.model(input_values, output_hidden_states=True)
        chosen = [outputs.hidden_states[index] for index in self.spec.layers]
        hidden = torch.cat(chosen, dim=-1) if self.spec.layer_reduce == "concat" else torch.stack(chosen).mean(0)
        return resample_to_frames(hidden, self.timing, num_frames, fps)


def _load_wav2vec2(name_or_path: str):
    """``Wav2Vec2Model.from_pretrained`` with a one-line error naming what could not be loaded."""
    from transformers import Wav2Vec2Model

    source = resolve_pretrained(name_or_path, "wav2vec2 model")
    try:
        model = Wav2Vec2Model.from_pretrained(source.source)
    except (OSError, ValueError) as exc:
        raise loading_error(exc, source, "wav2vec2 model") from None
    normalise = True
    try:
        from transformers import Wav2Vec2FeatureExtractor

        normalise = bool(Wav2Vec2FeatureExtractor.from_pretrained(source.source).do_normalize)
    except (OSError, ValueError):
        log.info("no feature-extractor config beside %s: normalising audio as wav2vec2-base does", name_or_path)
    return model, normalise


def load_audio_encoder(spec: AudioEncoderSpec, device: str | torch.device = "cpu",
                       dtype: torch.dtype = torch.float32) -> AudioFeatureEncoder:
    """Load the encoder ``spec`` names (once; reuse the result for every clip).

    Raises UserError when the weights cannot be found or a layer index or ``feature_dim`` does not fit.
    """
    device = torch.device(device)
    if spec.encoder == "faceformer":
        from avatar_gen.audio.faceformer import load_faceformer

        model = load_faceformer(spec.name_or_path, device=device, dtype=dtype)
        timing, feature_dim, normalise = model.timing, model.config.feature_dim, True
    elif spec.encoder == "logmel":
        from avatar_gen.audio.logmel import DEFAULT_MEL_BANDS, LogMelFrontEnd

        spec = spec.model_copy(update={"mel_bands": spec.mel_bands or DEFAULT_MEL_BANDS, "name_or_path": LOGMEL_NAME})
        model = LogMelFrontEnd(spec.mel_bands).to(device=device).eval()
        timing, feature_dim, normalise = model.timing, spec.mel_bands, True
    else:
        model, normalise = _load_wav2vec2(spec.name_or_path)
        model = model.to(device=device, dtype=dtype).eval()
        config = model.config
        num_states = config.num_hidden_layers + 1
        bad = [index for index in spec.layers if not -num_states <= index < num_states]
        if bad:
            raise UserError(f"layers {bad} out of range for {spec.name_or_path}: it has hidden states "
                            f"0..{num_states - 1} (or -{num_states}..-1)")
        timing = FrontEndTiming.from_conv_stack(config.conv_kernel, config.conv_stride)
        width = config.hidden_size
        feature_dim = width * len(spec.layers) if spec.layer_reduce == "concat" else width
    if spec.feature_dim is not None and spec.feature_dim != feature_dim:
        raise UserError(f"{spec.encoder} {spec.name_or_path} gives {feature_dim}-d features, "
                        f"but the spec asks for feature_dim={spec.feature_dim}")
    return AudioFeatureEncoder(spec, model, timing, feature_dim, device, dtype, normalise=normalise)


TINY_WAV2VEC2_FOLDER = "wav2vec2"


def write_tiny_wav2vec2(out_dir: Path, seed: int = 0) -> Path:
    """Write a tiny random wav2vec2 folder (``save_pretrained`` + feature-extractor config): hidden 32,
    2 layers, 2 heads, conv width 16 with wav2vec2-base's kernels and strides (so 50 frames/s, 25 ms field)."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from avatar_gen.tiny import _save_atomically

    torch.manual_seed(seed)
    config = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    model = Wav2Vec2Model(config).eval()
    feature_extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0,
                                                 do_normalize=True, return_attention_mask=False)

    def save(folder: str) -> None:
        model.save_pretrained(folder)
        feature_extractor.save_pretrained(folder)

    target = Path(out_dir) / TINY_WAV2VEC2_FOLDER
    _save_atomically(target, save)
    return target
