"""A prompt as transformers' image classifier: AutoModelForImageClassification, the stock pipeline, model outputs."""

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoModelForImageClassification, pipeline
from transformers.modeling_outputs import ImageClassifierOutput

from kiop_hf import KiOPForImageClassification, KiOPModel, load_classifier

from .test_serving import two_prompts  # noqa: F401  (a fixture: two prompts published for one Hub target)


def saved_prompt(transformers_folder, timm_folder, folder):
    target, source = load_classifier(transformers_folder), load_classifier(timm_folder)
    model = KiOPModel.from_models(target, {"gray": source}, image_size=32, ring_sizes=[36, 40], seed=3)
    with torch.no_grad():
        for ring in model.prompt.rings:
            ring.normal_()
    model.save_pretrained(folder)
    return model


def test_the_stock_pipeline_classifies_with_a_saved_prompt_folder(transformers_folder, timm_folder, tmp_path):
    model = saved_prompt(transformers_folder, timm_folder, tmp_path / "prompt")
    classifier = pipeline("image-classification", model=str(tmp_path / "prompt"))
    assert isinstance(classifier.model, KiOPForImageClassification)
    image = Image.fromarray((torch.rand(28, 28) * 255).byte().numpy(), mode="L")
    results = classifier(image, top_k=3)
    assert [set(r) for r in results] == [{"label", "score"}] * 3
    source_classes = model.class_names("gray")
    assert all(r["label"] in source_classes for r in results)
    # the very scores of the prompt's own task: the image's luma at 32 px through the rings and the label map
    pixels = classifier.image_processor(image, return_tensors="pt", num_channels=1)["pixel_values"]
    expected = model(pixels, task="gray")[0].softmax(-1)
    best = expected.topk(3)
    assert [r["label"] for r in results] == [source_classes[i] for i in best.indices.tolist()]
    assert [r["score"] for r in results] == pytest.approx(best.values.tolist(), abs=1e-5)


def test_outputs_carry_a_loss_with_labels_and_id2label_follows_the_task(transformers_folder, timm_folder, tmp_path):
    model = saved_prompt(transformers_folder, timm_folder, tmp_path / "prompt")
    classifier = AutoModelForImageClassification.from_pretrained(tmp_path / "prompt")
    images, labels = torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 2, 3])
    output = classifier(images, labels=labels)
    assert isinstance(output, ImageClassifierOutput)
    torch.testing.assert_close(output.logits, model(images, task="gray"))
    torch.testing.assert_close(output.loss, F.cross_entropy(output.logits, labels))
    assert classifier(images).loss is None
    loss, logits = classifier(images, labels=labels, return_dict=False)
    assert torch.equal(logits, output.logits)
    assert list(classifier.config.id2label.values()) == model.class_names("gray")
    classifier.set_task("target")
    assert list(classifier.config.id2label.values()) == model.class_names(None)
    assert classifier(images.expand(-1, 3, -1, -1)).logits.shape == (4, len(model.class_names(None)))
    assert model.config.id2label != classifier.config.id2label  # the prompt's own config is left alone
    with pytest.raises(ValueError, match=r"unknown task 'grey' \(did you mean 'gray'\?\)"):
        classifier.set_task("grey")
    with pytest.raises(ValueError, match="trust_remote_code is not supported"):
        KiOPForImageClassification.from_pretrained(tmp_path / "prompt", trust_remote_code=True)


def test_the_stock_pipeline_loads_a_published_prompt_and_its_target_from_the_hub(two_prompts):  # noqa: F811
    classifier = pipeline("image-classification", model="user/digits-on-letters")
    alone = KiOPModel.from_pretrained("user/digits-on-letters")
    image = Image.new("RGB", (40, 40), (200, 30, 90))
    (best,) = classifier(image, top_k=1)
    pixels = classifier.image_processor(image, return_tensors="pt")["pixel_values"]
    scores = alone(pixels, task="digits")[0].softmax(-1)
    assert best["label"] == alone.class_names("digits")[scores.argmax()]
    assert best["score"] == pytest.approx(scores.max().item(), abs=1e-5)
