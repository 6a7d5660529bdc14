"""One process against two (accelerate, gloo on CPU) at the same total budget: is the prompt as good?

Both runs train the embedded default (zoo source into the zoo target, data-free) for the same rounds and steps;
the 2-process run gives each rank half the batch, so every step averages gradients over the same number of
samples and every round synthesises the same number of images in all.

    python benchmarks/processes.py [--rounds 10] [--seeds 0 1 2] [--json results.json]

Single runs of the data-free default vary by several points with the seed, so the comparison is over seeds: the
mean, the standard deviation and every seed's source accuracy for each run kind.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from arguments import BenchmarkArguments, benchmark_parser, parse_benchmark_args

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "train_kiop.py"


def run(command: list[str], output_dir: Path, threads: int) -> dict:
    env = os.environ | {"OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    results = json.loads((output_dir / "results.json").read_text())
    return results | {"wall_seconds": round(time.perf_counter() - start, 1)}


def source_task(results: dict) -> str:
    return next(k for k in results if not k.startswith("target") and k not in {"train_seconds", "wall_seconds"})


def main():
    parser = benchmark_parser(BenchmarkArguments, __doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64, help="total batch per step (split across ranks)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parse_benchmark_args(parser)
    workdir = Path(tempfile.mkdtemp(prefix="kiop-processes-"))
    launch_two = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    kinds = {  # name: (launcher, batch per rank, threads per process)
        "1 process": ([sys.executable], args.batch_size, 2),
        "2 processes": (launch_two, args.batch_size // 2, 1),
    }
    runs = {name: [] for name in kinds}
    for seed in args.seeds:
        for name, (launcher, batch, threads) in kinds.items():
            out = workdir / f"{name} seed {seed}"
            command = [
                *launcher,
                str(EXAMPLE),
                "--cpu",
                "--rounds",
                str(args.rounds),
                "--eval-limit",
                "2000",
                "--seed",
                str(seed),
                "--batch-size",
                str(batch),
                "--output-dir",
                str(out),
                "--zoo-root",
                args.zoo_root,
            ]
            runs[name].append(run(command, out, threads) | {"seed": seed})
            r = runs[name][-1]
            print(f"[{name}, seed {seed}] source {r[source_task(r)]:.2%}, target {r['target']:.2%}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"setting": vars(args), "runs": runs}, indent=2) + "\n")
    print(
        f"\n{'run':<14}{'source acc (mean ± sd)':>24}{'per seed':>28}{'target acc':>12}{'drop (pts)':>12}{'wall s':>9}"
    )
    for name, results in runs.items():
        accuracy = [r[source_task(r)] for r in results]
        spread = statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0
        mean = lambda key: sum(r[key] for r in results) / len(results)  # noqa: E731
        per_seed = " ".join(f"{a:.2%}" for a in accuracy)
        print(
            f"{name:<14}{f'{statistics.mean(accuracy):.2%} ± {spread:.2%}':>24}{per_seed:>28}{mean('target'):>12.2%}"
            f"{mean('target/retention_drop'):>12.2f}{mean('wall_seconds'):>9.1f}"
        )


if __name__ == "__main__":
    main()
