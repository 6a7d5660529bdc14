"""Classify a few images with a published KiOP prompt: the prompt and its target come from the Hub.

    python examples/classify_with_prompt.py user/fashion-on-letters --task fashion_mnist shirt.png shoe.png
    python examples/classify_with_prompt.py user/fashion-on-letters --task fashion_mnist --dataset DATASET --limit 8
    python examples/classify_with_prompt.py outputs/kiop-prompt --dataset DATASET   # the target's own task

``--dataset`` takes a Hub dataset id, a saved dataset or an image folder (its test split).
"""

from __future__ import annotations

import argparse

import torch
from PIL import Image

from kiop_hf import KiOPModel
from kiop_hf.data import dataset_tensors, images_to_tensor
from kiop_hf.pixels import to_unit_range


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompt", help="Hub id or folder of a kiop_hf prompt")
    parser.add_argument("images", nargs="*", help="image files to classify")
    parser.add_argument("--task", help="a source task of the prompt (default: the target's own task)")
    parser.add_argument("--revision", help="prompt revision (branch, tag or commit); it also pins the target")
    parser.add_argument("--dataset", help="classify the first --limit test images of this dataset instead")
    parser.add_argument("--limit", type=int, default=8)
    return parser.parse_intermixed_args(argv)


def main(argv=None) -> list[str]:
    args = parse_args(argv)
    model = KiOPModel.from_pretrained(args.prompt, revision=args.revision)
    config = model.config
    channels = config.source(args.task)["num_channels"] if args.task else config.num_channels
    if args.dataset:
        images, _ = dataset_tensors(args.dataset, config.image_size, channels, "test", args.limit)
        names = [f"{args.dataset}[{i}]" for i in range(len(images))]
    elif args.images:
        images = images_to_tensor([Image.open(path) for path in args.images], config.image_size, channels)
        names = args.images
    else:
        raise SystemExit("give image files or --dataset")
    with torch.no_grad():
        probabilities = model(to_unit_range(images), task=args.task).softmax(-1)
    class_names = model.class_names(args.task)
    predicted = []
    for name, row in zip(names, probabilities):
        index = int(row.argmax())
        predicted.append(class_names[index])
        print(f"{name}: {class_names[index]} ({row[index]:.1%})")
    return predicted


if __name__ == "__main__":
    main()
