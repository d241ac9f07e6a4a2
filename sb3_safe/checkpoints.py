"""
Checkpoints: what is kept as a run grows (retention), what is saved beside each model (VecNormalize
statistics, the health monitor's state), the callback that writes them atomically, and loading them back.
"""

from __future__ import annotations

import contextlib
import io
import json
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from sb3_safe.errors import CheckpointError, DiskFullError
from sb3_safe.files import append_jsonl, atomic_write, checkpoint_path, list_checkpoints, no_room_message
from sb3_safe.retention import checkpoints_to_keep, plan_retention, protected_steps

__all__ = [
    "AtomicCheckpointCallback",
    "check_archive",
    "checkpoint_bytes_estimate",
    "checkpoints_to_keep",
    "load_model",
    "monitor_state_path_for",
    "save_with_stats",
    "stats_path_for",
]


def monitor_state_path_for(model_path: Path) -> Path:
    """
    The health monitor's state saved with a model: ``model_5000_steps.zip`` -> ``monitor_5000_steps.json``,
    ``model.zip`` -> ``monitor.json``.
    """
    stem = model_path.name.removesuffix(".zip")
    return model_path.with_name(stem.replace("model", "monitor", 1) + ".json")


def stats_path_for(model_path: Path) -> Path:
    """
    The VecNormalize statistics that belong to a saved model.

    ``model.zip`` -> ``vecnormalize.pkl``; ``best_model.zip`` -> ``best_vecnormalize.pkl``;
    ``model_5000_steps.zip`` -> ``vecnormalize_5000_steps.pkl``.
    """
    stem = model_path.name.removesuffix(".zip")
    return model_path.with_name(stem.replace("model", "vecnormalize", 1) + ".pkl")


def save_with_stats(model: BaseAlgorithm, path: Path) -> None:
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
    SB3 issue #1256), the statistics are always saved, and neither a crash nor a power loss
    mid-save leaves a truncated file (:func:`atomic_write`). A save that fails (a full disk) removes
    what it wrote of its own checkpoint, leaves the previous one loadable and raises
    :class:`~sb3_safe.errors.DiskFullError`. After each save, :func:`~sb3_safe.retention.plan_retention`
    says which older checkpoints go (a size budget, an optional count bound); every deletion is
    logged with its reason.

    :param save_freq: Save every this many calls of ``_on_step`` (``total steps / n_envs``)
    :param save_path: The folder
    :param keep: Keep this many of the newest checkpoints and spaced-out older ones (``None``: no count bound)
    :param state: Returns JSON data saved beside each checkpoint (``monitor_<steps>_steps.json``):
        the health monitor's state, so a resumed run goes on judging against its past
    :param protect: Returns step counts whose checkpoints must be kept (the last healthy one)
    :param events: Returns the steps of new events with why they matter (a finding's onset, the best
        evaluation): the newest checkpoint at or before each is kept from then on
    :param budget_mb: The most the checkpoints may take on disk, in MiB (``None``: no budget)
    :param log: Where each deletion is recorded (``health.jsonl``), as ``{"event": "checkpoint_deleted", ...}``
    :param verbose: 1 to print each save
    """

    def __init__(
        self,
        save_freq: int,
        save_path: Path,
        keep: int | None = None,
        state: Callable[[], Mapping[str, Any]] | None = None,
        protect: Callable[[], Iterable[int]] | None = None,
        events: Callable[[], Mapping[int, str]] | None = None,
        budget_mb: float | None = None,
        log: Path | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        self.save_freq = save_freq
        self.save_path = Path(save_path)
        self.keep = keep
        self.state = state
        self.protect = protect
        self.events = events
        self.budget_mb = budget_mb
        self.log = log
        #: Checkpoints kept for recovery, by step, with why (bounded by the checkpoints on disk)
        self.protected: dict[int, str] = {}

    def _on_step(self) -> bool:
        if self.n_calls % self.save_freq == 0:
            self.save_path.mkdir(parents=True, exist_ok=True)
            path = checkpoint_path(self.save_path, self.num_timesteps)
            try:
                if self.state is not None:
                    text = json.dumps(dict(self.state()))
                    atomic_write(monitor_state_path_for(path), lambda tmp: tmp.write_text(text))
                save_with_stats(self.model, path)
            except OSError as error:
                raise self._failed(path, error) from None
            if self.verbose >= 1:
                print(f"Saved checkpoint {path}")
            self._prune()
        return True

    def _failed(self, path: Path, error: OSError) -> DiskFullError:
        """Remove what the failed save wrote of its checkpoint; the error names the folder, the room needed and the way on."""
        for file in (path, stats_path_for(path), monitor_state_path_for(path)):
            file.unlink(missing_ok=True)
        previous = list_checkpoints(self.save_path)
        need = max((_checkpoint_bytes(p) for _, p in previous), default=0)
        what = f"checkpoint at step {self.num_timesteps:,} not written, a checkpoint takes {need / 2**20:,.1f} MiB"
        newest = previous[-1][1] if previous else None
        return DiskFullError(no_room_message(self.save_path.parent, error, what, newest))

    def _prune(self) -> None:
        found = list_checkpoints(self.save_path)
        steps = [s for s, _ in found]
        if self.events is not None:
            self.protected.update(protected_steps(steps, self.events()))
        protect = dict(self.protected)
        for step in self.protect() if self.protect is not None else ():
            protect.setdefault(step, "the last confirmed-healthy state")
        budget = None if self.budget_mb is None else int(self.budget_mb * 2**20)
        sizes = {step: _checkpoint_bytes(path) for step, path in found}
        plan = plan_retention(sizes, budget, self.keep, protect)
        for steps_, path in found:
            if steps_ in plan.deleted:
                # The model first: a kill between these leaves stray companions, never a model without its statistics.
                for file in (path, stats_path_for(path), monitor_state_path_for(path)):
                    file.unlink(missing_ok=True)
                self.protected.pop(steps_, None)
                record = {"timestep": self.num_timesteps, "checkpoint": steps_, "reason": plan.deleted[steps_]}
                append_jsonl(self.log, {"event": "checkpoint_deleted", **record})


def checkpoint_bytes_estimate(model: BaseAlgorithm) -> int:
    """:return: The bytes a checkpoint of ``model`` takes (its archive, saved to memory), for a budget check at start"""
    buffer = io.BytesIO()
    model.save(buffer)
    return buffer.getbuffer().nbytes


def _checkpoint_bytes(model_path: Path) -> int:
    """Bytes on disk of a checkpoint: the model, its statistics and the monitor's state."""
    total = 0
    for file in (model_path, stats_path_for(model_path), monitor_state_path_for(model_path)):
        with contextlib.suppress(FileNotFoundError):
            total += file.stat().st_size
    return total


def check_archive(path: Path) -> None:
    """
    :raises CheckpointError: When ``path`` does not exist
    :raises zipfile.BadZipFile: When it is not a zip archive or a member fails its CRC check
    """
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist. Pass a model .zip from a run's checkpoints/ folder")
    with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
    if bad is not None:
        raise zipfile.BadZipFile(f"member {bad} is damaged")


def load_model(
    algorithm: type[BaseAlgorithm],
    path: Path,
    env: VecEnv | None,
    device: str,
    custom_objects: dict[str, Any] | None = None,
) -> Any:
    """
    Load a saved model, turning a missing or corrupt file into a one-line error.

    :param algorithm: ``SafePPO`` or ``PPO``
    :param path: The ``.zip``
    :param env: The env to attach
    :param device: Torch device
    :param custom_objects: Values that replace the saved ones (new hyperparameters)
    :return: The model
    """
    try:
        check_archive(path)
        return algorithm.load(path, env=env, device=device, custom_objects=custom_objects)
    except (zipfile.BadZipFile, EOFError, KeyError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be loaded as a {algorithm.__name__} model (corrupt, truncated, or another "
            f"algorithm's): {str(error).splitlines()[0] if str(error) else type(error).__name__}. Use an earlier checkpoint"
        ) from None
