"""
``sb3-safe eval RUN --video PATH``: evaluation episodes of a trained policy as an ``.mp4`` or ``.gif``, headless.

Frames come from the environment's ``rgb_array`` render: a Gymnasium task made with ``render_mode="rgb_array"``, or a
VMAS scenario (its own renderer). The policy acts greedily, on the run's evaluation environment with its saved
observation statistics (:func:`sb3_safe.training.load_policy`). Encoding is imageio's: GIF through Pillow, MP4
through the ffmpeg binary of ``imageio-ffmpeg`` (the ``plots`` extra). The file is written beside its target under
a temporary name and renamed: it exists whole or not at all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from sb3_safe.errors import ConfigError, MissingDependencyError
from sb3_safe.files import temporary_sibling

__all__ = ["FORMATS", "record_video"]

#: File suffix -> imageio's format name
FORMATS = {".mp4": "FFMPEG", ".gif": "GIF"}


def _encoder(out: Path) -> Any:
    """imageio, with what the format needs: checked before any episode is played."""
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise ConfigError(f"--video {str(out)!r}: the file must end in {' or '.join(FORMATS)}. Name it e.g. video.mp4")
    try:
        import imageio.v2 as imageio

        if suffix == ".mp4":
            import imageio_ffmpeg

            imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as error:
        raise MissingDependencyError(
            f"--video {out.name}: no encoder ({error}). Install it: pip install 'sb3-safe[plots]' (imageio, imageio-ffmpeg), "
            "or write a .gif"
        ) from None
    return imageio


def _frame(venv: Any, env_id: str) -> np.ndarray:
    try:
        frame = venv.render(mode="rgb_array")
    except Exception as error:  # renderers raise anything: no display, no rgb_array mode
        raise ConfigError(f"--video: {env_id!r} cannot render rgb_array frames ({type(error).__name__}: {error})") from None
    if frame is None:
        raise ConfigError(f"--video: {env_id!r} renders no rgb_array frames. Record a task that has an rgb_array mode")
    return np.asarray(frame, dtype=np.uint8)


def record_video(target: Path, out: Path, *, episodes: int = 3, seed: int = 0, fps: int = 30, device: str = "cpu") -> int:
    """
    Record ``episodes`` greedy evaluation episodes of a saved policy.

    :param target: A run folder (its ``model.zip``) or a model ``.zip`` in one
    :param out: The ``.mp4`` or ``.gif`` to write
    :param episodes: How many episodes (a multi-agent episode is one copy's, all its agents in the frame)
    :param seed: Seed of the environment
    :param fps: Frames per second of the file
    :param device: Torch device
    :return: The number of frames written
    :raises ConfigError: When the format is unknown or the task cannot render frames (nothing is written)
    :raises MissingDependencyError: When the encoder is not installed (nothing is written)
    """
    from sb3_safe.evaluation import load_policy

    imageio = _encoder(out)
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame renderers (Box2D, classic control) without a screen
    model, venv, model_path = load_policy(target, seed=seed, device=device, render=True)
    env_id = str(model_path)
    try:
        obs = venv.reset()
        frames = [_frame(venv, env_id)]
        finished = 0
        while finished < episodes:
            action, _ = model.predict(obs, deterministic=True)
            obs, _, dones, _ = venv.step(action)
            finished += int(dones[0])  # one copy: its first slot ends with the episode
            if finished < episodes:  # after an episode's end the copy shows the next one's start
                frames.append(_frame(venv, env_id))
    finally:
        venv.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    name = temporary_sibling(out, suffix=out.suffix)
    try:
        # GIF frame times are whole hundredths of a second
        gif = {"duration": 10 * max(round(100 / fps), 1), "loop": 0}
        kwargs = {"fps": fps, "macro_block_size": 1} if out.suffix.lower() == ".mp4" else gif
        imageio.mimwrite(name, frames, format=FORMATS[out.suffix.lower()], **kwargs)
        os.replace(name, out)
    finally:
        Path(name).unlink(missing_ok=True)
    return len(frames)
