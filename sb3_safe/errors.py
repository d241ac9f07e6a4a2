"""User-facing errors: one line that names the input, the bad value, what is allowed and a fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["ConfigError", "did_you_mean"]


class ConfigError(ValueError):
    """
    A mistake in what the user asked for (profile, command line, checkpoint, storage URL).

    The command line prints its message as one line and exits with status 2, without a
    traceback; the Python API raises it like any ``ValueError``.
    """


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """
    :param word: What the user wrote
    :param choices: What would have been accepted
    :return: ``" Did you mean 'x'?"``, or ``""`` when nothing is close
    """
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" Did you mean {matches[0]!r}?" if matches else ""
