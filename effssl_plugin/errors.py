"""Errors the launchers turn into one clear line and a non-zero exit."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["EffSSLError", "ConfigError", "DataError", "NonFiniteLossError", "suggest"]


class EffSSLError(Exception):
    """Base class: a user-facing problem with a one-line message."""


class ConfigError(EffSSLError, ValueError):
    """A config key holds a value that cannot work; the message names the key."""


class DataError(EffSSLError):
    """A dataset path or file cannot be used; the message names it."""


class NonFiniteLossError(EffSSLError, FloatingPointError):
    """The training loss became NaN or infinite; the message names the step."""


def suggest(name: str, choices: Iterable[str], n: int = 5) -> str:
    """``" Did you mean: a, b?"`` for the closest ``choices``, or ``""``."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""
