"""A full disk or a read-only filesystem: the previous checkpoint stays loadable, one line, exit 2."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest

import sb3_safe.checkpoints
import sb3_safe.runs
from sb3_safe import SafePPO
from sb3_safe.checkpoints import monitor_state_path_for, stats_path_for
from sb3_safe.cli import main
from sb3_safe.config import load_config
from sb3_safe.errors import DiskFullError
from sb3_safe.runs import RunFolder
from sb3_safe.training import train

SMALL = {"n_timesteps": 2048, "n_envs": 2, "n_steps": 64, "batch_size": 64}


def _fail_on(monkeypatch: pytest.MonkeyPatch, module: object, predicate: Callable[[Path], bool]) -> list[Path]:
    """Make ``module.atomic_write`` raise ENOSPC for the first path ``predicate`` accepts; return the paths tried."""
    real = sb3_safe.runs.atomic_write
    tried: list[Path] = []

    def write(path: Path, content: Callable[[Path], object]) -> None:
        tried.append(path)
        if predicate(path) and not any(predicate(p) for p in tried[:-1]):

            def half(tmp: Path) -> None:  # as a full disk does: part of the file written, then the error
                tmp.write_bytes(b"half a file")
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

            real(path, half)
        real(path, content)

    monkeypatch.setattr(module, "atomic_write", write)
    return tried


@pytest.mark.parametrize("failing", ["monitor", "vecnormalize", "model"])
def test_a_checkpoint_that_cannot_be_written_leaves_the_previous_one_loadable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
):
    """The third checkpoint (step 768) fails at each of its files in turn."""
    _fail_on(monkeypatch, sb3_safe.checkpoints, lambda p: p.name.startswith(failing) and "_768_" in p.name)
    config = load_config("safe", "Pendulum-v1", SMALL)
    with pytest.raises(DiskFullError) as raised:
        train(config, run_dir=tmp_path / "run", save_freq=256, eval_freq=10**6, progress_bar=False)
    message = str(raised.value)
    assert "\n" not in message and str(tmp_path / "run") in message
    assert "checkpoint at step 768 not written" in message and "MiB free" in message
    assert "model_512_steps.zip is intact: free space and resume with --checkpoint" in message
    folder = RunFolder(tmp_path / "run")
    # nothing of the failed checkpoint is left; the ones before it are complete
    assert sorted(p.name for p in folder.checkpoints_dir.iterdir()) == sorted(
        f"{kind}_{step}_steps.{ext}"
        for step in (256, 512)
        for kind, ext in (("model", "zip"), ("vecnormalize", "pkl"), ("monitor", "json"))
    )
    newest = folder.checkpoints()[-1][1]
    model = SafePPO.load(newest, device="cpu")
    assert model.num_timesteps == 512 and stats_path_for(newest).is_file() and monitor_state_path_for(newest).is_file()
    assert folder.read_result() is None  # not finished: resumable, not a result


def test_a_result_that_cannot_be_written_is_one_line_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    _fail_on(monkeypatch, sb3_safe.runs, lambda p: p.name == "result.json")
    args = ["train", "--env", "Pendulum-v1", "--timesteps", "512", "--n-envs", "2", "--run-dir", str(tmp_path / "run")]
    assert main([*args, "--set", "n_steps=64", "--set", "batch_size=64", "--save-freq", "256"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "No space left on device" in err and "model_512_steps.zip is intact" in err
    assert RunFolder(tmp_path / "run").final_model.is_file()  # the model was saved before the result failed


def test_no_run_folder_can_be_made_one_line_before_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    if os.geteuid() == 0:  # root writes through permission bits: a filesystem where nobody creates folders instead
        root = Path("/proc/self")
    else:
        root = tmp_path / "locked"
        root.mkdir()
        root.chmod(0o500)
    assert main(["train", "--env", "Pendulum-v1", "--timesteps", "256", "--runs-root", str(root / "runs")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "cannot create a run folder" in err and "--runs-root" in err
