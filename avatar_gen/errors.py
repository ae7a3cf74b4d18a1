"""Errors that mean "the user gave us something wrong": entry points print them as one line."""


class UserError(Exception):
    """A mistake in the user's input (missing file, bad config value, ...).

    Entry points catch it and print ``error: <message>`` with a non-zero exit, no traceback.
    """


class MediaError(UserError):
    """A media file could not be read or written (corrupt, wrong type, ffmpeg failed)."""


class ConfigError(UserError):
    """A config file is missing, unparsable or invalid."""
