"""Matplotlib helpers (imported lazily: matplotlib is the ``plots`` extra)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sb3_safe.errors import MissingDependencyError
from sb3_safe.health import Finding

__all__ = ["plot_health"]

#: (title, metric, transform, log scale) of the health panels
PANELS: tuple[tuple[str, str, float, bool], ...] = (
    ("mean episode return", "ep_rew_mean", 1.0, False),
    ("value loss", "value_loss", 1.0, True),
    ("explained variance", "explained_variance", 1.0, False),
    ("approx KL", "approx_kl", 1.0, True),
    ("clip fraction", "clip_fraction", 1.0, False),
    ("entropy", "entropy_loss", -1.0, False),
)
SEVERITY_COLORS = {"critical": "tab:red", "warning": "tab:orange", "info": "tab:gray"}


def pyplot() -> Any:
    """:return: ``matplotlib.pyplot`` with the file-only Agg backend"""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError("plots need matplotlib: pip install 'sb3-safe[plots]'") from None
    return plt


def plot_health(history: Sequence[dict[str, float]], findings: Sequence[Finding], out: Path, title: str) -> None:
    """
    Draw the key health metrics against environment steps, with each finding marked.

    :param history: One row per update
    :param findings: What to mark (a vertical line per finding, coloured by severity)
    :param out: The PNG path
    :param title: Figure title
    """
    plt = pyplot()
    fig, axes = plt.subplots(3, 2, figsize=(12, 9), sharex=True)
    steps = [row.get("timesteps", float(i)) for i, row in enumerate(history)]
    for ax, (label, key, sign, log) in zip(axes.flat, PANELS, strict=True):
        points = [
            (s, sign * row[key]) for s, row in zip(steps, history, strict=True) if key in row and math.isfinite(row[key])
        ]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, lw=1.2, color="tab:blue")
            if log and min(ys) > 0:
                ax.set_yscale("log")
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
        for finding in findings:
            ax.axvline(finding.timestep, color=SEVERITY_COLORS[finding.severity], ls="--", lw=1)
    for ax in axes[-1]:
        ax.set_xlabel("environment steps")
    if findings:
        labels = {f"{f.severity} {f.code} @ {f.timestep:,}": SEVERITY_COLORS[f.severity] for f in findings[:8]}
        handles = [plt.Line2D([], [], color=color, ls="--") for color in labels.values()]
        fig.legend(handles, list(labels), loc="lower center", ncol=min(len(labels), 3), fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.06 if findings else 0, 1, 0.95))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
