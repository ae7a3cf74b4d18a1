"""Stage 1: AVSpeech segment scraper (rows, yt-dlp section downloads, filters, transcription, resumable runs)."""

from avatar_gen.scraper.pipeline import ScrapeConfig, ScrapeStopped, ScrapeSummary, Scraper, scrape, state_path_for
from avatar_gen.scraper.rows import AvspeechRow, RowRejection, local_clip_id, parse_row, read_avspeech_csv

__all__ = [
    "AvspeechRow", "RowRejection", "ScrapeConfig", "ScrapeStopped", "ScrapeSummary", "Scraper", "local_clip_id",
    "parse_row", "read_avspeech_csv", "scrape", "state_path_for",
]
