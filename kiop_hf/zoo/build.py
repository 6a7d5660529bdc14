"""Build the reference model zoo: small classifiers trained here on real data, saved in Hub layout.

Every model is trained deterministically on CPU, saved the way its library publishes models (timm's
``save_for_hf`` layout or transformers' ``save_pretrained`` + image processor), reloaded through
``load_classifier`` and evaluated on its real test set; the accuracy goes into ``results.json`` in its folder.
A model whose folder already holds results for the same spec is not rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..classifiers import FrozenClassifier, load_classifier
from ..evaluation import accuracy
from ..folding import logits_of
from . import data
from .augment import random_affine, random_canvas

# Bump when the data or training procedure changes, so cached models are rebuilt.
ZOO_VERSION = 1
DEFAULT_ROOT = Path(os.environ.get("KIOP_HF_ZOO", Path.home() / ".cache" / "kiop_hf" / "zoo"))

DATASETS: dict[str, Callable[[], data.ImageSplits]] = {
    "fashion-mnist": data.load_fashion_mnist,
    "mnist": data.load_mnist_subset,
    "digits": data.load_digits,
    "letters": data.render_letters,
}


@dataclass(frozen=True)
class ZooModelSpec:
    """One zoo model: which data, which library and architecture, and how long to train it."""

    name: str
    dataset: str
    role: str  # "source" or "target"
    library: str  # "timm" or "transformers"
    architecture: str
    model_args: dict = field(default_factory=dict)
    steps: int = 1000
    batch_size: int = 128
    learning_rate: float = 3e-3
    seed: int = 0
    # Canvas sides to train on besides the native one (images placed on a random flat border), so a target
    # reads its images inside prompt rings and at larger inputs.
    canvas_sizes: tuple[int, ...] = ()

    def fingerprint(self) -> str:
        payload = json.dumps({"zoo_version": ZOO_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


REFERENCE_ZOO = (
    ZooModelSpec("fashion-mnist-resnet", "fashion-mnist", "source", "timm", "test_resnet", steps=1800),
    ZooModelSpec(
        "mnist-resnet",
        "mnist",
        "source",
        "transformers",
        "resnet",
        {"embedding_size": 16, "hidden_sizes": [16, 32, 64, 128], "depths": [1, 1, 1, 1], "layer_type": "basic"},
        steps=600,
    ),
    ZooModelSpec("digits-efficientnet", "digits", "source", "timm", "test_efficientnet", steps=500),
    ZooModelSpec(
        "letters-resnet10t",
        "letters",
        "target",
        "timm",
        "resnet10t",
        {"channels": [32, 64, 128, 256]},
        steps=2000,
        canvas_sizes=(36, 40, 48, 64),
    ),
)


def _create_model(spec: ZooModelSpec, num_channels: int, class_names: list[str]) -> nn.Module:
    if spec.library == "timm":
        import timm

        return timm.create_model(
            spec.architecture, num_classes=len(class_names), in_chans=num_channels, **spec.model_args
        )
    from transformers import AutoConfig, AutoModelForImageClassification

    config = AutoConfig.for_model(
        spec.architecture,
        num_channels=num_channels,
        id2label=dict(enumerate(class_names)),
        label2id={name: i for i, name in enumerate(class_names)},
        **spec.model_args,
    )
    return AutoModelForImageClassification.from_config(config)


def _save_model(model: nn.Module, spec: ZooModelSpec, folder: Path, splits: data.ImageSplits, mean, std) -> None:
    size = data.IMAGE_SIZE
    if spec.library == "timm":
        from timm.models import save_for_hf

        save_for_hf(
            model,
            str(folder),
            model_config={"label_names": splits.class_names},
            data_config={
                "input_size": (splits.num_channels, size, size),
                "mean": tuple(mean),
                "std": tuple(std),
                "crop_pct": 1.0,
                "interpolation": "bilinear",
            },
            safe_serialization=True,
        )
        return
    from transformers import ViTImageProcessor

    model.save_pretrained(folder)
    ViTImageProcessor(
        size={"height": size, "width": size}, image_mean=list(mean), image_std=list(std)
    ).save_pretrained(folder)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(N, H, W, C) uint8 -> (N, C, H, W) float in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)


def train_classifier(
    spec: ZooModelSpec, splits: data.ImageSplits, log: Callable[[str], None] = print
) -> tuple[nn.Module, list[float], list[float]]:
    """Train ``spec``'s model from scratch on the training split; returns it with the normalisation it used.

    Ten times per run it logs the step, the epoch, and the loss and accuracy on the training batches since the
    last line, so a first build that takes minutes shows how far it is."""
    torch.manual_seed(spec.seed)
    generator = torch.Generator().manual_seed(spec.seed)
    images, labels = to_tensor(splits.train_images), torch.from_numpy(splits.train_labels)
    mean = images.mean(dim=(0, 2, 3)).tolist()
    std = images.std(dim=(0, 2, 3)).tolist()
    model = _create_model(spec, splits.num_channels, splits.class_names)
    # Training sees the model through the same normalising wrapper as every later user, but unfrozen.
    normalise = FrozenClassifier(model, class_names=splits.class_names, image_size=data.IMAGE_SIZE, mean=mean, std=std)
    model.requires_grad_(True).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, spec.learning_rate, total_steps=spec.steps)
    order = torch.empty(0, dtype=torch.long)
    every = max(1, spec.steps // 10)
    seen = correct = 0
    loss_sum = 0.0
    for step in range(1, spec.steps + 1):
        if len(order) < spec.batch_size:
            order = torch.cat([order, torch.randperm(len(images), generator=generator)])
        batch, order = order[: spec.batch_size], order[spec.batch_size :]
        x = random_affine(images[batch], generator)
        sizes = (data.IMAGE_SIZE, *spec.canvas_sizes)
        size = sizes[int(torch.randint(len(sizes), (1,), generator=generator))]
        if size != data.IMAGE_SIZE:
            x = random_canvas(x, size, generator)
        logits = logits_of(model((x - normalise.mean) / normalise.std))
        loss = F.cross_entropy(logits, labels[batch], label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        seen += len(batch)
        correct += (logits.argmax(-1) == labels[batch]).sum().item()
        loss_sum += loss.item() * len(batch)
        if step % every == 0 or step == spec.steps:
            epoch = step * spec.batch_size / len(images)
            log(
                f"[zoo] {spec.name}: step {step}/{spec.steps} (epoch {epoch:.1f}), loss {loss_sum / seen:.3f}, "
                f"training accuracy {correct / seen:.2%}"
            )
            seen = correct = 0
            loss_sum = 0.0
    return model.eval(), mean, std


def build_model(spec: ZooModelSpec, root: Path, splits: data.ImageSplits | None = None, log=print) -> dict:
    """Train, save, reload and evaluate one zoo model, unless its folder already holds it."""
    folder = root / spec.name
    results_path = folder / "results.json"
    if _is_built(spec, root):
        return json.loads(results_path.read_text())
    splits = splits or DATASETS[spec.dataset]()
    start = time.perf_counter()
    model, mean, std = train_classifier(spec, splits, log)
    folder.mkdir(parents=True, exist_ok=True)
    _save_model(model, spec, folder, splits, mean, std)
    train_seconds = time.perf_counter() - start
    reloaded = load_classifier(folder)
    results = {
        "name": spec.name,
        "role": spec.role,
        "dataset": spec.dataset,
        "library": spec.library,
        "architecture": spec.architecture,
        "num_classes": len(splits.class_names),
        "num_channels": splits.num_channels,
        "image_size": data.IMAGE_SIZE,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "num_train_images": len(splits.train_labels),
        "num_test_images": len(splits.test_labels),
        "test_accuracy": accuracy(
            reloaded, to_tensor(splits.test_images), torch.from_numpy(splits.test_labels), batch_size=512
        ),
        "build_seconds": round(train_seconds, 1),
        "fingerprint": spec.fingerprint(),
    }
    results_path.write_text(json.dumps(results, indent=2) + "\n")
    log(
        f"[zoo] {spec.name}: test accuracy {results['test_accuracy']:.2%} on {results['num_test_images']:,} images, "
        f"built in {train_seconds:.0f} s"
    )
    return results


def dataset_path(root: str | os.PathLike, dataset: str) -> Path:
    """Where the zoo keeps a dataset's real train/test images (``datasets.load_from_disk`` format)."""
    return Path(root) / "datasets" / f"{dataset}-v{ZOO_VERSION}"


def build_zoo(root: str | os.PathLike = DEFAULT_ROOT, specs=REFERENCE_ZOO, log=print) -> list[dict]:
    """Build (or reuse) every model of ``specs`` and its dataset under ``root``; returns the models' results."""
    root = Path(root)
    loaded: dict[str, data.ImageSplits] = {}

    def splits(dataset: str) -> data.ImageSplits:
        if dataset not in loaded:
            loaded[dataset] = DATASETS[dataset]()
        return loaded[dataset]

    results = []
    for spec in specs:
        if not dataset_path(root, spec.dataset).is_dir():
            log(f"[zoo] saving the {spec.dataset} dataset")
            data.to_dataset_dict(splits(spec.dataset)).save_to_disk(dataset_path(root, spec.dataset))
        built = _is_built(spec, root)
        log(f"[zoo] {spec.name}: {'cached' if built else f'training ({spec.steps} steps)'}")
        results.append(build_model(spec, root, None if built else splits(spec.dataset), log))
    return results


def _is_built(spec: ZooModelSpec, root: Path) -> bool:
    path = root / spec.name / "results.json"
    return path.is_file() and json.loads(path.read_text()).get("fingerprint") == spec.fingerprint()


def weights_digest(*folders: str | os.PathLike) -> str:
    """A short digest of the models' weights: the zoo build is deterministic per machine, not across machines, so
    figures are only comparable between runs of the same build (the benchmarks and the demo name it)."""
    from huggingface_hub.utils.sha import sha_fileobj

    digest = hashlib.sha256()
    for folder in folders:
        with open(Path(folder) / "model.safetensors", "rb") as weights:
            digest.update(sha_fileobj(weights))
    return digest.hexdigest()[:12]
