"""How much of the toy latents' motion could the speech explain at all? A linear probe on clips it was not fit on.

The audio-conditioning gain compares a model's loss with and without the right speech; it does not say how large the
gain could be. This probe does. Each latent frame minus its chunk's first (the frame a model is given) is regressed by
ridge regression, fit on some clips and scored on others, on

- ``speech``: the chunk's per-frame speech features of the frame and its ``context`` neighbours on each side (what
  the recipe's local alignment lets a latent frame see), each frame's features as separate inputs;
- ``speech_window_average``: the same window's features averaged with equal weights. Cross-attention's queries carry
  no position (LTX's RoPE is in self-attention only), so a video token cannot tell the frames of its window apart by
  their place: unless the speech's content singles one out, it receives such an average;
- ``speech_own_frame``: the frame's own features alone (the window of ``local_margin_frames: 0`` on a VAE without
  temporal compression), and
- ``mouth_opening``: the synthetic ground truth's mouth opening of the frame (a cubic in it): all that lip sync could
  ever take from the speech,

each with the same inputs of the chunk's first frame (a model is given that frame, so it knows where the mouth
started).

For each it reports the variance explained per latent element, overall and inside the ground truth's mouth box (the
box the toy VAE weighs), next to the variance there is to explain. ``python -m avatar_gen.toy speech-ceiling``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from avatar_gen.errors import UserError
from avatar_gen.utils.datafiles import load_json
from avatar_gen.utils.progress import progress

log = logging.getLogger(__name__)

RIDGE = 1e4  # the speech probe has 400 inputs per frame: a weaker penalty over-fits the clips it is fit on


def _features(audio: np.ndarray, context: int) -> np.ndarray:
    """[F, D] per-frame features -> [F, (2 context + 1) D]: each frame with its neighbours (edges repeated)."""
    padded = np.pad(audio, ((context, context), (0, 0)), mode="edge")
    return np.stack([padded[frame:frame + 2 * context + 1].ravel() for frame in range(len(audio))])


def _window_average(audio: np.ndarray, context: int) -> np.ndarray:
    """[F, D] -> [F, D]: each frame's features averaged with its ``context`` neighbours each side (edges repeated)."""
    return _features(audio, context).reshape(len(audio), 2 * context + 1, -1).mean(axis=1)


PROBES = ("speech", "speech_window_average", "speech_own_frame", "mouth_opening")


def _design(values: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Standardised inputs with a constant column (the regression's intercept)."""
    return np.concatenate([(values - mean) / std, np.ones((len(values), 1))], axis=1)


def speech_ceiling(data: Path, feature_dim: int, held_out_fraction: float = 0.2, context: int = 2,
                   ridge: float = RIDGE) -> dict[str, Any]:
    """The probe on ``data`` (a toy split folder: ``vae_latents/``, ``audio_latents/``, ``ground_truth/``).

    Clips with :func:`held_out_score` below ``held_out_fraction`` are scored, the others fit the regression.
    """
    from avatar_gen.synthetic.dataset import GROUND_TRUTH_DIR, load_ground_truth, truth_mouth_box
    from avatar_gen.training.dataset import LatentAudioDataset, held_out_score, scan_chunks

    records = scan_chunks(data / "vae_latents", data / "audio_latents", feature_dim)
    truths = {path.stem: load_ground_truth(path) for path in sorted((data / GROUND_TRUTH_DIR).glob("*.json"))}
    records = [record for record in records if record.clip_id in truths]
    if not records:
        raise UserError(f"{data}: no chunk with speech features and a ground truth (vae_latents/, audio_latents/, "
                        f"{GROUND_TRUTH_DIR}/)")
    dataset = LatentAudioDataset(records)
    parts: dict[bool, dict[str, list[np.ndarray]]] = {
        split: {**{name: [] for name in PROBES}, "target": [], "box": []} for split in (False, True)}
    for index, record in enumerate(progress(records, desc="speech ceiling", unit="chunk")):
        item, truth = dataset[index], truths[record.clip_id]
        latents, audio = item["latents"].numpy(), item["audio"].numpy()
        channels, frames, latent_height, latent_width = latents.shape
        if frames != record.num_frames:
            raise UserError(f"{record.key}: the probe needs one latent frame per video frame (a VAE without temporal "
                            f"compression), got {frames} for {record.num_frames}")
        start = int(load_json(record.latents_path.with_suffix(".json"), "latents metadata")["start_frame"])
        opening = np.asarray(truth["mouth_open"], dtype=np.float64)
        opening = opening[np.clip(np.arange(start, start + frames), 0, len(opening) - 1)]
        split = held_out_score(record.clip_id) < held_out_fraction
        target = (latents[:, 1:] - latents[:, :1]).transpose(1, 0, 2, 3).reshape(frames - 1, -1)
        parts[split]["target"].append(target)
        # The inputs of frame f and of the first frame: a model is given the first frame, so its mouth is known.
        for name, per_frame in (("speech", _features(audio, context)),
                                ("speech_window_average", _window_average(audio, context)),
                                ("speech_own_frame", audio),
                                ("mouth_opening", np.stack([opening, opening**2, opening**3], axis=1))):
            parts[split][name].append(np.concatenate(
                [per_frame[1:], np.broadcast_to(per_frame[:1], per_frame[1:].shape)], axis=1))
        box = truth_mouth_box(truth).cells(latent_height, latent_width)
        parts[split]["box"].append(np.broadcast_to(box, (frames - 1, channels, *box.shape)).reshape(frames - 1, -1))
    if not parts[True]["target"] or not parts[False]["target"]:
        raise UserError(f"{data}: held_out_fraction {held_out_fraction} leaves no clip on one side of the split")
    fit = {name: np.concatenate(values) for name, values in parts[False].items()}
    scored = {name: np.concatenate(values) for name, values in parts[True].items()}
    target_mean = fit["target"].mean(0)
    residual_base = scored["target"] - target_mean
    box = scored["box"]
    total = float((residual_base**2).mean())
    total_box = float((residual_base[box] ** 2).mean())
    report: dict[str, Any] = {
        "data": str(data), "held_out_fraction": held_out_fraction, "context_frames": context, "ridge": ridge,
        "fit_clips": len({r.clip_id for r in records if held_out_score(r.clip_id) >= held_out_fraction}),
        "scored_clips": len({r.clip_id for r in records if held_out_score(r.clip_id) < held_out_fraction}),
        "fit_frames": int(len(fit["target"])), "scored_frames": int(len(scored["target"])),
        "latent_elements_per_frame": int(fit["target"].shape[1]), "mouth_box_share": float(box.mean()),
        "variance_per_element": total, "variance_per_element_in_mouth_box": total_box}
    for name in PROBES:
        inputs_mean, inputs_std = fit[name].mean(0), fit[name].std(0) + 1e-6
        fit_design = _design(fit[name], inputs_mean, inputs_std)
        weights = np.linalg.solve(fit_design.T @ fit_design + ridge * np.eye(fit_design.shape[1]),
                                  fit_design.T @ (fit["target"] - target_mean))
        residual = residual_base - _design(scored[name], inputs_mean, inputs_std) @ weights
        explained = float((residual_base**2).mean() - (residual**2).mean())
        explained_box = float((residual_base[box] ** 2).mean() - (residual[box] ** 2).mean())
        report[name] = {"explained_per_element": explained, "share_explained": explained / total,
                        "explained_per_element_in_mouth_box": explained_box,
                        "share_explained_in_mouth_box": explained_box / total_box}
        log.info("%s: explains %.5f of %.4f per latent element (%.2f %%); in the mouth box %.4f of %.4f (%.1f %%)",
                 name, explained, total, 100 * explained / total, explained_box, total_box,
                 100 * explained_box / total_box)
    return report
