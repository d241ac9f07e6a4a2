"""
Throughput at scale: batched simulators with hundreds of environment copies (``make bench-scale``).

Multi-agent (agent steps per second against the number of copies, 1 torch thread):

- ``sim``: VMAS alone, random actions, every copy stepped in one call (the limit);
- ``rollout``: SafePPO's rollout phase on :class:`~sb3_safe.multiagent.VmasVecEnv` (simulator, policy
  forward, SB3's buffer), the safe profile's MAPPO block;
- ``train``: whole training, rollout and update (the safe block's epochs, KL stop included);
- ``pettingzoo``: today's path, MPE ``simple_spread`` through :class:`~sb3_safe.multiagent.PettingZooVecEnv`
  (one copy stepped at a time), against VMAS's ``simple_spread`` port through the batched adapter;
- the peer, BenchMARL's MAPPO (TorchRL) on ``transport`` with the same frames per batch, epochs and
  minibatch size (``--peer-python``: run in a virtual environment of its own, ``benchmarks/peer_benchmarl.py``).

Every configuration trains with about 100,000 agent samples per update (the seed's shape:
``n_steps = 100,000 / (copies x agents)``), two updates, the second timed. Where the time of an
update goes (simulator, policy forward, buffer, update) is read off the timed phases, and the update's
sample-epochs per second are set against the limit of the same networks trained alone (64x64 actor
and critic, minibatch 4,000, Adam, gradient clipping) on 1 and 2 threads.

Single-agent (environment steps per second, random actions): Pendulum-v1 and HalfCheetah-v5 with
SB3's DummyVecEnv and SubprocVecEnv, Gymnasium's async vector env and envpool; and whether the
Gymnasium adapters give the same returns as DummyVecEnv for the same seeds and actions.

Usage: ``python benchmarks/scale.py [--copies 1 16 100 500 2000] [--out bench-results/scale] [--quick]``.
Results: ``<out>/scale.json``, ``<out>/scale.md`` and ``<out>/scale.png``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch as th

SAMPLES_PER_UPDATE = 100_000


class Timer:
    """Seconds spent in wrapped callables, by name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

        return timed

    def reset(self) -> None:
        self.seconds = {}


def vmas_sim(scenario: str, copies: int, steps: int) -> float:
    """Agent steps per second of VMAS alone, random actions drawn once."""
    import vmas

    env = vmas.make_env(scenario, num_envs=copies, device="cpu", seed=0, max_steps=100)
    env.reset()
    actions = [env.get_random_action(agent) for agent in env.agents]
    env.step(actions)
    start = time.perf_counter()
    for _ in range(steps):
        env.step(actions)
    return float(steps * copies * env.n_agents / (time.perf_counter() - start))


def mappo_throughput(env_id: str, copies: int, all_epochs: bool = False) -> dict[str, float]:
    """
    Rollout and whole-training agent steps/s of the safe profile's MAPPO block, and where an update's time goes.

    :param all_epochs: Every one of the 10 epochs (no KL stop), as BenchMARL runs them; otherwise the safe
        block's epoch stop ends most updates after a few (3.4 on average over the 100M-step run)
    """
    from sb3_safe.config import load_config
    from sb3_safe.envs import make_env

    probe = load_config("safe", "vmas:transport")
    overrides: dict[str, Any] = {k: probe.values[k] for k in ("centralized_critic", "agent_id", "batch_size", "n_epochs")}
    overrides.update(n_envs=copies, normalize=False, health=False, rollback=False)
    if all_epochs:
        overrides["target_kl"] = None
    config = load_config("safe", env_id, overrides)
    venv = make_env(config, seed=0)
    agents = venv.num_envs // copies
    n_steps = max(SAMPLES_PER_UPDATE // venv.num_envs, 1)
    config = config.with_overrides({"n_steps": n_steps, "batch_size": min(4000, n_steps * venv.num_envs)})
    model = config.algorithm_class(config.policy, venv, seed=0, **config.algorithm_kwargs())
    timer = Timer()
    model.collect_rollouts = timer.wrap("rollout", model.collect_rollouts)  # type: ignore[method-assign]
    model.train = timer.wrap("update", model.train)  # type: ignore[method-assign]
    venv.step_wait = timer.wrap("simulator", venv.step_wait)  # type: ignore[method-assign]
    model.policy.forward = timer.wrap("policy", model.policy.forward)  # type: ignore[method-assign]
    per_update = n_steps * venv.num_envs
    if copies >= 16:  # a warm-up update (with fewer copies one update is minutes of stepping; its warm-up is noise)
        model.learn(per_update)
    buffer = model.rollout_buffer
    buffer.add = timer.wrap("buffer", buffer.add)  # type: ignore[method-assign]
    buffer.compute_returns_and_advantage = timer.wrap("buffer", buffer.compute_returns_and_advantage)  # type: ignore[method-assign]
    timer.reset()
    start = time.perf_counter()
    model.learn(per_update, reset_num_timesteps=copies < 16)
    total = time.perf_counter() - start
    s = timer.seconds
    record = getattr(model, "last_update", None)
    epochs = record.epochs_run if record is not None else config.get("n_epochs")
    venv.close()
    return {
        "copies": copies,
        "agents": agents,
        "samples": per_update,
        "rollout": per_update / s["rollout"],
        "train": per_update / total,
        "seconds_simulator": s.get("simulator", 0.0),
        "seconds_policy": s.get("policy", 0.0),
        "seconds_buffer": s.get("buffer", 0.0),
        "seconds_rollout_other": s["rollout"] - s.get("simulator", 0.0) - s.get("policy", 0.0) - s.get("buffer", 0.0),
        "seconds_update": s["update"],
        "epochs": float(epochs),
        "update_sample_epochs_per_s": per_update * float(epochs) / s["update"],
    }


def benchmarl_peer(python: Path, copies: int, updates: int) -> dict[str, float]:
    """BenchMARL's MAPPO at the same shape, in its own virtual environment (``benchmarks/peer_benchmarl.py``)."""
    script = Path(__file__).resolve().parent / "peer_benchmarl.py"
    done = subprocess.run(
        [str(python), str(script), "--copies", str(copies), "--updates", str(updates)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def update_limit(threads: int, samples: int = 100_000, epochs: int = 3) -> float:
    """Sample-epochs per second of a MAPPO-sized actor and critic trained alone (no environment, no SB3)."""
    th.set_num_threads(threads)
    th.manual_seed(0)
    actor = th.nn.Sequential(th.nn.Linear(15, 64), th.nn.Tanh(), th.nn.Linear(64, 64), th.nn.Tanh(), th.nn.Linear(64, 2))
    critic = th.nn.Sequential(th.nn.Linear(48, 64), th.nn.Tanh(), th.nn.Linear(64, 64), th.nn.Tanh(), th.nn.Linear(64, 1))
    params = [*actor.parameters(), *critic.parameters()]
    optimizer = th.optim.Adam(params, lr=3e-4, eps=1e-5)
    obs, state = th.randn(samples, 15), th.randn(samples, 48)
    target, returns = th.randn(samples, 2), th.randn(samples, 1)
    start = time.perf_counter()
    for _ in range(epochs):
        for index in th.split(th.randperm(samples), 4000):
            loss = (actor(obs[index]) - target[index]).pow(2).mean() + (critic(state[index]) - returns[index]).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(params, 0.5)
            optimizer.step()
    rate = samples * epochs / (time.perf_counter() - start)
    th.set_num_threads(1)
    return rate


def single_agent(env_id: str, kind: str, copies: int, steps: int) -> dict[str, Any]:
    """Environment steps/s with random actions, and (Gymnasium's adapters) the first episodes' returns against DummyVecEnv."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    from sb3_safe.vector import make_batched_env

    def build(which: str) -> Any:
        if which in ("dummy", "subproc"):
            cls = DummyVecEnv if which == "dummy" else SubprocVecEnv
            return make_vec_env(env_id, n_envs=copies, seed=0, vec_env_cls=cls)
        return make_batched_env(which, env_id, copies, seed=0)

    venv = build(kind)
    rng = np.random.default_rng(0)
    low, high = venv.action_space.low, venv.action_space.high
    actions = rng.uniform(low, high, size=(64, copies, *venv.action_space.shape)).astype(np.float32)
    venv.reset()
    returns: list[float] = []
    start = time.perf_counter()
    for t in range(steps):
        _, _, dones, infos = venv.step(actions[t % 64])
        returns += [float(infos[i]["episode"]["r"]) for i in np.flatnonzero(dones) if "episode" in infos[i]]
    rate = steps * copies / (time.perf_counter() - start)
    venv.close()
    return {"env": env_id, "kind": kind, "copies": copies, "steps_per_s": rate, "returns": sorted(returns)}


def _plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, series in results["multiagent"].items():
        xs = [row["copies"] for row in series]
        left.plot(xs, [row["value"] for row in series], marker="o", label=label)
    left.set(xscale="log", yscale="log", xlabel="environment copies", ylabel="agent steps / s", title="Multi-agent (1 thread)")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)
    for (env_id, kind), series in results["single_series"].items():
        right.plot([r["copies"] for r in series], [r["steps_per_s"] for r in series], marker="o", label=f"{env_id} {kind}")
    right.set(
        xscale="log", yscale="log", xlabel="environment copies", ylabel="env steps / s", title="Single-agent, random actions"
    )
    right.grid(True, which="both", alpha=0.3)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--copies", type=int, nargs="+", default=[1, 16, 100, 500, 2000])
    parser.add_argument("--single-copies", type=int, nargs="+", default=[8, 32, 128, 256])
    parser.add_argument("--out", type=Path, default=Path("bench-results/scale"))
    parser.add_argument("--quick", action="store_true", help="a few copies and steps: checks that it runs")
    parser.add_argument(
        "--matched-only",
        action="store_true",
        help="only SafePPO on transport with all 10 epochs (BenchMARL's), added to an existing <out>/scale.json",
    )
    parser.add_argument(
        "--peer-python", type=Path, help="python of a virtual environment with BenchMARL (make bench-scale makes one)"
    )
    args = parser.parse_args()
    quiet = bool(os.environ.get("CI"))
    th.set_num_threads(1)
    if args.quick:
        args.copies, args.single_copies = [4, 16], [8]
    args.out.mkdir(parents=True, exist_ok=True)

    def say(text: str) -> None:
        if not quiet:
            print(text, flush=True)

    matched_label = "SafePPO transport, 10 epochs as BenchMARL: whole training"
    if args.matched_only:
        results = json.loads((args.out / "scale.json").read_text())
        results["update_limit"] = {int(k): v for k, v in results["update_limit"].items()}
        results["multiagent"][matched_label] = []
        for copies in args.copies:
            row = mappo_throughput("vmas:transport", copies, all_epochs=True)
            results["multiagent"][matched_label].append({"copies": copies, "value": row["train"]})
            results["breakdown"].append({"env": "transport, 10 epochs", **row})
            say(f"vmas:transport x{copies}, 10 epochs: train {row['train']:,.0f} agent steps/s")
        _write(results, args.out)
        return
    multi: dict[str, list[dict[str, Any]]] = {}
    breakdown: list[dict[str, Any]] = []
    for copies in args.copies:
        for scenario in ("transport", "simple_spread"):
            sim = vmas_sim(scenario, copies, 20 if args.quick else max(200, 20_000 // copies))
            multi.setdefault(f"VMAS {scenario}: simulator alone", []).append({"copies": copies, "value": sim})
            row = mappo_throughput(f"vmas:{scenario}", copies)
            multi.setdefault(f"VMAS {scenario}: rollout", []).append({"copies": copies, "value": row["rollout"]})
            multi.setdefault(f"VMAS {scenario}: whole training", []).append({"copies": copies, "value": row["train"]})
            breakdown.append({"env": scenario, **row, "simulator_alone": sim})
            rates = f"sim {sim:,.0f}, rollout {row['rollout']:,.0f}, train {row['train']:,.0f}"
            say(f"vmas:{scenario} x{copies}: {rates} agent steps/s")
        row = mappo_throughput("vmas:transport", copies, all_epochs=True)
        multi.setdefault(matched_label, []).append({"copies": copies, "value": row["train"]})
        breakdown.append({"env": "transport, 10 epochs", **row})
        say(f"vmas:transport x{copies}, 10 epochs: train {row['train']:,.0f} agent steps/s")
        if copies <= 500:
            row = mappo_throughput("pettingzoo:mpe2.simple_spread_v3", copies)
            multi.setdefault("PettingZoo simple_spread: whole training", []).append({"copies": copies, "value": row["train"]})
            breakdown.append({"env": "pettingzoo simple_spread", **row})
            say(f"pettingzoo simple_spread x{copies}: train {row['train']:,.0f} agent steps/s")
        if args.peer_python is not None:
            peer = benchmarl_peer(args.peer_python, copies, 1 if copies < 16 else 3)
            multi.setdefault("BenchMARL MAPPO (TorchRL) transport: whole training", []).append(
                {"copies": copies, "value": peer["agent_steps_per_s"]}
            )
            say(f"BenchMARL transport x{copies}: train {peer['agent_steps_per_s']:,.0f} agent steps/s")
    limits = {threads: update_limit(threads) for threads in (1, 2)}
    say(f"update limit: {limits[1]:,.0f} sample-epochs/s on 1 thread, {limits[2]:,.0f} on 2")

    single: list[dict[str, Any]] = []
    for env_id in ("Pendulum-v1", "HalfCheetah-v5"):
        for copies in args.single_copies:
            for kind in ("dummy", "subproc", "gymnasium-async", "envpool"):
                if kind in ("subproc", "gymnasium-async") and copies > 64:
                    continue  # a process per copy: 2 cores, and 24 GiB for 256 MuJoCo processes is not there
                steps = 50 if args.quick else max(20_000 // copies, 200)
                row = single_agent(env_id, kind, copies, steps)
                single.append(row)
                say(f"{env_id} {kind} x{copies}: {row['steps_per_s']:,.0f} env steps/s")

    _write({"multiagent": multi, "breakdown": breakdown, "update_limit": limits, "single": single}, args.out)


def _write(results: dict[str, Any], out: Path) -> None:
    series: dict[tuple[Any, Any], list[dict[str, Any]]] = {}
    for row in results["single"]:
        series.setdefault((row["env"], row["kind"]), []).append(row)
    (out / "scale.json").write_text(json.dumps(results, indent=1))
    _plot({**results, "single_series": series}, out / "scale.png")
    md = _markdown(results)
    (out / "scale.md").write_text(md)
    print(md)
    print(f"Results: {out / 'scale.json'}, {out / 'scale.md'}, {out / 'scale.png'}")


def _markdown(results: dict[str, Any]) -> str:
    copies = sorted({r["copies"] for s in results["multiagent"].values() for r in s})
    lines = ["| agent steps/s | " + " | ".join(f"{c:,} copies" for c in copies) + " |", "|---|" + "---|" * len(copies)]
    for label, series in results["multiagent"].items():
        by = {r["copies"]: r["value"] for r in series}
        lines.append(f"| {label} | " + " | ".join(f"{by[c]:,.0f}" if c in by else "" for c in copies) + " |")
    columns = "task | copies | samples/update | simulator s | policy s | buffer s | other rollout s | update s | epochs"
    lines += ["", f"| {columns} | update sample-epochs/s |", "|---" * 10 + "|"]
    for r in results["breakdown"]:
        lines.append(
            f"| {r['env']} | {r['copies']:,} | {r['samples']:,} | {r['seconds_simulator']:.2f} | {r['seconds_policy']:.2f} | "
            f"{r['seconds_buffer']:.2f} | {r['seconds_rollout_other']:.2f} | {r['seconds_update']:.2f} | {r['epochs']:.0f} | "
            f"{r['update_sample_epochs_per_s']:,.0f} |"
        )
    one, two = results["update_limit"][1], results["update_limit"][2]
    lines += ["", f"Update limit (the networks alone): {one:,.0f} sample-epochs/s on 1 thread, {two:,.0f} on 2.", ""]
    lines += ["| environment | copies | VecEnv | env steps/s | returns equal to DummyVecEnv's |", "|---|---|---|---|---|"]
    dummy = {(r["env"], r["copies"]): r["returns"] for r in results["single"] if r["kind"] == "dummy"}
    for r in results["single"]:
        ref: list[float] = dummy.get((r["env"], r["copies"])) or []
        n = min(len(ref), len(r["returns"]))
        same = "" if r["kind"] == "dummy" or not n else ("yes" if np.allclose(ref[:n], r["returns"][:n], rtol=1e-4) else "no")
        lines.append(f"| {r['env']} | {r['copies']} | {r['kind']} | {r['steps_per_s']:,.0f} | {same} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
