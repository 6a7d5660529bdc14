"""Evaluation of a prompted target on real labelled test sets, with a metric module shipped in the package."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch

from .configuration_kiop import TARGET_TASK
from .data import dataset_tensors, image_column, load_image_dataset
from .pixels import to_unit_range
from .prompted_model import KiOPModel

ACCURACY_METRIC = Path(__file__).parent / "metrics" / "accuracy"


def load_accuracy_metric():
    import evaluate  # imported here: it takes seconds and only evaluation needs it

    return evaluate.load(str(ACCURACY_METRIC))


@torch.no_grad()
def predict(classify, images: torch.Tensor, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """Top-1 predictions of ``classify`` (pixels in [0, 1] -> logits) over uint8 or float images, in batches."""
    batches = (to_unit_range(images[i : i + batch_size]).to(device) for i in range(0, len(images), batch_size))
    return torch.cat([classify(batch).argmax(-1).cpu() for batch in batches])


def check_test_set(task: str, test_set, num_classes: int) -> None:
    """Open a task's labelled test set and check it can be scored (images, labels in range, not empty) without
    decoding its images: a bad eval set must fail before training, not after it."""
    where = f"eval set of task {task!r}"
    if isinstance(test_set, tuple):
        if len(test_set) != 2:
            raise ValueError(f"the {where} must be (images, labels), got a tuple of {len(test_set)}")
        images, labels = test_set
        if not (isinstance(images, torch.Tensor) and images.ndim == 4):
            raise ValueError(
                f"the {where}: images must be a (N, C, H, W) tensor, got {getattr(images, 'shape', type(images))}"
            )
        labels = torch.as_tensor(labels)
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"the {where}: {len(images)} images need as many labels, got shape {tuple(labels.shape)}")
        labels = labels.tolist()
    else:
        dataset = load_image_dataset(test_set, "test")
        image_column(dataset)
        if "label" not in dataset.column_names:
            raise ValueError(f"the {where} ({test_set}) has no 'label' column; its columns are {dataset.column_names}")
        labels = dataset["label"]
    if not labels:
        raise ValueError(f"the {where} is empty")
    if not all(isinstance(label, int) and 0 <= label < num_classes for label in labels):
        bad = next(label for label in labels if not (isinstance(label, int) and 0 <= label < num_classes))
        raise ValueError(f"the {where} has label {bad!r}; the task has {num_classes} classes (0 to {num_classes - 1})")


def evaluate_tasks(
    model: KiOPModel, test_sets: dict, batch_size: int = 256, limit: int | None = None
) -> dict[str, float]:
    """Accuracy per task on real labelled test sets (task name -> dataset, path, or (images, labels) tensors).

    For the target's own task (``"target"``) it reports the accuracy with the core ring attached and without any
    prompt, and their difference (``target/retention_drop``, in accuracy points).
    """
    metric = load_accuracy_metric()
    config, results = model.config, {}
    device = model.prompt.device
    model.eval()
    for task, test_set in test_sets.items():
        channels = config.num_channels if task == TARGET_TASK else config.source(task)["num_channels"]
        if isinstance(test_set, tuple):
            images, labels = test_set
        else:
            images, labels = dataset_tensors(test_set, config.image_size, channels, "test", limit)

        score = partial(accuracy, images=images, labels=labels, device=device, batch_size=batch_size, metric=metric)
        results[task] = score(partial(model, task=task))
        if task == TARGET_TASK:
            results["target/unprompted"] = score(model.target)
            results["target/retention_drop"] = 100 * (results["target/unprompted"] - results[TARGET_TASK])
    return results


def accuracy(classify, images, labels, device=None, batch_size: int = 256, metric=None) -> float:
    """Top-1 accuracy of ``classify`` (pixels in [0, 1] -> logits) on labelled uint8 or float images, computed by
    the shipped ``evaluate`` metric: the one accuracy of the library, the zoo's and the prompts'."""
    predictions = predict(classify, images, device or torch.device("cpu"), batch_size)
    return (metric or load_accuracy_metric()).compute(predictions=predictions, references=labels)["accuracy"]
