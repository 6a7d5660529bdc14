"""CLIP-family models as zero-shot sources and targets, with stored class vectors (the PromptKD side)."""

import shutil

import pytest
import torch
import torch.nn.functional as F

from kiop_hf import KiOPModel, load_classifier
from kiop_hf.clip import CLASS_VECTORS_FILE, load_class_vectors
from kiop_hf.train_job import finish_run
from kiop_hf.trainer import KiOPTrainer
from kiop_hf.training_args import KiOPTrainingArguments

from .helpers import RGB_MEAN, RGB_STD, TINY_TRAINING

DIGITS = [str(i) for i in range(10)]
LETTERS = ["x", "y", "z", "a", "the", "of", "photo", "sketch", "blurry", "letter", "digit", "0"]
TEMPLATES = ["a photo of the digit {}", "a blurry sketch of the digit {}"]


def test_zero_shot_logits_are_image_features_times_stored_class_vectors_times_logit_scale(clip_folder):
    from transformers import AutoTokenizer, CLIPModel

    classifier = load_classifier(clip_folder, class_names=DIGITS, templates=TEMPLATES)
    assert classifier.library == "clip" and classifier.class_names == DIGITS
    assert classifier.image_size == 32 and classifier.mean.flatten().tolist() == pytest.approx(RGB_MEAN)

    clip, tokenizer = CLIPModel.from_pretrained(clip_folder).eval(), AutoTokenizer.from_pretrained(clip_folder)
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        vectors = []
        for digit in DIGITS:
            tokens = tokenizer([t.format(digit) for t in TEMPLATES], padding=True, return_tensors="pt")
            text = clip.get_text_features(**tokens).pooler_output
            vectors.append(F.normalize(F.normalize(text, dim=-1).mean(0), dim=-1))
        vectors = torch.stack(vectors)
        pixels = (images - torch.tensor(RGB_MEAN).view(1, 3, 1, 1)) / torch.tensor(RGB_STD).view(1, 3, 1, 1)
        features = F.normalize(clip.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
        expected = clip.logit_scale.exp() * features @ vectors.T
        torch.testing.assert_close(classifier.model.class_vectors, vectors)
        torch.testing.assert_close(classifier(images), expected)
        # gray images are served too, and other canvas sizes interpolate the position embeddings
        assert classifier(torch.rand(2, 1, 40, 40)).shape == (2, 10)


def test_a_clip_model_needs_class_names(clip_folder):
    with pytest.raises(ValueError, match="classifies zero-shot: pass class_names="):
        load_classifier(clip_folder)


def test_a_prompt_on_a_clip_target_reloads_from_stored_class_vectors_without_the_text_encoder(
    clip_folder, timm_folder, tmp_path
):
    clip_copy = shutil.copytree(clip_folder, tmp_path / "clip")
    target = load_classifier(clip_copy, class_names=LETTERS)
    source = load_classifier(timm_folder)
    model = KiOPModel.from_models(target, {"gray": source}, image_size=32, ring_sizes=[36, 40])
    trainer = KiOPTrainer(
        model, {"gray": source}, KiOPTrainingArguments(output_dir=str(tmp_path / "prompt"), **TINY_TRAINING)
    )
    trainer.train()
    finish_run(trainer)
    stored = load_class_vectors(tmp_path / "prompt")
    assert set(stored) == {"target"} and torch.equal(stored["target"], target.model.class_vectors)

    for tokenizer_file in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (clip_copy / tokenizer_file).unlink(missing_ok=True)  # text features could no longer be computed
    reloaded = KiOPModel.from_pretrained(tmp_path / "prompt")
    assert reloaded.target.library == "clip" and reloaded.class_names() == LETTERS
    images = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(reloaded(images, task="gray"), model(images, task="gray"))


def test_a_clip_source_is_inverted_without_the_bn_prior_and_its_class_vectors_are_stored(
    clip_folder, transformers_folder, tmp_path
):
    source = load_classifier(clip_folder, class_names=DIGITS, templates=TEMPLATES)
    target = load_classifier(transformers_folder)
    model = KiOPModel.from_models(target, {"clip_digits": source}, image_size=32, ring_sizes=[36, 40])
    trainer = KiOPTrainer(
        model, {"clip_digits": source}, KiOPTrainingArguments(output_dir=str(tmp_path), **TINY_TRAINING)
    )
    before = model.prompt.rings[1].detach().clone()
    trainer.train()
    finish_run(trainer)

    assert trainer.synthesizers["clip_digits"].active_terms == ["oh", "adv", "cr"]
    assert "bn" in trainer.synthesizers["target"].active_terms  # the ResNet target has BatchNorm
    assert not torch.equal(before, model.prompt.rings[1])
    card = (tmp_path / "README.md").read_text()
    assert "no BatchNorm layers, so no BN-statistics prior" in card
    assert torch.equal(load_class_vectors(tmp_path)["clip_digits"], source.model.class_vectors)
    assert (tmp_path / CLASS_VECTORS_FILE).is_file()
    again = load_classifier(clip_folder, class_names=DIGITS, class_vectors=load_class_vectors(tmp_path)["clip_digits"])
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(images), source(images))
