"""Errors that mean "the user gave us something wrong": entry points print them as one line."""


class UserError(Exception):
    """A mistake in the user's input (missing file, bad config value, ...).

    Entry points catch it and print ``error: <message>`` with a non-zero exit, no traceback.
    """


class MediaError(UserError):
    """A media file could not be read or written (corrupt, wrong type, ffmpeg failed)."""


class ConfigError(UserError):
    """A config file is missing, unparsable or invalid."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its class name when the message is empty), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
