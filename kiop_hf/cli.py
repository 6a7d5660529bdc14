"""The ``kiop-hf`` command line."""

from __future__ import annotations

import argparse
import time

from .zoo.build import DEFAULT_ROOT, build_zoo


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kiop-hf", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    zoo = commands.add_parser("zoo", help="build (or reuse) the offline reference model zoo and print it")
    zoo.add_argument("--root", default=str(DEFAULT_ROOT), help="folder of the zoo (default: %(default)s)")
    zoo.set_defaults(func=_zoo)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
