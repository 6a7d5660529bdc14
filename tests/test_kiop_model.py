import pytest
import torch

from kiop_hf import KiOPModel, KiOPVisualPrompt, load_classifier, random_label_maps

from .helpers import RGB_MEAN, RGB_STD, TinyCNN


@pytest.fixture
def prompted(transformers_folder, timm_folder):
    """A 12-class transformers target prompted for one 10-class grayscale timm source."""
    target = load_classifier(transformers_folder)
    source = load_classifier(timm_folder)
    model = KiOPModel.from_models(target, {"gray": source}, image_size=32, ring_sizes=[36, 64], seed=3)
    torch.manual_seed(0)
    with torch.no_grad():
        for ring in model.prompt.rings:
            ring.normal_()
    return model


def test_from_models_records_everything_needed_to_use_the_prompt(prompted, transformers_folder, timm_folder):
    config = prompted.config
    assert config.target_name_or_path == str(transformers_folder)
    assert (config.target_library, config.target_num_labels, config.num_channels) == ("transformers", 12, 3)
    assert config.target_mean == pytest.approx(RGB_MEAN)
    source = config.source("gray")
    assert source["name_or_path"] == str(timm_folder)
    assert source["class_names"] == [f"class_{i}" for i in range(10)]
    assert source["label_map"] == random_label_maps([10], 12, seed=3)[0]
    assert (source["num_channels"], config.label_mapping) == (1, "random")


def test_tasks_route_through_their_rings_and_label_map(prompted):
    gray = torch.rand(2, 1, 32, 32)
    rgb = gray.expand(-1, 3, -1, -1)
    own = prompted(rgb)
    assert own.shape == (2, 12)
    assert torch.equal(own, prompted.target(prompted.prompt(rgb)))
    source_logits = prompted(gray, task="gray")  # grayscale source images are served to the RGB target
    full = prompted.target(prompted.prompt(rgb, task="gray"))
    assert torch.equal(source_logits, full[:, prompted.config.source("gray")["label_map"]])
    assert prompted.class_names("gray") == [f"class_{i}" for i in range(10)]
    assert prompted.class_names() == [f"label_{i}" for i in range(12)]


def test_save_and_from_pretrained_reload_prompt_and_target_exactly(prompted, tmp_path):
    prompted.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "prompt.png",
    ]
    reloaded = KiOPModel.from_pretrained(tmp_path)
    images = torch.rand(3, 3, 32, 32)
    for task in (None, "gray"):
        assert torch.equal(reloaded(images, task=task), prompted(images, task=task))
    assert not reloaded.target.training and not reloaded.prompt.training


def test_a_module_target_is_passed_back_explicitly(tmp_path):
    torch.manual_seed(0)
    target = load_classifier(TinyCNN(num_classes=20), image_size=32, mean=RGB_MEAN, std=RGB_STD)
    source = load_classifier(TinyCNN(num_classes=10), image_size=32, mean=RGB_MEAN, std=RGB_STD)
    model = KiOPModel.from_models(target, {"s": source}, image_size=32, ring_sizes=[36, 48])
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="pass it with target=load_classifier"):
        KiOPModel.from_pretrained(tmp_path)
    reloaded = KiOPModel.from_pretrained(tmp_path, target=target.model)
    images = torch.rand(2, 3, 32, 32)
    assert torch.equal(reloaded(images, task="s"), model(images, task="s"))


def test_a_target_that_does_not_match_the_prompt_is_refused(prompted, tiny_cnn):
    wrong_classes = load_classifier(tiny_cnn, image_size=32, mean=RGB_MEAN, std=RGB_STD)  # 40 classes, not 12
    with pytest.raises(ValueError, match="made for a target with 12 classes"):
        KiOPModel(prompted.prompt, wrong_classes)
    gray_target = load_classifier(TinyCNN(in_channels=1, num_classes=12), image_size=32, mean=[0.5], std=[0.5])
    with pytest.raises(ValueError, match="makes 3-channel canvases"):
        KiOPModel(prompted.prompt, gray_target)


def test_too_few_target_classes_for_the_sources_is_refused(transformers_folder, timm_folder):
    target, source = load_classifier(transformers_folder), load_classifier(timm_folder)
    with pytest.raises(ValueError, match="too few target classes: the sources have 20"):
        KiOPModel.from_models(target, {"a": source, "b": source}, image_size=32, ring_sizes=[36, 48, 64])


def test_prompt_alone_loads_without_its_target(prompted, tmp_path):
    prompted.save_pretrained(tmp_path)
    prompt = KiOPVisualPrompt.from_pretrained(tmp_path)
    assert prompt.config.source_names == ["gray"]


def test_a_target_with_other_classes_or_preprocessing_warns(tmp_path):
    torch.manual_seed(0)
    network = TinyCNN(num_classes=20)
    target = load_classifier(network, image_size=32, mean=RGB_MEAN, std=RGB_STD)
    source = load_classifier(TinyCNN(num_classes=10), image_size=32, mean=RGB_MEAN, std=RGB_STD)
    KiOPModel.from_models(target, {"s": source}, image_size=32, ring_sizes=[36, 48]).save_pretrained(tmp_path)
    other = load_classifier(
        network, class_names=[f"other_{i}" for i in range(20)], image_size=32, mean=[0.5] * 3, std=RGB_STD
    )
    with pytest.warns(
        UserWarning, match=r"differs from the target this prompt was trained on in its class names, mean"
    ):
        KiOPModel.from_pretrained(tmp_path, target=other)


@pytest.mark.parametrize(
    "images, message",
    [
        (torch.rand(3, 32, 32), "got a 3-D tensor of shape \\(3, 32, 32\\); add the batch dimension"),
        (torch.rand(2, 2, 3, 32, 32), "got a 5-D tensor"),
        (torch.rand(2, 32, 32, 3), "looks channels-last; use images.permute\\(0, 3, 1, 2\\)"),
        (torch.rand(2, 3, 32, 32) * 255, "pixels in 0-255\\? divide by 255"),
        (torch.randn(2, 3, 32, 32), "normalised images\\? the model normalises itself"),
        (torch.full((2, 3, 32, 32), float("nan")), "NaN or infinite pixels"),
        (torch.ones(2, 3, 32, 32, dtype=torch.int64), "as floats \\(or uint8 0-255\\), got dtype torch.int64"),
    ],
)
def test_images_at_the_model_boundary_must_be_a_batch_of_unit_range_pixels(prompted, images, message):
    with pytest.raises((ValueError, TypeError), match=message):
        prompted(images, task="gray")


def test_uint8_and_float64_images_are_converted_unambiguously(prompted):
    images = (torch.rand(2, 1, 32, 32) * 255).round().to(torch.uint8)
    expected = prompted(images.float() / 255, task="gray")
    assert torch.equal(prompted(images, task="gray"), expected)
    assert torch.allclose(prompted(images.double() / 255, task="gray"), expected)


SAVE_LOOP = """
import sys, torch
from kiop_hf import KiOPVisualPrompt
folder = sys.argv[1]
prompt = KiOPVisualPrompt.from_pretrained(sys.argv[2])
versions = [torch.full_like(prompt.rings[0], 1.0), torch.full_like(prompt.rings[0], 2.0)]
i = 0
while True:  # save the two versions in turn, until killed
    with torch.no_grad():
        prompt.rings[0].copy_(versions[i % 2])
    prompt.config.data_regime = {"version": str(i % 2 + 1)}  # config and weights both tell the version
    prompt.save_pretrained(folder)
    i += 1
"""


@pytest.mark.slow
def test_a_save_killed_at_any_instant_leaves_the_old_prompt_or_the_new_one(prompted, tmp_path):
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    prompted.prompt.save_pretrained(tmp_path / "start")
    folder = tmp_path / "prompt"
    rng = random.Random(0)
    for _ in range(6):
        process = subprocess.Popen([sys.executable, "-c", SAVE_LOOP, str(folder), str(tmp_path / "start")])
        while not (folder / "config.json").exists():  # saving has started
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        loaded = KiOPVisualPrompt.from_pretrained(folder)  # completes a save killed while committing
        value = loaded.rings[0].flatten()[0].item()
        assert value in (1.0, 2.0) and torch.all(loaded.rings[0] == value), "a mix of two saves"
        assert loaded.config.data_regime == {"version": str(int(value))}, "config of one save, weights of another"
        assert not (folder / ".kiop-committing").exists()


def test_a_new_save_removes_an_earlier_saves_files_and_keeps_everything_else(prompted, tmp_path):
    for leftover in ("samples_old_task.png", "results.json", "class_vectors.safetensors", "notes.txt"):
        (tmp_path / leftover).write_text("from an earlier run")
    prompted.save_pretrained(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "prompt.png", "notes.txt"} <= names
    assert not names & {"samples_old_task.png", "results.json", "class_vectors.safetensors"}


def test_numpy_and_torch_integers_are_accepted_as_sizes_and_label_maps(prompted):
    import numpy as np

    from kiop_hf import KiOPPromptConfig

    source = {"name": "a", "class_names": ["x", "y"], "label_map": np.array([3, 4])}
    config = KiOPPromptConfig(
        image_size=np.int64(32), ring_sizes=(torch.tensor(36), 40), target_num_labels=np.int32(12), sources=[source]
    )
    assert config.image_size == 32 and type(config.image_size) is int and config.ring_sizes == [36, 40]
    assert config.sources[0]["label_map"] == [3, 4] and all(type(i) is int for i in config.sources[0]["label_map"])


def test_a_readme_a_person_wrote_keeps_its_text_and_gains_the_metadata(prompted, tmp_path):
    from huggingface_hub import ModelCard

    prompted.save_pretrained(tmp_path)
    generated = (tmp_path / "README.md").read_text()
    assert "generated by kiop_hf" in generated
    (tmp_path / "README.md").write_text("---\ntags: [mine]\n---\n# My prompt\n\nNotes I wrote by hand.\n")
    prompted.save_pretrained(tmp_path)
    card = ModelCard.load(tmp_path / "README.md")
    assert "Notes I wrote by hand." in card.text and "generated by kiop_hf" not in card.text
    assert card.data.library_name == "kiop_hf" and card.data.pipeline_tag == "image-classification"
    assert card.data.tags[0] == "mine" and "kiop" in card.data.tags
    prompted.save_pretrained(tmp_path)  # and again: still the person's text
    assert "Notes I wrote by hand." in ModelCard.load(tmp_path / "README.md").text
