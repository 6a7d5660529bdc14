"""One process against two (accelerate, gloo on CPU) at the same total budget: is the prompt as good?

Both runs train the embedded default (zoo source into the zoo target, data-free) for the same rounds and steps;
the 2-process run gives each rank half the batch, so every step averages gradients over the same number of
samples and every round synthesises the same number of images in all.

    python benchmarks/processes.py [--rounds 10] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "train_kiop.py"


def run(command: list[str], output_dir: Path, threads: int) -> dict:
    env = os.environ | {"OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    results = json.loads((output_dir / "results.json").read_text())
    return results | {"wall_seconds": round(time.perf_counter() - start, 1)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64, help="total batch per step (split across ranks)")
    parser.add_argument("--json")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="kiop-processes-"))
    common = ["--cpu", "--rounds", str(args.rounds), "--eval-limit", "2000"]
    one = workdir / "one"
    two = workdir / "two"
    rows = {
        "1 process": run(
            [sys.executable, str(EXAMPLE), *common, "--batch-size", str(args.batch_size), "--output-dir", str(one)], one, 2
        ),
        "2 processes": run(
            [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", str(EXAMPLE),
             *common, "--batch-size", str(args.batch_size // 2), "--output-dir", str(two)],
            two, 1,
        ),
    }  # fmt: skip
    print(f"\n{'run':<14}{'source acc':>12}{'target acc':>12}{'drop (pts)':>12}{'wall s':>9}")
    for name, r in rows.items():
        task = next(k for k in r if k not in {"target", "target/unprompted", "target/retention_drop", "train_seconds", "wall_seconds"})
        print(f"{name:<14}{r[task]:>12.2%}{r['target']:>12.2%}{r['target/retention_drop']:>12.2f}{r['wall_seconds']:>9.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"setting": vars(args), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
