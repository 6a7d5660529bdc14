"""The ``kiop-hf`` command line."""

from __future__ import annotations

import argparse
import time
from dataclasses import fields

from .training_args import PRESERVATION_MODES, TRANSFER_MODES, KiOPTrainingArguments
from .zoo.build import DEFAULT_ROOT, build_zoo

# Training arguments exposed as flags (the rest keep their reference defaults).
_TRAINING_FLAGS = (
    "rounds", "synthesis_steps", "kd_steps", "batch_size", "seed", "learning_rate", "temperature", "synthesizer",
    "preservation_weight", "save_every_rounds", "logging_steps", "eval_limit", "hub_model_id", "label_mapping",
    "label_mapping_refresh_rounds", "bn_weight", "adv_weight", "oh_weight", "cr_weight", "data_bank_size",
    "recent_share", "mixed_precision", "latent_lr", "meta_step", "bn_momentum",
)  # fmt: skip


def _zoo(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    results = build_zoo(args.root)
    print(f"\nReference zoo in {args.root} ({time.perf_counter() - start:.0f} s)")
    header = f"{'model':<24}{'role':<8}{'library':<14}{'architecture':<20}{'classes':>8}{'params':>10}{'test acc':>10}{'build s':>9}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['name']:<24}{r['role']:<8}{r['library']:<14}{r['architecture']:<20}{r['num_classes']:>8}"
            f"{r['num_parameters']:>10,}{r['test_accuracy']:>10.2%}{r['build_seconds']:>9.0f}"
        )


def _pairs(values: list[str] | None, flag: str) -> dict[str, str]:
    pairs = {}
    for value in values or []:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"{flag} expects NAME=MODEL_OR_PATH, got {value!r}")
        if name in pairs:
            raise SystemExit(f"{flag} names {name!r} twice ({pairs[name]!r} and {path!r}); give each name once")
        pairs[name] = path
    return pairs


def _train(args: argparse.Namespace) -> None:
    from .pipeline import DEFAULT_SCHEDULE, KiOPJob, run_kiop, with_zoo_defaults

    embedded = args.target is None and not args.source
    if (args.target is None) != (not args.source):
        raise SystemExit("give both --target and at least one --source, or neither for the embedded default")
    overrides = {name: getattr(args, name) for name in _TRAINING_FLAGS if getattr(args, name) is not None}
    training = KiOPTrainingArguments(
        output_dir=args.output_dir,
        preservation=args.preservation,
        transfer_data=args.transfer_data,
        push_to_hub=args.push_to_hub,
        report_to=args.report_to or [],
        use_cpu=args.cpu,
        **((DEFAULT_SCHEDULE if embedded else {}) | overrides),
    )
    job = KiOPJob(
        training=training,
        target=args.target,
        sources=_pairs(args.source, "--source"),
        image_size=args.image_size,
        ring_sizes=args.ring_sizes,
        preservation_images=args.preservation_images,
        transfer_images=args.transfer_images,
        eval_sets=_pairs(args.eval, "--eval"),
        resume_from_checkpoint=args.resume,
    )
    if embedded:
        job = with_zoo_defaults(job, args.zoo_root)
    run_kiop(job)


def _push(args: argparse.Namespace) -> None:
    from .hub import push_prompt_folder

    commit = push_prompt_folder(args.folder, args.repo_id, private=args.private or None, revision=args.revision)
    print(f"pushed {args.folder} to {args.repo_id}: {commit.commit_url}")


def _evaluate(args: argparse.Namespace) -> None:
    from .evaluation import evaluate_tasks
    from .modeling_kiop import KiOPModel

    model = KiOPModel.from_pretrained(args.prompt, revision=args.revision)
    for key, value in evaluate_tasks(model, _pairs(args.eval, "--eval"), limit=args.eval_limit).items():
        print(f"{key:>28}: {value:.4f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kiop-hf", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    zoo = commands.add_parser("zoo", help="build (or reuse) the offline reference model zoo and print it")
    zoo.add_argument("--root", default=str(DEFAULT_ROOT), help="folder of the zoo (default: %(default)s)")
    zoo.set_defaults(func=_zoo)

    train = commands.add_parser(
        "train", help="train a prompt (without --target/--source: the embedded zoo default), evaluate, save"
    )
    train.add_argument("--target", help="target model: Hub id or folder (transformers or timm)")
    train.add_argument("--source", action="append", metavar="NAME=MODEL", help="a source task and its model (repeat)")
    train.add_argument("--eval", action="append", metavar="TASK=DATASET", help="labelled test set of a task ('target' for its own)")
    train.add_argument("--output-dir", default="outputs/kiop-prompt")
    train.add_argument("--image-size", type=int, default=32)
    train.add_argument("--ring-sizes", type=int, nargs="+", default=[36, 64])
    train.add_argument("--preservation", choices=PRESERVATION_MODES, default="BF")
    train.add_argument("--preservation-images", help="unlabelled target-domain images for --preservation B")
    train.add_argument("--transfer-data", choices=TRANSFER_MODES, default="synthetic",
                       help="read the sources' knowledge from synthetic data, real unlabelled images, or both")  # fmt: skip
    train.add_argument("--transfer-images", help="unlabelled images of the sources' domain for --transfer-data")
    train.add_argument("--push-to-hub", action="store_true", help="push the prompt and its card to --hub-model-id")
    train.add_argument("--resume", action="store_true", help="resume from the last checkpoint in --output-dir")
    train.add_argument("--report-to", nargs="*", help="accelerate trackers (tensorboard, wandb, ...)")
    train.add_argument("--cpu", action="store_true", help="run on CPU even if a GPU is present")
    train.add_argument("--zoo-root", default=str(DEFAULT_ROOT), help="zoo folder for the embedded default")
    types = {f.name: f.type for f in fields(KiOPTrainingArguments)}
    for name in _TRAINING_FLAGS:
        kind = {"int": int, "float": float, "str": str, "int | None": int, "str | None": str,
                "float | None": float}[str(types[name])]
        train.add_argument(f"--{name.replace('_', '-')}", type=kind, help=f"KiOPTrainingArguments.{name}")
    train.set_defaults(func=_train)

    evaluate = commands.add_parser("evaluate", help="accuracy of a saved or published prompt on labelled test sets")
    evaluate.add_argument("prompt", help="prompt folder or Hub id")
    evaluate.add_argument("--revision", help="prompt revision (branch, tag or commit)")
    evaluate.add_argument("--eval", action="append", required=True, metavar="TASK=DATASET", help="test set of a task (repeat)")
    evaluate.add_argument("--eval-limit", type=int, help="evaluate on at most this many test images per task")
    evaluate.set_defaults(func=_evaluate)

    push = commands.add_parser("push", help="upload a trained prompt folder (prompt, card, pictures) to the Hub")
    push.add_argument("folder", help="the prompt folder (a training run's --output-dir)")
    push.add_argument("repo_id", help="the Hub repo to create or update, e.g. user/fashion-on-letters")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--revision", help="branch to push to")
    push.set_defaults(func=_push)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
