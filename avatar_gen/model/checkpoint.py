"""Training checkpoints: atomic writing, ``latest`` link, pruning, and loading for inference.

The files of a checkpoint and its metadata are specified in docs/CONTRACTS.md ("Training checkpoints").  A checkpoint
is written into a hidden ``.tmp-step_XXXXXX`` folder and renamed into place when complete, and the ``latest`` symlink
is swapped with ``os.replace``: a run killed mid-checkpoint leaves the previous checkpoint and link intact.  Re-saving
a step that exists swaps the two folders in one atomic step (:func:`avatar_gen.utils.io.replace_folder`), so
``latest`` never names a missing folder.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from avatar_gen.errors import UserError
from avatar_gen.utils.pretrained import loading_error, resolve_pretrained
from avatar_gen.model.audio_projection import PROJECTION_CONFIG, PROJECTION_WEIGHTS, AudioProjection
from avatar_gen.model.caption import FixedCaption
from avatar_gen.model.lora import LORA_WEIGHTS, load_lora
from avatar_gen.utils.datafiles import load_json, load_safetensors_file
from avatar_gen.utils.io import TMP_PREFIX, atomic_write_json, make_staging_folder, replace_folder

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CHECKPOINT_METADATA = "avatar_checkpoint.json"
# base_model.pretrained values that start so are paths relative to the checkpoint folder (docs/CONTRACTS.md).
CHECKPOINT_RELATIVE_PREFIXES = ("./", "../")
TRANSFORMER_FOLDER = "transformer"
TRAINING_STATE_FOLDER = "training_state"
LATEST_LINK = "latest"
STEP_PATTERN = re.compile(r"^step_(\d+)$")
# Transformer config entries that must match between a checkpoint and the base it is applied to.
SIGNATURE_KEYS = ("in_channels", "out_channels", "patch_size", "patch_size_t", "num_attention_heads",
                  "attention_head_dim", "cross_attention_dim", "num_layers", "caption_channels")


def step_folder_name(step: int) -> str:
    return f"step_{step:06d}"


def transformer_signature(transformer: torch.nn.Module) -> dict[str, Any]:
    """The dimensions that decide whether weights fit this transformer."""
    return {key: transformer.config[key] for key in SIGNATURE_KEYS if key in transformer.config}


# ----------------------------------------------------------------------------------------------- writing

def checkpoint_metadata(step: int, pretrained: str, revision: str | None, lora: dict[str, Any] | None,
                        audio_encoder: dict[str, Any] | None, video: dict[str, Any], alignment: str,
                        local_margin_frames: int, temporal_compression: int, spatial_compression: int,
                        latents: dict[str, Any] | None = None, audio_dropout: float = 0.0,
                        continuation_max_frames: int = 0) -> dict[str, Any]:
    """The run-specific part of ``avatar_checkpoint.json`` (docs/CONTRACTS.md); :func:`export_model` adds the rest.

    ``lora``: ``{rank, alpha, dropout, target_modules}`` or None (full fine-tuning); ``video``: ``{height, width,
    num_frames, fps}`` of the training chunks; ``latents``: ``{latent_shape, vae}`` of the training chunks;
    ``audio_dropout``: the share of samples trained on the features of silence (guidance);
    ``continuation_max_frames``: the most leading latent frames training gave clean (0: the first frame only).
    """
    metadata = {"step": step, "base_model": {"pretrained": pretrained, "revision": revision}, "lora": lora,
                "audio_encoder": audio_encoder, "video": dict(video)}
    if latents is not None:
        metadata["latents"] = latents
    metadata.update(alignment=alignment, local_margin_frames=local_margin_frames,
                    temporal_compression=temporal_compression, spatial_compression=spatial_compression,
                    audio_dropout=audio_dropout, continuation_max_frames=continuation_max_frames)
    return metadata




def staging_folder(checkpoints_dir: str | Path, step: int) -> Path:
    """An empty hidden folder to write checkpoint ``step`` into (a stale one from a killed run is cleared)."""
    return make_staging_folder(Path(checkpoints_dir) / step_folder_name(step))


def export_model(directory: str | Path, transformer: torch.nn.Module, caption: AudioProjection | FixedCaption,
                 metadata: dict[str, Any], lora_config=None) -> None:
    """Write the inference-facing part of a checkpoint: weights, what fills the caption slot (the audio projection,
    or the fixed caption of an audio-free base) and metadata."""
    from avatar_gen.model.lora import save_lora

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if lora_config is not None:
        save_lora(transformer, lora_config, directory)
    else:
        transformer.save_pretrained(str(directory / TRANSFORMER_FOLDER), safe_serialization=True)
    caption.save(directory)
    fixed = isinstance(caption, FixedCaption)
    metadata = dict(metadata, format_version=FORMAT_VERSION, transformer_config=transformer_signature(transformer),
                    conditioning="fixed_caption" if fixed else "features",
                    audio_projection=None if fixed else caption.config.model_dump(mode="json"),
                    fixed_caption=caption.config.model_dump(mode="json") if fixed else None,
                    transformer_training="lora" if lora_config is not None else "full")
    atomic_write_json(directory / CHECKPOINT_METADATA, metadata)


def list_checkpoints(checkpoints_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints in ``checkpoints_dir`` as (step, path), oldest first."""
    checkpoints_dir = Path(checkpoints_dir)
    if not checkpoints_dir.is_dir():
        return []
    found = []
    for child in checkpoints_dir.iterdir():
        match = STEP_PATTERN.match(child.name)
        if match and child.is_dir() and not child.is_symlink() and (child / CHECKPOINT_METADATA).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def _point_latest(checkpoints_dir: Path, name: str) -> None:
    """Make ``latest`` a link to ``name`` (beside it) with one atomic rename."""
    link_tmp = checkpoints_dir / f"{TMP_PREFIX}{LATEST_LINK}"
    if link_tmp.is_symlink() or link_tmp.exists():
        link_tmp.unlink()
    os.symlink(name, link_tmp)
    os.replace(link_tmp, checkpoints_dir / LATEST_LINK)


def finalize_checkpoint(checkpoints_dir: str | Path, staging: Path, step: int, keep_last: int | None) -> Path:
    """Rename the complete ``staging`` folder to ``step_XXXXXX``, point ``latest`` at it, prune old ones."""
    checkpoints_dir = Path(checkpoints_dir)
    # Re-saving a step (a resumed run that stops where it started) replaces the old copy in one atomic step.
    final = replace_folder(staging, checkpoints_dir / step_folder_name(step))
    _point_latest(checkpoints_dir, final.name)
    if keep_last:
        for _, old in list_checkpoints(checkpoints_dir)[:-keep_last]:
            if old != final:
                shutil.rmtree(old, ignore_errors=True)
    log.info("checkpoint step %d -> %s", step, final)
    return final


# ----------------------------------------------------------------------------------------------- reading

def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from: a ``step_XXXXXX`` folder, the ``latest`` link, a run's ``checkpoints/``
    folder or the run folder itself (both meaning their newest checkpoint)."""
    path = Path(path)
    if (path / CHECKPOINT_METADATA).is_file():
        return path.resolve()
    for candidate in (path / LATEST_LINK, path / "checkpoints" / LATEST_LINK):
        if (candidate / CHECKPOINT_METADATA).is_file():
            return candidate.resolve()
    for folder in (path, path / "checkpoints"):
        found = list_checkpoints(folder)
        if found:
            return found[-1][1].resolve()
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    raise UserError(f"no checkpoint in {path} (expected {CHECKPOINT_METADATA} in it, or a 'latest' link)")


def read_checkpoint_metadata(path: str | Path) -> dict[str, Any]:
    folder = resolve_checkpoint(path)
    metadata = load_json(folder / CHECKPOINT_METADATA, "checkpoint metadata")
    if not isinstance(metadata, dict):
        raise UserError(f"{folder / CHECKPOINT_METADATA} must hold a JSON object, not a {type(metadata).__name__}")
    version = metadata.get("format_version")
    if version != FORMAT_VERSION:
        raise UserError(f"{folder}: checkpoint format {version}, this code reads format {FORMAT_VERSION}")
    base = metadata.get("base_model")
    if isinstance(base, dict) and isinstance(base.get("pretrained"), str) \
            and base["pretrained"].startswith(CHECKPOINT_RELATIVE_PREFIXES):
        # A checkpoint that travels with its base (the committed toy world) names it relative to itself; only an
        # explicit ./ or ../ means that, since "org/name" is a hub id.
        metadata["base_model"] = {**base, "pretrained": str((folder / base["pretrained"]).resolve())}
    return metadata


def load_base_transformer(pretrained: str | Path, revision: str | None = None, dtype: torch.dtype = torch.float32):
    """``LTXVideoTransformer3DModel`` from a hub id / pipeline folder (its ``transformer/``) or a transformer folder."""
    from diffusers import LTXVideoTransformer3DModel

    source = resolve_pretrained(pretrained, "LTX-Video transformer")
    local = Path(source.source)
    bare_transformer_folder = (source.is_local and (local / "config.json").is_file()
                               and not (local / TRANSFORMER_FOLDER).is_dir())
    try:
        return LTXVideoTransformer3DModel.from_pretrained(source.source, subfolder=None if bare_transformer_folder
                                                          else TRANSFORMER_FOLDER, revision=revision, torch_dtype=dtype)
    except (OSError, ValueError) as exc:
        raise loading_error(exc, source, "LTX-Video transformer", revision) from None


def check_signature(expected: dict[str, Any], transformer: torch.nn.Module, where: str) -> None:
    actual = transformer_signature(transformer)
    different = {key: (value, actual.get(key)) for key, value in expected.items() if actual.get(key) != value}
    if different:
        details = ", ".join(f"{key} {want} vs base {have}" for key, (want, have) in different.items())
        raise UserError(f"{where} was trained on a different base model: {details}")


def nonfinite_tensors(named_tensors) -> list[str]:
    """Names of the tensors (from ``(name, tensor)`` pairs) holding a NaN or an infinity."""
    return [name for name, tensor in named_tensors
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]


def check_finite_weights(transformer: torch.nn.Module, projection: torch.nn.Module, where: str,
                         lora_only: bool) -> None:
    """UserError when the trained weights hold NaN or infinity (a diverged run): they would make a black video.

    ``lora_only``: check only the LoRA matrices of the transformer (the rest is the pretrained base)."""
    named = [(name, parameter) for name, parameter in transformer.named_parameters()
             if not lora_only or ".lora_" in name]
    bad = nonfinite_tensors(named) + [f"audio_projection.{name}"
                                      for name in nonfinite_tensors(projection.named_parameters())]
    if bad:
        raise UserError(f"{where} holds non-finite weights (NaN or infinity) in {len(bad)} tensor(s), e.g. "
                        f"{', '.join(bad[:3])}: it comes from a diverged run; use an earlier checkpoint")
def load_trainable_weights(model: torch.nn.Module, folder: Path, lora: bool) -> None:
    """Copy checkpoint ``folder``'s exported weights (fp32) into a live denoiser (``.transformer`` with the adapter
    attached when ``lora``, ``.audio_projection``; a ``.fixed_caption`` is checked, not loaded): exact, so training
    resumes from them."""
    from peft.utils import set_peft_model_state_dict

    if lora:
        prefix = "transformer."
        state = {key[len(prefix):]: value
                 for key, value in load_safetensors_file(folder / LORA_WEIGHTS, "LoRA weights").items()
                 if key.startswith(prefix)}
        result = set_peft_model_state_dict(model.transformer, state, adapter_name="default")
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise UserError(f"{folder}: LoRA keys that do not fit this model: {unexpected[:3]}")
    else:
        saved = load_base_transformer(folder / TRANSFORMER_FOLDER, None, torch.float32)
        model.transformer.load_state_dict(saved.state_dict())
    if model.audio_projection is not None:
        model.audio_projection.load_state_dict(load_safetensors_file(folder / PROJECTION_WEIGHTS,
                                                                      "audio projection weights"))
    elif not torch.equal(FixedCaption.load(folder).embedding, model.fixed_caption.embedding.cpu()):
        raise UserError(f"{folder}: its fixed caption differs from this run's")


@dataclass
class AvatarCheckpoint:
    """What inference needs: the adapted transformer, the audio projection and the run's metadata."""

    transformer: torch.nn.Module
    audio_projection: AudioProjection
    metadata: dict[str, Any]
    path: Path
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def alignment(self) -> str:
        return self.metadata.get("alignment", "global")

    @property
    def audio_encoder(self) -> dict[str, Any] | None:
        return self.metadata.get("audio_encoder")

    def denoiser(self, temporal_compression: int | None = None, spatial_compression: int | None = None):
        """The trained denoiser (:class:`avatar_gen.model.denoiser.AvatarDenoiser`) with the run's alignment and its
        VAE's compression factors; ``temporal_compression``/``spatial_compression``: the loaded VAE's, used when the
        metadata does not record them (older checkpoints)."""
        from avatar_gen.model.denoiser import AvatarDenoiser

        factors = {name: int(self.metadata.get(name, fallback)) for name, fallback in (
            ("temporal_compression", temporal_compression), ("spatial_compression", spatial_compression))
            if self.metadata.get(name, fallback) is not None}
        return AvatarDenoiser(self.transformer, self.audio_projection, alignment=self.alignment,
                              local_margin_frames=int(self.metadata.get("local_margin_frames", 0)), **factors)


def load_avatar_checkpoint(path: str | Path, pretrained: str | Path | None = None, device: torch.device | str = "cpu",
                           dtype: torch.dtype = torch.float32) -> AvatarCheckpoint:
    """Load a training checkpoint for inference.

    ``path``: a ``step_XXXXXX`` folder, a ``latest`` link, or a run's (``checkpoints``) folder.
    ``pretrained``: the base model for a LoRA checkpoint (hub id or folder); default: the one the run trained on.
    Returns the transformer with the LoRA applied (adapter ``default``, not fused) or the fully fine-tuned one,
    the audio projection, and the metadata (``audio_encoder`` spec, ``video`` size/fps, ``alignment``, ...).
    Raises :class:`UserError` on missing files, a different base model, or a projection that does not fit.
    """
    folder = resolve_checkpoint(path)
    metadata = read_checkpoint_metadata(folder)
    where = f"checkpoint {folder}"
    if metadata.get("conditioning", "features") != "features":
        raise UserError(f"{where} is an audio-free base (audio.conditioning: {metadata.get('conditioning')}): it has "
                        f"no speech input to generate from; train the avatar recipe on its {TRANSFORMER_FOLDER}/ "
                        f"(LoRA + audio projection) and generate with that checkpoint")
    if metadata.get("transformer_training") == "lora":
        base = pretrained or (metadata.get("base_model") or {}).get("pretrained")
        if not base:
            raise UserError(f"{where} is a LoRA and names no base model: pass pretrained=")
        revision = None if pretrained else (metadata.get("base_model") or {}).get("revision")
        transformer = load_base_transformer(base, revision, dtype)
        check_signature(metadata.get("transformer_config", {}), transformer, where)
        if not (folder / LORA_WEIGHTS).is_file():
            raise UserError(f"{where}: {LORA_WEIGHTS} missing")
        load_lora(transformer, folder)
    else:
        if not (folder / TRANSFORMER_FOLDER / "config.json").is_file():
            raise UserError(f"{where}: {TRANSFORMER_FOLDER}/ missing (full fine-tuning checkpoint)")
        transformer = load_base_transformer(folder / TRANSFORMER_FOLDER, None, dtype)
        check_signature(metadata.get("transformer_config", {}), transformer, where)
    for name in (PROJECTION_WEIGHTS, PROJECTION_CONFIG):
        if not (folder / name).is_file():
            raise UserError(f"{where}: {name} missing")
    projection = AudioProjection.load(folder, device=device, dtype=dtype)
    caption_channels = transformer.config["caption_channels"]
    if projection.config.caption_channels != caption_channels:
        raise UserError(f"{where}: audio projection outputs {projection.config.caption_channels} channels, "
                        f"the transformer's caption_channels is {caption_channels}")
    recorded = metadata.get("audio_projection")
    if recorded and recorded != projection.config.model_dump(mode="json"):
        raise UserError(f"{where}: {PROJECTION_CONFIG} differs from the projection recorded in {CHECKPOINT_METADATA}")
    check_finite_weights(transformer, projection, where, lora_only=metadata.get("transformer_training") == "lora")
    transformer.to(device=device).eval()
    projection.eval()
    return AvatarCheckpoint(transformer=transformer, audio_projection=projection, metadata=metadata, path=folder)
