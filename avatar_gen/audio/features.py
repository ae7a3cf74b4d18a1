"""Per-video-frame speech features: the audio side of the model's caption slot.

One interface over three encoders (wav2vec2 hidden states, FaceFormer's lip-motion audio memory, weight-free
log-mel energies), so that the stage,
training and inference rebuild exactly the encoder an :class:`AudioEncoderSpec` names.  Row ``i`` of the features
describes the audio around ``i / fps`` (timing in :mod:`avatar_gen.audio.framing`).  The encoders, layers,
normalisation and batching are described in docs/audio_latents.md ("Encoders and alignment").
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from avatar_gen.audio.framing import FrontEndTiming, resample_to_frames
from avatar_gen.config import StrictModel
from avatar_gen.errors import UserError
from avatar_gen.utils.pretrained import loading_error, resolve_pretrained

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

    @model_validator(mode="before")
    @classmethod
    def _default_mel_bands(cls, data: object) -> object:
        """A logmel spec names its band count even when left to the default, so that the spec a run asks for and
        the one recorded in its files compare equal (a re-run of the stage resumes instead of refusing)."""
        if isinstance(data, dict) and data.get("encoder") == "logmel" and data.get("mel_bands") is None:
            from avatar_gen.audio.logmel import DEFAULT_MEL_BANDS

            data = {**data, "mel_bands": DEFAULT_MEL_BANDS}
        return data

    @field_validator("layers")
    @classmethod
    def _distinct_layers(cls, layers: list[int]) -> list[int]:
        if len(set(layers)) != len(layers):
            raise ValueError(f"layers must be distinct, got {layers}")
        return layers

    @model_validator(mode="after")
    def _faceformer_uses_last_layer(self) -> AudioEncoderSpec:
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


@dataclass(eq=False)
class AudioFeatureEncoder:
    """A loaded audio encoder; see the module docstring.  Build it with :func:`load_audio_encoder`."""

    spec: AudioEncoderSpec
    model: torch.nn.Module
    timing: FrontEndTiming
    feature_dim: int
    device: torch.device
    dtype: torch.dtype
    normalise: bool = True

    def __post_init__(self) -> None:
        self.spec = self.spec.model_copy(update={"feature_dim": self.feature_dim})

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


def speech_features(encoder: AudioFeatureEncoder, audio_16k: np.ndarray, windows: Sequence[tuple[int, int]],
                    fps: float, num_frames: int | None = None) -> list[np.ndarray]:
    """Features of one speech, encoded once as a whole, cut into frame windows: ``[window frames, D]`` per
    ``(start_frame, window frames)`` window of the speech's frame grid (frame ``i`` at ``i / fps`` s).

    The encoder sees the whole speech as ``num_frames`` frames (default: to the furthest window's end; the speech is
    zero-padded to cover them).  wav2vec2 and FaceFormer attend over their whole input and the audio is normalised
    over all of it, so a row depends on all the speech, never on how it is cut: the audio stage calls this with a
    clip's speech and its chunks, inference with a request's speech and its chunks, and the same audio gives the
    same rows.
    """
    return speech_features_batch(encoder, [audio_16k], [windows], fps, num_frames)[0]


def speech_features_batch(encoder: AudioFeatureEncoder, speeches: Sequence[np.ndarray],
                          windows: Sequence[Sequence[tuple[int, int]]], fps: float,
                          num_frames: int | None = None) -> list[list[np.ndarray]]:
    """:func:`speech_features` of several speeches at once (``windows[i]`` cuts ``speeches[i]``).  Give speeches of
    one length: the encoder then sees each exactly as alone (a shorter one would be zero-padded in the batch)."""
    ends = [start + length for cuts in windows for start, length in cuts]
    total = num_frames if num_frames is not None else max(ends)
    if max(ends) > total:
        raise ValueError(f"a window ends at frame {max(ends)}, past the speech's {total} frames")
    encoded = encoder.encode_batch(list(speeches), total, fps)
    return [[rows[start:start + length] for start, length in cuts] for rows, cuts in zip(encoded, windows)]


def silence_features(encoder: AudioFeatureEncoder, num_frames: int, fps: float) -> np.ndarray:
    """``[num_frames, D]``: the features of ``num_frames / fps`` s of silence, the "no speech" input.

    Inference feeds them as the negative of classifier-free guidance (per chunk, at the chunk's length) and the
    trainer's audio dropout replaces a sample's features by them (the audio stage writes them per chunk length:
    :func:`avatar_gen.audio.pipeline.write_silence_features`), so guidance pushes away from what training taught.
    """
    samples = int(round(num_frames / fps * encoder.timing.sample_rate))
    return speech_features(encoder, np.zeros(samples, dtype=np.float32), [(0, num_frames)], fps)[0]


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
