"""Segment downloads with yt-dlp's Python API: only the requested time ranges, never the whole video.

One :class:`VideoSession` per video: the page is extracted once, then each section (a short preview,
then the segment) is fetched with ``download_ranges``; yt-dlp hands sections to ffmpeg, which reads
only the byte ranges it needs and, with ``force_keyframes_at_cuts``, re-encodes at the cut points so
the section starts exactly at the requested time.

Errors are sorted into three kinds (:func:`classify_download_error`):

- transient (timeouts, resets, 5xx, 429): retried with exponential backoff, a bounded number of times;
- permanent (404, private, removed, unsupported): the row is rejected with the reason;
- bot check ("Sign in to confirm you're not a bot"): the caller stops the whole run, because every
  further request would get the same answer and makes the block last longer.
"""

from __future__ import annotations

import copy
import enum
import logging
import random
import re
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from avatar_gen.errors import UserError
from avatar_gen.media import ffmpeg_dir

log = logging.getLogger(__name__)
ytdlp_log = logging.getLogger(__name__ + ".yt_dlp")

DEFAULT_URL_TEMPLATE = "https://www.youtube.com/watch?v={ytid}"
# Best video up to the height limit plus best audio, merged; else the best single file.
DEFAULT_FORMAT = "bv*[height<={max_height}]+ba/b[height<={max_height}]/b"
MAX_BACKOFF_SECONDS = 120.0


class ErrorKind(str, enum.Enum):  # noqa: UP042 - a StrEnum would change how members print in logs
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    BOT_CHECK = "bot_check"


class SegmentDownloadError(Exception):
    """A download that did not produce a file; ``kind`` says what the caller should do."""

    def __init__(self, kind: ErrorKind, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


# Matched against the lower-cased error text; first match wins, so the bot check comes first (it
# can arrive as an HTTP 403 or as YouTube's "unavailable" page).  Both apostrophes: YouTube uses ’.
_BOT_CHECK_PATTERN = re.compile(r"confirm you.?re not a bot|not a robot")
_PERMANENT_PATTERNS = [
    (re.compile(r"http error 404|http error 410|404: not found"), "video not found (HTTP 404/410)"),
    (re.compile(r"private video|video is private"), "private video"),
    (re.compile(r"requested format is not available|no video formats found"), "no downloadable format"),
    (re.compile(r"has been removed|account .*terminated|video unavailable|no longer available|"
                r"is not available|been removed"), "video removed or unavailable"),
    (re.compile(r"confirm your age|age-restricted|inappropriate for some users"), "age-restricted (needs --cookies)"),
    (re.compile(r"members-only|join this channel"), "members-only video"),
    (re.compile(r"unsupported url"), "unsupported URL"),
    (re.compile(r"http error 401|http error 403"), "access denied (HTTP 401/403)"),
]
_TRANSIENT_PATTERNS = re.compile(
    r"timed out|timeout|connection (reset|refused|aborted)|remote end closed|temporarily unavailable|"
    r"temporary failure|name resolution|network is unreachable|incompleteread|http error 5\d\d|"
    r"http error 429|too many requests|broken pipe|ssl|eof occurred|unable to download"
)


def classify_download_error(message: str) -> tuple[ErrorKind, str]:
    """Sort a yt-dlp/ffmpeg error message into (kind, short reason)."""
    text = message.lower()
    if _BOT_CHECK_PATTERN.search(text):
        return ErrorKind.BOT_CHECK, "the site asks to sign in to confirm this is not a bot"
    for pattern, reason in _PERMANENT_PATTERNS:
        if pattern.search(text):
            return ErrorKind.PERMANENT, reason
    short = _last_line(message)
    if _TRANSIENT_PATTERNS.search(text):
        return ErrorKind.TRANSIENT, short
    # Anything unrecognised is a property of this video (a format quirk, a geo block, ...):
    # rejecting it keeps one odd video from stalling a run of thousands.
    return ErrorKind.PERMANENT, short


def _last_line(message: str) -> str:
    lines = [line.strip() for line in str(message).splitlines() if line.strip()]
    text = lines[-1] if lines else "unknown error"
    # yt-dlp appends the wrapped exception's repr, which repeats the message.
    text = text.split(" (caused by ")[0]
    return text.removeprefix("ERROR: ")[:300]


class _LoggingAdapter:
    """yt-dlp's ``logger`` interface routed to :mod:`logging` (its errors are raised, so they log at debug)."""

    def debug(self, message: str) -> None:
        ytdlp_log.debug(message)

    def info(self, message: str) -> None:
        ytdlp_log.debug(message)

    def warning(self, message: str) -> None:
        ytdlp_log.warning(message)

    def error(self, message: str) -> None:
        ytdlp_log.debug(message)


@dataclass(frozen=True)
class DownloadSettings:
    """How to reach videos. ``url_template`` holds ``{ytid}``; times are in seconds."""

    url_template: str = DEFAULT_URL_TEMPLATE
    cookies: Path | None = None
    retries: int = 3
    retry_backoff: float = 5.0  # first wait after a transient error; doubles per attempt
    sleep_min: float = 1.0  # polite random pause before every request
    sleep_max: float = 3.0
    max_height: int = 720
    socket_timeout: float = 30.0

    def url_for(self, youtube_id: str) -> str:
        # A plain replacement (not str.format), so braces elsewhere in a mirror's URL stay literal.
        return self.url_template.replace("{ytid}", youtube_id)


def validate_download_settings(settings: DownloadSettings) -> None:
    if "{ytid}" not in settings.url_template:
        raise UserError(f"--url_template must contain {{ytid}}, got {settings.url_template!r}")
    if settings.cookies is not None and not Path(settings.cookies).is_file():
        raise UserError(f"cookies file not found: {settings.cookies}")
    if not 0 <= settings.sleep_min <= settings.sleep_max:
        raise UserError(f"need 0 <= --sleep_min <= --sleep_max, got {settings.sleep_min} and {settings.sleep_max}")
    if settings.retries < 0 or settings.retry_backoff < 0:
        raise UserError("--retries and --retry_backoff must be >= 0")


class Downloader:
    """Opens :class:`VideoSession` objects; safe to share between worker threads."""

    def __init__(self, settings: DownloadSettings):
        validate_download_settings(settings)
        self.settings = settings
        self._random = random.Random()
        self._random_lock = threading.Lock()

    def polite_pause(self) -> None:
        """Sleep a random time in [sleep_min, sleep_max] so requests do not arrive in a burst."""
        with self._random_lock:
            pause = self._random.uniform(self.settings.sleep_min, self.settings.sleep_max)
        if pause > 0:
            time.sleep(pause)

    def backoff(self, attempt: int) -> float:
        with self._random_lock:
            jitter = self._random.uniform(0.5, 1.5)
        return min(MAX_BACKOFF_SECONDS, self.settings.retry_backoff * (2 ** attempt) * jitter)

    def with_retries(self, what: str, action):
        """Run ``action()``; retry transient SegmentDownloadErrors with backoff; re-raise the rest."""
        for attempt in range(self.settings.retries + 1):
            try:
                return action()
            except SegmentDownloadError as exc:
                if exc.kind != ErrorKind.TRANSIENT or attempt == self.settings.retries:
                    raise
                wait = self.backoff(attempt)
                log.info("%s: transient error (%s), retry %d/%d in %.1f s", what, exc.reason, attempt + 1,
                         self.settings.retries, wait)
                time.sleep(wait)
        raise AssertionError("unreachable")

    def open(self, youtube_id: str, work_dir: Path) -> VideoSession:
        """Extract the video's page (with retries); raises SegmentDownloadError."""
        session = VideoSession(self, youtube_id, Path(work_dir))
        self.with_retries(f"{youtube_id} extract", session.extract)
        return session


class VideoSession:
    """One video's extracted info, from which any number of sections are downloaded into ``work_dir``."""

    def __init__(self, downloader: Downloader, youtube_id: str, work_dir: Path):
        self.downloader = downloader
        self.youtube_id = youtube_id
        self.work_dir = work_dir
        self.url = downloader.settings.url_for(youtube_id)
        self._info: dict | None = None
        self._ydl = None

    def _options(self) -> dict:
        settings = self.downloader.settings
        options = {
            "outtmpl": {"default": str(self.work_dir / "section-%(section_start)s-%(section_end)s.%(ext)s")},
            "format": DEFAULT_FORMAT.format(max_height=settings.max_height),
            "merge_output_format": "mp4",
            "force_keyframes_at_cuts": True,
            "ffmpeg_location": str(ffmpeg_dir()),
            "logger": _LoggingAdapter(),
            "quiet": True,
            "noprogress": True,
            "no_color": True,
            "noplaylist": True,
            "overwrites": True,
            "cachedir": False,
            "socket_timeout": settings.socket_timeout,
            # Retries are ours (with backoff and error classification); yt-dlp's would multiply them.
            "retries": 0,
            "fragment_retries": 1,
            "extractor_retries": 0,
        }
        if settings.cookies is not None:
            # yt-dlp writes the cookie jar back on close; give it a private copy so parallel workers never
            # write the user's file at the same time (the user's file is never modified).
            private_cookies = self.work_dir / "cookies.txt"
            shutil.copyfile(settings.cookies, private_cookies)
            options["cookiefile"] = str(private_cookies)
        return options

    def _youtube_dl(self):
        if self._ydl is None:
            import yt_dlp
            from yt_dlp.postprocessor.ffmpeg import FFmpegPostProcessor

            # yt-dlp decides whether ffmpeg can cut sections (FFmpegFD.available) from a context
            # variable that only its command line sets, ignoring the ``ffmpeg_location`` option.
            # Context variables are per thread, so set it in the thread that downloads.
            FFmpegPostProcessor._ffmpeg_location.set(str(ffmpeg_dir()))
            self.work_dir.mkdir(parents=True, exist_ok=True)
            self._ydl = yt_dlp.YoutubeDL(self._options())
        return self._ydl

    def close(self) -> None:
        if self._ydl is not None:
            self._ydl.close()
            self._ydl = None

    def __enter__(self) -> VideoSession:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _run(self, action):
        from yt_dlp.utils import DownloadError, ExtractorError

        self.downloader.polite_pause()
        try:
            return action()
        except (DownloadError, ExtractorError) as exc:
            kind, reason = classify_download_error(str(exc))
            raise SegmentDownloadError(kind, reason) from None
        except OSError as exc:  # sockets and files below yt-dlp
            kind, reason = classify_download_error(f"{exc.__class__.__name__}: {exc}")
            raise SegmentDownloadError(kind, reason) from None

    def extract(self) -> None:
        ydl = self._youtube_dl()
        self._info = self._run(lambda: ydl.extract_info(self.url, download=False))

    def download_section(self, start: float, end: float) -> Path:
        """Download ``[start, end)`` seconds of the video (with retries); return the file's path."""
        return self.downloader.with_retries(f"{self.youtube_id} {start:.2f}-{end:.2f} s",
                                            lambda: self._download_section_once(start, end))

    def _download_section_once(self, start: float, end: float) -> Path:
        from yt_dlp.utils import download_range_func

        if self._info is None:
            raise RuntimeError("extract() must succeed before download_section()")
        ydl = self._youtube_dl()
        # Options are read when a download is processed, so one extraction serves every section.
        ydl.params["download_ranges"] = download_range_func(None, [(start, end)])
        result = self._run(lambda: ydl.process_ie_result(copy.deepcopy(self._info), download=True))
        downloads = (result or {}).get("requested_downloads") or []
        path = Path(downloads[0]["filepath"]) if downloads and downloads[0].get("filepath") else None
        if path is None or not path.is_file():
            raise SegmentDownloadError(ErrorKind.PERMANENT, "download produced no file")
        return path
