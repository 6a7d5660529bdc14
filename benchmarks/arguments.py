"""The arguments the benchmarks share, as dataclasses whose fields carry their help (parsed by HfArgumentParser,
as ``kiop-hf train`` is), so ``--zoo-root``, ``--json``, ``--seeds``, ``--eval-limit`` and ``--set`` mean the same
in every script. A script adds its own flags to the parser it gets here."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from transformers import HfArgumentParser

from kiop_hf.cli import training_override
from kiop_hf.training_args import field_help
from kiop_hf.zoo.build import DEFAULT_ROOT


@dataclass
class BenchmarkArguments:
    """What every benchmark takes."""

    zoo_root: str = field(
        default=str(DEFAULT_ROOT),
        metadata=field_help("Folder of the reference zoo (its models are built if missing)."),
    )
    json: str | None = field(
        default=None, metadata=field_help("Also write the figures to this JSON file (runs are added to it).")
    )


@dataclass
class SeededBenchmarkArguments(BenchmarkArguments):
    """What every benchmark that trains over seeds takes: data-free figures move by several points with the seed."""

    seeds: list[int] = field(default_factory=lambda: [0], metadata=field_help("One run per seed."))
    eval_limit: int = field(default=2000, metadata=field_help("Test images per task."))
    set: list[str] = field(
        default_factory=list,
        metadata=field_help(
            "Any other KiOPTrainingArguments field as KEY=VALUE, typed and checked as kiop-hf train --KEY VALUE "
            "(e.g. --set recent_share=0.5 kd_flip=true).",
            metavar="KEY=VALUE",
        ),
    )


def benchmark_parser(arguments: type[BenchmarkArguments], doc: str, **defaults) -> HfArgumentParser:
    """A parser for ``arguments`` (its defaults replaced by ``defaults``) with the script's docstring as help."""
    parser = HfArgumentParser(arguments, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.set_defaults(**defaults)
    return parser


def parse_benchmark_args(parser: HfArgumentParser) -> argparse.Namespace:
    """The parsed flags, ``--set`` as (KEY, typed value) pairs."""
    args = parser.parse_args()
    if hasattr(args, "set"):
        try:
            args.set = [training_override(text) for text in args.set]
        except argparse.ArgumentTypeError as error:
            parser.error(f"--set: {error}")
    return args
