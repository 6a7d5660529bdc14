"""Real image sets in, uint8 tensors out: evaluation sets and preservation/transfer sets, from datasets or folders."""

from __future__ import annotations

import os

import torch

from .pixels import pil_to_pixels, to_uint8


def load_image_dataset(source, split: str = "train"):
    """A ``datasets.Dataset`` from a Dataset, a DatasetDict (``split`` is taken), a saved dataset folder
    (``save_to_disk``), an image folder (``imagefolder`` layout) or a Hub dataset id."""
    from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

    if isinstance(source, Dataset):
        return source
    if isinstance(source, DatasetDict):
        return source[split]
    path = os.path.expanduser(os.fspath(source))
    if not os.path.exists(path) and (os.path.isabs(path) or path.startswith(".") or path.count("/") > 1):
        raise FileNotFoundError(f"no such folder: {path} (a dataset is a local folder or a Hub id 'namespace/name')")
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "dataset_dict.json")) or os.path.isfile(os.path.join(path, "state.json")):
            loaded = load_from_disk(path)
            return loaded[split] if isinstance(loaded, DatasetDict) else loaded
        return load_dataset("imagefolder", data_dir=path, split=split)
    return load_dataset(path, split=split)


def image_column(dataset) -> str:
    for name, feature in dataset.features.items():
        if type(feature).__name__ == "Image":
            return name
    raise ValueError(f"the dataset has no image column; its features are {list(dataset.features)}")


def images_to_tensor(images, image_size: int, num_channels: int) -> torch.Tensor:
    """PIL images of any size and mode -> (N, C, H, W) uint8 at ``image_size`` with ``num_channels``, converted by
    the same functions the models' inputs go through (``pixels.pil_to_pixels``)."""
    return torch.stack([to_uint8(pil_to_pixels(image, image_size, num_channels)) for image in images])


def dataset_tensors(
    source, image_size: int, num_channels: int, split: str = "train", limit: int | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images (uint8, N x C x H x W) and labels (if the dataset has a ``label`` column) of a dataset split."""
    dataset = load_image_dataset(source, split)
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    images = images_to_tensor(dataset[image_column(dataset)], image_size, num_channels)
    labels = torch.tensor(dataset["label"]) if "label" in dataset.column_names else None
    return images, labels
