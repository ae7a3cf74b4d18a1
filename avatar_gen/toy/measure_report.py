"""The Markdown of the toy world's measurement reports (:mod:`avatar_gen.toy.measure`, :mod:`.measure_long`).

Every figure is printed with what it was computed on (n of how many, held-out), so a table row never stands alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def spread(values: list[float | None], of: int | None = None) -> dict[str, Any]:
    """Mean, standard deviation and count of the values that exist (None: could not be measured, e.g. no face);
    ``of``: how many there were to measure."""
    present = [float(value) for value in values if value is not None and np.isfinite(value)]
    return {"mean": float(np.mean(present)) if present else None, "std": float(np.std(present)) if present else None,
            "n": len(present), "of": len(values) if of is None else of}


# Audio gains on the toy world sit within 1e-3 of 1 (docs/results.md#the-toy-world): fewer digits would print every
# checkpoint as "1.000 ± 0.000" and hide the differences a comparison is for.
GAIN_DIGITS = 6


def spread_text(summary: dict[str, Any] | None, digits: int = 3, unit: str = "") -> str:
    """``0.812 ± 0.041 (n=16)`` (``unit`` after the numbers), or ``n/a (n=0 of 16)`` when nothing could be
    measured."""
    if not summary:
        return "n/a"
    count = f"n={summary['n']}" + (f" of {summary['of']}" if summary.get("of") not in (None, summary["n"]) else "")
    if summary.get("mean") is None:
        return f"n/a ({count})"
    return f"{plus_minus(summary['mean'], summary['std'], digits)}{unit} ({count})"


def plus_minus(mean: float, std: float, digits: int = 3) -> str:
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def comparison_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per checkpoint with the headline figures (the comparison the issue asks for: alignment, encoder)."""
    rows = []
    for name, entry in report["checkpoints"].items():
        checkpoint, videos = entry["checkpoint"], entry.get("videos") or {}
        gain = entry.get("audio_gain")
        vae = entry.get("vae_ceiling") or {}
        rows.append({"name": name, "alignment": checkpoint["alignment"], "encoder": checkpoint["encoder"],
                     "training": checkpoint["transformer_training"], "step": checkpoint["step"],
                     "vae_psnr": vae.get("psnr"), "vae_sync_reconstruction": vae.get("sync_reconstruction"),
                     "audio_gain": None if gain is None else {"mean": gain["gain"], "std": gain["std"],
                                                              "n": gain["n_chunks"], "of": gain["n_chunks"]},
                     "mouth_gain": None if gain is None or not gain.get("mouth") else {
                         "mean": gain["mouth"]["gain"], "std": gain["mouth"]["std"], "n": gain["n_chunks"],
                         "of": gain["n_chunks"]},
                     **{figure: videos.get(figure) for figure in ("face_found_pct", "sync", "sync_control",
                                                                  "identity_ssim", "flicker")}})
    return rows


def _held_out_line(report: dict[str, Any]) -> str:
    held_out = report["held_out"]
    return (f"Held-out data: {held_out['clips']} synthetic clips ({held_out['seconds']:.1f} s, {held_out['frames']} "
            f"frames at {held_out['fps']:g} fps, {held_out['sentences']} sentences, voices "
            f"{', '.join(held_out['voices']) or 'n/a'}) in `{held_out['folder']}`; no figure, sentence or voice of "
            "these clips was trained on.")


def _header(title: str, report: dict[str, Any]) -> list[str]:
    lines = [f"# {title}", "", f"Date: {report['date']} (UTC), device {report['device']}.", "", _held_out_line(report)]
    if report.get("command"):
        lines += ["", "Command:", "", "```", report["command"], "```"]
    return lines


def render_measure_report(report: dict[str, Any]) -> str:
    """``measure.md``: the comparison table, then each checkpoint's sections."""
    settings = report["settings"]
    lines = _header("Toy world: held-out measurement", report)
    lines += ["", "## Comparison", "",
              "Mean ± std over held-out cases (n = cases measured, of how many); the audio gain's spread is over the "
              "noise draws.", "",
              "| checkpoint | alignment | encoder | step | audio gain | … on the mouth's tokens | face found % | "
              "sync@0 | control sync | identity SSIM | flicker |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in report["comparison"]:
        lines.append(f"| {row['name']} | {row['alignment']} | {row['encoder']} | {row['step']} | "
                     f"{spread_text(row['audio_gain'], GAIN_DIGITS)} | {spread_text(row['mouth_gain'], GAIN_DIGITS)} | "
                     f"{spread_text(row['face_found_pct'], 1)} | "
                     f"{spread_text(row['sync'])} | {spread_text(row['sync_control'])} | "
                     f"{spread_text(row['identity_ssim'])} | {spread_text(row['flicker'], 2)} |")
    truth = report.get("ground_truth")
    if truth is not None:
        lines.append(f"| ground truth: the held-out clips themselves | | | | | | "
                     f"{spread_text(truth['face_found_pct'], 1)} | {spread_text(truth['sync'])} | "
                     f"{spread_text(truth['sync_control'])} | {spread_text(truth['identity_ssim'])} | "
                     f"{spread_text(truth['flicker'], 2)} |")
        lines += ["", "The ground-truth row scores the original held-out clips exactly as the generated videos "
                  "(portrait = their first frame, the same controls): what a perfect generator would reach here."]
    for name, entry in report["checkpoints"].items():
        checkpoint = entry["checkpoint"]
        lines += ["", f"## {name}", "",
                  f"`{checkpoint['path']}`: step {checkpoint['step']}, {checkpoint['transformer_training']} training, "
                  f"alignment {checkpoint['alignment']}, encoder {checkpoint['encoder']}, base "
                  f"`{checkpoint['base_model']}`."]
        vae = entry.get("vae_ceiling")
        if vae is not None:
            lines += ["", f"**VAE ceiling** (base VAE, {vae['n_clips']} held-out clips, {vae['frames']} frames): "
                      f"reconstruction PSNR {spread_text(vae['psnr'], 2, ' dB')}; offline sync@0 of the "
                      f"reconstructions {spread_text(vae['sync_reconstruction'])} vs of the originals "
                      f"{spread_text(vae['sync_original'])}."]
        gain = entry.get("audio_gain")
        if gain is not None:
            figure = plus_minus(gain["gain"], gain["std"], GAIN_DIGITS)
            lines += ["", f"**Audio-conditioning gain** on {gain['n_chunks']} held-out chunks of "
                      f"{gain['chunk_frames']} frames from {gain['n_clips']} clips: {figure} (spread "
                      f"over {gain['num_draws']} noise/sigma draws; loss with the true audio "
                      f"{gain['loss_true']:.5f}, with {gain['partner']} {gain['loss_shuffled']:.5f}; noise-level "
                      f"settings: {gain['flow_settings']})."]
            mouth = gain.get("mouth")
            if mouth is not None:
                figure = plus_minus(mouth["gain"], mouth["std"], GAIN_DIGITS)
                lines += ["", f"The same on the mouth's tokens only ({100 * mouth['token_share']:.1f} % of the "
                          f"tokens; the ground truth's mouth box): {figure} (loss "
                          f"{mouth['loss_true']:.5f} with the true audio, {mouth['loss_shuffled']:.5f} with the "
                          "partner's)."]
        noise = entry.get("noise_levels")
        if noise is not None:
            lines += ["", f"**Loss by noise level** on {noise['n_chunks']} held-out chunks of {noise['chunk_frames']} "
                      f"frames from {noise['n_clips']} clips (own audio, first frame given, the same noise at every "
                      "level): the share of the noise that one denoising step at that level leaves (above 1: the "
                      f"prediction adds noise). The sampler's noise levels at {noise['steps']} steps: "
                      f"{', '.join(f'{sigma:.3f}' for sigma in noise['sampler_sigmas'])}.", "",
                      "| noise level (sigma) | held-out loss |", "|---|---|"]
            lines += [f"| {row['sigma']:g} | {spread_text(row['loss'])} |" for row in noise["rows"]]
        videos = entry.get("videos")
        if videos is not None:
            lines += ["", f"**Generated videos**: {videos['n_cases']} held-out cases (portrait = the clip's first "
                      f"frame, speech = its own sound), {videos['steps']} steps, guidance {videos['guidance']:g}"
                      f"{_sampling_text(videos)}, seed {videos['seed']}; control = {videos['control']}.", "",
                      "| figure | mean ± std (n) |", "|---|---|",
                      f"| face found, % of frames | {spread_text(videos['face_found_pct'], 1)} |",
                      f"| offline sync@0 with its speech | {spread_text(videos['sync'])} |",
                      f"| offline sync@0 with another clip's speech | {spread_text(videos['sync_control'])} |",
                      f"| identity SSIM to the portrait | {spread_text(videos['identity_ssim'])} |",
                      f"| flicker (mean abs. frame difference, 0-255) | {spread_text(videos['flicker'], 2)} |",
                      f"| seconds to generate one video | {spread_text(videos['generation_seconds'], 1)} |",
                      "", "| case | control | s | face % | sync@0 | control sync | SSIM | flicker |",
                      "|---|---|---|---|---|---|---|---|"]
            for case in videos["cases"]:
                lines.append(f"| {case['clip_id']} | {case['control_clip_id']} | {case['speech_seconds']:.1f} | "
                             f"{case['face_found_pct']:.0f} | {_number(case['sync'])} | "
                             f"{_number(case['sync_control'])} | {case['identity_ssim']:.3f} | "
                             f"{case['flicker']:.2f} |")
        sweep = entry.get("guidance_sweep")
        if sweep is not None:
            lines += ["", f"**Guidance sweep** on the first {sweep['n_cases']} case(s), {sweep['steps']} steps"
                      f"{_sampling_text(sweep)}:", "",
                      "| guidance | face found % | sync@0 | control sync | identity SSIM |", "|---|---|---|---|---|"]
            for row in sweep["rows"]:
                lines.append(f"| {row['guidance']:g} | {spread_text(row['face_found_pct'], 1)} | "
                             f"{spread_text(row['sync'])} | {spread_text(row['sync_control'])} | "
                             f"{spread_text(row['identity_ssim'])} |")
    lines += ["", f"Settings: {', '.join(f'{key} {value}' for key, value in settings.items())}.", ""]
    return "\n".join(lines)


def _sampling_text(entry: dict[str, Any]) -> str:
    """Where the guidance applied and where denoising started: `` on the mouth``, `` at noise levels sigma 0.5-1``,
    ``, from the portrait's still video at sigma 0.8`` (``, the mouth from pure noise``); nothing for the whole frame
    at every level from pure noise
    (and for reports made before these settings existed)."""
    from avatar_gen.inference.guidance import FULL_INTERVAL

    low, high = entry.get("guidance_interval") or FULL_INTERVAL
    region = entry.get("guidance_region") or "frame"
    start = entry.get("start_sigma") or 1.0
    return ("" if region == "frame" else f" on the {region}") + \
        ("" if (low, high) == FULL_INTERVAL else f" at noise levels sigma {low:g}-{high:g}") + \
        ("" if start >= 1.0 else f", from the portrait's still video at sigma {start:g}") + \
        (", the mouth from pure noise" if start < 1.0 and entry.get("start_region") == "outside_mouth" else "")


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _handoff_text(handoff: dict[str, Any] | None) -> str:
    """``latent, 3 latent frames, anchor portrait`` (docs/inference.md, "Long speech")."""
    if not handoff:
        return "not recorded"
    frames = f", {handoff['latent_frames']} latent frames" if handoff.get("latent_frames") else ""
    return f"{handoff['handoff']}{frames}, anchor {handoff['anchor']}"


def _ratio_text(summary: dict[str, Any]) -> str:
    """``0.912 (n=7 of 8)``: one ratio over the videos that could be scored."""
    value = "n/a" if summary["ratio"] is None else f"{summary['ratio']:.3f}"
    return f"{value} (n={summary['n']} of {summary['of']})"


def render_long_report(report: dict[str, Any]) -> str:
    """``measure-long.md``: per checkpoint the drift figures over the long videos."""
    settings, truth = report["settings"], report["ground_truth"]
    lines = _header("Toy world: long videos (drift over a minute)", report)
    lines += ["", f"Each case: a held-out portrait speaking {settings['seconds']:g} s of held-out speech (its clip's "
              f"sound, then the next held-out clips'), {settings['steps']} steps, guidance {settings['guidance']:g}"
              f"{_sampling_text(settings)}. "
              f"Reference colour shift of the ground truth: {spread_text(truth['colour_shift'], 2)} ({truth['note']})."]
    timing_chunks = [str(index) for index in settings["timing_chunks"]]
    for name, entry in report["checkpoints"].items():
        checkpoint = entry["checkpoint"]
        lines += ["", f"## {name}", "",
                  f"`{checkpoint['path']}` (step {checkpoint['step']}, alignment {checkpoint['alignment']}, encoder "
                  f"{checkpoint['encoder']}): {entry['n_cases']} held-out portraits, mean ± std over them (n); "
                  f"hand-off {_handoff_text(entry.get('handoff'))}.", "",
                  "| figure | first | last | last / first |", "|---|---|---|---|",
                  f"| identity SSIM to the portrait, at its face box ({settings['identity_window']:g} s windows) | "
                  f"{spread_text(entry['identity_ssim_first'])} | {spread_text(entry['identity_ssim_last'])} | "
                  f"{spread_text(entry['identity_ratio'])} |",
                  f"| the same at each frame's tracked face box | "
                  f"{spread_text(entry['identity_ssim_first_tracked'])} | "
                  f"{spread_text(entry['identity_ssim_last_tracked'])} | "
                  f"{spread_text(entry['identity_ratio_tracked'])} |",
                  f"| offline sync@0 ({settings['sync_window']:g} s windows) | {spread_text(entry['sync_first'])} | "
                  f"{spread_text(entry['sync_last'])} | {spread_text(entry['sync_ratio'])} |", "",
                  "| figure | value |", "|---|---|",
                  f"| flicker at chunk boundaries | {spread_text(entry['boundary_flicker'], 2)} |",
                  f"| flicker inside chunks | {spread_text(entry['inside_flicker'], 2)} |",
                  f"| boundary / inside | {spread_text(entry['flicker_ratio'])} |",
                  f"| offline sync@0: mean of the last windows / mean of the first | "
                  f"{_ratio_text(entry['sync_ratio_of_means'])} |",
                  f"| colour shift, first vs last {settings['colour_window']:g} s (Delta E) | "
                  f"{spread_text(entry['colour_shift'], 2)} |",
                  f"| face found, % of frames | {spread_text(entry['face_found_pct'], 1)} |"]
        for index in timing_chunks:
            timing = entry["chunk_timing"][index]
            lines.append(f"| chunk {index}: seconds / peak memory MiB | {spread_text(timing['seconds'], 2)} / "
                         f"{spread_text(timing['peak_memory_mb'], 0)} |")
        ratio = entry.get("chunk_timing_ratio")
        if ratio:
            first, last = ratio["chunks"]
            lines.append(f"| chunk {last} / chunk {first}: seconds / peak memory | {spread_text(ratio['seconds'])} / "
                         f"{spread_text(ratio['peak_memory_mb'])} |")
    lines += ["", f"Settings: {', '.join(f'{key} {value}' for key, value in settings.items())}.", ""]
    return "\n".join(lines)
