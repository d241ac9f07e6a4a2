"""
Run folders: one per run, never overwritten, with atomic checkpoints that carry their VecNormalize statistics.

Layout of a run folder::

    config.yml           the resolved profile block (a profile itself) and the run's facts
    command.txt          the command that made the run
    progress.csv, tb/    SB3's logger output
    checkpoints/         model_<steps>_steps.zip + vecnormalize_<steps>_steps.pkl
    eval/                EvalCallback's evaluations.npz
    best_model.zip       best evaluation so far, with best_vecnormalize.pkl
    model.zip            the final model, with vecnormalize.pkl
"""

from __future__ import annotations

import os
import re
import shlex
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from sb3_safe.errors import ConfigError

__all__ = [
    "AtomicCheckpointCallback",
    "atomic_write",
    "load_model",
    "new_run_dir",
    "save_with_stats",
    "stats_path_for",
    "write_run_files",
]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "run"


def new_run_dir(root: Path, env_id: str, profile: str, seed: int, run_dir: Path | None = None) -> Path:
    """
    Create a new, empty run folder. An existing folder is never reused.

    :param root: Parent of all runs (``runs/``)
    :param env_id: Environment id (a folder level)
    :param profile: Profile name or path (its stem names the run)
    :param seed: The run's seed
    :param run_dir: An explicit folder; it must not exist yet
    :return: The created folder
    """
    if run_dir is not None:
        if run_dir.exists():
            raise ConfigError(f"--run-dir {str(run_dir)!r} already exists; runs are never overwritten. Choose a new folder")
        run_dir.mkdir(parents=True)
        return run_dir
    stem = f"{_slug(Path(profile).stem)}-s{seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    parent = root / _slug(env_id)
    parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1000):
        candidate = parent / (stem if attempt == 0 else f"{stem}-{attempt}")
        try:
            candidate.mkdir()  # atomic: two runs started in the same second get different folders
        except FileExistsError:
            continue
        return candidate
    raise ConfigError(f"cannot create a new run folder under {parent}: 1000 names taken")


def write_run_files(run_dir: Path, profile_block: dict[str, Any], run_info: dict[str, Any], argv: Sequence[str]) -> None:
    """
    Write ``config.yml`` (loadable as a profile) and ``command.txt``.

    :param run_dir: The run folder
    :param profile_block: ``{env_id: resolved block}``
    :param run_info: Facts about the run (seed, profile source, versions, resumed_from)
    :param argv: The command line
    """
    header = "# Resolved by sb3-safe; train again with: sb3-safe train --profile <this file> --env <the id below>\n"
    text = header + yaml.safe_dump({**profile_block, "run_info": run_info}, sort_keys=False, default_flow_style=None)
    atomic_write(run_dir / "config.yml", lambda path: path.write_text(text))
    command = " ".join(shlex.quote(arg) for arg in argv)
    atomic_write(run_dir / "command.txt", lambda path: path.write_text(f"cd {shlex.quote(os.getcwd())} && {command}\n"))


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """
    Write a file so that it either exists complete or not at all: write a temporary file in
    the same folder, then rename it over ``path`` (atomic on POSIX).

    :param path: The final path
    :param write: Writes the content to the path it is given
    """
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def stats_path_for(model_path: Path) -> Path:
    """
    The VecNormalize statistics that belong to a saved model.

    ``model.zip`` -> ``vecnormalize.pkl``; ``best_model.zip`` -> ``best_vecnormalize.pkl``;
    ``model_5000_steps.zip`` -> ``vecnormalize_5000_steps.pkl``.
    """
    stem = model_path.name.removesuffix(".zip")
    return model_path.with_name(stem.replace("model", "vecnormalize", 1) + ".pkl")


def save_with_stats(model: PPO, path: Path) -> None:
    """
    Save a model and, when its env is a VecNormalize, the matching statistics, both atomically.

    The statistics are written first: a model file that exists always has its statistics.

    :param model: The model
    :param path: The model's path (``.zip``)
    """
    venv = model.get_vec_normalize_env()
    if venv is not None:
        atomic_write(stats_path_for(path), lambda tmp: venv.save(str(tmp)))
    atomic_write(path, lambda tmp: model.save(tmp))  # tmp ends in .tmp: SB3 appends no .zip


class AtomicCheckpointCallback(BaseCallback):
    """
    Save the model and its VecNormalize statistics every ``save_freq`` calls (env steps of the VecEnv).

    Unlike SB3's ``CheckpointCallback`` (whose ``save_vecnormalize`` defaults to ``False``, see
    SB3 issue #1256), the statistics are always saved, and a crash mid-save never leaves a
    truncated file: each file is written under a temporary name and renamed.

    :param save_freq: Save every this many calls of ``_on_step`` (``total steps / n_envs``)
    :param save_path: The folder
    :param verbose: 1 to print each save
    """

    def __init__(self, save_freq: int, save_path: Path, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.save_freq = save_freq
        self.save_path = Path(save_path)

    def _on_step(self) -> bool:
        if self.n_calls % self.save_freq == 0:
            self.save_path.mkdir(parents=True, exist_ok=True)
            path = self.save_path / f"model_{self.num_timesteps}_steps.zip"
            assert isinstance(self.model, PPO)
            save_with_stats(self.model, path)
            if self.verbose >= 1:
                print(f"Saved checkpoint {path}")
        return True


def load_model(
    algorithm: type[PPO], path: Path, env: VecEnv | None, device: str, custom_objects: dict[str, Any] | None = None
) -> PPO:
    """
    Load a saved model, turning a missing or corrupt file into a one-line error.

    :param algorithm: ``SafePPO`` or ``PPO``
    :param path: The ``.zip``
    :param env: The env to attach
    :param device: Torch device
    :param custom_objects: Values that replace the saved ones (new hyperparameters)
    :return: The model
    """
    if not path.is_file():
        raise ConfigError(f"checkpoint {str(path)!r} does not exist. Pass a model .zip from a run's checkpoints/ folder")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        if bad is not None:
            raise zipfile.BadZipFile(f"member {bad} is damaged")
        return algorithm.load(path, env=env, device=device, custom_objects=custom_objects)
    except (zipfile.BadZipFile, EOFError, KeyError, ValueError, RuntimeError) as error:
        raise ConfigError(
            f"checkpoint {str(path)!r} cannot be loaded as a {algorithm.__name__} model (corrupt, truncated, or another "
            f"algorithm's): {str(error).splitlines()[0] if str(error) else type(error).__name__}. Use an earlier checkpoint"
        ) from None
