"""Synthesis-only screen: how alike the target reads a synthesizer's images and real ones, without a prompt run.

A data-free run learns from images that the source reads as its classes but the letters target reads unlike real
images of those classes (``target_reading_overlap`` in ``quality.py``: about 0.5 for the embedded default's banks,
0.86 for real images). This script runs only the synthesis rounds of the embedded default's source (against the
untrained prompt, no knowledge storing), so a synthesis setting can be screened on that figure in about two minutes
a seed before it is given full budget runs. It prints, per seed and as mean and sd, the overlap over the last
``--last`` rounds' images, and how sure the source is of them.

    python benchmarks/target_reading.py --seeds 0 1 2
    python benchmarks/target_reading.py --seeds 0 1 2 --set bn_weight=0.3 --json screen.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from arguments import SeededBenchmarkArguments, benchmark_parser, parse_benchmark_args
from budget import bench_args
from quality import Bench

from kiop_hf.trainer import KiOPTrainer


def parse_args():
    parser = benchmark_parser(SeededBenchmarkArguments, __doc__, seeds=[0, 1, 2])  # --set: synthesis settings
    parser.add_argument("--rounds", type=int, default=30, help="synthesis rounds per seed")
    parser.add_argument("--last", type=int, default=10, help="screen the images of this many last rounds")
    args = parse_benchmark_args(parser)
    if not 0 < args.last <= args.rounds:
        parser.error(f"--last must be between 1 and --rounds ({args.rounds}), got {args.last}")
    return args


def screen(bench: Bench, args, seed: int) -> dict:
    """One seed: ``args.rounds`` synthesis rounds of the source, then the last rounds' images read by both models."""
    bench.seed = seed
    training = bench.training_args("screen", "none")
    trainer = KiOPTrainer(bench.fresh_model(), {bench.task: bench.source}, training)
    trainer.setup()
    start = time.perf_counter()
    for _ in range(args.rounds):
        trainer.synthesize()
    seconds = time.perf_counter() - start
    images = trainer.banks[bench.task].images[-args.last * training.batch_size :]
    with torch.no_grad():
        source_classes = bench.source(images).argmax(-1)
    return {
        "seed": seed,
        "target_reading_overlap": bench.target_reading_overlap(images, source_classes),
        "source_confidence_bank": bench.source_confidence(images),
        "synthesis_seconds": round(seconds, 1),
        "settings": dict(args.set),
        "zoo": bench.zoo_digest,
    }


def main():
    args = parse_args()
    # the embedded default's settings and models, as budget.py's fast row at 1x
    as_budget_run = argparse.Namespace(
        set=args.set, ring_sizes=[36, 64], eval_limit=args.eval_limit, zoo_root=args.zoo_root, seeds=args.seeds
    )
    bench = Bench(bench_args(as_budget_run, "fast", 1))
    bench.args.rounds = args.rounds
    runs = []
    for seed in args.seeds:
        runs.append(screen(bench, args, seed))
        print(f"[run] {json.dumps(runs[-1])}", flush=True)
    overlaps = [run["target_reading_overlap"] for run in runs]
    summary = {
        "settings": dict(args.set),
        "seeds": args.seeds,
        "target_reading_overlap": statistics.fmean(overlaps),
        "target_reading_overlap_sd": statistics.stdev(overlaps) if len(runs) > 1 else None,
    }
    sd = summary["target_reading_overlap_sd"]
    spread = "" if sd is None else f" (sd {sd:.3f})"
    name = " ".join(f"{key}={value}" for key, value in args.set) or "default"
    print(f"{name}: target reading overlap {summary['target_reading_overlap']:.3f}{spread} over seeds {args.seeds}")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "summary": summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
