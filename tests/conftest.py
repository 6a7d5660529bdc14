"""Small real models saved in Hub layout, shared by the tests."""

import pytest
import torch

from .helpers import GRAY_MEAN, GRAY_STD, RGB_MEAN, RGB_STD, TinyCNN
from .hub_fixtures import hub  # noqa: F401  (the loopback Hub, for tests that push and download)


@pytest.fixture(scope="session")
def timm_folder(tmp_path_factory):
    """A randomly initialised timm test_resnet (1 channel, 10 classes) saved with timm's save_for_hf."""
    import timm
    from timm.models import save_for_hf

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=10, in_chans=1)
    folder = tmp_path_factory.mktemp("timm_gray")
    save_for_hf(
        model,
        str(folder),
        model_config={"label_names": [f"class_{i}" for i in range(10)]},
        data_config={"input_size": (1, 32, 32), "mean": tuple(GRAY_MEAN), "std": tuple(GRAY_STD)},
        safe_serialization=True,
    )
    return folder


@pytest.fixture(scope="session")
def transformers_folder(tmp_path_factory):
    """A randomly initialised transformers ResNet (RGB, 12 classes) with its image processor."""
    from transformers import ResNetConfig, ResNetForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    names = [f"label_{i}" for i in range(12)]
    config = ResNetConfig(
        num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
        id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("transformers_rgb")
    ResNetForImageClassification(config).eval().save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=RGB_MEAN, image_std=RGB_STD).save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_cnn():
    torch.manual_seed(0)
    return TinyCNN()
