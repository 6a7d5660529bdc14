"""What each period of a KiOP round costs: seconds per synthesis step (per synthesizer) and per knowledge-storing
step, on the embedded default (fashion-mnist-resnet into letters-resnet10t, rings 32 -> 36 -> 64, batch 64).

    python benchmarks/step_costs.py [--batch-size 64] [--repeats 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from functools import partial

import torch

from kiop_hf import KiOPModel, load_classifier
from kiop_hf.configuration_kiop import TARGET_TASK
from kiop_hf.pipeline import DEFAULT_SOURCE, DEFAULT_TARGET
from kiop_hf.synthesis import make_synthesizer
from kiop_hf.trainer import KiOPTrainer
from kiop_hf.training_args import KiOPTrainingArguments
from kiop_hf.zoo.build import DEFAULT_ROOT, REFERENCE_ZOO, build_zoo


def median_seconds(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="synthesis steps per timed round")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    specs = {spec.name: spec for spec in REFERENCE_ZOO}
    build_zoo(DEFAULT_ROOT, [specs[DEFAULT_SOURCE], specs[DEFAULT_TARGET]])
    source, target = load_classifier(DEFAULT_ROOT / DEFAULT_SOURCE), load_classifier(DEFAULT_ROOT / DEFAULT_TARGET)
    task = specs[DEFAULT_SOURCE].dataset
    model = KiOPModel.from_models(target, {task: source}, image_size=32, ring_sizes=[36, 64])
    training = KiOPTrainingArguments(
        output_dir=tempfile.mkdtemp(), batch_size=args.batch_size, synthesis_steps=args.steps, use_cpu=True,
        memory_bank_size=4096, num_negatives=1024, reset_generator=False,
    )  # fmt: skip
    trainer = KiOPTrainer(model, {task: source}, training)
    trainer._setup()
    trainer.synthesize()  # fill the banks once
    print(f"torch threads: {torch.get_num_threads()}, batch {args.batch_size}, median of {args.repeats}")
    for method in ("cmi", "deepinversion"):
        for name, inverted in ((task, source), (TARGET_TASK, target)):
            kwargs = dataclasses.replace(training, synthesizer=method).synthesizer_kwargs()
            synthesizer = make_synthesizer(method, inverted, **kwargs)
            student = partial(trainer.prompted, name)
            seconds = median_seconds(lambda: synthesizer.synthesize(student), args.repeats) / args.steps
            print(f"synthesis step, {method:<13} inverting {name:<14} {seconds:.3f} s")
    seconds = median_seconds(trainer.knowledge_storing_step, args.repeats * 4)
    print(f"knowledge-storing step (source + preservation)         {seconds:.3f} s")


if __name__ == "__main__":
    main()
