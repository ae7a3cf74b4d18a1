"""AVSpeech CSV rows: parsing and validation, with a reason for every rejected row.

An AVSpeech CSV has no header and five columns per line::

    youtube_id,start_seconds,end_seconds,face_x,face_y

where ``face_x, face_y`` is the speaker's face centre as a fraction of the frame width/height.
The CSV is untrusted input: a row becomes an :class:`AvspeechRow` only when every field is well
formed, and the only strings taken from it (the id) are restricted to YouTube's id alphabet, so
nothing from a CSV can name a path outside the output folder or reach a command line as anything
but a plain argument.  Every other row becomes a :class:`RowRejection` with the reason.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

from avatar_gen.errors import UserError

AVSPEECH_COLUMNS = ("youtube_id", "start", "end", "face_x", "face_y")
YOUTUBE_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{11}")
# A plain decimal number: no "nan"/"inf", no Python-only forms such as "1_000" or hex.
NUMBER_PATTERN = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
# YouTube caps uploads at 12 hours; a start time past this is a corrupt row, not a real segment.
MAX_START_SECONDS = 12 * 3600.0
DEFAULT_MIN_DURATION = 1.0  # seconds; shorter segments carry too little speech to train on
DEFAULT_MAX_DURATION = 20.0  # seconds; AVSpeech segments are 3-10 s
# How much of a bad field is quoted back in a rejection (keeps state files small and readable).
MAX_QUOTED_CHARS = 40
# Clip ids made from local file names: the characters a file name on any platform can hold safely.
UNSAFE_ID_CHARACTERS = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_LOCAL_ID_CHARS = 100


@dataclass(frozen=True)
class AvspeechRow:
    """One valid AVSpeech segment. ``row`` is the 0-based line number in the CSV; times in seconds."""

    row: int
    youtube_id: str
    start: float
    end: float
    face_x: float
    face_y: float

    @property
    def duration(self) -> float:
        return self.end - self.start

    @property
    def clip_id(self) -> str:
        """``<youtube_id>_<start_ms>_<end_ms>``: unique per segment and safe as a file name."""
        return f"{self.youtube_id}_{round(self.start * 1000)}_{round(self.end * 1000)}"

    def source(self) -> dict:
        """The ``source`` field of a transcript record: the CSV row this clip came from."""
        return {"type": "avspeech", "row": self.row, "youtube_id": self.youtube_id, "start": self.start,
                "end": self.end, "face_x": self.face_x, "face_y": self.face_y}


@dataclass(frozen=True)
class RowRejection:
    """A CSV row that is not a valid segment. ``youtube_id`` is the raw first field, shortened."""

    row: int
    youtube_id: str
    reason: str


def quote_field(text: str) -> str:
    """A bad field as it appears in a rejection reason: shortened, with its quotes (``repr``)."""
    if len(text) > MAX_QUOTED_CHARS:
        text = text[:MAX_QUOTED_CHARS] + "..."
    return repr(text)


def _parse_number(name: str, text: str) -> float:
    text = text.strip()
    if not NUMBER_PATTERN.fullmatch(text):
        raise ValueError(f"{name} is not a number: {quote_field(text)}")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{name} is not a finite number: {quote_field(text)}")
    return value


def parse_row(row: int, fields: list[str], min_duration: float = DEFAULT_MIN_DURATION,
              max_duration: float = DEFAULT_MAX_DURATION) -> AvspeechRow | RowRejection:
    """Validate one CSV row's fields; return the segment or the rejection with its reason."""
    raw_id = fields[0].strip() if fields else ""
    shown_id = raw_id[:MAX_QUOTED_CHARS]
    if len(fields) != len(AVSPEECH_COLUMNS):
        return RowRejection(row, shown_id, f"expected {len(AVSPEECH_COLUMNS)} columns "
                                           f"({','.join(AVSPEECH_COLUMNS)}), got {len(fields)}")
    if not YOUTUBE_ID_PATTERN.fullmatch(raw_id):
        return RowRejection(row, shown_id, f"invalid YouTube id {quote_field(raw_id)}: "
                                           "need 11 characters of A-Z a-z 0-9 _ -")
    try:
        start, end, face_x, face_y = (_parse_number(name, text) for name, text in zip(AVSPEECH_COLUMNS[1:], fields[1:]))
    except ValueError as exc:
        return RowRejection(row, raw_id, str(exc))
    if start < 0:
        return RowRejection(row, raw_id, f"start {start:g} s is negative")
    if start > MAX_START_SECONDS:
        return RowRejection(row, raw_id, f"start {start:g} s is beyond any video's length")
    if end <= start:
        return RowRejection(row, raw_id, f"end {end:g} s is not after start {start:g} s")
    duration = end - start
    if duration < min_duration:
        return RowRejection(row, raw_id, f"segment of {duration:.3f} s is shorter than the minimum {min_duration:g} s")
    if duration > max_duration:
        return RowRejection(row, raw_id, f"segment of {duration:.3f} s is longer than the maximum {max_duration:g} s")
    for name, value in (("face_x", face_x), ("face_y", face_y)):
        if not 0.0 <= value <= 1.0:
            return RowRejection(row, raw_id, f"{name} {value:g} is outside [0, 1]")
    return AvspeechRow(row=row, youtube_id=raw_id, start=start, end=end, face_x=face_x, face_y=face_y)


def read_avspeech_csv(path: str | Path, start_row: int = 0, end_row: int | None = None,
                      min_duration: float = DEFAULT_MIN_DURATION,
                      max_duration: float = DEFAULT_MAX_DURATION) -> list[AvspeechRow | RowRejection]:
    """Parse rows ``[start_row, end_row)`` (0-based line numbers) of an AVSpeech CSV.

    Each line is decoded on its own, so one line of bad bytes rejects that row only.  A missing or
    empty file is a :class:`UserError` (there is nothing to scrape); every other problem is a row's
    rejection.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"CSV file not found: {path}")
    if start_row < 0 or (end_row is not None and end_row < start_row):
        raise UserError(f"need 0 <= --start_row <= --end_row, got {start_row} and {end_row}")
    data = path.read_bytes()
    if not data.strip():
        raise UserError(f"CSV file is empty: {path}")
    lines = data.splitlines()
    results: list[AvspeechRow | RowRejection] = []
    for row in range(start_row, len(lines) if end_row is None else min(end_row, len(lines))):
        raw_line = lines[row]
        if row == 0 and raw_line.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark from spreadsheet tools
            raw_line = raw_line[3:]
        try:
            line = raw_line.decode("utf-8")
        except UnicodeDecodeError:
            results.append(RowRejection(row, "", "row is not valid UTF-8 text"))
            continue
        if not line.strip():
            results.append(RowRejection(row, "", "empty row"))
            continue
        try:
            fields = next(csv.reader([line]))
        except csv.Error as exc:
            results.append(RowRejection(row, "", f"unparsable CSV row: {exc}"))
            continue
        results.append(parse_row(row, fields, min_duration=min_duration, max_duration=max_duration))
    return results


def local_clip_id(file_name: str) -> str:
    """Clip id of an imported local video: its file stem with unsafe characters replaced by ``_``.

    Leading dots are dropped (no hidden files, no ``..``); an empty result means the name has
    nothing usable and the file is rejected by the caller.
    """
    stem = Path(file_name).stem
    cleaned = UNSAFE_ID_CHARACTERS.sub("_", stem).lstrip(".")
    return cleaned[:MAX_LOCAL_ID_CHARS].strip("_") or ""
