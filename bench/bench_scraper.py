"""Scraper throughput on loopback: kept clips per minute with --workers 1 vs --workers 4.

Eight synthetic 3-4 s talking clips are served by the loopback Range server; each run scrapes all of
them from an empty output folder (preview download, filters, segment download, normalisation,
pocketsphinx transcription).  A simulated network latency (``LATENCY_S`` per request, slept by the
server) stands in for the round trips a real site costs, which is what parallel downloads hide; the
polite sleep is off, so the figures are the pipeline's own cost.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path

from avatar_gen.scraper import ScrapeConfig, scrape
from avatar_gen.synthetic import RangeRequestHandler, generate_dataset, serve_directory

NUM_CLIPS = 8
LATENCY_S = 0.2


class SlowNetworkHandler(RangeRequestHandler):
    def do_GET(self) -> None:
        time.sleep(LATENCY_S)
        super().do_GET()


def _run(clips_dir: Path, csv_path: Path, out: Path, workers: int, base_url: str) -> dict:
    config = ScrapeConfig(csv_path=csv_path, output_dir=out / "raw_videos",
                          transcripts_file=out / "video_transcripts.json", url_template=base_url + "/{ytid}.mp4",
                          workers=workers, sleep_min=0, sleep_max=0, asr="pocketsphinx", preview_seconds=1.5,
                          preset="veryfast")
    started = time.perf_counter()
    summary = scrape(config)
    seconds = time.perf_counter() - started
    return {"kept": summary.kept, "rejected": summary.rejected, "seconds": round(seconds, 2),
            "clips_per_minute": round(60.0 * summary.kept / seconds, 2)}


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        clips = generate_dataset(folder / "synthetic", num_clips=NUM_CLIPS, seed=1, size=256, min_seconds=3.0,
                                 max_seconds=4.0)
        csv_path = folder / "synthetic" / "avspeech.csv"
        results = {}
        with serve_directory(folder / "synthetic" / "clips", handler=SlowNetworkHandler) as base_url:
            for workers in (1, 4):
                results[f"workers_{workers}"] = _run(folder, csv_path, folder / f"run{workers}", workers, base_url)
    speedup = results["workers_4"]["clips_per_minute"] / max(results["workers_1"]["clips_per_minute"], 1e-9)
    print(json.dumps({"clips": len(clips), "clip_seconds": "3-4", "latency_per_request_s": LATENCY_S,
                      **results, "speedup_4_vs_1": round(speedup, 2)}))


if __name__ == "__main__":
    main()
