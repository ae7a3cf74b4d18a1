"""Stage 1: scrape AVSpeech segments (or import local videos) into clips + video_transcripts.json.

    python video_scraper/scrap_video.py --csv_path video_scraper/avspeech_train.csv --start_row 0 --end_row 1000 \
        --output_dir ./data/raw_videos --transcripts_file ./data/video_transcripts.json

Re-running the same command resumes: finished and rejected rows are skipped.  See docs/scraper.md.
"""

from __future__ import annotations

import argparse

from avatar_gen.config import add_field_flag, config_from_flags
from avatar_gen.scraper import ScrapeConfig, scrape
from avatar_gen.utils.cli import add_common_arguments, run_main


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size must look like HEIGHTxWIDTH (e.g. 512x512), got {text!r}") from None
    return height, width


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])

    def flag(group: argparse._ArgumentGroup, name: str, help: str, **kwargs) -> None:
        add_field_flag(group, ScrapeConfig, name, help, **kwargs)

    source = parser.add_argument_group("input (one of)")
    flag(source, "csv_path", "AVSpeech CSV: ytid,start,end,face_x,face_y per line, no header")
    flag(source, "input_dir", "import the videos in this folder instead (clip id = file stem)")
    flag(source, "start_row", "first CSV row, 0-based", type=int)
    flag(source, "end_row", "stop before this row (default: end of file)", type=int)

    output = parser.add_argument_group("output")
    flag(output, "output_dir", "folder for the clips (<clip_id>.mp4)", required=True)
    flag(output, "transcripts_file", "video_transcripts.json; its folder is the data root of every video_path",
         required=True)
    flag(output, "fps", "output frame rate", type=float)
    flag(output, "crop", "half_body: a box around the CSV face point, --half_body_scale face heights tall",
         choices=["none", "half_body"])
    output.add_argument("--size", type=_size, default=None, help="output HEIGHTxWIDTH, e.g. 512x512 (default: source)")
    flag(output, "half_body_scale", "half_body crop height in face heights", type=float)
    flag(output, "crf", "x264 quality (lower is better)", type=int)
    flag(output, "preset", "x264 preset")
    flag(output, "overwrite", "redo rows already kept or rejected", action="store_true")
    flag(output, "retry_rejected", "redo rows rejected by a filter or download (e.g. after changing filters)",
         action="store_true")

    network = parser.add_argument_group("download")
    flag(network, "url_template", "video URL; {ytid} is replaced")
    flag(network, "cookies", "Netscape cookies.txt for yt-dlp (never modified)")
    flag(network, "workers", "parallel downloads", type=int)
    flag(network, "sleep_min", "random pause before each request: min (s)", type=float)
    flag(network, "sleep_max", "random pause before each request: max (s)", type=float)
    flag(network, "retries", "retries of a transient network error", type=int)
    flag(network, "retry_backoff", "first retry wait (s); doubles each time", type=float)
    flag(network, "max_consecutive_failures", "stop the run after this many network failures in a row", type=int)
    flag(network, "max_height", "download formats up to this height", type=int)

    checks = parser.add_argument_group("filters and transcription")
    flag(checks, "asr", "speech recognition back-end", choices=["whisper", "pocketsphinx", "none"])
    flag(checks, "asr_model", "Whisper model name (default base) or checkpoint .pt")
    flag(checks, "language", "language kept by the language filter")
    checks.add_argument("--no_face_filter", action="store_true", help="keep clips without exactly one face")
    checks.add_argument("--no_language_filter", action="store_true", help="keep clips in any language")
    checks.add_argument("--no_speech_filter", action="store_true", help="keep clips whose speech starts late")
    flag(checks, "max_speech_onset", "speech must start within this (s)", type=float)
    flag(checks, "preview_seconds", "preview length the filters look at", type=float)
    flag(checks, "face_samples", "preview frames checked for faces", type=int)
    flag(checks, "min_duration", "shortest segment kept (s)", type=float)
    flag(checks, "max_duration", "longest segment kept (s)", type=float)
    flag(checks, "min_words", "reject transcripts with fewer words", type=int)
    add_common_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        height, width = args.size if args.size else (None, None)
        config = config_from_flags(
            ScrapeConfig, args,
            flags={"height": "--size", "width": "--size", "face_filter": "--no_face_filter",
                   "language_filter": "--no_language_filter", "speech_filter": "--no_speech_filter"},
            height=height, width=width, face_filter=not args.no_face_filter,
            language_filter=not args.no_language_filter, speech_filter=not args.no_speech_filter)
        scrape(config)
        return 0

    return run_main(body, verbose=args.verbose)


if __name__ == "__main__":
    raise SystemExit(main())
