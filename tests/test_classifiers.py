import os

import pytest
import torch
from torch import nn

from kiop_hf import FrozenClassifier, KiOPModel, load_classifier
from kiop_hf.pixels import match_channels

from .helpers import GRAY_MEAN, GRAY_STD, RGB_MEAN, RGB_STD, TinyCNN


def test_timm_folder_loads_with_its_labels_and_preprocessing(timm_folder):
    classifier = load_classifier(timm_folder)
    assert classifier.library == "timm"
    assert classifier.class_names == [f"class_{i}" for i in range(10)]
    assert (classifier.image_size, classifier.num_channels) == (32, 1)
    assert classifier.mean.flatten().tolist() == pytest.approx(GRAY_MEAN)
    assert classifier.std.flatten().tolist() == pytest.approx(GRAY_STD)


def test_transformers_folder_loads_with_its_labels_and_preprocessing(transformers_folder):
    classifier = load_classifier(transformers_folder)
    assert classifier.library == "transformers"
    assert classifier.class_names == [f"label_{i}" for i in range(12)]
    assert (classifier.image_size, classifier.num_channels) == (32, 3)
    assert classifier.mean.flatten().tolist() == pytest.approx(RGB_MEAN)


def test_logits_are_the_models_output_on_normalised_pixels(timm_folder, transformers_folder):
    import timm
    from transformers import AutoModelForImageClassification

    gray = torch.rand(4, 1, 32, 32)
    reference = timm.create_model(f"local-dir:{timm_folder}", pretrained=True).eval()
    expected = reference((gray - GRAY_MEAN[0]) / GRAY_STD[0])
    assert torch.allclose(load_classifier(timm_folder)(gray), expected, atol=1e-6)

    rgb = torch.rand(4, 3, 32, 32)
    reference = AutoModelForImageClassification.from_pretrained(transformers_folder).eval()
    mean, std = torch.tensor(RGB_MEAN).view(1, 3, 1, 1), torch.tensor(RGB_STD).view(1, 3, 1, 1)
    expected = reference(pixel_values=(rgb - mean) / std).logits
    assert torch.allclose(load_classifier(transformers_folder)(rgb), expected, atol=1e-6)


def test_plain_module_with_stated_preprocessing(tiny_cnn):
    classifier = load_classifier(tiny_cnn, image_size=32, mean=RGB_MEAN, std=RGB_STD)
    assert classifier.library == "module"
    assert classifier.num_labels == 40  # counted by a dry run when no class names are given
    named = load_classifier(TinyCNN(num_classes=3), image_size=32, mean=RGB_MEAN, std=RGB_STD, class_names="abc")
    assert named.class_names == ["a", "b", "c"]


def test_plain_module_without_preprocessing_is_refused(tiny_cnn):
    with pytest.raises(ValueError, match="needs its preprocessing stated"):
        load_classifier(tiny_cnn, image_size=32)


def test_grayscale_and_rgb_models_take_either_kind_of_image(timm_folder, transformers_folder):
    gray_model, rgb_model = load_classifier(timm_folder), load_classifier(transformers_folder)
    gray, rgb = torch.rand(2, 1, 32, 32), torch.rand(2, 3, 32, 32)
    assert torch.allclose(rgb_model(gray), rgb_model(gray.expand(-1, 3, -1, -1)))
    luma = 0.299 * rgb[:, :1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:]
    assert torch.allclose(gray_model(rgb), gray_model(luma), atol=1e-6)
    with pytest.raises(ValueError, match="cannot convert 2-channel images to 3 channels"):
        match_channels(torch.rand(1, 2, 4, 4), 3)


def test_frozen_classifier_stays_in_eval_mode_and_passes_input_gradients(tiny_cnn):
    classifier = load_classifier(tiny_cnn, image_size=32, mean=RGB_MEAN, std=RGB_STD)
    container = torch.nn.Sequential(classifier).train()
    assert not classifier.training and not classifier.model.training
    assert not any(p.requires_grad for p in classifier.parameters())
    running_mean = classifier.model.features[1].running_mean.clone()
    images = torch.rand(3, 3, 32, 32, requires_grad=True)
    container(images).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert torch.equal(classifier.model.features[1].running_mean, running_mean)  # BN statistics untouched


def test_load_classifier_returns_an_already_frozen_classifier_unchanged(tiny_cnn):
    classifier = FrozenClassifier(
        tiny_cnn, class_names=list("abcdefghij") * 4, image_size=32, mean=RGB_MEAN, std=RGB_STD
    )
    assert load_classifier(classifier) is classifier


def test_folder_errors_say_what_was_expected(tmp_path, timm_folder):
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_classifier(tmp_path)
    (tmp_path / "config.json").write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="cannot tell whether"):
        load_classifier(tmp_path)
    unsafe = tmp_path / "unsafe"
    unsafe.mkdir()
    (unsafe / "config.json").write_text((timm_folder / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="only loads safetensors"):
        load_classifier(unsafe)


def test_bad_preprocessing_is_refused(tiny_cnn):
    with pytest.raises(ValueError, match="one value per channel"):
        FrozenClassifier(tiny_cnn, class_names=["a"], image_size=32, mean=[0.5, 0.5], std=[0.5])
    with pytest.raises(ValueError, match="std must be positive"):
        FrozenClassifier(tiny_cnn, class_names=["a"], image_size=32, mean=[0.5], std=[0.0])


def test_a_local_model_is_recorded_by_absolute_path_and_a_missing_folder_is_not_a_hub_lookup(
    timm_folder, tmp_path, monkeypatch
):
    monkeypatch.chdir(timm_folder.parent)
    relative = load_classifier(timm_folder.name)
    assert relative.name_or_path == str(timm_folder) and os.path.isabs(relative.name_or_path)
    target = load_classifier(timm_folder.name)
    KiOPModel.from_models(target, {}, image_size=32, ring_sizes=[36]).save_pretrained(tmp_path / "prompt")
    monkeypatch.chdir(tmp_path)  # elsewhere, the recorded target still is that folder, not a Hub repo of its name
    assert KiOPModel.from_pretrained(tmp_path / "prompt").target.name_or_path == str(timm_folder)
    with pytest.raises(FileNotFoundError, match="no such folder: ./models/missing"):
        load_classifier("./models/missing")


def test_an_unreachable_hub_says_so(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(OSError, match="could not reach the Hub at http://127.0.0.1:9 to resolve 'org/letters'"):
        load_classifier("org/letters")


def test_a_frozen_batchnorm_network_runs_folded_with_its_own_logits_and_as_it_is_while_watched(timm_folder):
    """The folded twin computes the same logits and passes input gradients; hooks (synthesis reads every BatchNorm
    input) make the network run as it is, so they see every layer."""
    from kiop_hf.synthesis.priors import NormLayerInputs

    classifier = load_classifier(timm_folder)
    gray = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        expected = classifier.model((gray - GRAY_MEAN[0]) / GRAY_STD[0])
    pixels = gray.clone().requires_grad_(True)
    logits = classifier(pixels)
    folded = classifier._folded["network"]
    assert folded is not None and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert torch.allclose(logits, expected, atol=1e-5)
    logits.sum().backward()
    assert pixels.grad.abs().sum() > 0

    with NormLayerInputs(classifier) as statistics:
        assert torch.allclose(classifier(gray), expected, atol=1e-5)
        assert len(statistics._inputs) == len(statistics.layers) > 0 and statistics.loss() > 0
    classifier.double()  # moved or cast: the twin is rebuilt from the cast network
    assert classifier._folded == {} and classifier(gray.double()).dtype == torch.float64


def test_a_network_torch_fx_cannot_trace_runs_as_it_is():
    class Branching(nn.Module):  # data-dependent control flow: not traceable
        def __init__(self):
            super().__init__()
            self.conv, self.norm, self.head = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2)

        def forward(self, x):
            x = self.norm(self.conv(x)).mean((2, 3))
            return self.head(x if x.sum() > 0 else -x)

    classifier = load_classifier(Branching(), image_size=8, mean=[0.5] * 3, std=[0.5] * 3, class_names=["a", "b"])
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(classifier(x), classifier.model((x - 0.5) / 0.5))
    assert classifier._folded["network"] is None
