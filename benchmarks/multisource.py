"""Multi-source benchmark: one, two and three zoo sources into one zoo target, through the main job (run_kiop).

Each source first gets its own single-source prompt; then the first two, then all three, share one prompt
(each further source adds an outer ring). Per source: accuracy on its real test set beside its single-source
result on the same seed; per run: the target's retention, prompt size and wall time; the three-source run is
repeated with the data-free frequency-based label mapping against the paper's fixed random map. Every run has the
same schedule. Over several seeds the table gives each source's mean and spread (data-free runs vary by several
points with the seed).

    python benchmarks/multisource.py --seeds 0 1 2 --json results.json
    python benchmarks/multisource.py --report --json results.json
    python benchmarks/multisource.py --rounds 2 --synthesis-steps 5 --kd-steps 10   # a quick look
    python benchmarks/multisource.py --schedule cmi --rounds 6 --synthesis-steps 20  # the README's earlier table
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path

from arguments import SeededBenchmarkArguments, benchmark_parser, parse_benchmark_args
from budget import add_run, check_same_zoo, stored_runs

from kiop_hf.configuration_kiop import TARGET_TASK
from kiop_hf.train_job import SCHEDULES, KiOPScriptArguments, run_kiop
from kiop_hf.training_args import KiOPTrainingArguments
from kiop_hf.zoo.build import REFERENCE_ZOO, build_zoo, dataset_path, weights_digest

SOURCES = ("fashion-mnist-resnet", "mnist-resnet", "digits-efficientnet")  # timm, transformers, timm
TARGET = "letters-resnet10t"
# Canvas sizes the zoo target was trained to read (32, 36, 40, 48, 64): each further source adds an outer ring.
RING_SIZES = {1: [36, 64], 2: [36, 48, 64], 3: [36, 40, 48, 64]}
SPECS = {spec.name: spec for spec in REFERENCE_ZOO}
TASK_OF = {name: SPECS[name].dataset for name in SOURCES}
# Each run's sources, in the order they are measured: each alone, the first two, all three (random, frequency map).
RUN_SOURCES = {
    **{f"single {TASK_OF[name]}": (name,) for name in SOURCES},
    "two sources": SOURCES[:2],
    "three sources": SOURCES,
    "three sources, frequency map": SOURCES,
}
RUNS = tuple(RUN_SOURCES)


def parse_args():
    parser = benchmark_parser(SeededBenchmarkArguments, __doc__)  # --set: every run trains with it
    parser.add_argument(
        "--schedule",
        choices=sorted(SCHEDULES),
        default="fast",
        help="the embedded default's (fast) or the earlier CMI default's",
    )
    for name in ("rounds", "synthesis_steps", "kd_steps", "batch_size"):  # default: the schedule's budget
        parser.add_argument(f"--{name.replace('_', '-')}", type=int)
    parser.add_argument("--preservation", default="BF", choices=["BF", "B"])
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=RUNS, metavar="RUN", help=f"of {RUNS}")
    parser.add_argument("--report", action="store_true", help="only print the table of the --json file")
    args = parse_benchmark_args(parser)
    if args.report and not args.json:
        parser.error("--report prints the table of a --json file: name it")
    for name in ("rounds", "synthesis_steps", "kd_steps", "batch_size"):
        if getattr(args, name) is None:
            setattr(args, name, SCHEDULES[args.schedule][name])
    return args


def setting(args) -> dict:
    """The training settings every run of one results file shares (the schedule's, resolved), so that its seeds
    can be pooled."""
    budget = {name: getattr(args, name) for name in ("rounds", "synthesis_steps", "kd_steps", "batch_size")}
    shared = {"preservation": args.preservation, "eval_limit": args.eval_limit}
    return SCHEDULES[args.schedule] | budget | shared | dict(args.set)


def measure_seed(args, root: Path, seed: int, zoo: str) -> list[dict]:
    """The runs of one seed (by default all six: each source alone, the first two together, all three with the
    random and the frequency map), in that order."""
    with tempfile.TemporaryDirectory(prefix="kiop-multisource-") as workdir:
        return [
            measure_run(args, root, Path(workdir) / label, label, RUN_SOURCES[label], seed, zoo)
            for label in RUNS
            if label in args.runs
        ]


def measure_run(args, root: Path, output_dir: Path, label: str, sources: tuple[str, ...], seed: int, zoo: str) -> dict:
    """One prompt for the sources through the main job; its figures go to the --json file as soon as measured."""
    label_mapping = "frequency" if label.endswith("frequency map") else "random"
    shared = setting(args)
    training = KiOPTrainingArguments(
        **shared,
        output_dir=str(output_dir),
        seed=seed,
        label_mapping=label_mapping,
        save_every_rounds=args.rounds,
        use_cpu=True,
    )
    target_data = str(dataset_path(root, SPECS[TARGET].dataset))
    script = KiOPScriptArguments(
        target=str(root / TARGET),
        source={TASK_OF[name]: str(root / name) for name in sources},
        ring_sizes=RING_SIZES[len(sources)],
        preservation_images=target_data if args.preservation == "B" else None,
        eval={TASK_OF[name]: str(dataset_path(root, SPECS[name].dataset)) for name in sources}
        | {TARGET_TASK: target_data},
    )
    results = run_kiop(script, training, log=lambda line: None)
    row = {
        "run": label,
        "seed": seed,
        "label_mapping": label_mapping,
        "ring_sizes": [32, *RING_SIZES[len(sources)]],
        "source_accuracy": {TASK_OF[name]: results[TASK_OF[name]] for name in sources},
        "target_accuracy": results[TARGET_TASK],
        "retention_drop_points": results["target/retention_drop"],
        "prompt_bytes": (output_dir / "model.safetensors").stat().st_size,
        "wall_seconds": results["train_seconds"],
        "setting": shared,
        "zoo": zoo,
    }
    print(f"[run] {json.dumps(row)}", flush=True)
    if args.json:
        add_run(args.json, row, key=lambda r: (r["run"], r["seed"]), summary_of=summarise)
    return row


def summarise(runs: list[dict]) -> list[dict]:
    """One line per run and source: its accuracy over seeds (mean, spread, each seed) and its mean difference
    from the source's single-source prompt on the same seeds, which cancels the part of the spread the seed brings."""
    single = {
        (task, r["seed"]): acc
        for r in runs
        if len(RUN_SOURCES[r["run"]]) == 1
        for task, acc in r["source_accuracy"].items()
    }
    groups: dict[str, list[dict]] = {}
    for run in sorted(runs, key=lambda r: (RUNS.index(r["run"]), r["seed"])):
        groups.setdefault(run["run"], []).append(run)
    lines = []
    for label, group in groups.items():
        for task in group[0]["source_accuracy"]:
            accuracy = {r["seed"]: r["source_accuracy"][task] for r in group}
            paired = [] if len(RUN_SOURCES[label]) == 1 else [seed for seed in accuracy if (task, seed) in single]
            lines.append(
                {
                    "run": label,
                    "label_mapping": group[0]["label_mapping"],
                    "task": task,
                    "seeds": list(accuracy),
                    "source_accuracy": statistics.fmean(accuracy.values()),
                    "source_accuracy_sd": statistics.stdev(accuracy.values()) if len(accuracy) > 1 else None,
                    "per_seed": list(accuracy.values()),
                    "paired_seeds": paired,
                    "minus_single_same_seeds": (
                        statistics.fmean(accuracy[s] - single[task, s] for s in paired) if paired else None
                    ),
                    "retention_drop_points": statistics.fmean(r["retention_drop_points"] for r in group),
                    "prompt_bytes": group[0]["prompt_bytes"],
                    "wall_seconds": statistics.fmean(r["wall_seconds"] for r in group),
                }
            )
    return lines


def print_table(lines: list[dict]) -> None:
    header = (
        f"{'run':<30}{'map':<11}{'source':<14}{'seeds':>7}{'acc':>8}{'sd':>7}  {'each seed':<22}{'- single':>12}"
        f"{'drop':>7}{'bytes':>9}{'wall s':>8}"
    )
    print(header)
    print("-" * len(header))
    for line in lines:
        sd = "-" if line["source_accuracy_sd"] is None else f"{100 * line['source_accuracy_sd']:.2f}"
        each = " / ".join(f"{100 * accuracy:.2f}" for accuracy in line["per_seed"])
        delta = line["minus_single_same_seeds"]
        delta = "-" if delta is None else f"{100 * delta:+.2f} ({len(line['paired_seeds'])})"
        print(
            f"{line['run']:<30}{line['label_mapping']:<11}{line['task']:<14}{','.join(map(str, line['seeds'])):>7}"
            f"{line['source_accuracy']:>8.2%}{sd:>7}  {each:<22}{delta:>12}"
            f"{line['retention_drop_points']:>7.2f}{line['prompt_bytes']:>9,}{line['wall_seconds']:>8.1f}"
        )


def main():
    args = parse_args()
    runs = stored_runs(args.json)
    if not args.report:
        root = Path(args.zoo_root)
        build_zoo(root, [SPECS[name] for name in (*SOURCES, TARGET)])
        zoo = weights_digest(*(root / name for name in (*SOURCES, TARGET)))
        if args.json:
            check_same_zoo(runs, zoo, args.json)
            if any(run["setting"] != setting(args) for run in runs):
                raise SystemExit(f"{args.json} holds runs of another setting: measure into another --json file")
        runs = [row for seed in args.seeds for row in measure_seed(args, root, seed, zoo)]
        runs = stored_runs(args.json) if args.json else runs  # with the runs of parallel calls
    if runs:
        shared = runs[0]["setting"]
        print(
            f"\n{len(SOURCES)} zoo sources -> {TARGET}, preservation {shared['preservation']}, "
            f"{shared['rounds']} rounds x ({shared['synthesis_steps']} synthesis + {shared['kd_steps']} KD steps), "
            f"batch {shared['batch_size']}"
        )
    print_table(summarise(runs))


if __name__ == "__main__":
    main()
