"""What each part of a KiOP round costs, on the embedded default's models (fashion-mnist-resnet into
letters-resnet10t, rings 32 -> 36 -> 64, batch 64): one synthesis round per method and inverted model (CMI with
the original default's 30 steps, the fast synthesizer with the embedded default's steps, DeepInversion with 30),
and one knowledge-storing step; each in fp32 and under bf16 autocast (``--mixed-precision bf16``'s passes).

The timings are interleaved (every measurement once per repeat, in turn) and the figures that matter are ratios
within this one run: the fast round against the CMI round, bf16 against fp32.

    python benchmarks/step_costs.py [--repeats 5] [--json costs.json]
"""

from __future__ import annotations

import contextlib
import json
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from arguments import BenchmarkArguments, benchmark_parser, parse_benchmark_args

from kiop_hf import KiOPModel, load_classifier
from kiop_hf.configuration_kiop import TARGET_TASK
from kiop_hf.synthesis import make_synthesizer
from kiop_hf.train_job import CMI_SCHEDULE, DEFAULT_SCHEDULE, DEFAULT_SOURCE, DEFAULT_TARGET
from kiop_hf.trainer import KiOPTrainer
from kiop_hf.training_args import KiOPTrainingArguments
from kiop_hf.zoo.build import REFERENCE_ZOO, build_zoo

METHODS = {
    "cmi": CMI_SCHEDULE,
    "fast": DEFAULT_SCHEDULE,
    "deepinversion": CMI_SCHEDULE | {"synthesizer": "deepinversion"},
}


def main():
    parser = benchmark_parser(BenchmarkArguments, __doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parse_benchmark_args(parser)
    specs = {spec.name: spec for spec in REFERENCE_ZOO}
    root = Path(args.zoo_root)
    build_zoo(root, [specs[DEFAULT_SOURCE], specs[DEFAULT_TARGET]])
    source, target = load_classifier(root / DEFAULT_SOURCE), load_classifier(root / DEFAULT_TARGET)
    task = specs[DEFAULT_SOURCE].dataset
    model = KiOPModel.from_models(target, {task: source}, image_size=32, ring_sizes=[36, 64])
    trainer = KiOPTrainer(
        model, {task: source}, KiOPTrainingArguments(output_dir=tempfile.mkdtemp(), use_cpu=True, **CMI_SCHEDULE)
    )
    trainer.setup()
    trainer.synthesize()  # fill the banks once

    precisions = {"fp32": contextlib.nullcontext, "bf16": partial(torch.autocast, "cpu", dtype=torch.bfloat16)}
    jobs = {}
    for method, schedule in METHODS.items():
        kwargs = KiOPTrainingArguments(output_dir=tempfile.mkdtemp(), **schedule).synthesizer_kwargs()
        for name, inverted in ((task, source), (TARGET_TASK, target)):
            synthesizer = make_synthesizer(method, inverted, **kwargs)
            synthesizer.synthesize(partial(trainer.prompted, name))  # warm-up: allocations, a filled memory bank
            for precision, context in precisions.items():
                label = f"{method} round ({kwargs['synthesis_steps']} steps), inverting {name}, {precision}"
                jobs[label] = partial(_under, context, synthesizer.synthesize, partial(trainer.prompted, name))
    for precision, context in precisions.items():
        jobs[f"knowledge-storing step, {precision}"] = partial(_under, context, trainer.knowledge_storing_step)

    times: dict[str, list[float]] = {label: [] for label in jobs}
    for _ in range(args.repeats):
        for label, job in jobs.items():
            start = time.perf_counter()
            job()
            times[label].append(time.perf_counter() - start)
    seconds = {label: statistics.median(values) for label, values in times.items()}

    print(
        f"torch threads: {torch.get_num_threads()}, batch {CMI_SCHEDULE['batch_size']}, "
        f"median of {args.repeats}, interleaved"
    )
    for label, value in seconds.items():
        print(f"{label:<62}{value:>8.3f} s")
    figures = {}
    for precision in precisions:

        def round_of(method: str) -> float:  # one synthesis round over both inverted models (BF)
            return sum(v for k, v in seconds.items() if k.startswith(f"{method} round") and k.endswith(precision))

        figures[f"fast / cmi round, {precision}"] = round_of("fast") / round_of("cmi")
    kd_steps = DEFAULT_SCHEDULE["kd_steps"]

    def default_round(synthesis: str, storing: str) -> float:  # both fast syntheses, then the round's KD steps
        fast = sum(v for k, v in seconds.items() if k.startswith("fast round") and k.endswith(synthesis))
        return fast + kd_steps * seconds[f"knowledge-storing step, {storing}"]

    # mixed_precision="bf16" autocasts the synthesis and keeps knowledge storing in fp32 (KiOPTrainer)
    figures[f"speed-up of an embedded-default round under mixed_precision=bf16 (5-step syntheses + {kd_steps} KD)"] = (
        default_round("fp32", "fp32") / default_round("bf16", "fp32")
    )
    figures["speed-up of that round with bf16 knowledge storing too (not what the trainer does)"] = default_round(
        "fp32", "fp32"
    ) / default_round("bf16", "bf16")
    for label in [k for k in seconds if k.endswith("fp32")]:
        figures[f"bf16 / fp32: {label.removesuffix(', fp32')}"] = (
            seconds[label.replace("fp32", "bf16")] / seconds[label]
        )
    print()
    for label, value in figures.items():
        print(f"{label:<70}{value:>6.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"seconds": seconds, "ratios": figures}, indent=2) + "\n")


def _under(context, function, *args):
    with context():
        return function(*args)


if __name__ == "__main__":
    main()
