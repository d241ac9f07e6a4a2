"""
Files as sb3-safe writes and finds them: atomic writes, JSON lines, checkpoint names, and the one line a write
without room becomes. The run folder (:mod:`sb3_safe.runs`) and the checkpoints (:mod:`sb3_safe.checkpoints`)
build on these.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "NO_ROOM",
    "append_jsonl",
    "atomic_write",
    "checkpoint_path",
    "list_checkpoints",
    "no_room_message",
    "read_jsonl",
    "temporary_sibling",
]

#: Errors of a write that cannot find room: a full disk, a full quota, a file too large, a read-only filesystem
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def no_room_message(folder: Path, error: OSError, what: str, newest_checkpoint: Path | None) -> str:
    """:return: One line: what failed in ``folder``, the free space there, and how to go on from the newest checkpoint"""
    try:
        free = f"{shutil.disk_usage(folder).free / 2**20:,.1f} MiB free"
    except OSError:
        free = "free space unknown"
    way_on = (
        f"the newest checkpoint {newest_checkpoint} is intact: free space and resume with --checkpoint {newest_checkpoint}"
        if newest_checkpoint is not None
        else "no checkpoint was written yet: free space and start again"
    )
    return f"{folder}: {what} ({os.strerror(error.errno or 0)}; {free}); {way_on}"


_CHECKPOINT = re.compile(r"model_(\d+)_steps\.zip")


def checkpoint_path(folder: Path, timesteps: int) -> Path:
    """:return: The checkpoint at ``timesteps`` steps in ``folder`` (``model_<steps>_steps.zip``)"""
    return folder / f"model_{timesteps}_steps.zip"


def list_checkpoints(
    folder: Path, glob: str = "model_*_steps.zip", name: re.Pattern[str] = _CHECKPOINT
) -> list[tuple[int, Path]]:
    """
    :param folder: Where to look
    :param glob: Which files to consider (``**/...`` searches below ``folder`` too)
    :param name: A file name's full pattern, its first group the step count
    :return: The checkpoints ``(steps, model path)``, oldest first; temporary files are not checkpoints
    """
    found = []
    for path in folder.glob(glob):
        match = name.fullmatch(path.name)
        if match is not None:
            found.append((int(match.group(1)), path))
    return sorted(found)


def temporary_sibling(path: Path, suffix: str = ".tmp") -> Path:
    """
    Create an empty, hidden file beside ``path`` to write before renaming it over ``path``. Its mode is the one a plain
    ``open`` gives (the user's umask applies), so the renamed file is as readable as any other the user writes
    (``tempfile.mkstemp`` would make it private to its owner).

    :param path: The file it will become
    :param suffix: The temporary name's ending (a writer that goes by the suffix needs the real one)
    :return: The new file's path
    """
    while True:
        candidate = path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return candidate


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """
    Write a file so that it either exists complete or not at all, also after a power loss: write
    a temporary file in the same folder, ``fsync`` it, rename it over ``path`` (atomic on POSIX),
    and ``fsync`` the folder so the rename itself is on disk.

    :param path: The final path
    :param write: Writes the content to the path it is given
    """
    tmp = temporary_sibling(path)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def append_jsonl(path: Path | None, record: Mapping[str, Any]) -> None:
    """Append one JSON object as a line (nothing when ``path`` is ``None``)."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(dict(record)) + "\n")


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """:return: The JSON objects of a JSON-lines file; a damaged line (a run killed mid-write) is skipped"""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            yield record
