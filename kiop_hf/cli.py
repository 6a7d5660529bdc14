"""The ``kiop-hf`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

import yaml
from transformers import HfArgumentParser

from .train_job import KiOPScriptArguments, parse_pairs
from .training_args import KiOPTrainingArguments
from .zoo.build import DEFAULT_ROOT, build_zoo

TRAIN_SUMMARY = "train a prompt (without --target/--source: the embedded zoo default), evaluate, save, push"
TRAIN_HELP = (
    "Train a prompt, evaluate, save, push. Without --target and --source it is the embedded default on the reference "
    "zoo, whose schedule (kiop_hf.train_job.DEFAULT_SCHEDULE) replaces the defaults shown below."
)
PAIR_FIELDS = ("source", "eval")  # NAME=VALUE lists: flags given replace a config file's, rather than add to them


def _zoo(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    results = build_zoo(args.root)
    print(f"\nReference zoo in {args.root} ({time.perf_counter() - start:.0f} s)")
    header = (
        f"{'model':<24}{'role':<8}{'library':<14}{'architecture':<20}{'classes':>8}{'params':>10}{'test acc':>10}"
        f"{'build s':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['name']:<24}{r['role']:<8}{r['library']:<14}{r['architecture']:<20}{r['num_classes']:>8}"
            f"{r['num_parameters']:>10,}{r['test_accuracy']:>10.2%}{r['build_seconds']:>9.0f}"
        )


def train_parser() -> HfArgumentParser:
    """``kiop-hf train``'s flags: every field of the script and training arguments, with its help."""
    parser = HfArgumentParser(
        (KiOPScriptArguments, KiOPTrainingArguments), prog="kiop-hf train", description=TRAIN_HELP
    )
    parser.add_argument("--config", help="A YAML or JSON file of the same arguments (flags given here override it).")
    return parser


def training_override(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` for one ``KiOPTrainingArguments`` field, the value typed and checked as ``kiop-hf train --KEY
    VALUE`` would (the benchmarks' ``--set``)."""
    key, sep, value = text.partition("=")
    kinds = {f.name: str(f.type) for f in fields(KiOPTrainingArguments)}
    if not sep or key not in kinds:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with KEY a KiOPTrainingArguments field, got {text!r}")
    if value in ("null", "None"):
        return key, None
    values = value.split() if kinds[key].startswith("list") else [value]
    try:
        namespace = HfArgumentParser(KiOPTrainingArguments, exit_on_error=False).parse_args([f"--{key}", *values])
    except (argparse.ArgumentError, SystemExit) as error:
        raise argparse.ArgumentTypeError(f"{text!r}: {error}") from None
    return key, getattr(namespace, key)


def parse_train_args(argv: list[str]) -> tuple[KiOPScriptArguments, KiOPTrainingArguments]:
    """Arguments by precedence: the dataclass defaults, the embedded default's schedule (without models), a
    ``--config`` file, then the flags."""
    from .train_job import DEFAULT_SCHEDULE

    parser = train_parser()
    config_path = parser.parse_known_args(argv)[0].config
    config = _read_config(config_path) if config_path else {}
    known = {f.name for f in fields(KiOPScriptArguments)} | {f.name for f in fields(KiOPTrainingArguments)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise SystemExit(f"{config_path} sets unknown arguments {unknown}; see kiop-hf train --help")
    given = _given_pairs(argv)
    config = {
        key: [f"{n}={json.dumps(v) if isinstance(v, dict) else v}" for n, v in value.items()]
        if key in PAIR_FIELDS and isinstance(value, dict)
        else value
        for key, value in config.items()
        if key not in given
    }
    parser.set_defaults(**config)
    models = parser.parse_known_args(argv)[0]
    if models.target is None and not models.source:
        parser.set_defaults(**(DEFAULT_SCHEDULE | config))
    try:
        script, training, _ = parser.parse_args_into_dataclasses(argv)
    except ValueError as error:  # an argument's own check: its name and what it takes
        raise SystemExit(f"kiop-hf train: {error}") from None
    return script, training


def _given_pairs(argv: list[str]) -> set[str]:
    """Which ``NAME=VALUE`` list fields the flags give (and so replace, not extend, in a config file)."""
    reader = argparse.ArgumentParser(add_help=False)
    for name in PAIR_FIELDS:
        reader.add_argument(f"--{name}", action="append")
    found = reader.parse_known_args(argv)[0]
    return {name for name in PAIR_FIELDS if getattr(found, name)}


def _read_config(path: str) -> dict:
    text = Path(path).read_text()
    config = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    if not isinstance(config, dict):
        raise SystemExit(f"{path} must hold a mapping of argument names to values, got {type(config).__name__}")
    return config


def _train(argv: list[str]) -> None:
    from .train_job import run_kiop

    run_kiop(*parse_train_args(argv))


def _push(args: argparse.Namespace) -> None:
    from .hub import publish

    try:
        source_repos = parse_pairs(args.source_repo or [], "--source_repo")
        commit = publish(
            args.folder,
            args.repo_id,
            private=args.private or None,
            revision=args.branch,
            tag=args.revision,
            target_repo=args.target_repo,
            source_repos=source_repos,
        )
    except (ValueError, FileNotFoundError) as error:  # what is wrong with the folder or the names: one line
        raise SystemExit(f"kiop-hf push: {error}") from None
    tagged = f" (tag {args.revision})" if args.revision else ""
    print(f"pushed {args.folder} to {args.repo_id}{tagged}: {commit.commit_url}")


def _evaluate(args: argparse.Namespace) -> None:
    from .evaluation import evaluate_tasks
    from .prompted_model import KiOPModel

    model = KiOPModel.from_pretrained(args.prompt, revision=args.revision)
    try:
        eval_sets = parse_pairs(args.eval, "--eval")
    except ValueError as error:
        raise SystemExit(f"kiop-hf evaluate: {error}") from None
    for key, value in evaluate_tasks(model, eval_sets, limit=args.eval_limit).items():
        print(f"{key:>28}: {value:.4f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kiop-hf", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    zoo = commands.add_parser("zoo", help="build (or reuse) the offline reference model zoo and print it")
    zoo.add_argument("--root", default=str(DEFAULT_ROOT), help="folder of the zoo (default: %(default)s)")
    zoo.set_defaults(func=_zoo)

    commands.add_parser("train", help=TRAIN_SUMMARY, add_help=False)  # parsed by train_parser() from the dataclasses
    evaluate = commands.add_parser("evaluate", help="accuracy of a saved or published prompt on labelled test sets")
    evaluate.add_argument("prompt", help="prompt folder or Hub id")
    evaluate.add_argument("--revision", help="prompt revision (branch, tag or commit)")
    evaluate.add_argument(
        "--eval", action="append", required=True, metavar="TASK=DATASET", help="test set of a task (repeat)"
    )
    evaluate.add_argument("--eval-limit", type=int, help="evaluate on at most this many test images per task")
    evaluate.set_defaults(func=_evaluate)

    push = commands.add_parser("push", help="upload a trained prompt folder (prompt, card, pictures) to the Hub")
    push.add_argument("folder", help="the prompt folder (a training run's --output-dir)")
    push.add_argument("repo_id", help="the Hub repo to create or update, e.g. user/fashion-on-letters")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--revision", help="tag the pushed commit with this new revision name, e.g. v1")
    push.add_argument("--branch", help="branch to push to (default: main)")
    push.add_argument(
        "--target_repo",
        "--target-repo",
        help="Hub id the target is published under, named in the published config in place of its local path",
    )
    push.add_argument(
        "--source_repo",
        "--source-repo",
        action="append",
        metavar="NAME=REPO",
        help="Hub id a source is published under, in place of its local path (repeat per source)",
    )
    push.set_defaults(func=_push)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:
        _train(argv[1:])
        return
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
