"""Real images in, uint8 tensors out: the one conversion behind evaluation sets and preservation/transfer sets."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image


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
    """PIL images -> (N, C, H, W) uint8, converted to ``num_channels`` and resized to ``image_size`` if needed."""
    mode = "L" if num_channels == 1 else "RGB"
    arrays = []
    for image in images:
        image = image.convert(mode)
        if image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.BILINEAR)
        array = np.asarray(image)
        arrays.append(array[..., None] if array.ndim == 2 else array)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


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


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float pixels in [0, 1]; float images pass unchanged."""
    return images.float().div(255.0) if images.dtype == torch.uint8 else images

