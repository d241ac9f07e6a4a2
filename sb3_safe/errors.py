"""
User-facing errors: one line that names the input, the bad value, what is allowed and a fix.

Every error a user can cause derives from :class:`UserError`; ``sb3-safe`` prints its message
as one line on stderr and exits with status 2, without a traceback. The Python API raises
them like any ``ValueError``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "CheckpointError",
    "ClusterError",
    "ConfigError",
    "DiskFullError",
    "MissingDependencyError",
    "RunFolderError",
    "StorageError",
    "UserError",
    "did_you_mean",
    "unknown_key",
]


class UserError(ValueError):
    """A mistake in what the user asked for, or in the files they pointed at."""


class ConfigError(UserError):
    """A profile, a ``--set`` override, a command-line value or a suite or search-space file is wrong."""


class CheckpointError(UserError):
    """A checkpoint (model ``.zip`` or VecNormalize ``.pkl``) is missing, damaged or does not fit the profile."""


class ClusterError(UserError):
    """Work on a Ray cluster did not finish: a worker or task died (what finished is kept)."""


class DiskFullError(UserError):
    """A run folder's file could not be written (a full disk, a read-only filesystem); the previous checkpoint is intact."""


class RunFolderError(UserError):
    """A path is not an sb3-safe run folder (or a file inside one) where one is needed."""


class StorageError(UserError):
    """An Optuna storage URL is malformed, its driver is missing, or its database cannot be reached."""


class MissingDependencyError(UserError):
    """An optional dependency is not installed; the message says which extra to install."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """
    :param word: What the user wrote
    :param choices: What would have been accepted
    :return: ``" Did you mean 'x'?"``, or ``""`` when nothing is close
    """
    matches = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" Did you mean {matches[0]!r}?" if matches else ""


def unknown_key(key: str, allowed: Iterable[str], prefix: str = "") -> str:
    """
    The one wording of an unknown key, in profiles, option blocks and suites alike.

    :param key: The key as written
    :param allowed: The keys that are allowed
    :param prefix: Put before each key (``policy_kwargs.``)
    :return: ``"unknown key `x`. Did you mean 'y'? Allowed: ... Fix the spelling or remove it"``
    """
    names = [str(name) for name in allowed]
    return (
        f"unknown key `{prefix}{key}`.{did_you_mean(str(key), names)} Allowed: {', '.join(prefix + n for n in names)}. "
        "Fix the spelling or remove it"
    )
