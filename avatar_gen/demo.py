"""``make demo``: every stage of the pipeline, run as a user runs it, on synthetic data over the toy world (CPU).

    python -m avatar_gen.demo --out outputs/demo

The chain (each stage is the real stage script in its own process, with the flags a user would type):

1. ``python -m avatar_gen.synthetic``      synthetic close-up talking figures, an AVSpeech-format CSV, an unseen
                                           portrait
2. ``video_scraper/scrap_video.py``        downloads the CSV's segments from a loopback server through yt-dlp,
                                           filters them, transcribes them offline (pocketsphinx)
3. ``preprocessing/save_vae_latents.py``   latents of every chunk, by the committed toy VAE (``models/toy-ltx-video``)
4. ``preprocessing/save_text_latents.py``  per-frame log-mel speech features of every chunk
5. ``preprocessing/save_mouth_boxes.py``   each clip's mouth box from a face detector (the mouth-weighted loss)
6. ``ltx_video/training.py``               the real recipe (``configs/train-toy.yaml``: LoRA on ``attn2`` + the audio
                                           projection over the frozen toy base), briefly
7. ``ltx_video/inference.py``              twice: the unseen portrait speaks a sentence that was not in any training
                                           data, in a voice no training clip has, with this run's checkpoint and with
                                           the committed toy checkpoint (``models/toy-avatar``: the same recipe, trained
                                           for the figures in docs/results.md)
8. ``ltx_video/evaluate.py``               lip-sync and stability report of both videos

Results land in ``--out``: ``generated/*.mp4``, ``strip_<video>.png`` (frames above the speech loudness),
``training_curves.png``, ``evaluation/report.md``, ``summary.md`` and ``summary.json`` (counts and timings of each
stage), ``logs/<stage>.log``.  The toy world (docs/toy.md) is small and synthetic: it is where the recipe must show
that it learns lip sync from speech it never heard (held-out figures: docs/results.md#the-toy-world), not what
LTX-Video 2B with a trained LoRA looks like.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avatar_gen.errors import UserError
from avatar_gen.evaluation.strip import write_speech_strip
from avatar_gen.inference.generator import DEFAULT_START_SIGMA
from avatar_gen.model.checkpoint import resolve_checkpoint
from avatar_gen.training.metrics import METRICS_FILE, read_metrics
from avatar_gen.utils.cli import run_main
from avatar_gen.utils.io import atomic_write_json, atomic_write_text, read_json

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_SENTENCE = "Hello there, I am a small avatar and this sentence was never in my training data."
# The toy world's held-out voice (configs/toy-pretrain.yaml): no training clip of the toy base or checkpoint has it.
DEMO_VOICE = "en-us+f4"
# The toy base's training voices: the demo's own clips speak in them, like the committed checkpoint's training clips.
TRAINING_VOICES = "en-us,en-gb,en-us+f3,en-us+m3"
TOY_BASE = REPO_ROOT / "models" / "toy-ltx-video"
TOY_CHECKPOINT = REPO_ROOT / "models" / "toy-avatar"
LOG_TAIL_LINES = 25


@dataclass
class StageResult:
    name: str
    command: list[str]
    seconds: float
    counts: dict[str, Any] = field(default_factory=dict)


@dataclass
class DemoSettings:
    out: Path
    toy_base: Path = TOY_BASE
    toy_checkpoint: Path = TOY_CHECKPOINT
    clips: int = 8
    seed: int = 0
    size: int = 128  # the toy world's frame size (close-ups: the mouth stays large)
    num_frames: int = 25  # the toy base's chunk length
    train_steps: int = 60
    inference_steps: int = 20


class DemoRunner:
    """Runs each stage script as a subprocess (like a user at a shell), logs it, times it, stops on failure."""

    def __init__(self, settings: DemoSettings):
        self.settings = settings
        self.logs_dir = settings.out / "logs"
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.results: list[StageResult] = []

    def run(self, name: str, arguments: list[str], counts: Any = None) -> StageResult:
        command = [sys.executable, *arguments]
        log_path = self.logs_dir / f"{name}.log"
        log.info("[%s] %s", name, " ".join(arguments))
        started = time.perf_counter()
        with open(log_path, "w", encoding="utf-8") as log_file:
            completed = subprocess.run(command, cwd=REPO_ROOT, stdout=log_file, stderr=subprocess.STDOUT, check=False)
        seconds = time.perf_counter() - started
        if completed.returncode != 0:
            tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL_LINES:]
            raise UserError(f"demo stage '{name}' failed (exit {completed.returncode}); last lines of {log_path}:\n"
                            + "\n".join(tail))
        result = StageResult(name, command[1:], seconds, counts() if callable(counts) else (counts or {}))
        log.info("[%s] done in %.1f s %s", name, seconds, result.counts or "")
        self.results.append(result)
        return result


def _count_files(folder: Path, pattern: str) -> int:
    return len(list(folder.glob(pattern))) if folder.is_dir() else 0


def run_demo(settings: DemoSettings) -> list[StageResult]:
    """Run the whole chain; return each stage's result.  Re-running resumes (each stage skips finished work)."""
    from avatar_gen.synthetic import serve_directory

    out = settings.out
    rebuild = "the demo runs on the committed toy world (docs/toy.md says how to rebuild it)"
    if not (settings.toy_base / "model_index.json").is_file():
        raise UserError(f"{settings.toy_base / 'model_index.json'} is missing: {rebuild}: python -m avatar_gen.toy "
                        "pretrain")
    try:
        resolve_checkpoint(settings.toy_checkpoint)
    except UserError as exc:
        raise UserError(f"{exc}: {rebuild}: ltx_video/training.py --config configs/train-toy.yaml") from None
    synthetic_dir = out / "synthetic"
    data_dir = out / "data"
    transcripts = data_dir / "video_transcripts.json"
    run_dir = out / "run"
    generated_dir = out / "generated"
    # Named like the generated videos, so the evaluation measures identity drift against this input portrait.
    inputs_dir = out / "inputs"
    portrait = inputs_dir / "talking.png"
    runner = DemoRunner(settings)

    runner.run("synthetic_clips", [
        "-m", "avatar_gen.synthetic", "--out", str(synthetic_dir), "--num_clips", str(settings.clips),
        "--seed", str(settings.seed), "--portrait", str(portrait), "--framing", "close_up",
        "--size", str(settings.size), "--voices", TRAINING_VOICES,
    ], counts=lambda: {"clips": _count_files(synthetic_dir / "clips", "*.mp4")})

    with serve_directory(synthetic_dir / "clips") as base_url:
        runner.run("scrape", [
            "video_scraper/scrap_video.py", "--csv_path", str(synthetic_dir / "avspeech.csv"),
            "--start_row", "0", "--end_row", str(settings.clips),
            "--output_dir", str(data_dir / "raw_videos"), "--transcripts_file", str(transcripts),
            "--url_template", base_url + "/{ytid}.mp4", "--asr", "pocketsphinx",
            "--sleep_min", "0", "--sleep_max", "0", "--workers", "2", "--preset", "veryfast",
        ], counts=lambda: {"kept_clips": len(read_json(transcripts, default=[]))})

    runner.run("vae_latents", [
        "preprocessing/save_vae_latents.py", "--inputs", str(data_dir / "raw_videos"),
        "--transcripts", str(transcripts), "--output_dir", str(data_dir / "vae_latents"),
        "--pretrained", str(settings.toy_base), "--height", str(settings.size), "--width", str(settings.size),
        "--num_frames", str(settings.num_frames), "--dtype", "fp32", "--device", "cpu", "--batch_size", "4",
    ], counts=lambda: {"chunks": _count_files(data_dir / "vae_latents", "*.pt")})

    runner.run("audio_latents", [
        "preprocessing/save_text_latents.py", "--latents_dir", str(data_dir / "vae_latents"),
        "--transcripts", str(transcripts), "--audio_out", str(data_dir / "audio_wav"),
        "--ff_out", str(data_dir / "audio_latents"), "--audio_source", "original", "--encoder", "logmel",
        "--device", "cpu",
    ], counts=lambda: {"feature_files": _count_files(data_dir / "audio_latents", "*_ff.npy")})

    runner.run("mouth_boxes", [
        "preprocessing/save_mouth_boxes.py", "--latents_dir", str(data_dir / "vae_latents"),
        "--out", str(data_dir / "mouth_boxes"),
    ], counts=lambda: {"clips": _count_files(data_dir / "mouth_boxes", "*.json")})

    runner.run("training", [
        "ltx_video/training.py", "--config", "configs/train-toy.yaml",
        "--override", f"output_dir={run_dir}",
        "--override", f"model.pretrained={settings.toy_base}",
        "--override", f"data.vae_latents={data_dir / 'vae_latents'}",
        "--override", f"data.audio_latents={data_dir / 'audio_latents'}",
        "--override", f"data.mouth_boxes={data_dir / 'mouth_boxes'}",
        "--override", f"optimization.max_steps={settings.train_steps}",
        "--override", "optimization.warmup_steps=10",
        "--override", f"checkpoints.every_n_steps={settings.train_steps}",
        "--override", f"validation.every_n_steps={settings.train_steps}",
        "--override", "validation.held_out_chunks=8", "--override", "validation.train_chunks=8",
        "--override", "checkpoints.resume=latest",
    ], counts=lambda: _training_counts(run_dir))

    videos = {"talking": (run_dir / "checkpoints" / "latest", "this run's checkpoint"),
              "talking_toy": (settings.toy_checkpoint, "the committed toy checkpoint")}
    for name, (checkpoint, _) in videos.items():
        if name != portrait.stem:
            shutil.copyfile(portrait, inputs_dir / f"{name}.png")
        summary_path = out / f"inference_{name}.json"
        runner.run(f"inference_{name}", [
            "ltx_video/inference.py", "--image", str(portrait), "--text", DEMO_SENTENCE, "--voice", DEMO_VOICE,
            "--checkpoint", str(checkpoint), "--pretrained", str(settings.toy_base),
            "--output", str(generated_dir / f"{name}.mp4"), "--steps", str(settings.inference_steps),
            "--seed", str(settings.seed), "--device", "cpu", "--summary", str(summary_path),
        ], counts=lambda path=summary_path: {key: value for key, value in (read_json(path, {}) or {}).items()
                                             if key in ("duration", "num_frames", "height", "width")})

    runner.run("evaluation", [
        "ltx_video/evaluate.py", "--generated", str(generated_dir), "--out", str(out / "evaluation"),
        "--input_images", str(inputs_dir), "--overwrite",
    ], counts=lambda: _evaluation_counts(out / "evaluation"))

    for name, (_, label) in videos.items():
        write_speech_strip(generated_dir / f"{name}.mp4", out / f"strip_{name}.png",
                           title=f"unseen portrait, unseen sentence, unseen voice: {label}")
    plot_training_curves(run_dir / METRICS_FILE, out / "training_curves.png")
    write_summary(settings, runner.results, generated_dir, list(videos))
    return runner.results


def _training_counts(run_dir: Path) -> dict[str, Any]:
    rows = read_metrics(run_dir / METRICS_FILE)
    train = [row for row in rows if row.get("kind") == "train" and row.get("loss") is not None]
    validation = [row for row in rows if row.get("kind") == "validation"]
    counts: dict[str, Any] = {"steps": train[-1]["step"] if train else 0}
    if train:
        counts["first_loss"] = round(train[0]["loss"], 4)
        counts["last_loss"] = round(train[-1]["loss"], 4)
    if validation:
        counts.update({key: round(value, 4) for key, value in validation[-1].items()
                       if isinstance(value, float) and "gain" in key})
    return counts


def _evaluation_counts(evaluation_dir: Path) -> dict[str, Any]:
    """Clip counts and the mean of each aggregated metric from the evaluation's ``metrics.json``."""
    aggregates = (read_json(evaluation_dir / "metrics.json", default={}) or {}).get("aggregates", {})
    counts: dict[str, Any] = {}
    for key, value in aggregates.items():
        if isinstance(value, (int, float)):
            counts[key] = value
        elif isinstance(value, dict) and isinstance(value.get("mean"), (int, float)):
            counts[key] = round(value["mean"], 4)
    return counts


def plot_training_curves(metrics_path: Path, png_path: Path) -> Path | None:
    """Loss (and validation audio gain when present) against step, from the trainer's ``metrics.jsonl``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    train = [row for row in rows if row.get("kind") == "train" and row.get("loss") is not None]
    if not train:
        log.warning("no training metrics in %s: no curves plotted", metrics_path)
        return None
    validation = [row for row in rows if row.get("kind") == "validation"]
    figure, axes = plt.subplots(1, 2 if validation else 1, figsize=(10 if validation else 5, 3.5), squeeze=False)
    axes[0, 0].plot([row["step"] for row in train], [row["loss"] for row in train])
    axes[0, 0].set(xlabel="step", ylabel="flow-matching loss", title="training loss", yscale="log")
    if validation:
        for key in sorted({k for row in validation for k in row if k.endswith("audio_gain")}):
            points = [(row["step"], row[key]) for row in validation if row.get(key) is not None]
            axes[0, 1].plot(*zip(*points), marker="o", label=key)
        axes[0, 1].axhline(1.0, color="grey", linestyle=":")
        axes[0, 1].set(xlabel="step", ylabel="shuffled / true audio loss", title="audio-conditioning gain")
        axes[0, 1].legend()
    figure.tight_layout()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
    return png_path


def _per_video_figures(evaluation_dir: Path) -> dict[str, dict[str, Any]]:
    """Each generated video's headline figures from the evaluation's ``metrics.json`` (by clip id = file stem)."""
    metrics = read_json(evaluation_dir / "metrics.json", default={}) or {}
    figures = {}
    for clip_id, record in (metrics.get("clips") or {}).items():
        offline = record.get("offline_sync") or {}
        face = record.get("face") or {}
        temporal = record.get("temporal") or {}
        figures[clip_id] = {
            "face_found": face.get("detection_rate"), "sync_at_0": offline.get("score"),
            "best_lag": offline.get("best_lag"), "identity_ssim": temporal.get("drift_ssim_mean"),
        }
    return figures


def write_summary(settings: DemoSettings, results: list[StageResult], generated_dir: Path, videos: list[str]) -> None:
    total = sum(result.seconds for result in results)
    figures = _per_video_figures(settings.out / "evaluation")

    def cell(value: Any) -> str:
        return "n/a" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))

    lines = [
        "# Demo summary",
        "",
        "Every stage ran as its real script on synthetic close-up clips over the toy world (docs/toy.md): a small",
        "LTX-Video pretrained here, the real recipe (LoRA on attn2 + audio projection) on top. An unseen portrait",
        f"speaks an unseen sentence in an unseen voice ({DEMO_VOICE}): `talking` with this run's",
        f"{settings.train_steps}-step checkpoint (it proves the chain; too short to learn much), `talking_toy`",
        "with the committed toy checkpoint (the same recipe trained longer: on held-out clips its mouths follow the",
        "speech; figures: docs/results.md#the-toy-world). Both at inference's defaults: the mouth's tokens are",
        f"denoised from pure noise and the rest of the frame from the portrait at noise level {DEFAULT_START_SIGMA:g},"
        " so outside the",
        "mouth both videos stay close to the portrait whatever was learned — the lip sync is what tells them apart.",
        "",
        "| stage | seconds | counts |",
        "|---|---:|---|",
        *[f"| {r.name} | {r.seconds:.1f} | {', '.join(f'{k}={v}' for k, v in r.counts.items())} |" for r in results],
        f"| **total** | **{total:.1f}** | |",
        "",
        "| video | face found | offline sync@0 | best lag (frames) | identity SSIM | strip |",
        "|---|---:|---:|---:|---:|---|",
        *[f"| `{generated_dir / (name + '.mp4')}` | {cell(figures.get(name, {}).get('face_found'))} | "
          f"{cell(figures.get(name, {}).get('sync_at_0'))} | {cell(figures.get(name, {}).get('best_lag'))} | "
          f"{cell(figures.get(name, {}).get('identity_ssim'))} | `{settings.out / ('strip_' + name + '.png')}` |"
          for name in videos],
        "",
        "One video each: these are examples, not a measurement (`python -m avatar_gen.toy measure` is; docs/toy.md).",
        "",
        f"- training curves: `{settings.out / 'training_curves.png'}`",
        f"- evaluation report: `{settings.out / 'evaluation' / 'report.md'}`",
        f"- logs of each stage: `{settings.out / 'logs'}/`",
        "",
        "Open the web demo on the committed toy checkpoint:",
        "",
        f"    python app.py --checkpoint {settings.toy_checkpoint}",
        "",
    ]
    atomic_write_text(settings.out / "summary.md", "\n".join(lines))
    atomic_write_json(settings.out / "summary.json", {
        "total_seconds": round(total, 1),
        "stages": [{"name": r.name, "seconds": round(r.seconds, 1), "counts": r.counts, "command": r.command}
                   for r in results],
        "videos": {name: {"path": str(generated_dir / f"{name}.mp4"), **figures.get(name, {})} for name in videos},
    })


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run every pipeline stage on synthetic data over the toy world (CPU).")
    parser.add_argument("--out", default="outputs/demo", help="results folder (default outputs/demo)")
    parser.add_argument("--toy_base", default=str(TOY_BASE),
                        help="the toy LTX-Video pipeline folder (default: the committed models/toy-ltx-video)")
    parser.add_argument("--toy_checkpoint", default=str(TOY_CHECKPOINT),
                        help="trained toy checkpoint of the second video (default: the committed models/toy-avatar)")
    parser.add_argument("--clips", type=int, default=8, help="synthetic clips to scrape and train on (default 8)")
    defaults = DemoSettings(out=Path())
    parser.add_argument("--train_steps", type=int, default=defaults.train_steps,
                        help=f"steps of this run's LoRA training (default {defaults.train_steps})")
    parser.add_argument("--inference_steps", type=int, default=defaults.inference_steps,
                        help=f"denoising steps (default {defaults.inference_steps})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)

    def body() -> int:
        if args.clips < 2:
            raise UserError("--clips must be at least 2 (one clip is held out for validation)")
        if args.train_steps < 1 or args.inference_steps < 1:
            raise UserError("--train_steps and --inference_steps must be at least 1")
        settings = DemoSettings(out=Path(args.out).resolve(), toy_base=Path(args.toy_base).resolve(),
                                toy_checkpoint=Path(args.toy_checkpoint).resolve(), clips=args.clips,
                                seed=args.seed, train_steps=args.train_steps, inference_steps=args.inference_steps)
        started = time.perf_counter()
        run_demo(settings)
        summary = (settings.out / "summary.md").read_text(encoding="utf-8")
        sys.stdout.write(summary + f"\nDemo finished in {time.perf_counter() - started:.0f} s.\n")
        return 0

    return run_main(body, verbose=args.verbose)


if __name__ == "__main__":
    raise SystemExit(main())
