"""
``sb3-safe report RUN``: a run's health on one self-contained HTML page.

The page holds what ``diagnose`` reads, drawn: the training return with its standard error and the periodic
evaluations, then the health signals (value loss, explained variance, approx KL, clip fraction, gradient norms,
the policy's std or entropy, the learning rates), all on one shared step axis that zooms together. Each finding is
marked at the step it was reported (its onset dotted), and so are rollbacks, the parts of a resume chain and a
recovery's start. Below: the findings with their advice, the evaluation, the checkpoints kept, the resume chain,
the resolved profile block and the versions, and the run's video when it has one.

Everything is inline (Plotly's JavaScript included): the file opens from disk, with no server and no network.
A log of a million updates is drawn from the evenly thinned rows ``diagnose`` keeps (:data:`~sb3_safe.diagnose.PLOT_ROWS`);
every finding is kept. Needs the ``plots`` extra (Plotly).
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sb3_safe.diagnose import Diagnosis, diagnose
from sb3_safe.errors import MissingDependencyError, RunFolderError
from sb3_safe.files import atomic_write
from sb3_safe.health import Finding
from sb3_safe.runs import RunFolder, chain_evaluations, resume_chain

__all__ = ["PANELS", "Marker", "build_report", "write_report"]

#: The charts under the return, top to bottom: title, the row keys drawn (label, key, sign), log scale
PANELS: tuple[tuple[str, tuple[tuple[str, str, float], ...], bool], ...] = (
    ("value loss", (("value loss", "value_loss", 1.0),), True),
    ("explained variance", (("explained variance", "explained_variance", 1.0),), False),
    ("approx KL", (("approx KL", "approx_kl", 1.0),), True),
    ("clip fraction", (("clip fraction", "clip_fraction", 1.0),), False),
    ("gradient norms", (("actor grad norm", "actor_grad_norm", 1.0), ("critic grad norm", "critic_grad_norm", 1.0)), True),
    ("policy std / entropy", (("std", "std", 1.0), ("entropy", "entropy_loss", -1.0)), False),
    (
        "learning rates",
        (("actor learning rate", "learning_rate", 1.0), ("critic learning rate", "critic_learning_rate", 1.0)),
        True,
    ),
)
COLORS = {"critical": "#d62728", "warning": "#ff7f0e", "info": "#7f7f7f", "rollback": "#9467bd", "resume": "#2ca02c"}
VIDEOS = ("video.mp4", "video.gif")


@dataclass(frozen=True)
class Marker:
    """A vertical line on every chart: a finding, its onset, a rollback, a resume or a recovery's start."""

    step: int
    kind: str
    label: str
    dotted: bool = False


@dataclass
class _Run:
    """Everything the page shows, read once."""

    diagnosis: Diagnosis
    rows: list[dict[str, float]]
    findings: list[Finding]
    markers: list[Marker]
    folder: RunFolder | None
    chain: list[Path] = field(default_factory=list)


def _plotly() -> Any:
    try:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots
    except ImportError:
        raise MissingDependencyError("report needs Plotly: pip install 'sb3-safe[plots]'") from None
    return go, make_subplots


def _read(path: Path) -> _Run:
    diagnosis = diagnose(path)
    folder = RunFolder(diagnosis.run) if diagnosis.run is not None and (diagnosis.run / "config.yml").is_file() else None
    chain = resume_chain(folder.path) if folder is not None else []
    rows, findings, markers = list(diagnosis.history), list(diagnosis.findings), []
    for part in reversed(chain[:-1]):  # earlier parts of a resume chain, newest first: their rows go before
        try:
            earlier = diagnose(part)
        except RunFolderError:
            continue
        start = rows[0].get("timesteps", math.inf) if rows else math.inf
        rows = [row for row in earlier.history if row.get("timesteps", -math.inf) < start] + rows
        findings = [f for f in earlier.findings if f.timestep < start] + findings
        markers.append(Marker(int(start), "resume", f"resumed from {part.name}"))
    for finding in findings:
        markers.append(Marker(finding.timestep, finding.severity, f"{finding.severity} {finding.code}"))
        if finding.onset is not None and finding.onset != finding.timestep:
            markers.append(Marker(finding.onset, finding.severity, f"onset of {finding.code}", dotted=True))
    for event in diagnosis.events:
        if event.get("event") == "rollback":
            markers.append(Marker(int(event["timestep"]), "rollback", f"rollback to {int(event['restored_timestep']):,}"))
    if folder is not None:
        info = folder.read_config()[2]
        origin = info.get("recovered_from")
        if isinstance(origin, dict) and origin.get("checkpoint_timestep") is not None:
            what = f"recovered from step {int(origin['checkpoint_timestep']):,} under {origin.get('profile', 'safe')}"
            markers.append(Marker(int(origin["checkpoint_timestep"]), "resume", what))
    return _Run(diagnosis, rows, findings, sorted(markers, key=lambda m: m.step), folder, chain)


def _series(rows: Sequence[dict[str, float]], key: str, sign: float) -> tuple[list[float], list[float]]:
    points = [
        (row["timesteps"], sign * row[key]) for row in rows if key in row and "timesteps" in row and math.isfinite(row[key])
    ]
    return [p[0] for p in points], [p[1] for p in points]


def _figure(run: _Run) -> Any:
    go, make_subplots = _plotly()
    titles = [
        "training return (mean ± standard error; per agent for a multi-agent run)",
        "evaluations (greedy; team return for a multi-agent run)",
        *(title for title, _, _ in PANELS),
    ]
    fig = make_subplots(rows=len(titles), cols=1, shared_xaxes=True, vertical_spacing=0.025, subplot_titles=titles)
    steps, means = _series(run.rows, "ep_rew_mean", 1.0)
    sems = [row.get("ep_rew_sem", 0.0) for row in run.rows if "ep_rew_mean" in row and math.isfinite(row["ep_rew_mean"])]
    if steps:
        upper = [m + s for m, s in zip(means, sems, strict=False)]
        lower = [m - s for m, s in zip(means[::-1], sems[::-1], strict=False)]
        band = go.Scatter(x=steps + steps[::-1], y=upper + lower, fill="toself", line={"width": 0}, opacity=0.25)
        fig.add_trace(band.update(name="± standard error", hoverinfo="skip", showlegend=False), row=1, col=1)
        fig.add_trace(go.Scatter(x=steps, y=means, name="training return", line={"width": 1.5}), row=1, col=1)
    if run.folder is not None:
        eval_steps, eval_means = chain_evaluations(run.folder.path)
        if eval_steps:
            evaluations = go.Scatter(x=eval_steps, y=eval_means, mode="markers+lines", line={"dash": "dot"})
            fig.add_trace(evaluations.update(name="evaluation"), row=2, col=1)
    for index, (_, keys, log) in enumerate(PANELS, start=3):
        for label, key, sign in keys:
            xs, ys = _series(run.rows, key, sign)
            if xs:
                fig.add_trace(
                    go.Scatter(x=xs, y=ys, name=label, legendgroup=str(index), line={"width": 1.2}), row=index, col=1
                )
                if log and min(ys) > 0:
                    fig.update_yaxes(type="log", row=index, col=1)
    for marker in run.markers:
        fig.add_vline(
            x=marker.step,
            line={"color": COLORS.get(marker.kind, "#333"), "width": 1, "dash": "dot" if marker.dotted else "dash"},
        )
    fig.update_layout(
        height=230 * len(titles),
        margin={"l": 60, "r": 20, "t": 40, "b": 40},
        hovermode="x unified",
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom"},
        meta={"markers": [vars(m) for m in run.markers]},
    )
    fig.update_xaxes(title_text="environment steps (agent steps for a multi-agent run)", row=len(titles), col=1)
    return fig


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _findings_html(run: _Run) -> str:
    if not run.findings:
        return "<p>No findings.</p>"
    rows = [
        [
            f'<span class="{f.severity}">{f.severity}</span>',
            f"<code>{html.escape(f.code)}</code>",
            f"{f.onset:,}" if f.onset is not None else "",
            f"{f.timestep:,}",
            html.escape(f.message),
            html.escape(f.advice),
        ]
        for f in run.findings
    ]
    return _table(["severity", "finding", "onset (step)", "reported (step)", "what", "advice"], rows)


def _run_html(run: _Run) -> str:
    folder = run.folder
    if folder is None:
        return "<p>A plain log: no run folder beside it (no profile, evaluations or checkpoints to show).</p>"
    parts = []
    result = folder.read_result()
    if result is not None:
        shown = {k: v for k, v in result.items() if not isinstance(v, (dict, list))}
        parts.append("<h2>Result</h2>" + _table(["", ""], [[html.escape(k), html.escape(str(v))] for k, v in shown.items()]))
        if isinstance(result.get("recovery"), dict):
            recovery = result["recovery"]
            parts.append(f"<p>Recovery: {html.escape(json.dumps(recovery))}</p>")
    checkpoints = folder.checkpoints()
    if checkpoints:
        sizes = [sum(p.stat().st_size for p in (path,) if p.is_file()) / 2**20 for _, path in checkpoints]
        listed = ", ".join(f"{step:,}" for step, _ in checkpoints)
        parts.append(f"<h2>Checkpoints kept ({len(checkpoints)}, {sum(sizes):,.1f} MiB)</h2><p>{listed}</p>")
    if len(run.chain) > 1:
        items = "".join(f"<li><code>{html.escape(str(p))}</code></li>" for p in run.chain)
        parts.append(f"<h2>Resume chain</h2><ol>{items}</ol>")
    env_id, block, info = folder.read_config()
    video = next((folder.path / name for name in VIDEOS if (folder.path / name).is_file()), None)
    if video is not None:
        data = base64.b64encode(video.read_bytes()).decode()
        tag = (
            f'<video controls src="data:video/mp4;base64,{data}"></video>'
            if video.suffix == ".mp4"
            else f'<img alt="evaluation episodes" src="data:image/gif;base64,{data}">'
        )
        parts.append(f"<h2>Evaluation episodes</h2>{tag}")
    versions = info.get("versions", {})
    parts.append(
        "<h2>Versions</h2>"
        + _table(["package", "version"], [[html.escape(k), html.escape(str(v))] for k, v in versions.items()])
    )
    text = yaml.safe_dump({env_id: block}, sort_keys=False, default_flow_style=None)
    parts.append(f"<h2>Profile block (config.yml)</h2><pre>{html.escape(text)}</pre>")
    return "\n".join(parts)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1300px; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.5em; }
table { border-collapse: collapse; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 4px 8px; vertical-align: top; }
th { background: #f4f4f4; text-align: left; } pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.85em; }
.critical { color: #d62728; font-weight: bold; } .warning { color: #c85a00; font-weight: bold; } .info { color: #555; }
.verdict { font-size: 1.05em; padding: 0.6em 1em; background: #f4f6fa; border-left: 4px solid #4a6fa5; }
video, img { max-width: 100%; }
"""


def build_report(path: Path) -> str:
    """
    :param path: A run folder, a ``progress.csv`` or TensorBoard events (what ``sb3-safe diagnose`` reads)
    :return: The page, self-contained HTML
    :raises RunFolderError: When there is no log with PPO updates at ``path``
    """
    run = _read(path)
    figure = _figure(run).to_html(include_plotlyjs=True, full_html=False, div_id="health", config={"responsive": True})
    name = html.escape(str(run.diagnosis.run or run.diagnosis.source))
    command = run.diagnosis.recover_command
    advice = (
        f"<p>To continue under the safe profile from before the trouble: <code>{html.escape(command)}</code></p>"
        if command
        else ""
    )
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>sb3-safe report: {name}</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<h1>sb3-safe report: <code>{name}</code></h1>"
        f"<p class='verdict'>{html.escape(run.diagnosis.verdict)}</p>{advice}"
        f"<h2>Findings</h2>{_findings_html(run)}"
        f"<h2>Curves</h2><p>Drag to zoom (all charts follow), double-click to reset. Dashed lines: findings "
        f"(red critical, orange warning), dotted: their onsets, purple: rollbacks, green: resumes and recoveries.</p>"
        f"{figure}{_run_html(run)}</body></html>"
    )


def write_report(path: Path, out: Path | None = None) -> Path:
    """
    Write :func:`build_report`'s page, atomically (an existing page is replaced whole or not at all).

    :param path: What ``diagnose`` reads
    :param out: The ``.html`` file (default: ``report.html`` in the run folder, or beside the log)
    :return: Where it was written
    """
    page = build_report(path)
    if out is None:
        base = path if path.is_dir() else path.parent
        out = base / "report.html"
    try:
        atomic_write(out, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    except OSError as error:
        raise RunFolderError(
            f"cannot write the report to {str(out)!r}: {error.strerror or error}. Pass --out with a writable path"
        ) from None
    return out
