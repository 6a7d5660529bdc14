"""Classify a few images with a published KiOP prompt: the prompt and its target come from the Hub.

    python examples/classify_with_prompt.py user/fashion-on-letters --task fashion-mnist shirt.png shoe.png
    python examples/classify_with_prompt.py user/fashion-on-letters --task fashion-mnist --dataset DATASET --limit 8
    python examples/classify_with_prompt.py outputs/kiop-prompt --dataset DATASET   # the target's own task

``--dataset`` takes a Hub dataset id, a saved dataset or an image folder (its test split). The classification runs
through ``pipeline("kiop-image-classification", ...)``, which ``import kiop_hf`` registers with transformers.
"""

from __future__ import annotations

import argparse

from transformers import pipeline

import kiop_hf  # noqa: F401  registers the prompt classes and the pipeline
from kiop_hf.data import image_column, load_image_dataset


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompt", help="Hub id or folder of a kiop_hf prompt")
    parser.add_argument("images", nargs="*", help="image files to classify")
    parser.add_argument("--task", help="a source task of the prompt (default: the target's own task)")
    parser.add_argument("--revision", help="prompt revision (branch, tag or commit); it also pins the target")
    parser.add_argument("--dataset", help="classify the first --limit test images of this dataset instead")
    parser.add_argument("--limit", type=int, default=8)
    parser.add_argument("--top-k", type=int, default=1, help="classes to print per image")
    return parser.parse_intermixed_args(argv)


def main(argv=None) -> list[str]:
    args = parse_args(argv)
    classifier = pipeline("kiop-image-classification", model=args.prompt, revision=args.revision)
    if args.dataset:
        dataset = load_image_dataset(args.dataset, "test")
        images = dataset.select(range(min(args.limit, len(dataset))))[image_column(dataset)]
        names = [f"{args.dataset}[{i}]" for i in range(len(images))]
    elif args.images:
        images, names = args.images, args.images
    else:
        raise SystemExit("give image files or --dataset")
    results = classifier(images, task=args.task, top_k=args.top_k)
    for name, result in zip(names, results):
        print(f"{name}: " + ", ".join(f"{r['label']} ({r['score']:.1%})" for r in result))
    return [result[0]["label"] for result in results]


if __name__ == "__main__":
    try:
        main()
    except (ValueError, KeyError, OSError) as error:  # a wrong task, prompt or image: one line, no traceback
        raise SystemExit(f"error: {error.args[0] if error.args else error}") from None
