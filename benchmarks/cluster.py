"""
A benchmark suite on Ray against local worker processes (``make bench-cluster``).

The same suite (default: ``benchmarks/suites/quick.yml``) runs twice into fresh folders: with
``--workers 2`` (two local processes), then on a Ray cluster of two one-CPU nodes simulated on this
machine (``ray.cluster_utils.Cluster``), each run a Ray task that trains in a scratch folder and
returns its run folder packed through the object store. Printed: the wall times and their ratio,
whether the rows are the same, and what returning a run folder costs (bytes, and seconds to pack and
unpack it, measured on the returned folders).

Usage: ``python benchmarks/cluster.py [SUITE] [--out bench-results/cluster]``.
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from sb3_safe.bench import RaySettings, load_suite, run_suite, write_outputs
from sb3_safe.cluster import pack_folder, unpack_folder

KEYS = ("env", "config", "seed", "crashed", "final_return", "best_return", "collapsed", "rollbacks", "critical_findings")


def _same(a: object, b: object) -> bool:
    """Equal, a crashed run's NaN return included."""
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("suite", type=Path, nargs="?", default=Path("benchmarks/suites/quick.yml"))
    parser.add_argument("--out", type=Path, default=Path("bench-results/cluster"))
    args = parser.parse_args()
    import ray
    from ray.cluster_utils import Cluster

    suite = load_suite(args.suite)
    shutil.rmtree(args.out, ignore_errors=True)
    start = time.perf_counter()
    local = run_suite(suite, args.out / "local", workers=2)
    local_seconds = time.perf_counter() - start

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        start = time.perf_counter()
        on_ray = run_suite(suite, args.out / "ray", ray=RaySettings(cluster.address))
        ray_seconds = time.perf_counter() - start
    finally:
        ray.shutdown()
        cluster.shutdown()  # type: ignore[no-untyped-call]

    same = all(_same(a[k], b[k]) for a, b in zip(on_ray, local, strict=True) for k in KEYS)
    write_outputs(local, args.out / "local", suite)
    write_outputs(on_ray, args.out / "ray", suite)
    sizes, pack_s, unpack_s = [], [], []
    for run in sorted((args.out / "ray" / "runs").glob("*/*")):
        begin = time.perf_counter()
        data = pack_folder(run)
        pack_s.append(time.perf_counter() - begin)
        sizes.append(len(data))
        with tempfile.TemporaryDirectory() as scratch:
            begin = time.perf_counter()
            unpack_folder(data, Path(scratch) / run.name)
            unpack_s.append(time.perf_counter() - begin)
    per_run_local = local_seconds / len(local)
    print(f"suite {suite.name!r}: {len(local)} runs")
    print(f"local, 2 worker processes: {local_seconds:.1f} s")
    print(f"Ray, 2 one-CPU nodes:      {ray_seconds:.1f} s  (ratio {ray_seconds / local_seconds:.3f})")
    print(f"same rows (returns, crashes, collapses, rollbacks, findings): {same}")
    print(
        f"returning a run folder: median {statistics.median(sizes) / 1e6:.2f} MB packed, "
        f"{statistics.median(pack_s) * 1000:.0f} ms to pack, {statistics.median(unpack_s) * 1000:.0f} ms to unpack "
        f"(a run takes {per_run_local * 2:.1f} s of a worker here)"
    )


if __name__ == "__main__":
    main()
