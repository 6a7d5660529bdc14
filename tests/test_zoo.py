import json

import numpy as np
import pytest
import torch
from PIL import ImageFont
from safetensors.torch import load_file

from kiop_hf import load_classifier
from kiop_hf.evaluation import accuracy
from kiop_hf.zoo import data
from kiop_hf.zoo.build import ZooModelSpec, build_zoo, dataset_path, to_tensor


@pytest.mark.parametrize(
    "load, train_size, test_size",
    [
        (data.load_fashion_mnist, 60_000, 10_000),
        (data.load_mnist_subset, 4_000, 1_000),
        (data.load_digits, 1_438, 359),
    ],
)
def test_source_datasets_are_real_32px_grayscale_with_ten_balanced_classes(load, train_size, test_size):
    splits = load()
    assert splits.train_images.shape == (train_size, 32, 32, 1) and splits.train_images.dtype == np.uint8
    assert splits.test_images.shape == (test_size, 32, 32, 1)
    assert len(splits.class_names) == 10
    counts = np.bincount(splits.test_labels, minlength=10)
    assert counts.min() >= 0.9 * counts.max()
    assert splits.train_images.std() > 30  # real images, not blank padding


def test_letters_have_forty_classes_and_train_and_test_typefaces_do_not_overlap():
    train_fonts, test_fonts = data.split_fonts()
    family = lambda path: ImageFont.truetype(str(path), 10).getname()[0]  # noqa: E731
    assert {family(p) for p in train_fonts}.isdisjoint({family(p) for p in test_fonts})
    assert len({family(p) for p in train_fonts}) >= 20
    splits = data.render_letters(train_size=100)
    assert len(splits.class_names) == len(set(splits.class_names)) == 40
    assert splits.train_images.shape[1:] == (32, 32, 3)
    assert len(splits.test_labels) == 40 * len(test_fonts)
    assert set(splits.train_labels.tolist()) == set(range(40))


def tiny_specs():
    return (
        ZooModelSpec("tiny-timm", "digits", "source", "timm", "test_efficientnet", steps=3, batch_size=32),
        ZooModelSpec(
            "tiny-transformers",
            "digits",
            "source",
            "transformers",
            "resnet",
            {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "layer_type": "basic"},
            steps=3,
            batch_size=32,
        ),
    )


def test_zoo_builds_deterministically_in_hub_layout_and_is_cached(tmp_path):
    lines = []
    first = build_zoo(tmp_path / "a", tiny_specs(), log=lines.append)
    # a first build shows its progress: steps, epochs, training loss and accuracy, then the test accuracy
    assert any(line.startswith("[zoo] tiny-timm: step 3/3 (epoch") and "training accuracy" in line for line in lines)
    assert any(line.startswith("[zoo] tiny-timm: test accuracy") for line in lines)
    second = build_zoo(tmp_path / "b", tiny_specs(), log=lambda _: None)
    for spec in tiny_specs():
        weights_a = load_file(tmp_path / "a" / spec.name / "model.safetensors")
        weights_b = load_file(tmp_path / "b" / spec.name / "model.safetensors")
        assert weights_a.keys() == weights_b.keys()
        assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert [r["test_accuracy"] for r in first] == [r["test_accuracy"] for r in second]

    weights = tmp_path / "a" / "tiny-timm" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    assert build_zoo(tmp_path / "a", tiny_specs(), log=lambda _: None) == first
    assert weights.stat().st_mtime_ns == stamp  # reused, not retrained


def test_each_zoo_model_records_the_test_accuracy_of_its_reloaded_weights(tmp_path):
    from datasets import load_from_disk

    results = build_zoo(tmp_path, tiny_specs(), log=lambda _: None)
    test = load_from_disk(dataset_path(tmp_path, "digits"))["test"]
    images = to_tensor(np.stack([np.asarray(im)[..., None] for im in test["image"]]))
    labels = torch.tensor(test["label"])
    for spec, result in zip(tiny_specs(), results):
        recorded = json.loads((tmp_path / spec.name / "results.json").read_text())
        assert recorded == result and recorded["library"] == spec.library
        classifier = load_classifier(tmp_path / spec.name)
        assert classifier.library == spec.library and classifier.num_channels == 1
        assert classifier.class_names == data.DIGIT_CLASSES
        assert recorded["test_accuracy"] == accuracy(classifier, images, labels)
