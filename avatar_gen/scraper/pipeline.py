"""Stage 1: AVSpeech rows (or a folder of local videos) -> normalised clips + ``video_transcripts.json``.

Workers validate, preview-filter, download, cut and transcribe items (docs/scraper.md, "What happens to one row");
the main thread is the only writer of the transcripts file and its sibling state file, so that a run killed at any
moment and re-run ends with each kept clip recorded exactly once and no record pointing at a missing file.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from avatar_gen.config import StrictModel
from avatar_gen.errors import MediaError, UserError
from avatar_gen.media import SAMPLE_RATE, crop_box, extract_audio, probe_video, run_ffmpeg
from avatar_gen.media.video import iter_frames
from avatar_gen.scraper.download import (DEFAULT_URL_TEMPLATE, Downloader, DownloadSettings, ErrorKind,
                                         SegmentDownloadError, validate_download_settings)
from avatar_gen.scraper.filters import FaceDetector, face_filter, language_filter, speech_start_filter
from avatar_gen.scraper.rows import (DEFAULT_MAX_DURATION, DEFAULT_MIN_DURATION, AvspeechRow, RowRejection,
                                     local_clip_id, read_avspeech_csv)
from avatar_gen.scraper.transcribe import AsrBackend, load_asr
from avatar_gen.utils.datafiles import is_inside, load_json, read_transcripts
from avatar_gen.utils.io import TMP_PREFIX, atomic_write_json, exclusive_lock
from avatar_gen.utils.progress import progress

log = logging.getLogger(__name__)

STATE_FORMAT_VERSION = 1
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
# A decoded clip may differ from the requested length by this many frames (rounding at both cuts).
FRAME_TOLERANCE = 1.5
WORK_DIR_PREFIX = f"{TMP_PREFIX}work-"


class ScrapeConfig(StrictModel):
    """Everything one scraper run needs; built by ``video_scraper/scrap_video.py`` from its flags."""

    csv_path: Path | None = Field(None, description="AVSpeech CSV (no header: ytid,start,end,face_x,face_y)")
    input_dir: Path | None = Field(None, description="import the videos in this folder instead of a CSV")
    start_row: int = Field(0, ge=0, description="first CSV row (0-based line number)")
    end_row: int | None = Field(None, ge=0, description="stop before this row (None: end of file)")
    output_dir: Path = Field(description="where the clips go (<clip_id>.mp4)")
    transcripts_file: Path = Field(description="video_transcripts.json; its folder is the data root")
    url_template: str = Field(DEFAULT_URL_TEMPLATE, description="video URL with {ytid}")
    cookies: Path | None = Field(None, description="Netscape cookies.txt passed to yt-dlp")
    workers: int = Field(1, ge=1, le=64, description="parallel downloads")
    sleep_min: float = Field(1.0, ge=0, description="polite pause before each request: lower bound (s)")
    sleep_max: float = Field(3.0, ge=0, description="polite pause before each request: upper bound (s)")
    retries: int = Field(3, ge=0, le=20, description="retries of a transient download error")
    retry_backoff: float = Field(5.0, ge=0, description="first wait (s) after a transient error; doubles")
    max_consecutive_failures: int = Field(5, ge=1, description="stop after this many transient failures in a row")
    max_height: int = Field(720, ge=64, description="download formats up to this height")
    asr: Literal["whisper", "pocketsphinx", "none"] = "whisper"
    asr_model: str | None = Field(None, description="Whisper model name or checkpoint .pt")
    language: str = Field("en", description="language the language filter keeps")
    fps: float = Field(25.0, gt=0, le=120, description="output frame rate")
    crop: Literal["none", "half_body"] = Field("none", description="half_body: box around the face point")
    height: int | None = Field(None, ge=16, le=4096, description="output height (px, even); with width")
    width: int | None = Field(None, ge=16, le=4096, description="output width (px, even); with height")
    half_body_scale: float = Field(3.0, gt=1, description="half_body crop height = this x face height")
    face_filter: bool = True
    language_filter: bool = True
    speech_filter: bool = True
    max_speech_onset: float = Field(1.0, ge=0, description="speech must start within this many seconds")
    preview_seconds: float = Field(3.0, gt=0, description="length of the preview the filters look at")
    face_samples: int = Field(5, ge=1, le=100, description="frames of the preview the face filter looks at")
    min_duration: float = Field(DEFAULT_MIN_DURATION, gt=0)
    max_duration: float = Field(DEFAULT_MAX_DURATION, gt=0)
    min_words: int = Field(1, ge=0, description="reject clips whose transcript has fewer words (with ASR)")
    crf: int = Field(18, ge=0, le=51, description="x264 quality of the output clips")
    preset: str = Field("medium", description="x264 preset of the output clips")
    overwrite: bool = Field(False, description="redo kept and rejected items")
    retry_rejected: bool = Field(False, description="redo rejected items (not rows that failed validation)")

    @model_validator(mode="after")
    def _check(self) -> ScrapeConfig:
        if (self.csv_path is None) == (self.input_dir is None):
            raise ValueError("give exactly one of csv_path and input_dir")
        if self.sleep_min > self.sleep_max:
            raise ValueError("sleep_min must be <= sleep_max")
        if (self.height is None) != (self.width is None):
            raise ValueError("give both height and width, or neither")
        if self.height is not None and (self.height % 2 or self.width % 2):
            raise ValueError("height and width must be even (H.264 4:2:0)")
        if self.min_duration > self.max_duration:
            raise ValueError("min_duration must be <= max_duration")
        if self.end_row is not None and self.end_row < self.start_row:
            raise ValueError("end_row must be >= start_row")
        return self

    def download_settings(self) -> DownloadSettings:
        return DownloadSettings(url_template=self.url_template, cookies=self.cookies, retries=self.retries,
                                retry_backoff=self.retry_backoff, sleep_min=self.sleep_min, sleep_max=self.sleep_max,
                                max_height=self.max_height)


@dataclass(frozen=True)
class WorkItem:
    """One thing to scrape. ``key`` identifies it in the state file (``row:12`` or ``file:<name>``)."""

    key: str
    clip_id: str
    row: AvspeechRow | None = None
    local_path: Path | None = None

    @property
    def row_index(self) -> int | None:
        return self.row.row if self.row is not None else None


@dataclass
class Outcome:
    item: WorkItem
    status: Literal["kept", "rejected", "failed", "bot_check"]
    record: dict | None = None
    stage: str | None = None
    reason: str | None = None


@dataclass
class ScrapeSummary:
    kept: int = 0
    rejected: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    rejections: list[dict] = field(default_factory=list)


class ScrapeStopped(UserError):
    """The run stopped early on purpose (bot check, network down); the state is saved."""


class _Rejected(Exception):
    def __init__(self, stage: str, reason: str):
        super().__init__(reason)
        self.stage = stage
        self.reason = reason


def state_path_for(transcripts_file: Path) -> Path:
    """The sibling state file: ``video_transcripts.json`` -> ``video_transcripts.state.json``."""
    return transcripts_file.with_name(transcripts_file.stem + ".state.json")


def sweep_stale_work(output_dir: Path, transcripts_file: Path) -> int:
    """Remove what a killed run left: ``.tmp-*`` files and work folders in ``output_dir``, and temporary
    copies of the transcripts and state files beside them.  Call only while holding the run's lock."""
    removed = 0
    for stale in output_dir.glob(f"{TMP_PREFIX}*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
        removed += 1
    for target in (transcripts_file, state_path_for(transcripts_file)):
        for stale in target.parent.glob(f"{TMP_PREFIX}{target.stem}-*"):
            if stale.is_file():
                stale.unlink(missing_ok=True)
                removed += 1
    return removed


def load_records(transcripts_file: Path) -> list[dict]:
    """The records kept by earlier runs (none when the file does not exist yet); UserError for a malformed file."""
    if not transcripts_file.exists():
        return []
    return read_transcripts(transcripts_file, "--transcripts_file")


def load_rejections(state_file: Path) -> dict[str, dict]:
    state = load_json(state_file, "scraper state file") if state_file.exists() else {}
    if not isinstance(state, dict) or not isinstance(state.get("rejected", []), list):
        raise UserError(f"{state_file} is not a scraper state file")
    return {entry["key"]: entry for entry in state.get("rejected", []) if isinstance(entry, dict) and "key" in entry}


def _rejection_entry(key: str, row: int | None, identifier: str, stage: str, reason: str,
                     clip_id: str | None = None) -> dict:
    return {"key": key, "row": row, "id": identifier, "clip_id": clip_id, "stage": stage, "reason": reason}


class Scraper:
    """One run of the scraper (see the module docstring); :func:`scrape` is the entry point."""

    def __init__(self, config: ScrapeConfig):
        self.config = config
        self.output_dir = Path(config.output_dir)
        self.transcripts_file = Path(config.transcripts_file)
        self.state_file = state_path_for(self.transcripts_file)
        self.data_root = self.transcripts_file.parent
        self.downloader: Downloader | None = None
        self.asr: AsrBackend | None = None
        self.face_detector: FaceDetector | None = None
        self.records: list[dict] = []
        self.rejections: dict[str, dict] = {}
        self._stop = threading.Event()

    # ----- set-up -------------------------------------------------------------------------------
    def _check_inputs(self) -> None:
        config = self.config
        if config.csv_path is not None and not Path(config.csv_path).is_file():
            raise UserError(f"CSV file not found: {config.csv_path}")
        if config.input_dir is not None and not Path(config.input_dir).is_dir():
            raise UserError(f"--input_dir not found or not a folder: {config.input_dir}")
        if config.language_filter and config.asr == "none":
            raise UserError("the language filter needs an ASR back-end: use --asr whisper|pocketsphinx "
                            "or --no_language_filter")
        if config.csv_path is not None:
            validate_download_settings(config.download_settings())  # before any model loads: fail fast
        if self.output_dir.exists() and not self.output_dir.is_dir():
            raise UserError(f"--output_dir is not a folder: {self.output_dir}")
        if not is_inside(self.output_dir, self.data_root):
            # Records name videos relative to the data root, and every stage refuses paths that leave it.
            raise UserError(f"--output_dir {self.output_dir} must lie inside the data root {self.data_root} "
                            f"(the folder of --transcripts_file)")

    def _build_items(self) -> tuple[list[WorkItem], list[dict]]:
        """Work items in order, and the rejections of items that failed validation."""
        config = self.config
        items: list[WorkItem] = []
        invalid: list[dict] = []
        if config.csv_path is not None:
            for parsed in read_avspeech_csv(config.csv_path, config.start_row, config.end_row,
                                            config.min_duration, config.max_duration):
                if isinstance(parsed, RowRejection):
                    invalid.append(_rejection_entry(f"row:{parsed.row}", parsed.row, parsed.youtube_id, "validate",
                                                    parsed.reason))
                else:
                    items.append(WorkItem(key=f"row:{parsed.row}", clip_id=parsed.clip_id, row=parsed))
        else:
            for path in sorted(Path(config.input_dir).iterdir()):
                if not path.is_file() or path.suffix.lower() not in VIDEO_EXTENSIONS or path.name.startswith("."):
                    continue
                clip_id = local_clip_id(path.name)
                if not clip_id:
                    invalid.append(_rejection_entry(f"file:{path.name}", None, path.name, "validate",
                                                    "file name gives an empty clip id"))
                    continue
                items.append(WorkItem(key=f"file:{path.name}", clip_id=clip_id, local_path=path.resolve()))
        # Two items with the same clip id would write the same file: the first one wins.
        first_by_clip: dict[str, WorkItem] = {}
        unique: list[WorkItem] = []
        for item in items:
            if item.clip_id in first_by_clip:
                invalid.append(_rejection_entry(item.key, item.row_index, item.clip_id, "validate",
                                                f"duplicate clip id (same as {first_by_clip[item.clip_id].key})",
                                                item.clip_id))
                continue
            first_by_clip[item.clip_id] = item
            unique.append(item)
        return unique, invalid

    # ----- the run ------------------------------------------------------------------------------
    def run(self) -> ScrapeSummary:
        self._check_inputs()
        started = time.monotonic()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.data_root.mkdir(parents=True, exist_ok=True)
        lock_name = f".{self.transcripts_file.name}.lock"
        with exclusive_lock(self.data_root / lock_name, f"another scraper run is using {self.transcripts_file}"), \
                exclusive_lock(self.output_dir / ".scraper.lock", f"another scraper run is using {self.output_dir}"):
            removed = sweep_stale_work(self.output_dir, self.transcripts_file)
            if removed:
                log.info("removed %d temporary file(s) left by an interrupted run", removed)
            self.records = load_records(self.transcripts_file)
            if not self.transcripts_file.exists():
                atomic_write_json(self.transcripts_file, [])  # later stages read it even when nothing was kept
            self.rejections = load_rejections(self.state_file)
            items, invalid = self._build_items()
            summary = ScrapeSummary()
            for entry in invalid:
                if entry["key"] not in self.rejections or self.config.overwrite:
                    log.info("reject %s (%s): %s", entry["key"], entry["id"][:40], entry["reason"])
                    summary.rejected += 1
                else:
                    summary.skipped += 1
                self.rejections[entry["key"]] = entry
            self._save_state()
            pending = self._pending(items, summary)
            log.info("%d item(s) to scrape, %d already done or rejected, %d invalid", len(pending), summary.skipped,
                     len(invalid))
            if pending:
                self._load_models()
                self._run_items(pending, summary)
            summary.seconds = time.monotonic() - started
            summary.rejections = sorted(self.rejections.values(), key=lambda e: (e["row"] is None, e["row"] or 0,
                                                                                 e["key"]))
            log.info("scrape finished: %d kept, %d rejected, %d failed (retry later), %d skipped, %.1f s",
                     summary.kept, summary.rejected, summary.failed, summary.skipped, summary.seconds)
            return summary

    def _pending(self, items: list[WorkItem], summary: ScrapeSummary) -> list[WorkItem]:
        kept_ids = {record["clip_id"] for record in self.records}
        pending = []
        for item in items:
            previous = self.rejections.get(item.key)
            if self.config.overwrite or (previous is not None and self.config.retry_rejected):
                pending.append(item)
            elif item.clip_id in kept_ids or previous is not None:
                summary.skipped += 1
            else:
                pending.append(item)
        return pending

    def _load_models(self) -> None:
        """Everything heavy, once per run: ASR model, face cascade, downloader."""
        config = self.config
        self.asr = load_asr(config.asr, config.asr_model)
        if config.face_filter or config.crop == "half_body":
            self.face_detector = FaceDetector()
        if config.csv_path is not None:
            self.downloader = Downloader(config.download_settings())

    def _run_items(self, pending: list[WorkItem], summary: ScrapeSummary) -> None:
        config = self.config
        remaining = list(reversed(pending))
        in_flight: dict[Future, WorkItem] = {}
        consecutive_failures = 0
        stop_message: str | None = None
        bar = progress(total=len(pending), desc="scrape", unit="clip")
        with ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="scrape") as pool:
            while remaining or in_flight:
                # Only as many items in flight as workers: a stop request then waits for few of them.
                while remaining and len(in_flight) < config.workers and not self._stop.is_set():
                    item = remaining.pop()
                    in_flight[pool.submit(self.process_item, item)] = item
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    item = in_flight.pop(future)
                    outcome = future.result()
                    bar.update(1)
                    if outcome.status == "kept":
                        self._save_record(outcome.record)
                        self._forget_rejection(item.key)
                        summary.kept += 1
                        consecutive_failures = 0
                    elif outcome.status == "rejected":
                        self._save_rejection(outcome)
                        summary.rejected += 1
                        consecutive_failures = 0
                    elif outcome.status == "failed":
                        summary.failed += 1
                        consecutive_failures += 1
                        log.warning("%s (%s) failed, will be retried by the next run: %s", item.key, item.clip_id,
                                    outcome.reason)
                        if consecutive_failures >= config.max_consecutive_failures and stop_message is None:
                            stop_message = (f"{consecutive_failures} items in a row failed with network or "
                                            f"unexpected errors (last: {outcome.reason})")
                            self._stop.set()
                    elif outcome.status == "bot_check" and stop_message is None:
                        summary.failed += 1
                        stop_message = (f"{item.key} ({item.clip_id}): {outcome.reason}; add --cookies (a "
                                        "cookies.txt of a signed-in browser) and longer --sleep_min/--sleep_max")
                        self._stop.set()
                    elif outcome.status == "bot_check":
                        summary.failed += 1
        bar.close()
        if stop_message is not None:
            unfinished = [item for item in pending if not self._is_finished(item)]
            resume = unfinished[0] if unfinished else None
            where = "nothing left to do" if resume is None else (
                f"resume from row {resume.row_index}" if resume.row_index is not None else f"resume from {resume.key}")
            raise ScrapeStopped(f"stopped: {stop_message}. State saved in {self.transcripts_file} and "
                                f"{self.state_file}; {where} (re-running the same command skips finished rows)")

    def _is_finished(self, item: WorkItem) -> bool:
        return item.key in self.rejections or any(record["clip_id"] == item.clip_id for record in self.records)

    # ----- the single writer ----------------------------------------------------------------------
    def _save_record(self, record: dict) -> None:
        self.records = [r for r in self.records if r["clip_id"] != record["clip_id"]] + [record]
        atomic_write_json(self.transcripts_file, self.records)

    def _save_rejection(self, outcome: Outcome) -> None:
        item = outcome.item
        identifier = item.row.youtube_id if item.row is not None else item.local_path.name
        self.rejections[item.key] = _rejection_entry(item.key, item.row_index, identifier, outcome.stage,
                                                     outcome.reason, item.clip_id)
        # A clip kept by an earlier run and now rejected (--overwrite with other filters) loses its record.
        if any(r["clip_id"] == item.clip_id for r in self.records):
            self.records = [r for r in self.records if r["clip_id"] != item.clip_id]
            atomic_write_json(self.transcripts_file, self.records)
        self._save_state()
        log.info("reject %s (%s) at %s: %s", item.key, item.clip_id, outcome.stage, outcome.reason)

    def _forget_rejection(self, key: str) -> None:
        if self.rejections.pop(key, None) is not None:
            self._save_state()

    def _save_state(self) -> None:
        entries = sorted(self.rejections.values(), key=lambda e: (e["row"] is None, e["row"] or 0, e["key"]))
        atomic_write_json(self.state_file, {"format_version": STATE_FORMAT_VERSION, "rejected": entries})

    # ----- one item (worker threads) ------------------------------------------------------------
    def process_item(self, item: WorkItem) -> Outcome:
        """Download/import, filter, normalise and transcribe one item; never raises for a bad item."""
        if self._stop.is_set():
            return Outcome(item, "failed", reason="run stopping")
        work_dir = Path(tempfile.mkdtemp(prefix=f"{WORK_DIR_PREFIX}{item.clip_id}-", dir=self.output_dir))
        try:
            process = self._process_row if item.row is not None else self._process_local
            record = process(item, work_dir)
            return Outcome(item, "kept", record=record)
        except _Rejected as exc:
            return Outcome(item, "rejected", stage=exc.stage, reason=exc.reason)
        except SegmentDownloadError as exc:
            if exc.kind == ErrorKind.BOT_CHECK:
                return Outcome(item, "bot_check", stage="download", reason=exc.reason)
            if exc.kind == ErrorKind.TRANSIENT:
                return Outcome(item, "failed", stage="download", reason=exc.reason)
            return Outcome(item, "rejected", stage="download", reason=exc.reason)
        except MediaError as exc:  # a file that passed the checks above but ffmpeg still cannot read
            return Outcome(item, "rejected", stage="media", reason=str(exc).splitlines()[-1][:300])
        except Exception as exc:  # noqa: BLE001 - one item's unexpected error must not end a days-long run
            # Not recorded as a rejection: it may be our bug or the machine's, so the next run retries it;
            # many in a row stop the run (max_consecutive_failures) instead of failing every row.
            log.exception("%s (%s): unexpected error", item.key, item.clip_id)
            return Outcome(item, "failed", stage="error", reason=f"{exc.__class__.__name__}: {exc}")
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)

    def _process_row(self, item: WorkItem, work_dir: Path) -> dict:
        config = self.config
        row = item.row
        preview_end = min(row.end, row.start + config.preview_seconds)
        face_box = None
        with self.downloader.open(row.youtube_id, work_dir) as session:
            preview = None
            if config.face_filter or config.speech_filter or config.language_filter:
                preview = session.download_section(row.start, preview_end)
                face_box = self._apply_filters(preview, preview_end - row.start)
            # A segment no longer than the preview was downloaded whole already.
            segment = preview if preview is not None and preview_end >= row.end else \
                session.download_section(row.start, row.end)
        return self._finish(item, segment, row.duration, (row.face_x, row.face_y), face_box, row.source(), work_dir)

    def _process_local(self, item: WorkItem, work_dir: Path) -> dict:
        config = self.config
        try:
            info = probe_video(item.local_path)
        except MediaError as exc:
            raise _Rejected("validate", f"unreadable video: {exc}") from None
        duration = math.floor(info.duration * config.fps + 1e-6) / config.fps  # whole output frames
        if duration < config.min_duration:
            raise _Rejected("validate", f"video of {info.duration:.2f} s is shorter than {config.min_duration:g} s")
        if duration > config.max_duration:
            raise _Rejected("validate", f"video of {info.duration:.2f} s is longer than {config.max_duration:g} s")
        face_box = None
        if config.face_filter or config.speech_filter or config.language_filter:
            face_box = self._apply_filters(item.local_path, min(config.preview_seconds, duration))
        center = (face_box[0] + face_box[2] / 2, face_box[1] + face_box[3] / 2) if face_box else (0.5, 0.5)
        source = {"type": "local", "path": str(item.local_path)}
        return self._finish(item, item.local_path, duration, center, face_box, source, work_dir)

    def _apply_filters(self, video: Path, duration: float) -> list[float] | None:
        """Run the enabled filters on the first ``duration`` seconds of ``video``; return the face box."""
        config = self.config
        try:
            probe_video(video)
        except MediaError as exc:
            raise _Rejected("preview", f"empty or corrupt preview download: {exc}") from None
        try:
            audio = extract_audio(video, SAMPLE_RATE, duration=duration)
        except MediaError as exc:
            raise _Rejected("preview", f"no readable audio: {str(exc).splitlines()[-1]}") from None
        if config.speech_filter:
            result = speech_start_filter(audio, SAMPLE_RATE, config.max_speech_onset)
            if not result.passed:
                raise _Rejected("filter:speech", result.reason)
        face_box = None
        if config.face_filter or config.crop == "half_body":
            result = face_filter(self._sample_frames(video, duration), self.face_detector)
            if config.face_filter and not result.passed:
                raise _Rejected("filter:face", result.reason)
            face_box = result.details.get("face_box")
        if config.language_filter:
            detected = self.asr.detect_language(audio) if self.asr is not None else None
            result = language_filter(detected, config.language)
            if not result.passed:
                raise _Rejected("filter:language", result.reason)
        return face_box

    def _sample_frames(self, video: Path, duration: float) -> np.ndarray:
        """``face_samples`` frames spread evenly over ``duration`` (each at the middle of its share)."""
        samples = self.config.face_samples
        rate = samples / duration
        frames = [frame for _, frame in iter_frames(video, fps=rate, start=0.5 / rate, duration=duration - 0.5 / rate)]
        if not frames:
            raise _Rejected("preview", "no frames decoded from the preview")
        return np.stack(frames[:samples])

    def _crop_filter(self, src_width: int, src_height: int, center: tuple[float, float],
                     face_box: list[float] | None) -> list[str]:
        """ffmpeg filters for the optional crop around ``center`` (fractions) and the resize."""
        config = self.config
        if config.crop == "none" and config.height is None:
            # Only make the sides even (H.264 4:2:0) by dropping at most one pixel row/column.
            return [f"crop={src_width - src_width % 2}:{src_height - src_height % 2}:0:0"]
        aspect_height, aspect_width = (config.height, config.width) if config.height is not None else (1, 1)
        box_height = None
        if config.crop == "half_body" and face_box is not None:
            box_height = config.half_body_scale * face_box[3] * src_height
        top, left, height, width = crop_box(src_height, src_width, aspect_height, aspect_width, center, box_height)
        height, width = max(2, height - height % 2), max(2, width - width % 2)
        filters = [f"crop={width}:{height}:{left}:{top}"]
        if config.height is not None:
            filters.append(f"scale={config.width}:{config.height}:flags=area")
        return filters

    def _finish(self, item: WorkItem, source_video: Path, duration: float, center: tuple[float, float],
                face_box: list[float] | None, source: dict, work_dir: Path) -> dict:
        """Cut, normalise, check, transcribe, move into place; return the transcript record."""
        config = self.config
        try:
            info = probe_video(source_video)
        except MediaError as exc:
            raise _Rejected("download", f"empty or corrupt download: {exc}") from None
        if not info.has_audio:
            raise _Rejected("download", "the video has no audio track")
        normalised = work_dir / "clip.mp4"
        video_filters = [f"fps={config.fps:g}", *self._crop_filter(info.width, info.height, center, face_box),
                         "setsar=1"]
        try:
            run_ffmpeg(["-y", "-i", str(source_video), "-t", f"{duration:.6f}", "-map", "0:v:0", "-map", "0:a:0",
                        "-vf", ",".join(video_filters), "-c:v", "libx264", "-preset", config.preset,
                        "-crf", str(config.crf), "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k",
                        "-movflags", "+faststart", "-f", "mp4", str(normalised)])
            result = probe_video(normalised)
        except MediaError as exc:
            raise _Rejected("normalise", str(exc).splitlines()[-1][:300]) from None
        expected_frames = duration * config.fps
        if abs(result.num_frames - expected_frames) > FRAME_TOLERANCE:
            raise _Rejected("download", f"decoded {result.num_frames / config.fps:.2f} s of the requested "
                                        f"{duration:.2f} s (empty, truncated or corrupt download)")
        clip_duration = result.num_frames / config.fps
        language = None
        transcript: list[dict] = []
        if self.asr is not None:
            audio = extract_audio(normalised, SAMPLE_RATE, duration=clip_duration)
            transcription = self.asr.transcribe(audio)
            if transcription.num_words < config.min_words:
                raise _Rejected("transcribe", f"transcript has {transcription.num_words} word(s), "
                                              f"want at least {config.min_words}")
            language = transcription.language or None
            transcript = transcription.to_records()
        final_path = self.output_dir / f"{item.clip_id}.mp4"
        os.replace(normalised, final_path)  # same folder tree: an atomic rename
        return {
            "clip_id": item.clip_id,
            "video_path": os.path.relpath(final_path, self.data_root),
            "source": source,
            "language": language,
            "duration": round(clip_duration, 6),
            "fps": config.fps,
            "num_frames": result.num_frames,
            "width": result.width,
            "height": result.height,
            "asr": None if self.asr is None else f"{self.asr.name}:{self.asr.model_name}",
            "transcript": transcript,
        }


def scrape(config: ScrapeConfig) -> ScrapeSummary:
    """Run the scraper described by ``config``; see the module docstring."""
    return Scraper(config).run()
