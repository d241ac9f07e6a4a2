"""
The ``sb3-safe`` command: argument parsing and reporting only; the work is in the Python API.

A user error (:class:`~sb3_safe.errors.ConfigError`) is printed as one line on stderr and
exits with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch as th

from sb3_safe.errors import ConfigError

__all__ = ["main"]

EXIT_USAGE = 2
#: Training stopped because it kept breaking after every rollback
EXIT_TRAINING_FAILED = 3


def _positive_int(text: str) -> int:
    try:
        value = int(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1 or value != float(text):
        raise argparse.ArgumentTypeError(f"{text!r} must be a whole number >= 1")
    return value


def _add_train(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "train",
        help="train one run into a new run folder",
        description="Train SafePPO (or PPO) with a profile block for one environment.",
    )
    p.add_argument("--env", default="Pendulum-v1", help="Gymnasium id, or module:EnvId-v0 (default: %(default)s)")
    p.add_argument("--profile", default="safe", help="profile name in hyperparams/ or a YAML path (default: %(default)s)")
    p.add_argument("--timesteps", type=_positive_int, help="total environment steps (default: the profile's n_timesteps)")
    p.add_argument("--seed", type=int, default=0, help="seed (default: %(default)s)")
    p.add_argument("--n-envs", type=_positive_int, help="parallel environments (default: the profile's n_envs)")
    p.add_argument("--vec-env", choices=("dummy", "subproc"), default="dummy", help="VecEnv class (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        help="torch CPU threads; 1 is fastest for MLP policies (default: %(default)s)",
    )
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a profile key")
    p.add_argument("--checkpoint", type=Path, help="resume from this model .zip (its VecNormalize statistics beside it)")
    p.add_argument("--runs-root", type=Path, default=Path("runs"), help="parent of run folders (default: %(default)s)")
    p.add_argument("--run-dir", type=Path, help="exact run folder (must not exist)")
    p.add_argument("--eval-freq", type=_positive_int, help="evaluate every N environment steps (default: 20 per run)")
    p.add_argument("--eval-episodes", type=_positive_int, default=5, help="episodes per evaluation (default: %(default)s)")
    p.add_argument("--save-freq", type=_positive_int, help="checkpoint every N environment steps (default: 10 per run)")


def _add_eval(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser("eval", help="evaluate a run folder or model", description="Mean and std of episode returns.")
    p.add_argument("target", type=Path, help="run folder (uses model.zip) or a model .zip inside one")
    p.add_argument("--episodes", type=_positive_int, default=10, help="episodes (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the evaluation env (default: %(default)s)")
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of taking the mode")
    p.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")


def _add_diagnose(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "diagnose",
        help="find what went wrong in a run's logs",
        description="Run the health detectors over an sb3-safe run folder, SB3's progress.csv, or TensorBoard events.",
    )
    p.add_argument("path", type=Path, help="run folder, progress.csv, TensorBoard event file or folder")
    p.add_argument("--json", action="store_true", help='print {"findings": [...]} as JSON instead of the report')
    p.add_argument("--plot", type=Path, metavar="OUT.png", help="draw the key metrics with the findings marked")
    p.add_argument("--target-kl", type=float, help="the run's target_kl, for kl_spike (default: from config.yml)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sb3-safe", description="PPO training that does not collapse.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_train(subparsers)
    _add_eval(subparsers)
    _add_diagnose(subparsers)
    return parser


def _train(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from sb3_safe.config import load_config, parse_overrides
    from sb3_safe.envs import check_env_id
    from sb3_safe.training import train

    th.set_num_threads(args.threads)
    check_env_id(args.env)
    overrides = parse_overrides(args.overrides)
    if args.timesteps is not None:
        overrides["n_timesteps"] = args.timesteps
    if args.n_envs is not None:
        overrides["n_envs"] = args.n_envs
    config = load_config(args.profile, args.env, overrides)
    result = train(
        config,
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
    )
    if result.stopped_early and result.rollback is not None:
        print(f"sb3-safe: {result.rollback.summary}. Run folder: {result.run_dir}", file=sys.stderr)
        return EXIT_TRAINING_FAILED
    print(
        f"Done: {result.num_timesteps:,} steps. Eval return {result.eval_mean:.1f} +/- {result.eval_std:.1f}. "
        f"Run folder: {result.run_dir}"
    )
    return 0


def _eval(args: argparse.Namespace) -> int:
    from sb3_safe.training import evaluate

    result = evaluate(
        args.target, episodes=args.episodes, seed=args.seed, deterministic=not args.stochastic, device=args.device
    )
    print(f"{result.model_path}: mean return {result.mean:.2f} +/- {result.std:.2f} over {result.episodes} episodes")
    return 0


def _diagnose(args: argparse.Namespace) -> int:
    from sb3_safe.diagnose import diagnose

    diagnosis = diagnose(args.path, target_kl=args.target_kl)
    if args.plot is not None:
        from sb3_safe.plots import plot_health

        title = f"{diagnosis.source.parent.name}/{diagnosis.source.name}\n{diagnosis.verdict}"
        plot_health(diagnosis.history, diagnosis.worst_first, args.plot, title)
    print(diagnosis.as_json() if args.json else diagnosis.report())
    return 0


def _one_line_warning(message: Warning | str, category: type[Warning], *args: object, **kwargs: object) -> None:
    print(f"sb3-safe: {category.__name__}: {message}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """
    :param argv: Arguments without the program name (default: ``sys.argv[1:]``)
    :return: Exit status: 0 success, 2 user error
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            if args.command == "train":
                return _train(args, argv)
            if args.command == "diagnose":
                return _diagnose(args)
            return _eval(args)
    except ConfigError as error:
        print(f"sb3-safe: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("sb3-safe: interrupted", file=sys.stderr)
        return 130
