"""Budget curve: data-free KiOP-BF with CMI and with the fast synthesizer against the real-data prompt, at equal
prompt updates.

One zoo source into the zoo target (the embedded default's models, rings 32 -> 36 -> 64). A budget of Nx is N
times the 400 prompt updates of the original embedded default (10 rounds x 40 knowledge-storing steps):
- ``cmi``: KiOP-BF with CMI, that default's schedule with N times the rounds (30 synthesis steps per round);
- ``fast``: KiOP-BF with the fast synthesizer, the embedded default's schedule (many short rounds) with N times
  the rounds;
- ``real``: the same prompt and optimiser trained on the source's real labelled images (the data-rich bound).
Columns: source accuracy (mean and sd over seeds), BF / real ratio at the same budget, target accuracy and its
retention drop, wall time, images in the source's data bank, and for a variant of the fast row its mean minus the
default's on the seeds both ran (the seed moves a run by several points; the pairing cancels that part). Runs are
added to the ``--json`` file (a run of the same row, variant, budget and seed replaces the old one), so the slow
CMI row can be measured on fewer seeds in a second call; the table and the plot (source accuracy against wall
time) cover every run in the file. ``--set`` makes a variant of the fast row (its settings name it in the table
and the plot), so ablations share the file; ``--ring-sizes`` one of every row (each ratio pairs with the real row
of the same rings).

    python benchmarks/budget.py --json budget.json --plot budget.png
    python benchmarks/budget.py --rows cmi --budgets 4 8 --seeds 0 --json budget.json --plot budget.png
    python benchmarks/budget.py --rows fast --budgets 1 2 --set recent_share=0 --json budget.json
    python benchmarks/budget.py --rows fast real --budgets 2 --ring-sizes 36 96 --json budget.json
    python benchmarks/budget.py --report --json budget.json --plot budget.png
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import statistics
from collections.abc import Callable
from pathlib import Path

from arguments import SeededBenchmarkArguments, benchmark_parser, parse_benchmark_args
from quality import BANK_FIT, Bench

from kiop_hf.train_job import SCHEDULES

ROWS = ("fast", "cmi", "real")
UNIT_UPDATES = 400  # prompt updates of the original embedded default: 10 rounds x 40 knowledge-storing steps
ROW_SCHEDULE = {"fast": "fast", "cmi": "cmi", "real": "cmi"}  # the real row trains like the original default
# what the real-data prompt takes from the fast row (its schedule, and --set), so that the ratio is like for like
REAL_ROW_SETTINGS = ("label_mapping",)
DEFAULT_RINGS = [36, 64]


def parse_args():
    parser = benchmark_parser(SeededBenchmarkArguments, __doc__, seeds=[0, 1, 2])  # --set: the fast row's
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--budgets", type=int, nargs="+", default=[1, 2, 4, 8], help="multiples of 400 prompt updates")
    parser.add_argument(
        "--ring-sizes",
        type=int,
        nargs="+",
        default=DEFAULT_RINGS,
        help="outer side of each ring, for every row (other sizes name the variant and pair with the real row of "
        "the same rings)",
    )
    parser.add_argument("--plot", help="write the accuracy-against-wall-time plot (PNG) here")
    parser.add_argument("--report", action="store_true", help="only print the table (and plot) of the --json file")
    return parse_benchmark_args(parser)


def bench_args(args, row: str, budget: int) -> argparse.Namespace:
    """What ``quality.Bench`` reads for one row at one budget: the row's schedule with ``budget`` x its rounds (a
    ``--set kd_steps=N`` changes the rounds, so that the budget stays N x 400 prompt updates)."""
    schedule = SCHEDULES[ROW_SCHEDULE[row]]
    if row == "real":
        schedule = schedule | {key: value for key, value in SCHEDULES["fast"].items() if key in REAL_ROW_SETTINGS}
    schedule = schedule | dict(row_settings(args, row))  # a new dict: SCHEDULES stays as it is
    rounds = budget * UNIT_UPDATES // schedule["kd_steps"]
    overrides = {k: v for k, v in schedule.items() if k not in ("rounds", "synthesis_steps", "kd_steps", "batch_size")}
    return argparse.Namespace(
        schedule=ROW_SCHEDULE[row],
        source="fashion-mnist-resnet",
        target="letters-resnet10t",
        zoo_root=args.zoo_root,
        ring_sizes=args.ring_sizes,
        rounds=rounds,
        synthesis_steps=schedule["synthesis_steps"],
        kd_steps=schedule["kd_steps"],
        batch_size=schedule["batch_size"],
        bn_weight=schedule["bn_weight"],
        learning_rate=schedule["learning_rate"],
        adv_weight=None,  # the schedule's
        reset_generator=False,
        label_mapping=None,  # the schedule's
        transfer_limit=None,
        set=list(overrides.items()),
        eval_limit=args.eval_limit,
        seeds=args.seeds,
    )


def row_settings(args, row: str) -> list[tuple[str, object]]:
    """The ``--set`` fields a row takes (they name its variant): all for the fast row, the label mapping for the
    real row, none for CMI (the earlier default, with the paper's random label map)."""
    schedule = SCHEDULES[ROW_SCHEDULE[row]]
    taken = args.set if row == "fast" else [(k, v) for k, v in args.set if row == "real" and k in REAL_ROW_SETTINGS]
    return [(key, value) for key, value in taken if schedule.get(key) != value]  # a default's value names nothing


def variant_name(args, row: str) -> str:
    """The row's settings and, where they are not the default's, its rings (every row takes them)."""
    rings = [] if args.ring_sizes == DEFAULT_RINGS else [("ring_sizes", ",".join(map(str, args.ring_sizes)))]
    return " ".join(f"{key}={value}" for key, value in [*rings, *row_settings(args, row)]) or "default"


def measure(bench: Bench, args, row: str, budget: int, seed: int) -> dict:
    bench.args, bench.seed = bench_args(args, row, budget), seed
    result = bench.real_data_prompt() if row == "real" else bench.kiop("BF")
    return {
        "row": row,
        "variant": variant_name(args, row),
        "budget": budget,
        "seed": seed,
        "prompt_updates": budget * UNIT_UPDATES,
        "rounds": bench.args.rounds,
        "source_accuracy": result["source_accuracy"],
        "target_accuracy": result["target_accuracy"],
        "retention_drop_points": result["retention_drop_points"],
        "wall_seconds": result["wall_seconds"],
        "bank_images": result.get("bank_images"),
        "ring_sizes": args.ring_sizes,
        **{key: result[key] for key in (*BANK_FIT, "bank_class_shares", "train_agreement") if key in result},
        "settings": dict(bench.args.set),
        "zoo": bench.zoo_digest,
    }


def run_key(run: dict) -> tuple:
    return run["row"], run.get("variant", "default"), run["budget"]


def stored_runs(path: str | None) -> list[dict]:
    return json.loads(Path(path).read_text())["runs"] if path and Path(path).is_file() else []


def add_run(path: str, run: dict, key: Callable[[dict], tuple], summary_of: Callable[[list[dict]], list]) -> None:
    """Adds the run to a results file, in place of an earlier run with the same key. Several calls share a file, so
    each reads it again and writes it under a lock on its folder; it holds hours of runs, so it is written to a
    temporary name and renamed into place."""
    folder = os.open(Path(path).resolve().parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        runs = [stored for stored in stored_runs(path) if key(stored) != key(run)] + [run]
        staging = Path(f"{path}.tmp")
        staging.write_text(json.dumps({"runs": runs, "summary": summary_of(runs)}, indent=2) + "\n")
        staging.replace(path)
    finally:
        os.close(folder)  # releases the lock


def check_same_zoo(runs: list[dict], digest: str, path: str) -> None:
    """Ratios pair rows across runs, so one file holds the runs of one zoo build (``zoo``: its weights' digest)."""
    builds = {run.get("zoo", "unrecorded") for run in runs} - {digest}
    if builds:
        raise SystemExit(
            f"{path} holds runs of another zoo build (zoo {', '.join(sorted(builds))}; this one is "
            f"{digest}): the zoo build differs between machines, so measure into another --json file"
        )


def summarise(runs: list[dict]) -> list[dict]:
    """One line per row, variant and budget: seed means, the accuracy's spread, and the ratio to the real row of
    the same budget and label mapping."""
    groups: dict[tuple[str, str, int], list[dict]] = {}
    for run in runs:
        groups.setdefault(run_key(run), []).append(run)
    lines = []
    order = lambda item: (ROWS.index(item[0][0]), item[0][1] != "default", item[0][1], item[0][2])  # noqa: E731
    for (row, variant, budget), group in sorted(groups.items(), key=order):
        accuracies = [r["source_accuracy"] for r in group]
        mean = lambda key: statistics.fmean(r[key] for r in group)  # noqa: E731
        lines.append(
            {
                "row": row,
                "variant": variant,
                "budget": budget,
                "prompt_updates": group[0]["prompt_updates"],
                "rounds": group[0]["rounds"],
                "seeds": sorted(r["seed"] for r in group),
                "source_accuracy": statistics.fmean(accuracies),
                "source_accuracy_sd": statistics.stdev(accuracies) if len(group) > 1 else None,
                "target_accuracy": mean("target_accuracy"),
                "retention_drop_points": mean("retention_drop_points"),
                "wall_seconds": mean("wall_seconds"),
                "bank_images": group[0]["bank_images"],
                "label_mapping": group[0].get("settings", {}).get("label_mapping", "random"),
                "ring_sizes": group[0].get("ring_sizes", DEFAULT_RINGS),
            }
        )
    for line in lines:  # a variant against the default on the seeds both ran: the seed's own spread cancels
        default = {r["seed"]: r["source_accuracy"] for r in groups.get(("fast", "default", line["budget"]), [])}
        own = {r["seed"]: r["source_accuracy"] for r in groups[(line["row"], line["variant"], line["budget"])]}
        shared = sorted(set(own) & set(default))
        paired = line["row"] == "fast" and line["variant"] != "default" and shared
        line["paired_seeds"] = shared if paired else []
        line["minus_default_same_seeds"] = (
            statistics.fmean(own[seed] - default[seed] for seed in shared) if paired else None
        )
    pairing = lambda line: (line["budget"], line["label_mapping"], tuple(line["ring_sizes"]))  # noqa: E731
    real = {pairing(line): line["source_accuracy"] for line in lines if line["row"] == "real"}
    for line in lines:
        bound = real.get(pairing(line))
        line["ratio_to_real"] = None if bound is None else line["source_accuracy"] / bound
    return lines


def print_table(lines: list[dict]) -> None:
    width = max((len(line["variant"]) for line in lines), default=7) + 2
    print(
        f"\n{'row':<6}{'variant':<{width}}{'budget':>7}{'updates':>9}{'rounds':>8}{'seeds':>11}{'source acc':>12}"
        f"{'sd':>7}{'/ real':>8}{'target':>9}{'drop':>7}{'wall s':>8}{'bank':>7}{'- default':>11}"
    )
    for line in lines:
        sd = "-" if line["source_accuracy_sd"] is None else f"{100 * line['source_accuracy_sd']:.2f}"
        ratio = "-" if line["ratio_to_real"] is None else f"{line['ratio_to_real']:.2f}"
        bank = "-" if line["bank_images"] is None else f"{line['bank_images']:,}"
        delta = line.get("minus_default_same_seeds")
        delta = "-" if delta is None else f"{100 * delta:+.2f} ({len(line['paired_seeds'])})"
        print(
            f"{line['row']:<6}{line['variant']:<{width}}{line['budget']:>6}x{line['prompt_updates']:>9,}{line['rounds']:>8}"
            f"{','.join(map(str, line['seeds'])):>11}{line['source_accuracy']:>12.2%}{sd:>7}{ratio:>8}"
            f"{line['target_accuracy']:>9.2%}{line['retention_drop_points']:>7.2f}{line['wall_seconds']:>8.0f}{bank:>7}"
            f"{delta:>11}"
        )


def plot(lines: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 4.5), dpi=120)
    labels = {"fast": "KiOP-BF, fast synthesis", "cmi": "KiOP-BF, CMI", "real": "real labelled data"}
    markers = {"fast": "o", "cmi": "s", "real": "^"}
    series = list(dict.fromkeys((line["row"], line["variant"]) for line in lines))
    colours = plt.get_cmap("tab20").colors  # one colour per line, for files with many variants
    for index, (row, variant) in enumerate(series):
        points = [line for line in lines if (line["row"], line["variant"]) == (row, variant)]
        x = [p["wall_seconds"] / 60 for p in points]
        y = [100 * p["source_accuracy"] for p in points]
        sd = [100 * (p["source_accuracy_sd"] or 0) for p in points]
        label = labels[row] + ("" if variant == "default" else f", {variant}")
        colour = colours[index % len(colours)]
        axes.errorbar(x, y, yerr=sd, marker=markers[row], color=colour, capsize=3, label=label)
        for p, xi, yi in zip(points, x, y):
            axes.annotate(f"{p['budget']}x", (xi, yi), textcoords="offset points", xytext=(4, -10), fontsize=8)
    axes.set_xlabel("wall time per run, minutes (2 CPU cores)")
    axes.set_ylabel("fashion-mnist accuracy of the prompted target, %")
    axes.set_title("Source accuracy against training time (mean ± sd over seeds)")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7)  # beside the axes, off the points
    figure.savefig(path, bbox_inches="tight")  # the title and the legend beside the axes inside the image


def main():
    args = parse_args()
    bench = None if args.report else Bench(bench_args(args, args.rows[0], args.budgets[0]))
    if bench and args.json:
        check_same_zoo(stored_runs(args.json), bench.zoo_digest, args.json)
    measured = []
    for seed in [] if args.report else args.seeds:  # rows interleaved: a slower machine phase touches every row
        for budget in args.budgets:
            for row in args.rows:
                run = measure(bench, args, row, budget, seed)
                print(f"[run] {json.dumps(run)}", flush=True)
                measured.append(run)
                if args.json:
                    add_run(args.json, run, key=lambda r: (*run_key(r), r["seed"]), summary_of=summarise)
    lines = summarise(stored_runs(args.json) if args.json else measured)  # with the runs of parallel calls
    print_table(lines)
    if args.plot:
        plot(lines, args.plot)
        print(f"plot written to {args.plot}")


if __name__ == "__main__":
    main()
