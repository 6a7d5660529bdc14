"""Serving: several published prompts on one loaded target, mixed batches, the image processor."""

import numpy as np
import pytest
import torch
from PIL import Image

from kiop_hf import (
    FrozenClassifier,
    KiOPImageProcessor,
    KiOPModel,
    KiOPPromptConfig,
    KiOPVisualPrompt,
    load_classifier,
)
from kiop_hf.data import images_to_tensor
from kiop_hf.pixels import to_unit_range

from .helpers import RGB_MEAN, RGB_STD, TinyCNN
from .test_hub import forget_downloads, push_transformers_target


def published_prompt(target, sources, ring_sizes, repo_id, seed):
    model = KiOPModel.from_models(target, sources, image_size=32, ring_sizes=ring_sizes, seed=seed)
    torch.manual_seed(seed)
    with torch.no_grad():
        for ring in model.prompt.rings:
            ring.normal_()
    model.push_to_hub(repo_id)
    return model


@pytest.fixture
def two_prompts(hub, gray_source):
    """Two prompts published for one Hub target, with other sources and other ring sizes."""
    push_transformers_target("user/letters-classifier")
    target = load_classifier("user/letters-classifier")
    digits = load_classifier(TinyCNN(3, 4).eval(), image_size=32, mean=RGB_MEAN, std=RGB_STD)
    published_prompt(target, {"gray": gray_source}, [36, 40], "user/gray-on-letters", seed=1)
    published_prompt(target, {"digits": digits}, [36, 44], "user/digits-on-letters", seed=2)
    forget_downloads()


def test_two_published_prompts_serve_on_one_loaded_target(two_prompts):
    model = KiOPModel.from_pretrained("user/gray-on-letters")
    assert model.load_prompt("user/digits-on-letters") == "digits-on-letters"
    assert model.prompt_names == ["default", "digits-on-letters"]
    assert sum(isinstance(m, FrozenClassifier) for m in model.modules()) == 1  # one copy of the target
    expected = ["default/gray", "default/target", "digits-on-letters/digits", "digits-on-letters/target"]
    assert sorted(model.tasks()) == expected
    alone = KiOPModel.from_pretrained("user/digits-on-letters")
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(images, task="digits-on-letters/digits"), alone(images, task="digits"))
        assert torch.equal(model(images, task="digits-on-letters/target"), alone(images))
        model.set_prompt("digits-on-letters")  # plain task names now mean this prompt's
        assert torch.equal(model(images, task="digits"), alone(images, task="digits"))
    assert model.class_names("digits") == alone.class_names("digits")
    model.set_prompt("default")
    model.delete_prompt("digits-on-letters")
    assert model.prompt_names == ["default"]


def test_a_mixed_batch_equals_the_task_by_task_calls(two_prompts):
    model = KiOPModel.from_pretrained("user/gray-on-letters")
    model.load_prompt("user/digits-on-letters", name="digits")
    tasks = ["gray", "digits/digits", None, "digits/target", "digits/digits", "gray", "default/target"]
    images = torch.rand(len(tasks), 3, 32, 32)
    with torch.no_grad():
        mixed = model(images, task=tasks)
        for image, task, row in zip(images, tasks, mixed, strict=True):
            alone = model(image[None], task=task)[0]
            assert row.shape == alone.shape == (len(model.class_names(task)),)
            torch.testing.assert_close(row, alone, rtol=1e-5, atol=1e-5)


def test_mismatched_prompts_and_tasks_are_refused(two_prompts, hub, transformers_folder, gray_source):
    model = KiOPModel.from_pretrained("user/gray-on-letters")
    hub.api.create_repo("user/other-letters", exist_ok=True)
    hub.api.upload_folder(folder_path=transformers_folder, repo_id="user/other-letters")
    other_target = load_classifier("user/other-letters")  # the same shapes, another model
    KiOPModel.from_models(other_target, {"gray": gray_source}, image_size=32, ring_sizes=[36, 40]).push_to_hub(
        "user/gray-on-other"
    )
    with pytest.raises(ValueError, match="differs from the target this prompt was trained on in its id"):
        model.load_prompt("user/gray-on-other")
    with pytest.raises(ValueError, match=r"unknown task 'digits': prompt 'default' serves \['gray', 'target'\]"):
        model(torch.rand(1, 3, 32, 32), task="digits")
    with pytest.raises(ValueError, match=r"unknown task 'GRAY' \(did you mean 'gray'\?\)"):
        model(torch.rand(1, 3, 32, 32), task="GRAY")
    with pytest.raises(KeyError, match="no prompt named 'nope'"):
        model(torch.rand(1, 3, 32, 32), task="nope/gray")
    with pytest.raises(ValueError, match="one task per sample: 2 images but 1 tasks"):
        model(torch.rand(2, 3, 32, 32), task=["gray"])
    gray_prompt = KiOPVisualPrompt(
        KiOPPromptConfig(image_size=32, ring_sizes=[36], num_channels=1, target_num_labels=12)
    )
    with pytest.raises(ValueError, match="the prompt makes 1-channel canvases, but .* takes 3 channels"):
        model.add_prompt(gray_prompt, "gray-canvas")
    with pytest.raises(ValueError, match="already loaded"):
        model.load_prompt("user/gray-on-letters", name="default")


def test_what_a_transformers_user_tries_first(two_prompts, capsys):
    model = KiOPModel.from_pretrained("user/gray-on-letters")
    assert model.device == torch.device("cpu") and model.dtype == torch.float32
    trainable = model.num_parameters(only_trainable=True)
    assert trainable == sum(ring.numel() for ring in model.prompt.rings) < model.num_parameters()
    model.print_trainable_parameters()
    assert f"trainable params: {trainable:,}" in capsys.readouterr().out
    half = KiOPModel.from_pretrained("user/gray-on-letters").to(torch.bfloat16)
    logits = half(torch.rand(2, 1, 32, 32), task="gray")  # fp32 pixels into a bf16 model are cast
    assert logits.dtype == torch.bfloat16 and logits.shape == (2, 10)


def odd_images():
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (23, 17, 3), dtype=np.uint8), "RGB")
    return {
        "RGB": rgb,
        "L": rgb.convert("L"),
        "RGBA": rgb.convert("RGBA"),
        "P": rgb.convert("P"),
        "I;16": Image.fromarray(rng.integers(0, 65536, (40, 41), dtype=np.uint16)),
    }


@pytest.mark.parametrize("num_channels", [1, 3])
def test_the_image_processor_takes_any_image_and_matches_the_training_conversion(num_channels):
    processor = KiOPImageProcessor(image_size=32, num_channels=num_channels)
    images = odd_images()
    pixels = processor(list(images.values()))["pixel_values"]
    assert pixels.shape == (len(images), num_channels, 32, 32) and pixels.dtype == torch.float32
    assert pixels.min() >= 0 and pixels.max() <= 1
    for (mode, image), row in zip(images.items(), pixels):  # training and evaluation keep uint8 of the same pixels
        if mode != "I;16":
            expected = to_unit_range(images_to_tensor([image], 32, num_channels))[0]
            torch.testing.assert_close(row, expected, atol=0.5 / 255 + 1e-6, rtol=0)
    array = np.asarray(images["RGB"])
    from_numpy = processor([array, array / 255.0, array[..., 0]])["pixel_values"]
    assert from_numpy.shape == (3, num_channels, 32, 32)
    torch.testing.assert_close(from_numpy[0], from_numpy[1], atol=1e-6, rtol=0)  # uint8 and [0, 1] floats agree
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    torch.testing.assert_close(processor(tensor)["pixel_values"][0], from_numpy[0], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match=r"float images must hold pixels in \[0, 1\]"):
        processor(torch.full((3, 8, 8), 200.0))
    with pytest.raises(TypeError, match="expected a PIL image, a NumPy array or a torch tensor"):
        processor("image.png")


def test_every_saved_prompt_has_its_processor_for_auto_image_processor(hub, timm_folder, tmp_path):
    from transformers import AutoImageProcessor

    push_transformers_target("user/letters-classifier")
    model = KiOPModel.from_models(
        load_classifier("user/letters-classifier"),
        {"gray": load_classifier(timm_folder)},
        image_size=28,
        ring_sizes=[36, 40],
    )
    model.save_pretrained(tmp_path)
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(processor, KiOPImageProcessor)
    assert (processor.image_size, processor.num_channels) == (28, 3)


def test_the_pipeline_on_a_published_prompt_names_the_chosen_tasks_classes(two_prompts):
    from transformers import pipeline

    classifier = pipeline("kiop-image-classification", model="user/gray-on-letters")
    images = [odd_images()[mode] for mode in ("L", "RGB", "P")]
    results = classifier(images, task="gray", top_k=3)
    assert len(results) == 3 and all(len(result) == 3 for result in results)
    gray_classes = [f"class_{i}" for i in range(10)]
    for image, result in zip(images, results):
        assert {r["label"] for r in result} <= set(gray_classes)
        assert [r["score"] for r in result] == sorted((r["score"] for r in result), reverse=True)
        gray = classifier.model.input_channels("gray")  # the source's channels, as in training and evaluation
        pixels = KiOPImageProcessor(32, 3)(image, num_channels=gray)["pixel_values"]
        probabilities = classifier.model(pixels, task="gray").softmax(-1)[0]
        assert result[0]["label"] == gray_classes[int(probabilities.argmax())]
        assert abs(result[0]["score"] - probabilities.max().item()) < 1e-6
    own = classifier(images[0], task="target", top_k=1)
    assert own[0]["label"].startswith("letter_")
    batched = classifier(images, task="gray", top_k=3, batch_size=2)
    assert [[r["label"] for r in result] for result in batched] == [[r["label"] for r in result] for result in results]


def test_prompts_follow_the_target_in_dtype_and_empty_or_mixed_size_batches_are_handled(two_prompts):
    model = KiOPModel.from_pretrained("user/gray-on-letters").to(torch.bfloat16)
    model.load_prompt("user/digits-on-letters", name="digits")  # a bf16 target takes a fp32 prompt, cast to bf16
    assert model.prompts["digits"].dtype == torch.bfloat16
    assert model(torch.rand(2, 3, 32, 32), task="digits/digits").dtype == torch.bfloat16
    assert model(torch.zeros(0, 3, 32, 32), task=[]) == []
    assert model(torch.zeros(0, 3, 32, 32), task="gray").shape == (0, 10)
    small = KiOPModel.from_models(
        load_classifier("user/letters-classifier"), {}, image_size=24, ring_sizes=[36]
    ).prompt  # another input size on the same target
    model.add_prompt(small, "small")
    with pytest.raises(ValueError, match="task small/target takes 24x24 images, got 32x32"):
        model(torch.rand(2, 3, 32, 32), task=["gray", "small/target"])


def test_the_pipeline_serves_a_loaded_model_and_a_prompt_saved_without_a_processor(two_prompts, tmp_path):
    from transformers import pipeline

    model = KiOPModel.from_pretrained("user/gray-on-letters")
    model.load_prompt("user/digits-on-letters", name="digits")
    classifier = pipeline("kiop-image-classification", model=model)
    image = odd_images()["RGB"]
    assert classifier(image, task="digits/digits", top_k=10)[0]["label"] in model.class_names("digits/digits")
    assert len(classifier(image, task="digits/digits", top_k=10)) == 4  # top_k beyond the class count: all of them
    model.save_pretrained(tmp_path / "old")
    (tmp_path / "old" / "preprocessor_config.json").unlink()  # as kiop_hf 0.1.0 saved prompts
    old = pipeline("kiop-image-classification", model=str(tmp_path / "old"))
    assert {r["label"] for r in old(image, task="gray", top_k=2)} <= set(model.class_names("gray"))


def test_the_processor_reads_16_bit_arrays_and_images_by_their_fixed_range():
    processor = KiOPImageProcessor(image_size=8, num_channels=1)
    ramp = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    from_array = processor(ramp)["pixel_values"][0, 0]
    from_image = processor(Image.fromarray(ramp))["pixel_values"][0, 0]
    torch.testing.assert_close(from_array, torch.from_numpy(ramp / 65535.0).float(), atol=1e-6, rtol=0)
    torch.testing.assert_close(from_image, from_array, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="expected uint8, uint16 or float"):
        processor(ramp.astype(np.int64))


def three_prompt_model():
    model = KiOPModel.from_pretrained("user/gray-on-letters", prompt_name="gray")
    model.load_prompt("user/digits-on-letters", name="digits")
    third = KiOPModel.from_models(
        model.target,
        {"blobs": load_classifier(TinyCNN(1, 3).eval(), image_size=32, mean=[0.5], std=[0.2])},
        image_size=32,
        ring_sizes=[36, 48],
        seed=7,
    )
    with torch.no_grad():
        for ring in third.prompt.rings:
            ring.normal_()
    model.add_prompt(third.prompt, "blobs")
    return model


def outputs_of(model, images):
    with torch.no_grad():
        return {task: model(images if task.endswith("target") else images[:, :1], task=task) for task in model.tasks()}


def test_every_loaded_prompt_is_saved_and_loads_back_locally_and_from_the_hub(two_prompts, tmp_path):
    model = three_prompt_model()
    images = torch.rand(3, 3, 32, 32)
    expected = outputs_of(model, images)
    model.save_pretrained(tmp_path / "three")
    assert {p.name for p in (tmp_path / "three").iterdir()} >= {"config.json", "prompts.json", "digits", "blobs"}
    for where in (tmp_path / "three", "user/three-prompts"):
        if where == "user/three-prompts":
            model.push_to_hub(where)
            forget_downloads()
        loaded = KiOPModel.from_pretrained(where)
        assert loaded.prompt_names == ["gray", "digits", "blobs"] and loaded.active_prompt == "gray"
        assert sum(isinstance(m, FrozenClassifier) for m in loaded.modules()) == 1  # one target for all three
        for task, logits in outputs_of(loaded, images).items():
            assert torch.equal(logits, expected[task]), task
    picked = KiOPModel.from_pretrained(tmp_path / "three", selected_prompts=["gray", "blobs"])
    assert picked.prompt_names == ["gray", "blobs"]
    with pytest.raises(ValueError, match=r"selected_prompts names \['nope'\]"):
        KiOPModel.from_pretrained(tmp_path / "three", selected_prompts=["nope"])

    # saving fewer prompts over the folder removes the ones it no longer holds
    model.delete_prompt("blobs")
    model.save_pretrained(tmp_path / "three")
    assert not (tmp_path / "three" / "blobs").exists()
    assert KiOPModel.from_pretrained(tmp_path / "three").prompt_names == ["gray", "digits"]
    model.save_pretrained(tmp_path / "three", selected_prompts=["gray"])
    assert KiOPModel.from_pretrained(tmp_path / "three").prompt_names == ["default"]  # one prompt: no index
    with pytest.raises(ValueError, match="must include the active prompt 'gray'"):
        model.save_pretrained(tmp_path / "other", selected_prompts=["digits"])


def test_disable_prompt_serves_the_bare_target(two_prompts):
    model = KiOPModel.from_pretrained("user/gray-on-letters")
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad(), model.disable_prompt():
        bare = model(images)
        with pytest.raises(ValueError, match="only the target's own task is served"):
            model(images, task="gray")
    assert torch.equal(bare, model.target(images))
    assert not torch.equal(model(images), bare)  # the core ring is back after the block


def test_the_processor_takes_transformers_standard_arguments(tmp_path):
    processor = KiOPImageProcessor(size={"height": 16, "width": 16}, num_channels=1)
    assert processor.image_size == 16 and processor.size == {"height": 16, "width": 16}
    processor.save_pretrained(tmp_path)
    again = KiOPImageProcessor.from_pretrained(tmp_path)
    assert again.size == {"height": 16, "width": 16} and again.num_channels == 1
    gray = np.full((20, 20), 51, dtype=np.uint8)
    assert processor(gray)["pixel_values"].shape == (1, 1, 16, 16)
    torch.testing.assert_close(processor(gray)["pixel_values"], torch.full((1, 1, 16, 16), 0.2))
    assert processor(gray, size={"height": 8, "width": 8})["pixel_values"].shape == (1, 1, 8, 8)
    torch.testing.assert_close(
        processor(gray, rescale_factor=1 / 510)["pixel_values"], torch.full((1, 1, 16, 16), 0.1)
    )
    assert processor(Image.new("L", (16, 16), 102), rescale_factor=1 / 1020)["pixel_values"].max().item() == (
        pytest.approx(0.1)
    )
    floats = torch.rand(1, 16, 16)
    assert torch.equal(processor(floats, do_rescale=False, do_resize=False)["pixel_values"][0], floats)
    with pytest.raises(ValueError, match="do_rescale=False takes float images"):
        processor(gray, do_rescale=False)
    with pytest.raises(ValueError, match="do_resize=False but the image is 20x20; the prompt takes 16x16"):
        processor(gray, do_resize=False)
    with pytest.raises(ValueError, match="a prompt's core is square"):
        KiOPImageProcessor(size={"height": 16, "width": 24})
    with pytest.raises(ValueError, match=r"rescale_factor must be a number in \(0, 1\]"):
        processor(gray, rescale_factor=255)
    rgb = Image.new("RGB", (16, 16), (255, 0, 0))
    luma = KiOPImageProcessor(16, 1)(rgb)["pixel_values"]
    assert torch.equal(KiOPImageProcessor(16, 1, do_convert_rgb=True)(rgb.convert("P"))["pixel_values"], luma)
    with pytest.raises(TypeError, match="KiOPImageProcessor takes return_tensors, num_channels, size"):
        processor(gray, image_mean=[0.5])
