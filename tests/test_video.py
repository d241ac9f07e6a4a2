"""``sb3-safe eval RUN --video PATH``: evaluation episodes as a file, headless."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from sb3_safe.cli import main
from sb3_safe.config import load_config
from sb3_safe.training import train
from tests.extras import require


@pytest.fixture(scope="module")
def pendulum(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = load_config("safe", "Pendulum-v1", {"n_timesteps": 512, "n_envs": 2, "n_steps": 256, "batch_size": 128})
    return train(config, run_dir=tmp_path_factory.mktemp("runs") / "pendulum", eval_freq=10**6, progress_bar=False).run_dir


def mp4_frames(path: Path) -> tuple[int, np.ndarray]:
    """The number of frames of an MP4 and its first frame."""
    imageio = require("imageio.v2", "plots")
    reader = imageio.get_reader(path)
    try:
        return reader.count_frames(), reader.get_data(0)
    finally:
        reader.close()


def gif_milliseconds(path: Path) -> float:
    """A GIF's length: Pillow merges identical frames into one shown longer, so the count of frames is not kept."""
    from PIL import Image

    with Image.open(path) as image:
        total = 0.0
        for index in range(getattr(image, "n_frames", 1)):
            image.seek(index)
            total += image.info["duration"]
    return total


def test_a_gymnasium_run_records_whole_episodes_as_an_mp4(pendulum: Path, capsys: pytest.CaptureFixture[str]):
    out = pendulum / "video.mp4"
    assert main(["eval", str(pendulum), "--episodes", "1", "--video", str(out), "--video-episodes", "2"]) == 0
    count, first = mp4_frames(out)
    assert count == 2 * 200  # each 200-step episode from its first observation; the reset after the last is not shown
    assert first.ndim == 3 and first.shape[2] == 3 and first.std() > 0
    assert "Video:" in capsys.readouterr().out


def test_a_vmas_run_records_a_gif(tmp_path: Path):
    require("vmas", "marl")
    overrides = {"n_envs": 2, "n_steps": 16, "batch_size": 64, "env_kwargs": {"max_steps": 12}, "n_timesteps": 128}
    run = train(load_config("safe", "vmas:navigation", overrides), run_dir=tmp_path / "vmas", eval_freq=10**6).run_dir
    out = run / "video.gif"
    assert main(["eval", str(run), "--episodes", "1", "--video", str(out), "--video-episodes", "2"]) == 0
    # two episodes of 12 steps (navigation ends at its time limit here), 30 ms a frame
    assert gif_milliseconds(out) == 2 * 12 * 30


@pytest.mark.parametrize(
    ("argv_tail", "message"),
    [
        (["--video", "VIDEO.avi"], "must end in .mp4 or .gif"),
        (["--video", "VIDEO.mp4", "--episodes", "1"], "no encoder"),
    ],
)
def test_bad_video_requests_are_one_line_and_write_nothing(
    pendulum: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv_tail: list[str],
    message: str,
):
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # as where the mp4 encoder is not installed
    argv = [str(tmp_path / a[len("VIDEO") :].join(["video", ""])) if a.startswith("VIDEO") else a for a in argv_tail]
    assert main(["eval", str(pendulum), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_run_folder_without_a_model_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    (tmp_path / "run").mkdir()
    assert main(["eval", str(tmp_path / "run"), "--video", str(tmp_path / "v.gif")]) == 2
    assert "no model.zip" in capsys.readouterr().err and not (tmp_path / "v.gif").exists()
