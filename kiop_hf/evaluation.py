"""Evaluation of a prompted target on real labelled test sets, with a metric module shipped in the package."""

from __future__ import annotations

from pathlib import Path

import torch

from .configuration_kiop import TARGET_TASK
from .data import dataset_tensors, to_unit_range
from .modeling_kiop import KiOPModel

ACCURACY_METRIC = Path(__file__).parent / "metrics" / "accuracy"


def load_accuracy_metric():
    import evaluate  # imported here: it takes seconds and only evaluation needs it

    return evaluate.load(str(ACCURACY_METRIC))


@torch.no_grad()
def predict(classify, images: torch.Tensor, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """Top-1 predictions of ``classify`` (pixels in [0, 1] -> logits) over uint8 or float images, in batches."""
    batches = (to_unit_range(images[i : i + batch_size]).to(device) for i in range(0, len(images), batch_size))
    return torch.cat([classify(batch).argmax(-1).cpu() for batch in batches])


def evaluate_tasks(model: KiOPModel, test_sets: dict, batch_size: int = 256, limit: int | None = None) -> dict[str, float]:
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

        def score(classify) -> float:
            predictions = predict(classify, images, device, batch_size)
            return metric.compute(predictions=predictions, references=labels)["accuracy"]

        results[task] = score(lambda x: model(x, task=task))
        if task == TARGET_TASK:
            results["target/unprompted"] = score(model.target)
            results["target/retention_drop"] = 100 * (results["target/unprompted"] - results[TARGET_TASK])
    return results
