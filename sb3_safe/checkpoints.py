"""
Checkpoints: what is kept as a run grows (retention), what is saved beside each model (VecNormalize
statistics, the health monitor's state), the callback that writes them atomically, and loading them back.
"""

from __future__ import annotations

import itertools
import json
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from sb3_safe.errors import CheckpointError
from sb3_safe.runs import atomic_write, checkpoint_path, list_checkpoints

__all__ = [
    "AtomicCheckpointCallback",
    "check_archive",
    "checkpoints_to_keep",
    "load_model",
    "monitor_state_path_for",
    "save_with_stats",
    "stats_path_for",
]


def checkpoints_to_keep(steps: Iterable[int], keep: int, protect: Iterable[int] = ()) -> set[int]:
    """
    Which checkpoints a bounded run folder keeps.

    - the ``keep`` newest, the oldest, and every step in ``protect`` (the last confirmed-healthy one);
    - older ones spaced out over the run: numbering the checkpoints ``i = 0, 1, ..., n`` in save
      intervals from the oldest, checkpoint ``i`` at age ``a = n - i`` stays while ``i`` is a
      multiple of ``2 ** floor(log2(a))``. Every doubling of the distance back from the newest
      (``[2^k, 2^(k+1))`` intervals) keeps at least one, so "resume from well before the crash"
      always has a candidate, and a run of ``n`` saves keeps about ``keep + 2 log2(n)`` files.
      The rule is stable: applied after every save, it never needs a file it deleted before.

    :param steps: The checkpoints' step counts (saved every fixed number of steps)
    :param keep: How many of the newest to keep (at least 1)
    :param protect: Step counts never to delete
    :return: The step counts to keep
    """
    ordered = sorted(set(steps))
    if not ordered:
        return set()
    oldest, newest = ordered[0], ordered[-1]
    interval = min((b - a for a, b in itertools.pairwise(ordered[-keep - 1 :])), default=1) or 1
    kept = set(ordered[-keep:]) | {oldest} | (set(protect) & set(ordered))
    n = (newest - oldest) // interval
    for step in ordered:
        i = (step - oldest) // interval
        age = n - i
        if age > 0 and i % (1 << (age.bit_length() - 1)) == 0:
            kept.add(step)
    return kept


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
    mid-save leaves a truncated file (:func:`atomic_write`). With ``keep``, older checkpoints are
    deleted once the new one is on disk, as :func:`checkpoints_to_keep` says.

    :param save_freq: Save every this many calls of ``_on_step`` (``total steps / n_envs``)
    :param save_path: The folder
    :param keep: Keep this many of the newest checkpoints (and the spaced-out older ones);
        ``None`` keeps every checkpoint
    :param state: Returns JSON data saved beside each checkpoint (``monitor_<steps>_steps.json``):
        the health monitor's state, so a resumed run goes on judging against its past
    :param protect: Returns step counts whose checkpoints must be kept (the last healthy one)
    :param verbose: 1 to print each save
    """

    def __init__(
        self,
        save_freq: int,
        save_path: Path,
        keep: int | None = None,
        state: Callable[[], Mapping[str, Any]] | None = None,
        protect: Callable[[], Iterable[int]] | None = None,
        verbose: int = 0,
    ) -> None:
        super().__init__(verbose)
        self.save_freq = save_freq
        self.save_path = Path(save_path)
        self.keep = keep
        self.state = state
        self.protect = protect

    def _on_step(self) -> bool:
        if self.n_calls % self.save_freq == 0:
            self.save_path.mkdir(parents=True, exist_ok=True)
            path = checkpoint_path(self.save_path, self.num_timesteps)
            if self.state is not None:
                text = json.dumps(dict(self.state()))
                atomic_write(monitor_state_path_for(path), lambda tmp: tmp.write_text(text))
            save_with_stats(self.model, path)
            if self.verbose >= 1:
                print(f"Saved checkpoint {path}")
            if self.keep is not None:
                self._prune()
        return True

    def _prune(self) -> None:
        assert self.keep is not None
        found = list_checkpoints(self.save_path)
        keep = checkpoints_to_keep([s for s, _ in found], self.keep, self.protect() if self.protect else ())
        for steps, path in found:
            if steps not in keep:
                # The model first: a kill between these leaves stray companions, never a model without its statistics.
                for file in (path, stats_path_for(path), monitor_state_path_for(path)):
                    file.unlink(missing_ok=True)


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
