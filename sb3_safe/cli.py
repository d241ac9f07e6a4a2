"""
The ``sb3-safe`` command: argument parsing and reporting only; the work is in the Python API.

A user error (:class:`~sb3_safe.errors.UserError`: a bad profile, option, checkpoint, run
folder or storage URL) is printed as one line on stderr and exits with status 2, without a
traceback, before any run folder is created.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import torch as th

from sb3_safe.errors import RunFolderError, UserError
from sb3_safe.faults import STRESSES

if TYPE_CHECKING:
    from sb3_safe.training import TrainResult

__all__ = ["main"]

EXIT_USAGE = 2
#: Training stopped because it kept breaking after every rollback
EXIT_TRAINING_FAILED = 3


class _Parser(argparse.ArgumentParser):
    """argparse with the project's error form: one line on stderr, exit status 2, no usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"sb3-safe: error: {message}. See: {self.prog} --help\n")


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _positive_int(text: str) -> int:
    """A count: ``1e5`` and ``100000`` are accepted; ``inf``, ``nan``, ``2.5`` and ``0`` are not."""
    value = _finite(text)
    if value < 1 or not value.is_integer():
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number >= 1")
    return int(value)


def _non_negative_int(text: str) -> int:
    """A count that may be zero (zero turns the thing off)."""
    value = _finite(text)
    if value < 0 or not value.is_integer():
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number >= 0")
    return int(value)


def _names(text: str) -> tuple[str, ...]:
    """A comma-separated list (stress names are checked by :class:`sb3_safe.tuning.ObjectiveSettings`)."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _positive_float(text: str) -> float:
    """A duration or a level: finite and above zero."""
    value = _finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number > 0")
    return value


def _non_negative_float(text: str) -> float:
    """A share of a resource: finite and at least zero."""
    value = _finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a number >= 0")
    return value


def _add_train(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "train",
        help="train one run into a new run folder",
        description="Train SafePPO (or PPO) with a profile block for one environment.",
    )
    p.add_argument("--env", default="Pendulum-v1", help="Gymnasium id, or module:EnvId-v0 (default: %(default)s)")
    p.add_argument("--profile", default="safe", help="profile name (safe, baseline) or a YAML path (default: %(default)s)")
    p.add_argument("--timesteps", type=_positive_int, help="total environment steps (default: the profile's n_timesteps)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    p.add_argument("--n-envs", type=_positive_int, help="parallel environments (default: the profile's n_envs)")
    p.add_argument(
        "--vec-env",
        choices=("dummy", "subproc", "gymnasium", "gymnasium-async", "envpool"),
        default="dummy",
        help="how copies are stepped: SB3's DummyVecEnv or SubprocVecEnv, Gymnasium's vector env, envpool "
        "(default: %(default)s)",
    )
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="torch CPU threads; 1 is fastest for MLP policies (default: %(default)s)",
    )
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a profile key")
    p.add_argument("--checkpoint", type=Path, help="resume from this model .zip (its VecNormalize statistics beside it)")
    p.add_argument(
        "--dry-run", action="store_true", help="print the resolved profile block and which blocks made it; train nothing"
    )
    p.add_argument("--runs-root", type=Path, default=Path("runs"), help="parent of run folders (default: %(default)s)")
    p.add_argument("--run-dir", type=Path, help="exact run folder (must not exist)")
    p.add_argument(
        "--eval-freq",
        type=_positive_int,
        help="evaluate every N environment steps (default: 20 per run, at most one per rollout)",
    )
    p.add_argument("--eval-episodes", type=_positive_int, default=5, help="episodes per evaluation (default: %(default)s)")
    p.add_argument(
        "--save-freq",
        type=_positive_int,
        help="checkpoint every N environment steps (default: 10 per run, at most one per rollout)",
    )
    p.add_argument(
        "--keep-checkpoints",
        type=_positive_int,
        metavar="K",
        help="keep the K newest checkpoints, the last healthy one and older ones spaced out over the run "
        "(default: the profile's keep_checkpoints)",
    )


def _add_eval(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("eval", help="evaluate a run folder or model", description="Mean and std of episode returns.")
    p.add_argument("target", type=Path, help="run folder (uses model.zip) or a model .zip inside one")
    p.add_argument("--episodes", type=_positive_int, default=10, help="episodes (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the evaluation env (default: %(default)s)")
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of taking the mode")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    p.add_argument(
        "--video",
        type=Path,
        metavar="PATH",
        help="also record --video-episodes greedy episodes to PATH (.mp4 or .gif; in the run folder as video.mp4, "
        "`sb3-safe report` shows it)",
    )
    p.add_argument("--video-episodes", type=_positive_int, default=3, help="episodes in the video (default: %(default)s)")


def _add_diagnose(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "diagnose",
        help="find what went wrong in a run's logs",
        description="Run the health detectors over an sb3-safe run folder, SB3's progress.csv, or TensorBoard events.",
    )
    p.add_argument("path", type=Path, help="run folder, progress.csv, TensorBoard event file or folder")
    p.add_argument("--json", action="store_true", help='print {"findings": [...]} as JSON instead of the report')
    p.add_argument("--plot", type=Path, metavar="OUT.png", help="draw the key metrics with the findings marked")
    p.add_argument("--target-kl", type=_positive_float, help="the run's target_kl, for kl_spike (default: from config.yml)")


def _add_report(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "report",
        help="a run's health on one HTML page",
        description="Draw a run's curves and health signals on one shared step axis with its findings, rollbacks and "
        "resumes marked, with its findings, evaluation, checkpoints, resume chain and profile: one self-contained HTML "
        "file that opens from disk (sb3-safe run folders, SB3's progress.csv, TensorBoard events).",
    )
    p.add_argument("path", type=Path, help="run folder, progress.csv, TensorBoard event file or folder")
    p.add_argument(
        "--out", type=Path, metavar="REPORT.html", help="where to write it (default: report.html in the run folder)"
    )


def _add_recover(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "recover",
        help="continue a failed run under the safe profile from before the trouble began",
        description="Find the trouble that ended or spoiled a run (critical findings no rollback dealt with, a crash), "
        "pick the newest checkpoint from before it began, and continue under a profile (default: safe) to the run's "
        "budget in a new run folder beside it. A healthy run is left alone unless --from is given.",
    )
    p.add_argument("run", type=Path, help="run folder (sb3-safe's; a plain SB3 / rl-zoo one with --env and --timesteps)")
    p.add_argument("--profile", default="safe", help="profile to continue with (default: %(default)s)")
    p.add_argument("--env", help="Gymnasium id (default: the run's, from its config.yml)")
    p.add_argument("--timesteps", type=_positive_int, help="total steps (default: the run's n_timesteps)")
    p.add_argument(
        "--from",
        dest="from_step",
        type=_positive_int,
        metavar="STEP",
        help="continue from the newest checkpoint at or before STEP, trouble or not",
    )
    p.add_argument("--seed", type=int, help="seed (default: the run's)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a profile key")
    p.add_argument("--threads", type=_positive_int, default=1, help="torch CPU threads (default: %(default)s)")
    p.add_argument("--eval-freq", type=_positive_int, help="evaluate every N steps (default: 20 per run)")
    p.add_argument("--save-freq", type=_positive_int, help="checkpoint every N steps (default: 10 per run)")
    p.add_argument("--eval-episodes", type=_positive_int, default=5, help="episodes per evaluation (default: %(default)s)")
    p.add_argument(
        "--compare-episodes",
        type=_non_negative_int,
        default=20,
        help="episodes on which the recovered policy and the checkpoint it started from are compared after training; "
        "the better one ends as model.zip (0: no comparison; default: %(default)s)",
    )
    p.add_argument("--dry-run", action="store_true", help="say what would be done, train nothing")


def _add_tune(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "tune",
        help="search hyperparameters with Optuna",
        description="Tune a profile block with Optuna: several seeds per trial, a stability-aware objective, worker processes "
        "on one SQLite, PostgreSQL, MySQL or journal study.",
    )
    p.add_argument("--env", default="CartPole-v1", help="Gymnasium id (default: %(default)s)")
    p.add_argument("--profile", default="safe", help="profile whose block the searched values go into (default: %(default)s)")
    p.add_argument("--trials", type=_positive_int, default=8, help="total trials in the study (default: %(default)s)")
    p.add_argument("--timeout", type=_positive_float, help="stop starting trials after this many seconds")
    p.add_argument("--timesteps", type=_positive_int, default=20_000, help="steps per seed and trial (default: %(default)s)")
    p.add_argument("--seeds-per-trial", type=_positive_int, default=2, help="seeds per trial (default: %(default)s)")
    p.add_argument("--n-evaluations", type=_positive_int, default=5, help="evaluations per seed (default: %(default)s)")
    p.add_argument("--eval-episodes", type=_positive_int, default=5, help="episodes per evaluation (default: %(default)s)")
    p.add_argument("--trial-timeout", type=_positive_float, help="prune a trial that runs longer than this many seconds")
    p.add_argument("--workers", type=_positive_int, default=1, help="worker processes (default: %(default)s)")
    _add_ray_options(p, what="--workers tuning workers as Ray tasks, all joining the --storage study (PostgreSQL or MySQL)")
    p.add_argument("--storage", help="Optuna storage URL or .log journal file (default: sqlite in --out)")
    p.add_argument("--study-name", help="study name (default: <env>-<profile>)")
    p.add_argument("--sampler", choices=("tpe", "random", "cmaes"), default="tpe", help="(default: %(default)s)")
    p.add_argument("--pruner", choices=("median", "halving", "none"), default="median", help="(default: %(default)s)")
    p.add_argument(
        "--space",
        type=Path,
        help="search-space YAML (default: hyperparams/spaces/safe_ppo.yml; safe_ppo_at_scale.yml for vmas: ids)",
    )
    p.add_argument("--out", type=Path, help="output folder (default: tune-results/<study name>)")
    p.add_argument("--seed", type=int, default=0, help="first seed of each trial (default: %(default)s)")
    p.add_argument(
        "--stress",
        type=_names,
        default=(),
        metavar="NAMES",
        help="also train each seed under these faults and score the worst condition, e.g. outliers,nan-obs "
        "(names: " + ", ".join(STRESSES) + ")",
    )
    p.add_argument(
        "--stress-score",
        choices=("worst", "mean"),
        default="worst",
        help="how the clean and stressed scores combine (default: %(default)s)",
    )
    p.add_argument(
        "--heartbeat", type=_positive_int, default=30, help="seconds between trial heartbeats (default: %(default)s)"
    )
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a profile key")


def _add_ray_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--ray",
        nargs="?",
        const="local",
        metavar="ADDRESS",
        help=f"run on a Ray cluster: {what}. ADDRESS: auto, HOST:PORT or ray://HOST:PORT; none starts Ray here "
        "(pip install 'sb3-safe[cluster]')",
    )


def _add_bench(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "bench",
        help="compare profiles across environments, seeds and fault injections",
        description="Run a benchmark suite (resumable), then write results.csv, summary.md and learning-curve PNGs.",
    )
    p.add_argument("suite", type=Path, help="suite YAML, e.g. benchmarks/suites/quick.yml")
    p.add_argument("--out", type=Path, help="output folder (default: bench-results/<suite name>)")
    p.add_argument("--workers", type=_positive_int, default=2, help="worker processes (default: %(default)s)")
    _add_ray_options(p, what="each run of the suite is one Ray task (one CPU)")
    p.add_argument("--ray-shared-out", action="store_true", help="--out is on a filesystem every node sees: write there")
    p.add_argument("--ray-gpus", type=_non_negative_float, default=0.0, help="GPUs per run on Ray (default: %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sb3-safe", description="PPO training that does not collapse.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_train(subparsers)
    _add_eval(subparsers)
    _add_diagnose(subparsers)
    _add_report(subparsers)
    _add_recover(subparsers)
    _add_tune(subparsers)
    _add_bench(subparsers)
    return parser


def _train(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from sb3_safe.config import load_config, parse_overrides
    from sb3_safe.envs import check_env_id
    from sb3_safe.training import TrainSettings, train

    th.set_num_threads(args.threads)
    check_env_id(args.env)
    overrides = parse_overrides(args.overrides)
    explicit = set(overrides)
    if args.timesteps is not None:
        overrides["n_timesteps"] = args.timesteps
    if args.n_envs is not None:
        overrides["n_envs"] = args.n_envs
    if args.keep_checkpoints is not None:
        overrides["keep_checkpoints"] = args.keep_checkpoints
    config = load_config(args.profile, args.env, overrides)
    if args.dry_run:
        import yaml

        print(f"# {config.source}: blocks {', '.join(config.blocks)} (later ones win); every default filled in")
        print(yaml.safe_dump({config.env_id: config.effective_values()}, sort_keys=False, default_flow_style=None), end="")
        return 0
    settings = TrainSettings(
        seed=args.seed,
        runs_root=args.runs_root,
        run_dir=args.run_dir,
        vec_env=args.vec_env,
        device=args.device,
        checkpoint=args.checkpoint,
        eval_freq=args.eval_freq,
        save_freq=args.save_freq,
        n_eval_episodes=args.eval_episodes,
        argv=["sb3-safe", *argv],
        explicit=frozenset(explicit),
    )
    result = train(config, settings)
    return _finished(result)


def _finished(result: TrainResult) -> int:
    """Say how a training run ended: exit 0, or EXIT_TRAINING_FAILED when rollbacks ran out."""
    if result.stopped_early and result.rollback is not None:
        print(f"sb3-safe: {result.rollback.summary}. Run folder: {result.run_dir}", file=sys.stderr)
        return EXIT_TRAINING_FAILED
    print(
        f"Done: {result.num_timesteps:,} steps. Eval return {result.eval_mean:.1f} +/- {result.eval_std:.1f}. "
        f"Run folder: {result.run_dir}"
    )
    return 0


def _eval(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from sb3_safe.evaluation import evaluate

    if args.video is not None:  # a missing encoder or a bad name is one line before any episode is played
        from sb3_safe.video import _encoder

        _encoder(args.video)

    result = evaluate(
        args.target, episodes=args.episodes, seed=args.seed, deterministic=not args.stochastic, device=args.device
    )
    print(f"{result.model_path}: mean return {result.mean:.2f} +/- {result.std:.2f} over {result.episodes} episodes")
    if args.video is not None:
        from sb3_safe.video import record_video

        frames = record_video(args.target, args.video, episodes=args.video_episodes, seed=args.seed, device=args.device)
        print(f"Video: {args.video} ({frames} frames, {args.video_episodes} episode{'s' if args.video_episodes > 1 else ''})")
    return 0


def _diagnose(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from sb3_safe.diagnose import diagnose

    diagnosis = diagnose(args.path, target_kl=args.target_kl)
    if args.plot is not None:
        from sb3_safe.plots import plot_health

        title = f"{diagnosis.source.parent.name}/{diagnosis.source.name}\n{diagnosis.verdict}"
        plot_health(diagnosis.history, diagnosis.worst_first, args.plot, title)
    print(diagnosis.as_json() if args.json else diagnosis.report())
    return 0


def _report(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from sb3_safe.report import write_report

    out = write_report(args.path, args.out)
    print(f"Report: {out} (open it in a browser: file://{out.resolve()})", flush=True)
    return 0


def _recover(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from sb3_safe.config import parse_overrides
    from sb3_safe.envs import check_env_id
    from sb3_safe.recover import RecoverSettings, recover

    th.set_num_threads(args.threads)
    if args.env is not None:
        check_env_id(args.env)
    settings = RecoverSettings(
        profile=args.profile,
        env_id=args.env,
        timesteps=args.timesteps,
        overrides=parse_overrides(args.overrides),
        from_step=args.from_step,
        seed=args.seed,
        argv=["sb3-safe", *argv],
        compare_episodes=args.compare_episodes,
        eval_freq=args.eval_freq,
        save_freq=args.save_freq,
        n_eval_episodes=args.eval_episodes,
    )
    recovery = recover(args.run, settings, dry_run=args.dry_run)
    if not recovery.needed:
        raise RunFolderError(recovery.reason)
    result = recovery.result
    if result is None:
        print(f"sb3-safe recover: {recovery.reason}", flush=True)
        return 0
    return _finished(result)


def _tune(args: argparse.Namespace, argv: Sequence[str]) -> int:
    import optuna

    from sb3_safe.config import load_config, parse_overrides
    from sb3_safe.envs import check_env_id
    from sb3_safe.tuning import ObjectiveSettings, TuneSettings, load_space, run_tuning
    from sb3_safe.tuning.report import write_report

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    check_env_id(args.env)
    objective = ObjectiveSettings(
        timesteps=args.timesteps,
        seeds_per_trial=args.seeds_per_trial,
        n_evaluations=args.n_evaluations,
        eval_episodes=args.eval_episodes,
        trial_timeout=args.trial_timeout,
        seed=args.seed,
        stresses=args.stress,
        stress_score=args.stress_score,
    )
    name = args.study_name or f"{args.env.split(':')[-1]}-{Path(args.profile).stem}"
    settings = TuneSettings(
        env_id=args.env,
        profile=args.profile,
        out=args.out or Path("tune-results") / name,
        trials=args.trials,
        objective=objective,
        storage=args.storage,
        study_name=name,
        sampler=args.sampler,
        pruner=args.pruner,
        space=args.space,
        workers=args.workers,
        timeout=args.timeout,
        overrides=parse_overrides(args.overrides),
        heartbeat_interval=args.heartbeat,
        ray=args.ray,
    )
    study = run_tuning(settings)
    base = load_config(args.profile, args.env, settings.overrides)
    for line in write_report(study, settings, load_space(args.space, base.algo, base.env_id)):
        print(line)
    return 0


def _bench(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from sb3_safe.bench import RaySettings, load_suite, markdown_table, run_suite, summarize, write_outputs

    suite = load_suite(args.suite)
    out = args.out or Path("bench-results") / suite.name
    ray = None if args.ray is None else RaySettings(args.ray, args.ray_shared_out, args.ray_gpus)
    rows = run_suite(suite, out, args.workers, ray)
    plots = write_outputs(rows, out, suite)
    print(markdown_table(summarize(rows)))
    print(f"Results: {out / 'results.csv'}, {out / 'summary.md'}; curves: {', '.join(str(p) for p in plots)}")
    return 0


#: Each subcommand's handler: ``handler(parsed arguments, the command line) -> exit status``.
COMMANDS: dict[str, Callable[[argparse.Namespace, Sequence[str]], int]] = {
    "train": _train,
    "eval": _eval,
    "diagnose": _diagnose,
    "report": _report,
    "recover": _recover,
    "tune": _tune,
    "bench": _bench,
}


def _one_line_warning(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
    print(f"sb3-safe: {category.__name__}: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """
    :param argv: Arguments without the program name (default: ``sys.argv[1:]``)
    :return: Exit status: 0 success, 2 user error, 3 training stopped after running out of rollbacks
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help, or a bad argument (one line already printed): a status, not an exception
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            return COMMANDS[args.command](args, argv)
    except UserError as error:
        print(f"sb3-safe: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("sb3-safe: interrupted", file=sys.stderr)
        return 130
