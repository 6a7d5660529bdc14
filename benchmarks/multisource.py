"""Multi-source benchmark: one, two and three zoo sources into one zoo target, through the main job (run_kiop).

Each source first gets its own single-source prompt; then the first two, then all three, share one prompt
(each further source adds an outer ring). Per source: accuracy on its real test set beside its single-source
result; per run: the target's retention, prompt size and wall time; the three-source run is repeated with the
data-free frequency-based label mapping against the paper's fixed random map. Every run has the same schedule.

    python benchmarks/multisource.py --json multisource.json
    python benchmarks/multisource.py --rounds 2 --synthesis-steps 5 --kd-steps 10   # a quick look
    python benchmarks/multisource.py --schedule cmi --rounds 6 --synthesis-steps 20  # the README's earlier table
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from kiop_hf.configuration_kiop import TARGET_TASK
from kiop_hf.train_job import SCHEDULES, KiOPScriptArguments, run_kiop
from kiop_hf.training_args import KiOPTrainingArguments
from kiop_hf.zoo.build import DEFAULT_ROOT, REFERENCE_ZOO, build_zoo, dataset_path

SOURCES = ("fashion-mnist-resnet", "mnist-resnet", "digits-efficientnet")  # timm, transformers, timm
TARGET = "letters-resnet10t"
# Canvas sizes the zoo target was trained to read (32, 36, 40, 48, 64): each further source adds an outer ring.
RING_SIZES = {1: [36, 64], 2: [36, 48, 64], 3: [36, 40, 48, 64]}


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo-root", default=str(DEFAULT_ROOT))
    parser.add_argument(
        "--schedule",
        choices=sorted(SCHEDULES),
        default="fast",
        help="the embedded default's (fast) or the earlier CMI default's",
    )
    for name in ("rounds", "synthesis_steps", "kd_steps", "batch_size"):  # default: the schedule's budget
        parser.add_argument(f"--{name.replace('_', '-')}", type=int)
    parser.add_argument("--preservation", default="BF", choices=["BF", "B"])
    parser.add_argument("--eval-limit", type=int, default=2000, help="test images per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the results as JSON to this file")
    args = parser.parse_args()
    for name in ("rounds", "synthesis_steps", "kd_steps", "batch_size"):
        if getattr(args, name) is None:
            setattr(args, name, SCHEDULES[args.schedule][name])
    return args


def main():
    args = parse_args()
    root = Path(args.zoo_root)
    specs = {spec.name: spec for spec in REFERENCE_ZOO}
    build_zoo(root, [specs[name] for name in (*SOURCES, TARGET)])
    task_of = {name: specs[name].dataset for name in SOURCES}
    workdir = Path(tempfile.mkdtemp(prefix="kiop-multisource-"))

    def run(label: str, sources: tuple[str, ...], label_mapping: str = "random") -> dict:
        budget = dict(
            rounds=args.rounds,
            synthesis_steps=args.synthesis_steps,
            kd_steps=args.kd_steps,
            batch_size=args.batch_size,
        )
        training = KiOPTrainingArguments(
            **SCHEDULES[args.schedule] | budget,
            output_dir=str(workdir / label),
            preservation=args.preservation,
            seed=args.seed,
            label_mapping=label_mapping,
            save_every_rounds=args.rounds,
            eval_limit=args.eval_limit,
            use_cpu=True,
        )
        target_data = str(dataset_path(root, specs[TARGET].dataset))
        script = KiOPScriptArguments(
            target=str(root / TARGET),
            source={task_of[name]: str(root / name) for name in sources},
            ring_sizes=RING_SIZES[len(sources)],
            preservation_images=target_data if args.preservation == "B" else None,
            eval={task_of[name]: str(dataset_path(root, specs[name].dataset)) for name in sources}
            | {TARGET_TASK: target_data},
        )
        results = run_kiop(script, training, log=lambda line: None)
        row = {
            "run": label,
            "label_mapping": label_mapping,
            "ring_sizes": [32, *RING_SIZES[len(sources)]],
            "source_accuracy": {task_of[name]: results[task_of[name]] for name in sources},
            "target_accuracy": results[TARGET_TASK],
            "retention_drop_points": results["target/retention_drop"],
            "prompt_bytes": (workdir / label / "model.safetensors").stat().st_size,
            "wall_seconds": results["train_seconds"],
        }
        print(f"[run] {json.dumps(row)}", flush=True)
        return row

    rows = [run(f"single {task_of[name]}", (name,)) for name in SOURCES]
    single = {task: acc for row in rows for task, acc in row["source_accuracy"].items()}
    rows.append(run("two sources", SOURCES[:2]))
    rows.append(run("three sources", SOURCES))
    rows.append(run("three sources, frequency map", SOURCES, label_mapping="frequency"))
    if args.json:
        Path(args.json).write_text(json.dumps({"setting": vars(args), "rows": rows}, indent=2) + "\n")

    print(
        f"\n{len(SOURCES)} zoo sources -> {TARGET}, preservation {args.preservation}, {args.rounds} rounds x "
        f"({args.synthesis_steps} synthesis + {args.kd_steps} KD steps), batch {args.batch_size}"
    )
    header = (
        f"{'run':<30}{'map':<11}{'source':<14}{'acc':>8}{'single':>8}{'diff':>7}{'drop':>7}{'bytes':>9}{'wall s':>8}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        for task, accuracy in row["source_accuracy"].items():
            print(
                f"{row['run']:<30}{row['label_mapping']:<11}{task:<14}{accuracy:>8.2%}{single[task]:>8.2%}"
                f"{100 * (accuracy - single[task]):>7.2f}{row['retention_drop_points']:>7.2f}{row['prompt_bytes']:>9,}"
                f"{row['wall_seconds']:>8.1f}"
            )


if __name__ == "__main__":
    main()
