"""``sb3-safe report``: the page, opened from disk in a real browser (Chromium, driven by Playwright)."""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from sb3_safe.cli import main
from sb3_safe.diagnose import diagnose
from sb3_safe.report import PANELS, _read, build_report, write_report
from tests.extras import require
from tests.test_recover import write_run

CHROMIUM = os.environ.get("SB3_SAFE_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
# As the machine's probe starts it: no sandbox (root), no GPU, nothing that reaches for the network.
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = require("playwright.sync_api", "dev")
    if not Path(CHROMIUM).is_file():
        raise FileNotFoundError(
            f"no Chromium at {CHROMIUM}: the report's tests open it in a real browser. Install Debian's chromium "
            "(make test does: .ci/ensure-chromium) or set SB3_SAFE_CHROMIUM"
        )
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()


def open_page(browser: Any, page_file: Path) -> tuple[Any, list[str]]:
    """The page loaded from a file:// URL with its charts drawn, and every console error it raised."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(page_file.resolve().as_uri(), wait_until="load")
    page.wait_for_function("document.getElementById('health') && document.getElementById('health').data")
    return page, errors


def charts(page: Any) -> dict[str, int]:
    """Points drawn per chart (its y axis: y, y2, ...)."""
    return dict(
        page.evaluate(
            """() => {
            const counts = {};
            for (const trace of document.getElementById('health').data) {
                const axis = trace.yaxis || 'y';
                counts[axis] = (counts[axis] || 0) + (trace.x ? trace.x.length : 0);
            }
            return counts;
        }"""
        )
    )


def marker_steps(page: Any) -> list[float]:
    return list(page.evaluate("() => document.getElementById('health').layout.shapes.map(s => s.x0)"))


def full_run(folder: Path) -> Path:
    """A run folder with every signal logged, evaluations, and a KL spike at update 31 (a warning)."""
    run = write_run(folder, [-1200.0 + 20 * i for i in range(40)], [0.004] * 40, kl_spike_at=30)
    with open(run / "progress.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    extra = {
        "train/actor_grad_norm": 0.3,
        "train/critic_grad_norm": 2.0,
        "train/std": 0.8,
        "train/entropy_loss": -1.2,
        "train/learning_rate": 3e-4,
        "train/critic_learning_rate": 1e-3,
    }
    with open(run / "progress.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, [*rows[0], *extra])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, **extra})
    import numpy as np

    (run / "eval").mkdir()
    np.savez(run / "eval" / "evaluations.npz", timesteps=np.array([10_000, 20_000]), results=np.array([[-900.0], [-500.0]]))
    return run


def test_the_page_loads_from_disk_without_errors_every_chart_has_data_and_findings_sit_at_their_steps(
    tmp_path: Path, browser: Any
):
    run = full_run(tmp_path / "run")
    (finding,) = diagnose(run).findings
    assert finding.code == "kl_spike" and finding.timestep == 31_000
    page, errors = open_page(browser, write_report(run))
    assert errors == []
    counts = charts(page)
    axes = ["y", *(f"y{i}" for i in range(2, len(PANELS) + 3))]  # the return, the evaluations, then PANELS
    assert sorted(counts) == sorted(axes) and all(counts[axis] > 0 for axis in axes), counts
    assert 31_000 in marker_steps(page)
    text = page.inner_text("body")
    assert "kl_spike" in text and "Findings" in text and "Profile block" in text and "Versions" in text
    page.close()


def test_a_run_that_crashed_on_a_nan_renders(tmp_path: Path, browser: Any):
    run = write_run(tmp_path / "nan", [-1200.0 + 30 * i for i in range(20)], [0.004] * 19 + [float("nan")])
    (run / "result.json").write_text(json.dumps({"crashed": True, "error": "ValueError: NaN in the action distribution"}))
    findings = diagnose(run).findings
    assert [f.code for f in findings] == ["non_finite"]
    page, errors = open_page(browser, write_report(run))
    assert errors == [] and findings[0].timestep in marker_steps(page)
    assert "ValueError: NaN in the action distribution" in page.inner_text("body")
    page.close()


def test_a_log_of_a_million_updates_is_thinned_but_keeps_its_findings(tmp_path: Path, browser: Any):
    """A plain SB3 progress.csv of 10^6 updates, a KL spike near the end: the page stays small and shows the spike."""
    log = tmp_path / "sb3" / "progress.csv"
    log.parent.mkdir()
    with open(log, "w") as f:
        f.write("time/total_timesteps,train/approx_kl,train/clip_fraction,train/value_loss\n")
        for i in range(1_000_000):
            kl, clipped = ("0.5", "0.6") if i == 999_990 else ("0.01", "0.1")
            f.write(f"{8 * (i + 1)},{kl},{clipped},0.3\n")
    out = write_report(log, tmp_path / "big.html")
    assert out.stat().st_size < 12 * 2**20  # Plotly's script is ~4.7 MB of it
    page, errors = open_page(browser, out)
    assert errors == [] and 8 * 999_991 in marker_steps(page)
    assert charts(page)["y5"] <= 10_000  # approx KL: thinned from 10^6 points
    page.close()


def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1 and not (empty / "report.html").exists()
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "progress.csv").write_text("time/total_timesteps,train/approx_kl\n8,0.0")  # cut mid-line: still one update
    assert main(["report", str(truncated)]) == 0 and (truncated / "report.html").is_file()
    (truncated / "progress.csv").write_text("time/total_timesteps,train/appr")  # cut in the header: no update
    assert main(["report", str(truncated), "--out", str(tmp_path / "b.html")]) == 2
    assert not (tmp_path / "b.html").exists()
    capsys.readouterr()
    run = full_run(tmp_path / "run")
    assert main(["report", str(run), "--out", str(tmp_path / "no" / "such" / "folder" / "r.html")]) == 2
    err = capsys.readouterr().err
    assert "cannot write the report" in err and len(err.strip().splitlines()) == 1
    assert "<!DOCTYPE html>" in build_report(run)


def test_a_run_continued_twice_shows_every_part_in_order(tmp_path: Path):
    """Three parts of one run (two resumes): every part's updates, in step order, and a marker at each resume."""
    parts = [tmp_path / "run.part1", tmp_path / "run.part2", tmp_path / "run"]
    for index, part in enumerate(parts):
        write_run(part, [-1200.0 + 20 * i for i in range(10)], [0.004] * 10)
        with open(part / "progress.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        for row in rows:  # part k covers steps 10,000 k + 1,000 ... 10,000 k + 10,000
            row["time/total_timesteps"] = str(int(row["time/total_timesteps"]) + 10_000 * index)
        with open(part / "progress.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        if index:
            checkpoint = parts[index - 1] / "checkpoints" / f"model_{10_000 * index}_steps.zip"
            checkpoint.write_bytes(b"zip")
            config = yaml.safe_load((part / "config.yml").read_text())
            config["run_info"]["resumed_from"] = str(checkpoint)
            (part / "config.yml").write_text(yaml.safe_dump(config))

    run = _read(parts[-1])

    steps = [row["timesteps"] for row in run.rows]
    assert steps == [1000.0 * (i + 1) for i in range(30)]
    resumes = sorted((m.step, m.label) for m in run.markers if m.kind == "resume")
    assert resumes == [(11_000, "resumed from run.part1"), (21_000, "resumed from run.part2")]
