"""Human Avatar Generator: one portrait + a line of text -> a talking video with its speech.

The library behind the stage scripts (``video_scraper/``, ``preprocessing/``, ``ltx_video/``).
Importing it has no side effects: no logging set-up, no model loading, no environment changes.
"""

__version__ = "0.1.0"
