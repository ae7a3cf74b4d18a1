"""Stage 1: scrape AVSpeech segments (or import local videos) into clips + video_transcripts.json.

    python video_scraper/scrap_video.py --csv_path video_scraper/avspeech_train.csv --start_row 0 --end_row 1000 \
        --output_dir ./data/raw_videos --transcripts_file ./data/video_transcripts.json

Re-running the same command resumes: finished and rejected rows are skipped.  See docs/scraper.md.
"""

from __future__ import annotations

import argparse

from avatar_gen.config import validate_config
from avatar_gen.scraper import ScrapeConfig, scrape
from avatar_gen.scraper.download import DEFAULT_URL_TEMPLATE
from avatar_gen.utils.cli import add_common_arguments, run_main


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must look like HEIGHTxWIDTH (e.g. 512x512), got {text!r}") from None
    return height, width


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    source = parser.add_argument_group("input (one of)")
    source.add_argument("--csv_path", help="AVSpeech CSV: ytid,start,end,face_x,face_y per line, no header")
    source.add_argument("--input_dir", help="import the videos in this folder instead (clip id = file stem)")
    source.add_argument("--start_row", type=int, default=0, help="first CSV row, 0-based")
    source.add_argument("--end_row", type=int, default=None, help="stop before this row (default: end of file)")

    output = parser.add_argument_group("output")
    output.add_argument("--output_dir", required=True, help="folder for the clips (<clip_id>.mp4)")
    output.add_argument("--transcripts_file", required=True,
                        help="video_transcripts.json; its folder is the data root of every video_path")
    output.add_argument("--fps", type=float, default=25.0, help="output frame rate")
    output.add_argument("--crop", choices=["none", "half_body"], default="none",
                        help="half_body: a box around the CSV face point, --half_body_scale face heights tall")
    output.add_argument("--size", type=_size, default=None, help="output HEIGHTxWIDTH, e.g. 512x512 (default: source)")
    output.add_argument("--half_body_scale", type=float, default=3.0, help="half_body crop height in face heights")
    output.add_argument("--crf", type=int, default=18, help="x264 quality (lower is better)")
    output.add_argument("--preset", default="medium", help="x264 preset")
    output.add_argument("--overwrite", action="store_true", help="redo rows already kept or rejected")
    output.add_argument("--retry_rejected", action="store_true",
                        help="redo rows rejected by a filter or download (e.g. after changing filters)")

    network = parser.add_argument_group("download")
    network.add_argument("--url_template", default=DEFAULT_URL_TEMPLATE, help="video URL; {ytid} is replaced")
    network.add_argument("--cookies", default=None, help="Netscape cookies.txt for yt-dlp (never modified)")
    network.add_argument("--workers", type=int, default=1, help="parallel downloads")
    network.add_argument("--sleep_min", type=float, default=1.0, help="random pause before each request: min (s)")
    network.add_argument("--sleep_max", type=float, default=3.0, help="random pause before each request: max (s)")
    network.add_argument("--retries", type=int, default=3, help="retries of a transient network error")
    network.add_argument("--retry_backoff", type=float, default=5.0, help="first retry wait (s); doubles each time")
    network.add_argument("--max_consecutive_failures", type=int, default=5,
                         help="stop the run after this many network failures in a row")
    network.add_argument("--max_height", type=int, default=720, help="download formats up to this height")

    checks = parser.add_argument_group("filters and transcription")
    checks.add_argument("--asr", choices=["whisper", "pocketsphinx", "none"], default="whisper")
    checks.add_argument("--asr_model", default=None, help="Whisper model name (default base) or checkpoint .pt")
    checks.add_argument("--language", default="en", help="language kept by the language filter")
    checks.add_argument("--no_face_filter", action="store_true", help="keep clips without exactly one face")
    checks.add_argument("--no_language_filter", action="store_true", help="keep clips in any language")
    checks.add_argument("--no_speech_filter", action="store_true", help="keep clips whose speech starts late")
    checks.add_argument("--max_speech_onset", type=float, default=1.0, help="speech must start within this (s)")
    checks.add_argument("--preview_seconds", type=float, default=3.0, help="preview length the filters look at")
    checks.add_argument("--face_samples", type=int, default=5, help="preview frames checked for faces")
    checks.add_argument("--min_duration", type=float, default=1.0, help="shortest segment kept (s)")
    checks.add_argument("--max_duration", type=float, default=20.0, help="longest segment kept (s)")
    checks.add_argument("--min_words", type=int, default=1, help="reject transcripts with fewer words")
    add_common_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        height, width = args.size if args.size else (None, None)
        config = validate_config(ScrapeConfig, {
            "csv_path": args.csv_path, "input_dir": args.input_dir, "start_row": args.start_row,
            "end_row": args.end_row, "output_dir": args.output_dir, "transcripts_file": args.transcripts_file,
            "url_template": args.url_template, "cookies": args.cookies, "workers": args.workers,
            "sleep_min": args.sleep_min, "sleep_max": args.sleep_max, "retries": args.retries,
            "retry_backoff": args.retry_backoff, "max_consecutive_failures": args.max_consecutive_failures,
            "max_height": args.max_height, "asr": args.asr, "asr_model": args.asr_model, "language": args.language,
            "fps": args.fps, "crop": args.crop, "height": height, "width": width,
            "half_body_scale": args.half_body_scale, "face_filter": not args.no_face_filter,
            "language_filter": not args.no_language_filter, "speech_filter": not args.no_speech_filter,
            "max_speech_onset": args.max_speech_onset, "preview_seconds": args.preview_seconds,
            "face_samples": args.face_samples, "min_duration": args.min_duration, "max_duration": args.max_duration,
            "min_words": args.min_words, "crf": args.crf, "preset": args.preset, "overwrite": args.overwrite,
            "retry_rejected": args.retry_rejected,
        }, source="command line")
        scrape(config)
        return 0

    return run_main(body, verbose=args.verbose)


if __name__ == "__main__":
    raise SystemExit(main())
