"""Render ``metrics.json`` as a Markdown report with PNG plots.

Plots are drawn on ``matplotlib.figure.Figure`` objects with the Agg canvas directly, so nothing here
touches pyplot's global backend or state (safe inside a web server or a test run).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from avatar_gen.utils.io import atomic_path, atomic_write_text

PLOT_FILES = {
    "sync_scores": "sync_scores.png",
    "sync_distribution": "sync_score_distribution.png",
    "offset_curve": "av_offset_curve.png",
}


def _format(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if value == "inf":
        return "∞"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "∞" if math.isinf(value) else f"{value:.{digits}f}"
    return str(value)


def _get(record: dict[str, Any], section: str, key: str) -> Any:
    return (record.get(section) or {}).get(key)


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


CLIP_COLUMNS = (
    ("sync@0", "offline_sync", "score"), ("best lag", "offline_sync", "best_lag"),
    ("corr@best", "offline_sync", "best_correlation"), ("sync conf", "offline_sync", "confidence"),
    ("LSE-D", "syncnet", "lse_d"), ("LSE-C", "syncnet", "lse_c"), ("PSNR dB", "reference", "psnr_db"),
    ("SSIM", "reference", "ssim"), ("flicker", "temporal", "flicker_mean"),
    ("drift SSIM last", "temporal", "drift_ssim_last"),
)


def render_markdown(metrics: dict[str, Any]) -> str:
    """The report as Markdown: settings, aggregates, one row per clip, problems, plots."""
    clips: dict[str, dict[str, Any]] = metrics["clips"]
    aggregates = metrics["aggregates"]
    has_syncnet = any(record.get("syncnet") for record in clips.values())
    has_reference = metrics.get("reference_dir") is not None
    columns = [column for column in CLIP_COLUMNS
               if (column[1] != "syncnet" or has_syncnet) and (column[1] != "reference" or has_reference)]
    lines = [
        "# Evaluation report", "",
        f"Generated videos: `{metrics['generated_dir']}`"
        + (f"; references: `{metrics['reference_dir']}`" if has_reference else "") + ".",
        f"Clips: {aggregates['num_clips']} ({aggregates['num_ok']} ok, {aggregates['num_partial']} partial, "
        f"{aggregates['num_error']} unreadable).", "",
        "Lip sync (offline): Pearson correlation of the mouth-opening proxy with the speech loudness, "
        "**sync@0** at no shift (headline), **best lag** the audio delay in frames with the highest correlation "
        "(+ = sound late), **sync conf** = best minus median over lags. LSE-D/LSE-C: SyncNet (lower/higher is "
        "better). Flicker: mean |frame - previous frame| (0–255). Drift: SSIM of the face to the first frame "
        "or input image.", "",
    ]
    heldout = metrics.get("heldout")
    if heldout:
        lines += [f"Held-out split: `{heldout['file']}` lists {heldout['num_ids']} clips; "
                  f"{len(heldout['missing_generated'])} have no generated video.", ""]
    lines += ["## Summary", "", "| metric | clips | mean | median | std | min | max |", "|---|---|---|---|---|---|---|"]
    for name, summary in aggregates.items():
        if isinstance(summary, dict):
            lines.append(f"| {name} | {summary['count']} | {_format(summary['mean'])} | {_format(summary['median'])} "
                         f"| {_format(summary['std'])} | {_format(summary['min'])} | {_format(summary['max'])} |")
    fvd = metrics.get("fvd")
    if fvd:
        lines += ["", f"FVD ({fvd['num_generated']} generated vs {fvd['num_reference']} reference clips, "
                      f"extractor `{fvd['extractor']}`): **{_format(fvd['value'], 2)}**"
                  + (f" — {fvd['note']}" if fvd.get("note") else "")]
    lines += ["", "## Clips", "",
              "| clip | status | " + " | ".join(column[0] for column in columns) + " |",
              "|---|---|" + "---|" * len(columns)]
    for clip_id, record in clips.items():
        cells = [_format(_get(record, section, key)) for _, section, key in columns]
        lines.append(f"| {_escape(clip_id)} | {record['status']} | " + " | ".join(cells) + " |")
    troubled = {clip_id: record["problems"] for clip_id, record in clips.items() if record["problems"]}
    if troubled:
        lines += ["", "## Problems", ""]
        for clip_id, problems in troubled.items():
            lines.append(f"- **{_escape(clip_id)}**: " + "; ".join(_escape(problem) for problem in problems))
    lines += ["", "## Plots", "",
              f"![per-clip lip-sync score]({PLOT_FILES['sync_scores']})", "",
              f"![lip-sync score distribution]({PLOT_FILES['sync_distribution']})", "",
              f"![audio-video offset curve]({PLOT_FILES['offset_curve']})", ""]
    return "\n".join(lines)


def _save(figure: Any, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def _no_data(axes: Any, text: str) -> None:
    axes.text(0.5, 0.5, text, ha="center", va="center", transform=axes.transAxes)
    axes.set_xticks([])
    axes.set_yticks([])


def plot_sync_scores(metrics: dict[str, Any], path: Path) -> None:
    """Per-clip bars: offline score at lag 0 and at the best lag (and LSE-C when SyncNet ran)."""
    from matplotlib.figure import Figure

    clips = metrics["clips"]
    names = list(clips)
    at_zero = [_get(clips[name], "offline_sync", "score") for name in names]
    at_best = [_get(clips[name], "offline_sync", "best_correlation") for name in names]
    lse_c = [_get(clips[name], "syncnet", "lse_c") for name in names]
    has_lse = any(value is not None for value in lse_c)
    figure = Figure(figsize=(max(6.0, 0.45 * len(names) + 2), 6.5 if has_lse else 4.0))
    axes_list = figure.subplots(2 if has_lse else 1, 1, squeeze=False)[:, 0]
    axes = axes_list[0]
    if any(value is not None for value in at_zero):
        positions = np.arange(len(names))
        axes.bar(positions - 0.2, [v if v is not None else 0 for v in at_zero], 0.4, label="at lag 0")
        axes.bar(positions + 0.2, [v if v is not None else 0 for v in at_best], 0.4, label="at best lag")
        axes.set_xticks(positions, names, rotation=60, ha="right", fontsize=7)
        axes.axhline(0, color="black", linewidth=0.5)
        axes.set_ylabel("mouth–loudness correlation")
        axes.legend(fontsize=8)
    else:
        _no_data(axes, "no offline lip-sync scores (see the report's problems)")
    axes.set_title("Offline lip-sync score per clip")
    if has_lse:
        positions = np.arange(len(names))
        axes_list[1].bar(positions, [v if v is not None else 0 for v in lse_c], 0.6, color="tab:green")
        axes_list[1].set_xticks(positions, names, rotation=60, ha="right", fontsize=7)
        axes_list[1].set_ylabel("LSE-C")
        axes_list[1].set_title("SyncNet confidence per clip")
    figure.tight_layout()
    _save(figure, path)


def plot_sync_distribution(metrics: dict[str, Any], path: Path) -> None:
    """Histogram of the offline score at lag 0 and at the best lag over clips."""
    from matplotlib.figure import Figure

    clips = metrics["clips"].values()
    at_zero = [v for v in (_get(r, "offline_sync", "score") for r in clips) if v is not None]
    at_best = [v for v in (_get(r, "offline_sync", "best_correlation") for r in clips) if v is not None]
    figure = Figure(figsize=(6.0, 4.0))
    axes = figure.subplots()
    if at_zero:
        bins = np.linspace(-1, 1, 21)
        axes.hist(at_zero, bins=bins, alpha=0.7, label="at lag 0")
        axes.hist(at_best, bins=bins, alpha=0.5, label="at best lag")
        axes.set_xlabel("mouth–loudness correlation")
        axes.set_ylabel("clips")
        axes.legend(fontsize=8)
    else:
        _no_data(axes, "no offline lip-sync scores")
    axes.set_title("Distribution of the offline lip-sync score")
    figure.tight_layout()
    _save(figure, path)


def plot_offset_curves(metrics: dict[str, Any], path: Path) -> None:
    """Correlation vs audio delay for every clip (thin) and their mean (bold); SyncNet distance when present."""
    from matplotlib.figure import Figure

    clips = metrics["clips"].values()
    curves = [(r["offline_sync"]["lags"], r["offline_sync"]["correlations"]) for r in clips if r.get("offline_sync")]
    syncnet_curves = [(r["syncnet"]["offsets"], r["syncnet"]["mean_distances"]) for r in clips if r.get("syncnet")]
    figure = Figure(figsize=(11.0 if syncnet_curves else 6.0, 4.0))
    axes_list = figure.subplots(1, 2 if syncnet_curves else 1, squeeze=False)[0]
    axes = axes_list[0]
    if curves:
        stacked = []
        for lags, correlations in curves:
            values = np.array([np.nan if c is None else c for c in correlations], dtype=np.float64)
            axes.plot(lags, values, color="tab:blue", alpha=0.25, linewidth=0.8)
            stacked.append(values)
        lags = curves[0][0]
        if all(len(values) == len(lags) for values in stacked):
            with np.errstate(all="ignore"):
                mean_curve = np.nanmean(np.stack(stacked), axis=0)
            axes.plot(lags, mean_curve, color="tab:red", linewidth=2, label="mean over clips")
            axes.legend(fontsize=8)
        axes.axvline(0, color="black", linewidth=0.5)
        axes.set_xlabel("audio delay (frames, + = sound late)")
        axes.set_ylabel("mouth–loudness correlation")
    else:
        _no_data(axes, "no offline lip-sync curves")
    axes.set_title("Audio–video offset curve (offline)")
    if syncnet_curves:
        axes = axes_list[1]
        for audio_delays, distances in syncnet_curves:
            axes.plot(audio_delays, distances, color="tab:green", alpha=0.5)
        axes.axvline(0, color="black", linewidth=0.5)
        axes.set_xlabel("audio delay (frames, + = sound late)")
        axes.set_ylabel("mean SyncNet distance")
        axes.set_title("SyncNet distance vs offset")
    figure.tight_layout()
    _save(figure, path)


def write_report(metrics: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``report.md`` and the three PNG plots into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / filename for name, filename in PLOT_FILES.items()}
    plot_sync_scores(metrics, paths["sync_scores"])
    plot_sync_distribution(metrics, paths["sync_distribution"])
    plot_offset_curves(metrics, paths["offset_curve"])
    paths["report"] = out_dir / "report.md"
    atomic_write_text(paths["report"], render_markdown(metrics))
    return paths
